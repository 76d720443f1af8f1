//! The running recorder as the other boxes see it: the `Recorder` (one
//! `StreamRuntime` per stream, its ring and live status, and the channels to
//! the executor and the storage thread) inside `Nvr`, the small state the HTTP
//! API and the CLI act through.
//!
//! Invariants: a stream in the registry has a database row; its ring lives as
//! long as some box holds its `Arc<StreamRuntime>`; every change of the
//! registry goes through `Recorder::edit` (config at start, API, shell).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::db::{RecordMode, StreamRow, StreamSpec};
use crate::ring::{self, Ring};
use crate::{ingest, storage};

/// What a stream is doing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Waiting for its turn in the staggered bring-up.
    Queued,
    Connecting,
    Streaming,
    /// Waiting before the next reconnect attempt.
    Backoff,
    Disabled,
    Stopped,
}

/// Live status of a stream, as shown by the API.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    pub state: StreamState,
    pub fps: f32,
    pub bitrate_kbps: f32,
    pub last_frame_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub audio: Option<String>,
    pub frames: u64,
    pub bytes: u64,
    pub connects: u64,
    pub gaps: u64,
    /// Longest the storage thread left this stream's ring unread (ms): how close
    /// recording came to losing records (the ring holds about `ring_seconds`).
    pub storage_lag_max_ms: u64,
    #[serde(skip)]
    window: RateWindow,
    /// The bitrate of each of the last windows, so a chart opened now has a past.
    #[serde(skip)]
    history: BitrateHistory,
    /// The open segment as far as it is written (its row moves only at each sync).
    #[serde(skip)]
    pub writing: Option<Writing>,
}

/// How far the storage thread has written a stream's open segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writing {
    pub segment_id: i64,
    pub end_ms: i64,
    pub bytes: u64,
}

/// Bitrate samples kept per stream: 2 min at one per `RATE_WINDOW_MS`.
pub const BITRATE_HISTORY_LEN: usize = 60;

/// (end of the window in epoch seconds, kbit/s), fixed size: 8 bytes a sample.
type BitrateHistory = heapless::HistoryBuf<(u32, f32), BITRATE_HISTORY_LEN>;

#[derive(Clone, Debug, Default)]
struct RateWindow {
    start_ms: i64,
    frames: u64,
    bytes: u64,
}

/// Rates are recomputed over windows of this length.
const RATE_WINDOW_MS: i64 = 2000;

impl StreamStatus {
    fn new(state: StreamState) -> Self {
        StreamStatus {
            state,
            fps: 0.0,
            bitrate_kbps: 0.0,
            last_frame_ms: None,
            last_error: None,
            last_error_ms: None,
            codec: None,
            width: None,
            height: None,
            audio: None,
            frames: 0,
            bytes: 0,
            connects: 0,
            gaps: 0,
            storage_lag_max_ms: 0,
            window: RateWindow::default(),
            history: BitrateHistory::new(),
            writing: None,
        }
    }

    /// Keeps the counters of the session a restart replaced (a stream's
    /// totals run over its whole life, not one session's).
    fn carry_counters(&mut self, old: &StreamStatus) {
        self.frames = old.frames;
        self.bytes = old.bytes;
        self.connects = old.connects;
        self.gaps = old.gaps;
        self.history = old.history.clone();
    }

    /// The last bitrate samples, oldest first: (end of the window in epoch ms, kbit/s).
    pub fn bitrate_history(&self) -> Vec<(i64, f32)> {
        self.history.oldest_ordered().map(|&(s, kbps)| (i64::from(s) * 1000, kbps)).collect()
    }

    /// Counts a received video frame and refreshes fps/bitrate once per window.
    pub fn count_video_frame(&mut self, bytes: usize, now_ms: i64) {
        self.frames += 1;
        self.bytes += bytes as u64;
        self.last_frame_ms = Some(now_ms);
        let w = &mut self.window;
        if w.start_ms == 0 {
            w.start_ms = now_ms;
        }
        w.frames += 1;
        w.bytes += bytes as u64;
        let elapsed = now_ms - w.start_ms;
        if elapsed >= RATE_WINDOW_MS {
            self.fps = (w.frames as f64 * 1000.0 / elapsed as f64) as f32;
            self.bitrate_kbps = (w.bytes as f64 * 8.0 / elapsed as f64) as f32;
            let secs = u32::try_from(now_ms.max(0) / 1000).unwrap_or(u32::MAX);
            self.history.write((secs, self.bitrate_kbps));
            *w = RateWindow { start_ms: now_ms, frames: 0, bytes: 0 };
        }
    }
}

/// Everything the running recorder keeps about one stream.
pub struct StreamRuntime {
    id: i64,
    name: String,
    /// The settings in effect; changed in place by `Edit::apply` for settings
    /// that do not touch the session (retention, quota, priority).
    spec: Mutex<StreamSpec>,
    pub ring: Arc<Ring>,
    status: Mutex<StreamStatus>,
}

impl StreamRuntime {
    pub fn new(row: StreamRow, ring: Arc<Ring>) -> Self {
        let state = if row.spec.enabled { StreamState::Queued } else { StreamState::Disabled };
        StreamRuntime {
            id: row.id,
            name: row.spec.name.clone(),
            spec: Mutex::new(row.spec),
            ring,
            status: Mutex::new(StreamStatus::new(state)),
        }
    }

    /// The database id of the stream.
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the settings in effect.
    pub fn spec(&self) -> StreamSpec {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the status under its lock (never held across I/O).
    pub fn with_status<T>(&self, f: impl FnOnce(&mut StreamStatus) -> T) -> T {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn status(&self) -> StreamStatus {
        self.with_status(|s| s.clone())
    }

    pub fn set_state(&self, state: StreamState) {
        self.with_status(|s| s.state = state);
    }

    pub fn set_error(&self, err: String, now_ms: i64) {
        log::warn!("stream {}: {err}", self.name());
        self.with_status(|s| {
            s.last_error = Some(err);
            s.last_error_ms = Some(now_ms);
        });
    }
}

/// The shared handle of a running recorder: what the web layer, the shell and
/// the start-up code need. Streams are changed only through `recorder.edit()`.
pub struct Nvr {
    pub config: Config,
    /// Login lockout and the console token (the rest of auth is in the database).
    pub auth: crate::auth::Auth,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub started_ms: i64,
    pub recorder: Recorder,
}

impl Nvr {
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Self {
        let started_ms = clock.now_ms();
        let recorder = Recorder::new(config.storage.ring_seconds, &config.storage.ring_dir);
        Nvr { config, auth: crate::auth::Auth::default(), clock, started: Instant::now(), started_ms, recorder }
    }
}

/// Where stream starts and stops are sent.
#[derive(Clone)]
pub struct Channels {
    pub ingest: smol::channel::Sender<ingest::Command>,
    pub storage: std::sync::mpsc::Sender<storage::Command>,
}

/// Default expected bitrate when a stream does not say.
const DEFAULT_BITRATE_KBPS: u32 = 4000;

/// The stream registry and the one control path that changes it.
///
/// Invariants: changes are applied one at a time (`edit` holds a lock for the
/// whole read-modify-write, database row included); a stream's session is
/// restarted only when a setting it runs with changed (`restart_reason`).
pub struct Recorder {
    ring_seconds: u32,
    ring_dir: String,
    streams: RwLock<BTreeMap<String, Arc<StreamRuntime>>>,
    channels: RwLock<Option<Channels>>,
    edits: Mutex<()>,
}

/// What `Edit::apply` did to the running stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was not running (new, or just enabled) and now is (or is now disabled).
    Started,
    /// Its session was restarted because this setting changed.
    Restarted(&'static str),
    /// Settings updated in place; the session, ring and open file are untouched.
    Updated,
}

/// The setting whose change needs a new session (and ring), if any: the
/// camera's URL (credentials included), enabled, record mode, and the bitrate
/// the ring is sized for.
pub fn restart_reason(old: &StreamSpec, new: &StreamSpec) -> Option<&'static str> {
    if old.url != new.url {
        Some("url")
    } else if old.enabled != new.enabled {
        Some("enabled")
    } else if old.record != new.record {
        Some("record")
    } else if old.bitrate_kbps != new.bitrate_kbps {
        Some("bitrate_kbps")
    } else {
        None
    }
}

impl Recorder {
    pub fn new(ring_seconds: u32, ring_dir: &str) -> Self {
        Recorder {
            ring_seconds,
            ring_dir: ring_dir.to_string(),
            streams: RwLock::new(BTreeMap::new()),
            channels: RwLock::new(None),
            edits: Mutex::new(()),
        }
    }

    pub fn set_channels(&self, ch: Channels) {
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = Some(ch);
    }

    fn channels(&self) -> Option<Channels> {
        self.channels.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The only way to change streams: one edit at a time, for as long as the
    /// returned guard lives.
    pub fn edit(&self) -> Edit<'_> {
        Edit { rec: self, _one_at_a_time: self.edits.lock().unwrap_or_else(|p| p.into_inner()) }
    }

    /// Ring size for a stream: its expected bitrate times `ring_seconds`.
    pub fn ring_bytes(&self, spec: &StreamSpec) -> usize {
        ring::ring_bytes(spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS), self.ring_seconds)
    }

    fn new_ring(&self, spec: &StreamSpec) -> std::io::Result<Ring> {
        Ring::new(&spec.name, self.ring_bytes(spec), self.ring_dir().as_deref())
    }

    fn ring_dir(&self) -> Option<std::path::PathBuf> {
        if !self.ring_dir.is_empty() {
            return Some((&self.ring_dir).into());
        }
        let shm = std::path::Path::new("/dev/shm");
        shm.is_dir().then(|| shm.to_path_buf())
    }

    /// Asks the storage thread to delete every recording of a stream (row
    /// first, then files) and waits for it. Returns how many were deleted.
    pub fn purge_recordings(&self, stream_id: i64) -> Result<usize, String> {
        let ch = self.channels().ok_or("the recorder is not running")?;
        let (tx, rx) = std::sync::mpsc::channel();
        ch.storage.send(storage::Command::Purge(stream_id, tx)).map_err(|_| "the storage thread has stopped")?;
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|_| "the storage thread did not answer".to_string())?
    }

    /// Bytes of all ring mappings.
    pub fn ring_bytes_total(&self) -> u64 {
        self.streams().iter().map(|s| s.ring.capacity() as u64).sum()
    }

    pub fn stream(&self, name: &str) -> Option<Arc<StreamRuntime>> {
        self.streams.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn streams(&self) -> Vec<Arc<StreamRuntime>> {
        self.streams.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// A change of the stream registry in progress (see `Recorder::edit`).
pub struct Edit<'a> {
    rec: &'a Recorder,
    _one_at_a_time: std::sync::MutexGuard<'a, ()>,
}

impl Edit<'_> {
    /// Brings the running stream in line with its (saved) row: starts it if it
    /// is not running, restarts it if a session setting changed, otherwise
    /// updates its settings in place.
    pub fn apply(&mut self, row: &StreamRow) -> std::io::Result<Applied> {
        let Some(rt) = self.rec.stream(&row.spec.name) else {
            let ring = self.rec.new_ring(&row.spec)?;
            self.start(row, ring, None);
            return Ok(Applied::Started);
        };
        let old = rt.spec();
        match restart_reason(&old, &row.spec) {
            Some(why) => {
                // The new ring first: if it cannot be made, the old session runs on.
                let ring = self.rec.new_ring(&row.spec)?;
                log::info!("stream {}: {why} changed; restarting it", row.spec.name);
                self.remove(&row.spec.name);
                self.start(row, ring, Some(rt.status()));
                Ok(Applied::Restarted(why))
            }
            None => {
                *rt.spec.lock().unwrap_or_else(|p| p.into_inner()) = row.spec.clone();
                let policy =
                    (old.retention_days, old.max_storage_mb) != (row.spec.retention_days, row.spec.max_storage_mb);
                if let (true, Some(ch)) = (policy, self.rec.channels()) {
                    // A new plan replaces any half-done one made under the old policy.
                    let _ = ch.storage.send(storage::Command::Retention);
                }
                Ok(Applied::Updated)
            }
        }
    }

    /// Registers the stream on `ring`, then recording and ingest as the row says;
    /// `before` is the status of the session this one replaces.
    fn start(&mut self, row: &StreamRow, ring: Ring, before: Option<StreamStatus>) {
        let rt = Arc::new(StreamRuntime::new(row.clone(), Arc::new(ring)));
        if let Some(old) = before {
            rt.with_status(|s| s.carry_counters(&old));
        }
        self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).insert(rt.name().to_string(), rt.clone());
        let spec = &row.spec;
        if let (true, Some(ch)) = (spec.enabled, self.rec.channels()) {
            if spec.record == RecordMode::Continuous {
                let _ = ch.storage.send(storage::Command::Add(rt.clone()));
            }
            let _ = ch.ingest.send_blocking(ingest::Command::Start(rt));
        }
    }

    /// Stops ingest and recording of a stream (its open segment is closed).
    pub fn remove(&mut self, name: &str) -> Option<Arc<StreamRuntime>> {
        let rt = self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).remove(name)?;
        if let Some(ch) = self.rec.channels() {
            let _ = ch.ingest.send_blocking(ingest::Command::Stop(name.to_string()));
            let _ = ch.storage.send(storage::Command::Remove(name.to_string()));
        }
        rt.set_state(StreamState::Stopped);
        Some(rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_computed_per_window() {
        let mut s = StreamStatus::new(StreamState::Streaming);
        for i in 0..=30 {
            s.count_video_frame(1000, 10_000 + i * 100);
        }
        // 21 frames of 1000 bytes counted over the first 2000 ms window.
        assert!((s.fps - 10.5).abs() < 0.01, "{}", s.fps);
        assert!((s.bitrate_kbps - 84.0).abs() < 0.1, "{}", s.bitrate_kbps);
        assert_eq!(s.frames, 31);
        assert_eq!(s.last_frame_ms, Some(13_000));
        assert_eq!(s.bitrate_history(), vec![(12_000, s.bitrate_kbps)]);
    }

    #[test]
    fn the_bitrate_history_keeps_the_last_windows_in_fixed_memory() {
        let mut s = StreamStatus::new(StreamState::Streaming);
        let windows = BITRATE_HISTORY_LEN as i64 + 5;
        for i in 0..=windows * 20 {
            // 10 frames a second; the size grows with the window, so each sample differs.
            s.count_video_frame(100 + (i / 20) as usize, 1_000_000 + i * 100);
        }
        let h = s.bitrate_history();
        assert_eq!(h.len(), BITRATE_HISTORY_LEN);
        assert!(h.windows(2).all(|p| p[1].0 - p[0].0 == 2000 && p[1].1 > p[0].1), "{h:?}");
        assert_eq!(h.last().map(|p| p.0), Some(1_000_000 + windows * 2000));
        assert!(std::mem::size_of::<BitrateHistory>() <= BITRATE_HISTORY_LEN * 8 + 16);
    }
}
