//! Admission of a live-view request, on the http worker: the stream must exist
//! and be enabled, the request must be an RFC 6455 upgrade from the same origin,
//! and a slot among `web.max_live_clients` must be free.
//!
//! Invariants:
//! - While memory is short (`shedding`, pressure ladder step 1+) every
//!   request is refused with 503 before it takes anything.
//! - Every check runs before the 101: a refused request gets a JSON error and
//!   never takes a slot, a thread or a ring cursor.
//! - A slot is held by the client's thread and freed when it ends (on drop).

use std::io;
use std::net::TcpStream;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::pump::{Recheck, READ_WAIT, WRITE_SLICE};
use crate::auth::Via;
use crate::base::shutdown::Shutdown;
use crate::recording::stream::{StreamRuntime, StreamState};
use crate::web::permit::Permit;
use crate::web::reply::ApiError;
use crate::web::request::header;
use crate::web::state::Nvr;
use crate::web::websocket;

static CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Set by the pressure ladder (step 1 and above): clients are let go and new
/// ones refused with 503 until it descends below step 1.
static SHEDDING: AtomicBool = AtomicBool::new(false);

/// Turns live-view shedding on or off (`web::pressure`, ladder step 1).
pub fn set_shedding(on: bool) {
    SHEDDING.store(on, Ordering::SeqCst);
}

/// True while memory is short and live view is shed.
pub fn shedding() -> bool {
    SHEDDING.load(Ordering::SeqCst)
}

/// Live-view clients being served right now.
pub fn live_clients() -> usize {
    CLIENTS.load(Ordering::SeqCst)
}

/// A live client's place among `web.max_live_clients`; freed on drop.
pub(super) struct Slot(#[allow(dead_code)] Permit); // held for its Drop

impl Slot {
    pub(super) fn take(max: u32) -> Result<Slot, ApiError> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Permit::try_take(&CLIENTS, max)
            .map(Slot)
            .ok_or_else(|| ApiError::new(503, format!("{max} live clients are being served (web.max_live_clients)")))
    }
}

/// What a request that passed every check brings to its thread.
pub(super) struct Admitted {
    pub rt: Arc<StreamRuntime>,
    pub auth: Recheck,
    pub key: String,
    pub socket: TcpStream,
    pub slot: Slot,
    /// The recorder's stop signal: the client is told and let go.
    pub shutdown: Shutdown,
}

pub(super) fn admit(
    nvr: &Nvr,
    stream: &str,
    sub: bool,
    via: Via,
    rq: &tiny_http::Request,
) -> Result<Admitted, ApiError> {
    let rt = nvr.recorder.stream(stream).ok_or_else(|| ApiError::not_found(format!("no stream named {stream:?}")))?;
    if rt.with_status(|s| s.state) == StreamState::Disabled {
        return Err(ApiError::conflict(format!("stream {stream:?} is disabled; enable it to watch it live")));
    }
    // The grid's tiles ask for the sub stream; a stream without one shows its main.
    let rt = if sub { rt.sub().unwrap_or(rt) } else { rt };
    let key = handshake_key(rq)?;
    let origin = header(rq, "Origin");
    // Behind a trusted proxy the browser's host is the one the proxy says it forwarded.
    let forwarded = nvr.config.web.trust_proxy.then(|| header(rq, "X-Forwarded-Host")).flatten();
    let host = forwarded.or_else(|| header(rq, "Host"));
    if let Some(origin) = origin.filter(|o| !same_origin(o, host.as_deref())) {
        return Err(ApiError::new(403, format!("Origin {origin:?} does not match the Host header")));
    }
    if shedding() {
        let why =
            "live view is refused while memory is short (memory pressure ladder step 1 or above); try again later";
        return Err(ApiError::new(503, why).with_header("Retry-After", "30".into()));
    }
    let slot = Slot::take(nvr.config.web.max_live_clients)?;
    let peer = rq.remote_addr().copied().ok_or_else(|| ApiError::internal("the connection has no peer address"))?;
    let socket = dup_socket(rq)
        .and_then(socket_ready)
        .map_err(|e| ApiError::internal(format!("cannot set up the socket of the live connection from {peer}: {e}")))?;
    let auth = Recheck::new(via, nvr.config.db_path(), nvr.clock.clone(), nvr.live_db.clone());
    Ok(Admitted { rt, auth, key, socket, slot, shutdown: nvr.shutdown.clone() })
}

/// The `Sec-WebSocket-Key` of a valid RFC 6455 upgrade request.
fn handshake_key(rq: &tiny_http::Request) -> Result<String, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("live view needs a WebSocket upgrade: {m}"));
    let has_token = |name: &'static str, token: &str| {
        header(rq, name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if rq.method() != &tiny_http::Method::Get {
        return Err(bad("the method must be GET"));
    }
    if !has_token("Upgrade", "websocket") {
        return Err(bad("the Upgrade: websocket header is missing"));
    }
    if !has_token("Connection", "upgrade") {
        return Err(bad("the Connection: Upgrade header is missing"));
    }
    if header(rq, "Sec-WebSocket-Version").as_deref().map(str::trim) != Some("13") {
        return Err(bad("Sec-WebSocket-Version must be 13").with_header("Sec-WebSocket-Version", "13".into()));
    }
    let key = header(rq, "Sec-WebSocket-Key").ok_or_else(|| bad("the Sec-WebSocket-Key header is missing"))?;
    if !websocket::valid_key(&key) {
        return Err(bad("Sec-WebSocket-Key is not the base64 of 16 bytes"));
    }
    Ok(key)
}

/// True if `origin` (`scheme://host[:port]`) names the same host and port as
/// the `Host` header (a missing port meaning the scheme's default).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Ok(o), Some(host)) = (url::Url::parse(origin.trim()), host) else { return false };
    let (Some(o_host), Some(o_port)) = (o.host_str(), o.port_or_known_default()) else { return false };
    let Ok(h) = url::Url::parse(&format!("{}://{}", o.scheme(), host.trim())) else { return false };
    let bare = h.path() == "/" && h.username().is_empty() && h.password().is_none() && h.query().is_none();
    bare && h.host_str() == Some(o_host) && h.port_or_known_default() == Some(o_port)
}

/// A duplicate of the request's TCP socket: tiny_http's upgraded stream does
/// not expose its socket, and live view needs one for timeouts and the send
/// queue size. (`Request::tcp_fd` is our patch to the vendored tiny_http.)
/// Over TLS it is used for those only; the bytes go through rustls.
pub(super) fn dup_socket(rq: &tiny_http::Request) -> io::Result<TcpStream> {
    let fd = rq.tcp_fd().ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not a plain TCP connection"))?;
    // SAFETY: the fd is the socket of the connection `rq` came from, which
    // tiny_http keeps open at least as long as `rq` lives (it is borrowed here).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(TcpStream::from(borrowed.try_clone_to_owned()?))
}

fn socket_ready(s: TcpStream) -> io::Result<TcpStream> {
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(WRITE_SLICE))?;
    s.set_read_timeout(Some(READ_WAIT))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_match_the_host() {
        assert!(same_origin("http://nvr.local:8080", Some("nvr.local:8080")));
        assert!(same_origin("https://NVR.example", Some("nvr.example")));
        assert!(same_origin("https://nvr.example", Some("nvr.example:443")));
        assert!(same_origin("http://[::1]:80", Some("[::1]")));
        assert!(!same_origin("http://evil.example:8080", Some("nvr.local:8080")));
        assert!(!same_origin("http://nvr.local:8081", Some("nvr.local:8080")));
        assert!(!same_origin("https://nvr.local", Some("nvr.local:80")));
        assert!(!same_origin("null", Some("nvr.local")));
        assert!(!same_origin("http://nvr.local", None));
        assert!(!same_origin("http://nvr.local", Some("x@nvr.local")));
        assert!(!same_origin("http://nvr.local", Some("nvr.local/path")));
    }

    #[test]
    fn slots_are_limited_and_freed() {
        // Other tests of this binary do not take slots; the counter is global.
        let before = live_clients();
        let a = Slot::take(u32::try_from(before + 1).expect("small")).expect("one free");
        assert_eq!(Slot::take(u32::try_from(before + 1).expect("small")).map(|_| ()).unwrap_err().status, 503);
        drop(a);
        assert_eq!(live_clients(), before);
    }
}
