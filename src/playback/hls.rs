//! HLS VOD playlists (RFC 8216, version 7) over the stored files: every media
//! segment is a byte range (one moof+mdat) of a recording's file, every
//! recording's init is an `EXT-X-MAP` byte range of the same file. The file
//! URL ends in `.mp4` (`/api/recordings/{id}/file.mp4`) because ffmpeg's HLS
//! demuxer refuses segment URLs without a media extension.
//!
//! Every stored file's decode times start at 0, so each recording is linked
//! with `?shift=S` (video ticks; the file route moves each fragment's tfdt by
//! it in memory, same bytes otherwise): the playlist's media timeline starts at
//! 0 and runs on, continuous and strictly increasing, across files. Players
//! that ignore `EXT-X-DISCONTINUITY` (ffmpeg's HLS reader feeds all segments to
//! one mov demuxer) then play it end to end.
//!
//! Invariants:
//! - No media is copied.
//! - The timeline counts [`TIMELINE_HZ`] ticks; each recording's first listed
//!   fragment starts at the sum of the durations listed before it. A file
//!   whose video timescale is not 90 kHz starts at that sum converted to its
//!   own ticks rounded up, and adds its listed duration converted to 90 kHz
//!   rounded up, so files never overlap (at most a tick of either clock is
//!   left between them) and all-90 kHz playlists are exact.
//! - `EXT-X-DISCONTINUITY` only where the codec parameters (codec, width,
//!   height, audio or not) change or where more than [`GAP_MS`] of wall clock
//!   separate the end of one recording's last listed fragment and the next
//!   one's first; the decode times stay continuous there too.
//! - `EXT-X-PROGRAM-DATE-TIME` before each recording gives its wall clock.
//! - The first fragment of each recording in the playlist starts at a keyframe
//!   when one exists (see `select`).

use std::fmt::Write as _;

use crate::base::clock::rfc3339;
use crate::recording::media::FragmentEntry;

use super::select::{select, ticks_to_ms};

/// Ticks per second of the playlist's timeline.
pub const TIMELINE_HZ: u32 = 90_000;

/// A wall-clock hole longer than this between recordings is a discontinuity.
pub const GAP_MS: i64 = 50;

/// Codec parameters that must match between neighbouring recordings:
/// (codec string, width, height, has audio).
pub type CodecKey<'a> = (&'a str, u32, u32, bool);

/// One stored file offered to a playlist.
#[derive(Clone, Debug)]
pub struct HlsSource<'a> {
    pub id: i64,
    /// Wall-clock ms of video tick 0 of the file.
    pub start_ms: i64,
    pub video_timescale: u32,
    pub init_len: u64,
    pub fragments: &'a [FragmentEntry],
    pub codec: CodecKey<'a>,
}

/// One recording's contribution to a playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsRecording {
    /// Where the file is served, with its `shift` (the same URL for the map
    /// and every fragment).
    pub url: String,
    pub init_len: u64,
    /// Wall-clock ms of the first listed fragment.
    pub first_ms: i64,
    /// Preceded by `EXT-X-DISCONTINUITY` (codec change or gap).
    pub discontinuity: bool,
    /// (offset, size, seconds) of each listed fragment.
    pub fragments: Vec<(u64, u32, f64)>,
}

/// `ticks` of a `from` Hz clock in ticks of a `to` Hz clock, rounded up.
fn rescale_up(ticks: u128, from: u32, to: u32) -> u128 {
    let (from, to) = (u128::from(from.max(1)), u128::from(to.max(1)));
    (ticks * to).div_ceil(from)
}

/// The recordings (in time order) that serve `[start_ms, end_ms)`, each with
/// the fragments to list, its shift and whether a discontinuity precedes it.
pub fn recordings(sources: &[HlsSource], start_ms: i64, end_ms: i64) -> Vec<HlsRecording> {
    let mut out = Vec::new();
    // Where the next recording starts on the playlist's timeline.
    let mut timeline: u128 = 0;
    // Codec parameters and wall-clock end of the previous listed recording.
    let mut previous: Option<(CodecKey, i64)> = None;
    for s in sources {
        let Some(sel) = select(s.start_ms, s.video_timescale, s.fragments, start_ms, end_ms) else { continue };
        let chosen = &s.fragments[sel];
        let (Some(first), Some(last)) = (chosen.first(), chosen.last()) else { continue };
        let ts = s.video_timescale.max(1);
        let first_ms = ticks_to_ms(s.start_ms, ts, first.start_ticks);
        let end_ms_listed =
            ticks_to_ms(s.start_ms, ts, last.start_ticks.saturating_add(u64::from(last.duration_ticks)));
        let discontinuity = previous.is_some_and(|(codec, end)| codec != s.codec || first_ms - end > GAP_MS);
        previous = Some((s.codec, end_ms_listed));
        // The first listed fragment's new decode time, in the file's ticks.
        let begin = rescale_up(timeline, TIMELINE_HZ, ts);
        let shift = i128::try_from(begin).unwrap_or(i128::MAX) - i128::from(first.start_ticks);
        let shift = i64::try_from(shift).unwrap_or(if shift < 0 { i64::MIN } else { i64::MAX });
        let listed: u128 = chosen.iter().map(|f| u128::from(f.duration_ticks)).sum();
        timeline = rescale_up(begin + listed, ts, TIMELINE_HZ);
        let secs = f64::from(ts);
        out.push(HlsRecording {
            url: format!("/api/recordings/{}/file.mp4?shift={shift}", s.id),
            init_len: s.init_len,
            first_ms,
            discontinuity,
            fragments: chosen.iter().map(|f| (f.offset, f.size, f64::from(f.duration_ticks) / secs)).collect(),
        });
    }
    out
}

/// The playlist text for recordings in time order.
pub fn playlist(recordings: &[HlsRecording]) -> String {
    let max = recordings.iter().flat_map(|r| r.fragments.iter().map(|f| f.2)).fold(0.0f64, f64::max);
    let mut out = String::new();
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", (max.ceil() as u64).max(1));
    out.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
    for r in recordings {
        if r.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(r.first_ms));
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\",BYTERANGE=\"{}@0\"", r.url, r.init_len);
        for (offset, size, secs) in &r.fragments {
            let _ = writeln!(out, "#EXTINF:{secs:.3},\n#EXT-X-BYTERANGE:{size}@{offset}\n{}", r.url);
        }
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playback::select::tests::frags;

    const T0: i64 = 1_700_000_000_000;
    const CAM: CodecKey<'static> = ("avc1.64001f", 640, 480, true);

    fn source<'a>(id: i64, start_ms: i64, fragments: &'a [FragmentEntry], codec: CodecKey<'a>) -> HlsSource<'a> {
        HlsSource { id, start_ms, video_timescale: 90_000, init_len: 500 + id as u64, fragments, codec }
    }

    #[test]
    fn three_recordings_share_one_timeline() {
        // A: 4 one-second fragments from T0, keyframes at 0 and 2 s; the span
        // starts at 2.5 s, so A is listed from its fragment at 2 s (tfdt 180000).
        let fa = frags(4, |i| i % 2 == 0, 800, 100);
        // B: 300 ms after A's end (a gap), 3 fragments, same codec.
        let fb = frags(3, |_| true, 600, 50);
        // C: right after B, but at another resolution (a codec change).
        let fc = frags(2, |_| true, 700, 60);
        let sources = [
            source(1, T0, &fa, CAM),
            source(2, T0 + 4_300, &fb, CAM),
            source(3, T0 + 7_300, &fc, ("avc1.64001f", 1280, 720, true)),
        ];
        let recs = recordings(&sources, T0 + 2_500, T0 + 8_500);
        let urls: Vec<&str> = recs.iter().map(|r| r.url.as_str()).collect();
        // Shift = timeline position - tfdt of the first listed fragment:
        // A 0 - 180000; B 2 s (A's listed duration) - 0; C 2 s + 3 s - 0.
        assert_eq!(
            urls,
            [
                "/api/recordings/1/file.mp4?shift=-180000",
                "/api/recordings/2/file.mp4?shift=180000",
                "/api/recordings/3/file.mp4?shift=450000"
            ]
        );
        assert_eq!(recs.iter().map(|r| r.discontinuity).collect::<Vec<_>>(), [false, true, true]);
        assert_eq!(recs[0].first_ms, T0 + 2_000, "moved back to the keyframe at 2 s");
        assert!(recordings(&[source(9, T0 + 9_000, &fb, CAM)], T0, T0 + 8_500).is_empty());
        let text = playlist(&recs);
        let expected = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22Z
#EXT-X-MAP:URI=\"/api/recordings/1/file.mp4?shift=-180000\",BYTERANGE=\"501@0\"
#EXTINF:1.000,
#EXT-X-BYTERANGE:100@1000
/api/recordings/1/file.mp4?shift=-180000
#EXTINF:1.000,
#EXT-X-BYTERANGE:100@1100
/api/recordings/1/file.mp4?shift=-180000
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.3Z
#EXT-X-MAP:URI=\"/api/recordings/2/file.mp4?shift=180000\",BYTERANGE=\"502@0\"
#EXTINF:1.000,
#EXT-X-BYTERANGE:50@600
/api/recordings/2/file.mp4?shift=180000
#EXTINF:1.000,
#EXT-X-BYTERANGE:50@650
/api/recordings/2/file.mp4?shift=180000
#EXTINF:1.000,
#EXT-X-BYTERANGE:50@700
/api/recordings/2/file.mp4?shift=180000
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:27.3Z
#EXT-X-MAP:URI=\"/api/recordings/3/file.mp4?shift=450000\",BYTERANGE=\"503@0\"
#EXTINF:1.000,
#EXT-X-BYTERANGE:60@700
/api/recordings/3/file.mp4?shift=450000
#EXTINF:1.000,
#EXT-X-BYTERANGE:60@760
/api/recordings/3/file.mp4?shift=450000
#EXT-X-ENDLIST
";
        assert_eq!(text, expected);
    }

    #[test]
    fn small_holes_continue_and_other_timescales_round_up() {
        // A: 90 kHz, 2 fragments, the second 0.5 ms longer than a second.
        let mut fa = frags(2, |_| true, 800, 100);
        fa[1].duration_ticks = 90_045;
        // B: 30 ms after A (no discontinuity), in a 1 kHz timescale.
        let fb: Vec<FragmentEntry> = (0..2u64)
            .map(|i| FragmentEntry {
                offset: 600 + i * 50,
                size: 50,
                start_ticks: i * 1000,
                duration_ticks: 1000,
                frames: 15,
                key: true,
            })
            .collect();
        let fc = frags(1, |_| true, 700, 60);
        let mut b = source(2, T0 + 2_030, &fb, CAM);
        b.video_timescale = 1000;
        let sources = [source(1, T0, &fa, CAM), b, source(3, T0 + 4_030, &fc, CAM)];
        let recs = recordings(&sources, T0, T0 + 10_000);
        let urls: Vec<&str> = recs.iter().map(|r| r.url.as_str()).collect();
        // A lists 180045 ticks = 2000.5 ms: B starts at ms 2001 of the timeline,
        // lasts 2000 ms, and C starts at 4001 ms = 360090 ticks.
        assert_eq!(
            urls,
            [
                "/api/recordings/1/file.mp4?shift=0",
                "/api/recordings/2/file.mp4?shift=2001",
                "/api/recordings/3/file.mp4?shift=360090"
            ]
        );
        assert!(recs.iter().all(|r| !r.discontinuity), "{recs:?}");
        let text = playlist(&recs);
        assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 3, "{text}");
        assert!(!text.contains("DISCONTINUITY"), "{text}");
        // An audio track appearing is a codec change too.
        let sources = [source(1, T0, &fa, CAM), source(3, T0 + 2_000, &fc, ("avc1.64001f", 640, 480, false))];
        let recs = recordings(&sources, T0, T0 + 10_000);
        assert_eq!(recs.iter().map(|r| r.discontinuity).collect::<Vec<_>>(), [false, true]);
    }

    #[test]
    fn timelines_round_up() {
        assert_eq!(rescale_up(180_045, 90_000, 1000), 2001);
        assert_eq!(rescale_up(180_000, 90_000, 1000), 2000);
        assert_eq!(rescale_up(4001, 1000, 90_000), 360_090);
        assert_eq!(rescale_up(7, 0, 0), 7);
    }

    #[test]
    fn empty_playlist_is_still_valid() {
        let text = playlist(&[]);
        assert!(text.starts_with("#EXTM3U\n") && text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:1\n"));
    }
}
