//! One stream as the running recorder sees it: `StreamRuntime` (its spec, ring
//! and live status), shared by ingest (writer), storage (reader) and the web
//! layer (status, live view).
//!
//! A stream with a `sub_url` also has a sub stream: a second `StreamRuntime`
//! (named `NAME/sub`, a name no stream can have) with its own small ring and
//! status, held by the main one (`sub()`), set once when the main one is
//! launched. It is not in the registry: ingest runs it, nothing records it.
//!
//! Invariants: a stream in the registry has a database row; its ring lives as
//! long as some box holds its `Arc<StreamRuntime>`; a sub stream lives and
//! dies with the main runtime that holds it (a restart makes both anew).

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::governor::budget::Wait;
use crate::index::db::{StreamRow, StreamSpec};
use crate::recording::ring::Ring;

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
    /// Enabled, but its memory reservation does not fit in the budget yet
    /// (`StreamStatus::memory_wait` has the numbers).
    #[serde(rename = "waiting_for_memory")]
    WaitingForMemory,
}

impl StreamState {
    /// Every state, for a metric that shows each one (`oxinvr_stream_state`).
    pub const ALL: [StreamState; 7] = [
        StreamState::Queued,
        StreamState::Connecting,
        StreamState::Streaming,
        StreamState::Backoff,
        StreamState::Disabled,
        StreamState::Stopped,
        StreamState::WaitingForMemory,
    ];

    /// The name the API shows (its serde name).
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Queued => "queued",
            StreamState::Connecting => "connecting",
            StreamState::Streaming => "streaming",
            StreamState::Backoff => "backoff",
            StreamState::Disabled => "disabled",
            StreamState::Stopped => "stopped",
            StreamState::WaitingForMemory => "waiting_for_memory",
        }
    }
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
    /// Events mode (`record = "events"`): whether an event recording runs now;
    /// `None` in the other modes.
    pub event_recording: Option<bool>,
    /// The record mode in force now (the schedule's, else `record`); `None`
    /// until the storage thread takes the stream (never, when it cannot record).
    pub record_now: Option<&'static str>,
    /// Longest the storage thread left this stream's ring unread (ms): how close
    /// recording came to losing records (the ring holds about `ring_seconds`).
    pub storage_lag_max_ms: u64,
    /// Why the storage thread cannot write this stream now (disk full, read-only,
    /// I/O error); `None` while it writes. Recording resumes by itself.
    pub storage_error: Option<String>,
    /// While the state is `waiting_for_memory`: what it needs, what is free.
    pub memory_wait: Option<Wait>,
    /// Why the pressure ladder stopped it (step 4, state `stopped`); it starts
    /// again when the ladder leaves that step.
    pub stopped_for: Option<String>,
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
/// Frames further apart than this in wall time (or going back) mean the wall clock
/// stepped (a camera down that long has nothing left in a 2-minute chart anyway).
const STEP_MS: i64 = 86_400_000;

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
            event_recording: None,
            record_now: None,
            storage_lag_max_ms: 0,
            storage_error: None,
            memory_wait: None,
            stopped_for: None,
            window: RateWindow::default(),
            history: BitrateHistory::new(),
            writing: None,
        }
    }

    /// Keeps the counters of the session a restart replaced (a stream's
    /// totals run over its whole life, not one session's).
    pub(super) fn carry_counters(&mut self, old: &StreamStatus) {
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
        let stepped = w.start_ms != 0 && (now_ms < w.start_ms || now_ms - w.start_ms > STEP_MS);
        if w.start_ms == 0 || stepped {
            // First frame, or the wall clock stepped (NTP setting a box that booted in
            // 1970): samples on the old time axis would stretch the chart over the step.
            if stepped {
                self.history.clear();
            }
            *w = RateWindow { start_ms: now_ms, frames: 0, bytes: 0 };
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
    /// The sub stream (`sub_url`), once launched.
    sub: std::sync::OnceLock<Arc<StreamRuntime>>,
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
            sub: std::sync::OnceLock::new(),
        }
    }

    /// The sub stream's runtime for this stream's row (`None` without a
    /// `sub_url`): its spec is the main one's with the sub URL, never recorded.
    pub fn sub_of(row: &StreamRow, ring: Arc<Ring>) -> Option<StreamRuntime> {
        let url = row.spec.sub_url.clone()?;
        let spec = StreamSpec {
            name: sub_name(&row.spec.name),
            url,
            record: crate::index::db::RecordMode::Off,
            sub_url: None,
            snapshot_url: None,
            ..row.spec.clone()
        };
        Some(StreamRuntime::new(StreamRow { spec, ..row.clone() }, ring))
    }

    /// The sub stream, if this stream has one running.
    pub fn sub(&self) -> Option<Arc<StreamRuntime>> {
        self.sub.get().cloned()
    }

    /// Attaches the sub stream (once; a second call is ignored).
    pub(super) fn set_sub(&self, sub: Arc<StreamRuntime>) {
        let _ = self.sub.set(sub);
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

    /// Updates the settings in place (a change that needs no new session).
    pub(super) fn set_spec(&self, spec: StreamSpec) {
        *self.spec.lock().unwrap_or_else(|p| p.into_inner()) = spec;
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

/// The name a sub stream runs under in ingest and logs: `NAME/sub` (no
/// stream name holds a `/`, so it never meets a real stream's).
pub fn sub_name(stream: &str) -> String {
    format!("{stream}/sub")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_apis() {
        for st in StreamState::ALL {
            assert_eq!(serde_json::to_value(st).ok(), Some(serde_json::json!(st.name())));
        }
    }

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
    fn a_wall_clock_step_starts_the_chart_again() {
        let mut s = StreamStatus::new(StreamState::Streaming);
        for i in 0..=50 {
            s.count_video_frame(1000, 20_000 + i * 100); // a box that booted in 1970
        }
        assert_eq!(s.bitrate_history().len(), 2);
        let ntp = 1_795_000_000_000;
        for i in 0..=20 {
            s.count_video_frame(1000, ntp + i * 100);
        }
        assert_eq!(s.bitrate_history(), vec![(ntp + 2000, s.bitrate_kbps)], "only samples after the step");
        assert!((s.bitrate_kbps - 84.0).abs() < 0.1, "no window spans the step: {}", s.bitrate_kbps);
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
