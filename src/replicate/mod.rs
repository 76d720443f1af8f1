//! Replication: every closed segment of a stream with `replicate = true` is
//! uploaded to an S3-compatible bucket (`[replicate]`), followed by a JSON
//! sidecar that describes it, so the bucket alone can be re-indexed.
//!
//! One named thread (`replicate`) dispatches: it queues closed segments
//! (`Db::replicate_enqueue`, a scan from the lowest segment still open,
//! every `SCAN`), gives the oldest pending ones to `parallel_uploads`
//! workers (`replicate-N`), and marks each done or failed when its worker
//! reports. A worker uploads one object (PutObject below
//! `multipart_threshold_kb`, else a multipart upload in `part_size_kb`
//! parts), then its sidecar. One connection per object is not enough for
//! 64 streams: each request waits for the bucket's quorum write.
//!
//! Invariants:
//! - An object is `<prefix>/<box>/<stream>/<date>/<file>.mp4` (the segment's
//!   path under `recordings/`); its sidecar is the same name + `.json` and is
//!   written only after the object is complete: a sidecar means a whole object.
//! - Nothing closed is missed: start-up scans every segment (a power cut
//!   between a close and its enqueue loses nothing); rows are idempotent.
//! - A multipart upload's id and each acknowledged part are in the queue row
//!   before the next part is sent, so a restart resumes it; an upload the
//!   bucket forgot (`NoSuchUpload`) is started again from part 1. At start
//!   the thread lists the bucket's open uploads under `<prefix>/<box>/` and
//!   aborts every one the queue does not know: no incomplete upload is left.
//! - Every payload's SHA-256 is signed (`x-amz-content-sha256`), so the
//!   server refuses a damaged body; a PutObject also carries
//!   `x-amz-checksum-sha256`; the sidecar holds the whole file's SHA-256.
//! - No row is given to two workers (the dispatcher passes the ones in
//!   flight as `busy`); only the dispatcher marks rows done or failed, a
//!   worker writes only its multipart progress (its own connection).
//! - A failure pauses all dispatching for a capped exponential backoff (1 s
//!   doubling to `MAX_BACKOFF`): a bucket that is down is not hammered;
//!   the failed row (segment or event) also waits on its own backoff, so
//!   one bad object does not hold up the others. Recording never waits for
//!   replication (it only reads closed files and writes its own rows).
//! - `bandwidth_kbps` is one limit shared by all workers.
//! - The secret key is never logged or shown (`Credentials` masks it).
//! - Event snapshots go as `<prefix>/<box>/.events/<stream>/<date>/<id>.jpg`
//!   and a `.json` sidecar (the event), once the event has ended
//!   (`EVENT_SETTLE` ago); one at a time goes ahead of the segment backlog,
//!   so a long backlog does not hold them back. `.events` cannot be a
//!   stream's folder: stream names have no dot.

pub mod s3;
pub mod sigv4;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::base::clock::Clock;
use crate::base::shutdown::Shutdown;
use crate::config::ReplicateConfig;
use crate::index::db::{Backlog, Db, EventUpload, UploadJob};
use s3::{Body, Bucket, S3Error};

/// How often closed segments are looked for.
const SCAN: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the bucket fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long after an event's end its snapshot is sent (its files are
/// written just after its row).
const EVENT_SETTLE: Duration = Duration::from_secs(5);
/// Bytes read per step (hashing and sending).
const CHUNK: usize = 64 << 10;

/// What `/api/system` shows of replication.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// `starting`, `ok` (the last attempt worked), `failing` (it did not; see last_error).
    pub state: &'static str,
    pub endpoint: String,
    pub bucket: String,
    /// Where this box's objects go: `<prefix>/<box>/`.
    pub prefix: String,
    pub backlog_segments: u64,
    pub backlog_bytes: u64,
    /// Event snapshots still to upload.
    pub backlog_events: u64,
    /// End (epoch ms) of the oldest segment still to upload.
    pub oldest_pending_ms: Option<i64>,
    /// Since start.
    pub uploaded_segments: u64,
    pub uploaded_bytes: u64,
    pub uploaded_events: u64,
    pub last_upload_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// Segments retention deleted before they were uploaded (disk full), since start.
    pub deleted_unreplicated: u64,
    /// Objects being uploaded now, of at most `parallel_uploads`.
    pub uploading: usize,
    pub parallel_uploads: u32,
}

/// The running uploader.
pub struct Replicator {
    status: Arc<Mutex<Status>>,
    stop: Shutdown,
}

impl Replicator {
    pub fn status(&self) -> Status {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.deleted_unreplicated = crate::recording::retention::deleted_unreplicated_total();
        s
    }

    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.status()).unwrap_or(Value::Null)
    }

    /// Asks the thread to stop (not waited for: it may be in a long upload,
    /// which a restart resumes).
    pub fn stop(&self) {
        self.stop.trigger();
    }
}

/// Everything a worker needs (shared by all of them).
struct Uploader {
    bucket: Bucket,
    /// `<prefix>/<box>/`.
    base: String,
    box_name: String,
    data_dir: PathBuf,
    limit: Limiter,
    threshold: u64,
    part_size: u64,
    clock: Arc<dyn Clock>,
    status: Arc<Mutex<Status>>,
    stop: Shutdown,
}

/// One object (and its sidecar) a worker is given.
enum Job {
    Segment(UploadJob),
    Event(EventUpload),
}

/// What a worker tells the dispatcher.
struct Done {
    worker: usize,
    job: Job,
    result: Result<(), String>,
}

/// The dispatcher's state: the workers, which are idle, what is in flight.
struct Dispatch {
    up: Arc<Uploader>,
    db: Db,
    workers: Vec<mpsc::Sender<Job>>,
    idle: Vec<usize>,
    done: mpsc::Receiver<Done>,
    busy_segments: Vec<i64>,
    busy_events: Vec<i64>,
    backoff: Duration,
    paused_until: Option<Instant>,
}

/// Starts the `replicate` thread and its workers; `Ok(None)` when `[replicate]` is off.
pub fn start(
    cfg: &ReplicateConfig,
    data_dir: &Path,
    db_path: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Option<Replicator>, String> {
    if !cfg.enabled() {
        return Ok(None);
    }
    let creds = cfg.credentials().map_err(|(k, m)| format!("{k}: {m}"))?;
    let bucket = Bucket::from_config("replicate", &cfg.endpoint, &cfg.bucket, &cfg.region, creds, &cfg.ca_file)?;
    let box_name = cfg.box_or_host(crate::notify::mqtt::hostname);
    let prefix = cfg.prefix.trim_end_matches('/');
    let base = if prefix.is_empty() { format!("{box_name}/") } else { format!("{prefix}/{box_name}/") };
    let status = Arc::new(Mutex::new(Status {
        state: "starting",
        endpoint: cfg.endpoint.clone(),
        bucket: cfg.bucket.clone(),
        prefix: base.clone(),
        parallel_uploads: cfg.parallel_uploads,
        ..Status::default()
    }));
    let stop = Shutdown::new();
    let up = Arc::new(Uploader {
        bucket,
        base,
        box_name,
        data_dir: data_dir.to_path_buf(),
        limit: Limiter::new(u64::from(cfg.bandwidth_kbps) * 1000 / 8),
        threshold: u64::from(cfg.multipart_threshold_kb) << 10,
        part_size: u64::from(cfg.part_size_kb) << 10,
        clock,
        status: status.clone(),
        stop: stop.clone(),
    });
    let (done_tx, done) = mpsc::channel();
    let mut workers = Vec::new();
    for n in 0..cfg.parallel_uploads.max(1) as usize {
        workers.push(spawn_worker(n, &up, db_path, done_tx.clone())?);
    }
    let db = Db::open(db_path).map_err(|e| format!("replicate: {e}"))?;
    let idle = (0..workers.len()).rev().collect();
    let d = Dispatch {
        up,
        db,
        workers,
        idle,
        done,
        busy_segments: Vec::new(),
        busy_events: Vec::new(),
        backoff: Duration::ZERO,
        paused_until: None,
    };
    std::thread::Builder::new()
        .name("replicate".into())
        .spawn(move || {
            crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Replicate);
            d.run();
        })
        .map_err(|e| format!("replicate thread: {e}"))?;
    log::info!(
        "replicate: uploading closed segments to {} bucket {}, {} at once",
        cfg.endpoint,
        cfg.bucket,
        cfg.parallel_uploads
    );
    Ok(Some(Replicator { status, stop }))
}

/// Starts worker `n` (`replicate-<n>`, its own database connection for
/// multipart progress); it ends when the dispatcher drops its sender.
fn spawn_worker(
    n: usize,
    up: &Arc<Uploader>,
    db_path: &Path,
    done: mpsc::Sender<Done>,
) -> Result<mpsc::Sender<Job>, String> {
    let db = Db::open(db_path).map_err(|e| format!("replicate: {e}"))?;
    let (tx, rx) = mpsc::channel::<Job>();
    let up = up.clone();
    std::thread::Builder::new()
        .name(format!("replicate-{n}"))
        .spawn(move || {
            crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Replicate);
            for job in rx {
                // A panic is reported as a failure, so the row is retried and the worker stays.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &job {
                    Job::Segment(j) => up.upload(&db, j),
                    Job::Event(ev) => up.send_event(ev),
                }))
                .unwrap_or_else(|_| Err("the upload panicked (a bug; see the log)".into()));
                if done.send(Done { worker: n, job, result }).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("replicate worker thread: {e}"))?;
    Ok(tx)
}

impl Dispatch {
    fn run(mut self) {
        let mut swept = false;
        let mut last_scan: Option<Instant> = None;
        let mut floor = 0i64;
        while !self.up.stop.is_triggered() {
            if last_scan.is_none_or(|t| t.elapsed() >= SCAN) {
                match self.db.replicate_enqueue(floor, self.up.clock.now_ms()) {
                    Ok((_, next)) => floor = next,
                    Err(e) => log::warn!("replicate: cannot queue closed segments: {e}"),
                }
                last_scan = Some(Instant::now());
                self.refresh_backlog();
            }
            if self.paused_until.is_some_and(|t| Instant::now() >= t) {
                self.paused_until = None;
            }
            if self.paused_until.is_none() {
                if !swept {
                    match self.up.sweep(&self.db) {
                        Ok(()) => swept = true,
                        Err(e) => self.failed(&e),
                    }
                }
                if swept {
                    if let Err(e) = self.fill() {
                        self.failed(&e);
                    }
                }
            }
            self.lock().uploading = self.workers.len() - self.idle.len();
            let mut wait = SCAN.saturating_sub(last_scan.map_or(SCAN, |t| t.elapsed()));
            if let Some(t) = self.paused_until {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            match self.done.recv_timeout(wait.max(Duration::from_millis(10))) {
                // The backlog is counted at the next scan (at most a second away).
                Ok(d) => {
                    self.finish(d);
                    while let Ok(d) = self.done.try_recv() {
                        self.finish(d);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        log::info!("replicate: stopped");
    }

    /// Gives every idle worker the next due job.
    fn fill(&mut self) -> Result<(), String> {
        while let Some(&w) = self.idle.last() {
            let Some(job) = self.next_job()? else { break };
            match &job {
                Job::Segment(j) => self.busy_segments.push(j.segment.id),
                Job::Event(ev) => self.busy_events.push(ev.id),
            }
            self.idle.pop();
            if let Err(mpsc::SendError(job)) = self.workers[w].send(job) {
                // Its thread ended: the row goes back to the queue; the worker is not used again.
                match job {
                    Job::Segment(j) => self.busy_segments.retain(|&id| id != j.segment.id),
                    Job::Event(ev) => self.busy_events.retain(|&id| id != ev.id),
                }
                return Err(format!("replicate worker {w} is gone"));
            }
        }
        Ok(())
    }

    /// One event snapshot ahead of the segments (when none is in flight),
    /// then the oldest segment, then more snapshots.
    fn next_job(&self) -> Result<Option<Job>, String> {
        let now = self.up.clock.now_ms();
        let settled = now - EVENT_SETTLE.as_millis() as i64;
        let event = || self.db.replicate_next_event(settled, now, &self.busy_events).map_err(|e| e.to_string());
        if self.busy_events.is_empty() {
            if let Some(ev) = event()? {
                return Ok(Some(Job::Event(ev)));
            }
        }
        if let Some(j) = self.db.replicate_next(now, &self.busy_segments).map_err(|e| e.to_string())? {
            return Ok(Some(Job::Segment(j)));
        }
        if self.busy_events.is_empty() {
            return Ok(None);
        }
        Ok(event()?.map(Job::Event))
    }

    /// A worker's report: the row is marked done, or failed and backed off.
    fn finish(&mut self, d: Done) {
        self.idle.push(d.worker);
        let now = self.up.clock.now_ms();
        let marked = match (&d.job, &d.result) {
            (Job::Segment(j), Ok(())) => {
                self.busy_segments.retain(|&id| id != j.segment.id);
                let r = self.db.replicate_done(j.segment.id, now);
                let mut s = self.lock();
                s.uploaded_segments += 1;
                s.uploaded_bytes += j.segment.bytes;
                s.last_upload_ms = Some(now);
                r
            }
            (Job::Event(ev), Ok(())) => {
                self.busy_events.retain(|&id| id != ev.id);
                self.lock().uploaded_events += 1;
                self.db.replicate_event_done(ev.id, now)
            }
            (Job::Segment(j), Err(e)) => {
                self.busy_segments.retain(|&id| id != j.segment.id);
                let next = now + backoff_for(j.attempts + 1).as_millis() as i64;
                self.db.replicate_failed(j.segment.id, e, next)
            }
            (Job::Event(ev), Err(_)) => {
                self.busy_events.retain(|&id| id != ev.id);
                let next = now + backoff_for(ev.attempts + 1).as_millis() as i64;
                self.db.replicate_event_failed(ev.id, next).map(drop)
            }
        };
        if let Err(e) = marked {
            log::warn!("replicate: {e}");
        }
        match d.result {
            Ok(()) => {
                self.backoff = Duration::ZERO;
                self.lock().state = "ok";
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Tells the failure and pauses dispatching (once per pause: the other
    /// workers' failures of the same outage do not double it again).
    fn failed(&mut self, e: &str) {
        self.up.failed(e);
        if self.paused_until.is_none() {
            self.backoff = (self.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
            self.paused_until = Some(Instant::now() + self.backoff);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.up.lock()
    }

    fn refresh_backlog(&self) {
        match self.db.replicate_backlog() {
            Ok(Backlog { segments, bytes, oldest_pending_ms, events, .. }) => {
                let mut s = self.lock();
                (s.backlog_segments, s.backlog_bytes, s.oldest_pending_ms) = (segments, bytes, oldest_pending_ms);
                s.backlog_events = events;
            }
            Err(e) => log::warn!("replicate: backlog: {e}"),
        }
    }
}

impl Uploader {
    /// Uploads an ended event's snapshot and sidecar (nothing if the picture is gone).
    fn send_event(&self, ev: &EventUpload) -> Result<(), String> {
        let path = self.data_dir.join(&ev.snapshot);
        match std::fs::read(&path) {
            Ok(jpeg) => self.upload_event(ev, &jpeg),
            // Retention took it, or it was never written (disk full): nothing to send.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!("replicate: event {}: no snapshot at {}; nothing to upload", ev.id, path.display());
                Ok(())
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn upload_event(&self, ev: &EventUpload, jpeg: &[u8]) -> Result<(), String> {
        let day = crate::base::clock::rfc3339(ev.start_ms);
        let key = format!("{}.events/{}/{}/{}.jpg", self.base, ev.stream, &day[..10.min(day.len())], ev.id);
        let sha = sha256(jpeg);
        self.bucket.put(&key, Body::Bytes(jpeg), &sha, "image/jpeg", self.clock.now_ms()).map_err(|e| e.to_string())?;
        let zones: Value = serde_json::from_str(&ev.zones).unwrap_or_else(|_| json!([]));
        let side = json!({
            "format": 1, "type": "event", "box": self.box_name, "stream": ev.stream, "id": ev.id,
            "kind": ev.kind, "label": ev.label, "score": ev.score, "zones": zones,
            "start_ms": ev.start_ms, "end_ms": ev.end_ms, "sha256": sigv4::hex(&sha),
        });
        self.put_json(&format!("{key}.json"), &side)
    }

    /// Puts a sidecar.
    fn put_json(&self, key: &str, v: &Value) -> Result<(), String> {
        let text = v.to_string();
        let sha = sha256(text.as_bytes());
        self.bucket
            .put(key, Body::Bytes(text.as_bytes()), &sha, "application/json", self.clock.now_ms())
            .map_err(|e| e.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, e: &str) {
        log::warn!("replicate: {e}");
        let mut s = self.lock();
        s.state = "failing";
        s.last_error = Some(e.to_string());
        s.last_error_ms = Some(self.clock.now_ms());
    }

    /// Aborts the bucket's open multipart uploads of this box the queue does
    /// not know (left by a segment deleted mid-upload, or a lost row).
    fn sweep(&self, db: &Db) -> Result<(), String> {
        let known = db.replicate_upload_ids().map_err(|e| e.to_string())?;
        let open = self.bucket.list_multipart(&self.base, self.clock.now_ms()).map_err(|e| e.to_string())?;
        for (key, id) in open.iter().filter(|(_, id)| !known.contains(id)) {
            self.bucket.abort_multipart(key, id, self.clock.now_ms()).map_err(|e| e.to_string())?;
            log::info!("replicate: aborted a multipart upload of {key} no segment waits for");
        }
        Ok(())
    }

    /// The object name of a segment path (`recordings/<stream>/<date>/<file>`).
    fn key(&self, path: &str) -> String {
        format!("{}{}", self.base, path.strip_prefix("recordings/").unwrap_or(path))
    }

    fn upload(&self, db: &Db, job: &UploadJob) -> Result<(), String> {
        let seg = &job.segment;
        let key = self.key(&seg.path);
        let path = self.data_dir.join(&seg.path);
        let mut file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        if len < seg.bytes {
            return Err(format!("{}: {len} bytes on disk, the index says {}", path.display(), seg.bytes));
        }
        let sha = self.hash(&mut file, 0, seg.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if seg.bytes < self.threshold {
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            let mut r = self.throttled(&mut file, seg.bytes);
            self.bucket.put(&key, Body::Reader(&mut r, seg.bytes), &sha, "video/mp4", self.clock.now_ms())
        } else {
            self.multipart(db, job, &key, &mut file)
        }
        .map_err(|e| e.to_string())?;
        self.put_json(&format!("{key}.json"), &sidecar(job, &self.box_name, &sha))
    }

    /// Uploads the parts not yet acknowledged, recording each, then completes.
    fn multipart(&self, db: &Db, job: &UploadJob, key: &str, file: &mut File) -> Result<(), S3Error> {
        let id = job.segment.id;
        let dbe = |e: crate::index::db::DbError| S3Error::Failed(e.to_string());
        let (upload_id, mut parts) = match &job.upload_id {
            Some(u) => (u.clone(), job.parts.clone()),
            None => {
                let u = self.bucket.create_multipart(key, "video/mp4", self.clock.now_ms())?;
                db.replicate_progress(id, Some(&u), &[]).map_err(dbe)?;
                (u, Vec::new())
            }
        };
        let total = job.segment.bytes;
        let count = total.div_ceil(self.part_size).max(1);
        let result = (|| {
            for n in 1..=count {
                let n = u32::try_from(n).map_err(|_| S3Error::Failed(format!("{key}: too many parts")))?;
                if parts.iter().any(|(p, _)| *p == n) {
                    continue;
                }
                if self.stop.is_triggered() {
                    return Err(S3Error::Failed("stopping".into()));
                }
                let start = u64::from(n - 1) * self.part_size;
                let len = self.part_size.min(total - start);
                let sha = self.hash(file, start, len).map_err(|e| S3Error::Failed(format!("{key}: {e}")))?;
                file.seek(SeekFrom::Start(start)).map_err(|e| S3Error::Failed(format!("{key}: {e}")))?;
                let mut r = self.throttled(file, len);
                let etag = self.bucket.upload_part(
                    key,
                    &upload_id,
                    n,
                    Body::Reader(&mut r, len),
                    &sha,
                    self.clock.now_ms(),
                )?;
                parts.push((n, etag));
                db.replicate_progress(id, Some(&upload_id), &parts).map_err(dbe)?;
            }
            parts.sort_by_key(|(n, _)| *n);
            self.bucket.complete_multipart(key, &upload_id, &parts, self.clock.now_ms())
        })();
        if let Err(S3Error::Gone(_)) = &result {
            // The bucket forgot the upload: start again from part 1 next time.
            db.replicate_progress(id, None, &[]).map_err(dbe)?;
        }
        result
    }

    /// SHA-256 of `len` bytes of `file` from `start`.
    fn hash(&self, file: &mut File, start: u64, len: u64) -> io::Result<[u8; 32]> {
        file.seek(SeekFrom::Start(start))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut r = file.take(len);
        let mut got = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n as u64;
            ctx.update(&buf[..n]);
        }
        if got < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{got} of {len} bytes read")));
        }
        Ok(ctx.finish().as_ref().try_into().unwrap_or([0; 32]))
    }

    fn throttled<'a>(&'a self, file: &'a mut File, len: u64) -> Throttle<'a, io::Take<&'a mut File>> {
        Throttle { inner: file.take(len), limit: &self.limit, stop: &self.stop }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().unwrap_or([0; 32])
}

/// Backoff of a segment's own next attempt after `attempts` failures.
fn backoff_for(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(5)).min(MAX_BACKOFF)
}

/// The upload rate limit all workers share: each read books its bytes on
/// one schedule and sleeps until its slot (idle time is not saved up).
struct Limiter {
    bytes_per_s: u64,
    /// When the bytes booked so far will have gone at the limit.
    free_at: Mutex<Option<Instant>>,
}

impl Limiter {
    fn new(bytes_per_s: u64) -> Limiter {
        Limiter { bytes_per_s, free_at: Mutex::new(None) }
    }

    /// How long to wait before `n` bytes may go (zero without a limit).
    fn book(&self, n: usize) -> Duration {
        if self.bytes_per_s == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let from = free_at.map_or(now, |t| t.max(now));
        let end = from + Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64);
        *free_at = Some(end);
        end - now
    }
}

/// A reader that keeps to the shared limit and ends with an error when
/// the uploader is told to stop.
struct Throttle<'a, R> {
    inner: R,
    limit: &'a Limiter,
    stop: &'a Shutdown,
}

impl<R: Read> Read for Throttle<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_triggered() {
            return Err(io::Error::other("stopping"));
        }
        let want = if self.limit.bytes_per_s == 0 { buf.len() } else { buf.len().min(16 << 10) };
        let n = self.inner.read(&mut buf[..want])?;
        let wait = self.limit.book(n);
        if !wait.is_zero() && self.stop.wait_timeout(wait) {
            return Err(io::Error::other("stopping"));
        }
        Ok(n)
    }
}

/// The sidecar: everything the bucket alone needs to index the segment.
pub fn sidecar(job: &UploadJob, box_name: &str, sha256: &[u8; 32]) -> Value {
    let s = &job.segment;
    let fragments: Vec<Value> = s
        .fragments
        .iter()
        .map(|f| {
            json!({"offset": f.offset, "size": f.size, "start_ticks": f.start_ticks,
                   "duration_ticks": f.duration_ticks, "frames": f.frames, "key": f.key})
        })
        .collect();
    json!({
        "format": 1,
        "box": box_name,
        "stream": job.stream,
        "path": s.path,
        "start_ms": s.start_ms,
        "end_ms": s.end_ms,
        "codec": s.codec,
        "width": s.width,
        "height": s.height,
        "video_timescale": s.video_timescale,
        "init_len": s.init_len,
        "bytes": s.bytes,
        "frames": s.frames,
        "audio_frames": s.audio_frames,
        "has_audio": s.has_audio,
        "protected": s.protected,
        "trigger": s.trigger,
        "sha256": sigv4::hex(sha256),
        "fragments": fragments,
    })
}
