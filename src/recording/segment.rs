//! Segment writer: turns one stream's ring records into fragmented MP4 files
//! and keeps their rows current. Runs on the storage thread; one per stream.
//!
//! Invariants (see docs/ARCHITECTURE.md):
//! - A segment starts on a video keyframe of a run and holds one run only.
//! - A fragment is cut at the first keyframe after `FRAGMENT_MIN`, or forced
//!   after `FRAGMENT_MAX`; each is written with one vectored write.
//! - The file is fdatasync'ed at most every `sync_interval` and on close, and
//!   only then does the row's `bytes` move forward: a row never claims bytes
//!   that were not synced, so a power cut loses at most `sync_interval`.
//! - A failed write truncates the file back to its last complete fragment and
//!   closes the segment; the recording goes on in a new one.
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
use crate::base::fs::sync_dir;
use crate::index::db::{Db, NewSegment, SegmentProgress};
use crate::recording::media::{FragmentEntry, RunStart, Track};
use crate::recording::mp4;

/// Shortest fragment that is cut at a keyframe, in seconds.
const FRAGMENT_MIN_SECS: i64 = 1;
/// Longest fragment, in seconds, even without a keyframe.
const FRAGMENT_MAX_SECS: i64 = 4;
/// A hole longer than this between two segments is recorded as a gap.
const GAP_MIN_MS: i64 = 1000;

#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub data_dir: PathBuf,
    pub segment_seconds: u32,
    pub sync_interval: Duration,
}

/// Why the current segment ended (used as the gap reason if one follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Rotation,
    NewRun,
    Gap,
    WriteError,
    Shutdown,
}

impl CloseReason {
    fn gap_reason(self) -> &'static str {
        match self {
            CloseReason::Rotation => "rotation",
            CloseReason::NewRun => "camera reconnected or changed parameters",
            CloseReason::Gap => "recording fell behind the ring",
            CloseReason::WriteError => "write error",
            CloseReason::Shutdown => "recorder stopped",
        }
    }
}

#[derive(Default)]
struct PendingFragment {
    /// (pts, size, key) of each video sample.
    video: Vec<(i64, u32, bool)>,
    video_data: Vec<u8>,
    audio_first_pts: Option<i64>,
    audio_sizes: Vec<u32>,
    audio_data: Vec<u8>,
}

impl PendingFragment {
    fn clear(&mut self) {
        self.video.clear();
        self.video_data.clear();
        self.audio_first_pts = None;
        self.audio_sizes.clear();
        self.audio_data.clear();
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
    seq: u32,
    /// Video ticks written so far: the next fragment's tfdt (files start at 0).
    video_ticks: u64,
    /// Audio ticks written so far, once audio started.
    audio_ticks: Option<u64>,
    last_sync: Instant,
    /// Duration of the last video sample, used when the next is unknown.
    last_duration: u32,
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
    frag: PendingFragment,
    open: Option<OpenSegment>,
    /// End of the last segment, and whether it is provisional.
    last_end_ms: Option<(i64, bool)>,
    last_close: CloseReason,
    /// Rows of unknown time were written since the last `take_wrote_unknown`.
    wrote_unknown: bool,
    pub stats: WriterStats,
    pub last_error: Option<String>,
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
            frag: PendingFragment::default(),
            open: None,
            last_end_ms: None,
            last_close: CloseReason::Shutdown,
            wrote_unknown: false,
            stats: WriterStats::default(),
            last_error: None,
        }
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
        if let Some(&(first, _, _)) = self.frag.video.first() {
            let len = pts - first;
            if (key && len >= FRAGMENT_MIN_SECS * timescale) || len >= FRAGMENT_MAX_SECS * timescale {
                self.flush_fragment(db, Some(pts));
                let rotate = self
                    .open
                    .as_ref()
                    .is_some_and(|o| key && pts - o.start_pts >= i64::from(self.cfg.segment_seconds) * timescale);
                if rotate {
                    self.close(db, CloseReason::Rotation);
                }
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
        self.frag.video.push((pts, data.len() as u32, key));
        self.frag.video_data.extend_from_slice(data);
    }

    fn on_audio(&mut self, pts: i64, data: &[u8]) {
        // Audio joins only a fragment that already has video, so it never leads.
        let has_audio = self.run.as_ref().is_some_and(|r| r.audio.is_some());
        if !has_audio || self.frag.video.is_empty() {
            return;
        }
        self.frag.audio_first_pts.get_or_insert(pts);
        self.frag.audio_sizes.push(data.len() as u32);
        self.frag.audio_data.extend_from_slice(data);
    }

    /// Periodic work: sync if due.
    pub fn tick(&mut self, db: &Db) {
        if let Some(o) = &self.open {
            if o.bytes > o.synced_bytes && o.last_sync.elapsed() >= self.cfg.sync_interval {
                self.sync(db, false);
            }
        }
    }

    /// Ends the current segment (flushing what is pending) for `reason`.
    pub fn close(&mut self, db: &Db, reason: CloseReason) {
        self.flush_fragment(db, None);
        self.frag.clear();
        let Some(o) = &self.open else { return };
        if o.fragments.is_empty() {
            let id = o.id;
            self.open = None;
            discard_segment(db, id, &self.cfg.data_dir);
        } else {
            self.sync(db, true);
            if let Some(o) = self.open.take() {
                self.last_end_ms = Some((end_ms(&o, self.run.as_ref()), o.time_unknown));
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
        file.write_all(&self.init)?;
        file.sync_data()?;
        sync_dir(&dir)?;
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
            trigger: "continuous".into(),
            time_unknown,
        };
        let id = match db.insert_segment(&new) {
            Ok(id) => id,
            Err(e) => {
                let _ = fs::remove_file(&path);
                let _ = sync_dir(&dir);
                return Err(io::Error::other(format!("database: {e}")));
            }
        };
        self.wrote_unknown |= time_unknown;
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
            seq: 1,
            video_ticks: 0,
            audio_ticks: None,
            last_sync: Instant::now(),
            last_duration: run.video.timescale / 30,
        });
        Ok(())
    }

    /// Writes the pending samples as one fragment. `next_pts` is the pts of the
    /// video frame that follows (for the last sample's duration), if known.
    fn flush_fragment(&mut self, db: &Db, next_pts: Option<i64>) {
        if self.frag.video.is_empty() {
            self.frag.clear();
            return;
        }
        let (Some(run), Some(o)) = (&self.run, &mut self.open) else {
            self.frag.clear();
            return;
        };
        let max_dur = run.video.timescale.saturating_mul(10);
        let n = self.frag.video.len();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let (pts, size, key) = self.frag.video[i];
            let next = self.frag.video.get(i + 1).map(|v| v.0).or(next_pts);
            let d = match next {
                Some(nx) if nx > pts && nx - pts <= i64::from(max_dur) => (nx - pts) as u32,
                _ => o.last_duration,
            };
            o.last_duration = d.max(1);
            samples.push(mp4::Sample { duration: d.max(1), size, key });
        }
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        let mut runs = vec![mp4::TrackRun { track_id: 1, base_decode_time: o.video_ticks, samples: &samples }];
        let audio_samples: Vec<mp4::Sample>;
        let audio_base;
        if let (Some(a), Some(first)) = (&run.audio, self.frag.audio_first_pts) {
            audio_base = *o.audio_ticks.get_or_insert_with(|| {
                // Both RTP clocks count from the session start: place the first
                // audio sample at its offset from the segment's first video frame.
                let vts = i128::from(run.video.timescale.max(1));
                let video_start = i128::from(o.start_pts) * i128::from(a.timescale) / vts;
                (i128::from(first) - video_start).max(0) as u64
            });
            audio_samples = self
                .frag
                .audio_sizes
                .iter()
                .map(|&size| mp4::Sample { duration: a.frame_ticks, size, key: true })
                .collect();
            runs.push(mp4::TrackRun { track_id: 2, base_decode_time: audio_base, samples: &audio_samples });
        }
        let header = mp4::fragment_header(o.seq, &runs);
        let size = header.len() + self.frag.video_data.len() + self.frag.audio_data.len();
        let mut bufs =
            [IoSlice::new(&header), IoSlice::new(&self.frag.video_data), IoSlice::new(&self.frag.audio_data)];
        match write_all_vectored(&mut o.file, &mut bufs) {
            Ok(()) => {
                o.fragments.push(FragmentEntry {
                    offset: o.bytes,
                    size: size as u32,
                    start_ticks: o.video_ticks,
                    duration_ticks: duration as u32,
                    frames: n as u32,
                    key: self.frag.video[0].2,
                });
                o.bytes += size as u64;
                o.seq += 1;
                o.frames += n as u64;
                o.video_ticks += duration;
                let audio_n = self.frag.audio_sizes.len() as u64;
                o.audio_frames += audio_n;
                if let (Some(t), Some(a)) = (o.audio_ticks.as_mut(), &run.audio) {
                    *t += audio_n * u64::from(a.frame_ticks);
                }
                self.stats.bytes_written += size as u64;
                self.stats.fragments += 1;
                self.frag.clear();
                self.tick(db);
            }
            Err(e) => {
                self.stats.write_errors += 1;
                // Cut the torn fragment off so the file stays playable, then end the segment.
                let _ = o.file.set_len(o.bytes);
                self.frag.clear();
                self.fail(format!("write failed: {e}"));
                self.close(db, CloseReason::WriteError);
                self.need_key = true;
            }
        }
    }

    /// fdatasync and move the row forward (closing it if `closed`).
    fn sync(&mut self, db: &Db, closed: bool) {
        let Some(o) = &mut self.open else { return };
        if let Err(e) = o.file.sync_data() {
            self.fail(format!("fdatasync failed: {e}"));
            return;
        }
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
        let id = o.id;
        if let Err(e) = db.update_segment(id, &progress) {
            self.fail(format!("cannot update segment {id}: {e}"));
        }
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

    fn fail(&mut self, msg: String) {
        log::warn!("stream {}: {msg}", self.name);
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
    o.start_ms + (u128::from(o.video_ticks) * 1000 / u128::from(ts)) as i64
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
        match OpenOptions::new().write(true).create_new(true).open(&path) {
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
    use crate::index::db::{RecordMode, StreamSpec};
    use crate::recording::mp4::tests::run_start;

    const T0: i64 = 1_700_000_000_000;

    fn setup(segment_seconds: u32) -> (tempfile::TempDir, Db, SegmentWriter) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).expect("db");
        let spec = StreamSpec {
            name: "cam".into(),
            url: "rtsp://h/x".into(),
            enabled: true,
            record: RecordMode::Continuous,
            retention_days: None,
            max_storage_mb: None,
            priority: 0,
            bitrate_kbps: None,
            source: "config".into(),
        };
        let row = db.upsert_stream(&spec, T0).expect("stream");
        let cfg = WriterConfig {
            data_dir: dir.path().to_path_buf(),
            segment_seconds,
            sync_interval: Duration::from_secs(3600),
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
                w.on_frame(db, Track::Audio, true, next_audio, &[1u8; 200]);
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
        let mut total_frames = 0;
        for (i, s) in segs.iter().enumerate() {
            assert!(s.closed);
            let scan = mp4::scan_file(&dir.path().join(&s.path)).expect("scan");
            assert_eq!(scan.valid_len, s.bytes);
            assert_eq!(scan.file_len, s.bytes);
            assert_eq!(scan.fragments, s.fragments, "segment {i}: index differs from the file");
            assert!(s.fragments.iter().all(|f| f.key), "every fragment starts with a keyframe here");
            assert!(scan.has_audio && s.audio_frames > 0);
            total_frames += s.frames;
            if i + 1 < segs.len() {
                assert_eq!(s.end_ms, segs[i + 1].start_ms, "segments are contiguous");
            }
        }
        // The last frame's duration is estimated, so all 250 frames are kept.
        assert_eq!(total_frames, 250);
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
}
