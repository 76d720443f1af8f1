//! The HTTP API: a fixed pool of tiny_http workers (`http-N`) serving JSON
//! about streams, recordings and the system, recorded files with byte ranges,
//! `export.mp4` (one fragmented MP4 over a span) and HLS VOD playlists.
//!
//! Invariants:
//! - Every answer is produced by a handler returning `Result<Reply, ApiError>`;
//!   every error is a 4xx/5xx with `{"error": "..."}` naming what is wrong.
//!   Unknown routes are 404, known routes with another method 405 (+ `Allow`).
//! - No input panics a worker: handlers are total (no unwrap, checked
//!   arithmetic and slicing). A panic that slips through anyway is caught per
//!   request and answered with 500 -- in unwinding builds; with
//!   `panic = "abort"` (release-mips) it ends the process.
//! - Request bodies are read only for POST/PUT and never beyond
//!   `web.max_body_bytes` (+1 byte to detect the excess): larger is 413.
//! - File paths come only from database rows, never from the URL.
//! - Each worker owns its own database connection (`Db` is not `Sync`),
//!   opened on first use and reopened after a failure.
//! - Media is streamed from the files with a known Content-Length (never
//!   buffered whole; chunked only past `usize::MAX` on 32-bit targets).
//! - A worker never sends a long answer (a reader body, or bytes over
//!   `send::LONG_BYTES`): a `send-N` thread does, at most `web.max_senders` at
//!   once, else 503 + `Retry-After`. Live view goes to `live-N` threads. So a
//!   worker is held only by a handler and a short answer, and every socket
//!   write gives up after `web.io_timeout_seconds` without progress.
//! - Connections are bounded in tiny_http (`limits`): in total, per address,
//!   a head deadline and an idle time; see docs/ARCHITECTURE.md, "HTTP".
//!
//! - A declared body over `web.max_body_bytes` is refused with 413 before
//!   anything is read. (tiny_http 0.12 allocated the whole declared length
//!   when draining an unread body; the vendored copy under vendor/ drains
//!   with a fixed buffer and closes the connection past 1 MiB.)

mod api;
mod assets;
mod detect;
mod detection;
mod events;
#[doc(hidden)]
pub mod fuzz;
pub mod live;
mod media;
pub mod metrics;
pub mod mqtt;
pub mod no_disk;
pub mod onvif;
mod openapi;
mod ota;
mod permit;
pub mod pressure;
mod probe;
mod range;
mod reply;
mod request;
mod router;
mod send;
mod session;
pub mod state;
mod tls;
pub mod webhooks;
mod webrtc;
pub mod websocket;

use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::base::error::Error;
use crate::base::heartbeat::{self, Part};
use crate::base::memory::{self, Subsystem};
use crate::base::shutdown::Shutdown;
use crate::index::db::Db;
use crate::web::state::Nvr;

use crate::auth::Principal;
use reply::{ApiError, Body, Reply};
use request::RequestInfo;
use router::{Matched, Method, Query, Resource, RouteError};

/// What a handler works with.
pub struct Ctx<'a> {
    pub nvr: &'a Nvr,
    pub db: &'a Db,
}

/// A request as the handlers see it.
struct Call<'a> {
    matched: Matched,
    query: Query,
    range: Option<&'a str>,
    body: &'a [u8],
    /// Who is asking (None on public routes without a credential).
    principal: Option<&'a Principal>,
    req: &'a RequestInfo,
}

/// The running HTTP server (and HTTPS one, `web.tls`); `stop` ends them.
pub struct Http {
    server: Arc<tiny_http::Server>,
    https: Option<Arc<tiny_http::Server>>,
    /// Each worker with the server it takes requests from.
    threads: Vec<(Arc<tiny_http::Server>, JoinHandle<()>)>,
    stopping: Shutdown,
}

impl Http {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// The HTTPS address bound, if `web.tls` is on.
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.https.as_ref().and_then(|s| s.server_addr().to_ip())
    }

    /// Stops accepting requests and lets each worker finish its current one,
    /// and each live viewer receive its goodbye, waiting for them until
    /// `deadline`: a client that does not read its answer must not hold up the
    /// shutdown (a thread still writing to one is left to end with the process).
    pub fn stop(self, deadline: Duration) {
        self.stopping.trigger();
        for (server, _) in &self.threads {
            server.unblock();
        }
        let until = Instant::now() + deadline;
        for (_, t) in self.threads {
            let name = t.thread().name().unwrap_or("http").to_string();
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !t.is_finished() {
                log::warn!("{name} is still answering a client after {deadline:?}; not waiting for it");
            } else if t.join().is_err() {
                log::warn!("{name} ended with a panic");
            }
        }
        // Live viewers are told the recorder stops (close 1001) within the same
        // deadline; senders still writing are left like workers.
        while (live::live_clients() > 0 || send::sending() > 0) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let sending = send::sending();
        if sending > 0 {
            log::warn!("{sending} send thread(s) still answering a client after {deadline:?}; not waiting for them");
        }
    }
}

/// Binds `config.web.listen` and starts `config.web.threads` workers, which
/// end when `nvr.shutdown` is triggered (by `Http::stop`).
pub fn spawn(nvr: Arc<Nvr>) -> io::Result<Http> {
    let stopping = nvr.shutdown.clone();
    let listen = nvr.config.web.listen.clone();
    // tiny_http's own threads read the requests the workers then free: counted as
    // HTTP too, the subsystem's heap figure stays what it holds.
    tiny_http::set_thread_start_hook(|| memory::set_subsystem(Subsystem::Http));
    let cannot_listen = |listen: &str, e: Box<dyn std::error::Error + Send + Sync>| {
        let kind = e.downcast_ref::<io::Error>().map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, format!("cannot listen on {listen}: {e}"))
    };
    let server =
        tiny_http::Server::http_limited(&listen, limits(&nvr.config.web)).map_err(|e| cannot_listen(&listen, e))?;
    let mut http = Http { server: Arc::new(server), https: None, threads: Vec::new(), stopping };
    if nvr.config.web.tls {
        match start_https(&nvr) {
            Ok(https) => http.https = Some(Arc::new(https)),
            Err(e) => {
                http.stop_now();
                return Err(e);
            }
        }
    }
    match metrics::spawn_listener(&nvr, &http.stopping) {
        Ok(Some(listener)) => http.threads.push(listener),
        Ok(None) => {}
        Err(e) => {
            http.stop_now();
            return Err(e);
        }
    }
    // The same number of workers for each server: HTTP keeps serving health
    // and the console when it redirects the rest.
    let servers: Vec<_> = std::iter::once(http.server.clone()).chain(http.https.clone()).collect();
    for (i, server) in servers.into_iter().enumerate() {
        for n in 1..=nvr.config.web.threads.max(1) {
            let name = if i == 0 { format!("http-{n}") } else { format!("https-{n}") };
            let (srv, nvr, stop) = (server.clone(), nvr.clone(), http.stopping.clone());
            match std::thread::Builder::new().name(name.clone()).spawn(move || worker(&srv, &nvr, &stop)) {
                Ok(t) => http.threads.push((server.clone(), t)),
                Err(e) => {
                    http.stop_now();
                    return Err(io::Error::new(e.kind(), format!("cannot start thread {name}: {e}")));
                }
            }
        }
    }
    Ok(http)
}

impl Http {
    fn stop_now(self) {
        self.stop(Duration::from_secs(1));
    }
}

/// The HTTPS server on `web.tls_listen`, with the certificate of
/// `<data_dir>/tls` (made now if there is none).
fn start_https(nvr: &Arc<Nvr>) -> io::Result<tiny_http::Server> {
    let web = &nvr.config.web;
    let failed = io::Error::other;
    let store = crate::auth::tls::Store::open_or_create(&nvr.config.storage.data_dir)
        .map_err(|e| failed(format!("HTTPS certificate: {e}")))?;
    let store = Arc::new(store);
    let config = store.server_config().map_err(failed)?;
    let info = store.info();
    let _ = nvr.tls.set(store);
    let server = tiny_http::Server::https_limited(&web.tls_listen, limits(web), config).map_err(|e| {
        let kind = e.downcast_ref::<io::Error>().map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, format!("cannot listen on {}: {e}", web.tls_listen))
    })?;
    log::info!(
        "HTTPS on {} with a {} certificate, SHA-256 fingerprint {}",
        web.tls_listen,
        info.source.as_str(),
        info.fingerprint
    );
    Ok(server)
}

/// The most a connection's thread buffers of a body before a worker has the
/// request (256 connections × this bounds the memory it can cost).
const MAX_PREREAD: usize = 64 << 10;

/// What bounds each connection (docs/ARCHITECTURE.md, "HTTP").
fn limits(web: &crate::config::WebConfig) -> tiny_http::Limits {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    tiny_http::Limits {
        io_timeout: secs(web.io_timeout_seconds),
        head_timeout: secs(web.head_timeout_seconds),
        idle_timeout: secs(web.idle_timeout_seconds),
        max_connections: count(web.max_connections),
        max_per_address: count(web.max_connections_per_address),
        // Every API body (JSON) is read with its head; only bundles and
        // bodies over the cap reach a worker unread.
        max_preread: count(web.max_body_bytes).min(MAX_PREREAD),
    }
}

fn worker(server: &tiny_http::Server, nvr: &Nvr, stopping: &Shutdown) {
    memory::set_subsystem(Subsystem::Http);
    let mut db: Option<Db> = None;
    loop {
        // Any worker's beat is the pool's: one busy with a long upload must not count as stuck.
        heartbeat::beat(Part::Http);
        match server.recv_timeout(heartbeat::IDLE_BEAT) {
            Ok(Some(rq)) => serve(nvr, &mut db, rq),
            Ok(None) => {}
            Err(_) if stopping.is_triggered() => return,
            Err(e) => {
                log::warn!("http: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Handles one request and sends the answer.
fn serve(nvr: &Nvr, db: &mut Option<Db>, mut rq: tiny_http::Request) {
    let began = Instant::now();
    let max = u64::from(nvr.config.web.max_body_bytes);
    // A bundle upload is streamed, never buffered, and a JPEG to detect on has
    // its own limit (`detect::MAX_JPEG_BYTES`): the routes exempt from this one.
    let post_to = |p: &str| rq.method() == &tiny_http::Method::Post && router::split_target(rq.url()).0 == p;
    let upload = post_to(ota::PATH) || post_to(detect::PATH);
    let route = route_pattern(&rq);
    if let Some(n) = rq.body_length().map(|n| n as u64).filter(|n| *n > max && !upload) {
        let reply = Reply::from(too_large(&n.to_string(), max));
        metrics::count_request(route, rq.method(), reply.status);
        if let Err(e) = respond(rq, reply) {
            log::debug!("413 not delivered: {e}");
        }
        return;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| handle(nvr, db, &mut rq))).unwrap_or_else(|_| {
        *db = None;
        Outcome::Reply(Reply::from(ApiError::internal(format!(
            "internal error while answering {} {}",
            rq.method(),
            rq.url()
        ))))
    });
    let reply = match outcome {
        Outcome::Reply(r) => r,
        Outcome::Live(stream, sub, via) => {
            let method = rq.method().clone();
            let status = live::serve(nvr, &stream, sub, via, rq);
            return metrics::count_request(route, &method, status);
        }
        Outcome::Events(via) => {
            let method = rq.method().clone();
            let status = live::sse::serve(nvr, via, rq);
            return metrics::count_request(route, &method, status);
        }
    };
    metrics::count_request(route, rq.method(), reply.status);
    let (status, line) = (reply.status, format!("{} {}", rq.method(), rq.url()));
    if send::is_long(&rq, &reply) || send::is_behind(&rq) {
        return send::send(nvr, rq, reply, line, began);
    }
    if let Err(e) = respond(rq, reply) {
        log::debug!("{line}: answer not delivered: {e}");
    }
    log::debug!("{line} -> {status} in {:?}", began.elapsed());
}

/// The route pattern of a request, the label it is counted under (`unmatched`: no route).
fn route_pattern(rq: &tiny_http::Request) -> &'static str {
    let (path, _) = router::split_target(rq.url());
    router::route(rq.method().as_str(), path).map_or("unmatched", |m| m.resource.pattern())
}

/// What `handle` decided: an answer, or to hand the connection to live view.
enum Outcome {
    Reply(Reply),
    /// An authorised `GET /api/streams/{name}/live` (stream, `?sub=1`: its sub
    /// stream if it has one, credential); `live::serve` answers it and
    /// re-checks the credential while it plays.
    Live(String, bool, crate::auth::Via),
    /// An authorised `GET /api/events/stream`; `live::sse` serves it.
    Events(crate::auth::Via),
}

fn handle(nvr: &Nvr, db: &mut Option<Db>, rq: &mut tiny_http::Request) -> Outcome {
    let req = RequestInfo::of(rq, &nvr.config.web);
    if let Some(moved) = tls::redirect(nvr, rq, &req) {
        return Outcome::Reply(moved);
    }
    let (path, query) = router::split_target(rq.url());
    let method = rq.method().as_str().to_string();
    let matched = match router::route(&method, path) {
        Ok(m) => m,
        Err(RouteError::NotFound) => {
            return Outcome::Reply(ApiError::not_found(format!("no such route: {method} {path}")).into())
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            let e = ApiError::new(405, format!("{path} does not answer {method} (allowed: {allow})"));
            return Outcome::Reply(e.with_header("Allow", allow).into());
        }
    };
    let query = Query::parse(query);
    if let Resource::Static(file) = &matched.resource {
        return Outcome::Reply(assets::serve(file, &req));
    }
    let db = match open_db(nvr, db) {
        Ok(db) => db,
        Err(e) => return Outcome::Reply(e.into()),
    };
    let principal = match session::admit(nvr, db, &req, &matched) {
        Ok(p) => p,
        Err(e) => return Outcome::Reply(e.into()),
    };
    match (&matched.resource, matched.method) {
        (Resource::Live(name), _) => {
            let via = principal.map(|p| p.via).unwrap_or(crate::auth::Via::Console);
            let sub = query.only(&["sub"]).map_err(ApiError::bad_request).and_then(|()| api::flag(&query, "sub"));
            return match sub {
                Ok(sub) => Outcome::Live(name.clone(), sub, via),
                Err(e) => Outcome::Reply(e.into()),
            };
        }
        (Resource::EventStream, _) => {
            if let Err(e) = query.only(&[]) {
                return Outcome::Reply(ApiError::bad_request(e).into());
            }
            return Outcome::Events(principal.map(|p| p.via).unwrap_or(crate::auth::Via::Console));
        }
        (Resource::Ota, Method::Post) => {
            return Outcome::Reply(ota::upload(&Ctx { nvr, db }, &query, rq).unwrap_or_else(Reply::from))
        }
        (Resource::Detect, _) => {
            return Outcome::Reply(detect::detect(&Ctx { nvr, db }, &query, rq).unwrap_or_else(Reply::from))
        }
        _ => {}
    }
    let body = match matched.method.has_body() {
        true => match read_body(rq, u64::from(nvr.config.web.max_body_bytes)) {
            Ok(b) => b,
            Err(e) => return Outcome::Reply(e.into()),
        },
        false => Vec::new(),
    };
    let call =
        Call { matched, query, range: req.range.as_deref(), body: &body, principal: principal.as_ref(), req: &req };
    Outcome::Reply(dispatch(&Ctx { nvr, db }, &call).unwrap_or_else(Reply::from))
}

fn dispatch(ctx: &Ctx, c: &Call) -> Result<Reply, ApiError> {
    let q = &c.query;
    match (&c.matched.resource, c.matched.method) {
        (Resource::Health, _) => api::health(ctx),
        (Resource::OpenApi, _) => openapi::document(q),
        (
            Resource::AuthStatus
            | Resource::AuthSetup
            | Resource::AuthLogin
            | Resource::AuthLogout
            | Resource::Sessions
            | Resource::Session(_)
            | Resource::Users
            | Resource::User(_)
            | Resource::UserTotp(_)
            | Resource::UserTotpConfirm(_)
            | Resource::Keys
            | Resource::Key(_),
            _,
        ) => session::dispatch(ctx, c),
        (Resource::Streams, Method::Post) => api::create_stream(ctx, q, c.body),
        (Resource::Streams, _) => api::list_streams(ctx, q),
        (Resource::Stream(name), Method::Put) => api::update_stream(ctx, name, q, c.body),
        (Resource::Stream(name), Method::Delete) => api::delete_stream(ctx, name, q),
        (Resource::Stream(name), _) => api::get_stream(ctx, name, q),
        (Resource::Probe, _) => probe::probe(ctx, q, c.body),
        (Resource::OnvifDiscover, _) => onvif::discover(ctx, q, c.body),
        (Resource::OnvifProbe, _) => onvif::probe(ctx, q, c.body),
        (Resource::StreamOnvif(name), Method::Put) => onvif::put_settings(ctx, name, q, c.body),
        (Resource::StreamOnvif(name), Method::Delete) => onvif::delete_settings(ctx, name, q),
        (Resource::StreamOnvif(name), _) => onvif::get_settings(ctx, name, q),
        (Resource::Ptz(name), _) => onvif::ptz(ctx, name, q, c.body),
        (Resource::StreamDetection(name), _) => detection::put(ctx, name, q, c.body),
        (Resource::Snapshot(name), _) => detect::snapshot(ctx, name, q),
        (Resource::WebRtc(name), _) => webrtc::offer(ctx, name, q, c.body),
        (Resource::Recordings, _) => api::recordings(ctx, q),
        (Resource::RecordingFile(id), _) => media::recording_file(ctx, id, q, c.range),
        (Resource::Export, _) => media::export_mp4(ctx, q, c.range),
        (Resource::Playback(stream), _) => media::playback(ctx, stream, q),
        (Resource::System, _) => api::system(ctx, q),
        (Resource::Metrics, _) => metrics::metrics(ctx, q),
        (Resource::Memory, Method::Put) => api::set_memory_budget(ctx, q, c.body),
        (Resource::Memory, _) => api::memory_budget(ctx, q),
        (Resource::Logs, _) => api::logs(ctx, q),
        (Resource::TestStall, _) => api::test_stall(q),
        (Resource::Settings, _) => api::settings(ctx, q),
        (Resource::Events, Method::Post) => events::create(ctx, q, c.body),
        (Resource::Events, _) => events::list(ctx, q),
        (Resource::Event(id), Method::Delete) => events::delete(ctx, id, q),
        (Resource::Event(id), _) => events::get(ctx, id, q),
        (Resource::EventEnd(id), _) => events::end(ctx, id, q, c.body),
        (Resource::EventClip(id), _) => events::clip(ctx, id, q, c.range),
        (Resource::EventImage(id, which), _) => events::image(ctx, id, which, q),
        (Resource::Ota, _) => ota::status(q),
        (Resource::Webhooks, _) => webhooks::list(ctx, q),
        (Resource::WebhookTest(name), _) => webhooks::test(ctx, name, q, c.body),
        (Resource::Tls, Method::Put) => tls::put(ctx, q, c.body),
        (Resource::Tls, _) => tls::get(ctx, q),
        (Resource::Live(_) | Resource::EventStream | Resource::Detect | Resource::Static(_), _) => {
            Err(ApiError::internal("route handled before dispatch"))
        }
    }
}

/// This worker's database connection, opened on first use.
fn open_db<'a>(nvr: &Nvr, slot: &'a mut Option<Db>) -> Result<&'a Db, ApiError> {
    if slot.is_none() {
        let path = nvr.config.db_path();
        // Whatever the database's error, this worker cannot answer for now.
        let db =
            Db::open(&path).map_err(|e| Error::unavailable(format!("database {} unavailable: {e}", path.display())))?;
        *slot = Some(db);
    }
    slot.as_ref().ok_or_else(|| ApiError::internal("no database connection"))
}

fn too_large(n: &str, max: u64) -> ApiError {
    ApiError::new(413, format!("the request body ({n} bytes) is larger than web.max_body_bytes ({max} bytes)"))
}

/// Reads a request body of at most `max` bytes (a larger declared one was
/// refused by `serve` already; a chunked one is cut at `max + 1`).
fn read_body(rq: &mut tiny_http::Request, max: u64) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    rq.as_reader()
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > max {
        return Err(too_large(&format!("more than {max}"), max));
    }
    Ok(body)
}

fn header_list(reply: &Reply) -> Vec<tiny_http::Header> {
    reply.headers.iter().filter_map(|(k, v)| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok()).collect()
}

/// Sends a reply with its Content-Length (never chunked), except one too long
/// for `usize` (over 4 GiB on 32-bit targets), which goes chunked to HTTP/1.1
/// clients and is refused to HTTP/1.0 ones (tiny_http would buffer it whole).
fn respond(rq: tiny_http::Request, reply: Reply) -> io::Result<()> {
    let len = usize::try_from(reply.body_len()).ok();
    if len.is_none() && *rq.http_version() <= (1, 0) {
        let e = ApiError::internal("the answer is over 4 GiB, which this build sends to HTTP/1.1 clients only; ask for a shorter span or a byte range");
        return respond(rq, Reply::from(e));
    }
    let headers = header_list(&reply);
    let reader: Box<dyn Read + Send> = match reply.body {
        Body::Bytes(b) => Box::new(io::Cursor::new(b)),
        Body::Reader(r, _) => r,
    };
    let response = tiny_http::Response::new(tiny_http::StatusCode(reply.status), headers, reader, len, None)
        .with_chunked_threshold(usize::MAX);
    rq.respond(response)
}

#[cfg(test)]
mod tests;
