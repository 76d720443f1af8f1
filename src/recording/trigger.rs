//! The events mode (`record = "events"`): when a stream's storage recorder
//! writes, decided from the events hub's notices ([`Trigger`]), and where in
//! the ring a recording starts ([`seek`]).
//!
//! Invariants:
//! - Any event of the stream (motion, object, manual, external) starts a
//!   recording when none runs; while one runs, more events extend it. It ends
//!   at the first video keyframe at or after `post_seconds` past the end of
//!   the last event, once no event of the stream is ongoing; so overlapping
//!   and back-to-back events make one recording, and the recording ends on a
//!   keyframe, where the next one can start without losing a frame.
//! - A recording starts from the ring (never a new camera session), at the
//!   newest keyframe at or before `start_ms - pre_seconds`, but never before
//!   where the previous recording stopped (no frame is written twice); if the
//!   ring no longer reaches that far back, at its oldest keyframe (logged).
//! - Between recordings the ring is not read at all: nothing is written.

use std::collections::BTreeSet;

use crate::events::{Change, Notice};
use crate::recording::media::Track;
use crate::recording::ring::{Cursor, ReadResult, Ring};

/// The events mode's state of one stream.
#[derive(Clone, Debug)]
pub struct Trigger {
    stream: String,
    pre_ms: i64,
    post_ms: i64,
    /// Ongoing events of the stream (began, not ended), by id.
    open: BTreeSet<i64>,
    /// The recording runs at least until this wall time (last end + post).
    until_ms: i64,
    recording: bool,
}

impl Trigger {
    pub fn new(stream: &str, pre_seconds: u32, post_seconds: u32) -> Trigger {
        Trigger {
            stream: stream.to_string(),
            pre_ms: i64::from(pre_seconds) * 1000,
            post_ms: i64::from(post_seconds) * 1000,
            open: BTreeSet::new(),
            until_ms: i64::MIN,
            recording: false,
        }
    }

    /// New pre/post seconds (an edit of the stream); the state is kept.
    pub fn set_seconds(&mut self, pre_seconds: u32, post_seconds: u32) {
        self.pre_ms = i64::from(pre_seconds) * 1000;
        self.post_ms = i64::from(post_seconds) * 1000;
    }

    /// Whether a recording runs now.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Takes one notice of the events hub. Returns the wall time (ms) the
    /// ring should be read from when this starts a recording.
    pub fn on_notice(&mut self, n: &Notice) -> Option<i64> {
        let e = &n.event;
        if e.stream != self.stream {
            return None;
        }
        match n.change {
            Change::Began => {
                if e.end_ms.is_none() {
                    self.open.insert(e.id);
                }
                if let Some(end) = e.end_ms {
                    self.extend(end);
                }
                if self.recording {
                    return None;
                }
                self.recording = true;
                Some(e.start_ms.saturating_sub(self.pre_ms))
            }
            Change::Ended | Change::Deleted => {
                self.open.remove(&e.id);
                self.extend(e.end_ms.unwrap_or(e.start_ms));
                None
            }
        }
    }

    fn extend(&mut self, end_ms: i64) {
        self.until_ms = self.until_ms.max(end_ms.saturating_add(self.post_ms));
    }

    /// Whether the recording ends before a video keyframe of wall time `wall_ms`.
    pub fn ends_before(&self, wall_ms: i64) -> bool {
        self.recording && self.open.is_empty() && wall_ms >= self.until_ms
    }

    /// Whether a recording whose ring has nothing more to read ends now (the
    /// camera sends nothing, so no keyframe will end it).
    pub fn over_at(&self, now_ms: i64) -> bool {
        self.recording && self.open.is_empty() && now_ms >= self.until_ms.saturating_add(IDLE_GRACE_MS)
    }

    /// The recording ended.
    pub fn stopped(&mut self) {
        self.recording = false;
    }
}

/// A caught-up recording with no frames for this long past its end stops by the clock.
const IDLE_GRACE_MS: i64 = 5_000;

/// Where a recording starts (see the module's invariants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seek {
    pub cursor: Cursor,
    /// Wall time of the keyframe it starts at (`None`: the ring has none).
    pub from_ms: Option<i64>,
    /// The ring did not reach back to the asked time (not counting the floor).
    pub short: bool,
}

/// A cursor at the newest keyframe (or run start) at or before `target_ms`
/// whose seq is at least `floor_seq`, else at the oldest such keyframe.
/// Walks the ring once with a scratch cursor (a copy of the pre-buffer's
/// bytes through `buf`, once per recording).
pub fn seek(ring: &Ring, target_ms: i64, floor_seq: u64, buf: &mut Vec<u8>) -> Seek {
    let mut scan = ring.cursor_at_oldest_keyframe();
    // (seq, wall ms) of the chosen keyframe, and of the first one past the floor.
    let mut best: Option<(u64, i64)> = None;
    let mut first: Option<(u64, i64)> = None;
    let mut run = None;
    let mut floored = false;
    loop {
        let (seq, wall) = match ring.read(&mut scan, buf) {
            ReadResult::Empty => break,
            ReadResult::Gap { .. } => {
                // The writer lapped the scan: start over from what is left.
                (best, first, floored) = (None, None, false);
                continue;
            }
            ReadResult::Run { seq, run: r } => {
                let wall = r.anchor_wall_ms;
                run = Some(r);
                // The run replayed first may have left the ring: only its keyframes can start.
                if ring.cursor_at_keyframe(seq).is_none() {
                    continue;
                }
                (seq, wall)
            }
            ReadResult::Frame { seq, track: Track::Video, key: true, pts } => match &run {
                Some(r) => (seq, r.wall_ms(pts)),
                None => continue,
            },
            ReadResult::Frame { .. } => continue,
        };
        if seq < floor_seq {
            floored = true;
            continue;
        }
        first.get_or_insert((seq, wall));
        if wall > target_ms {
            break;
        }
        best = Some((seq, wall));
    }
    let short = best.is_none() && !floored;
    for (seq, wall) in best.into_iter().chain(first) {
        if let Some(cursor) = ring.cursor_at_keyframe(seq) {
            return Seek { cursor, from_ms: Some(wall), short };
        }
    }
    // Lapped between the walk and here (or nothing indexed): what is oldest now.
    Seek { cursor: ring.cursor_at_oldest_keyframe(), from_ms: None, short: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::{Clock, SimulatedClock};
    use crate::index::db::{EventKind, EventRow};
    use crate::recording::media::{Frame, RunStart, VideoParams};
    use std::time::Duration;

    fn notice(change: Change, id: i64, stream: &str, start_ms: i64, end_ms: Option<i64>) -> Notice {
        let event = EventRow {
            id,
            stream: stream.into(),
            kind: EventKind::Manual,
            label: String::new(),
            score: 1.0,
            zones: Vec::new(),
            start_ms,
            end_ms,
            best_box: None,
            snapshot: None,
            thumbnail: None,
        };
        Notice { change, event }
    }

    #[test]
    fn one_recording_spans_overlapping_events_and_ends_post_seconds_after_the_last() {
        let clock = SimulatedClock::new(1_000_000);
        let mut t = Trigger::new("door", 5, 10);
        assert!(!t.recording());
        assert_eq!(t.on_notice(&notice(Change::Began, 1, "other", clock.now_ms(), None)), None, "not its stream");
        assert_eq!(t.on_notice(&notice(Change::Began, 1, "door", clock.now_ms(), None)), Some(995_000));
        clock.advance(Duration::from_millis(3_000));
        assert_eq!(t.on_notice(&notice(Change::Began, 2, "door", clock.now_ms(), None)), None, "extends");
        clock.advance(Duration::from_millis(2_000));
        t.on_notice(&notice(Change::Ended, 1, "door", 1_000_000, Some(clock.now_ms())));
        assert!(!t.ends_before(clock.now_ms() + 60_000), "event 2 still runs");
        clock.advance(Duration::from_millis(4_000));
        t.on_notice(&notice(Change::Ended, 2, "door", 1_003_000, Some(clock.now_ms())));
        assert!(!t.ends_before(clock.now_ms() + 9_999));
        assert!(t.ends_before(clock.now_ms() + 10_000), "post_seconds after the last end");
        assert!(!t.over_at(clock.now_ms() + 10_000), "the clock ends it only after a grace");
        assert!(t.over_at(clock.now_ms() + 15_000));
        t.stopped();
        assert!(!t.ends_before(i64::MAX));
        // The next event starts a new recording, pre_seconds before it.
        clock.advance(Duration::from_millis(60_000));
        assert_eq!(t.on_notice(&notice(Change::Began, 3, "door", clock.now_ms(), None)), Some(clock.now_ms() - 5_000));
    }

    #[test]
    fn an_event_stored_over_and_a_deleted_one_end_like_ended_ones() {
        let mut t = Trigger::new("door", 2, 3);
        // POST /api/events with an end: Began then Ended, both with the end.
        assert_eq!(t.on_notice(&notice(Change::Began, 7, "door", 10_000, Some(12_000))), Some(8_000));
        assert!(!t.ends_before(14_999) && t.ends_before(15_000));
        t.stopped();
        assert_eq!(t.on_notice(&notice(Change::Began, 8, "door", 20_000, None)), Some(18_000));
        t.on_notice(&notice(Change::Deleted, 8, "door", 20_000, None));
        assert!(t.ends_before(23_000), "a deleted ongoing event counts as ended at its start");
    }

    fn run(anchor_wall_ms: i64) -> RunStart {
        let video = VideoParams {
            codec: "avc1.64001f".into(),
            width: 64,
            height: 64,
            timescale: 90_000,
            sample_entry: vec![0; 8],
        };
        RunStart { video, audio: None, anchor_pts: 0, anchor_wall_ms, time_unknown: false }
    }

    /// 20 s at 10 fps, a keyframe every second, wall time 100 000 at pts 0.
    fn filled_ring() -> Ring {
        let ring = Ring::new("t", 1 << 20, None).expect("ring");
        ring.push_run(&run(100_000)).expect("run");
        for i in 0..200i64 {
            let data = [0u8; 100];
            let f = Frame { track: Track::Video, key: i % 10 == 0, pts: i * 9_000, data: &data };
            ring.push_frame(&f).expect("push");
        }
        ring
    }

    #[test]
    fn seek_starts_at_the_keyframe_at_or_before_the_target_and_never_before_the_floor() {
        let ring = filled_ring();
        let mut buf = Vec::new();
        let s = seek(&ring, 112_500, 0, &mut buf);
        assert_eq!((s.from_ms, s.short), (Some(112_000), false));
        // The first read of a cursor at a keyframe inside a run replays the run.
        let mut c = s.cursor;
        assert!(matches!(ring.read(&mut c, &mut buf), ReadResult::Run { .. }));
        assert!(matches!(ring.read(&mut c, &mut buf), ReadResult::Frame { key: true, pts: 1_080_000, .. }));

        // Exactly on a keyframe.
        assert_eq!(seek(&ring, 105_000, 0, &mut buf).from_ms, Some(105_000));
        // Before the ring's start: its oldest keyframe (the run start), and it says so.
        let s = seek(&ring, 50_000, 0, &mut buf);
        assert_eq!((s.from_ms, s.short), (Some(100_000), true));
        // The previous recording stopped at the keyframe of 115 s (seq: run 1, frame 150 -> 152).
        let s = seek(&ring, 110_000, 152, &mut buf);
        assert_eq!((s.from_ms, s.short), (Some(115_000), false), "the floor is no short ring");
        // A target in the future: the newest keyframe.
        assert_eq!(seek(&ring, 500_000, 0, &mut buf).from_ms, Some(119_000));
    }

    #[test]
    fn seek_finds_keyframes_after_the_run_start_left_the_ring() {
        // 64 KiB holds about 60 of the 200 frames of 1000 bytes: the run start is gone.
        let ring = Ring::new("t", 64 << 10, None).expect("ring");
        ring.push_run(&run(100_000)).expect("run");
        for i in 0..200i64 {
            let data = [0u8; 1000];
            let f = Frame { track: Track::Video, key: i % 10 == 0, pts: i * 9_000, data: &data };
            ring.push_frame(&f).expect("push");
        }
        let mut buf = Vec::new();
        let s = seek(&ring, 117_500, 0, &mut buf);
        assert_eq!((s.from_ms, s.short), (Some(117_000), false));
        let mut c = s.cursor;
        assert!(matches!(ring.read(&mut c, &mut buf), ReadResult::Run { .. }), "the run in effect comes first");
        assert!(matches!(ring.read(&mut c, &mut buf), ReadResult::Frame { key: true, pts: 1_530_000, .. }));
        let s = seek(&ring, 0, 0, &mut buf);
        assert!(s.short && s.from_ms.is_some_and(|t| t > 100_000 && t <= 115_000), "{s:?}");
    }
}
