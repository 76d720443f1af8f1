//! The live push of events: `GET /api/events/stream`, server-sent events
//! (`text/event-stream`) fed by the events store's broadcast.
//!
//! Chosen over the live-view WebSocket: one-way text, a browser's
//! `EventSource` reconnects by itself, and it passes plain HTTP proxies.
//!
//! Invariants:
//! - A client holds one slot among `web.max_live_clients` (the live-view
//!   clients' count) for as long as it is connected; refused with 503 when
//!   none is free or while memory is short (pressure ladder step 1+).
//! - Its queue is the broadcast's bounded, drop-oldest one: a slow client
//!   loses notices (told with an `event: dropped` message), never slows the
//!   store. A write that makes no progress for `web.io_timeout_seconds` ends it.
//! - The credential is checked again every `AUTH_CHECK`; the client is let go
//!   when it ends, and when the recorder stops.
//!
//! Messages: `event: began|ended|deleted`, `id: <event id>`, `data: <event JSON
//! as GET /api/events/{id} gives>`; a comment line every `KEEPALIVE`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::admit::{dup_socket, shedding, Slot};
use super::pump::Recheck;
use super::NEXT_ID;
use crate::auth::Via;
use crate::events::{Notice, Subscription};
use crate::web::reply::{ApiError, Reply};
use crate::web::state::Nvr;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
const AUTH_CHECK: Duration = Duration::from_secs(2);
/// How long one wait for a notice lasts (the shutdown and credential checks run between).
const WAIT: Duration = Duration::from_millis(500);

/// Answers an authorised `GET /api/events/stream`; returns the status answered.
pub fn serve(nvr: &Nvr, via: Via, rq: tiny_http::Request) -> u16 {
    match admit(nvr) {
        Ok(slot) => {
            start(nvr, via, slot, rq);
            200
        }
        Err(e) => {
            let line = format!("{} {}", rq.method(), rq.url());
            let reply = Reply::from(e);
            let status = reply.status;
            if let Err(err) = crate::web::respond(rq, reply) {
                log::debug!("{line}: answer not delivered: {err}");
            }
            status
        }
    }
}

fn admit(nvr: &Nvr) -> Result<Slot, ApiError> {
    if shedding() {
        let why = "the event stream is refused while memory is short (memory pressure ladder step 1 or above)";
        return Err(ApiError::new(503, why).with_header("Retry-After", "30".into()));
    }
    Slot::take(nvr.config.web.max_live_clients)
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn start(nvr: &Nvr, via: Via, slot: Slot, rq: tiny_http::Request) {
    let sub = nvr.events.hub().subscribe();
    let mut response = tiny_http::Response::empty(200);
    for h in [
        header("Content-Type", "text/event-stream"),
        header("Cache-Control", "no-store"),
        header("Connection", "close"),
        header("X-Accel-Buffering", "no"),
    ]
    .into_iter()
    .flatten()
    {
        response.add_header(h);
    }
    // The socket's own write timeout bounds a client that stops reading (over TLS too: same socket).
    let io_timeout = Duration::from_secs(u64::from(nvr.config.web.io_timeout_seconds.max(1)));
    if let Ok(s) = dup_socket(&rq) {
        let _ = s.set_write_timeout(Some(io_timeout));
    }
    let peer = rq.remote_addr().map(|p| p.to_string()).unwrap_or_default();
    let out = rq.upgrade("", response);
    let auth = Recheck::new(via, nvr.config.db_path(), nvr.clock.clone(), nvr.live_db.clone());
    let client = Client { out, sub, auth, shutdown: nvr.shutdown.clone(), _slot: slot };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    log::info!("events-{id}: {peer} follows events");
    let spawned = std::thread::Builder::new()
        .name(format!("events-{id}"))
        .stack_size(super::STACK_BYTES)
        .spawn(move || client.run());
    if let Err(e) = spawned {
        log::warn!("event stream for {peer}: cannot start thread events-{id}: {e}");
    }
}

struct Client {
    out: Box<dyn tiny_http::ReadWrite + Send>,
    sub: Subscription,
    auth: Recheck,
    shutdown: crate::base::shutdown::Shutdown,
    _slot: Slot,
}

/// One notice as an SSE message.
fn message(n: &Notice) -> String {
    let data = crate::web::events::event_json(&n.event);
    format!("event: {}\nid: {}\ndata: {data}\n\n", n.change.as_str(), n.event.id)
}

impl Client {
    fn run(mut self) {
        let (mut sent, mut checked, mut told_dropped) = (Instant::now(), Instant::now(), 0);
        if self.write(": events\nretry: 3000\n\n").is_err() {
            return;
        }
        while !self.shutdown.is_triggered() {
            if checked.elapsed() >= AUTH_CHECK {
                if !self.auth.still_valid() {
                    let _ = self.write("event: error\ndata: {\"error\":\"the credential ended\"}\n\n");
                    return;
                }
                checked = Instant::now();
            }
            let text = match self.sub.next(WAIT) {
                Some(n) => message(&n),
                None if sent.elapsed() >= KEEPALIVE => ": keepalive\n\n".to_string(),
                None => continue,
            };
            let dropped = self.sub.dropped();
            if dropped > told_dropped {
                let note = format!("event: dropped\ndata: {{\"dropped\":{dropped}}}\n\n");
                told_dropped = dropped;
                if self.write(&note).is_err() {
                    return;
                }
            }
            if self.write(&text).is_err() {
                return;
            }
            sent = Instant::now();
        }
        let _ = self.write("event: error\ndata: {\"error\":\"the recorder stops\"}\n\n");
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }
}
