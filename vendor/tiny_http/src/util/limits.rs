//! OxiNVR patch (whole file): bounds on what one client can hold.
//!
//! - `Limits`: socket timeouts, the request-head deadline, the keep-alive idle
//!   time and how many connections may be open (in total, per address).
//! - `Admission`: the accept thread's count of open connections. A `ConnSlot`
//!   is one of them; it lives in the connection's write half, so it is given
//!   back when the last writer of the connection is dropped (socket shut down).
//! - `ConnClock`: what a connection is waiting for (the first byte of a head,
//!   the rest of a head, a body) and so how long one socket read may block. A
//!   failed answer (`abort`) makes the next read fail: the connection ends
//!   instead of waiting for a client that no longer reads.
//!
//! Invariant: `Counts.total` and `Counts.by_addr` equal the number of live
//! `ConnSlot`s (in total, per address); no address with 0 is kept.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// Bounds applied to every connection (`Server::http_limited`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// SO_SNDTIMEO, and SO_RCVTIMEO while a body is read: one socket write or
    /// read that makes no progress for this long fails.
    pub io_timeout: Duration,
    /// A request line and its headers must arrive within this of their first byte
    /// (else 408 and the connection is closed).
    pub head_timeout: Duration,
    /// A connection with no request under way is closed after this long.
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_address: usize,
    /// A request body up to this many bytes is read by the connection's
    /// thread within `head_timeout` (as part of the head), before any worker
    /// sees the request; a larger one is read by whoever handles it.
    pub max_preread: usize,
}

impl Limits {
    /// What tiny_http did before the patch: no timeouts, no limits.
    pub fn none() -> Limits {
        Limits {
            io_timeout: Duration::ZERO,
            head_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_connections: usize::MAX,
            max_per_address: usize::MAX,
            max_preread: 1024,
        }
    }
}

/// `Duration::ZERO` means "no timeout", as for the socket options.
fn opt(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// The open connections, counted by the accept thread.
pub(crate) struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// One open connection; given back on drop.
pub(crate) struct ConnSlot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

/// Why a connection was refused.
pub(crate) enum Refusal {
    Total(usize),
    Address(usize),
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission { limits, counts: Mutex::new(Counts::default()) })
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A slot for a new connection from `peer`, or why there is none.
    pub(crate) fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<ConnSlot, Refusal> {
        // An IPv4 client on a dual-stack socket counts as its IPv4 address.
        let ip = peer.map(|p| p.ip().to_canonical());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.limits.max_connections {
            return Err(Refusal::Total(self.limits.max_connections));
        }
        if let Some(ip) = ip {
            let n = c.by_addr.entry(ip).or_insert(0);
            if *n >= self.limits.max_per_address {
                return Err(Refusal::Address(self.limits.max_per_address));
            }
            *n += 1;
        }
        c.total += 1;
        Ok(ConnSlot { admission: self.clone(), ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = c.by_addr.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.by_addr.remove(&ip);
                }
            }
        }
    }
}

/// Refused connections, answered and half-closed, kept open a moment so that
/// the client reads the 503 before the close (closing a socket with unread
/// input resets it, and a reset can discard the answer at the client).
pub(crate) struct Refused {
    lingering: VecDeque<(Instant, Connection)>,
}

/// How long a refused connection stays open, and how many at most.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGERING: usize = 64;

impl Refused {
    pub(crate) fn new() -> Refused {
        Refused { lingering: VecDeque::new() }
    }

    /// Answers 503 without blocking (a fresh socket's send buffer is empty).
    pub(crate) fn refuse(&mut self, conn: Connection, why: Refusal) {
        let message = match why {
            Refusal::Total(n) => format!("the server has {n} connections open, its limit; try again later"),
            Refusal::Address(n) => {
                format!("your address has {n} connections open, the limit per address; try again later")
            }
        };
        let body = format!("{{\"error\":\"{message}\"}}\n");
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Retry-After: 1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut conn = conn;
        if conn.set_nonblocking(true).is_ok() {
            let _ = conn.write_all(format!("{head}{body}").as_bytes());
            let _ = conn.shutdown(std::net::Shutdown::Write);
        }
        self.prune(Instant::now());
        if self.lingering.len() >= MAX_LINGERING {
            if let Some((_, c)) = self.lingering.pop_front() {
                drain(c);
            }
        }
        self.lingering.push_back((Instant::now(), conn));
    }

    /// Closes the refused connections that had their moment.
    pub(crate) fn prune(&mut self, now: Instant) {
        while self.lingering.front().is_some_and(|(t, _)| now.duration_since(*t) >= LINGER) {
            if let Some((_, c)) = self.lingering.pop_front() {
                drain(c);
            }
        }
    }
}

/// Reads what the client sent (without blocking) so that closing does not reset.
fn drain(mut conn: Connection) {
    let mut buf = [0u8; 4096];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// What a connection waits for, which bounds one socket read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// No request under way: the next head's first byte, within `idle_timeout`.
    /// (Set as soon as a request is handed over, so a worker reading that
    /// request's body gets `idle_timeout` per read too: still bounded.)
    Idle,
    /// A head has begun: the rest of it, until this instant.
    Head(Instant),
    /// A body, or anything else: `io_timeout` per read.
    Body,
    /// An answer failed: no more reads.
    Aborted,
    /// Upgraded (WebSocket): the socket's timeouts are its new owner's.
    Released,
}

/// Shared by a connection's reader, its `ClientConnection` and its requests.
pub(crate) struct ConnClock {
    limits: Limits,
    phase: Mutex<Phase>,
}

impl ConnClock {
    pub(crate) fn new(limits: Limits) -> Arc<ConnClock> {
        Arc::new(ConnClock { limits, phase: Mutex::new(Phase::Idle) })
    }

    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn idle(&self) {
        if self.get() != Phase::Aborted {
            self.set(Phase::Idle);
        }
    }

    /// The first byte of a head arrived: the rest must follow within `head_timeout`.
    pub(crate) fn head_started(&self) {
        if self.get() == Phase::Idle && !self.limits.head_timeout.is_zero() {
            self.set(Phase::Head(Instant::now() + self.limits.head_timeout));
        }
    }

    pub(crate) fn head_done(&self) {
        if self.get() != Phase::Aborted {
            self.set(Phase::Body);
        }
    }

    /// Writing an answer failed (the client stopped reading): end the connection.
    pub(crate) fn abort(&self) {
        self.set(Phase::Aborted);
    }

    /// The connection was upgraded: reads keep the timeouts its new owner sets.
    pub(crate) fn release(&self) {
        self.set(Phase::Released);
    }

    /// Bodies up to this many bytes are read with the head (see `Limits`).
    pub(crate) fn preread(&self) -> usize {
        self.limits.max_preread
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.get() == Phase::Idle
    }

    /// The timeout the next socket read gets (None: none), or an error if the
    /// connection must not read any more.
    pub(crate) fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self.get() {
            Phase::Idle => Ok(opt(self.limits.idle_timeout)),
            Phase::Body => Ok(opt(self.limits.io_timeout)),
            Phase::Head(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::Error::new(io::ErrorKind::TimedOut, "request head too slow")),
            },
            Phase::Aborted => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "answer failed")),
            Phase::Released => Ok(None),
        }
    }
}

/// A read through `clock`: sets the socket's read timeout when it changes and
/// reports an expired one as `TimedOut` (the socket says `WouldBlock`).
pub(crate) fn timed_read(
    conn: &mut Connection,
    clock: &ConnClock,
    applied: &mut Option<Option<Duration>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    apply_read_timeout(conn, clock, applied)?;
    conn.read(buf).map_err(timeout_error)
}

/// Sets `sock`'s read timeout to what `clock` says, if it changed (not once released).
pub(crate) fn apply_read_timeout(
    sock: &Connection,
    clock: &ConnClock,
    applied: &mut Option<Option<Duration>>,
) -> io::Result<()> {
    let timeout = clock.read_timeout()?;
    if clock.get() != Phase::Released && *applied != Some(timeout) {
        sock.set_read_timeout(timeout)?;
        *applied = Some(timeout);
    }
    Ok(())
}

/// A read timeout as `TimedOut` (the socket says `WouldBlock`).
pub(crate) fn timeout_error(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, "client sent nothing in time"),
        _ => e,
    }
}
