//! Archive mode (`oxinvr archive`): a server with no cameras indexes the
//! bucket boxes replicate into and serves their recordings from it.
//!
//! One named thread (`archive-index`) lists the bucket under `<prefix>/`
//! every `poll_seconds`, page by page (ListObjectsV2 with continuation
//! tokens, `page_keys` per page), reads each sidecar (`<object>.json`) it has
//! not read yet, and adds the segments of a page to its own index (the
//! database at `[archive] index`, schema of `index::db`, one transaction per
//! page). Boxes become stream groups: the stream `cam` of box `b1` is the
//! stream `b1-cam` (see `db::archive`), and `/api/streams` gives each its
//! `archive: {box, stream}`.
//!
//! Playback reads through [`BucketMedia`], a `playback::source::MediaStore`
//! whose sources read objects with Range GETs, one window at a time: the
//! first byte of an export needs the init segments (cached) and one window,
//! never a whole object.
//!
//! Invariants:
//! - A sidecar exists only for a complete object (`replicate`), so an
//!   indexed segment is playable once its sidecar is listed; a sidecar that
//!   is malformed (not JSON, a field missing or out of range, offsets past
//!   the object) is skipped with a warning naming its key, remembered as
//!   skipped, never a panic; it is read again only if its size changes.
//! - A listing or sidecar that fails (network, 5xx) ends the poll without
//!   writing that page; the next poll starts again from the first page.
//! - Only a poll that listed every page, the last one saying so
//!   (`IsTruncated` false), prunes: a segment whose sidecar is no longer
//!   listed (the bucket's lifecycle rules deleted it) leaves the index, so
//!   the archive never offers what it cannot play. A listing that merely
//!   stopped (a missing or repeated token, an answer that is no listing)
//!   prunes nothing.
//! - Every request has the deadlines of `replicate::s3` (connect, each read
//!   and write); a window is at most [`WINDOW`] bytes.
//! - The sidecars of a page are read by up to [`FETCHERS`] short-lived named
//!   threads (`archive-get-N`), joined before the page is written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::base::clock::Clock;
use crate::base::shutdown::Shutdown;
use crate::config::ArchiveConfig;
use crate::index::db::{ArchivedSegment, Db};
use crate::index::fragments::FragmentEntry;
use crate::playback::source::{MediaSource, MediaStore};
use crate::replicate::s3::Bucket;

/// Largest Range GET of a media read.
pub const WINDOW: u64 = 1 << 20;
/// Largest sidecar believed.
const MAX_SIDECAR: u64 = 4 << 20;
/// Sidecars read at once (threads per listing page).
const FETCHERS: usize = 8;
/// Init segments kept in memory (a few hundred bytes each).
const INIT_CACHE: usize = 4096;

/// What `/api/system` shows of the archive.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// `starting`, `ok` or `failing`.
    pub state: &'static str,
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub polls: u64,
    pub last_poll_ms: Option<i64>,
    /// How long the last complete poll took.
    pub last_poll_duration_ms: Option<u64>,
    /// Segments added to the index since start.
    pub segments: u64,
    /// Sidecars skipped as malformed since start.
    pub skipped: u64,
    /// Segments dropped from the index since start: their sidecar left the bucket.
    pub pruned: u64,
    /// Segments in the index now (every box), as of the last complete poll.
    pub indexed: u64,
    pub last_error: Option<String>,
}

/// The running archive: its index thread's status and the bucket it reads.
pub struct Archive {
    status: Arc<Mutex<Status>>,
    /// Stream name -> (box, stream).
    origins: Arc<Mutex<HashMap<String, (String, String)>>>,
    media: Arc<BucketMedia>,
    stop: Shutdown,
}

impl Archive {
    pub fn status_json(&self) -> Value {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::to_value(s).unwrap_or(Value::Null)
    }

    /// The (box, stream) an archived stream comes from.
    pub fn origin(&self, stream: &str) -> Option<(String, String)> {
        self.origins.lock().unwrap_or_else(|p| p.into_inner()).get(stream).cloned()
    }

    /// Where playback reads the archived objects.
    pub fn media(&self) -> Arc<BucketMedia> {
        self.media.clone()
    }

    /// Asks the index thread to stop (it ends within a request's deadline).
    pub fn stop(&self) {
        self.stop.trigger();
    }
}

/// The bucket of `cfg`.
pub fn bucket(cfg: &ArchiveConfig) -> Result<Bucket, String> {
    let creds = cfg.credentials().map_err(|(k, m)| format!("{k}: {m}"))?;
    Bucket::from_config("archive", &cfg.endpoint, &cfg.bucket, &cfg.region, creds, &cfg.ca_file)
}

/// Starts the `archive-index` thread on the index at `db_path`.
pub fn start(cfg: &ArchiveConfig, db_path: &Path, clock: Arc<dyn Clock>) -> Result<Archive, String> {
    let bucket = bucket(cfg)?;
    let prefix = cfg.prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    let status = Arc::new(Mutex::new(Status {
        state: "starting",
        endpoint: cfg.endpoint.clone(),
        bucket: cfg.bucket.clone(),
        prefix: prefix.clone(),
        ..Status::default()
    }));
    let db = Db::open(db_path).map_err(|e| format!("archive: {e}"))?;
    let origins: HashMap<String, (String, String)> = db
        .archive_streams()
        .map_err(|e| format!("archive: {e}"))?
        .into_iter()
        .map(|a| (a.name, (a.box_name, a.stream)))
        .collect();
    let origins = Arc::new(Mutex::new(origins));
    let stop = Shutdown::new();
    let media = Arc::new(BucketMedia { bucket: bucket.clone(), clock: clock.clone(), inits: Mutex::default() });
    let indexer = Indexer {
        bucket,
        prefix,
        page_keys: cfg.page_keys.max(1),
        poll: Duration::from_secs(u64::from(cfg.poll_seconds.max(1))),
        clock,
        status: status.clone(),
        origins: origins.clone(),
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("archive-index".into())
        .spawn(move || {
            crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Replicate);
            indexer.run(&db);
        })
        .map_err(|e| format!("archive-index thread: {e}"))?;
    log::info!("archive: indexing {} bucket {} under {:?}", cfg.endpoint, cfg.bucket, cfg.prefix);
    Ok(Archive { status, origins, media, stop })
}

/// The sidecar keys of a listing page.
fn page_keys(objects: &[(String, u64)]) -> impl Iterator<Item = String> + '_ {
    objects.iter().filter(|(k, _)| k.ends_with(".mp4.json")).map(|(k, _)| k.clone())
}

/// What the thread needs.
struct Indexer {
    bucket: Bucket,
    /// `<prefix>/` or empty.
    prefix: String,
    page_keys: u32,
    poll: Duration,
    clock: Arc<dyn Clock>,
    status: Arc<Mutex<Status>>,
    origins: Arc<Mutex<HashMap<String, (String, String)>>>,
    stop: Shutdown,
}

/// A listing page's result, ready for one transaction.
#[derive(Default)]
struct Page {
    segments: Vec<(ArchivedSegment, String, u64)>,
    skipped: Vec<(String, u64, String)>,
}

impl Indexer {
    fn run(&self, db: &Db) {
        let mut seen = match db.archive_seen() {
            Ok(s) => s,
            Err(e) => {
                log::error!("archive: cannot read the index: {e}");
                self.lock().state = "failing";
                return;
            }
        };
        while !self.stop.is_triggered() {
            let began = Instant::now();
            match self.poll_once(db, &mut seen) {
                Ok(()) => {
                    let mut s = self.lock();
                    (s.state, s.last_error) = ("ok", None);
                    s.polls += 1;
                    s.last_poll_ms = Some(self.clock.now_ms());
                    s.last_poll_duration_ms = Some(began.elapsed().as_millis() as u64);
                }
                Err(e) => {
                    log::warn!("archive: {e}");
                    let mut s = self.lock();
                    (s.state, s.last_error) = ("failing", Some(e));
                }
            }
            if self.stop.wait_timeout(self.poll) {
                break;
            }
        }
        log::info!("archive: index thread stopped");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists every page, indexes the sidecars not seen yet and prunes the
    /// ones no longer listed.
    fn poll_once(&self, db: &Db, seen: &mut HashMap<String, u64>) -> Result<(), String> {
        let mut token: Option<String> = None;
        let mut listed_keys: HashSet<String> = HashSet::new();
        loop {
            if self.stop.is_triggered() {
                return Ok(());
            }
            let listed = self
                .bucket
                .list_page(&self.prefix, token.as_deref(), self.page_keys, self.clock.now_ms())
                .map_err(|e| format!("listing {:?}: {e}", self.prefix))?;
            listed_keys.extend(page_keys(&listed.objects));
            let page = self.read_page(db, &listed.objects, seen)?;
            if !page.segments.is_empty() || !page.skipped.is_empty() {
                let new = db
                    .archive_add(&page.segments, &page.skipped, self.clock.now_ms())
                    .map_err(|e| format!("index: {e}"))?;
                for (_, key, size) in &page.segments {
                    seen.insert(key.clone(), *size);
                }
                for (key, size, _) in &page.skipped {
                    seen.insert(key.clone(), *size);
                }
                let mut s = self.lock();
                s.segments += new as u64;
                s.skipped += page.skipped.len() as u64;
            }
            match listed.next {
                Some(t) => token = Some(t),
                None if listed.complete => return self.prune(db, seen, &listed_keys),
                None => {
                    log::warn!("archive: the bucket's listing ended without saying it was complete; nothing pruned");
                    return Ok(());
                }
            }
        }
    }

    /// Drops what a complete listing no longer has.
    fn prune(&self, db: &Db, seen: &mut HashMap<String, u64>, listed: &HashSet<String>) -> Result<(), String> {
        let gone: Vec<String> = seen.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        if !gone.is_empty() {
            let n = db.archive_prune(&gone).map_err(|e| format!("index: {e}"))?;
            for k in &gone {
                seen.remove(k);
            }
            log::info!("archive: {n} segments left the index: their sidecars are no longer in the bucket");
            self.lock().pruned += n as u64;
        }
        let indexed = db.archive_segment_count().map_err(|e| format!("index: {e}"))?;
        self.lock().indexed = indexed;
        Ok(())
    }

    /// Reads the new sidecars of one listing page.
    fn read_page(&self, db: &Db, objects: &[(String, u64)], seen: &HashMap<String, u64>) -> Result<Page, String> {
        let new: Vec<&(String, u64)> =
            objects.iter().filter(|(k, n)| k.ends_with(".mp4.json") && seen.get(k) != Some(n)).collect();
        let bodies = self.fetch(&new)?;
        let mut page = Page::default();
        for ((key, size), body) in new.into_iter().zip(bodies) {
            match parse_sidecar(key, &body) {
                Ok(side) => match self.segment(db, key, side) {
                    Ok(seg) => page.segments.push((seg, key.clone(), *size)),
                    Err(why) => self.skip(&mut page, key, *size, why),
                },
                Err(why) => self.skip(&mut page, key, *size, why),
            }
        }
        Ok(page)
    }

    /// GETs the sidecars `keys`, [`FETCHERS`] at a time (`archive-get-N`
    /// threads of this page), bodies in the order of `keys`.
    fn fetch(&self, keys: &[&(String, u64)]) -> Result<Vec<Vec<u8>>, String> {
        let per = keys.len().div_ceil(FETCHERS).max(1);
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for (i, chunk) in keys.chunks(per).enumerate() {
                let get = move || -> Result<Vec<Vec<u8>>, String> {
                    let one = |k: &str| self.bucket.get(k, MAX_SIDECAR, self.clock.now_ms());
                    chunk.iter().map(|(k, _)| one(k).map_err(|e| format!("{k}: {e}"))).collect()
                };
                let t = std::thread::Builder::new()
                    .name(format!("archive-get-{i}"))
                    .spawn_scoped(s, get)
                    .map_err(|e| format!("archive-get thread: {e}"))?;
                workers.push(t);
            }
            let mut out = Vec::with_capacity(keys.len());
            for w in workers {
                out.extend(w.join().map_err(|_| "a sidecar reader panicked".to_string())??);
            }
            Ok(out)
        })
    }

    fn skip(&self, page: &mut Page, key: &str, size: u64, why: String) {
        log::warn!("archive: sidecar {key} skipped: {why}");
        page.skipped.push((key.to_string(), size, why));
    }

    /// The segment a valid sidecar describes, its stream made if new.
    fn segment(&self, db: &Db, key: &str, side: Sidecar) -> Result<ArchivedSegment, String> {
        let stream = db.archive_stream(&side.box_name, &side.stream, self.clock.now_ms()).map_err(|e| e.to_string())?;
        self.origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.name.clone(), (stream.box_name.clone(), stream.stream.clone()));
        let object = key.strip_suffix(".json").unwrap_or(key).to_string();
        Ok(ArchivedSegment {
            stream_id: stream.stream_id,
            key: object,
            start_ms: side.start_ms,
            end_ms: side.end_ms,
            bytes: side.bytes,
            frames: side.frames,
            audio_frames: side.audio_frames,
            codec: side.codec,
            width: side.width,
            height: side.height,
            video_timescale: side.video_timescale,
            init_len: side.init_len,
            has_audio: side.has_audio,
            protected: side.protected,
            trigger: side.trigger,
            fragments: side.fragments.into_iter().map(FragmentEntry::from).collect(),
        })
    }
}

/// A sidecar as `replicate::sidecar` writes it (format 1); unknown fields
/// are allowed (a newer box may add some).
#[derive(Debug, Deserialize)]
pub struct Sidecar {
    pub format: u32,
    #[serde(rename = "box")]
    pub box_name: String,
    pub stream: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub video_timescale: u32,
    pub init_len: u64,
    pub bytes: u64,
    pub frames: u64,
    #[serde(default)]
    pub audio_frames: u64,
    #[serde(default)]
    pub has_audio: bool,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub trigger: String,
    pub sha256: String,
    pub fragments: Vec<SidecarFragment>,
}

#[derive(Debug, Deserialize)]
pub struct SidecarFragment {
    pub offset: u64,
    pub size: u32,
    pub start_ticks: u64,
    pub duration_ticks: u32,
    pub frames: u32,
    pub key: bool,
}

impl From<SidecarFragment> for FragmentEntry {
    fn from(f: SidecarFragment) -> FragmentEntry {
        FragmentEntry {
            offset: f.offset,
            size: f.size,
            start_ticks: f.start_ticks,
            duration_ticks: f.duration_ticks,
            frames: f.frames,
            key: f.key,
        }
    }
}

/// Parses and checks the sidecar at `key`: why not, if it cannot be indexed.
pub fn parse_sidecar(key: &str, body: &[u8]) -> Result<Sidecar, String> {
    let s: Sidecar = serde_json::from_slice(body).map_err(|e| format!("not a sidecar: {e}"))?;
    let object = key.strip_suffix(".json").unwrap_or(key);
    let checks: [(bool, &str); 9] = [
        (s.format == 1, "format is not 1"),
        (!s.box_name.is_empty() && !s.stream.is_empty(), "box or stream is empty"),
        (crate::index::db::is_safe_relative_path(object), "the object name is not a plain relative path"),
        (s.end_ms >= s.start_ms, "end_ms is before start_ms"),
        (s.video_timescale > 0, "video_timescale is 0"),
        (s.init_len > 0 && s.init_len <= s.bytes, "init_len is 0 or past the object's bytes"),
        (!s.fragments.is_empty(), "no fragment index"),
        (
            s.fragments.iter().all(|f| {
                f.size > 0
                    && f.offset >= s.init_len
                    && f.offset.checked_add(u64::from(f.size)).is_some_and(|e| e <= s.bytes)
            }),
            "a fragment lies outside the object",
        ),
        (s.sha256.len() == 64, "sha256 is not 64 hex digits"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err((*why).to_string()),
        None => Ok(s),
    }
}

/// Objects of the bucket as playback media, read with Range GETs.
pub struct BucketMedia {
    bucket: Bucket,
    clock: Arc<dyn Clock>,
    /// Init segments by object name, oldest first out.
    inits: Mutex<VecDeque<(String, Vec<u8>)>>,
}

/// An open object: one window of it in memory.
struct BucketObject {
    bucket: Bucket,
    clock: Arc<dyn Clock>,
    key: String,
    len: u64,
    window: (u64, Vec<u8>),
}

impl MediaSource for BucketObject {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (start, data) = &self.window;
        let inside = offset >= *start && offset < start + data.len() as u64;
        if !inside {
            let n = WINDOW.min(self.len - offset);
            let data = self.bucket.get_range(&self.key, offset, n, self.clock.now_ms()).map_err(io::Error::other)?;
            self.window = (offset, data);
        }
        let (start, data) = &self.window;
        let from = usize::try_from(offset - start).map_err(io::Error::other)?;
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }
}

impl MediaStore for BucketMedia {
    fn open(&self, name: &Path, len: u64) -> io::Result<Box<dyn MediaSource>> {
        let key = name.to_str().ok_or_else(|| io::Error::other("object name is not UTF-8"))?.to_string();
        Ok(Box::new(BucketObject {
            bucket: self.bucket.clone(),
            clock: self.clock.clone(),
            key,
            len,
            window: (0, Vec::new()),
        }))
    }

    fn stored_len(&self, _name: &Path) -> io::Result<Option<u64>> {
        Ok(None)
    }

    fn head(&self, name: &Path, len: u64) -> io::Result<Vec<u8>> {
        let key = name.to_str().ok_or_else(|| io::Error::other("object name is not UTF-8"))?;
        let mut cache = self.inits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, init)) = cache.iter().find(|(k, i)| k == key && i.len() as u64 == len) {
            return Ok(init.clone());
        }
        drop(cache);
        let init = self.bucket.get_range(key, 0, len, self.clock.now_ms()).map_err(io::Error::other)?;
        cache = self.inits.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= INIT_CACHE {
            cache.pop_front();
        }
        cache.push_back((key.to_string(), init.clone()));
        Ok(init)
    }

    /// Cached ones from memory, the others with up to [`FETCHERS`] Range
    /// GETs at once (`archive-init-N` threads): an export of many segments
    /// does not wait for one GET after another before its first byte.
    fn heads(&self, names: &[(&Path, u64)]) -> Vec<io::Result<Vec<u8>>> {
        let per = names.len().div_ceil(FETCHERS).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = names
                .chunks(per)
                .enumerate()
                .map(|(i, chunk)| {
                    let read = move || chunk.iter().map(|(n, len)| self.head(n, *len)).collect::<Vec<_>>();
                    std::thread::Builder::new().name(format!("archive-init-{i}")).spawn_scoped(s, read)
                })
                .collect();
            let mut out = Vec::with_capacity(names.len());
            for (w, chunk) in workers.into_iter().zip(names.chunks(per)) {
                match w.map_err(io::Error::other).and_then(|t| t.join().map_err(|_| io::Error::other("panicked"))) {
                    Ok(v) => out.extend(v),
                    Err(e) => out.extend(chunk.iter().map(|_| Err(io::Error::new(e.kind(), e.to_string())))),
                }
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(fragments: &str) -> String {
        format!(
            r#"{{"format":1,"box":"b1","stream":"cam","path":"recordings/cam/x.mp4","start_ms":1000,"end_ms":3000,
               "codec":"avc1.64001f","width":640,"height":480,"video_timescale":90000,"init_len":100,"bytes":600,
               "frames":60,"audio_frames":0,"has_audio":false,"protected":false,"trigger":"continuous",
               "sha256":"{}","fragments":[{fragments}],"new_field":1}}"#,
            "0".repeat(64)
        )
    }

    #[test]
    fn sidecars_are_checked_and_malformed_ones_say_why() {
        let good = r#"{"offset":100,"size":500,"start_ticks":0,"duration_ticks":180000,"frames":60,"key":true}"#;
        let s = parse_sidecar("p/b1/cam/d/1000.mp4.json", sidecar(good).as_bytes()).expect("valid");
        assert_eq!((s.box_name.as_str(), s.fragments.len()), ("b1", 1));
        let past = good.replace("\"size\":500", "\"size\":501");
        let e = parse_sidecar("k.mp4.json", sidecar(&past).as_bytes()).expect_err("past the end");
        assert!(e.contains("outside"), "{e}");
        assert!(parse_sidecar("k.mp4.json", sidecar("").as_bytes()).expect_err("empty").contains("fragment"));
        assert!(parse_sidecar("k.mp4.json", b"{not json").expect_err("json").starts_with("not a sidecar"));
        assert!(parse_sidecar("k.mp4.json", b"[]").is_err());
        assert!(parse_sidecar("../k.mp4.json", sidecar(good).as_bytes()).is_err(), "unsafe name");
    }
}
