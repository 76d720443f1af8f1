//! HTTPS (`web.tls`): the certificate API and the HTTP -> HTTPS redirect.
//! The certificate itself is `auth::tls`; the TLS server is the vendored
//! tiny_http's `Server::https_limited` (handshakes on the connection threads).
//!
//! Invariants:
//! - With `web.tls` on, plain HTTP answers only `/api/health` (monitoring, the
//!   box's own health check) and requests bearing the console token (the UART
//!   shell and local scripts, on loopback); everything else gets 308 to the
//!   same path on the HTTPS port, so no password or session cookie is ever
//!   accepted over plain HTTP.
//! - The private key is never part of an answer.

use serde_json::{json, Value};

use super::reply::{ApiError, Reply};
use super::request::RequestInfo;
use super::router::Query;
use super::Ctx;
use crate::auth::tls::CertInfo;
use crate::web::state::Nvr;

/// `GET /api/system/tls`.
pub fn get(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::json(200, &describe(ctx.nvr)))
}

/// `PUT /api/system/tls` (admin): `{"certificate": PEM, "private_key": PEM}`.
pub fn put(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let Some(store) = ctx.nvr.tls.get() else {
        return Err(ApiError::new(409, "HTTPS is off (web.tls = false): there is no certificate to replace"));
    };
    let mut obj = super::api::json_object(body)?;
    let mut pem = |field: &str| match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("field {field}: must be a PEM string"))),
        None => Err(ApiError::bad_request(format!("field {field} is missing (PEM text)"))),
    };
    let (cert, key) = (pem("certificate")?, zeroize::Zeroizing::new(pem("private_key")?));
    if let Some(extra) = obj.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field {extra} (expected certificate, private_key)")));
    }
    let info = store.replace(&cert, &key).map_err(|e| {
        if e.starts_with("cannot write") {
            ApiError::internal(e)
        } else {
            ApiError::new(422, e)
        }
    })?;
    log::info!("HTTPS certificate replaced by an upload: {} ({})", info.subject, info.fingerprint);
    Ok(Reply::json(200, &info_json(true, &info)))
}

fn describe(nvr: &Nvr) -> Value {
    match nvr.tls.get() {
        Some(store) => info_json(true, &store.info()),
        None => json!({ "enabled": false }),
    }
}

fn info_json(enabled: bool, i: &CertInfo) -> Value {
    json!({
        "enabled": enabled,
        "fingerprint_sha256": i.fingerprint,
        "subject": i.subject,
        "not_after": i.not_after,
        "source": i.source.as_str(),
        "applies": "new connections (open ones keep the certificate they began with)",
    })
}

/// The 308 a plain-HTTP request gets when HTTPS is on, or None if it is served
/// as is (see the module's invariants).
pub fn redirect(nvr: &Nvr, rq: &tiny_http::Request, req: &RequestInfo) -> Option<Reply> {
    if rq.secure() || req.secure || nvr.tls.get().is_none() {
        return None;
    }
    let (path, _) = super::router::split_target(rq.url());
    if path == "/api/health" || req.bearer.as_deref().is_some_and(|t| nvr.auth.is_console(t)) {
        return None;
    }
    let port = nvr.config.web.tls_listen.rsplit_once(':').map_or("443", |(_, p)| p);
    let Some(host) = req.host.as_deref().and_then(host_only) else {
        return Some(Reply::from(ApiError::bad_request(format!(
            "this box serves HTTPS on port {port}; plain HTTP needs a Host header to be redirected there"
        ))));
    };
    let target = rq.url();
    let target = if target.starts_with('/') { target.to_string() } else { format!("/{target}") };
    let location = match port {
        "443" => format!("https://{host}{target}"),
        p => format!("https://{host}:{p}{target}"),
    };
    let body = json!({ "error": format!("use HTTPS: {location}") });
    Some(Reply::json(308, &body).with_header("Location", location))
}

/// The host part of a `Host` header (`name`, `1.2.3.4` or `[::1]`), if it is sane.
fn host_only(h: &str) -> Option<&str> {
    let h = h.trim();
    let host = if h.starts_with('[') { h.split_inclusive(']').next()? } else { h.split(':').next()? };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|c| c.is_ascii_alphanumeric() || b"-.[]:".contains(&c));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_only;

    #[test]
    fn the_redirect_keeps_the_host_only() {
        assert_eq!(host_only("nvr.local:8080"), Some("nvr.local"));
        assert_eq!(host_only("192.168.1.5"), Some("192.168.1.5"));
        assert_eq!(host_only("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_only("evil.example/x"), None);
        assert_eq!(host_only("a b"), None);
        assert_eq!(host_only(""), None);
    }
}
