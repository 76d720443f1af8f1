//! The storage thread: every file write, fsync and SQLite write of recordings,
//! plus retention. Also the start-up reconciliation of files and rows.
//!
//! Invariants:
//! - Only this thread (and `reconcile`, before it starts) writes segment rows
//!   and files, so no two writers race on a segment.
//! - It reads rings with its own cursors; falling behind costs it a gap, never
//!   the camera session.
//! - Retention deletes row first (into `garbage`), then unlinks, then fsyncs
//!   the directory; `reconcile` finishes whatever garbage a crash left.
//! - Rows written while the wall clock was untrusted (`time_unknown`) are
//!   re-stamped by the measured step in the first pass that finds the clock
//!   trusted: the rows (`Db::restamp`, this process's only) and the writers'
//!   open segments together, between two drains.
//! - A stream in events mode is read from its ring only while its
//!   [`Trigger`] says a recording runs (the events hub's notices, polled each
//!   pass); it starts at [`trigger::seek`]'s keyframe and ends on a keyframe.
//! - The ballast (`reserve`) is released only when the disk is full (a writer
//!   or retention failed with ENOSPC/SQLITE_FULL) and made again only when no
//!   writer fails and twice its size is free; while it is missing, retention
//!   counts its size as used, so it frees room for it too.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::base::clock::Clock;
use crate::base::heartbeat::{self, Part};
use crate::index::db::RecordMode;
use crate::index::db::{ClockStep, Db, NewSegment, SegmentProgress};
use crate::index::schedule::local_week_minute;
use crate::recording::media::Track;
use crate::recording::mp4;
use crate::recording::reserve::{self, Reserve};
use crate::recording::retention;
use crate::recording::ring::{Cursor, ReadResult};
use crate::recording::segment::{self, CloseReason, SegmentWriter, WriterConfig};
use crate::recording::stream::{StreamRuntime, Writing};
use crate::recording::trigger::{self, Trigger};

/// How often the thread wakes to drain rings when nothing else happens.
const POLL: Duration = Duration::from_millis(50);
/// Records read from one ring per pass, so one busy stream cannot starve others.
const MAX_RECORDS_PER_PASS: usize = 256;
/// Retention plans at least this often.
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// Deletions per durable transaction, and the time one pass of the loop may spend
/// on them: a plan of thousands (retention lowered by months) is worked off
/// between ring drains, so recording never waits on it for much longer than one
/// budget (a batch is a few ms of unlinks and one transaction on a fast disk).
const RETENTION_BATCH: usize = 50;
const RETENTION_BUDGET: Duration = Duration::from_millis(50);
/// Operations slower than this are logged.
const SLOW: Duration = Duration::from_millis(500);

pub enum Command {
    /// Start recording a stream from its ring.
    Add(Arc<StreamRuntime>),
    /// Stop recording a stream (its open segment is closed).
    Remove(String),
    /// The stream's record mode or pre/post seconds changed (continuous <->
    /// events): switch on the same ring, re-reading its spec.
    Mode(String),
    /// Run retention now.
    Retention,
    /// Delete every recording of a stream (row first, then files); answers the count.
    Purge(i64, mpsc::Sender<Result<usize, String>>),
    /// Close every segment, sync, and acknowledge.
    Shutdown(mpsc::Sender<()>),
}

pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub db_path: PathBuf,
    pub segment_seconds: u32,
    pub sync_seconds: u32,
    pub min_free_percent: u8,
    /// `[events] retention_days`: older events go in the retention pass.
    pub events_retention_days: u32,
    /// The events hub, which starts and extends the events mode's recordings.
    pub events: Option<crate::events::Subscription>,
    /// `[replicate] keep_until_replicated`: age and quota wait for the upload.
    pub keep_until_replicated: bool,
}

struct Recorder {
    rt: Arc<StreamRuntime>,
    cursor: Cursor,
    writer: SegmentWriter,
    /// What the stream's status last heard of the open segment.
    published: Option<Writing>,
    /// What the stream's status last heard of a write failure.
    published_error: Option<String>,
    /// When this stream's ring was last drained, and the longest wait so far.
    drained: Instant,
    lag_max: Duration,
    /// Events mode: when to write (`None`: continuous, always).
    trigger: Option<Trigger>,
    /// Seq where the last events recording stopped: the next never starts before it.
    stop_floor: u64,
    /// The mode in force (the schedule's at this minute, else the spec's `record`).
    mode: RecordMode,
}

impl Recorder {
    fn new(rt: Arc<StreamRuntime>, writer: SegmentWriter, week_min: u32) -> Recorder {
        let cursor = rt.ring.cursor_at_latest_keyframe();
        let mode = rt.spec().record_at(week_min);
        let mut r = Recorder {
            rt,
            cursor,
            writer,
            published: None,
            published_error: None,
            drained: Instant::now(),
            lag_max: Duration::ZERO,
            trigger: None,
            stop_floor: 0,
            mode,
        };
        r.set_mode(mode);
        r.stop_floor = 0; // a new recorder has written nothing: the whole ring may be its pre-buffer
        r
    }

    /// Switches to `mode` (the one in force now) with the spec's pre/post
    /// seconds, once the caller closed what must end ([`switch_mode`]).
    /// Events to continuous goes on from where it is, or from the newest
    /// keyframe if no recording ran; off to anything starts from now.
    fn set_mode(&mut self, mode: RecordMode) {
        let spec = self.rt.spec();
        if self.mode == RecordMode::Off && mode != RecordMode::Off {
            self.cursor = self.rt.ring.cursor_at_latest_keyframe();
        }
        self.mode = mode;
        match (mode, &mut self.trigger) {
            (RecordMode::Events, Some(t)) => t.set_seconds(spec.pre_seconds, spec.post_seconds),
            (RecordMode::Events, None) => {
                self.trigger = Some(Trigger::new(self.rt.name(), spec.pre_seconds, spec.post_seconds));
                self.writer.trigger = "event";
                self.stop_floor = self.cursor.next_seq();
            }
            (_, t) => {
                if t.as_ref().is_some_and(|t| !t.recording()) {
                    self.cursor = self.rt.ring.cursor_at_latest_keyframe();
                }
                *t = None;
                self.writer.trigger = "continuous";
            }
        }
        let recording = self.trigger.as_ref().map(Trigger::recording);
        self.rt.with_status(|s| {
            s.event_recording = recording;
            s.record_now = Some(mode.as_str());
        });
    }

    /// Events mode: a recording starts, from the ring at `from_ms` (see `trigger`).
    fn start_events_recording(&mut self, from_ms: i64, buf: &mut Vec<u8>) {
        let seek = trigger::seek(&self.rt.ring, from_ms, self.stop_floor, buf);
        self.cursor = seek.cursor;
        if seek.short {
            log::warn!(
                "stream {}: the ring no longer holds the pre-buffer from {}; recording from its oldest keyframe{}",
                self.rt.name(),
                crate::base::clock::rfc3339(from_ms),
                seek.from_ms.map(|t| format!(" ({})", crate::base::clock::rfc3339(t))).unwrap_or_default()
            );
        }
        self.rt.with_status(|s| s.event_recording = Some(true));
    }

    /// Events mode: the recording ends (its segment closed); the ring is not read until the next.
    fn stop_events_recording(&mut self, db: &Db, floor: u64) {
        self.writer.close(db, CloseReason::EventsOver);
        self.stop_floor = floor;
        if let Some(t) = &mut self.trigger {
            t.stopped();
        }
        self.rt.with_status(|s| s.event_recording = Some(false));
    }

    /// Tells the stream's status how far the open segment is written, when that changed.
    fn publish(&mut self) {
        let now = self.writer.writing();
        if now != self.published {
            self.rt.with_status(|s| s.writing = now);
            self.published = now;
        }
        if self.writer.failing != self.published_error {
            let err = self.writer.failing.clone();
            self.rt.with_status(|s| s.storage_error = err.clone());
            if err.is_none() {
                log::info!("stream {}: recording again (the disk accepts writes)", self.rt.name());
            }
            self.published_error = err;
        }
    }
}

/// Starts the storage thread.
pub fn spawn(
    settings: StorageSettings,
    clock: Arc<dyn Clock>,
) -> io::Result<(mpsc::Sender<Command>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let mut db = Db::open(&settings.db_path).map_err(|e| io::Error::other(e.to_string()))?;
    db.mark_rows_of_unknown_time();
    let handle = std::thread::Builder::new().name("storage".into()).spawn(move || {
        crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Storage);
        run(settings, db, rx, clock)
    })?;
    Ok((tx, handle))
}

fn run(settings: StorageSettings, db: Db, rx: mpsc::Receiver<Command>, clock: Arc<dyn Clock>) {
    let writer_cfg = WriterConfig {
        data_dir: settings.data_dir.clone(),
        segment_seconds: settings.segment_seconds,
        sync_interval: Duration::from_secs(u64::from(settings.sync_seconds)),
        sync: crate::base::fs::fdatasync,
    };
    let mut recorders: HashMap<String, Recorder> = HashMap::new();
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut last_retention = Instant::now();
    let mut backlog = Backlog::default();
    let mut restamp = Restamp { pending: false };
    let mut steps = StepWatch { skew_ms: None };
    let mut ballast = Ballast::new(&settings.data_dir);
    let mut last_trim = Instant::now();
    let mut schedule = ScheduleWatch { week_min: None };
    loop {
        // One beat per pass (every POLL at least): the watchdog's sign of progress.
        heartbeat::beat(Part::Storage);
        match rx.recv_timeout(POLL) {
            Ok(Command::Add(rt)) => {
                let name = rt.name().to_string();
                if let Some(mut old) = recorders.remove(&name) {
                    old.writer.close(&db, CloseReason::Shutdown);
                }
                let writer = SegmentWriter::new(rt.id(), &name, writer_cfg.clone(), clock.clone());
                recorders.insert(name, Recorder::new(rt, writer, local_week_minute(clock.now_ms())));
            }
            Ok(Command::Mode(name)) => {
                if let Some(r) = recorders.get_mut(&name) {
                    let mode = r.rt.spec().record_at(local_week_minute(clock.now_ms()));
                    switch_mode(&db, r, mode, &mut buf);
                }
            }
            Ok(Command::Remove(name)) => {
                if let Some(mut r) = recorders.remove(&name) {
                    drain(&db, &mut r, &mut buf, usize::MAX);
                    r.writer.close(&db, CloseReason::Shutdown);
                }
            }
            Ok(Command::Retention) => {
                backlog.replan(plan_retention(&db, &settings, &*clock, &recorders));
                last_retention = Instant::now();
            }
            Ok(Command::Purge(stream_id, answer)) => {
                let _ = answer.send(purge(&db, &settings.data_dir, stream_id, &recorders));
            }
            Ok(Command::Shutdown(ack)) => {
                for r in recorders.values_mut() {
                    drain(&db, r, &mut buf, usize::MAX);
                    r.writer.close(&db, CloseReason::Shutdown);
                }
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for r in recorders.values_mut() {
                    r.writer.close(&db, CloseReason::Shutdown);
                }
                return;
            }
        }
        let mut rotated = false;
        let mut failing = false;
        let mut full = std::mem::take(&mut backlog.hit_full);
        schedule.check(&db, &*clock, &mut recorders, &mut buf);
        if let Some(sub) = &settings.events {
            take_notices(sub, &mut recorders, &mut buf);
        }
        for r in recorders.values_mut() {
            let segments_before = r.writer.stats.segments;
            let caught_up = drain(&db, r, &mut buf, MAX_RECORDS_PER_PASS);
            if caught_up && r.trigger.as_ref().is_some_and(|t| t.over_at(clock.now_ms())) {
                let floor = r.cursor.next_seq();
                r.stop_events_recording(&db, floor);
            }
            r.writer.tick(&db);
            restamp.pending |= r.writer.take_wrote_unknown();
            r.publish();
            rotated |= r.writer.stats.segments != segments_before;
            failing |= r.writer.failing.is_some();
            full |= r.writer.failing.as_deref().is_some_and(reserve::is_disk_full);
        }
        restamp.run_if_due(&db, &*clock, &mut recorders);
        steps.check(&db, &*clock);
        // A failing writer may be a full disk: plan at once (every second) rather than in 10 s.
        let released = full && ballast.release();
        let due = last_retention.elapsed() >= RETENTION_EVERY
            || ((rotated || failing) && last_retention.elapsed() >= Duration::from_secs(1));
        if released || (due && backlog.is_empty()) {
            backlog.replan(plan_retention(&db, &settings, &*clock, &recorders));
            expire_events(&db, &settings, &*clock);
            last_retention = Instant::now();
        }
        ballast.make_if_room(&settings.data_dir, failing);
        backlog.work(&db, &settings.data_dir);
        if last_trim.elapsed() >= TRIM_EVERY {
            crate::base::memory::release_free();
            last_trim = Instant::now();
        }
    }
}

/// How often the allocator's free pages go back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Rows of unknown time this process wrote, to re-stamp once the clock is set.
struct Restamp {
    pending: bool,
}

impl Restamp {
    /// Re-stamps rows and open segments by the step, if any wait and the wall
    /// clock is trusted; a failure is retried in the next pass.
    fn run_if_due(&mut self, db: &Db, clock: &dyn Clock, recorders: &mut HashMap<String, Recorder>) {
        if !self.pending {
            return;
        }
        let Some(step) = clock.step_ms() else { return };
        match db.restamp(step, clock.now_ms()) {
            Ok((segments, gaps)) => {
                for r in recorders.values_mut() {
                    r.writer.restamp(step);
                    r.publish();
                }
                self.pending = false;
                log::info!(
                    "the wall clock is set: {segments} recordings and {gaps} gaps of unknown time moved by {step} ms"
                );
            }
            Err(e) => log::warn!("cannot re-stamp the recordings of unknown time: {e}"),
        }
    }
}

/// A step of the wall clock smaller than this is drift or NTP slewing.
const CLOCK_STEP_MS: i64 = 10_000;

/// Notices steps of the wall clock (against monotonic time) and records them.
struct StepWatch {
    /// Wall minus provisional time at the last pass.
    skew_ms: Option<i64>,
}

impl StepWatch {
    fn check(&mut self, db: &Db, clock: &dyn Clock) {
        let now = clock.now_ms();
        let skew = now - clock.provisional_ms();
        let Some(last) = self.skew_ms.replace(skew) else { return };
        let step_ms = skew - last;
        if step_ms.abs() < CLOCK_STEP_MS {
            self.skew_ms = Some(last); // slow drift adds up to a step, if it ever does
            return;
        }
        log::warn!("the wall clock stepped by {step_ms} ms (now {now}): recorded, and sessions moved with it");
        if let Err(e) = db.record_clock_step(ClockStep { at_ms: now, step_ms }) {
            log::warn!("cannot record the clock step: {e}");
        }
    }
}

/// The ballast (see `reserve`): released when the disk is full, made again when there is room.
struct Ballast {
    reserve: Reserve,
    checked: Instant,
}

impl Ballast {
    /// Makes it at start-up (a failure is logged; it is tried again later).
    fn new(data_dir: &Path) -> Ballast {
        let b = Ballast { reserve: Reserve::new(data_dir), checked: Instant::now() };
        if let Err(e) = b.reserve.make() {
            log::warn!("cannot make the {} MB disk reserve: {e} (tried again when there is room)", reserve::SIZE >> 20);
        }
        b
    }

    /// Releases it; true if it was there.
    fn release(&mut self) -> bool {
        let released = self.reserve.release();
        if released {
            log::warn!(
                "disk full: released the {} MB reserve so the database can delete rows and retention can free space",
                reserve::SIZE >> 20
            );
        }
        released
    }

    /// Makes it again (checked every `RETENTION_EVERY`) when no writer fails and twice its size is free.
    fn make_if_room(&mut self, data_dir: &Path, failing: bool) {
        if failing || self.checked.elapsed() < RETENTION_EVERY {
            return;
        }
        self.checked = Instant::now();
        if self.reserve.held() || retention::disk_usage(data_dir).map_or(true, |d| d.free_bytes < 2 * reserve::SIZE) {
            return;
        }
        match self.reserve.make() {
            Ok(()) => log::info!("the disk has room again: the {} MB reserve is made again", reserve::SIZE >> 20),
            Err(e) => log::warn!("cannot make the disk reserve again: {e}"),
        }
    }
}

/// Planned deletions not carried out yet, oldest first.
#[derive(Default)]
struct Backlog {
    todo: std::collections::VecDeque<retention::Deletion>,
    began: Option<Instant>,
    done: usize,
    freed: u64,
    /// A batch failed because the disk is full (taken by the loop).
    hit_full: bool,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.todo.is_empty()
    }

    /// Replaces what is left of the previous plan (a policy change may have made it wrong).
    fn replan(&mut self, plan: Vec<retention::Deletion>) {
        if plan.is_empty() {
            self.todo.clear();
            return;
        }
        let bytes: u64 = plan.iter().map(|d| d.bytes).sum();
        if plan.len() > RETENTION_BATCH {
            log::info!(
                "retention: {} segments ({} MB) to delete, in batches between ring drains",
                plan.len(),
                bytes >> 20
            );
        }
        *self =
            Backlog { todo: plan.into(), began: Some(Instant::now()), hit_full: self.hit_full, ..Backlog::default() };
    }

    /// Carries out batches for at most `RETENTION_BUDGET`; logs the total when the plan is done.
    fn work(&mut self, db: &Db, data_dir: &Path) {
        let began = Instant::now();
        while !self.todo.is_empty() && began.elapsed() < RETENTION_BUDGET {
            self.batch(db, data_dir);
        }
        if began.elapsed() > SLOW {
            log::warn!("retention: one pass took {:?}", began.elapsed());
        }
    }

    fn batch(&mut self, db: &Db, data_dir: &Path) {
        let n = self.todo.len().min(RETENTION_BATCH);
        let batch: Vec<retention::Deletion> = self.todo.drain(..n).collect();
        match retention::execute(db, data_dir, &batch) {
            Ok(out) => {
                self.done += out.rows_deleted;
                self.freed += batch.iter().map(|d| d.bytes).sum::<u64>();
                for f in out.failures {
                    log::warn!("retention: {f}");
                }
            }
            Err(e) => {
                log::warn!("retention: {e}; the rest of this plan waits for the next one");
                self.hit_full |= reserve::is_disk_full(&e.to_string());
                self.todo.clear();
            }
        }
        if self.todo.is_empty() {
            let took = self.began.map(|t| t.elapsed()).unwrap_or_default();
            log::info!("retention: deleted {} segments ({} MB) in {took:?}", self.done, self.freed >> 20);
        }
    }
}

/// Ends what the new mode does not continue, then switches: a continuous
/// recording ends (drained to now) when events or off take over, an events
/// recording when off does; events to continuous runs on.
fn switch_mode(db: &Db, r: &mut Recorder, mode: RecordMode, buf: &mut Vec<u8>) {
    let ends = match (r.mode, mode) {
        (RecordMode::Continuous, RecordMode::Events) => Some(CloseReason::EventsOver),
        (RecordMode::Continuous | RecordMode::Events, RecordMode::Off) => Some(CloseReason::ScheduleOff),
        _ => None,
    };
    if let Some(reason) = ends {
        drain(db, r, buf, usize::MAX);
        r.writer.close(db, reason);
        if let Some(t) = &mut r.trigger {
            t.stopped();
        }
        r.stop_floor = r.cursor.next_seq();
    }
    if r.mode != mode {
        log::info!("stream {}: recording mode now {} ({})", r.rt.name(), mode.as_str(), schedule_note(r));
    }
    r.set_mode(mode);
}

fn schedule_note(r: &Recorder) -> &'static str {
    if r.rt.spec().schedule.is_empty() {
        "record"
    } else {
        "schedule"
    }
}

/// Re-evaluates the streams' schedules when the local minute changes.
struct ScheduleWatch {
    week_min: Option<u32>,
}

impl ScheduleWatch {
    fn check(&mut self, db: &Db, clock: &dyn Clock, recorders: &mut HashMap<String, Recorder>, buf: &mut Vec<u8>) {
        let now = local_week_minute(clock.now_ms());
        if self.week_min == Some(now) {
            return;
        }
        self.week_min = Some(now);
        for r in recorders.values_mut() {
            let mode = r.rt.spec().record_at(now);
            if mode != r.mode {
                switch_mode(db, r, mode, buf);
            }
        }
    }
}

/// Hands the events hub's notices to the events-mode recorders of their streams.
fn take_notices(sub: &crate::events::Subscription, recorders: &mut HashMap<String, Recorder>, buf: &mut Vec<u8>) {
    while let Some(n) = sub.next(Duration::ZERO) {
        let Some(r) = recorders.get_mut(&n.event.stream) else { continue };
        if let Some(from_ms) = r.trigger.as_mut().and_then(|t| t.on_notice(&n)) {
            r.start_events_recording(from_ms, buf);
        }
    }
}

/// Moves up to `max` records from the ring into the writer; true if it
/// caught up (or, in events mode between recordings, has nothing to read).
fn drain(db: &Db, r: &mut Recorder, buf: &mut Vec<u8>, max: usize) -> bool {
    if r.mode == RecordMode::Off || r.trigger.as_ref().is_some_and(|t| !t.recording()) {
        r.drained = Instant::now();
        return true;
    }
    let lag = r.drained.elapsed();
    r.drained = Instant::now();
    if lag > r.lag_max {
        r.lag_max = lag;
        r.rt.with_status(|s| s.storage_lag_max_ms = lag.as_millis() as u64);
    }
    for _ in 0..max {
        match r.rt.ring.read(&mut r.cursor, buf) {
            ReadResult::Empty => return true,
            ReadResult::Frame { seq, track: Track::Video, key: true, pts } if ends_before(r, pts) => {
                // This keyframe is the next recording's earliest start.
                r.stop_events_recording(db, seq);
                return true;
            }
            ReadResult::Frame { track, key, pts, .. } => r.writer.on_frame(db, track, key, pts, buf),
            ReadResult::Run { run, .. } => r.writer.on_run(db, run),
            ReadResult::Gap { lost_from, lost_to } => {
                log::warn!("stream {}: recording fell behind, {} records lost", r.rt.name(), lost_to - lost_from);
                r.rt.with_status(|s| s.gaps += 1);
                r.writer.on_gap(db);
            }
        }
    }
    false
}

/// Whether an events recording ends before this video keyframe.
fn ends_before(r: &Recorder, pts: i64) -> bool {
    match (&r.trigger, r.writer.wall_ms(pts)) {
        (Some(t), Some(wall)) => t.ends_before(wall),
        _ => false,
    }
}

/// Plans retention (oldest first); the open segments are never planned.
fn plan_retention(
    db: &Db,
    settings: &StorageSettings,
    clock: &dyn Clock,
    recorders: &HashMap<String, Recorder>,
) -> Vec<retention::Deletion> {
    let began = Instant::now();
    let open: HashSet<i64> = recorders.values().filter_map(|r| r.writer.open_segment_id()).collect();
    let policies = match db.list_streams() {
        Ok(streams) => streams
            .into_iter()
            .map(|s| {
                let p = retention::StreamPolicy {
                    retention_days: s.spec.retention_days,
                    // Never shorter than the stream's own retention.
                    event_retention_days: s.spec.retention_days.map(|d| d.max(s.spec.event_retention_days)),
                    max_bytes: s.spec.max_storage_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
                    keep_until_replicated: settings.keep_until_replicated && s.spec.replicate,
                };
                (s.id, p)
            })
            .collect(),
        Err(e) => {
            log::warn!("retention: cannot list streams: {e}");
            return Vec::new();
        }
    };
    let disk = match retention::disk_usage(&settings.data_dir) {
        // A missing ballast counts as used: retention frees room for it too.
        Ok(d) if !Reserve::new(&settings.data_dir).held() => {
            retention::Disk { free_bytes: d.free_bytes.saturating_sub(reserve::SIZE), ..d }
        }
        Ok(d) => d,
        Err(e) => {
            log::warn!("retention: cannot stat {}: {e}", settings.data_dir.display());
            return Vec::new();
        }
    };
    let mut walked = 0usize;
    let walk = |f: &mut dyn FnMut(&retention::Item) -> bool| {
        db.each_retention_item(clock.now_ms(), &mut |it| {
            walked += 1;
            f(&retention::Item { open: it.open || open.contains(&it.id), ..*it })
        })
    };
    let forward_steps = match db.forward_clock_steps() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("retention: cannot read the clock steps, without which age could count a step: {e}");
            return Vec::new();
        }
    };
    let now = retention::AgeClock { now_ms: clock.now_ms(), forward_steps };
    let plan = retention::plan_streaming(now, walk, &policies, disk, settings.min_free_percent);
    if began.elapsed() > SLOW {
        log::warn!("retention: planning ({walked} rows read) took {:?}", began.elapsed());
    }
    plan.unwrap_or_else(|e| {
        log::warn!("retention: cannot list segments: {e}");
        Vec::new()
    })
}

/// Deletes every closed recording of a stream that is not being written.
fn purge(db: &Db, data_dir: &Path, stream_id: i64, recorders: &HashMap<String, Recorder>) -> Result<usize, String> {
    let open: HashSet<i64> = recorders.values().filter_map(|r| r.writer.open_segment_id()).collect();
    let segs = db.segments_overlapping(stream_id, i64::MIN, i64::MAX).map_err(|e| e.to_string())?;
    let ids: Vec<i64> = segs.iter().map(|s| s.id).filter(|id| !open.contains(id)).collect();
    let moved = db.delete_segments_to_garbage(&ids).map_err(|e| e.to_string())?;
    collect_garbage(db, data_dir);
    Ok(moved.len())
}

/// Deletes events older than `[events] retention_days` with their files
/// (events are kept apart from recordings: deleting these never deletes events).
fn expire_events(db: &Db, settings: &StorageSettings, clock: &dyn Clock) {
    let days = settings.events_retention_days;
    match crate::events::expire(db, &settings.data_dir, clock.now_ms(), days) {
        Ok(0) => {}
        Ok(n) => log::info!("retention: deleted {n} event(s) older than {days} days"),
        Err(e) => log::warn!("retention: events: {e}"),
    }
}

/// Finishes pending deletions (invariant 3), logging what could not be done.
fn collect_garbage(db: &Db, data_dir: &Path) -> usize {
    match retention::collect_garbage(db, data_dir) {
        Ok(out) => {
            for f in &out.failures {
                log::warn!("garbage: {f}");
            }
            out.files_removed
        }
        Err(e) => {
            log::warn!("garbage: {e}");
            0
        }
    }
}

/// What start-up reconciliation (or `oxinvr check`) found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub garbage_removed: usize,
    pub open_recovered: usize,
    pub bytes_truncated: u64,
    pub rows_missing_file: usize,
    pub rows_wrong_size: usize,
    pub rows_unplayable: usize,
    pub orphans_adopted: usize,
    pub orphans_removed: usize,
    pub orphans_unknown_stream: usize,
    pub segments_checked: usize,
}

impl Report {
    /// True if the database and the files agree (after repair, if repairing).
    pub fn problems(&self) -> usize {
        self.rows_missing_file + self.rows_wrong_size + self.rows_unplayable + self.orphans_unknown_stream
    }
}

/// Brings rows and files into agreement (invariants 1-3 of ARCHITECTURE.md).
/// With `repair` false it only counts what it would fix.
pub fn reconcile(db: &Db, data_dir: &Path, repair: bool) -> Result<Report, String> {
    let mut rep = Report::default();
    if repair {
        rep.garbage_removed = collect_garbage(db, data_dir);
    }
    let streams: Vec<_> = db.list_streams().map_err(|e| e.to_string())?;
    for st in &streams {
        let segs = db.segment_checks(st.id).map_err(|e| e.to_string())?;
        for seg in segs {
            rep.segments_checked += 1;
            let path = data_dir.join(&seg.path);
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => {
                    rep.rows_missing_file += 1;
                    if repair {
                        drop_row(db, data_dir, seg.id);
                    }
                    continue;
                }
            };
            let fine = if seg.closed { len == seg.bytes } else { len >= seg.bytes };
            if !seg.closed {
                rep.open_recovered += 1;
            } else if !fine {
                rep.rows_wrong_size += 1;
            }
            if seg.closed && fine {
                continue;
            }
            if !repair {
                continue;
            }
            match mp4::recover_file(&path) {
                Ok((scan, cut)) if !scan.fragments.is_empty() => {
                    rep.bytes_truncated += cut;
                    let p = progress_from_scan(seg.start_ms, &scan);
                    if let Err(e) = db.update_segment(seg.id, &p) {
                        log::warn!("cannot update segment {}: {e}", seg.id);
                    }
                }
                Ok(_) | Err(_) => {
                    rep.rows_unplayable += 1;
                    drop_row(db, data_dir, seg.id);
                }
            }
        }
    }
    adopt_orphans(db, data_dir, repair, &mut rep)?;
    Ok(rep)
}

/// Milliseconds of `ticks` at `timescale`.
fn ticks_ms(ticks: u64, timescale: u32) -> i64 {
    i64::try_from(u128::from(ticks) * 1000 / u128::from(timescale.max(1))).unwrap_or(i64::MAX)
}

/// A scanned file's progress. Saturating: the times come from a file on disk,
/// which may be anything after a crash.
pub(crate) fn progress_from_scan(start_ms: i64, scan: &mp4::ScannedFile) -> SegmentProgress {
    let end = scan.fragments.last().map(|f| f.start_ticks.saturating_add(u64::from(f.duration_ticks)));
    SegmentProgress {
        end_ms: start_ms.saturating_add(end.map_or(0, |t| ticks_ms(t, scan.video_timescale))),
        bytes: scan.valid_len,
        frames: scan.fragments.iter().map(|f| u64::from(f.frames)).sum(),
        audio_frames: scan.audio_frames,
        fragments: scan.fragments.clone(),
        closed: true,
    }
}

fn drop_row(db: &Db, data_dir: &Path, id: i64) {
    match db.delete_segments_to_garbage(&[id]) {
        Ok(_) => {
            collect_garbage(db, data_dir);
        }
        Err(e) => log::warn!("cannot delete segment row {id}: {e}"),
    }
}

/// Files under recordings/ without a row: adopt the valid ones, remove the rest.
fn adopt_orphans(db: &Db, data_dir: &Path, repair: bool, rep: &mut Report) -> Result<(), String> {
    let root = data_dir.join("recordings");
    let Ok(stream_dirs) = fs::read_dir(&root) else { return Ok(()) };
    for sd in stream_dirs.flatten() {
        let stream_name = sd.file_name().to_string_lossy().into_owned();
        let stream = db.stream_by_name(&stream_name).map_err(|e| e.to_string())?;
        let known = match &stream {
            Some(s) => db.segment_paths(s.id).map_err(|e| e.to_string())?,
            None => HashSet::new(),
        };
        let Ok(days) = fs::read_dir(sd.path()) else { continue };
        for day in days.flatten() {
            let Ok(files) = fs::read_dir(day.path()) else { continue };
            for f in files.flatten() {
                let path = f.path();
                let rel = path.strip_prefix(data_dir).unwrap_or(&path).to_string_lossy().into_owned();
                if known.contains(&rel) {
                    continue;
                }
                let Some(stream) = &stream else {
                    rep.orphans_unknown_stream += 1;
                    log::warn!("{} belongs to no known stream; left alone", path.display());
                    continue;
                };
                let name = f.file_name().to_string_lossy().into_owned();
                let start = segment::start_ms_from_name(&name);
                let scan = mp4::scan_file(&path).ok().filter(|s| !s.fragments.is_empty());
                match (start, scan, repair) {
                    (Some(start_ms), Some(_), true) => match adopt(db, stream.id, &rel, &path, start_ms) {
                        Ok(()) => rep.orphans_adopted += 1,
                        Err(e) => log::warn!("cannot adopt {}: {e}", path.display()),
                    },
                    (Some(_), Some(_), false) => rep.orphans_adopted += 1,
                    (_, _, true) => {
                        if fs::remove_file(&path).is_ok() {
                            let _ = crate::base::fs::sync_dir(&day.path());
                            rep.orphans_removed += 1;
                        }
                    }
                    (_, _, false) => rep.orphans_removed += 1,
                }
            }
        }
    }
    Ok(())
}

fn adopt(db: &Db, stream_id: i64, rel: &str, path: &Path, start_ms: i64) -> Result<(), String> {
    let (scan, _) = mp4::recover_file(path).map_err(|e| e.to_string())?;
    let new = NewSegment {
        stream_id,
        path: rel.to_string(),
        start_ms,
        codec: scan.codec.clone(),
        width: scan.width,
        height: scan.height,
        video_timescale: scan.video_timescale,
        init_len: scan.init_len,
        has_audio: scan.has_audio,
        trigger: "adopted".into(),
        // Named before this firmware was built: recorded while the clock was not set.
        time_unknown: start_ms < crate::base::clock::WALL_FLOOR_MS,
    };
    let id = db.insert_segment(&new).map_err(|e| e.to_string())?;
    db.update_segment(id, &progress_from_scan(start_ms, &scan)).map_err(|e| e.to_string())
}
