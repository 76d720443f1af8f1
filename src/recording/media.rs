//! Types shared by every box of the data flow: what a frame is and what codec
//! parameters describe a run of frames.
//!
//! Invariants:
//! - Within one *run* (one RTSP session with unchanged codec parameters and no
//!   timestamp jump) `pts` of each track is monotonic and counts ticks of that
//!   track's `timescale` from an arbitrary origin; `RunStart::anchor_pts` maps
//!   to `RunStart::anchor_wall_ms`. A run with `time_unknown` was anchored
//!   while the wall clock was below its floor: its anchor is on the clock's
//!   provisional timeline (see `base::clock`), not wall time.
//! - A run always starts with a `Params` record in the ring; the first video
//!   frame after it is a keyframe. Every new run starts a new segment.

use serde::{Deserialize, Serialize};

/// Which track of a stream a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Track {
    Video,
    Audio,
}

/// Video codec parameters as the camera announced them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoParams {
    /// RFC 6381 codec string, e.g. `avc1.64001f` or `hvc1.1.6.L93.B0`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Ticks per second of `pts` (90 000 for RTP video).
    pub timescale: u32,
    /// The complete ISO-BMFF sample entry box (`avc1`/`hvc1` with `avcC`/`hvcC`),
    /// as retina's `VideoParameters::mp4_sample_entry().build()` returns it.
    pub sample_entry: Vec<u8>,
}

/// Audio codec parameters (AAC only for now).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioParams {
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub codec: String,
    /// Ticks per second of `pts` (the RTP clock rate, usually the sample rate).
    pub timescale: u32,
    pub channels: u16,
    /// Duration of one frame in ticks (1024 for AAC-LC).
    pub frame_ticks: u32,
    /// The complete `mp4a` sample entry box with its `esds`.
    pub sample_entry: Vec<u8>,
}

/// Start of a run: codec parameters and the anchor that maps pts to wall time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    pub video: VideoParams,
    pub audio: Option<AudioParams>,
    /// Video pts (in `video.timescale` ticks) that happened at `anchor_wall_ms`.
    pub anchor_pts: i64,
    /// Milliseconds since the Unix epoch (provisional if `time_unknown`).
    pub anchor_wall_ms: i64,
    /// Anchored while the wall clock was untrusted (over 30 days before the firmware's build date).
    #[serde(default)]
    pub time_unknown: bool,
}

impl RunStart {
    /// Wall-clock milliseconds of a video pts of this run.
    pub fn wall_ms(&self, video_pts: i64) -> i64 {
        let ticks = video_pts - self.anchor_pts;
        self.anchor_wall_ms + ticks * 1000 / i64::from(self.video.timescale.max(1))
    }
}

/// One encoded access unit. Video data is in AVC/HEVC length-prefixed form
/// (4-byte lengths), exactly what goes into an MP4 `mdat`.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub track: Track,
    /// Random access point (IDR / IRAP) for video; always true for audio.
    pub key: bool,
    /// Presentation time in ticks of the track's timescale.
    pub pts: i64,
    pub data: &'a [u8],
}

pub use crate::index::fragments::FragmentEntry;
