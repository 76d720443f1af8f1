//! Entry points of this layer's coverage-guided fuzz targets (fuzz/,
//! docs/FUZZING.md): raw bytes sent to the real HTTP server as a client,
//! WebSocket frames, and the JSON bodies of the API.
//!
//! Invariants: an entry point panics only when the code under test broke a
//! promise (a 500, a hang, a range outside the file, a reader that answers
//! differently depending on how the bytes were cut), never on the input.
//! The HTTP target's server (one per process, on a loopback port, in a
//! temporary directory) lives as long as the process.

use std::io::{Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::range::{self, RangeRequest};
use super::websocket::{FrameReader, Message, ProtocolError};
use super::{api, probe, request, session, state::Nvr};
use crate::base::clock::RealClock;
use crate::config::Config;

/// A hang: no answer (or no close) from the server for this long.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// The server every HTTP input is sent to: the real web layer with a fresh
/// database and no streams, the cheapest allowed password hashing.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("oxinvr-fuzz-http-{}", std::process::id()));
        let (data, rings) = (dir.join("data"), dir.join("rings"));
        for d in [&data, &rings] {
            std::fs::create_dir_all(d).expect("temporary directories for the fuzzed server");
        }
        let toml = format!(
            "[storage]\ndata_dir = {:?}\nring_dir = {:?}\n[web]\nlisten = \"127.0.0.1:0\"\npbkdf2_iterations = 1000\n",
            data.display().to_string(),
            rings.display().to_string()
        );
        let cfg = Config::parse(&toml, "fuzz").expect("the fuzzed server's configuration");
        let nvr = Arc::new(Nvr::new(cfg, Arc::new(RealClock)));
        let http = super::spawn(nvr).expect("the fuzzed server starts");
        let addr = http.local_addr().expect("the fuzzed server's address");
        std::mem::forget(http); // serves until the process ends
        addr
    })
}

/// The status code of the first answer in `answer`, if it has one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let code = std::str::from_utf8(line).ok()?.split(' ').nth(1)?;
    code.parse().ok()
}

/// Header values named `name` (any case) in the head part of `data`.
fn header_values<'a>(data: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    data.split("\r\n").filter_map(move |l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The header parsers on their own: every `Range` value against a few
/// lengths (a range served must lie inside the file and not be empty), every
/// `Cookie` value.
fn headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for v in header_values(&text, "range") {
        for len in [0, 1, 1000, u64::MAX] {
            match range::parse(Some(v), len) {
                RangeRequest::Partial(r) => {
                    assert!(r.len > 0 && r.start.checked_add(r.len).is_some_and(|e| e <= len), "{v:?} gave {r:?}");
                    let _ = r.content_range(len);
                }
                RangeRequest::Full | RangeRequest::Unsatisfiable => {}
            }
        }
    }
    for v in header_values(&text, "cookie") {
        let _ = request::cookie(v, request::SESSION_COOKIE);
    }
}

/// `data` sent as a client to the real server, which must answer (or close)
/// in time and never with 500 (a handler panicked or failed).
pub fn http(data: &[u8]) {
    headers(data);
    let Ok(mut conn) = TcpStream::connect(server()) else { return };
    let _ = conn.set_read_timeout(Some(ANSWER_LIMIT));
    let _ = conn.set_write_timeout(Some(ANSWER_LIMIT));
    // The server may close before reading everything (a bad head): write errors are fine.
    let _ = conn.write_all(data);
    let _ = conn.shutdown(NetShutdown::Write);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the server neither answered nor closed within {ANSWER_LIMIT:?}")
            }
            Err(_) => break, // reset by the server: it refused the input
        }
    }
    if let Some(code) = status_of(&answer) {
        assert_ne!(code, 500, "the server failed: {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
    }
}

/// Every message until more bytes are needed or the first protocol error.
fn drain(r: &mut FrameReader, out: &mut Vec<Message>) -> Option<ProtocolError> {
    loop {
        match r.next_message() {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// The first byte picks the side (server reads masked frames), a message
/// limit and a chunk size; the rest is the byte stream. Read whole and read
/// in chunks, it must give the same messages and the same error, and no
/// message over the limit.
pub fn websocket(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else { return };
    let max = [16, 125, 1000, 65536][usize::from(first & 3)];
    let chunk = usize::from(first >> 2) + 1;
    let new = || if first & 0x80 == 0 { FrameReader::server(max) } else { FrameReader::client(max) };
    let (mut whole, mut cut) = (new(), new());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    whole.push(stream);
    let err_a = drain(&mut whole, &mut a);
    let mut err_b = None;
    for part in stream.chunks(chunk) {
        cut.push(part);
        err_b = drain(&mut cut, &mut b);
        if err_b.is_some() {
            break;
        }
    }
    assert_eq!(a, b, "messages depend on how the stream was cut");
    assert_eq!(err_a, err_b, "the error depends on how the stream was cut");
    for m in &a {
        if let Message::Text(_) | Message::Binary(_) = m {
            let len = match m {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                _ => 0,
            };
            assert!(len <= max, "a message of {len} bytes passed a limit of {max}");
        }
    }
}

/// `data` as the body of every JSON route that parses before it touches the
/// database: logins, setup, users, TOTP codes, API keys, streams, probes.
pub fn json(data: &[u8]) {
    session::check_bodies(data);
    api::check_stream_bodies(data);
    let _ = probe::body_ok(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `http` fuzz target: a request line with HTTP/2.0 (or 3.0)
    /// got its 505 written through a second writer that waited for the
    /// request's own writer for ever, so the connection thread hung and kept
    /// its connection slot; enough of them and the server refused everyone.
    /// Now: 505 at once, then the connection is closed, while the client
    /// still has its side open.
    #[test]
    fn an_http2_request_line_gets_505_and_the_connection_closes() {
        for version in ["HTTP/2.0", "HTTP/3.0"] {
            let mut conn = TcpStream::connect(server()).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            write!(conn, "GET /api/health {version}\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).expect("the server answers and closes within 5 s");
            assert_eq!(status_of(&answer), Some(505), "{}", String::from_utf8_lossy(&answer));
        }
    }
}
