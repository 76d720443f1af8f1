//! Which fragments of a segment serve a time span; shared by export and HLS.
//!
//! Invariant: a selection is a non-empty index range whose first fragment is
//! a keyframe fragment whenever the segment has one at or before the span's
//! start, so playback of a selection never starts on a non-key frame.

use std::ops::Range;

use crate::recording::media::FragmentEntry;

/// Wall-clock ms of a point `ticks` into a segment that started at `start_ms`.
pub fn ticks_to_ms(start_ms: i64, timescale: u32, ticks: u64) -> i64 {
    let ms = i128::from(ticks) * 1000 / i128::from(timescale.max(1));
    start_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Fragments of a segment that overlap `[span_start, span_end)`, with the
/// first moved back to the latest keyframe fragment at or before it.
pub fn select(
    seg_start_ms: i64,
    timescale: u32,
    fragments: &[FragmentEntry],
    span_start: i64,
    span_end: i64,
) -> Option<Range<usize>> {
    let overlaps = |f: &FragmentEntry| {
        let a = ticks_to_ms(seg_start_ms, timescale, f.start_ticks);
        let b = ticks_to_ms(seg_start_ms, timescale, f.start_ticks.saturating_add(u64::from(f.duration_ticks)));
        a < span_end && b.max(a + 1) > span_start
    };
    let first = fragments.iter().position(overlaps)?;
    let last = fragments.iter().rposition(overlaps)?;
    let key = fragments[..=first].iter().rposition(|f| f.key).unwrap_or(first);
    Some(key..last + 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` fragments of one second at 90 kHz, keyframes where `key(i)`.
    pub fn frags(n: usize, key: impl Fn(usize) -> bool, first_offset: u64, size: u32) -> Vec<FragmentEntry> {
        (0..n)
            .map(|i| FragmentEntry {
                offset: first_offset + i as u64 * u64::from(size),
                size,
                start_ticks: i as u64 * 90_000,
                duration_ticks: 90_000,
                frames: 30,
                key: key(i),
            })
            .collect()
    }

    #[test]
    fn selection_covers_the_span() {
        let f = frags(10, |_| true, 100, 10);
        assert_eq!(select(0, 90_000, &f, 2500, 4500), Some(2..5));
        assert_eq!(select(0, 90_000, &f, 2000, 4000), Some(2..4));
        assert_eq!(select(0, 90_000, &f, -5000, 50_000), Some(0..10));
        assert_eq!(select(0, 90_000, &f, 10_000, 20_000), None);
        assert_eq!(select(0, 90_000, &f, -2000, 0), None);
        assert_eq!(select(0, 90_000, &[], 0, 1000), None);
    }

    #[test]
    fn selection_starts_at_a_keyframe() {
        let f = frags(10, |i| i % 4 == 0, 100, 10);
        assert_eq!(select(0, 90_000, &f, 6500, 7500), Some(4..8));
        assert_eq!(select(0, 90_000, &f, 8100, 8200), Some(8..9));
        // No keyframe at all before the start: start where the span starts.
        let f = frags(3, |_| false, 100, 10);
        assert_eq!(select(0, 90_000, &f, 1500, 1600), Some(1..2));
    }

    #[test]
    fn times_do_not_overflow() {
        assert_eq!(ticks_to_ms(1000, 0, 5), 6000);
        assert_eq!(ticks_to_ms(i64::MAX - 1, 1, u64::MAX), i64::MAX);
    }
}
