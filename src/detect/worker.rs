//! The thread of one stream's detection (`detect-NAME`): reads the stream's
//! ring with its own cursor, decodes at a bounded rate, runs the motion
//! detector and hands motion start/end to a [`MotionSink`].
//!
//! Invariants:
//! - Ingest never waits for detection: the ring's writer never waits for a
//!   reader; a detector that falls behind loses frames (a ring `Gap`, or a
//!   jump to the newest keyframe once it is `MAX_LAG_MS` behind), never the
//!   recording. The ring is the bounded queue: nothing else is buffered.
//! - Decoding is bounded by [`Gate`]: every keyframe, plus non-key frames
//!   while the per-second budget (`detect.fps`) lasts; the first frame
//!   skipped breaks the chain until the next keyframe.
//! - Times are the frames' wall times (the run's anchor); when frames stop,
//!   the injected clock ends motion after `end_seconds`.
//! - A run that is not H.264 (an H.265 camera) is not decoded: with a
//!   `snapshot_url` the thread polls the camera's JPEG snapshot at
//!   `detect.fps` instead (`snapshot`, one deadline per request) until a run
//!   that is H.264 comes; without one it says why in `DetectStats::problem`.
//! - Memory: this thread's heap counts as `detect` in /api/system; OpenH264's
//!   own pictures are estimated in `detect_native_bytes`.
//! - Settings are live: with a [`SettingsSource`] (the stream's spec, which
//!   the API edits) the thread re-reads detectors, mask and zones every
//!   `RING_CHECK_MS`; a new mask keeps the background model, an empty
//!   `detect` list pauses the thread (no ring reads, no decoding) and ends
//!   motion in progress. Zones apply from the next detection.
//! - A snapshot is encoded only when the API asks for one ([`DetectStats::picture`]):
//!   the newest JPEG (~30 KB) is kept, nothing more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::decode::{DecodeError, LumaDecoder};
use super::motion::{Luma, Mask, MotionChange, MotionDetector, MotionParams};
use super::objects::Detection;
use super::objects::Detector;
use super::picture::Rgb;
use super::snapshot::{self, SnapshotClient};
use super::zones;
use crate::base::clock::Clock;
use crate::base::memory;
use crate::config::DetectConfig;
use crate::index::db::{StreamSpec, Zone};
use crate::recording::media::{RunStart, Track};
use crate::recording::ring::{ReadResult, Ring};

/// How long the thread sleeps when the ring has nothing new.
const POLL: Duration = Duration::from_millis(20);
/// How often the thread asks which ring its stream has now.
const RING_CHECK_MS: i64 = 500;

/// The stream's ring as it is now: a restart (new URL, memory pressure, the
/// budget admitting it) gives the stream a new ring; `None` while it has none.
pub type RingSource = Arc<dyn Fn() -> Option<Arc<Ring>> + Send + Sync>;
/// The stream's `snapshot_url` as it is now (read at each run start, so an
/// edit through the API is followed).
pub type SnapshotSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// A frame this far behind the clock makes the reader jump to the newest keyframe.
const MAX_LAG_MS: i64 = 2000;

/// One motion change as the sink gets it.
pub struct Motion<'a> {
    pub change: MotionChange,
    /// Share of the picture's cells that changed in the frame (0..=1).
    pub score: f64,
    /// The frame that started motion, in colour (only if the sink wants pictures).
    pub picture: Option<&'a Rgb>,
    /// Where it moved in that frame, normalised: x, y, width, height.
    pub area: Option<[f64; 4]>,
    /// The zones the moving area is in (see `zones`), on a start.
    pub zones: Vec<String>,
}

/// An object found on a frame, with the zones it is in (objects that the
/// stream's required zones drop never get here).
#[derive(Clone, Debug, PartialEq)]
pub struct Zoned {
    pub detection: Detection,
    pub zones: Vec<String>,
}

/// A stream's detection settings (its spec's `detect`, `motion_mask`, `zones`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub detect: Vec<String>,
    pub mask: Mask,
    pub zones: Vec<Zone>,
}

impl Settings {
    pub fn of(spec: &StreamSpec) -> Settings {
        Settings {
            detect: spec.detect.clone(),
            mask: Mask { polygons: spec.motion_mask.clone() },
            zones: spec.zones.clone(),
        }
    }

    /// Objects are looked for on moving frames: motion runs whenever either is on.
    fn motion(&self) -> bool {
        !self.detect.is_empty()
    }

    fn objects(&self) -> bool {
        self.detect.iter().any(|d| d == "objects")
    }
}

/// The stream's settings as they are now (None: the stream is gone).
pub type SettingsSource = Arc<dyn Fn() -> Option<Settings> + Send + Sync>;

/// Where motion changes go (the events store, a channel, a test).
pub trait MotionSink: Send {
    fn motion(&self, stream: &str, m: &Motion<'_>);

    /// Whether a start should come with a picture (costs a colour conversion).
    fn wants_picture(&self) -> bool {
        false
    }

    /// What object detection found at `at_ms` (maybe nothing) in `picture`.
    fn objects(&self, _stream: &str, _at_ms: i64, _found: &[Zoned], _picture: &Rgb) {}

    /// Motion is over (or the stream went away) at `at_ms`: open object events end.
    fn quiet(&self, _stream: &str, _at_ms: i64) {}
}

impl MotionSink for std::sync::mpsc::Sender<(String, MotionChange)> {
    fn motion(&self, stream: &str, m: &Motion<'_>) {
        // A receiver that went away just stops listening.
        let _ = self.send((stream.to_string(), m.change));
    }
}

/// Widest snapshot kept with an event (a sub stream's full size).
pub const SNAPSHOT_WIDTH: u32 = 640;
/// Least time between two object inferences on one stream.
const OBJECT_INTERVAL_MS: i64 = 1000;

/// The motion tunables of the `[detect]` table (ranges checked by `config`).
pub fn motion_params(c: &DetectConfig) -> MotionParams {
    let small = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    MotionParams {
        pixel_threshold: u8::try_from(c.pixel_threshold).unwrap_or(u8::MAX),
        cell: small(c.cell),
        cell_percent: u8::try_from(c.cell_percent).unwrap_or(100),
        min_cells: small(c.min_cells),
        background_shift: u8::try_from(c.background_shift).unwrap_or(8),
        start_frames: small(c.start_frames),
        end_ms: i64::from(c.end_seconds) * 1000,
    }
}

/// Which frames get decoded: every keyframe, then non-key frames while the
/// budget of `fps` per second lasts and the chain since the keyframe is whole.
#[derive(Clone, Debug)]
pub struct Gate {
    fps: i64,
    /// Budget in thousandths of a frame (refills at `fps` frames per second).
    milli_tokens: i64,
    last_ms: Option<i64>,
}

impl Gate {
    pub fn new(fps: u32) -> Self {
        let fps = i64::from(fps.max(1));
        Gate { fps, milli_tokens: fps * 1000, last_ms: None }
    }

    /// Whether to decode a frame at `at_ms`; `chain_ok` is false while the
    /// decoder waits for a keyframe.
    pub fn admit(&mut self, key: bool, chain_ok: bool, at_ms: i64) -> bool {
        let elapsed = self.last_ms.map_or(0, |l| (at_ms - l).clamp(0, 1000));
        self.last_ms = Some(at_ms);
        self.milli_tokens = (self.milli_tokens + elapsed * self.fps).min(self.fps * 1000);
        if key {
            self.milli_tokens = (self.milli_tokens - 1000).max(0);
            return true;
        }
        if chain_ok && self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return true;
        }
        false
    }
}

/// Counters of one detection thread (for the API and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectCounters {
    pub frames_seen: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    /// Frames lost to gaps and lag jumps.
    pub frames_lost: u64,
    /// Microseconds spent decoding and detecting in all.
    pub busy_us: u64,
    pub in_motion: bool,
    /// Times the stream moved to a new ring (restarts) and detection followed.
    pub ring_changes: u64,
    /// Detection samples the camera's JPEG snapshot (the run is not H.264).
    pub snapshot: bool,
}

/// The counters behind a lock (MIPS32 has no 64-bit atomics; one
/// uncontended lock per frame costs nothing next to a decode), and why
/// detection cannot work on the stream now, if it cannot.
#[derive(Debug, Default)]
pub struct DetectStats {
    counters: Mutex<DetectCounters>,
    problem: Mutex<Option<String>>,
    picture: Mutex<PictureSlot>,
    picture_ready: std::sync::Condvar,
}

/// The API's request for a current picture and the newest one encoded.
#[derive(Debug, Default)]
struct PictureSlot {
    wanted: bool,
    /// Pictures encoded so far (tells a waiter a new one came).
    made: u64,
    /// The newest: its frame's wall time and the JPEG.
    newest: Option<(i64, Arc<Vec<u8>>)>,
}

/// Why there is no current picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPicture {
    /// Detection is switched off for the stream (`detect = []`).
    Off,
    /// No frame was decoded within the wait (no camera, no H.264, ...).
    NoFrame(String),
}
impl DetectStats {
    pub fn snapshot(&self) -> DetectCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// E.g. "codec \"hvc1...\" is not H.264: detection needs an H.264 sub stream
    /// (sub_url) or the camera's JPEG snapshot (snapshot_url)".
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_problem(&self, why: Option<String>) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    fn update(&self, f: impl FnOnce(&mut DetectCounters)) {
        f(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The next frame detection decodes, as a JPEG (`SNAPSHOT_WIDTH` wide at
    /// most), waiting at most `wait`: (its wall time, the JPEG).
    pub fn picture(&self, wait: Duration) -> Result<(i64, Arc<Vec<u8>>), NoPicture> {
        if self.problem().as_deref() == Some(OFF) {
            return Err(NoPicture::Off);
        }
        let mut slot = self.picture.lock().unwrap_or_else(PoisonError::into_inner);
        slot.wanted = true;
        let before = slot.made;
        let (slot, _) = self
            .picture_ready
            .wait_timeout_while(slot, wait, |s| s.made == before)
            .unwrap_or_else(PoisonError::into_inner);
        match &slot.newest {
            Some(p) if slot.made != before => Ok(p.clone()),
            _ => Err(NoPicture::NoFrame(self.problem().unwrap_or_else(|| {
                format!("detection decoded no frame in {} s (is the camera streaming?)", wait.as_secs())
            }))),
        }
    }

    /// Whether the API waits for a picture.
    fn picture_wanted(&self) -> bool {
        self.picture.lock().unwrap_or_else(PoisonError::into_inner).wanted
    }

    fn put_picture(&self, at_ms: i64, jpeg: Vec<u8>) {
        let mut slot = self.picture.lock().unwrap_or_else(PoisonError::into_inner);
        slot.wanted = false;
        slot.made += 1;
        slot.newest = Some((at_ms, Arc::new(jpeg)));
        self.picture_ready.notify_all();
    }
}

/// The problem a paused (switched off) detection shows.
pub const OFF: &str = "detection is off for this stream (detect = [])";

/// A running detection thread; stops (and joins) on drop.
pub struct DetectHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<DetectStats>,
}

impl DetectHandle {
    pub fn stop(mut self) {
        self.halt();
    }

    /// Stops many threads at once: every flag first, then the joins, so a
    /// hundred paused threads (each looks at its flag twice a second) take
    /// half a second, not fifty.
    pub fn stop_all(handles: Vec<DetectHandle>) {
        for h in &handles {
            h.stop.store(true, Ordering::Relaxed);
        }
        drop(handles);
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DetectHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What one detection thread needs.
pub struct DetectSetup {
    pub stream: String,
    pub rings: RingSource,
    pub config: DetectConfig,
    pub mask: Mask,
    pub zones: Vec<Zone>,
    /// Where the live settings come from (None: `mask` and `zones` for good).
    pub live: Option<SettingsSource>,
    pub clock: Arc<dyn Clock>,
    pub sink: Box<dyn MotionSink>,
    /// Object detection on moving frames (`detect = [.., "objects"]`).
    pub objects: Option<Detector>,
    /// The camera's JPEG snapshot, for runs that are not H.264.
    pub snapshot: Option<SnapshotSource>,
    /// Test knob: extra time spent on every decoded frame (a slow detector).
    pub slow: Duration,
}

/// Starts the `detect-NAME` thread.
pub fn spawn(setup: DetectSetup) -> std::io::Result<DetectHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(DetectStats::default());
    let name = format!("detect-{}", setup.stream);
    let (s, st) = (stop.clone(), stats.clone());
    let thread = std::thread::Builder::new().name(name).stack_size(256 << 10).spawn(move || {
        memory::set_subsystem(memory::Subsystem::Detect);
        Worker::new(setup, st).run(&s);
    })?;
    Ok(DetectHandle { stop, thread: Some(thread), stats })
}

struct Worker {
    setup: DetectSetup,
    stats: Arc<DetectStats>,
    decoder: LumaDecoder,
    detector: MotionDetector,
    gate: Gate,
    run: Option<RunStart>,
    native: usize,
    /// When objects were last looked for.
    last_objects_ms: Option<i64>,
    /// Polling the camera's snapshot (the run is not H.264), and when next.
    snapshot: Option<SnapshotClient>,
    next_snapshot_ms: i64,
    /// The settings in effect (from `setup.live`, when it has one).
    settings: Settings,
}

impl Worker {
    fn new(setup: DetectSetup, stats: Arc<DetectStats>) -> Self {
        let width = u16::try_from(setup.config.width).unwrap_or(160);
        let detector = MotionDetector::new(motion_params(&setup.config), setup.mask.clone());
        let gate = Gate::new(setup.config.fps);
        let settings = Settings { detect: Vec::new(), mask: setup.mask.clone(), zones: setup.zones.clone() };
        Worker {
            setup,
            stats,
            decoder: LumaDecoder::new(width),
            detector,
            gate,
            run: None,
            native: 0,
            last_objects_ms: None,
            snapshot: None,
            next_snapshot_ms: 0,
            settings,
        }
        .with_detectors()
    }

    /// Without live settings, the setup's detectors are the ones that run.
    fn with_detectors(mut self) -> Self {
        self.settings.detect = match self.setup.objects {
            Some(_) => vec!["motion".into(), "objects".into()],
            None => vec!["motion".into()],
        };
        self
    }

    /// Re-reads the live settings; whether detection is on.
    fn follow_settings(&mut self) -> bool {
        let Some(now) = self.setup.live.as_ref().and_then(|l| l()) else { return self.settings.motion() };
        if now == self.settings {
            return now.motion();
        }
        log::info!(
            "detect {}: settings changed: detect {:?}, {} zone(s)",
            self.setup.stream,
            now.detect,
            now.zones.len()
        );
        if now.mask != self.settings.mask {
            self.detector.set_mask(now.mask.clone());
        }
        if !now.motion() {
            if let Some(c) = self.detector.reset() {
                self.emit(c, 0.0, None, None);
            }
            self.stats.set_problem(Some(OFF.into()));
            // Off frees the decoder's pictures; the next run start makes a new one.
            self.decoder = LumaDecoder::new(self.decoder.width());
            memory::detect_native_update(self.native, 0);
            self.native = 0;
        } else if !self.settings.motion() {
            self.stats.set_problem(None);
        }
        if now.objects() && self.setup.objects.is_none() {
            match Detector::from_config(&self.setup.config) {
                Ok(d) => self.setup.objects = Some(d),
                Err(e) => log::error!("stream {}: no object detection: {e}", self.setup.stream),
            }
        } else if !now.objects() {
            self.setup.objects = None;
        }
        self.settings = now;
        self.settings.motion()
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut ring = (self.setup.rings)();
        let mut cursor = ring.as_ref().map(|r| r.cursor_at_latest_keyframe());
        let mut checked = self.setup.clock.now_ms();
        let mut buf = Vec::new();
        let mut on = self.follow_settings();
        if !on {
            self.stats.set_problem(Some(OFF.into()));
        }
        while !stop.load(Ordering::Relaxed) {
            let now = self.setup.clock.now_ms();
            if now - checked >= RING_CHECK_MS || !on {
                checked = now;
                let was = on;
                on = self.follow_settings();
                if !on {
                    // Off: no reads, no decoding; a look at the settings twice a second.
                    std::thread::sleep(Duration::from_millis(RING_CHECK_MS as u64));
                    continue;
                }
                if !was {
                    // Back on: from the newest keyframe (its run start comes first).
                    self.run = None;
                    self.decoder.skipped();
                    cursor = ring.as_ref().map(|r| r.cursor_at_latest_keyframe());
                }
                let current = (self.setup.rings)();
                if !same_ring(&ring, &current) {
                    // The stream restarted on a new ring (or has none): follow it.
                    self.new_ring(current.is_some());
                    cursor = current.as_ref().map(|r| r.cursor_at_latest_keyframe());
                    ring = current;
                }
            }
            if self.snapshot.is_some() && now >= self.next_snapshot_ms {
                self.sample_snapshot(now);
            }
            let (Some(r), Some(c)) = (ring.as_ref(), cursor.as_mut()) else {
                self.idle();
                continue;
            };
            match r.read(c, &mut buf) {
                // Runs are still followed (an H.264 one ends the polling); frames are not decoded.
                ReadResult::Frame { track: Track::Video, .. } if self.snapshot.is_some() => {}
                ReadResult::Frame { track: Track::Video, key, pts, seq } => {
                    let Some(at_ms) = self.run.as_ref().map(|run| run.wall_ms(pts)) else { continue };
                    if now - at_ms > MAX_LAG_MS {
                        // Behind: jump to the newest keyframe if it is ahead of this frame.
                        let newest = r.cursor_at_latest_keyframe();
                        if newest.next_seq() > seq + 1 {
                            self.stats.update(|c| c.frames_lost += newest.next_seq() - seq);
                            *c = newest;
                            self.decoder.skipped();
                            continue;
                        }
                    }
                    self.frame(&buf, key, at_ms);
                }
                ReadResult::Frame { .. } => {}
                ReadResult::Run { run, .. } => self.new_run(run),
                ReadResult::Gap { lost_from, lost_to } => {
                    self.stats.update(|c| c.frames_lost += lost_to.saturating_sub(lost_from));
                    self.decoder.skipped();
                }
                ReadResult::Empty => self.idle(),
            }
        }
        if let Some(c) = self.detector.reset() {
            self.emit(c, 0.0, None, None);
        }
        memory::detect_native_update(self.native, 0);
    }

    /// Nothing to read: motion ends by the clock once frames stop.
    fn idle(&mut self) {
        if let Some(c) = self.detector.tick(self.setup.clock.now_ms()) {
            self.emit(c, 0.0, None, None);
        }
        std::thread::sleep(POLL);
    }

    /// The stream's ring changed: what was moving ended with the old session.
    fn new_ring(&mut self, has_one: bool) {
        log::info!(
            "detect {}: {}",
            self.setup.stream,
            if has_one { "following the stream's new ring" } else { "the stream has no ring now" }
        );
        if let Some(c) = self.detector.reset() {
            self.emit(c, 0.0, None, None);
        }
        self.run = None;
        self.snapshot = None;
        self.decoder.skipped();
        self.stats.update(|c| {
            c.ring_changes += 1;
            c.snapshot = false;
        });
    }

    fn new_run(&mut self, run: RunStart) {
        if let Some(c) = self.detector.reset() {
            self.emit(c, 0.0, None, None);
        }
        let started = self.decoder.start_run(&run.video.codec, &run.video.sample_entry);
        self.snapshot = None;
        let problem = match started {
            Err(DecodeError::NotH264(codec)) => self.start_snapshots(&codec).err(),
            Err(e) => Some(e.to_string()),
            Ok(()) => None,
        };
        if let Some(p) = &problem {
            log::warn!("detect {}: {p}", self.setup.stream);
        }
        let polling = self.snapshot.is_some();
        self.stats.update(|c| c.snapshot = polling);
        self.stats.set_problem(problem);
        self.run = Some(run);
    }

    /// A run of `codec` (not H.264): polls the camera's snapshot if the
    /// stream has a `snapshot_url`, else says what detection needs.
    fn start_snapshots(&mut self, codec: &str) -> Result<(), String> {
        let url = self.setup.snapshot.as_ref().and_then(|s| s());
        let Some(url) = url else { return Err(DecodeError::NotH264(codec.to_string()).to_string()) };
        let client = SnapshotClient::new(&url)?;
        log::info!(
            "detect {}: codec {codec:?} is not H.264; detection samples the snapshot {} at {} fps",
            self.setup.stream,
            client.shown(),
            self.setup.config.fps
        );
        self.snapshot = Some(client);
        self.next_snapshot_ms = 0;
        Ok(())
    }

    /// One sample of the camera's snapshot, at the clock's time.
    fn sample_snapshot(&mut self, now: i64) {
        self.next_snapshot_ms = now + 1000 / i64::from(self.setup.config.fps.max(1));
        let Some(client) = self.snapshot.as_mut() else { return };
        let started = std::time::Instant::now();
        let width = u16::try_from(SNAPSHOT_WIDTH).unwrap_or(u16::MAX);
        match client.fetch().and_then(|jpeg| snapshot::decode(&jpeg, width)) {
            Ok(rgb) => {
                self.stats.update(|c| {
                    c.frames_seen += 1;
                    c.frames_decoded += 1;
                });
                if self.stats.problem().is_some() {
                    log::info!("detect {}: the snapshot answers again", self.setup.stream);
                    self.stats.set_problem(None);
                }
                self.look(&rgb, self.setup.clock.now_ms());
            }
            Err(e) => {
                self.stats.update(|c| c.decode_errors += 1);
                if self.stats.problem().as_deref() != Some(e.as_str()) {
                    log::warn!("detect {}: {e}", self.setup.stream);
                }
                self.stats.set_problem(Some(e));
            }
        }
        if !self.setup.slow.is_zero() {
            std::thread::sleep(self.setup.slow);
        }
        let busy = started.elapsed().as_micros() as u64;
        self.stats.update(|c| c.busy_us += busy);
    }

    /// Motion (and objects) in a snapshot: what `frame` does with a decoded frame.
    fn look(&mut self, rgb: &Rgb, at_ms: i64) {
        let width = u16::try_from(self.setup.config.width).unwrap_or(160);
        let luma = snapshot::luma(rgb, width);
        let (verdict, change) = self.detector.feed(&luma, at_ms);
        let wants = matches!(change, Some(MotionChange::Start { .. })) && self.setup.sink.wants_picture();
        let colour = wants.then(|| rgb.scaled(SNAPSHOT_WIDTH));
        let due = self.last_objects_ms.is_none_or(|t| at_ms - t >= OBJECT_INTERVAL_MS) && self.detector.in_motion();
        let objects = match (due, self.setup.objects.as_mut()) {
            (true, Some(detector)) => {
                self.last_objects_ms = Some(at_ms);
                let small = rgb.scaled(SNAPSHOT_WIDTH);
                let found = detector.detect_within(&small, Duration::ZERO).map(|f| (f, small));
                found.inspect_err(|e| log::debug!("detect {}: objects: {e}", self.setup.stream)).ok()
            }
            _ => None,
        };
        if let Some(change) = change {
            let score = f64::from(verdict.changed_cells) / grid_cells(&luma, self.setup.config.cell) as f64;
            let area = verdict.area.map(|a| normalised(a, &luma));
            self.emit(change, score.min(1.0), colour.as_ref(), area);
        }
        if self.stats.picture_wanted() {
            match rgb.scaled(SNAPSHOT_WIDTH).to_jpeg(80) {
                Ok(jpeg) => self.stats.put_picture(at_ms, jpeg),
                Err(e) => log::warn!("detect {}: picture: {e}", self.setup.stream),
            }
        }
        if let Some((found, rgb)) = objects {
            self.report_objects(at_ms, found, &rgb);
        }
    }

    /// Objects found at `at_ms` to the sink, with the zones each is in
    /// (those outside every required zone are dropped).
    fn report_objects(&self, at_ms: i64, found: Vec<Detection>, rgb: &Rgb) {
        let zoned: Vec<Zoned> = found
            .into_iter()
            .filter_map(|d| zones::of_object(&self.settings.zones, &d).map(|z| Zoned { detection: d, zones: z }))
            .collect();
        self.setup.sink.objects(&self.setup.stream, at_ms, &zoned, rgb);
    }

    fn frame(&mut self, data: &[u8], key: bool, at_ms: i64) {
        self.stats.update(|c| c.frames_seen += 1);
        if !self.gate.admit(key, !self.decoder.needs_keyframe(), at_ms) {
            self.decoder.skipped();
            return;
        }
        let started = std::time::Instant::now();
        match self.decoder.decode(data, key) {
            Ok(Some(picture)) => {
                self.stats.update(|c| c.frames_decoded += 1);
                let luma = picture.luma();
                let (verdict, change) = self.detector.feed(&luma, at_ms);
                let colour = match change {
                    Some(MotionChange::Start { .. }) if self.setup.sink.wants_picture() => {
                        picture.rgb(SNAPSHOT_WIDTH).inspect_err(|e| log::warn!("detect: snapshot: {e}")).ok()
                    }
                    _ => None,
                };
                let due =
                    self.last_objects_ms.is_none_or(|t| at_ms - t >= OBJECT_INTERVAL_MS) && self.detector.in_motion();
                let objects = match (due, self.setup.objects.as_mut()) {
                    (true, Some(detector)) => {
                        self.last_objects_ms = Some(at_ms);
                        // Never wait for another stream's inference: the next moving second tries again.
                        let found = picture.rgb(SNAPSHOT_WIDTH).map_err(|e| e.to_string()).and_then(|rgb| {
                            detector.detect_within(&rgb, Duration::ZERO).map(|f| (f, rgb)).map_err(|e| e.to_string())
                        });
                        found.inspect_err(|e| log::debug!("detect {}: objects: {e}", self.setup.stream)).ok()
                    }
                    _ => None,
                };
                if self.stats.picture_wanted() {
                    match picture.rgb(SNAPSHOT_WIDTH).and_then(|p| p.to_jpeg(80)) {
                        Ok(jpeg) => self.stats.put_picture(at_ms, jpeg),
                        Err(e) => log::warn!("detect {}: picture: {e}", self.setup.stream),
                    }
                }
                if let Some(change) = change {
                    let score = f64::from(verdict.changed_cells) / grid_cells(&luma, self.setup.config.cell) as f64;
                    let area = verdict.area.map(|a| normalised(a, &luma));
                    self.emit(change, score.min(1.0), colour.as_ref(), area);
                }
                if let Some((found, rgb)) = objects {
                    self.report_objects(at_ms, found, &rgb);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let mut first = false;
                self.stats.update(|c| {
                    first = c.decode_errors == 0;
                    c.decode_errors += 1;
                });
                if first {
                    log::warn!("detect {}: {e}", self.setup.stream);
                }
            }
        }
        if !self.setup.slow.is_zero() {
            std::thread::sleep(self.setup.slow);
        }
        let busy = started.elapsed().as_micros() as u64;
        self.stats.update(|c| c.busy_us += busy);
        let native = self.decoder.native_bytes_estimate();
        memory::detect_native_update(self.native, native);
        self.native = native;
    }

    fn emit(&self, change: MotionChange, score: f64, picture: Option<&Rgb>, area: Option<[f64; 4]>) {
        let in_motion = self.detector.in_motion();
        self.stats.update(|c| c.in_motion = in_motion);
        match change {
            MotionChange::Start { at_ms, cells } => {
                log::info!("detect {}: motion started at {at_ms} ({cells} cells)", self.setup.stream)
            }
            MotionChange::End { at_ms, peak_cells } => {
                log::info!("detect {}: motion ended at {at_ms} (peak {peak_cells} cells)", self.setup.stream)
            }
        }
        let zones = area.map(|a| zones::of_area(&self.settings.zones, a)).unwrap_or_default();
        self.setup.sink.motion(&self.setup.stream, &Motion { change, score, picture, area, zones });
        if let MotionChange::End { at_ms, .. } = change {
            self.setup.sink.quiet(&self.setup.stream, at_ms);
        }
    }
}

fn same_ring(a: &Option<Arc<Ring>>, b: &Option<Arc<Ring>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Pixel bounds on `luma` as a normalised x, y, width, height.
fn normalised([x0, y0, x1, y1]: [u16; 4], luma: &Luma) -> [f64; 4] {
    let (w, h) = (f64::from(luma.width.max(1)), f64::from(luma.height.max(1)));
    [f64::from(x0) / w, f64::from(y0) / h, f64::from(x1 - x0) / w, f64::from(y1 - y0) / h]
}

/// Cells of the motion grid over a picture (at least one).
fn grid_cells(luma: &Luma, cell: u32) -> u32 {
    let cell = cell.max(1);
    (u32::from(luma.width).div_ceil(cell) * u32::from(luma.height).div_ceil(cell)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_takes_every_keyframe_and_at_most_fps_more() {
        let mut g = Gate::new(5);
        // 25 fps, a keyframe every 50 frames, for 10 s.
        let mut chain = true;
        let mut decoded = 0;
        for i in 0..250i64 {
            let key = i % 50 == 0;
            let ok = g.admit(key, chain || key, i * 40);
            chain = ok;
            decoded += i64::from(ok);
            if key {
                assert!(ok, "keyframe {i} refused");
            }
        }
        // 5 keyframes + the start burst (5) + about 5 a second while the chain lasts.
        assert!((10..=60).contains(&decoded), "{decoded}");
    }

    #[test]
    fn gate_passes_a_stream_at_the_detection_rate() {
        let mut g = Gate::new(5);
        let admitted = (0..50i64).filter(|&i| g.admit(i % 10 == 0, true, i * 200)).count();
        assert_eq!(admitted, 50);
    }
}
