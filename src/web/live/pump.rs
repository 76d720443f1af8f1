//! The thread of one live client (`live-N`): reads its ring cursor, turns
//! records into messages (`feed`) and paces them onto the socket.
//!
//! Invariants:
//! - The thread never blocks for long: socket writes time out after
//!   `WRITE_SLICE`, reads after `READ_WAIT` (the read doubles as the wait for
//!   new frames). A client that takes nothing for `STALL_LIMIT` is dropped.
//! - Slow clients: no new message is produced while more than
//!   `QUEUE_PAUSE_SECS` of media waits in the kernel's send queue and our
//!   outbox; a frame that is more than `MAX_LAG_SECS` behind the live edge
//!   (its age in the ring plus that queue) makes the client jump to the
//!   newest keyframe if that is ahead of it. A ring `Gap` always jumps.
//! - Memory per client: the ring read buffer, the held frame and the audio
//!   since it (in the fragmenter's reused buffers), and one outbox that holds
//!   at most the messages of one ring record (init pair + jump + fragment),
//!   all reused. Client messages are capped at 64 KiB.
//! - The session or API key the view was opened with is checked again every
//!   `AUTH_CHECK`; the stream's state every `STATUS_CHECK`.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::admit::Slot;
use super::feed::Feed;
use crate::auth::Via;
use crate::base::clock::Clock;
use crate::base::shutdown::Shutdown as StopSignal;
use crate::index::db::Db;
use crate::recording::media::Track;
use crate::recording::ring::{Cursor, ReadResult};
use crate::recording::stream::{StreamRuntime, StreamState};
use crate::web::websocket::{self, close, FrameReader, Message, Opcode, ProtocolError};

/// A frame further than this behind the live edge makes the client jump.
const MAX_LAG_SECS: f64 = 2.0;
/// No new message is produced while this much media is queued for the client.
const QUEUE_PAUSE_SECS: f64 = 1.0;
/// A client that takes in nothing for this long is disconnected.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Longest a socket write blocks (SO_SNDTIMEO), and the longest one flush runs.
pub(super) const WRITE_SLICE: Duration = Duration::from_millis(20);
/// Longest a socket read blocks (SO_RCVTIMEO): the poll interval for new frames.
pub(super) const READ_WAIT: Duration = Duration::from_millis(10);
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
/// Pongs are only queued while less than this waits to be sent.
const MAX_PONG_BACKLOG: usize = 64 << 10;

fn unsent_bytes(sock: &TcpStream) -> usize {
    crate::web::send::unsent_bytes(sock.as_raw_fd())
}

/// Why a client's thread ended.
enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The connection ended without a close frame.
    Gone,
    StreamStopped,
    /// The recorder is shutting down.
    RecorderStopping,
    /// The session or API key it was opened with ended.
    Revoked,
    /// Memory is short: the pressure ladder sheds live view.
    Shed,
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
            End::RecorderStopping => f.write_str("the recorder is stopping"),
            End::Revoked => f.write_str("its session or API key ended"),
            End::Shed => f.write_str("memory is short: live view is shed"),
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
    fn flush(&mut self, w: &mut (impl Write + ?Sized)) -> Result<bool, End> {
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
        // Over TLS, what tiny_http's writer buffered and rustls' records go out
        // (bounded by the same socket timeout); a no-op on the plain socket.
        match w.flush() {
            Ok(()) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(End::Io(e)),
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

/// The bytes' way to the client: the socket itself, or over TLS tiny_http's
/// upgraded stream (rustls); `sock` is then only for timeouts and the send queue.
macro_rules! io {
    ($c:expr) => {
        if $c.tls {
            &mut *$c.upgraded as &mut dyn tiny_http::ReadWrite
        } else {
            &mut $c.sock as &mut dyn tiny_http::ReadWrite
        }
    };
}

/// One live client, served by its own thread.
pub(super) struct Client {
    rt: Arc<StreamRuntime>,
    /// Served over TLS: bytes go through `upgraded`.
    tls: bool,
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
    shutdown: StopSignal,
}

/// The database connection every live client's checks share, opened at the
/// first check. Shared: a connection per client (opened and closed with each
/// one, thousands a day) fragmented the heap, which grew for hours.
pub type LiveDb = Arc<std::sync::Mutex<Option<Db>>>;

/// A live client's credential, checked again against the database.
pub(super) struct Recheck {
    via: Via,
    db_path: std::path::PathBuf,
    clock: Arc<dyn Clock>,
    db: LiveDb,
}

impl Recheck {
    pub(super) fn new(via: Via, db_path: std::path::PathBuf, clock: Arc<dyn Clock>, db: LiveDb) -> Recheck {
        Recheck { via, db_path, clock, db }
    }

    /// False once the session ended (expired, revoked, logged out, user
    /// deleted) or the API key was deleted; also when it cannot be checked.
    pub(super) fn still_valid(&mut self) -> bool {
        if matches!(self.via, Via::Console) {
            return true; // the console token lives as long as the process
        }
        let mut slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Db::open(&self.db_path).map_err(|e| log::warn!("live: cannot check credentials: {e}")).ok();
        }
        let Some(db) = slot.as_ref() else { return false };
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
    pub(super) fn new(
        rt: Arc<StreamRuntime>,
        sock: TcpStream,
        upgraded: Box<dyn tiny_http::ReadWrite + Send>,
        slot: Slot,
        auth: Option<Recheck>,
        shutdown: StopSignal,
    ) -> Client {
        let cursor = rt.ring.cursor_at_latest_keyframe();
        Client {
            tls: false,
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
            auth,
            shutdown,
        }
    }

    /// Bytes go through the upgraded stream (a TLS connection).
    pub(super) fn over_tls(mut self) -> Client {
        self.tls = true;
        self
    }

    pub(super) fn run(mut self) {
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
            if self.shutdown.is_triggered() {
                return End::RecorderStopping;
            }
            if super::admit::shedding() {
                return End::Shed;
            }
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
            let progressed = self.out.flush(io!(self))?;
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
        self.feed.on_video(key, pts, &self.buf, &mut self.out.buf);
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
        match self.reader.fill(io!(self)) {
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
            End::RecorderStopping => {
                error_and_close(out, "the recorder is stopping", close::GOING_AWAY, "recorder stopping")
            }
            End::Revoked => {
                error_and_close(out, "your login ended; log in again", close::POLICY_VIOLATION, "login ended")
            }
            End::Shed => {
                error_and_close(out, "live view stopped: memory is short", close::GOING_AWAY, "memory pressure")
            }
            End::Protocol(e) => {
                websocket::put_frame(out, Opcode::Close, &websocket::close_payload(e.code, &e.reason));
            }
            End::ClientClosed => {}
            End::Gone | End::Stalled | End::Io(_) => return,
        }
        let began = Instant::now();
        while self.out.pending() > 0 && began.elapsed() < GOODBYE_LIMIT {
            if self.out.flush(io!(self)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
