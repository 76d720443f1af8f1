//! Types shared by every box of the data flow: what a frame is and what codec
//! parameters describe a run of frames.
//!
//! Invariants:
//! - Within one *run* (one RTSP session with unchanged codec parameters and no
//!   timestamp jump) `pts` of each track is monotonic and counts ticks of that
//!   track's `timescale` from an arbitrary origin; `RunStart::anchor_pts` maps
//!   to `RunStart::anchor_wall_ms`.
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
    /// Milliseconds since the Unix epoch.
    pub anchor_wall_ms: i64,
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

/// One fragment (moof+mdat) of a stored segment, as kept in the database's
/// per-segment index and as recovered by walking the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentEntry {
    /// Byte offset of the `moof` box in the file.
    pub offset: u64,
    /// Bytes of `moof` + `mdat`.
    pub size: u32,
    /// Video decode time of the first sample (the `tfdt`), in video ticks
    /// relative to the segment's start (the first fragment has 0).
    pub start_ticks: u64,
    /// Sum of the video sample durations, in video ticks.
    pub duration_ticks: u32,
    /// Number of video samples.
    pub frames: u32,
    /// The first video sample is a random access point.
    pub key: bool,
}

impl FragmentEntry {
    /// Bytes per entry in the encoded index.
    pub const ENCODED_LEN: usize = 8 + 4 + 8 + 4 + 4 + 1;

    /// Encodes entries into the compact little-endian blob stored in SQLite.
    pub fn encode_all(entries: &[FragmentEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * Self::ENCODED_LEN);
        for e in entries {
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.size.to_le_bytes());
            out.extend_from_slice(&e.start_ticks.to_le_bytes());
            out.extend_from_slice(&e.duration_ticks.to_le_bytes());
            out.extend_from_slice(&e.frames.to_le_bytes());
            out.push(u8::from(e.key));
        }
        out
    }

    /// Decodes a blob written by [`Self::encode_all`]; `None` if its length is wrong.
    pub fn decode_all(blob: &[u8]) -> Option<Vec<FragmentEntry>> {
        if blob.len() % Self::ENCODED_LEN != 0 {
            return None;
        }
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(
            blob.chunks_exact(Self::ENCODED_LEN)
                .map(|c| FragmentEntry {
                    offset: u64_at(c, 0),
                    size: u32_at(c, 8),
                    start_ticks: u64_at(c, 12),
                    duration_ticks: u32_at(c, 20),
                    frames: u32_at(c, 24),
                    key: c[28] != 0,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_index_round_trips_and_rejects_bad_length() {
        let entries = vec![
            FragmentEntry { offset: 1234, size: 99, start_ticks: 0, duration_ticks: 90_000, frames: 30, key: true },
            FragmentEntry { offset: 1333, size: 7, start_ticks: 90_000, duration_ticks: 3000, frames: 1, key: false },
        ];
        let blob = FragmentEntry::encode_all(&entries);
        assert_eq!(blob.len(), 2 * FragmentEntry::ENCODED_LEN);
        assert_eq!(FragmentEntry::decode_all(&blob), Some(entries));
        assert_eq!(FragmentEntry::decode_all(&blob[1..]), None);
    }
}
