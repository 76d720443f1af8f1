//! HLS VOD playlists (RFC 8216, version 7) over the stored files: every media
//! segment is a byte range (one moof+mdat) of a recording's file, every
//! recording's init is an `EXT-X-MAP` byte range of the same file. The file
//! URL ends in `.mp4` (`/api/recordings/{id}/file.mp4`) because ffmpeg's HLS
//! demuxer refuses segment URLs without a media extension.
//!
//! Invariants: no media is copied; a discontinuity separates recordings (each
//! file's decode times start at 0); the first fragment of each recording in
//! the playlist starts at a keyframe when one exists (see `select`).

use std::fmt::Write as _;

use crate::clock::rfc3339;
use crate::media::FragmentEntry;

use super::select::{select, ticks_to_ms};

/// One recording's contribution to a playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsRecording {
    /// Where the file is served (the same URL for the map and every fragment).
    pub url: String,
    pub init_len: u64,
    /// Wall-clock ms of the first listed fragment.
    pub first_ms: i64,
    /// (offset, size, seconds) of each listed fragment.
    pub fragments: Vec<(u64, u32, f64)>,
}

/// The fragments of a recording that serve `[start_ms, end_ms)`, if any.
pub fn recording(
    url: String,
    init_len: u64,
    seg_start_ms: i64,
    timescale: u32,
    fragments: &[FragmentEntry],
    start_ms: i64,
    end_ms: i64,
) -> Option<HlsRecording> {
    let sel = select(seg_start_ms, timescale, fragments, start_ms, end_ms)?;
    let chosen = &fragments[sel];
    let ts = f64::from(timescale.max(1));
    Some(HlsRecording {
        url,
        init_len,
        first_ms: ticks_to_ms(seg_start_ms, timescale, chosen[0].start_ticks),
        fragments: chosen.iter().map(|f| (f.offset, f.size, f64::from(f.duration_ticks) / ts)).collect(),
    })
}

/// The playlist text for recordings in time order.
pub fn playlist(recordings: &[HlsRecording]) -> String {
    let max = recordings.iter().flat_map(|r| r.fragments.iter().map(|f| f.2)).fold(0.0f64, f64::max);
    let mut out = String::new();
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", (max.ceil() as u64).max(1));
    out.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
    for (i, r) in recordings.iter().enumerate() {
        if i > 0 {
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
    use crate::web::select::tests::frags;

    #[test]
    fn two_recordings_with_a_boundary() {
        // Recording 1: 4 one-second fragments, keyframes at 0 and 2, from t=1000 s.
        let t0 = 1_700_000_000_000;
        let f1 = frags(4, |i| i % 2 == 0, 800, 100);
        let mut f2 = frags(2, |_| true, 600, 50);
        f2[1].duration_ticks = 135_000; // 1.5 s
        let span = (t0 + 2_500, t0 + 5_500);
        let r1 = recording("/api/recordings/1/file".into(), 800, t0, 90_000, &f1, span.0, span.1).expect("r1");
        let r2 = recording("/api/recordings/2/file".into(), 600, t0 + 4_200, 90_000, &f2, span.0, span.1).expect("r2");
        assert_eq!(r1.first_ms, t0 + 2_000, "moved back to the keyframe at 2 s");
        assert!(recording("x".into(), 1, t0 + 9_000, 90_000, &f2, span.0, span.1).is_none());
        let text = playlist(&[r1, r2]);
        let expected = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22Z
#EXT-X-MAP:URI=\"/api/recordings/1/file\",BYTERANGE=\"800@0\"
#EXTINF:1.000,
#EXT-X-BYTERANGE:100@1000
/api/recordings/1/file
#EXTINF:1.000,
#EXT-X-BYTERANGE:100@1100
/api/recordings/1/file
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.2Z
#EXT-X-MAP:URI=\"/api/recordings/2/file\",BYTERANGE=\"600@0\"
#EXTINF:1.000,
#EXT-X-BYTERANGE:50@600
/api/recordings/2/file
#EXTINF:1.500,
#EXT-X-BYTERANGE:50@650
/api/recordings/2/file
#EXT-X-ENDLIST
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_playlist_is_still_valid() {
        let text = playlist(&[]);
        assert!(text.starts_with("#EXTM3U\n") && text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:1\n"));
    }
}
