//! The one fMP4 fragmenter: turns a run's video and audio frames (pts in each
//! track's own ticks, as the ring holds them) into `moof+mdat` fragments.
//! Used by the segment files (one fragment per GOP, [`Cut::Gop`]) and by live
//! view (one fragment per video frame, [`Cut::PerFrame`]).
//!
//! Invariants:
//! - A timeline starts at 0 ([`Fragmenter::new`]): the first fragment's video
//!   tfdt is 0 and mfhd sequence numbers count from 1. Video tfdts run on
//!   without holes: each fragment starts where the previous one ended.
//! - A video frame's duration is the pts delta to the next video frame; a frame
//!   without a successor (the last of a segment, a live frame before a jump or a
//!   new run), or whose delta is not plausible (not forward, or over
//!   [`MAX_DELTA_SECS`]), gets the previous frame's duration.
//! - Audio is placed by its own pts, never by counting frames: the audio pts at
//!   video tfdt 0 is the video pts of the fragment's first frame minus its tfdt,
//!   converted to audio ticks (both RTP clocks count from the session start). A
//!   sample's duration is the pts delta to the next audio sample of the same
//!   fragment, so a gap in the audio pts lengthens the sample before it and
//!   later audio keeps its time; the last sample of a fragment gets the codec's
//!   frame length (`frame_ticks`), and the next fragment's audio tfdt is its
//!   first sample's own time again.
//! - Audio never overlaps what was already placed: a fragment's audio starts at
//!   or after the end of the previous fragment's audio. Leading samples that
//!   would start more than half a frame earlier (audio before the first video
//!   frame, or already covered) are dropped; one within half a frame is moved
//!   to the end of what was placed.
//! - Audio joins only a fragment that already has a video frame, so it never
//!   leads the video. The same frames give the same sample times whatever the
//!   cut (GOP or per frame); only the duration of an audio sample just before a
//!   fragment boundary can differ (nominal there, the exact delta inside).

use crate::recording::media::RunStart;
use crate::recording::mp4::{self, Sample, TrackRun};

/// A fragment is cut at the first keyframe after this many seconds ([`Cut::Gop`]).
pub const FRAGMENT_MIN_SECS: i64 = 1;
/// A fragment is cut after this many seconds even without a keyframe ([`Cut::Gop`]).
pub const FRAGMENT_MAX_SECS: i64 = 4;
/// A pts delta longer than this is a broken clock, not a frame's duration.
const MAX_DELTA_SECS: i64 = 10;

/// Where fragments are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// At the first keyframe after [`FRAGMENT_MIN_SECS`], or after [`FRAGMENT_MAX_SECS`] (files).
    Gop,
    /// Before every video frame (live view: one fragment per frame).
    PerFrame,
}

/// What a built fragment holds, for indexes and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    pub sequence: u32,
    /// Video tfdt: ticks of the video timescale since the timeline began.
    pub video_tfdt: u64,
    /// Sum of the video sample durations.
    pub duration: u64,
    pub frames: u32,
    /// The first video sample is a keyframe.
    pub key: bool,
    /// pts of the first video frame.
    pub first_pts: i64,
    /// Audio tfdt, if the fragment has audio samples.
    pub audio_tfdt: Option<u64>,
    pub audio_frames: u32,
}

/// A built fragment: write `header`, then `video`, then `audio`.
pub struct Fragment<'a> {
    /// moof + mdat header.
    pub header: Vec<u8>,
    pub video: &'a [u8],
    pub audio: &'a [u8],
    pub info: FragmentInfo,
    /// The sample tables in the header.
    pub video_samples: &'a [Sample],
    pub audio_samples: &'a [Sample],
}

impl Fragment<'_> {
    /// Bytes of the whole moof+mdat.
    pub fn len(&self) -> usize {
        self.header.len() + self.video.len() + self.audio.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pending video frame; its bytes are in `Fragmenter::video_data`.
#[derive(Clone, Copy, Debug)]
struct VideoFrame {
    pts: i64,
    size: u32,
    key: bool,
}

/// The clocks of a run the fragmenter needs.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    video_timescale: u32,
    /// (timescale, frame_ticks) of the audio track, if the run has one.
    audio: Option<(u32, u32)>,
}

/// Builds the fragments of one timeline (a segment file, or a live client
/// between two inits). Buffers are reused from one fragment to the next.
pub struct Fragmenter {
    cut: Cut,
    clocks: Clocks,
    sequence: u32,
    /// Video ticks placed: the next fragment's video tfdt.
    video_end: u64,
    /// Audio ticks placed: no later audio sample starts before.
    audio_end: u64,
    last_duration: u32,
    video: Vec<VideoFrame>,
    video_data: Vec<u8>,
    /// (pts, size) of the pending audio frames, bytes in `audio_data`.
    audio: Vec<(i64, u32)>,
    audio_data: Vec<u8>,
    video_samples: Vec<Sample>,
    audio_samples: Vec<Sample>,
}

impl Fragmenter {
    /// A timeline from 0 for frames of `run`.
    pub fn new(run: &RunStart, cut: Cut) -> Fragmenter {
        let video_timescale = run.video.timescale.max(1);
        Fragmenter {
            cut,
            clocks: Clocks { video_timescale, audio: run.audio.as_ref().map(|a| (a.timescale.max(1), a.frame_ticks)) },
            sequence: 1,
            video_end: 0,
            audio_end: 0,
            last_duration: (video_timescale / 30).max(1),
            video: Vec::new(),
            video_data: Vec::new(),
            audio: Vec::new(),
            audio_data: Vec::new(),
            video_samples: Vec::new(),
            audio_samples: Vec::new(),
        }
    }

    /// True if the pending frames must become a fragment before a video frame
    /// (`key`, `pts`) joins them.
    pub fn cuts_before(&self, key: bool, pts: i64) -> bool {
        let Some(first) = self.first_pts() else { return false };
        match self.cut {
            Cut::PerFrame => true,
            Cut::Gop => {
                let (len, ts) = (pts - first, i64::from(self.clocks.video_timescale));
                (key && len >= FRAGMENT_MIN_SECS * ts) || len >= FRAGMENT_MAX_SECS * ts
            }
        }
    }

    /// Adds a video frame to the pending fragment (call [`Self::cuts_before`] first).
    pub fn push_video(&mut self, key: bool, pts: i64, data: &[u8]) {
        self.video.push(VideoFrame { pts, size: len32(data), key });
        self.video_data.extend_from_slice(data);
    }

    /// Adds an audio frame to the pending fragment. False (and dropped) if the
    /// run has no audio or no video frame is pending: audio never leads.
    pub fn push_audio(&mut self, pts: i64, data: &[u8]) -> bool {
        if self.clocks.audio.is_none() || self.video.is_empty() {
            return false;
        }
        self.audio.push((pts, len32(data)));
        self.audio_data.extend_from_slice(data);
        true
    }

    /// pts of the first pending video frame.
    pub fn first_pts(&self) -> Option<i64> {
        self.video.first().map(|v| v.pts)
    }

    /// pts of the newest pending video frame.
    pub fn last_pts(&self) -> Option<i64> {
        self.video.last().map(|v| v.pts)
    }

    /// Audio frames pending.
    pub fn pending_audio(&self) -> usize {
        self.audio.len()
    }

    /// Duration given to the last video sample built (the frame interval).
    pub fn last_duration(&self) -> u32 {
        self.last_duration
    }

    /// Video ticks built so far: the next fragment's tfdt.
    pub fn video_end(&self) -> u64 {
        self.video_end
    }

    /// Builds the pending frames into one fragment, hands it to `write`, then
    /// clears them. `next_pts` is the pts of the video frame that follows, if
    /// known (the last sample's duration). `None` if nothing is pending.
    pub fn finish<R>(&mut self, next_pts: Option<i64>, write: impl FnOnce(&Fragment) -> R) -> Option<R> {
        if self.video.is_empty() {
            self.clear();
            return None;
        }
        self.video_durations(next_pts);
        let (audio_tfdt, skip) = self.place_audio();
        let info = self.info(audio_tfdt);
        let header = self.header(&info);
        let audio = self.audio_data.get(skip..).unwrap_or_default();
        let audio_samples = if audio_tfdt.is_some() { &self.audio_samples[..] } else { &[] };
        let fragment = Fragment {
            header,
            video: &self.video_data,
            audio,
            info,
            video_samples: &self.video_samples,
            audio_samples,
        };
        let result = write(&fragment);
        self.sequence = self.sequence.wrapping_add(1);
        self.video_end += info.duration;
        self.clear();
        Some(result)
    }

    /// Drops the pending frames without building them.
    pub fn clear(&mut self) {
        self.video.clear();
        self.video_data.clear();
        self.audio.clear();
        self.audio_data.clear();
    }

    /// Fills `video_samples`: each duration is the pts delta to the next frame.
    fn video_durations(&mut self, next_pts: Option<i64>) {
        let max = i64::from(self.clocks.video_timescale) * MAX_DELTA_SECS;
        self.video_samples.clear();
        for (i, v) in self.video.iter().enumerate() {
            let next = self.video.get(i + 1).map(|n| n.pts).or(next_pts);
            if let Some(d) = next.map(|n| n - v.pts).filter(|d| (1..=max).contains(d)) {
                self.last_duration = u32::try_from(d).unwrap_or(self.last_duration);
            }
            self.video_samples.push(Sample { duration: self.last_duration, size: v.size, key: v.key });
        }
    }

    /// Fills `audio_samples` from the pending audio, on the timeline of the
    /// pending video. Returns the audio tfdt (`None` without samples) and the
    /// bytes of `audio_data` to skip (dropped leading frames).
    fn place_audio(&mut self) -> (Option<u64>, usize) {
        self.audio_samples.clear();
        let (Some((ats, frame)), Some(first_video)) = (self.clocks.audio, self.first_pts()) else {
            return (None, 0);
        };
        // Audio pts at video tfdt 0 (exact in i128; floor keeps it stable).
        let video_origin = i128::from(first_video) - i128::from(self.video_end);
        let origin = (video_origin * i128::from(ats)).div_euclid(i128::from(self.clocks.video_timescale));
        let (frame, end) = (i128::from(frame), i128::from(self.audio_end));
        let max = i128::from(ats) * i128::from(MAX_DELTA_SECS);
        let taken = self.audio.iter().position(|&(pts, _)| i128::from(pts) - origin >= end - frame / 2);
        let Some(taken) = taken else { return (None, self.audio_data.len()) };
        let skip = self.audio[..taken].iter().map(|&(_, size)| size as usize).sum();
        // Never before what was placed (`end` >= 0), so it fits.
        let Ok(start) = u64::try_from((i128::from(self.audio[taken].0) - origin).max(end)) else {
            return (None, self.audio_data.len());
        };
        for (i, &(pts, size)) in self.audio.iter().enumerate().skip(taken) {
            let delta = self.audio.get(i + 1).map(|&(next, _)| i128::from(next) - i128::from(pts));
            let d = delta.filter(|d| (1..=max).contains(d)).unwrap_or(frame);
            self.audio_samples.push(Sample { duration: u32::try_from(d).unwrap_or(u32::MAX), size, key: true });
        }
        self.audio_end = start + self.audio_samples.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        (Some(start), skip)
    }

    fn info(&self, audio_tfdt: Option<u64>) -> FragmentInfo {
        FragmentInfo {
            sequence: self.sequence,
            video_tfdt: self.video_end,
            duration: self.video_samples.iter().map(|s| u64::from(s.duration)).sum(),
            frames: u32::try_from(self.video.len()).unwrap_or(u32::MAX),
            key: self.video.first().is_some_and(|v| v.key),
            first_pts: self.video.first().map_or(0, |v| v.pts),
            audio_tfdt,
            audio_frames: u32::try_from(self.audio_samples.len()).unwrap_or(u32::MAX),
        }
    }

    fn header(&self, info: &FragmentInfo) -> Vec<u8> {
        let video =
            TrackRun { track_id: mp4::VIDEO_TRACK_ID, base_decode_time: info.video_tfdt, samples: &self.video_samples };
        match info.audio_tfdt {
            Some(tfdt) => {
                let audio =
                    TrackRun { track_id: mp4::AUDIO_TRACK_ID, base_decode_time: tfdt, samples: &self.audio_samples };
                mp4::fragment_header(info.sequence, &[video, audio])
            }
            None => mp4::fragment_header(info.sequence, &[video]),
        }
    }
}

fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::mp4::tests::run_start;

    /// A frame fed to a fragmenter: video (key, pts, size) or audio (pts, size).
    #[derive(Clone, Copy)]
    enum In {
        V(bool, i64, usize),
        A(i64, usize),
    }

    /// Every sample built, with its decode time: (track, decode time, duration, size, key).
    type Table = Vec<(u32, u64, u32, u32, bool)>;

    fn table_of(f: &Fragment, table: &mut Table) {
        let mut t = f.info.video_tfdt;
        for s in f.video_samples {
            table.push((1, t, s.duration, s.size, s.key));
            t += u64::from(s.duration);
        }
        let mut t = f.info.audio_tfdt.unwrap_or(0);
        for s in f.audio_samples {
            table.push((2, t, s.duration, s.size, s.key));
            t += u64::from(s.duration);
        }
        let parsed = mp4::parse_moof(&f.header[..f.header.len() - 8]).expect("our moof parses");
        assert_eq!(parsed.len(), if f.audio_samples.is_empty() { 1 } else { 2 });
        assert_eq!(parsed[0].base_decode_time, f.info.video_tfdt);
        assert_eq!(f.audio.len() as u64, f.audio_samples.iter().map(|s| u64::from(s.size)).sum::<u64>());
    }

    /// Feeds `input` as the segment writer and live view do; returns the samples and fragment count.
    fn fragment(cut: Cut, audio: bool, input: &[In]) -> (Table, usize) {
        let mut f = Fragmenter::new(&run_start(audio, 0), cut);
        let (mut table, mut n) = (Table::new(), 0);
        for &i in input {
            match i {
                In::V(key, pts, size) => {
                    if f.cuts_before(key, pts) {
                        f.finish(Some(pts), |frag| table_of(frag, &mut table));
                        n += 1;
                    }
                    f.push_video(key, pts, &vec![0; size]);
                }
                In::A(pts, size) => {
                    f.push_audio(pts, &vec![1; size]);
                }
            }
        }
        n += f.finish(None, |frag| table_of(frag, &mut table)).map_or(0, |_| 1);
        (table, n)
    }

    fn track(t: &Table, id: u32) -> Vec<(u64, u32, u32, bool)> {
        t.iter().filter(|s| s.0 == id).map(|&(_, at, d, size, key)| (at, d, size, key)).collect()
    }

    /// `secs` of 25 fps video (a keyframe each second) from pts `v0`, and
    /// 48 kHz AAC on the same session clock, minus the audio frames in `holes`.
    fn camera(v0: i64, secs: i64, holes: std::ops::Range<i64>) -> Vec<In> {
        let a0 = v0 * 48_000 / 90_000;
        let mut input = Vec::new();
        let mut next_audio = 0i64;
        for i in 0..secs * 25 {
            input.push(In::V(i % 25 == 0, v0 + i * 3600, 100 + (i % 7) as usize));
            while next_audio * 1024 * 25 < (i + 1) * 48_000 {
                if !holes.contains(&next_audio) {
                    input.push(In::A(a0 + next_audio * 1024, 10 + (next_audio % 5) as usize));
                }
                next_audio += 1;
            }
        }
        input
    }

    #[test]
    fn video_durations_are_pts_deltas_and_the_last_repeats_the_previous() {
        let base = 1_000_000;
        let input = [0, 3000, 6003, 9000].map(|d| In::V(d == 0, base + d, 10));
        let (t, n) = fragment(Cut::Gop, false, &input);
        assert_eq!(n, 1);
        let video = track(&t, 1);
        let times: Vec<(u64, u32)> = video.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(times, [(0, 3000), (3000, 3003), (6003, 2997), (9000, 2997)]);
        // With the next frame known, the last duration is the delta to it.
        let mut f = Fragmenter::new(&run_start(false, 0), Cut::Gop);
        f.push_video(true, 0, &[0; 4]);
        f.push_video(false, 3000, &[0; 4]);
        let durations = f.finish(Some(9000), |fr| fr.video_samples.iter().map(|s| s.duration).collect::<Vec<_>>());
        assert_eq!(durations, Some(vec![3000, 6000]));
        assert_eq!((f.video_end(), f.last_duration()), (9000, 6000));
        // A pts that does not move forward keeps the previous duration.
        f.push_video(true, 9000, &[0; 4]);
        f.push_video(false, 9000, &[0; 4]);
        let durations = f.finish(None, |fr| fr.video_samples.iter().map(|s| s.duration).collect::<Vec<_>>());
        assert_eq!(durations, Some(vec![6000, 6000]));
    }

    #[test]
    fn the_first_fragment_starts_at_zero_and_sequences_count_from_one() {
        let mut f = Fragmenter::new(&run_start(false, 0), Cut::PerFrame);
        assert!(!f.cuts_before(true, 5), "nothing pending");
        f.push_video(true, 123_456, &[1; 3]);
        assert!(f.cuts_before(false, 123_457));
        let info = f.finish(Some(126_456), |fr| fr.info).expect("a fragment");
        assert_eq!(
            (info.sequence, info.video_tfdt, info.duration, info.key, info.first_pts),
            (1, 0, 3000, true, 123_456)
        );
        f.push_video(false, 126_456, &[1; 3]);
        let info = f.finish(None, |fr| fr.info).expect("a fragment");
        assert_eq!((info.sequence, info.video_tfdt, info.key), (2, 3000, false));
        assert!(f.finish(None, |_| ()).is_none(), "nothing pending");
    }

    #[test]
    fn gop_fragments_are_cut_at_a_keyframe_after_1_s_or_forced_after_4_s() {
        let mut f = Fragmenter::new(&run_start(false, 0), Cut::Gop);
        f.push_video(true, 0, &[0]);
        assert!(!f.cuts_before(true, 89_999), "a keyframe before 1 s joins");
        assert!(f.cuts_before(true, 90_000));
        assert!(!f.cuts_before(false, 359_999));
        assert!(f.cuts_before(false, 360_000), "forced at 4 s");
    }

    #[test]
    fn audio_times_come_from_the_audio_pts_across_a_gap() {
        let v0 = 90_000 * 3600; // an hour into the session
        let a0 = 48_000 * 3600;
        // 40 audio frames (~0.85 s) missing from the middle.
        let input = camera(v0, 4, 50..90);
        for cut in [Cut::Gop, Cut::PerFrame] {
            let (t, _) = fragment(cut, true, &input);
            let audio = track(&t, 2);
            let fed: Vec<i64> = input
                .iter()
                .filter_map(|i| match i {
                    In::A(pts, _) => Some(*pts),
                    In::V(..) => None,
                })
                .collect();
            assert_eq!(audio.len(), fed.len(), "{cut:?}: every audio frame is placed");
            for (s, pts) in audio.iter().zip(&fed) {
                assert_eq!(s.0 as i64, pts - a0, "{cut:?}: decode time is the audio pts from the video start");
            }
            // The sample before the gap spans it, in GOP mode where its successor is known.
            if cut == Cut::Gop {
                assert_eq!(audio[49].1, 41 * 1024);
            }
        }
    }

    #[test]
    fn audio_is_placed_by_pts_not_counted() {
        // Frames 1000 ticks apart (not the nominal 1024), as a slewed or odd clock gives.
        let mut f = Fragmenter::new(&run_start(true, 0), Cut::Gop);
        f.push_video(true, 90_000, &[0; 4]);
        for k in 0..4 {
            f.push_audio(48_000 + k * 1000, &[1; 2]);
        }
        let (tfdt, durations) = f
            .finish(Some(93_600), |fr| {
                (fr.info.audio_tfdt, fr.audio_samples.iter().map(|s| s.duration).collect::<Vec<_>>())
            })
            .expect("a fragment");
        assert_eq!((tfdt, durations), (Some(0), vec![1000, 1000, 1000, 1024]));
        // The next fragment starts at its first sample's pts, not at 4 x 1024.
        f.push_video(true, 93_600, &[0; 4]);
        f.push_audio(48_000 + 4 * 1000 + 2000, &[1; 2]);
        let tfdt = f.finish(None, |fr| fr.info.audio_tfdt).expect("a fragment");
        assert_eq!(tfdt, Some(6000));
    }

    #[test]
    fn audio_never_leads_or_overlaps() {
        let mut f = Fragmenter::new(&run_start(true, 0), Cut::PerFrame);
        assert!(!f.push_audio(0, &[9; 3]), "no video yet");
        f.push_video(true, 90_000, &[0; 4]);
        assert!(f.push_audio(48_000 - 1024, &[8; 3])); // before the video: dropped when built
        f.push_audio(48_000 + 100, &[7; 3]);
        let (tfdt, audio) = f.finish(Some(93_000), |fr| (fr.info.audio_tfdt, fr.audio.to_vec())).expect("built");
        assert_eq!((tfdt, audio), (Some(100), vec![7; 3]));
        // A frame within half a frame of the end of placed audio moves to it; one further back is dropped.
        f.push_video(false, 93_000, &[0; 4]);
        f.push_audio(48_000 + 100 + 1024 - 1024, &[6; 3]);
        f.push_audio(48_000 + 100 + 1024 - 300, &[5; 3]);
        let (tfdt, audio) = f.finish(None, |fr| (fr.info.audio_tfdt, fr.audio.to_vec())).expect("built");
        assert_eq!((tfdt, audio), (Some(1124), vec![5; 3]));
        let mut silent = Fragmenter::new(&run_start(false, 0), Cut::PerFrame);
        silent.push_video(true, 0, &[0]);
        assert!(!silent.push_audio(0, &[1]), "the run has no audio track");
    }

    #[test]
    fn gop_and_per_frame_cuts_give_the_same_sample_table() {
        let input = camera(7_000_000, 5, 60..75);
        let (gop, gop_n) = fragment(Cut::Gop, true, &input);
        let (per_frame, frame_n) = fragment(Cut::PerFrame, true, &input);
        assert_eq!((gop_n, frame_n), (5, 125));
        assert_eq!(track(&gop, 1), track(&per_frame, 1), "video samples");
        // Audio: the same decode times, sizes and (but at a hole across a fragment boundary) durations.
        let times = |t: &Table| track(t, 2).iter().map(|s| (s.0, s.2)).collect::<Vec<_>>();
        assert_eq!(times(&gop), times(&per_frame));
        let (a, b) = (track(&gop, 2), track(&per_frame, 2));
        let differ = a.iter().zip(&b).filter(|(x, y)| x.1 != y.1).count();
        assert!(differ <= 1, "only the sample before the hole may differ in duration: {differ}");
        let last = track(&gop, 1).last().copied().expect("video");
        assert_eq!(last.0 + u64::from(last.1), 5 * 90_000);
    }
}
