//! Segment writer: turns one stream's ring records into fragmented MP4 files
//! and keeps their rows current. Runs on the storage thread; one per stream.
//!
//! Invariants (see docs/ARCHITECTURE.md):
//! - A segment starts on a video keyframe of a run and holds one run only.
//! - Fragments are built by `fragmenter` ([`Cut::Gop`]: cut at the first
//!   keyframe after 1 s, forced after 4 s, one timeline from 0 per file); each
//!   is written with one vectored write.
//! - The file is fdatasync'ed at most every `sync_interval` and on close, and
//!   only then does the row's `bytes` move forward: a row never claims bytes
//!   that were not synced, so a power cut loses at most `sync_interval`.
//! - A failed sync is retried after rewriting the unsynced range; a segment
//!   whose close cannot be synced is closed at its last synced point, never
//!   left `open`.
//! - A failed write truncates the file back to its last complete fragment and
//!   closes the segment; the recording goes on in a new one. A segment that
//!   cannot start (disk full, read-only, I/O error) leaves no file and no row,
//!   and is tried again at each keyframe; `failing` says why until it starts.
//! - A row update that fails (the database's disk is full or gone) is kept
//!   and retried at every tick until it succeeds or the writer is dropped: a
//!   segment's final state (closed, its last synced size) is not forgotten
//!   because the disk refused it once.
//! - A segment of a run of unknown time (the wall clock was untrusted when it
//!   began) gets wall times if the clock is trusted by the time the segment
//!   starts (provisional + the measured step), else it is `time_unknown` and
//!   keeps provisional times until `restamp`. A gap is recorded only between
//!   two times on the same timeline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::clock::Clock;
use crate::base::fs::{sync_dir, sync_range, SyncFn};
use crate::base::metrics::Histogram;
use crate::index::db::{Db, DbError, NewSegment, SegmentProgress};
use crate::recording::fragmenter::{Cut, Fragment, Fragmenter};
use crate::recording::media::{FragmentEntry, RunStart, Track};
use crate::recording::mp4;

/// A hole longer than this between two segments is recorded as a gap.
const GAP_MIN_MS: i64 = 1000;

#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub data_dir: PathBuf,
    pub segment_seconds: u32,
    pub sync_interval: Duration,
    /// How data is made durable (`base::fs::fdatasync`; tests inject failures).
    pub sync: SyncFn,
}

/// How long each segment fdatasync took (with its retries), every stream's:
/// `oxinvr_storage_fsync_duration_seconds` of `GET /api/metrics`.
pub static FSYNC_SECONDS: Histogram = Histogram::new();

/// Syncs tried when a segment closes before it is closed short (see `sync`).
const CLOSE_SYNC_ATTEMPTS: u32 = 3;

/// Why the current segment ended (used as the gap reason if one follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Rotation,
    NewRun,
    Gap,
    WriteError,
    Shutdown,
    /// Events mode: `post_seconds` after the last event.
    EventsOver,
    /// The schedule turned recording off.
    ScheduleOff,
}

impl CloseReason {
    fn gap_reason(self) -> &'static str {
        match self {
            CloseReason::Rotation => "rotation",
            CloseReason::NewRun => "camera reconnected or changed parameters",
            CloseReason::Gap => "recording fell behind the ring",
            CloseReason::WriteError => "write error",
            CloseReason::Shutdown => "recorder stopped",
            CloseReason::EventsOver => "no event (events mode)",
            CloseReason::ScheduleOff => "off by the schedule",
        }
    }
}

struct OpenSegment {
    id: i64,
    file: File,
    start_pts: i64,
    start_ms: i64,
    /// `start_ms` is provisional (the row is `time_unknown`).
    time_unknown: bool,
    init_len: u64,
    bytes: u64,
    synced_bytes: u64,
    frames: u64,
    audio_frames: u64,
    fragments: Vec<FragmentEntry>,
    /// The file's timeline and the fragment being gathered (tfdt from 0 per file).
    frag: Fragmenter,
    last_sync: Instant,
    /// The row as of the last successful sync (what is known to be on disk).
    synced: Synced,
    /// The last sync failed: the next one writes the unsynced range again first.
    sync_failed: bool,
}

/// What the row says after the last successful sync.
#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    end_ms: i64,
    frames: u64,
    audio_frames: u64,
    fragments: usize,
}

/// Counters the storage thread reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterStats {
    pub bytes_written: u64,
    pub fragments: u64,
    pub segments: u64,
    pub dropped_frames: u64,
    pub write_errors: u64,
}

pub struct SegmentWriter {
    stream_id: i64,
    name: String,
    cfg: WriterConfig,
    clock: Arc<dyn Clock>,
    run: Option<RunStart>,
    init: Vec<u8>,
    need_key: bool,
    open: Option<OpenSegment>,
    /// End of the last segment, and whether it is provisional.
    last_end_ms: Option<(i64, bool)>,
    last_close: CloseReason,
    /// Rows of unknown time were written since the last `take_wrote_unknown`.
    wrote_unknown: bool,
    pub stats: WriterStats,
    pub last_error: Option<String>,
    /// Why the last write, sync or segment start failed, until one succeeds:
    /// recording of this stream is paused (it resumes by itself at the next
    /// keyframe the disk accepts).
    pub failing: Option<String>,
    /// Row updates the database refused, oldest first, retried at each tick.
    unsaved: Vec<(i64, SegmentProgress)>,
    /// What made the segments it opens (`"continuous"`, `"event"`): the row's `trigger`.
    pub trigger: &'static str,
}

impl SegmentWriter {
    pub fn new(stream_id: i64, name: &str, cfg: WriterConfig, clock: Arc<dyn Clock>) -> Self {
        SegmentWriter {
            stream_id,
            name: name.to_string(),
            cfg,
            clock,
            run: None,
            init: Vec::new(),
            need_key: true,
            open: None,
            last_end_ms: None,
            last_close: CloseReason::Shutdown,
            wrote_unknown: false,
            stats: WriterStats::default(),
            last_error: None,
            failing: None,
            unsaved: Vec::new(),
            trigger: "continuous",
        }
    }

    /// Wall time of a video pts of the current run (`None` before any run).
    pub fn wall_ms(&self, pts: i64) -> Option<i64> {
        self.run.as_ref().map(|r| r.wall_ms(pts))
    }

    /// A new run: the current segment ends; the next starts at its first keyframe.
    pub fn on_run(&mut self, db: &Db, run: RunStart) {
        self.close(db, CloseReason::NewRun);
        self.init = mp4::init_segment(&run);
        self.run = Some(run);
        self.need_key = true;
    }

    /// Frames were lost (the ring overwrote them): end the segment cleanly.
    pub fn on_gap(&mut self, db: &Db) {
        self.close(db, CloseReason::Gap);
        self.need_key = true;
    }

    pub fn on_frame(&mut self, db: &Db, track: Track, key: bool, pts: i64, data: &[u8]) {
        match track {
            Track::Video => self.on_video(db, key, pts, data),
            Track::Audio => self.on_audio(pts, data),
        }
    }

    fn on_video(&mut self, db: &Db, key: bool, pts: i64, data: &[u8]) {
        let Some(run) = &self.run else {
            self.stats.dropped_frames += 1;
            return;
        };
        let timescale = i64::from(run.video.timescale.max(1));
        if self.open.as_ref().is_some_and(|o| o.frag.cuts_before(key, pts)) {
            self.flush_fragment(db, Some(pts));
            let rotate = self
                .open
                .as_ref()
                .is_some_and(|o| key && pts - o.start_pts >= i64::from(self.cfg.segment_seconds) * timescale);
            if rotate {
                self.close(db, CloseReason::Rotation);
            }
        }
        if self.open.is_none() {
            if !key {
                self.stats.dropped_frames += 1;
                return;
            }
            if let Err(e) = self.open_segment(db, pts) {
                self.fail(format!("cannot start a segment: {e}"));
                self.stats.dropped_frames += 1;
                return;
            }
        }
        self.need_key = false;
        if let Some(o) = &mut self.open {
            o.frag.push_video(key, pts, data);
        }
    }

    /// Audio joins only a fragment that already has video (the fragmenter drops the rest).
    fn on_audio(&mut self, pts: i64, data: &[u8]) {
        if let Some(o) = &mut self.open {
            o.frag.push_audio(pts, data);
        }
    }

    /// Periodic work: retry refused row updates, sync if due.
    pub fn tick(&mut self, db: &Db) {
        self.retry_unsaved(db);
        if let Some(o) = &self.open {
            if o.bytes > o.synced_bytes && o.last_sync.elapsed() >= self.cfg.sync_interval {
                self.sync(db, false);
            }
        }
    }

    /// Ends the current segment (flushing what is pending) for `reason`.
    pub fn close(&mut self, db: &Db, reason: CloseReason) {
        self.retry_unsaved(db);
        self.flush_fragment(db, None);
        let Some(o) = &self.open else { return };
        if o.fragments.is_empty() {
            let id = o.id;
            self.open = None;
            discard_segment(db, id, &self.cfg.data_dir);
        } else {
            self.sync(db, true);
            if let Some(o) = self.open.take() {
                let end = if o.sync_failed { o.synced.end_ms } else { end_ms(&o, self.run.as_ref()) };
                self.last_end_ms = Some((end, o.time_unknown));
                self.stats.segments += 1;
            }
        }
        self.last_close = reason;
    }

    fn open_segment(&mut self, db: &Db, pts: i64) -> io::Result<()> {
        let Some(run) = &self.run else { return Err(io::Error::other("no run")) };
        let (start_ms, time_unknown) = match (run.time_unknown, self.clock.step_ms()) {
            (false, _) => (run.wall_ms(pts), false),
            (true, Some(step)) => (run.wall_ms(pts) + step, false),
            (true, None) => (run.wall_ms(pts), true),
        };
        let day = crate::base::clock::rfc3339(start_ms);
        let dir = self.cfg.data_dir.join("recordings").join(&self.name).join(&day[..10.min(day.len())]);
        create_dir_synced(&dir)?;
        let (path, mut file) = create_unique(&dir, start_ms)?;
        let written = file.write_all(&self.init).and_then(|()| (self.cfg.sync)(&file)).and_then(|()| sync_dir(&dir));
        if let Err(e) = written {
            // No row names it yet: a file left here would be an orphan for start-up to adopt.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let rel = path.strip_prefix(&self.cfg.data_dir).unwrap_or(&path).to_string_lossy().into_owned();
        let init_len = self.init.len() as u64;
        let new = NewSegment {
            stream_id: self.stream_id,
            path: rel,
            start_ms,
            codec: run.video.codec.clone(),
            width: run.video.width,
            height: run.video.height,
            video_timescale: run.video.timescale,
            init_len,
            has_audio: run.audio.is_some(),
            trigger: self.trigger.into(),
            time_unknown,
        };
        let id = match db.insert_segment(&new) {
            Ok(id) => id,
            Err(e) => {
                let _ = fs::remove_file(&path);
                let _ = sync_dir(&dir);
                return Err(io::Error::other(e.to_string()));
            }
        };
        self.wrote_unknown |= time_unknown;
        self.failing = None;
        if let Some(prev) = self.last_end_on(time_unknown) {
            if start_ms - prev > GAP_MIN_MS {
                let reason = self.last_close.gap_reason();
                if let Err(e) = db.insert_gap_of(self.stream_id, prev, start_ms, reason, time_unknown) {
                    log::warn!("stream {}: cannot record gap: {e}", self.name);
                }
            }
        }
        log::debug!("stream {}: segment {id} started at {}", self.name, path.display());
        self.open = Some(OpenSegment {
            id,
            file,
            start_pts: pts,
            start_ms,
            time_unknown,
            init_len,
            bytes: init_len,
            synced_bytes: init_len,
            frames: 0,
            audio_frames: 0,
            fragments: Vec::new(),
            frag: Fragmenter::new(run, Cut::Gop),
            last_sync: Instant::now(),
            synced: Synced { end_ms: start_ms, ..Synced::default() },
            sync_failed: false,
        });
        Ok(())
    }

    /// Writes the pending samples as one fragment. `next_pts` is the pts of the
    /// video frame that follows (for the last sample's duration), if known.
    fn flush_fragment(&mut self, db: &Db, next_pts: Option<i64>) {
        let Some(o) = &mut self.open else { return };
        let offset = o.bytes;
        let written = o.frag.finish(next_pts, |f| write_fragment(&mut o.file, f).map(|()| (f.info, f.len() as u64)));
        match written {
            None => {}
            Some(Ok((info, size))) => {
                o.fragments.push(FragmentEntry {
                    offset,
                    size: u32::try_from(size).unwrap_or(u32::MAX),
                    start_ticks: info.video_tfdt,
                    duration_ticks: u32::try_from(info.duration).unwrap_or(u32::MAX),
                    frames: info.frames,
                    key: info.key,
                });
                o.bytes += size;
                o.frames += u64::from(info.frames);
                o.audio_frames += u64::from(info.audio_frames);
                self.stats.bytes_written += size;
                self.stats.fragments += 1;
                self.tick(db);
            }
            Some(Err(e)) => {
                self.stats.write_errors += 1;
                // Cut the torn fragment off so the file stays playable, then end the segment.
                let _ = o.file.set_len(o.bytes);
                self.fail(format!("write failed: {e}"));
                self.close(db, CloseReason::WriteError);
                self.need_key = true;
            }
        }
    }

    /// fdatasync and move the row forward (closing it if `closed`). A failed
    /// sync leaves the row where it was (it never claims unsynced bytes); on
    /// close it is retried, and if the disk still refuses, the segment is
    /// closed at what was synced: never left `open`.
    fn sync(&mut self, db: &Db, closed: bool) {
        let Some(o) = &mut self.open else { return };
        let attempts = if closed { CLOSE_SYNC_ATTEMPTS } else { 1 };
        let began = Instant::now();
        let synced = sync_range(&o.file, o.synced_bytes, o.bytes, attempts, o.sync_failed, self.cfg.sync);
        FSYNC_SECONDS.observe(began.elapsed());
        if let Err(e) = synced {
            o.sync_failed = true;
            self.stats.write_errors += 1;
            if closed {
                self.close_short(db, &e);
            } else {
                self.fail(format!("fdatasync failed (will retry): {e}"));
            }
            return;
        }
        o.sync_failed = false;
        self.failing = None;
        o.synced_bytes = o.bytes;
        o.last_sync = Instant::now();
        let progress = SegmentProgress {
            end_ms: end_ms(o, self.run.as_ref()),
            bytes: o.bytes,
            frames: o.frames,
            audio_frames: o.audio_frames,
            fragments: o.fragments.clone(),
            closed,
        };
        o.synced = Synced {
            end_ms: progress.end_ms,
            frames: o.frames,
            audio_frames: o.audio_frames,
            fragments: o.fragments.len(),
        };
        let id = o.id;
        self.save(db, id, progress);
    }

    /// Writes a segment's row, or keeps the update to retry (a newer one of the
    /// same segment replaces it).
    fn save(&mut self, db: &Db, id: i64, progress: SegmentProgress) {
        self.unsaved.retain(|(i, _)| *i != id);
        if let Err(e) = db.update_segment(id, &progress) {
            self.fail(format!("cannot update segment {id} (retried): {e}"));
            self.unsaved.push((id, progress));
        }
    }

    /// Retries the row updates the database refused, oldest first.
    fn retry_unsaved(&mut self, db: &Db) {
        while let Some((id, p)) = self.unsaved.first() {
            match db.update_segment(*id, p) {
                Ok(()) => {
                    log::info!("stream {}: segment {id}: its row is written after all", self.name);
                    self.unsaved.remove(0);
                }
                // Gone (deleted) or refused for good: retrying cannot help.
                Err(e @ (DbError::NotFound { .. } | DbError::Invalid { .. })) => {
                    log::warn!("stream {}: segment {id}: {e}", self.name);
                    self.unsaved.remove(0);
                }
                Err(_) => return,
            }
        }
    }

    /// Closes the row at its last synced state and cuts the file to match:
    /// the unsynced tail could not be made durable.
    fn close_short(&mut self, db: &Db, err: &io::Error) {
        let Some(o) = &mut self.open else { return };
        let lost_ms = end_ms(o, self.run.as_ref()) - o.synced.end_ms;
        let _ = o.file.set_len(o.synced_bytes);
        o.fragments.truncate(o.synced.fragments);
        let (id, synced) = (o.id, o.synced);
        o.bytes = o.synced_bytes;
        if synced.fragments == 0 {
            self.open = None;
            discard_segment(db, id, &self.cfg.data_dir);
        } else {
            let progress = SegmentProgress {
                end_ms: synced.end_ms,
                bytes: o.synced_bytes,
                frames: synced.frames,
                audio_frames: synced.audio_frames,
                fragments: o.fragments.clone(),
                closed: true,
            };
            self.save(db, id, progress);
        }
        self.fail(format!(
            "fdatasync failed {CLOSE_SYNC_ATTEMPTS} times on close ({err}): segment {id} closed at its last synced point, the last {lost_ms} ms could not be made durable"
        ));
    }

    /// The end of the last segment on the timeline of a new one (provisional
    /// if `time_unknown`), if it can be placed there.
    fn last_end_on(&self, time_unknown: bool) -> Option<i64> {
        let (ms, unknown) = self.last_end_ms?;
        match (unknown, time_unknown) {
            (true, false) => self.clock.step_ms().map(|step| ms + step),
            (a, b) if a == b => Some(ms),
            _ => None,
        }
    }

    /// The wall clock is trusted now and `step_ms` turns provisional times
    /// into wall times: the open segment and the last end move by it (the
    /// storage thread moves the rows with `Db::restamp` at the same moment).
    pub fn restamp(&mut self, step_ms: i64) {
        if let Some(o) = self.open.as_mut().filter(|o| o.time_unknown) {
            o.start_ms += step_ms;
            o.synced.end_ms += step_ms;
            o.time_unknown = false;
        }
        if let Some((ms, true)) = self.last_end_ms {
            self.last_end_ms = Some((ms + step_ms, false));
        }
    }

    /// True (once) if rows of unknown time were written since the last call.
    pub fn take_wrote_unknown(&mut self) -> bool {
        std::mem::take(&mut self.wrote_unknown)
    }

    /// Records a write failure; logged once per different message (a full disk
    /// fails at every keyframe until space returns).
    fn fail(&mut self, msg: String) {
        let msg = if crate::recording::reserve::is_disk_full(&msg) { format!("disk full: {msg}") } else { msg };
        if self.failing.as_deref() != Some(msg.as_str()) {
            log::warn!("stream {}: {msg}", self.name);
        }
        self.failing = Some(msg.clone());
        self.last_error = Some(msg);
    }

    /// Id, start and bytes written of the open segment, if any.
    pub fn open_segment_id(&self) -> Option<i64> {
        self.open.as_ref().map(|o| o.id)
    }

    /// How far the open segment is written (fragments on disk, synced or not).
    pub fn writing(&self) -> Option<crate::recording::stream::Writing> {
        self.open.as_ref().map(|o| crate::recording::stream::Writing {
            segment_id: o.id,
            end_ms: end_ms(o, self.run.as_ref()),
            bytes: o.bytes,
        })
    }

    /// Start of the open segment (ms) and its init length, for diagnostics.
    pub fn open_info(&self) -> Option<(i64, u64)> {
        self.open.as_ref().map(|o| (o.start_ms, o.init_len))
    }
}

fn end_ms(o: &OpenSegment, run: Option<&RunStart>) -> i64 {
    let ts = run.map(|r| r.video.timescale).unwrap_or(90_000).max(1);
    o.start_ms + (u128::from(o.frag.video_end()) * 1000 / u128::from(ts)) as i64
}

/// Start time (ms) encoded in a segment file name (`<start_ms>[-n].mp4`).
pub fn start_ms_from_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".mp4")?;
    stem.split('-').next()?.parse().ok()
}

/// Removes a segment that never got a fragment: row first, then the file.
fn discard_segment(db: &Db, id: i64, data_dir: &Path) {
    if let Err(e) = db.delete_segments_to_garbage(&[id]) {
        log::warn!("cannot discard empty segment {id}: {e}");
        return;
    }
    if let Err(e) = crate::recording::retention::collect_garbage(db, data_dir) {
        log::warn!("cannot remove empty segment {id}: {e}");
    }
}

/// Writes one fragment (header, video, audio) with one vectored write.
fn write_fragment(file: &mut File, f: &Fragment) -> io::Result<()> {
    let mut bufs = [IoSlice::new(&f.header), IoSlice::new(f.video), IoSlice::new(f.audio)];
    write_all_vectored(file, &mut bufs)
}

/// Writes every byte of `bufs` (a short vectored write is continued).
fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `dir` and its parents, fsyncing each parent whose entry was added.
pub fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync a directory so a created or removed entry is durable.
fn create_unique(dir: &Path, start_ms: i64) -> io::Result<(PathBuf, File)> {
    for n in 0..100 {
        let name = if n == 0 { format!("{start_ms}.mp4") } else { format!("{start_ms}-{n}.mp4") };
        let path = dir.join(name);
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free file name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::db::StreamSpec;
    use crate::recording::mp4::tests::run_start;

    const T0: i64 = 1_700_000_000_000;

    fn setup(segment_seconds: u32) -> (tempfile::TempDir, Db, SegmentWriter) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).expect("db");
        let spec = StreamSpec { source: "config".into(), ..StreamSpec::new("cam", "rtsp://h/x") };
        let row = db.upsert_stream(&spec, T0).expect("stream");
        let cfg = WriterConfig {
            data_dir: dir.path().to_path_buf(),
            segment_seconds,
            sync_interval: Duration::from_secs(3600),
            sync: crate::base::fs::fdatasync,
        };
        let w = SegmentWriter::new(row.id, "cam", cfg, Arc::new(crate::base::clock::SimulatedClock::new(T0)));
        (dir, db, w)
    }

    /// Feeds `secs` of 25 fps video (keyframe each second) and 48 kHz AAC.
    fn feed(w: &mut SegmentWriter, db: &Db, from_s: i64, secs: i64) {
        let (vt, at) = (90_000 / 25, 1024);
        let mut next_audio = from_s * 48_000;
        for i in from_s * 25..(from_s + secs) * 25 {
            let pts = T0 * 90 + i * vt;
            w.on_frame(db, Track::Video, i % 25 == 0, pts, &vec![i as u8; 1000 + (i % 7) as usize]);
            while next_audio * 25 < (i + 1) * 48_000 {
                // Both clocks count from the same session start (ms T0 is T0 x 48 ticks).
                w.on_frame(db, Track::Audio, true, T0 * 48 + next_audio, &[1u8; 200]);
                next_audio += at;
            }
        }
    }

    #[test]
    fn segments_rotate_on_keyframes_and_rows_match_files() {
        let (dir, db, mut w) = setup(4);
        w.on_run(&db, run_start(true, T0));
        feed(&mut w, &db, 0, 10);
        w.close(&db, CloseReason::Shutdown);
        let segs = db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments");
        assert_eq!(segs.len(), 3, "{segs:?}");
        let (mut total_frames, mut total_audio) = (0, 0);
        for (i, s) in segs.iter().enumerate() {
            assert!(s.closed);
            let scan = mp4::scan_file(&dir.path().join(&s.path)).expect("scan");
            assert_eq!(scan.valid_len, s.bytes);
            assert_eq!(scan.file_len, s.bytes);
            assert_eq!(scan.fragments, s.fragments, "segment {i}: index differs from the file");
            assert!(s.fragments.iter().all(|f| f.key), "every fragment starts with a keyframe here");
            assert!(scan.has_audio && s.audio_frames > 0);
            total_frames += s.frames;
            total_audio += s.audio_frames;
            if i + 1 < segs.len() {
                assert_eq!(s.end_ms, segs[i + 1].start_ms, "segments are contiguous");
            }
        }
        // The last frame's duration is estimated, so all 250 frames are kept.
        assert_eq!(total_frames, 250);
        assert_eq!(total_audio, (10 * 48_000u64).div_ceil(1024), "every audio frame is kept");
        assert_eq!(segs[0].start_ms, T0);
        assert_eq!(segs[2].end_ms, T0 + 10_000);
        assert!(db.gaps_overlapping(1, i64::MIN, i64::MAX).expect("gaps").is_empty());
    }

    #[test]
    fn a_gap_ends_the_segment_and_is_recorded_when_recording_resumes() {
        let (_dir, db, mut w) = setup(300);
        w.on_run(&db, run_start(false, T0));
        feed(&mut w, &db, 0, 3);
        w.on_gap(&db);
        // Frames resume 5 s later, starting with non-keyframes that are skipped.
        feed(&mut w, &db, 8, 3);
        w.close(&db, CloseReason::Shutdown);
        let segs = db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments");
        assert_eq!(segs.len(), 2);
        let gaps = db.gaps_overlapping(1, i64::MIN, i64::MAX).expect("gaps");
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].start_ms, gaps[0].end_ms), (segs[0].end_ms, segs[1].start_ms));
        assert_eq!(segs[1].start_ms, T0 + 8_000);
    }

    #[test]
    fn rows_only_claim_synced_bytes_until_close() {
        let (dir, db, mut w) = setup(300);
        w.on_run(&db, run_start(false, T0));
        feed(&mut w, &db, 0, 5);
        let seg = &db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0];
        assert!(!seg.closed);
        // sync_interval is an hour: nothing synced yet beyond the init.
        assert_eq!(seg.bytes, seg.init_len);
        let on_disk = std::fs::metadata(dir.path().join(&seg.path)).expect("stat").len();
        assert!(on_disk > seg.bytes);
        w.close(&db, CloseReason::Shutdown);
        let seg = &db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0];
        assert!(seg.closed);
        assert_eq!(std::fs::metadata(dir.path().join(&seg.path)).expect("stat").len(), seg.bytes);
    }

    #[test]
    fn a_run_without_frames_leaves_no_file_or_row() {
        let (dir, db, mut w) = setup(300);
        w.on_run(&db, run_start(false, T0));
        w.on_frame(&db, Track::Video, false, T0 * 90, &[0; 10]);
        w.close(&db, CloseReason::Shutdown);
        assert!(db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments").is_empty());
        assert!(!dir.path().join("recordings").exists());
    }

    thread_local! {
        /// Syncs the test's disk refuses from now on (u32::MAX: it stays broken).
        static REFUSE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    fn refusing_disk(f: &File) -> io::Result<()> {
        if REFUSE.with(|c| c.replace(c.get().saturating_sub(1))) > 0 {
            return Err(io::Error::from_raw_os_error(5));
        }
        f.sync_data()
    }

    fn setup_syncing_each_fragment() -> (tempfile::TempDir, Db, SegmentWriter) {
        let (dir, db, mut w) = setup(300);
        w.cfg.sync_interval = Duration::ZERO;
        w.cfg.sync = refusing_disk;
        REFUSE.with(|c| c.set(0));
        (dir, db, w)
    }

    #[test]
    fn a_disk_that_refuses_sync_on_close_leaves_a_closed_playable_segment() {
        let (dir, db, mut w) = setup_syncing_each_fragment();
        w.on_run(&db, run_start(true, T0));
        feed(&mut w, &db, 0, 4);
        let synced = db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0].clone();
        assert!(synced.frames > 0 && !synced.closed);
        REFUSE.with(|c| c.set(u32::MAX));
        feed(&mut w, &db, 4, 3);
        w.close(&db, CloseReason::Shutdown);
        let seg = &db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0];
        assert!(seg.closed, "never left open");
        assert_eq!((seg.bytes, seg.frames, seg.end_ms), (synced.bytes, synced.frames, synced.end_ms));
        let scan = mp4::scan_file(&dir.path().join(&seg.path)).expect("scan");
        assert_eq!((scan.file_len, scan.valid_len), (seg.bytes, seg.bytes), "file cut to what the row claims");
        assert_eq!(scan.fragments, seg.fragments);
        let err = w.last_error.clone().unwrap_or_default();
        assert!(err.contains("os error 5"), "the disk's error, not ours: {err}");
        assert!(
            err.contains("fdatasync failed 3 times on close") && err.contains("ms could not be made durable"),
            "{err}"
        );
        assert!(w.stats.write_errors >= 2);
    }

    #[test]
    fn a_close_the_database_refuses_is_kept_and_written_when_it_accepts_again() {
        let (dir, db, mut w) = setup(300);
        w.on_run(&db, run_start(true, T0));
        feed(&mut w, &db, 0, 3);
        // The database stops accepting writes (as on a failing or full disk).
        db.conn_for_tests().pragma_update(None, "query_only", true).expect("query_only");
        w.close(&db, CloseReason::Shutdown);
        assert!(w.failing.as_deref().is_some_and(|f| f.contains("(retried)")), "{:?}", w.failing);
        db.conn_for_tests().pragma_update(None, "query_only", false).expect("writable");
        let seg = db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0].clone();
        assert!(!seg.closed, "not written yet");
        w.tick(&db);
        let seg = &db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0];
        assert!(seg.closed, "the close is written once the database accepts it");
        assert_eq!(seg.frames, 75);
        let scan = mp4::scan_file(&dir.path().join(&seg.path)).expect("scan");
        assert_eq!((scan.valid_len, scan.fragments.len()), (seg.bytes, seg.fragments.len()));
    }

    #[test]
    fn a_sync_that_fails_once_is_made_good_by_the_next_and_nothing_is_lost() {
        let (dir, db, mut w) = setup_syncing_each_fragment();
        w.on_run(&db, run_start(true, T0));
        feed(&mut w, &db, 0, 3);
        REFUSE.with(|c| c.set(1));
        feed(&mut w, &db, 3, 3);
        w.close(&db, CloseReason::Shutdown);
        let seg = &db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")[0];
        assert!(seg.closed);
        assert_eq!(seg.frames, 150, "every frame kept ({:?})", w.last_error);
        assert_eq!(w.stats.write_errors, 1);
        let scan = mp4::scan_file(&dir.path().join(&seg.path)).expect("scan");
        assert_eq!(scan.valid_len, seg.bytes);
    }
}
