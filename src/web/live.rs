//! Live view: `GET /api/streams/{name}/live`, a WebSocket carrying fragmented
//! MP4 read from the stream's ring, one `moof+mdat` message per video frame.
//!
//! An http worker checks the request (404 unknown stream, 409 disabled, 400 not
//! a WebSocket upgrade, 403 foreign `Origin`, 503 `web.max_live_clients`
//! reached), answers 101 and hands the connection to a new thread `live-N`,
//! which holds one ring cursor and serves the client until it leaves.
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
//!    the stream is stopped, deleted or restarted.
//!
//! Invariants:
//! - A video frame is held back until the next one is read, so its duration
//!   is the exact pts delta (one frame interval of added latency); a held frame
//!   that has no successor (jump, new run) gets the previous frame's duration.
//! - The thread never blocks for long: socket writes time out after
//!   `WRITE_SLICE`, reads after `READ_WAIT` (the read doubles as the wait for
//!   new frames). A client that takes nothing for `STALL_LIMIT` is dropped.
//! - Slow clients: no new message is produced while more than
//!   `QUEUE_PAUSE_SECS` of media waits in the kernel's send queue and our
//!   outbox; a frame that is more than `MAX_LAG_SECS` behind the live edge
//!   (its age in the ring plus that queue) makes the client jump to the
//!   newest keyframe if that is ahead of it. A ring `Gap` always jumps.
//! - Memory per client: the ring read buffer and the held frame (swapped, not
//!   copied), the audio since the last video frame, and one outbox that holds
//!   at most the messages of one ring record (init pair + jump + fragment),
//!   all reused. Client messages are capped at 64 KiB.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::permit::Permit;
use super::reply::{ApiError, Reply};
use super::request::header;
use super::websocket::{self, close, FrameReader, Message, Opcode, ProtocolError};
use crate::auth::Via;
use crate::base::clock::Clock;
use crate::index::db::Db;
use crate::recording::media::{RunStart, Track};
use crate::recording::mp4;
use crate::recording::ring::{Cursor, ReadResult};
use crate::recording::stream::{StreamRuntime, StreamState};
use crate::web::state::Nvr;

/// A frame further than this behind the live edge makes the client jump.
const MAX_LAG_SECS: f64 = 2.0;
/// No new message is produced while this much media is queued for the client.
const QUEUE_PAUSE_SECS: f64 = 1.0;
/// A client that takes in nothing for this long is disconnected.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Longest a socket write blocks (SO_SNDTIMEO), and the longest one flush runs.
const WRITE_SLICE: Duration = Duration::from_millis(20);
/// Longest a socket read blocks (SO_RCVTIMEO): the poll interval for new frames.
const READ_WAIT: Duration = Duration::from_millis(10);
/// How often the thread checks whether its stream was stopped.
const STATUS_CHECK: Duration = Duration::from_millis(250);
/// How often a watching client's session or API key is checked again: a
/// revoked, expired or deleted credential ends its live view within this.
const AUTH_CHECK: Duration = Duration::from_secs(2);
/// Time to deliver the last messages (error, close) before hanging up.
const GOODBYE_LIMIT: Duration = Duration::from_secs(1);
/// Ring records read per loop turn before checking the socket and the stream.
const PUMP_BATCH: usize = 64;
/// Stack of a `live-N` thread (its loop is shallow; keeps 32-bit address space for 256 clients small).
const STACK_BYTES: usize = 256 << 10;
/// Audio frames kept while waiting for the next video frame (~2 s of AAC at 48 kHz).
const MAX_PENDING_AUDIO: usize = 96;

static CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Pongs are only queued while less than this waits to be sent.
const MAX_PONG_BACKLOG: usize = 64 << 10;
// usize: MIPS32 has no 64-bit atomics.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Live-view clients being served right now.
pub fn live_clients() -> usize {
    CLIENTS.load(Ordering::SeqCst)
}

/// Answers an authorised live request (the route and credentials are checked;
/// `via` is checked again every [`AUTH_CHECK`] while the client watches).
pub fn serve(nvr: &Nvr, stream: &str, via: Via, rq: tiny_http::Request) {
    match admit(nvr, stream, via, &rq) {
        Ok(admitted) => start(admitted, stream, rq),
        Err(e) => {
            let line = format!("{} {}", rq.method(), rq.url());
            if let Err(err) = super::respond(rq, Reply::from(e)) {
                log::debug!("{line}: answer not delivered: {err}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Admission (on the http worker)

/// A live client's place among `web.max_live_clients`; freed on drop.
struct Slot(#[allow(dead_code)] Permit); // held for its Drop

impl Slot {
    fn take(max: u32) -> Result<Slot, ApiError> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Permit::try_take(&CLIENTS, max)
            .map(Slot)
            .ok_or_else(|| ApiError::new(503, format!("{max} live clients are being served (web.max_live_clients)")))
    }
}

/// What a request that passed every check brings to its thread.
struct Admitted {
    rt: Arc<StreamRuntime>,
    auth: Recheck,
    key: String,
    socket: TcpStream,
    slot: Slot,
}

fn admit(nvr: &Nvr, stream: &str, via: Via, rq: &tiny_http::Request) -> Result<Admitted, ApiError> {
    let rt = nvr.recorder.stream(stream).ok_or_else(|| ApiError::not_found(format!("no stream named {stream:?}")))?;
    if rt.with_status(|s| s.state) == StreamState::Disabled {
        return Err(ApiError::conflict(format!("stream {stream:?} is disabled; enable it to watch it live")));
    }
    let key = handshake_key(rq)?;
    let origin = header(rq, "Origin");
    // Behind a trusted proxy the browser's host is the one the proxy says it forwarded.
    let forwarded = nvr.config.web.trust_proxy.then(|| header(rq, "X-Forwarded-Host")).flatten();
    let host = forwarded.or_else(|| header(rq, "Host"));
    if let Some(origin) = origin.filter(|o| !same_origin(o, host.as_deref())) {
        return Err(ApiError::new(403, format!("Origin {origin:?} does not match the Host header")));
    }
    let slot = Slot::take(nvr.config.web.max_live_clients)?;
    let peer = rq.remote_addr().copied().ok_or_else(|| ApiError::internal("the connection has no peer address"))?;
    let socket = dup_socket(rq)
        .and_then(socket_ready)
        .map_err(|e| ApiError::internal(format!("cannot set up the socket of the live connection from {peer}: {e}")))?;
    let auth = Recheck { via, db_path: nvr.config.db_path(), clock: nvr.clock.clone(), db: None };
    Ok(Admitted { rt, auth, key, socket, slot })
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
fn dup_socket(rq: &tiny_http::Request) -> io::Result<TcpStream> {
    let fd = rq.tcp_fd().ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not a plain TCP connection"))?;
    // SAFETY: the fd is the socket of the connection `rq` came from, which
    // tiny_http keeps open at least as long as `rq` lives (it is borrowed here).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(TcpStream::from(borrowed.try_clone_to_owned()?))
}

mod sys {
    nix::ioctl_read_bad!(tiocoutq, nix::libc::TIOCOUTQ, nix::libc::c_int);
}

/// Bytes in the socket's send queue (not yet acknowledged by the peer).
fn unsent_bytes(sock: &TcpStream) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int to the pointer, which is valid.
    match unsafe { sys::tiocoutq(sock.as_raw_fd(), &mut n) } {
        Ok(_) => usize::try_from(n).unwrap_or(0),
        Err(_) => 0,
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
    let upgraded = rq.upgrade("websocket", response);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let fallback = a.socket.try_clone();
    let mut client = Client::new(a.rt, a.socket, upgraded, a.slot);
    client.auth = Some(a.auth);
    log::info!("live-{id}: {peer} watches {stream}");
    let spawned =
        std::thread::Builder::new().name(format!("live-{id}")).stack_size(STACK_BYTES).spawn(move || client.run());
    if let Err(e) = spawned {
        log::warn!("live {stream} for {peer}: cannot start thread live-{id}: {e}");
        if let Ok(mut s) = fallback {
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

fn socket_ready(s: TcpStream) -> io::Result<TcpStream> {
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(WRITE_SLICE))?;
    s.set_read_timeout(Some(READ_WAIT))?;
    Ok(s)
}

/// Why a client's thread ended.
enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The connection ended without a close frame.
    Gone,
    StreamStopped,
    /// The session or API key it was opened with ended.
    Revoked,
    Stalled,
    Protocol(ProtocolError),
    Io(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("the client closed"),
            End::Gone => f.write_str("the connection ended without a close frame"),
            End::StreamStopped => f.write_str("the stream was stopped"),
            End::Revoked => f.write_str("its session or API key ended"),
            End::Stalled => write!(f, "the client took nothing for {} s", STALL_LIMIT.as_secs()),
            End::Protocol(e) => write!(f, "the client broke the protocol: {e}"),
            End::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Bytes waiting to be written to the socket, in order.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    sent: usize,
}

impl Outbox {
    fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.sent)
    }

    /// Writes for at most about `WRITE_SLICE`; true if anything was written.
    fn flush(&mut self, w: &mut impl Write) -> Result<bool, End> {
        let began = Instant::now();
        let mut progressed = false;
        while self.pending() > 0 && began.elapsed() < WRITE_SLICE {
            match w.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(End::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.sent += n;
                    progressed = true;
                }
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
        if self.pending() == 0 {
            self.buf.clear();
            self.sent = 0;
        }
        Ok(progressed)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// When the client last read the live edge: the newest video frame read from
/// the ring at the moment the ring was found empty (so it had just arrived).
#[derive(Default)]
struct LiveEdge {
    /// (when, pts of that frame, seq of its run).
    at: Option<(Instant, i64, u64)>,
}

impl LiveEdge {
    fn caught_up(&mut self, now: Instant, pts: i64, run_seq: u64) {
        if self.at.map(|(_, p, r)| (p, r)) != Some((pts, run_seq)) {
            self.at = Some((now, pts, run_seq));
        }
    }

    /// Seconds a frame of this run read now is behind the live edge (0 if unknown).
    fn lag(&self, now: Instant, pts: i64, run_seq: u64, timescale: u32) -> f64 {
        match self.at {
            Some((t, p, r)) if r == run_seq => {
                let media = (pts - p) as f64 / f64::from(timescale.max(1));
                (now.saturating_duration_since(t).as_secs_f64() - media).max(0.0)
            }
            _ => 0.0,
        }
    }
}

/// Queues an `error` text message and a close frame with `code` and `reason`.
fn error_and_close(out: &mut Vec<u8>, error: &str, code: u16, reason: &str) {
    let text = json!({"type": "error", "error": error}).to_string();
    websocket::put_frame(out, Opcode::Text, text.as_bytes());
    websocket::put_frame(out, Opcode::Close, &websocket::close_payload(code, reason));
}

/// One live client, served by its own thread.
struct Client {
    rt: Arc<StreamRuntime>,
    sock: TcpStream,
    /// tiny_http's side of the connection: dropping it shuts the socket down.
    upgraded: Box<dyn tiny_http::ReadWrite + Send>,
    _slot: Slot,
    cursor: Cursor,
    buf: Vec<u8>,
    feed: Feed,
    reader: FrameReader,
    out: Outbox,
    edge: LiveEdge,
    /// Start of the current period without write progress (stuck or paused).
    idle_since: Option<Instant>,
    /// The credential to check again while the client watches (None in unit tests).
    auth: Option<Recheck>,
}

/// A live client's credential, checked again against the database.
struct Recheck {
    via: Via,
    db_path: std::path::PathBuf,
    clock: Arc<dyn Clock>,
    /// This thread's connection, opened at the first check.
    db: Option<Db>,
}

impl Recheck {
    /// False once the session ended (expired, revoked, logged out, user
    /// deleted) or the API key was deleted; also when it cannot be checked.
    fn still_valid(&mut self) -> bool {
        if self.db.is_none() {
            self.db = Db::open(&self.db_path).map_err(|e| log::warn!("live: cannot check credentials: {e}")).ok();
        }
        let Some(db) = &self.db else { return false };
        let alive = match &self.via {
            Via::Console => Ok(true),
            Via::Session { id, .. } => db.session_alive(*id, self.clock.now_ms()),
            Via::ApiKey { id } => db.key_alive(*id),
        };
        alive.unwrap_or_else(|e| {
            log::warn!("live: cannot check credentials: {e}");
            false
        })
    }
}

impl Client {
    fn new(
        rt: Arc<StreamRuntime>,
        sock: TcpStream,
        upgraded: Box<dyn tiny_http::ReadWrite + Send>,
        slot: Slot,
    ) -> Client {
        let cursor = rt.ring.cursor_at_latest_keyframe();
        Client {
            sock,
            cursor,
            rt,
            upgraded,
            _slot: slot,
            buf: Vec::new(),
            feed: Feed::default(),
            reader: FrameReader::server(websocket::MAX_CLIENT_MESSAGE),
            out: Outbox::default(),
            edge: LiveEdge::default(),
            idle_since: None,
            auth: None,
        }
    }

    fn run(mut self) {
        crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Http);
        let began = Instant::now();
        let end = self.serve();
        self.goodbye(&end);
        let s = &self.feed.stats;
        log::info!(
            "live {}: ended after {:.1} s ({end}): {} fragments, {} bytes, {} jumps",
            self.rt.name(),
            began.elapsed().as_secs_f64(),
            s.fragments,
            s.bytes,
            s.jumps
        );
        let _ = self.sock.shutdown(Shutdown::Both);
        let _ = self.upgraded.flush();
    }

    fn serve(&mut self) -> End {
        let (mut checked, mut auth_checked) = (Instant::now(), Instant::now());
        loop {
            if checked.elapsed() >= STATUS_CHECK {
                checked = Instant::now();
                if self.rt.with_status(|s| s.state) == StreamState::Stopped {
                    return End::StreamStopped;
                }
            }
            if auth_checked.elapsed() >= AUTH_CHECK {
                auth_checked = Instant::now();
                if self.auth.as_mut().is_some_and(|a| !a.still_valid()) {
                    return End::Revoked;
                }
            }
            if let Err(end) = self.step() {
                return end;
            }
        }
    }

    /// One turn: flush what is queued, or wait for the client, or read the ring.
    fn step(&mut self) -> Result<(), End> {
        if self.out.pending() > 0 {
            let progressed = self.out.flush(&mut self.sock)?;
            self.note_progress(progressed)?;
            if !progressed {
                self.read_client()?;
            }
            return Ok(());
        }
        if self.queued_secs() > QUEUE_PAUSE_SECS {
            self.note_progress(false)?;
            return self.read_client();
        }
        self.idle_since = None;
        self.pump()
    }

    fn note_progress(&mut self, progressed: bool) -> Result<(), End> {
        if progressed {
            self.idle_since = None;
            return Ok(());
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= STALL_LIMIT {
            return Err(End::Stalled);
        }
        Ok(())
    }

    /// Seconds of media waiting for the client (our outbox and the kernel's queue).
    fn queued_secs(&self) -> f64 {
        let bytes = self.out.pending() + unsent_bytes(&self.sock);
        match self.feed.stats.byte_rate() {
            Some(rate) if bytes > 0 => bytes as f64 / rate,
            _ => 0.0,
        }
    }

    /// Reads ring records until a message is queued, the ring is empty, or a batch is done.
    fn pump(&mut self) -> Result<(), End> {
        for _ in 0..PUMP_BATCH {
            match self.rt.ring.read(&mut self.cursor, &mut self.buf) {
                ReadResult::Empty => {
                    if let Some((pts, run_seq)) = self.feed.newest_video() {
                        self.edge.caught_up(Instant::now(), pts, run_seq);
                    }
                    return self.read_client();
                }
                ReadResult::Gap { .. } => self.jump("frames were overwritten in the ring before they were sent"),
                ReadResult::Run { seq, run } => self.feed.on_run(seq, run, &mut self.out.buf),
                ReadResult::Frame { track: Track::Video, key, pts, .. } => self.on_video(key, pts),
                ReadResult::Frame { track: Track::Audio, pts, .. } => self.feed.on_audio(pts, &self.buf),
            }
            if self.out.pending() > 0 {
                break;
            }
        }
        Ok(())
    }

    fn on_video(&mut self, key: bool, pts: i64) {
        if let Some(lag) = self.behind(pts) {
            return self.jump(&format!("the client was {lag:.1} s behind"));
        }
        self.feed.on_video(key, pts, &mut self.buf, &mut self.out.buf);
    }

    /// The lag of a frame just read, if it is too far behind and a newer keyframe exists.
    fn behind(&self, pts: i64) -> Option<f64> {
        let (run_seq, timescale) = self.feed.run_clock()?;
        let lag = self.edge.lag(Instant::now(), pts, run_seq, timescale) + self.queued_secs();
        // Jumping helps only if a keyframe newer than this frame is in the ring.
        let newer_key = || self.rt.ring.cursor_at_latest_keyframe().next_seq() >= self.cursor.next_seq();
        (lag > MAX_LAG_SECS && newer_key()).then_some(lag)
    }

    fn jump(&mut self, reason: &str) {
        log::debug!("live {}: jump to the newest keyframe: {reason}", self.rt.name());
        self.feed.jump(reason, &mut self.out.buf);
        self.cursor = self.rt.ring.cursor_at_latest_keyframe();
    }

    /// Reads what the client sent (waiting at most `READ_WAIT`) and answers it.
    fn read_client(&mut self) -> Result<(), End> {
        match self.reader.fill(&mut self.sock) {
            Ok(0) => return Err(End::Gone),
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(End::Io(e)),
        }
        while let Some(msg) = self.reader.next_message().map_err(End::Protocol)? {
            match msg {
                // A client that pings faster than it reads gets no more pongs
                // (RFC 6455 allows answering only the latest): the outbox stays bounded.
                Message::Ping(p) if self.out.pending() < MAX_PONG_BACKLOG => {
                    websocket::put_frame(&mut self.out.buf, Opcode::Pong, &p)
                }
                Message::Ping(_) => {}
                Message::Close(c) => {
                    let payload = c.map(|(code, _)| code.to_be_bytes().to_vec()).unwrap_or_default();
                    websocket::put_frame(&mut self.out.buf, Opcode::Close, &payload);
                    return Err(End::ClientClosed);
                }
                // Nothing is asked of the client yet; its other messages are ignored.
                Message::Pong(_) | Message::Text(_) | Message::Binary(_) => {}
            }
        }
        Ok(())
    }

    /// Queues the last messages the end calls for and tries to deliver them.
    fn goodbye(&mut self, end: &End) {
        let out = &mut self.out.buf;
        match end {
            End::StreamStopped => error_and_close(out, "stream stopped", close::GOING_AWAY, "stream stopped"),
            End::Revoked => {
                error_and_close(out, "your login ended; log in again", close::POLICY_VIOLATION, "login ended")
            }
            End::Protocol(e) => {
                websocket::put_frame(out, Opcode::Close, &websocket::close_payload(e.code, &e.reason));
            }
            End::ClientClosed => {}
            End::Gone | End::Stalled | End::Io(_) => return,
        }
        let began = Instant::now();
        while self.out.pending() > 0 && began.elapsed() < GOODBYE_LIMIT {
            if self.out.flush(&mut self.sock).is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Messages from ring records (no I/O)

/// Counters of one client.
#[derive(Default, Debug)]
struct FeedStats {
    fragments: u64,
    /// Bytes of fragment messages.
    bytes: u64,
    /// Seconds of video in them.
    media_secs: f64,
    jumps: u64,
}

impl FeedStats {
    /// Bytes per second of media, once half a second was sent.
    fn byte_rate(&self) -> Option<f64> {
        (self.media_secs >= 0.5).then(|| self.bytes as f64 / self.media_secs)
    }
}

/// The video frame waiting for its successor; its data is in `Feed::held_data`.
#[derive(Clone, Copy, Debug)]
struct Held {
    pts: i64,
    key: bool,
}

/// A jump whose message goes out before the next fragment.
struct PendingJump {
    reason: String,
}

/// Turns ring records into WebSocket messages appended to an output buffer.
#[derive(Default)]
struct Feed {
    run: Option<RunStart>,
    run_seq: u64,
    /// mfhd sequence number of the next fragment (1 after each init).
    sequence: u32,
    held: Option<Held>,
    held_data: Vec<u8>,
    /// Video ticks sent since the last init: the tfdt of the next fragment.
    next_tfdt: u64,
    /// Audio ticks sent since the last init: no audio sample starts before.
    audio_end: u64,
    /// No frame is taken until a keyframe (after an init or a jump).
    need_key: bool,
    last_duration: u32,
    /// (pts, size) of the audio frames since the last video frame, data in `audio_data`.
    audio: Vec<(i64, u32)>,
    audio_data: Vec<u8>,
    audio_samples: Vec<mp4::Sample>,
    jump: Option<PendingJump>,
    /// Wall-clock ms of the last video frame sent.
    last_sent_ms: Option<i64>,
    stats: FeedStats,
}

impl Feed {
    /// The run's seq and video timescale, once a run started.
    fn run_clock(&self) -> Option<(u64, u32)> {
        self.run.as_ref().map(|r| (self.run_seq, r.video.timescale))
    }

    /// The newest video frame read (the held one) and its run.
    fn newest_video(&self) -> Option<(i64, u64)> {
        self.held.map(|h| (h.pts, self.run_seq))
    }

    /// A run start: the init pair, unless it is the run already being sent
    /// (a cursor moved to a keyframe replays the run in effect there).
    fn on_run(&mut self, seq: u64, run: RunStart, out: &mut Vec<u8>) {
        if self.run.is_some() && seq == self.run_seq {
            return;
        }
        self.flush_held(out);
        websocket::put_frame(out, Opcode::Text, init_message(&run).as_bytes());
        websocket::put_frame(out, Opcode::Binary, &mp4::init_segment(&run));
        self.last_duration = (run.video.timescale / 25).max(1);
        self.run = Some(run);
        self.run_seq = seq;
        self.sequence = 1;
        self.next_tfdt = 0;
        self.audio_end = 0;
        self.need_key = true;
        self.clear_audio();
    }

    /// A video frame: sends the held one (its duration now known) and holds
    /// this one. Swaps `data` with the held frame's buffer.
    fn on_video(&mut self, key: bool, pts: i64, data: &mut Vec<u8>, out: &mut Vec<u8>) {
        if self.run.is_none() || (self.need_key && !key) {
            return;
        }
        self.need_key = false;
        if let Some(h) = self.held.take() {
            let d = self.duration(h.pts, pts);
            self.emit(h, d, out);
        }
        std::mem::swap(data, &mut self.held_data);
        self.held = Some(Held { pts, key });
    }

    fn on_audio(&mut self, pts: i64, data: &[u8]) {
        let has_audio = self.run.as_ref().is_some_and(|r| r.audio.is_some());
        if !has_audio || self.held.is_none() || self.audio.len() >= MAX_PENDING_AUDIO {
            return;
        }
        self.audio.push((pts, u32::try_from(data.len()).unwrap_or(u32::MAX)));
        self.audio_data.extend_from_slice(data);
    }

    /// Frames are being skipped: send the held one, then wait for a keyframe.
    fn jump(&mut self, reason: &str, out: &mut Vec<u8>) {
        self.flush_held(out);
        self.need_key = true;
        self.clear_audio();
        self.stats.jumps += 1;
        if self.jump.is_none() {
            self.jump = Some(PendingJump { reason: reason.to_string() });
        }
    }

    fn clear_audio(&mut self) {
        self.audio.clear();
        self.audio_data.clear();
    }

    /// Sends the held frame with the previous frame's duration.
    fn flush_held(&mut self, out: &mut Vec<u8>) {
        if let Some(h) = self.held.take() {
            self.emit(h, self.last_duration, out);
        }
    }

    /// Ticks from `pts` to `next`; the previous duration if that is not plausible.
    fn duration(&mut self, pts: i64, next: i64) -> u32 {
        let max = self.run.as_ref().map_or(90_000, |r| i64::from(r.video.timescale)) * 10;
        if next > pts && next - pts <= max {
            self.last_duration = u32::try_from(next - pts).unwrap_or(self.last_duration);
        }
        self.last_duration
    }

    /// Appends the fragment of the held frame (and pending audio), preceded by
    /// the jump message if one is pending.
    fn emit(&mut self, h: Held, duration: u32, out: &mut Vec<u8>) {
        let Some(run) = self.run.take() else { return };
        if let Some(j) = self.jump.take() {
            websocket::put_frame(out, Opcode::Text, self.jump_message(&run, h.pts, &j).as_bytes());
        }
        let video = [mp4::Sample { duration, size: len32(&self.held_data), key: h.key }];
        let mut runs =
            vec![mp4::TrackRun { track_id: mp4::VIDEO_TRACK_ID, base_decode_time: self.next_tfdt, samples: &video }];
        let audio_from = self.audio_samples(&run, h.pts);
        let audio_bytes = self.audio_data.get(audio_from.map_or(usize::MAX, |(_, skip)| skip)..).unwrap_or(&[]);
        if let Some((tfdt, _)) = audio_from.filter(|_| !self.audio_samples.is_empty()) {
            runs.push(mp4::TrackRun {
                track_id: mp4::AUDIO_TRACK_ID,
                base_decode_time: tfdt,
                samples: &self.audio_samples,
            });
        }
        let header = mp4::fragment_header(self.sequence, &runs);
        let len = header.len() + self.held_data.len() + audio_bytes.len();
        websocket::put_header(out, Opcode::Binary, len, None);
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.held_data);
        out.extend_from_slice(audio_bytes);
        self.sequence = self.sequence.wrapping_add(1);
        self.next_tfdt += u64::from(duration);
        self.stats.fragments += 1;
        self.stats.bytes += len as u64;
        self.stats.media_secs += f64::from(duration) / f64::from(run.video.timescale.max(1));
        self.last_sent_ms = Some(run.wall_ms(h.pts));
        self.run = Some(run);
        self.clear_audio();
    }

    /// Fills `audio_samples` from the pending audio, placed on the timeline of
    /// the video frame at `video_pts` (whose tfdt is `next_tfdt`). Returns the
    /// first sample's tfdt and how many bytes of `audio_data` to skip (frames
    /// that would start before the audio already sent are dropped).
    fn audio_samples(&mut self, run: &RunStart, video_pts: i64) -> Option<(u64, usize)> {
        self.audio_samples.clear();
        let a = run.audio.as_ref()?;
        let (vts, ats) = (i128::from(run.video.timescale.max(1)), i128::from(a.timescale));
        // Audio pts at tfdt 0: both RTP clocks count from the session start.
        let origin = (i128::from(video_pts) - i128::from(self.next_tfdt)) * ats / vts;
        let (frame, end) = (i128::from(a.frame_ticks), i128::from(self.audio_end));
        let (mut first, mut skip) = (None, 0usize);
        for (i, &(pts, size)) in self.audio.iter().enumerate() {
            let t = i128::from(pts) - origin;
            if first.is_none() && t < end - frame / 2 {
                skip += size as usize;
                continue;
            }
            first.get_or_insert(t.max(end));
            let d = match self.audio.get(i + 1) {
                Some(&(next, _)) if next > pts && i128::from(next - pts) <= 8 * frame => (next - pts) as u32,
                _ => a.frame_ticks,
            };
            self.audio_samples.push(mp4::Sample { duration: d, size, key: true });
        }
        let first = u64::try_from(first?).ok()?;
        self.audio_end = first + self.audio_samples.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        Some((first, skip))
    }

    fn jump_message(&self, run: &RunStart, pts: i64, j: &PendingJump) -> String {
        let frame_ms = (f64::from(self.last_duration) * 1000.0 / f64::from(run.video.timescale.max(1))).max(1.0);
        let skipped_ms = self.last_sent_ms.map_or(0.0, |last| (run.wall_ms(pts) - last) as f64 - frame_ms).max(0.0);
        let frames = (skipped_ms / frame_ms).round() as u64;
        json!({"type": "jump", "reason": j.reason, "skipped_frames": frames, "skipped_ms": skipped_ms.round() as u64})
            .to_string()
    }
}

fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

/// The text message announcing a run's init segment.
fn init_message(run: &RunStart) -> String {
    let audio = run.audio.as_ref().map(|a| a.codec.clone());
    let codecs = match &audio {
        Some(a) => format!("{},{a}", run.video.codec),
        None => run.video.codec.clone(),
    };
    json!({
        "type": "init",
        "mime": format!("video/mp4; codecs=\"{codecs}\""),
        "codec": run.video.codec,
        "audio": audio,
        "width": run.video.width,
        "height": run.video.height,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::media::{AudioParams, VideoParams};

    fn run(audio: bool) -> RunStart {
        RunStart {
            video: VideoParams {
                codec: "avc1.64001f".into(),
                width: 640,
                height: 360,
                timescale: 90_000,
                sample_entry: b"\0\0\0\x08avc1".to_vec(),
            },
            audio: audio.then(|| AudioParams {
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                channels: 1,
                frame_ticks: 1024,
                sample_entry: b"\0\0\0\x08mp4a".to_vec(),
            }),
            anchor_pts: 0,
            anchor_wall_ms: 1_700_000_000_000,
            time_unknown: false,
        }
    }

    /// A message as the client sees it.
    #[derive(Debug)]
    enum Got {
        Text(serde_json::Value),
        Init(Vec<u8>),
        /// The trafs of a fragment, and its bytes after the moof.
        Frag(Vec<mp4::TrafSummary>, Vec<u8>),
    }

    fn decode(out: &[u8]) -> Vec<Got> {
        let mut r = FrameReader::client(1 << 24);
        r.push(out);
        let mut got = Vec::new();
        while let Some(m) = r.next_message().expect("valid frames") {
            got.push(match m {
                Message::Text(t) => Got::Text(serde_json::from_str(&t).expect("JSON")),
                Message::Binary(b) if &b[4..8] == b"ftyp" => Got::Init(b),
                Message::Binary(b) => {
                    let moof_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    let trafs = mp4::parse_moof(&b[..moof_len]).expect("moof");
                    Got::Frag(trafs, b[moof_len..].to_vec())
                }
                other => panic!("unexpected {other:?}"),
            });
        }
        got
    }

    fn frag(g: &Got) -> &[mp4::TrafSummary] {
        match g {
            Got::Frag(t, _) => t,
            other => panic!("fragment expected, got {other:?}"),
        }
    }

    #[test]
    fn init_message_names_codecs() {
        let v: serde_json::Value = serde_json::from_str(&init_message(&run(true))).expect("JSON");
        assert_eq!(v["type"], "init");
        assert_eq!(v["mime"], "video/mp4; codecs=\"avc1.64001f,mp4a.40.2\"");
        assert_eq!((v["codec"].as_str(), v["audio"].as_str()), (Some("avc1.64001f"), Some("mp4a.40.2")));
        assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(640), Some(360)));
        let v: serde_json::Value = serde_json::from_str(&init_message(&run(false))).expect("JSON");
        assert_eq!(v["mime"], "video/mp4; codecs=\"avc1.64001f\"");
        assert!(v["audio"].is_null());
    }

    #[test]
    fn fragments_start_at_a_keyframe_with_exact_durations_from_zero() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        let base = 1_000_000i64;
        // A P frame before the first keyframe is skipped; then K P P with uneven spacing.
        let frames =
            [(false, base - 3000), (true, base), (false, base + 3000), (false, base + 6003), (false, base + 9000)];
        for (i, (key, pts)) in frames.into_iter().enumerate() {
            let mut data = vec![i as u8; 10 + i];
            f.on_video(key, pts, &mut data, &mut out);
        }
        let got = decode(&out);
        assert!(matches!(&got[0], Got::Text(v) if v["type"] == "init"));
        assert!(matches!(&got[1], Got::Init(b) if b == &mp4::init_segment(&run(false))));
        // The newest frame is held back: three fragments for four frames.
        assert_eq!(got.len(), 5);
        let expect = [(0u64, 3000u64, true, 1u8), (3000, 3003, false, 2), (6003, 2997, false, 3)];
        for (g, (tfdt, dur, key, fill)) in got[2..].iter().zip(expect) {
            let t = frag(g);
            assert_eq!(t.len(), 1);
            assert_eq!((t[0].track_id, t[0].base_decode_time, t[0].duration, t[0].first_sync), (1, tfdt, dur, key));
            let Got::Frag(_, payload) = g else { unreachable!() };
            assert_eq!(&payload[8..], &vec![fill; 10 + fill as usize][..], "mdat payload");
        }
        assert_eq!(f.newest_video(), Some((base + 9000, 1)));
        assert_eq!(f.stats.fragments, 3);
    }

    #[test]
    fn sequence_numbers_run_on_and_restart_with_a_new_run() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        for i in 0..4 {
            f.on_video(i == 0, i * 3000, &mut vec![1; 5], &mut out);
        }
        // The same run replayed (after a jump) changes nothing.
        f.on_run(1, run(false), &mut out);
        f.on_run(9, run(true), &mut out);
        f.on_video(false, 50, &mut vec![2; 5], &mut out); // not a keyframe: skipped
        f.on_video(true, 100, &mut vec![3; 5], &mut out);
        f.on_video(false, 3100, &mut vec![4; 5], &mut out);
        let got = decode(&out);
        let kinds: Vec<&str> = got
            .iter()
            .map(|g| match g {
                Got::Text(_) => "text",
                Got::Init(_) => "init",
                Got::Frag(..) => "frag",
            })
            .collect();
        // init pair, 3 fragments, the held 4th flushed at the new run, init pair, 1 fragment.
        assert_eq!(kinds, ["text", "init", "frag", "frag", "frag", "frag", "text", "init", "frag"]);
        let tfdts: Vec<u64> = got
            .iter()
            .filter_map(|g| match g {
                Got::Frag(t, _) => Some(t[0].base_decode_time),
                _ => None,
            })
            .collect();
        assert_eq!(tfdts, [0, 3000, 6000, 9000, 0]);
        // The flushed frame got the previous duration.
        assert_eq!(frag(&got[5])[0].duration, 3000);
    }

    #[test]
    fn audio_rides_with_the_next_video_fragment_on_the_same_timeline() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(true), &mut out);
        let key_pts = 900_000i64; // 10 s into the session
        let audio_at_key = 480_000i64; // the same instant at 48 kHz
        f.on_audio(audio_at_key - 1024, &[9; 7]); // before any keyframe: dropped
        f.on_video(true, key_pts, &mut vec![1; 20], &mut out);
        f.on_audio(audio_at_key - 1024, &[8; 6]); // before the keyframe's time: dropped
        f.on_audio(audio_at_key, &[7; 5]);
        f.on_audio(audio_at_key + 1024, &[6; 4]);
        f.on_video(false, key_pts + 6000, &mut vec![2; 20], &mut out);
        f.on_audio(audio_at_key + 2048, &[5; 3]);
        f.on_video(false, key_pts + 12000, &mut vec![3; 20], &mut out);
        let got = decode(&out);
        let (a, b) = (frag(&got[2]), frag(&got[3]));
        assert_eq!(a.len(), 2);
        assert_eq!((a[1].track_id, a[1].base_decode_time, a[1].samples, a[1].duration), (2, 0, 2, 2048));
        assert_eq!((b[1].base_decode_time, b[1].samples), (2048, 1));
        let Got::Frag(_, payload) = &got[2] else { unreachable!() };
        assert_eq!(&payload[8..], [vec![1u8; 20], vec![7; 5], vec![6; 4]].concat());
        assert_eq!(a[1].data_offset, Some(a[0].data_offset.expect("video offset") + 20));
    }

    #[test]
    fn a_jump_keeps_the_timeline_contiguous_and_is_announced() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        for i in 0..3 {
            f.on_video(i == 0, i * 3000, &mut vec![1; 5], &mut out);
        }
        f.jump("slow", &mut out);
        f.on_video(false, 30 * 3000, &mut vec![1; 5], &mut out); // waits for a keyframe
        f.on_video(true, 90 * 3000, &mut vec![2; 5], &mut out);
        f.on_video(false, 91 * 3000, &mut vec![3; 5], &mut out);
        let got = decode(&out);
        let n = got.len();
        // frags 0, 1, the held 2 (flushed at the jump), jump text, the keyframe.
        assert_eq!(frag(&got[4])[0].base_decode_time, 6000);
        let Got::Text(j) = &got[n - 2] else { panic!("jump text expected, got {:?}", got[n - 2]) };
        assert_eq!((j["type"].as_str(), j["reason"].as_str()), (Some("jump"), Some("slow")));
        // 87 frames of 1/30 s were skipped between the frames at 2 and at 90.
        assert_eq!(j["skipped_frames"].as_u64(), Some(87));
        let k = frag(&got[n - 1]);
        assert_eq!((k[0].base_decode_time, k[0].first_sync), (9000, true));
    }

    #[test]
    fn the_live_edge_measures_lag_per_run() {
        let mut e = LiveEdge::default();
        let t0 = Instant::now();
        assert_eq!(e.lag(t0, 0, 1, 90_000), 0.0);
        e.caught_up(t0, 90_000, 1);
        // Caught up again on the same frame later: the reference stays.
        e.caught_up(t0 + Duration::from_secs(1), 90_000, 1);
        let now = t0 + Duration::from_secs(5);
        // A frame 1 s newer than the reference, read 5 s later: 4 s behind.
        assert!((e.lag(now, 180_000, 1, 90_000) - 4.0).abs() < 1e-9);
        assert_eq!(e.lag(now, 900_000, 1, 90_000), 0.0);
        assert_eq!(e.lag(now, 180_000, 2, 90_000), 0.0, "another run");
    }

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

    #[test]
    fn outbox_delivers_across_partial_writes() {
        struct Trickle(Vec<u8>, usize);
        impl Write for Trickle {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1 += 1;
                if self.1 % 2 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(3);
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut o = Outbox::default();
        o.buf.extend_from_slice(b"0123456789");
        let mut w = Trickle(Vec::new(), 0);
        let mut turns = 0;
        while o.pending() > 0 {
            o.flush(&mut w).map_err(|e| e.to_string()).expect("no error");
            turns += 1;
        }
        assert_eq!(w.0, b"0123456789");
        assert!(turns >= 4 && o.buf.is_empty() && o.sent == 0);
    }
}
