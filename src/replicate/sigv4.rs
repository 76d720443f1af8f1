//! AWS Signature Version 4 for S3 requests, on `ring`'s SHA-256 and
//! HMAC-SHA256 (the crypto the box already links): sans-IO, it only turns a
//! request's method, path, query and headers into the `Authorization` header.
//!
//! Invariants: the canonical query is sorted by encoded name then value and
//! every name and value is URI-encoded the S3 way (unreserved characters
//! kept); the signed headers are lowercase, sorted, values trimmed; the
//! secret key never leaves [`Credentials`] (its `Debug` masks it).

use ring::{digest, hmac};

/// An access key and its secret.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    secret_key: String,
}

impl Credentials {
    pub fn new(access_key: String, secret_key: String) -> Credentials {
        Credentials { access_key, secret_key }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key", &self.access_key).field("secret_key", &"***").finish()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// S3's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`, and `/` too unless `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name=value&...` sorted and encoded, as sent and as signed.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut enc: Vec<(String, String)> =
        params.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    enc.sort();
    enc.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// `YYYYMMDD'T'HHMMSS'Z'` of epoch milliseconds.
pub fn amz_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

/// The key of one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    hmac(&k, "aws4_request")
}

/// One request to sign. `headers` must hold `host`, `x-amz-date` and
/// `x-amz-content-sha256` (the payload's hash, which the server checks).
pub struct Request<'a> {
    pub method: &'a str,
    /// Already encoded (`uri_encode(path, true)`).
    pub path: &'a str,
    /// As [`canonical_query`] gives it.
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

/// The `Authorization` header's value for `req`, made at `amz_date` (see [`amz_date`]).
pub fn authorization(creds: &Credentials, region: &str, req: &Request<'_>, amz_date: &str) -> String {
    let mut hs: Vec<(String, String)> =
        req.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
    hs.sort();
    let signed: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canon_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical =
        format!("{}\n{}\n{}\n{canon_headers}\n{signed}\n{}", req.method, req.path, req.query, req.payload_sha256);
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
    let sig = hex(&hmac(&signing_key(&creds.secret_key, date, region, "s3"), &to_sign));
    format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}", creds.access_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_published_example() {
        // AWS's documented derivation example (IAM, us-east-1, 2012-02-15).
        let k = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex(&k), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn get_object_matches_the_s3_documentation_example() {
        // The S3 SigV4 documentation's "GET Object" example (a Range request).
        let creds = Credentials::new("AKIAIOSFODNN7EXAMPLE".into(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
        let empty = sha256_hex(b"");
        let headers = vec![
            ("Host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("Range".to_string(), "bytes=0-9".to_string()),
            ("x-amz-content-sha256".to_string(), empty.clone()),
            ("x-amz-date".to_string(), "20130524T000000Z".to_string()),
        ];
        let req = Request { method: "GET", path: "/test.txt", query: "", headers: &headers, payload_sha256: &empty };
        let auth = authorization(&creds, "us-east-1", &req, "20130524T000000Z");
        assert!(
            auth.ends_with(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"));
        assert!(!format!("{creds:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn dates_queries_and_encoding() {
        assert_eq!(amz_date(1_369_353_600_000), "20130524T000000Z");
        assert_eq!(amz_date(951_782_400_000 + 3_723_000), "20000229T010203Z");
        assert_eq!(canonical_query(&[("uploadId", "a b/+"), ("partNumber", "2")]), "partNumber=2&uploadId=a%20b%2F%2B");
        assert_eq!(canonical_query(&[("uploads", "")]), "uploads=");
        assert_eq!(uri_encode("p/box/cam-1/2024-01-01/1.mp4", true), "p/box/cam-1/2024-01-01/1.mp4");
    }
}
