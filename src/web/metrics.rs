//! Prometheus metrics: `GET /api/metrics` (a viewer's credential) and, when
//! `metrics.listen` is set, `GET /metrics` on that address with none. Also
//! the count of HTTP requests by route pattern, method and status.
//!
//! Invariants:
//! - The figures are the ones `/api/streams` and `/api/system` show, read from
//!   the same sources (stream status and ring, `Db::stream_usage`,
//!   `retention::disk_usage`, `base::memory`): a scrape and the page agree.
//! - Labels hold only stream names, route patterns (`Resource::pattern`, never
//!   a raw path), methods, statuses, states and subsystems: the number of
//!   series is bounded by the configuration, not by what clients send.
//! - The unauthenticated listener answers `GET /metrics` only; every other
//!   path is 404, so it exposes nothing of the API.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::base::metrics::{Kind, Text};
use crate::base::shutdown::Shutdown;
use crate::index::db::Db;
use crate::recording::retention;
use crate::recording::stream::{StreamRuntime, StreamState};
use crate::web::state::Nvr;

use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;

/// The text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests answered, by (route pattern, method, status).
static REQUESTS: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>> = Mutex::new(BTreeMap::new());

/// Counts an answered request. `route` is a pattern (`Resource::pattern`) or
/// `unmatched` for a path no route knows.
pub fn count_request(route: &'static str, method: &tiny_http::Method, status: u16) {
    use tiny_http::Method as M;
    let method = match method {
        M::Get => "GET",
        M::Head => "HEAD",
        M::Post => "POST",
        M::Put => "PUT",
        M::Delete => "DELETE",
        M::Options => "OPTIONS",
        M::Patch => "PATCH",
        _ => "other",
    };
    let mut map = REQUESTS.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry((route, method, status)).or_default() += 1;
}

/// `GET /api/metrics`.
pub fn metrics(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::text(200, CONTENT_TYPE, render(ctx.nvr, ctx.db)))
}

/// Every metric family, as text.
pub fn render(nvr: &Nvr, db: &Db) -> String {
    let mut t = Text::default();
    let streams = nvr.recorder.streams();
    let usage = db.stream_usage().map_err(|e| log::warn!("metrics: stream usage: {e}")).ok();
    stream_metrics(&mut t, nvr, &streams, usage.as_deref());
    detect_metrics(&mut t, nvr, &streams);
    storage_metrics(&mut t, nvr, usage.as_deref());
    if let Some(r) = nvr.replicate.get() {
        replicate_metrics(&mut t, &r.status(), nvr.clock.now_ms());
    }
    http_metrics(&mut t);
    process_metrics(&mut t, nvr);
    t.finish()
}

/// One labelled family: a sample per stream.
fn per_stream(
    t: &mut Text,
    streams: &[Arc<StreamRuntime>],
    name: &str,
    kind: Kind,
    help: &str,
    value: impl Fn(&StreamRuntime) -> Option<f64>,
) {
    t.family(name, kind, help);
    for rt in streams {
        if let Some(v) = value(rt) {
            t.sample(&[("stream", rt.name())], v);
        }
    }
}

fn stream_metrics(t: &mut Text, nvr: &Nvr, streams: &[Arc<StreamRuntime>], usage: Option<&[(i64, u64, u64)]>) {
    use Kind::{Counter, Gauge};
    let st = |f: fn(&crate::recording::stream::StreamStatus) -> f64| {
        move |rt: &StreamRuntime| Some(rt.with_status(|s| f(s)))
    };
    let ring = |f: fn(&crate::recording::ring::RingStats) -> f64| move |rt: &StreamRuntime| Some(f(&rt.ring.stats()));
    per_stream(t, streams, "oxinvr_stream_frames_total", Counter, "Video frames received.", st(|s| s.frames as f64));
    per_stream(t, streams, "oxinvr_stream_bytes_total", Counter, "Video bytes received.", st(|s| s.bytes as f64));
    per_stream(
        t,
        streams,
        "oxinvr_stream_fps",
        Gauge,
        "Frames per second over the last window.",
        st(|s| f64::from(s.fps)),
    );
    let help = "Received bitrate over the last window (bits per second).";
    per_stream(
        t,
        streams,
        "oxinvr_stream_bitrate_bits_per_second",
        Gauge,
        help,
        st(|s| f64::from(s.bitrate_kbps) * 1000.0),
    );
    let help = "Connection attempts to the camera (status.connects; each reconnect attempt adds one).";
    per_stream(t, streams, "oxinvr_stream_connects_total", Counter, help, st(|s| s.connects as f64));
    per_stream(t, streams, "oxinvr_stream_gaps_total", Counter, "Gaps in the received stream.", st(|s| s.gaps as f64));
    let help = "Bytes of the in-memory ring in use.";
    per_stream(t, streams, "oxinvr_stream_ring_used_bytes", Gauge, help, ring(|r| r.used_bytes as f64));
    per_stream(t, streams, "oxinvr_stream_ring_size_bytes", Gauge, "Size of the ring.", ring(|r| r.capacity as f64));
    let help = "Ring records overwritten (the oldest goes for each new one once full).";
    per_stream(t, streams, "oxinvr_stream_ring_evictions_total", Counter, help, ring(|r| r.evictions as f64));
    let now = nvr.clock.now_ms();
    let help = "Seconds since the last video frame (absent before the first).";
    per_stream(t, streams, "oxinvr_stream_last_frame_age_seconds", Gauge, help, |rt| {
        rt.with_status(|s| s.last_frame_ms).map(|ms| now.saturating_sub(ms).max(0) as f64 / 1000.0)
    });
    let help = "1 while the storage thread writes a segment of the stream and the disk accepts it.";
    per_stream(t, streams, "oxinvr_stream_recording", Gauge, help, |rt| {
        Some(rt.with_status(|s| s.writing.is_some() && s.storage_error.is_none()) as u8 as f64)
    });
    t.family("oxinvr_stream_state", Gauge, "1 for the state the stream is in (as status.state of /api/streams).");
    for rt in streams {
        let now = rt.with_status(|s| s.state);
        for state in StreamState::ALL {
            t.sample(&[("stream", rt.name()), ("state", state.name())], f64::from(u8::from(state == now)));
        }
    }
    let Some(usage) = usage else { return };
    let of = |rt: &StreamRuntime| usage.iter().find(|u| u.0 == rt.id()).map_or((0, 0), |u| (u.1, u.2));
    let help = "Bytes of the stream's recordings on disk.";
    per_stream(t, streams, "oxinvr_stream_storage_bytes", Gauge, help, |rt| Some(of(rt).0 as f64));
    per_stream(t, streams, "oxinvr_stream_segments", Gauge, "Recorded segments.", |rt| Some(of(rt).1 as f64));
}

/// Detection, for the streams it runs on (as `detection` of `/api/streams`).
fn detect_metrics(t: &mut Text, nvr: &Nvr, streams: &[Arc<StreamRuntime>]) {
    use crate::detect::DetectCounters;
    use Kind::{Counter, Gauge};
    let of = |f: fn(&DetectCounters) -> f64| {
        move |rt: &StreamRuntime| nvr.detection.get(rt.name()).map(|d| f(&d.snapshot()))
    };
    let help = "Frames detection decoded and looked at.";
    per_stream(t, streams, "oxinvr_detect_frames_total", Counter, help, of(|c| c.frames_decoded as f64));
    let help = "Frames detection lost to gaps and to falling behind.";
    per_stream(t, streams, "oxinvr_detect_frames_lost_total", Counter, help, of(|c| c.frames_lost as f64));
    let help = "Frames detection could not decode.";
    per_stream(t, streams, "oxinvr_detect_decode_errors_total", Counter, help, of(|c| c.decode_errors as f64));
    let help = "Seconds spent decoding and detecting (rate(): the share of one core).";
    per_stream(t, streams, "oxinvr_detect_busy_seconds_total", Counter, help, of(|c| c.busy_us as f64 / 1e6));
    let help = "1 while the stream is in motion.";
    per_stream(t, streams, "oxinvr_detect_in_motion", Gauge, help, of(|c| f64::from(u8::from(c.in_motion))));
}

fn storage_metrics(t: &mut Text, nvr: &Nvr, usage: Option<&[(i64, u64, u64)]>) {
    use Kind::{Counter, Gauge};
    if let Some(usage) = usage {
        let (bytes, segments) = usage.iter().fold((0, 0), |(b, s), u| (b + u.1, s + u.2));
        t.single("oxinvr_storage_recordings_bytes", Gauge, "Bytes of all recordings.", bytes as f64);
        t.single("oxinvr_storage_segments", Gauge, "Recorded segments of all streams.", segments as f64);
    }
    match retention::disk_usage(&nvr.config.storage.data_dir) {
        Ok(d) => {
            t.single(
                "oxinvr_storage_disk_size_bytes",
                Gauge,
                "Size of the data directory's file system.",
                d.total_bytes as f64,
            );
            t.single(
                "oxinvr_storage_disk_free_bytes",
                Gauge,
                "Free bytes of the data directory's file system.",
                d.free_bytes as f64,
            );
        }
        Err(e) => log::warn!("metrics: disk usage of {}: {e}", nvr.config.storage.data_dir.display()),
    }
    let paused = super::api::recording_problem(nvr).is_some();
    let help = "1 while recording is paused because the storage thread cannot write some stream.";
    t.single("oxinvr_storage_recording_paused", Gauge, help, f64::from(u8::from(paused)));
    let help = "Segments retention deleted since start (age, quota, free space).";
    t.single("oxinvr_retention_deleted_segments_total", Counter, help, retention::deleted_total() as f64);
    let help = "Duration of each segment fdatasync (with its retries).";
    t.histogram("oxinvr_storage_fsync_duration_seconds", help, crate::recording::segment::FSYNC_SECONDS.snapshot());
}

/// Replication to the bucket (only when `[replicate]` is on): what waits, what went up.
fn replicate_metrics(t: &mut Text, s: &crate::replicate::Status, now_ms: i64) {
    use Kind::{Counter, Gauge};
    let failing = f64::from(u8::from(s.state == "failing"));
    t.single("oxinvr_replicate_failing", Gauge, "1 while the last attempt to reach the bucket failed.", failing);
    let help = "Closed segments waiting for upload.";
    t.single("oxinvr_replicate_backlog_segments", Gauge, help, s.backlog_segments as f64);
    t.single("oxinvr_replicate_backlog_bytes", Gauge, "Bytes of the segments waiting.", s.backlog_bytes as f64);
    let help = "Event snapshots waiting for upload.";
    t.single("oxinvr_replicate_backlog_events", Gauge, help, s.backlog_events as f64);
    let age = s.oldest_pending_ms.map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
    let help = "Seconds since the end of the oldest segment waiting (0 when none waits).";
    t.single("oxinvr_replicate_oldest_pending_age_seconds", Gauge, help, age);
    let help = "Segments uploaded (object and sidecar) since start.";
    t.single("oxinvr_replicate_uploaded_segments_total", Counter, help, s.uploaded_segments as f64);
    let help = "Bytes of the segments uploaded since start.";
    t.single("oxinvr_replicate_uploaded_bytes_total", Counter, help, s.uploaded_bytes as f64);
    let help = "Event snapshots uploaded since start.";
    t.single("oxinvr_replicate_uploaded_events_total", Counter, help, s.uploaded_events as f64);
    let help = "Segments free space deleted before they were uploaded, since start.";
    t.single("oxinvr_replicate_deleted_unreplicated_total", Counter, help, s.deleted_unreplicated as f64);
}

fn http_metrics(t: &mut Text) {
    t.family(
        "oxinvr_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route pattern, method and status.",
    );
    let map = REQUESTS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for ((route, method, status), n) in map {
        t.sample(&[("route", route), ("method", method), ("status", &status.to_string())], n as f64);
    }
    t.single("oxinvr_http_live_clients", Kind::Gauge, "Live viewers connected.", super::live::live_clients() as f64);
    t.single("oxinvr_http_senders_busy", Kind::Gauge, "Threads sending long answers.", super::send::sending() as f64);
}

fn process_metrics(t: &mut Text, nvr: &Nvr) {
    use crate::base::memory;
    use Kind::Gauge;
    t.family(
        "oxinvr_memory_heap_bytes",
        Gauge,
        "Heap bytes of live blocks, by the subsystem whose threads allocated them.",
    );
    for (subsystem, bytes) in memory::heap_by_subsystem() {
        t.sample(&[("subsystem", subsystem)], bytes as f64);
    }
    let rings = nvr.recorder.ring_bytes_total() as f64;
    t.single("oxinvr_memory_rings_bytes", Gauge, "Bytes of every stream's ring mapping.", rings);
    let sqlite = Db::memory_used() as f64;
    t.single("oxinvr_memory_sqlite_bytes", Gauge, "Bytes SQLite holds.", sqlite);
    let budget = nvr.recorder.budget_report();
    t.single(
        "oxinvr_memory_budget_bytes",
        Gauge,
        "The memory budget streams are admitted into.",
        budget.budget_bytes as f64,
    );
    t.single("oxinvr_memory_budget_free_bytes", Gauge, "What is left of the budget.", budget.free_bytes as f64);
    let p = memory::process_memory();
    t.single("oxinvr_process_resident_memory_bytes", Gauge, "Resident set size (VmRSS).", p.rss as f64);
    t.single("oxinvr_process_resident_memory_max_bytes", Gauge, "Peak resident set size (VmHWM).", p.peak_rss as f64);
    t.single("oxinvr_process_threads", Gauge, "Threads of the process.", p.threads as f64);
    let uptime = nvr.started.elapsed().as_secs_f64();
    t.single("oxinvr_uptime_seconds", Gauge, "Seconds since the recorder started.", uptime);
    let help = "Wall-clock time the recorder started (seconds since the epoch).";
    t.single("oxinvr_start_time_seconds", Gauge, help, nvr.started_ms as f64 / 1000.0);
    let firmware = crate::appliance::firmware_version().unwrap_or("");
    let help = "Always 1; the labels say which build runs (firmware: the image's version, empty off the appliance).";
    t.family("oxinvr_build_info", Gauge, help)
        .sample(&[("version", env!("CARGO_PKG_VERSION")), ("firmware", firmware)], 1.0);
}

/// Starts the listener of `metrics.listen` (if set): one thread answering
/// `GET /metrics` without a credential. Returns its server and thread, which
/// `Http::stop` ends with the others.
pub fn spawn_listener(
    nvr: &Arc<Nvr>,
    stopping: &Shutdown,
) -> io::Result<Option<(Arc<tiny_http::Server>, JoinHandle<()>)>> {
    let listen = nvr.config.metrics.listen.clone();
    if listen.is_empty() {
        return Ok(None);
    }
    let server = tiny_http::Server::http_limited(&listen, super::limits(&nvr.config.web)).map_err(|e| {
        let kind = e.downcast_ref::<io::Error>().map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, format!("cannot listen on {listen} (metrics.listen): {e}"))
    })?;
    let server = Arc::new(server);
    log::info!("metrics without a credential on http://{listen}/metrics");
    let (srv, nvr, stop) = (server.clone(), nvr.clone(), stopping.clone());
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || listener(&srv, &nvr, &stop))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start thread metrics-http: {e}")))?;
    Ok(Some((server, thread)))
}

fn listener(server: &tiny_http::Server, nvr: &Nvr, stopping: &Shutdown) {
    crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Http);
    let mut db: Option<Db> = None;
    loop {
        match server.recv_timeout(crate::base::heartbeat::IDLE_BEAT) {
            Ok(Some(rq)) => answer(nvr, &mut db, rq),
            Ok(None) => {}
            Err(_) if stopping.is_triggered() => return,
            Err(e) => {
                log::warn!("metrics-http: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The listener's one route.
fn answer(nvr: &Nvr, db: &mut Option<Db>, rq: tiny_http::Request) {
    let (path, _) = super::router::split_target(rq.url());
    let get = matches!(rq.method(), tiny_http::Method::Get | tiny_http::Method::Head);
    let (route, reply) = match (path, get) {
        ("/metrics", true) => match super::open_db(nvr, db) {
            Ok(db) => ("/metrics", Reply::text(200, CONTENT_TYPE, render(nvr, db))),
            Err(e) => ("/metrics", Reply::from(e)),
        },
        ("/metrics", false) => {
            let e = ApiError::new(405, format!("/metrics does not answer {}", rq.method()));
            ("/metrics", Reply::from(e.with_header("Allow", "GET, HEAD".into())))
        }
        _ => ("unmatched", Reply::from(ApiError::not_found(format!("no such route: {path} (only /metrics here)")))),
    };
    count_request(route, rq.method(), reply.status);
    if let Err(e) = super::respond(rq, reply) {
        log::debug!("metrics: answer not delivered: {e}");
    }
}
