//! The embedded single-page UI (web-static/, gzipped into the binary by
//! build.rs): `/` and `/index.html` are the page, other paths name its files.
//!
//! Invariants:
//! - A file is found by exact match of its path in the generated table; the
//!   file system is never touched, so `../` or `%2e%2e` can name nothing but
//!   an unknown file (404 JSON like every other error).
//! - Gzipped bytes go to clients that accept gzip; others get them inflated
//!   in memory (the files are small).
//! - Every answer has an ETag (content hash) and `Cache-Control: no-cache`
//!   (names carry no content hash, so browsers revalidate; a matching
//!   `If-None-Match` gets 304 without a body). The page itself carries the
//!   security headers (CSP without inline script or style, no framing).

use std::io::Read;

use flate2::read::GzDecoder;

use super::reply::{ApiError, Body, Reply};
use super::request::RequestInfo;

/// One embedded file.
pub struct Asset {
    /// Relative to web-static/, `/`-separated.
    pub path: &'static str,
    pub content_type: &'static str,
    /// The content, gzipped.
    pub gz: &'static [u8],
    /// Length of the content before compression.
    pub len: usize,
    /// Quoted strong ETag.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Content-Security-Policy of the page: only its own scripts, styles and
/// connections; images also from `data:` (TOTP QR), media from `blob:` (MSE).
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
                       style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// The embedded file at `path` (`""` is the page), if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

pub fn serve(file: &str, req: &RequestInfo) -> Reply {
    let Some(asset) = find(file) else {
        return Reply::from(ApiError::not_found(format!("no such file: /{file}")));
    };
    let mut headers = vec![
        ("ETag", asset.etag.to_string()),
        ("Cache-Control", "no-cache".to_string()),
        ("Vary", "Accept-Encoding".to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
    ];
    if asset.content_type.starts_with("text/html") {
        headers.push(("Content-Security-Policy", CSP.to_string()));
        headers.push(("Referrer-Policy", "same-origin".to_string()));
        headers.push(("X-Frame-Options", "DENY".to_string()));
    }
    if req.if_none_match.as_deref().is_some_and(|v| etag_matches(v, asset.etag)) {
        return Reply { status: 304, headers, body: Body::Bytes(Vec::new()) };
    }
    headers.push(("Content-Type", asset.content_type.to_string()));
    let body = if req.accept_gzip {
        headers.push(("Content-Encoding", "gzip".to_string()));
        asset.gz.to_vec()
    } else {
        match inflate(asset) {
            Ok(b) => b,
            Err(e) => return Reply::from(ApiError::internal(format!("embedded file /{} is corrupt: {e}", asset.path))),
        }
    };
    Reply { status: 200, headers, body: Body::Bytes(body) }
}

/// True if an `If-None-Match` value names `etag` (weak comparison, `*` matches).
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn inflate(asset: &Asset) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(asset.len);
    GzDecoder::new(asset.gz).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn body(r: &Reply) -> &[u8] {
        match &r.body {
            Body::Bytes(b) => b,
            Body::Reader(..) => panic!("bytes expected"),
        }
    }

    fn plain() -> RequestInfo {
        RequestInfo::default()
    }

    fn gzip_ok() -> RequestInfo {
        RequestInfo { accept_gzip: true, ..RequestInfo::default() }
    }

    #[test]
    fn the_page_is_served_at_the_root_with_security_headers() {
        let r = serve("", &plain());
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "Content-Type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&r, "Content-Encoding"), None);
        assert_eq!(header(&r, "Cache-Control"), Some("no-cache"));
        assert_eq!(header(&r, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(header(&r, "Referrer-Policy"), Some("same-origin"));
        let csp = header(&r, "Content-Security-Policy").expect("CSP");
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        let text = String::from_utf8_lossy(body(&r)).into_owned();
        assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
        let same = serve("index.html", &plain());
        assert_eq!(body(&same), body(&r));
        assert_eq!(header(&same, "ETag"), header(&r, "ETag"));
    }

    #[test]
    fn gzip_is_sent_to_clients_that_take_it_and_inflates_to_the_same_bytes() {
        for a in ASSETS {
            let z = serve(a.path, &gzip_ok());
            assert_eq!(z.status, 200, "{}", a.path);
            assert_eq!(header(&z, "Content-Encoding"), Some("gzip"), "{}", a.path);
            assert_eq!(header(&z, "Content-Type"), Some(a.content_type));
            let mut inflated = Vec::new();
            GzDecoder::new(body(&z)).read_to_end(&mut inflated).expect("gunzip");
            let p = serve(a.path, &plain());
            assert_eq!(inflated, body(&p), "{}", a.path);
            assert_eq!(inflated.len(), a.len, "{}", a.path);
        }
        let js = find("app.js").expect("app.js is embedded");
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        assert!(header(&serve("app.js", &plain()), "Content-Security-Policy").is_none());
    }

    #[test]
    fn unknown_files_and_traversal_are_404_json() {
        for f in ["nope.js", "../Cargo.toml", "..%2fCargo.toml", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "app.js/"] {
            let r = serve(f, &gzip_ok());
            assert_eq!(r.status, 404, "{f}");
            assert_eq!(header(&r, "Content-Type"), Some("application/json"), "{f}");
            assert!(String::from_utf8_lossy(body(&r)).contains("\"error\""), "{f}");
        }
    }

    #[test]
    fn a_matching_etag_gets_304() {
        let etag = find("").expect("page").etag;
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18, "{etag}");
        for inm in [etag.to_string(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".to_string()] {
            let r = serve("", &RequestInfo { if_none_match: Some(inm.clone()), ..gzip_ok() });
            assert_eq!(r.status, 304, "{inm}");
            assert!(body(&r).is_empty());
            assert_eq!(header(&r, "ETag"), Some(etag));
        }
        let r = serve("", &RequestInfo { if_none_match: Some("\"other\"".into()), ..gzip_ok() });
        assert_eq!(r.status, 200);
    }

    #[test]
    fn etags_differ_between_files() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
