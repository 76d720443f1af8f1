//! The running recorder as the other boxes see it: one `StreamRuntime` per
//! stream (its ring and live status) and the channels to the executor and the
//! storage thread. The HTTP API and the CLI act through `Nvr` only.
//!
//! Invariants: a stream in `Nvr::streams` has a database row; its ring lives
//! as long as some box holds its `Arc<StreamRuntime>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::db::{RecordMode, StreamRow};
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
            window: RateWindow::default(),
            history: BitrateHistory::new(),
            writing: None,
        }
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
    pub row: StreamRow,
    pub ring: Arc<Ring>,
    status: Mutex<StreamStatus>,
}

impl StreamRuntime {
    pub fn new(row: StreamRow, ring: Arc<Ring>) -> Self {
        let state = if row.spec.enabled { StreamState::Queued } else { StreamState::Disabled };
        StreamRuntime { row, ring, status: Mutex::new(StreamStatus::new(state)) }
    }

    pub fn name(&self) -> &str {
        &self.row.spec.name
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

/// The shared handle of a running recorder.
pub struct Nvr {
    pub config: Config,
    /// Login lockout and the console token (the rest of auth is in the database).
    pub auth: crate::auth::Auth,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub started_ms: i64,
    streams: RwLock<BTreeMap<String, Arc<StreamRuntime>>>,
    channels: RwLock<Option<Channels>>,
}

/// Where stream starts and stops are sent.
#[derive(Clone)]
pub struct Channels {
    pub ingest: smol::channel::Sender<ingest::Command>,
    pub storage: std::sync::mpsc::Sender<storage::Command>,
}

/// Default expected bitrate when a stream does not say.
const DEFAULT_BITRATE_KBPS: u32 = 4000;

impl Nvr {
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Self {
        let started_ms = clock.now_ms();
        Nvr {
            config,
            auth: crate::auth::Auth::default(),
            clock,
            started: Instant::now(),
            started_ms,
            streams: RwLock::new(BTreeMap::new()),
            channels: RwLock::new(None),
        }
    }

    pub fn set_channels(&self, ch: Channels) {
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = Some(ch);
    }

    fn channels(&self) -> Option<Channels> {
        self.channels.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ring size for a stream: its expected bitrate times `ring_seconds`.
    pub fn ring_bytes(&self, row: &StreamRow) -> usize {
        ring::ring_bytes(row.spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS), self.config.storage.ring_seconds)
    }

    fn ring_dir(&self) -> Option<std::path::PathBuf> {
        let d = &self.config.storage.ring_dir;
        if !d.is_empty() {
            return Some(d.into());
        }
        let shm = std::path::Path::new("/dev/shm");
        shm.is_dir().then(|| shm.to_path_buf())
    }

    /// (Re)starts a stream from its row: a new ring, then recording and ingest
    /// as the row says. A running stream of that name is stopped first.
    pub fn start_stream(&self, row: StreamRow) -> std::io::Result<Arc<StreamRuntime>> {
        let old = self.stop_stream(&row.spec.name);
        let ring = Ring::new(&row.spec.name, self.ring_bytes(&row), self.ring_dir().as_deref())?;
        let rt = Arc::new(StreamRuntime::new(row, Arc::new(ring)));
        // A restart (a changed setting) keeps the camera's bitrate chart.
        if let Some(old) = old {
            let history = old.with_status(|s| s.history.clone());
            rt.with_status(|s| s.history = history);
        }
        self.insert_stream(rt.clone());
        let spec = &rt.row.spec;
        if let (true, Some(ch)) = (spec.enabled, self.channels()) {
            if spec.record == RecordMode::Continuous {
                let _ = ch.storage.send(storage::Command::Add(rt.clone()));
            }
            let _ = ch.ingest.send_blocking(ingest::Command::Start(rt.clone()));
        }
        Ok(rt)
    }

    /// Stops ingest and recording of a stream (its open segment is closed).
    pub fn stop_stream(&self, name: &str) -> Option<Arc<StreamRuntime>> {
        let rt = self.remove_stream(name)?;
        if let Some(ch) = self.channels() {
            let _ = ch.ingest.send_blocking(ingest::Command::Stop(name.to_string()));
            let _ = ch.storage.send(storage::Command::Remove(name.to_string()));
        }
        rt.set_state(StreamState::Stopped);
        Some(rt)
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

    pub fn insert_stream(&self, rt: Arc<StreamRuntime>) -> Option<Arc<StreamRuntime>> {
        self.streams.write().unwrap_or_else(|p| p.into_inner()).insert(rt.name().to_string(), rt)
    }

    pub fn remove_stream(&self, name: &str) -> Option<Arc<StreamRuntime>> {
        self.streams.write().unwrap_or_else(|p| p.into_inner()).remove(name)
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
