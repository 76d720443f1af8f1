//! Live view: `GET /api/streams/{name}/live`, a WebSocket carrying fragmented
//! MP4 read from the stream's ring, one `moof+mdat` message per video frame.
//! `?sub=1` reads the stream's sub stream instead when it has one (the page's
//! grid of tiles), else its main stream.
//!
//! - `admit`: on an http worker, the request's checks (404 unknown stream, 409
//!   disabled, 400 not a WebSocket upgrade, 403 foreign `Origin`, 503
//!   `web.max_live_clients` reached) and the client's slot; then [`serve`]
//!   answers 101 and hands the connection to a new thread `live-N`.
//! - `pump`: that thread: one ring cursor, the paced socket (outbox, lag and
//!   jump policy, client messages, credential re-checks) until the client leaves.
//! - `feed`: the messages made of ring records; the fragments themselves come
//!   from `recording::fragmenter` (one per video frame).
//!
//! Protocol (server to client; docs/ARCHITECTURE.md, "Live view"):
//! 1. text `{"type":"init","mime":..,"codec":..,"audio":..|null,"width":..,"height":..}`,
//!    then one binary message: the init segment (ftyp+moov).
//! 2. binary messages, each one `moof+mdat` holding one video frame (and the
//!    audio frames that arrived since the previous one). The first is a
//!    keyframe; tfdt starts at 0 after each init and runs on without holes.
//! 3. a new run in the ring (codec parameters changed): init pair again, tfdt
//!    from 0 at the next keyframe.
//! 4. text `{"type":"jump","reason":..,"skipped_frames":N,"skipped_ms":M}` right
//!    before the first fragment after frames were skipped (slow client).
//! 5. text `{"type":"error","error":"stream stopped"}` and a close frame when
//!    the stream is stopped, deleted or restarted; `"live view stopped: memory
//!    is short"` when the pressure ladder sheds live view (step 1).
//!
//! Invariant: the http worker never serves the client; it is free again as
//! soon as the 101 is handed over (or refused).

mod admit;
mod feed;
mod pump;
pub mod sse;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::reply::Reply;
use super::websocket::{self, close, Opcode};
use crate::auth::Via;
use crate::web::state::Nvr;

use admit::{admit, Admitted};
pub use admit::{live_clients, set_shedding, shedding};
use pump::Client;
pub use pump::LiveDb;

/// Stack of a `live-N` thread (its loop is shallow; keeps 32-bit address space for 256 clients small).
const STACK_BYTES: usize = 256 << 10;

// usize: MIPS32 has no 64-bit atomics.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Answers an authorised live request (the route and credentials are checked;
/// `via` is checked again every 2 s, `pump::AUTH_CHECK`, while the client watches).
pub fn serve(nvr: &Nvr, stream: &str, sub: bool, via: Via, rq: tiny_http::Request) -> u16 {
    match admit(nvr, stream, sub, via, &rq) {
        Ok(admitted) => {
            start(admitted, stream, rq);
            101
        }
        Err(e) => {
            let line = format!("{} {}", rq.method(), rq.url());
            let reply = Reply::from(e);
            let status = reply.status;
            if let Err(err) = super::respond(rq, reply) {
                log::debug!("{line}: answer not delivered: {err}");
            }
            status
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-over to the client thread

fn start(a: Admitted, stream: &str, rq: tiny_http::Request) {
    let accept = websocket::accept_key(&a.key);
    let mut response = tiny_http::Response::empty(101);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Sec-WebSocket-Accept"[..], accept.as_bytes()) {
        response.add_header(h);
    }
    let peer = rq.remote_addr().map(|p| p.to_string()).unwrap_or_default();
    let tls = rq.secure();
    let upgraded = rq.upgrade("websocket", response);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    // (Over TLS a raw close frame would be garbage: the client just sees the socket close.)
    let fallback = a.socket.try_clone().ok().filter(|_| !tls);
    let mut client = Client::new(a.rt, a.socket, upgraded, a.slot, Some(a.auth), a.shutdown);
    if tls {
        client = client.over_tls();
    }
    log::info!("live-{id}: {peer} watches {stream}");
    let spawned =
        std::thread::Builder::new().name(format!("live-{id}")).stack_size(STACK_BYTES).spawn(move || client.run());
    if let Err(e) = spawned {
        log::warn!("live {stream} for {peer}: cannot start thread live-{id}: {e}");
        if let Some(mut s) = fallback {
            let mut out = Vec::new();
            websocket::put_frame(
                &mut out,
                Opcode::Close,
                &websocket::close_payload(close::INTERNAL_ERROR, "no thread"),
            );
            let _ = s.write_all(&out);
        }
    }
}
