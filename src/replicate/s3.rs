//! The few S3 calls replication needs, path-style (`/<bucket>/<key>`), signed
//! with [`super::sigv4`] and sent with `base::httpclient::call`: PutObject,
//! the multipart calls (create, upload part, complete, abort, list),
//! ListObjectsV2, GetObject (whole or a range) and DeleteObject.
//!
//! Invariants: every request carries the real SHA-256 of its payload as
//! `x-amz-content-sha256`, so the server refuses a body damaged on the way
//! (integrity without MD5, which the box's crypto lacks); every network step
//! has a deadline (`IO_TIMEOUT` per connect, read and write); answers are
//! buffered up to `MAX_ANSWER` (S3 answers are small XML).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use super::sigv4::{self, Credentials};
use crate::base::httpclient::{self, Payload, Response};

/// Connect, and every read and write, must each finish within this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ANSWER: u64 = 4 << 20;

/// Why a call failed: `Gone` for a multipart upload the bucket no longer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Error {
    /// NoSuchUpload: the upload was completed or aborted.
    Gone(String),
    /// Anything else (network, 5xx, 4xx), with what was being done.
    Failed(String),
}

impl std::error::Error for S3Error {}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::Gone(m) | S3Error::Failed(m) => f.write_str(m),
        }
    }
}

/// A bucket on an S3-compatible server.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub endpoint: url::Url,
    pub bucket: String,
    pub region: String,
    creds: Credentials,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A request body with its SHA-256 (hex) already known.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read, u64),
}

/// One request as [`Bucket::send`] signs and sends it.
struct Req<'a, 'b> {
    method: &'a str,
    /// The object's name; empty for a bucket-level call (list).
    key: &'a str,
    query: &'a [(&'a str, &'a str)],
    /// Headers signed and sent besides host, date and payload hash.
    extra: &'a [(&'a str, String)],
    body: Body<'b>,
    /// Hex SHA-256 of `body`.
    sha256: &'a str,
    /// Largest answer body buffered.
    max: u64,
}

impl<'a, 'b> Req<'a, 'b> {
    /// A request without body, extra headers or query.
    fn new(method: &'a str, key: &'a str) -> Req<'a, 'b> {
        Req { method, key, query: &[], extra: &[], body: Body::Empty, sha256: EMPTY_SHA256, max: MAX_ANSWER }
    }
}

/// SHA-256 of no bytes, hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Bucket {
    /// The bucket a config table names (`table`: `replicate` or `archive`, for
    /// the errors): its endpoint parsed, TLS with `ca_file` for https.
    pub fn from_config(
        table: &str,
        endpoint: &str,
        bucket: &str,
        region: &str,
        (access, secret): (String, String),
        ca_file: &str,
    ) -> Result<Bucket, String> {
        let endpoint = url::Url::parse(endpoint).map_err(|e| format!("{table}.endpoint: {e}"))?;
        let tls = if endpoint.scheme() == "https" {
            Some(Arc::new(httpclient::tls_client(ca_file, &format!("{table}.ca_file"))?))
        } else {
            None
        };
        Ok(Bucket::new(endpoint, bucket.to_string(), region.to_string(), Credentials::new(access, secret), tls))
    }

    pub fn new(
        endpoint: url::Url,
        bucket: String,
        region: String,
        creds: Credentials,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Bucket {
        Bucket { endpoint, bucket, region, creds, tls }
    }

    /// One signed request; `now_ms` dates the signature.
    fn send(&self, req: Req<'_, '_>, now_ms: i64) -> Result<Response, S3Error> {
        let Req { method, key, query, extra, body, sha256, max } = req;
        let path = format!("/{}/{}", self.bucket, sigv4::uri_encode(key, true));
        let path = if key.is_empty() { format!("/{}/", self.bucket) } else { path };
        let q = sigv4::canonical_query(query);
        let date = sigv4::amz_date(now_ms);
        let host = self.endpoint[url::Position::BeforeHost..url::Position::AfterPort].to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), sha256.to_string()),
            ("x-amz-date".into(), date.clone()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
        let req = sigv4::Request { method, path: &path, query: &q, headers: &headers, payload_sha256: sha256 };
        let auth = sigv4::authorization(&self.creds, &self.region, &req, &date);
        let mut sent: Vec<(&str, String)> = headers[1..].iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        sent.push(("authorization", auth));
        let target = if q.is_empty() { path.clone() } else { format!("{path}?{q}") };
        let payload = match body {
            Body::Empty => Payload::Empty,
            Body::Bytes(b) => Payload::Bytes(b),
            Body::Reader(r, n) => Payload::Reader(r, n),
        };
        let what = format!("{method} {key}");
        let r = httpclient::call(&self.endpoint, (method, &target), &sent, payload, IO_TIMEOUT, self.tls.as_ref(), max)
            .map_err(|e| S3Error::Failed(format!("{what}: {e}")))?;
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let text = String::from_utf8_lossy(&r.body);
        let code = tag(&text, "Code").unwrap_or_default();
        let msg = tag(&text, "Message").unwrap_or_default();
        let m = format!("{what}: HTTP {} {code} {msg}", r.status).trim_end().to_string();
        Err(if code == "NoSuchUpload" { S3Error::Gone(m) } else { S3Error::Failed(m) })
    }

    /// PutObject of `len` bytes read from `body` whose SHA-256 is `sha256`.
    pub fn put(
        &self,
        key: &str,
        body: Body<'_>,
        sha256: &[u8; 32],
        content_type: &str,
        now_ms: i64,
    ) -> Result<(), S3Error> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha256);
        let extra = [("content-type", content_type.to_string()), ("x-amz-checksum-sha256", b64)];
        let sha = sigv4::hex(sha256);
        self.send(Req { extra: &extra, body, sha256: &sha, ..Req::new("PUT", key) }, now_ms).map(drop)
    }

    /// CreateMultipartUpload: the new upload's id.
    pub fn create_multipart(&self, key: &str, content_type: &str, now_ms: i64) -> Result<String, S3Error> {
        let extra = [("content-type", content_type.to_string())];
        let r = self.send(Req { query: &[("uploads", "")], extra: &extra, ..Req::new("POST", key) }, now_ms)?;
        tag(&String::from_utf8_lossy(&r.body), "UploadId")
            .ok_or_else(|| S3Error::Failed(format!("POST {key}?uploads: no UploadId in the answer")))
    }

    /// UploadPart: the part's ETag.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Body<'_>,
        sha256: &[u8; 32],
        now_ms: i64,
    ) -> Result<String, S3Error> {
        let n = number.to_string();
        let q = [("partNumber", n.as_str()), ("uploadId", upload_id)];
        let sha = sigv4::hex(sha256);
        let r = self.send(Req { query: &q, body, sha256: &sha, ..Req::new("PUT", key) }, now_ms)?;
        r.header("etag").map(str::to_string).ok_or_else(|| S3Error::Failed(format!("PUT {key} part {n}: no ETag")))
    }

    /// CompleteMultipartUpload of `parts` (number, ETag), in order.
    pub fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        now_ms: i64,
    ) -> Result<(), S3Error> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>", escape(etag)));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let sha = sigv4::sha256_hex(xml.as_bytes());
        let extra = [("content-type", "application/xml".to_string())];
        let q = [("uploadId", upload_id)];
        let body = Body::Bytes(xml.as_bytes());
        let r = self.send(Req { query: &q, extra: &extra, body, sha256: &sha, ..Req::new("POST", key) }, now_ms)?;
        // S3 may answer 200 with an <Error> body when the completion failed late.
        let text = String::from_utf8_lossy(&r.body);
        if text.contains("<Error>") {
            let code = tag(&text, "Code").unwrap_or_default();
            let m = format!("POST {key}?uploadId: {code} {}", tag(&text, "Message").unwrap_or_default());
            return Err(if code == "NoSuchUpload" { S3Error::Gone(m) } else { S3Error::Failed(m) });
        }
        Ok(())
    }

    /// AbortMultipartUpload (an unknown upload counts as aborted).
    pub fn abort_multipart(&self, key: &str, upload_id: &str, now_ms: i64) -> Result<(), S3Error> {
        match self.send(Req { query: &[("uploadId", upload_id)], ..Req::new("DELETE", key) }, now_ms) {
            Ok(_) | Err(S3Error::Gone(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// DeleteObject (what a bucket's lifecycle rule does; tests use it to
    /// play one). Deleting a missing object is not an error (S3's rule).
    pub fn delete(&self, key: &str, now_ms: i64) -> Result<(), S3Error> {
        self.send(Req::new("DELETE", key), now_ms).map(drop)
    }

    /// ListMultipartUploads under `prefix`: (key, upload id) of each, every page.
    pub fn list_multipart(&self, prefix: &str, now_ms: i64) -> Result<Vec<(String, String)>, S3Error> {
        let (mut out, mut key_marker, mut id_marker) = (Vec::new(), String::new(), String::new());
        loop {
            let mut q = vec![("uploads", ""), ("prefix", prefix)];
            if !key_marker.is_empty() {
                q.push(("key-marker", &key_marker));
                q.push(("upload-id-marker", &id_marker));
            }
            let r = self.send(Req { query: &q, ..Req::new("GET", "") }, now_ms)?;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            for up in blocks(&text, "Upload") {
                if let (Some(k), Some(id)) = (tag(up, "Key"), tag(up, "UploadId")) {
                    out.push((k, id));
                }
            }
            if tag(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(out);
            }
            let (k, i) = (tag(&text, "NextKeyMarker"), tag(&text, "NextUploadIdMarker"));
            match (k, i) {
                (Some(k), Some(i)) if k != key_marker || i != id_marker => (key_marker, id_marker) = (k, i),
                _ => return Ok(out),
            }
        }
    }

    /// GetObject, buffered (tests and checks; at most `max` bytes).
    pub fn get(&self, key: &str, max: u64, now_ms: i64) -> Result<Vec<u8>, S3Error> {
        self.send(Req { max, ..Req::new("GET", key) }, now_ms).map(|r| r.body)
    }

    /// GetObject of bytes `[start, start + len)` (a Range request), buffered:
    /// what playback from the bucket reads, a window at a time. An answer
    /// that is not exactly the range asked for (a server ignoring Range
    /// would send the whole object) is refused, not trimmed.
    pub fn get_range(&self, key: &str, start: u64, len: u64, now_ms: i64) -> Result<Vec<u8>, S3Error> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = [("range", format!("bytes={start}-{}", start + len - 1))];
        let r = self.send(Req { extra: &range, max: len, ..Req::new("GET", key) }, now_ms)?;
        if r.status != 206 && !(r.status == 200 && start == 0 && r.body.len() as u64 == len) {
            return Err(S3Error::Failed(format!("GET {key} bytes {start}+{len}: HTTP {} instead of 206", r.status)));
        }
        if (r.body.len() as u64) != len {
            return Err(S3Error::Failed(format!("GET {key} bytes {start}+{len}: {} bytes came", r.body.len())));
        }
        Ok(r.body)
    }

    /// ListObjectsV2 under `prefix`: (key, size) of every object, every page.
    pub fn list(&self, prefix: &str, now_ms: i64) -> Result<Vec<(String, u64)>, S3Error> {
        let (mut out, mut token) = (Vec::new(), None);
        loop {
            let page = self.list_page(prefix, token.as_deref(), 1000, now_ms)?;
            out.extend(page.objects);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// One page of ListObjectsV2 under `prefix` (at most `max_keys` objects),
    /// from `token` (the previous page's `next`; `None`: the first page).
    pub fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
        now_ms: i64,
    ) -> Result<ListPage, S3Error> {
        let max = max_keys.to_string();
        let mut q = vec![("list-type", "2"), ("max-keys", max.as_str()), ("prefix", prefix)];
        if let Some(t) = token {
            q.push(("continuation-token", t));
        }
        let r = self.send(Req { query: &q, ..Req::new("GET", "") }, now_ms)?;
        Ok(parse_list(&String::from_utf8_lossy(&r.body), token))
    }
}

/// A page of a listing: (key, size) of each object, and the token of the next
/// page (`None`: this was the last).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<(String, u64)>,
    pub next: Option<String>,
    /// The server said this is the last page (`IsTruncated` false in a
    /// real listing); a listing that only stopped (no token, a repeated
    /// one, an answer that is no listing) is not complete.
    pub complete: bool,
}

/// A ListObjectsV2 answer; a next token equal to the one asked with (a
/// server that would loop) ends the listing.
fn parse_list(text: &str, token: Option<&str>) -> ListPage {
    let mut page = ListPage::default();
    for c in blocks(text, "Contents") {
        if let Some(k) = tag(c, "Key") {
            page.objects.push((k, tag(c, "Size").and_then(|s| s.parse().ok()).unwrap_or(0)));
        }
    }
    let truncated = tag(text, "IsTruncated");
    let more = truncated.as_deref() == Some("true");
    page.next = tag(text, "NextContinuationToken").filter(|t| more && Some(t.as_str()) != token);
    page.complete = text.contains("<ListBucketResult") && truncated.as_deref() == Some("false");
    page
}

/// The text of the first `<name>...</name>` in `xml`, entities decoded.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// Every `<name>...</name>` block's inside.
fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let body = &rest[s + open.len()..];
        let Some(e) = body.find(&close) else { break };
        out.push(&body[..e]);
        rest = &body[e + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_bits() {
        let x = "<R><Upload><Key>a/b.mp4</Key><UploadId>x&amp;y</UploadId></Upload><Upload><Key>c</Key>\
                 <UploadId>z</UploadId></Upload><IsTruncated>false</IsTruncated></R>";
        let ups: Vec<_> = blocks(x, "Upload").into_iter().map(|u| (tag(u, "Key"), tag(u, "UploadId"))).collect();
        assert_eq!(ups[0], (Some("a/b.mp4".into()), Some("x&y".into())));
        assert_eq!(ups.len(), 2);
        assert_eq!(escape("\"e\""), "&quot;e&quot;");
    }

    #[test]
    fn list_pages_and_their_tokens() {
        let x = "<L><Contents><Key>a.mp4</Key><Size>12</Size></Contents><Contents><Key>a.mp4.json</Key>\
                 <Size>3</Size></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;2\
                 </NextContinuationToken></L>";
        let p = parse_list(x, None);
        assert_eq!(p.objects, vec![("a.mp4".to_string(), 12), ("a.mp4.json".to_string(), 3)]);
        assert_eq!(p.next.as_deref(), Some("t&2"));
        assert!(!p.complete);
        let repeated = parse_list(x, Some("t&2"));
        assert_eq!(repeated.next, None, "a token that repeats ends the listing");
        assert!(!repeated.complete, "... but does not make it complete (nothing may be pruned)");
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(parse_list(last, None), ListPage { complete: true, ..ListPage::default() });
        assert!(!parse_list("", None).complete, "an empty answer is no listing");
        assert!(!parse_list("<html>proxy error</html>", None).complete);
        assert_eq!(EMPTY_SHA256, sigv4::sha256_hex(b""));
    }
}
