//! What the server needs to know about a request besides its route: who sent
//! it (address, credentials) and what it accepts. Read once per request.
//!
//! Invariant: `X-Forwarded-Proto` / `X-Forwarded-For` are believed only with
//! `web.trust_proxy = true`; otherwise any client could claim to be anyone.

use std::net::IpAddr;

use crate::config::WebConfig;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "oxinvr_session";
/// Header that carries the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// The client (the proxy's idea of it with `web.trust_proxy`).
    pub peer: Option<IpAddr>,
    pub user_agent: String,
    /// Value of the session cookie, if sent.
    pub session: Option<String>,
    /// Token of an `Authorization: Bearer` header, if sent.
    pub bearer: Option<String>,
    /// The password of an `Authorization: Basic` header: an API key from a player
    /// that can only put credentials in the URL. Honoured for media reads only.
    pub basic: Option<String>,
    /// Sent by a browser (`Sec-Fetch-*` headers): never challenged for Basic, so no
    /// password dialog ever opens over the page.
    pub browser: bool,
    pub csrf: Option<String>,
    pub content_type: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    pub range: Option<String>,
    pub accept_gzip: bool,
    /// `If-None-Match` (ETags of a cached copy), for the embedded page's files.
    pub if_none_match: Option<String>,
    /// Served over TLS (ours, or a trusted proxy that says so): cookies get `Secure`.
    pub secure: bool,
}

impl RequestInfo {
    pub fn of(rq: &tiny_http::Request, web: &WebConfig) -> RequestInfo {
        let h = |name: &'static str| header(rq, name);
        let mut peer = rq.remote_addr().map(|a| a.ip());
        let mut secure = rq.secure();
        if web.trust_proxy {
            secure |= h("X-Forwarded-Proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            // The proxy appends the address it saw: the last entry. Earlier ones
            // are whatever the client claimed.
            let all = headers_joined(rq, "X-Forwarded-For");
            let last = all.rsplit(',').next().and_then(|a| a.trim().parse().ok());
            peer = last.or(peer);
        }
        RequestInfo {
            peer,
            user_agent: h("User-Agent").unwrap_or_default().chars().take(200).collect(),
            session: h("Cookie").and_then(|c| cookie(&c, SESSION_COOKIE)),
            bearer: h("Authorization").and_then(|a| bearer(&a)),
            basic: h("Authorization").and_then(|a| basic_password(&a)),
            browser: h("Sec-Fetch-Site").is_some() || h("Sec-Fetch-Mode").is_some(),
            csrf: h(CSRF_HEADER),
            content_type: h("Content-Type"),
            host: h("Host"),
            range: h("Range"),
            accept_gzip: h("Accept-Encoding").is_some_and(|a| accepts_gzip(&a)),
            if_none_match: h("If-None-Match"),
            secure,
        }
    }

    /// True if the body is declared as JSON.
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")))
    }
}

pub fn header(rq: &tiny_http::Request, name: &'static str) -> Option<String> {
    rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_string())
}

/// Every value of a header that may be sent on several lines, joined with `,`
/// (a proxy may add its own line instead of extending the client's).
fn headers_joined(rq: &tiny_http::Request, name: &'static str) -> String {
    let values: Vec<&str> = rq.headers().iter().filter(|h| h.field.equiv(name)).map(|h| h.value.as_str()).collect();
    values.join(",")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

fn bearer(header: &str) -> Option<String> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
}

/// The password of `Basic base64(name:password)` (the name is ignored: the key
/// says who it is).
fn basic_password(header: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let pair = String::from_utf8(raw).ok()?;
    pair.split_once(':').map(|(_, pw)| pw.to_string()).filter(|t| !t.is_empty())
}

fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|e| {
        let mut parts = e.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
        name.eq_ignore_ascii_case("gzip") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(cookie("a=1; oxinvr_session=xyz; b=2", SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie("oxinvr_session_x=1", SESSION_COOKIE), None);
        assert_eq!(bearer("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(bearer("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        // "demo:oxk_k" and ":oxk_k" carry the key as the password; "demo:" carries none.
        assert_eq!(basic_password("Basic ZGVtbzpveGtfaw==").as_deref(), Some("oxk_k"));
        assert_eq!(basic_password("basic Om94a19r").as_deref(), Some("oxk_k"));
        assert_eq!(basic_password("Basic ZGVtbzo="), None);
        assert_eq!(basic_password("Bearer oxk_k"), None);
        assert_eq!(bearer("Bearer "), None);
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0, br"));
        assert!(!accepts_gzip("identity"));
    }
}
