//! Long answers on their own threads: a recording file, an export, an HLS
//! segment (any `Body::Reader`) or bytes over `LONG_BYTES` is sent by a
//! `send-N` thread, so that a client that reads slowly (or not at all) holds
//! that thread, never an `http-N` worker that short API calls wait for.
//!
//! Invariants:
//! - At most `web.max_senders` answers are being sent at once (a `Permit` on
//!   `SENDING`, held by the thread); past that the request gets 503 with
//!   `Retry-After` from the worker, which is free again at once.
//! - One client address holds at most a quarter of them (`per_address`), so
//!   a few clients that read slowly cannot take every sender.
//! - A short answer for a client that has not taken `BEHIND_BYTES` of what
//!   it was sent (it pipelines requests and does not read) goes to a sender
//!   too; if none is free its connection is ended unanswered, so a worker
//!   never blocks on such a client.
//! - A sender ends within `web.io_timeout_seconds` of its client taking
//!   nothing (the socket's write timeout; tiny_http then ends the connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::permit::Permit;
use super::reply::{ApiError, Body, Reply};
use crate::base::memory::{self, Subsystem};
use crate::web::state::Nvr;

/// Byte answers longer than this are sent by a sender too.
pub const LONG_BYTES: u64 = 256 << 10;

/// Stack of a `send-N` thread: tiny_http's writer and our body readers are shallow.
const STACK_BYTES: usize = 256 << 10;

/// What a client that found every sender busy is told to wait (seconds).
const RETRY_AFTER_S: u32 = 5;

static SENDING: AtomicUsize = AtomicUsize::new(0);
// usize: MIPS32 has no 64-bit atomics.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// A client that has not taken this much of what it was sent is "behind".
const BEHIND_BYTES: usize = 16 << 10;

mod sys {
    nix::ioctl_read_bad!(tiocoutq, nix::libc::TIOCOUTQ, nix::libc::c_int);
}

/// Bytes in a socket's send queue (not yet acknowledged by the peer).
pub fn unsent_bytes(fd: std::os::fd::RawFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int to the pointer, which is valid.
    match unsafe { sys::tiocoutq(fd, &mut n) } {
        Ok(_) => usize::try_from(n).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Whether `rq`'s client has left more than `BEHIND_BYTES` of earlier answers unread.
pub fn is_behind(rq: &tiny_http::Request) -> bool {
    rq.tcp_fd().is_some_and(|fd| unsent_bytes(fd) > BEHIND_BYTES)
}

/// Refuses `rq`: a 503 for a client that reads, the end of the connection for
/// one that is behind (the write fails at once instead of blocking a worker).
fn refuse(rq: tiny_http::Request, reply: Reply, line: &str, began: Instant) {
    if is_behind(&rq) {
        if let Some(fd) = rq.tcp_fd() {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
    answer(rq, reply, line, began)
}

/// Senders held per client address (no entry at 0).
static BY_ADDRESS: Mutex<Option<HashMap<IpAddr, usize>>> = Mutex::new(None);

/// One address's share of the senders, given back on drop.
struct AddrPermit(Option<IpAddr>);

impl AddrPermit {
    fn try_take(peer: Option<IpAddr>, max: usize) -> Option<AddrPermit> {
        let Some(ip) = peer else { return Some(AddrPermit(None)) };
        let mut map = BY_ADDRESS.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.get_or_insert_with(HashMap::new).entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddrPermit(Some(ip)))
    }
}

impl Drop for AddrPermit {
    fn drop(&mut self) {
        let Some(ip) = self.0 else { return };
        let mut map = BY_ADDRESS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.as_mut() {
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// How many senders one address may hold out of `max`.
fn per_address(max: usize) -> usize {
    (max / 4).max(1)
}

/// Answers being sent by senders right now.
pub fn sending() -> usize {
    SENDING.load(Ordering::SeqCst)
}

/// Whether `reply` to `rq` goes to a sender (a HEAD answer has no body to send).
pub fn is_long(rq: &tiny_http::Request, reply: &Reply) -> bool {
    let long = match &reply.body {
        Body::Reader(..) => true,
        Body::Bytes(b) => b.len() as u64 > LONG_BYTES,
    };
    long && rq.method() != &tiny_http::Method::Head
}

/// Hands the answer to a new sender thread, or answers 503 if all are busy.
pub fn send(nvr: &Nvr, rq: tiny_http::Request, reply: Reply, line: String, began: Instant) {
    let max = usize::try_from(nvr.config.web.max_senders).unwrap_or(usize::MAX);
    let peer = super::request::RequestInfo::of(&rq, &nvr.config.web).peer.map(|ip| ip.to_canonical());
    let Some(share) = AddrPermit::try_take(peer, per_address(max)) else {
        return refuse(rq, busy_address(per_address(max)), &line, began);
    };
    let Some(permit) = Permit::try_take(&SENDING, max) else {
        return refuse(rq, busy(max), &line, began);
    };
    // The job comes back if the thread cannot start (spawn drops its closure).
    let job = Arc::new(Mutex::new(Some((rq, reply, line))));
    let theirs = job.clone();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name(format!("send-{id}")).stack_size(STACK_BYTES).spawn(move || {
        memory::set_subsystem(Subsystem::Http);
        let _permits = (permit, share);
        if let Some((rq, reply, line)) = theirs.lock().ok().and_then(|mut j| j.take()) {
            answer(rq, reply, &line, began);
        }
    });
    if let Err(e) = spawned {
        if let Some((rq, _, line)) = job.lock().ok().and_then(|mut j| j.take()) {
            let e = ApiError::new(503, format!("cannot start a thread to send the answer: {e}"));
            answer(rq, Reply::from(e.with_header("Retry-After", RETRY_AFTER_S.to_string())), &line, began);
        }
    }
}

/// 503 + Retry-After, the API's error body; logged at debug only (`Reply::from`
/// warns of every 5xx, and a flood of these is what the limit is for).
fn busy(max: usize) -> Reply {
    retry_later(format!("{max} long answers are being sent (web.max_senders); try again in a few seconds"))
}

fn busy_address(n: usize) -> Reply {
    retry_later(format!(
        "your address is already being sent {n} long answers (a quarter of web.max_senders); \
         try again when one is done"
    ))
}

fn retry_later(msg: String) -> Reply {
    Reply::json(503, &serde_json::json!({ "error": msg })).with_header("Retry-After", RETRY_AFTER_S.to_string())
}

fn answer(rq: tiny_http::Request, reply: Reply, line: &str, began: Instant) {
    let status = reply.status;
    match super::respond(rq, reply) {
        Ok(()) => log::debug!("{line} -> {status} in {:?}", began.elapsed()),
        Err(e) => log::debug!("{line} -> {status}: answer not delivered after {:?}: {e}", began.elapsed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: tiny_http::Method) -> tiny_http::Request {
        tiny_http::TestRequest::new().with_method(method).with_path("/api/export.mp4").into()
    }

    #[test]
    fn readers_and_big_bytes_go_to_a_sender_but_not_for_head() {
        let bytes = |n: usize| Reply { status: 200, headers: Vec::new(), body: Body::Bytes(vec![0; n]) };
        let reader = || Reply { status: 200, headers: Vec::new(), body: Body::Reader(Box::new(std::io::empty()), 0) };
        let get = request(tiny_http::Method::Get);
        assert!(is_long(&get, &reader()));
        assert!(is_long(&get, &bytes(LONG_BYTES as usize + 1)));
        assert!(!is_long(&get, &bytes(LONG_BYTES as usize)));
        assert!(!is_long(&request(tiny_http::Method::Head), &reader()));
    }

    #[test]
    fn one_address_holds_a_quarter_of_the_senders() {
        let (a, b) = (Some("192.0.2.1".parse().unwrap()), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(per_address(16), 4);
        assert_eq!(per_address(3), 1);
        let held: Vec<_> = (0..4).map(|_| AddrPermit::try_take(a, 4).expect("within the share")).collect();
        assert!(AddrPermit::try_take(a, 4).is_none(), "a fifth for one address");
        assert!(AddrPermit::try_take(b, 4).is_some(), "another address is not affected");
        drop(held);
        assert!(AddrPermit::try_take(a, 4).is_some(), "given back on drop");
        assert!(BY_ADDRESS.lock().unwrap().as_ref().is_some_and(|m| !m.contains_key(&"192.0.2.1".parse().unwrap())));
    }

    #[test]
    fn busy_is_the_api_error_with_retry_after() {
        let r = busy(16);
        assert_eq!(r.status, 503);
        assert!(r.headers.contains(&("Retry-After", RETRY_AFTER_S.to_string())));
        let Body::Bytes(b) = r.body else { panic!("bytes expected") };
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("web.max_senders")), "{v}");
    }
}
