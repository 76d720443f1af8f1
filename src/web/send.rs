//! Long answers on their own threads: a recording file, an export, an HLS
//! segment (any `Body::Reader`) or bytes over `LONG_BYTES` is sent by a
//! `send-N` thread, so that a client that reads slowly (or not at all) holds
//! that thread, never an `http-N` worker that short API calls wait for.
//!
//! Invariants:
//! - At most `web.max_senders` answers are being sent at once (a `Permit` on
//!   `SENDING`, held by the thread); past that the request gets 503 with
//!   `Retry-After` from the worker, which is free again at once.
//! - A sender ends within `web.io_timeout_seconds` of its client taking
//!   nothing (the socket's write timeout; tiny_http then ends the connection).

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
    let Some(permit) = Permit::try_take(&SENDING, max) else {
        return answer(rq, busy(max), &line, began);
    };
    // The job comes back if the thread cannot start (spawn drops its closure).
    let job = Arc::new(Mutex::new(Some((rq, reply, line))));
    let theirs = job.clone();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name(format!("send-{id}")).stack_size(STACK_BYTES).spawn(move || {
        memory::set_subsystem(Subsystem::Http);
        let _permit = permit;
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
    let msg = format!("{max} long answers are being sent (web.max_senders); try again in a few seconds");
    Reply::json(503, &serde_json::json!({ "error": msg })).with_header("Retry-After", RETRY_AFTER_S.to_string())
}

fn answer(rq: tiny_http::Request, reply: Reply, line: &str, began: Instant) {
    let status = reply.status;
    match super::respond(rq, reply) {
        Ok(()) => log::debug!("{line} -> {status} in {:?}", began.elapsed()),
        Err(e) => log::debug!("{line} -> {status}: answer not delivered after {:?}: {e}", began.elapsed()),
    }
}
