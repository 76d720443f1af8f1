//! Handler tests over a real database and real segment files, without a
//! socket: route -> dispatch -> reply, as the workers do.

use std::io::Read;
use std::sync::Arc;

use serde_json::Value;

use super::reply::{Body, Reply};
use super::request::RequestInfo;
use super::router::{self, Query};
use super::{dispatch, Call, Ctx};
use crate::base::clock::SimulatedClock;
use crate::config::Config;
use crate::index::db::{Db, NewSegment, SegmentProgress};
use crate::playback::export::tests::write_segment;
use crate::web::state::Nvr;

const T0: i64 = 1_800_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    nvr: Nvr,
    db: Db,
    /// Ids of the two recordings: [T0, T0+4 s) and [T0+10 s, T0+12 s).
    ids: [i64; 2],
    /// The first file's bytes.
    file_a: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let rings = dir.path().join("rings");
    std::fs::create_dir_all(data.join("recordings/cam/day")).expect("dirs");
    std::fs::create_dir_all(&rings).expect("rings");
    let toml = format!(
        "[storage]\ndata_dir = {:?}\nring_dir = {:?}\n",
        data.display().to_string(),
        rings.display().to_string()
    );
    let cfg = Config::parse(&toml, "test").expect("config");
    let nvr = Nvr::new(cfg.clone(), Arc::new(SimulatedClock::new(T0 + 60_000)));
    let db = Db::open(&cfg.db_path()).expect("db");
    let spec =
        crate::index::db::StreamSpec { enabled: false, ..crate::index::db::StreamSpec::new("cam", "rtsp://u:pw@h/x") };
    let stream = db.upsert_stream(&spec, T0).expect("stream");
    let mut ids = [0; 2];
    let mut file_a = Vec::new();
    for (i, (start, n)) in [(T0, 4), (T0 + 10_000, 2)].into_iter().enumerate() {
        let rel = format!("recordings/cam/day/{start}.mp4");
        let (init, fragments) = write_segment(&data.join(&rel), n, |k| k % 2 == 0);
        let bytes = std::fs::metadata(data.join(&rel)).expect("meta").len();
        if i == 0 {
            file_a = std::fs::read(data.join(&rel)).expect("read");
        }
        let id = db
            .insert_segment(&NewSegment {
                stream_id: stream.id,
                path: rel,
                start_ms: start,
                codec: "avc1.64001e".into(),
                width: 640,
                height: 480,
                video_timescale: 90_000,
                init_len: init.len() as u64,
                has_audio: true,
                trigger: "continuous".into(),
                time_unknown: false,
            })
            .expect("insert");
        let progress = SegmentProgress {
            end_ms: start + n as i64 * 1000,
            bytes,
            frames: 30 * n as u64,
            audio_frames: 47 * n as u64,
            fragments,
            closed: true,
        };
        db.update_segment(id, &progress).expect("update");
        ids[i] = id;
    }
    Fixture { _dir: dir, nvr, db, ids, file_a }
}

fn call(f: &Fixture, method: &str, target: &str, range: Option<&str>, body: &[u8]) -> Reply {
    let (path, query) = router::split_target(target);
    let matched = router::route(method, path).expect("route");
    let req = RequestInfo::default();
    let c = Call { matched, query: Query::parse(query), range, body, principal: None, req: &req };
    dispatch(&Ctx { nvr: &f.nvr, db: &f.db }, &c).unwrap_or_else(Reply::from)
}

fn body(r: Reply) -> Vec<u8> {
    match r.body {
        Body::Bytes(b) => b,
        Body::Reader(mut rd, n) => {
            let mut v = Vec::new();
            rd.read_to_end(&mut v).expect("read body");
            assert_eq!(v.len() as u64, n, "reader length");
            v
        }
    }
}

fn json(r: Reply) -> Value {
    serde_json::from_slice(&body(r)).expect("json")
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[test]
fn recordings_are_listed_with_urls() {
    let f = fixture();
    let v = json(call(&f, "GET", "/api/recordings?stream=cam", None, b""));
    let recs = v["recordings"].as_array().expect("array");
    assert_eq!(recs.len(), 2, "{v}");
    assert_eq!(recs[0]["url"].as_str(), Some(format!("/api/recordings/{}/file", f.ids[0]).as_str()));
    assert_eq!(recs[0]["duration_ms"].as_i64(), Some(4000));
    assert_eq!(recs[1]["start"].as_str(), Some(crate::base::clock::rfc3339(T0 + 10_000).as_str()));
    let v = json(call(&f, "GET", &format!("/api/recordings?start={}&end={}", T0 + 5000, T0 + 6000), None, b""));
    assert_eq!(v["recordings"].as_array().map(Vec::len), Some(0), "{v}");
    let v = json(call(&f, "GET", "/api/streams/cam", None, b""));
    assert_eq!(v["storage"]["segments"].as_u64(), Some(2), "{v}");
    assert_eq!(v["url"].as_str(), Some("rtsp://u:***@h/x"));
}

#[test]
fn files_are_served_with_ranges() {
    let f = fixture();
    let url = format!("/api/recordings/{}/file", f.ids[0]);
    let r = call(&f, "GET", &url, None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "Accept-Ranges"), Some("bytes"));
    assert_eq!(header(&r, "Content-Type"), Some("video/mp4"));
    assert_eq!(body(r), f.file_a);
    let r = call(&f, "GET", &url, Some("bytes=10-19"), b"");
    assert_eq!(r.status, 206);
    let len = f.file_a.len();
    assert_eq!(header(&r, "Content-Range"), Some(format!("bytes 10-19/{len}").as_str()));
    assert_eq!(body(r), &f.file_a[10..20]);
    let r = call(&f, "GET", &url, Some("bytes=-5"), b"");
    assert_eq!(body(r), &f.file_a[len - 5..]);
    let r = call(&f, "GET", &url, Some(&format!("bytes={len}-")), b"");
    assert_eq!(r.status, 416);
    assert_eq!(header(&r, "Content-Range"), Some(format!("bytes */{len}").as_str()));
}

#[test]
fn export_is_one_playable_file_over_both_recordings() {
    let f = fixture();
    let target = format!("/api/export.mp4?stream=cam&start={}&end={}", T0 + 2500, T0 + 11_500);
    let r = call(&f, "GET", &target, None, b"");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&body(call(&f, "GET", &target, None, b""))));
    assert!(header(&r, "Content-Disposition").is_some_and(|v| v.starts_with("attachment; filename=\"cam-")));
    assert_eq!(header(&r, "X-OxiNVR-Export-Truncated"), None);
    let whole = body(r);
    let out = f._dir.path().join("export.mp4");
    std::fs::write(&out, &whole).expect("write");
    let scan = crate::recording::mp4::scan_file(&out).expect("scan");
    assert_eq!(scan.valid_len, scan.file_len);
    // Fragments 2, 3 of the first recording, 0, 1 of the second.
    let tfdts: Vec<u64> = scan.fragments.iter().map(|x| x.start_ticks).collect();
    assert_eq!(tfdts, vec![0, 90_000, 180_000, 270_000]);
    let r = call(&f, "GET", &target, Some("bytes=100-4099"), b"");
    assert_eq!(r.status, 206);
    assert_eq!(body(r), &whole[100..4100]);
    let r = call(&f, "GET", &format!("/api/export.mp4?stream=cam&start={}&end={}", T0 + 5000, T0 + 9000), None, b"");
    assert_eq!(r.status, 404);
}

#[test]
fn playback_lists_both_recordings() {
    let f = fixture();
    let r = call(&f, "GET", &format!("/api/playback/cam.m3u8?start={}&end={}", T0 + 2500, T0 + 11_500), None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "Content-Type"), Some("application/vnd.apple.mpegurl"));
    let text = String::from_utf8(body(r)).expect("utf8");
    // 6 s between the recordings: a gap, so a discontinuity.
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1, "{text}");
    assert_eq!(text.matches("#EXTINF:1.000,").count(), 4, "{text}");
    // The first is listed from its keyframe at 2 s, the second continues at 2 s.
    for (id, shift) in [(f.ids[0], -180_000), (f.ids[1], 180_000)] {
        let url = format!("/api/recordings/{id}/file.mp4?shift={shift}");
        assert!(text.contains(&format!("#EXT-X-MAP:URI=\"{url}\"")), "{text}");
        assert_eq!(text.matches(&format!("\n{url}\n")).count(), 2, "{text}");
    }
}

/// Fetches what a playlist lists (the first map, then every fragment) through
/// the file route with byte ranges, as an HLS player does.
fn fetch_playlist(f: &Fixture, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byterange: Option<(u64, u64)> = None;
    for line in text.lines() {
        if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let (url, rest) = map.split_once('"').expect("map uri");
            let len: u64 = rest.trim_start_matches(",BYTERANGE=\"").trim_end_matches("@0\"").parse().expect("len");
            if out.is_empty() {
                out.extend(body(call(f, "GET", url, Some(&format!("bytes=0-{}", len - 1)), b"")));
            }
        } else if let Some(br) = line.strip_prefix("#EXT-X-BYTERANGE:") {
            let (size, offset) = br.split_once('@').expect("byterange");
            byterange = Some((size.parse().expect("size"), offset.parse().expect("offset")));
        } else if line.starts_with("/api/") {
            let (size, offset) = byterange.take().expect("a byte range before the url");
            let r = call(f, "GET", line, Some(&format!("bytes={offset}-{}", offset + size - 1)), b"");
            assert_eq!(r.status, 206, "{line}");
            out.extend(body(r));
        }
    }
    out
}

#[test]
fn playback_timeline_is_continuous_across_files() {
    let f = fixture();
    let r = call(&f, "GET", &format!("/api/playback/cam.m3u8?start={}&end={}", T0 + 2500, T0 + 11_500), None, b"");
    let text = String::from_utf8(body(r)).expect("utf8");
    let out = f._dir.path().join("hls.mp4");
    std::fs::write(&out, fetch_playlist(&f, &text)).expect("write");
    let scan = crate::recording::mp4::scan_file(&out).expect("scan");
    assert_eq!(scan.valid_len, scan.file_len);
    let tfdts: Vec<u64> = scan.fragments.iter().map(|x| x.start_ticks).collect();
    assert_eq!(tfdts, vec![0, 90_000, 180_000, 270_000], "{text}");
}

/// Positions of the (version 1, 8-byte) tfdt values inside a moof.
fn tfdt_values(moof: &[u8]) -> Vec<std::ops::Range<usize>> {
    moof.windows(4).enumerate().filter(|(_, w)| *w == b"tfdt").map(|(i, _)| i + 8..i + 16).collect()
}

#[test]
fn shifted_files_differ_from_the_stored_ones_only_in_decode_times() {
    let f = fixture();
    let stored = &f.file_a;
    let scan = crate::recording::mp4::scan_file(&f._dir.path().join(format!("data/recordings/cam/day/{T0}.mp4")))
        .expect("scan");
    assert_eq!(scan.fragments.len(), 4);
    // 1 s and 0.5 ms of video; 48024 ticks of the 48 kHz audio.
    let (shift, audio_shift) = (90_045u64, 48_024u64);
    let url = format!("/api/recordings/{}/file.mp4?shift={shift}", f.ids[0]);
    let r = call(&f, "GET", &url, None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "Accept-Ranges"), Some("bytes"));
    let shifted = body(r);
    assert_eq!(shifted.len(), stored.len());
    let mut patchable = Vec::new();
    for frag in &scan.fragments {
        let at = frag.offset as usize;
        let moof_len = crate::recording::mp4::moof_size(&stored[at..at + 16]).expect("moof") as usize;
        let (old, new) = (&stored[at..at + moof_len], &shifted[at..at + moof_len]);
        let (old_trafs, new_trafs) = (
            crate::recording::mp4::parse_moof(old).expect("old"),
            crate::recording::mp4::parse_moof(new).expect("new"),
        );
        assert_eq!(old_trafs.len(), 2);
        for (o, n) in old_trafs.iter().zip(&new_trafs) {
            let moved = if o.track_id == 1 { shift } else { audio_shift };
            assert_eq!(n.base_decode_time, o.base_decode_time + moved, "track {}", o.track_id);
            assert_eq!(crate::recording::mp4::TrafSummary { base_decode_time: o.base_decode_time, ..*n }, *o);
        }
        patchable.extend(tfdt_values(old).into_iter().map(|r| r.start + at..r.end + at));
    }
    assert_eq!(patchable.len(), 8);
    let differing: Vec<usize> = (0..stored.len()).filter(|&i| stored[i] != shifted[i]).collect();
    assert!(!differing.is_empty());
    for i in differing {
        assert!(patchable.iter().any(|r| r.contains(&i)), "byte {i} differs outside a tfdt");
    }
    // The alias, and ranges of the shifted file.
    let plain = format!("/api/recordings/{}/file?shift={shift}", f.ids[0]);
    assert_eq!(body(call(&f, "GET", &plain, None, b"")), shifted);
    let (a, b) = (scan.fragments[1].offset as usize + 3, scan.fragments[2].offset as usize + 40);
    let r = call(&f, "GET", &url, Some(&format!("bytes={a}-{b}")), b"");
    assert_eq!(r.status, 206);
    assert_eq!(body(r), &shifted[a..=b]);
    let r = call(&f, "GET", &url, Some(&format!("bytes={}-", stored.len())), b"");
    assert_eq!(r.status, 416);
    // shift=0 is the stored file.
    let zero = format!("/api/recordings/{}/file.mp4?shift=0", f.ids[0]);
    assert_eq!(body(call(&f, "GET", &zero, None, b"")), *stored);
}

#[test]
fn shifts_below_zero_and_bad_shifts_are_refused() {
    let f = fixture();
    let scan = crate::recording::mp4::scan_file(&f._dir.path().join(format!("data/recordings/cam/day/{T0}.mp4")))
        .expect("scan");
    let file = |q: &str| format!("/api/recordings/{}/file.mp4?{q}", f.ids[0]);
    let error = |r: Reply| json(r)["error"].as_str().unwrap_or_default().to_string();
    let r = call(&f, "GET", &file("shift=-1"), None, b"");
    assert_eq!(r.status, 400);
    let msg = error(r);
    assert!(msg.contains("shift -1") && msg.contains("below 0"), "{msg}");
    for bad in ["shift=abc", "shift=", "shift=1.5", "shift=99999999999999999999", "shift=1&x=2"] {
        let r = call(&f, "GET", &file(bad), None, b"");
        assert_eq!(r.status, 400, "{bad}");
        let msg = error(r);
        assert!(msg.contains("shift") || msg.contains("\"x\""), "{bad}: {msg}");
    }
    // Fragment 0 (tfdt 0) cannot move back by 1 s, fragment 1 (tfdt 1 s) can:
    // what counts is the fragments the requested bytes touch.
    let one = scan.fragments[1].offset;
    let r = call(&f, "GET", &file("shift=-90000"), Some(&format!("bytes={one}-")), b"");
    assert_eq!(r.status, 206);
    let tail = body(r);
    let moof_len = crate::recording::mp4::moof_size(&tail[..16]).expect("moof") as usize;
    let trafs = crate::recording::mp4::parse_moof(&tail[..moof_len]).expect("moof");
    assert_eq!(trafs[0].base_decode_time, 0);
    let r = call(&f, "GET", &file("shift=-90000"), Some(&format!("bytes={}-{one}", one - 1)), b"");
    assert_eq!(r.status, 400);
    assert!(error(r).contains("shift -90000"));
    let r = call(&f, "GET", &file("shift=-90000"), Some("bytes=0-99"), b"");
    assert_eq!(r.status, 206, "the init alone");
}

#[test]
fn deleting_a_stream_with_recordings_needs_purge() {
    let f = fixture();
    let r = call(&f, "DELETE", "/api/streams/cam", None, b"");
    assert_eq!(r.status, 409);
    let msg = json(r)["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("2 recording(s)") && msg.contains("purge=true"), "{msg}");
    assert!(f.db.stream_by_name("cam").expect("query").is_some());
    // Without a running storage thread the purge cannot happen: 500, stream kept.
    let r = call(&f, "DELETE", "/api/streams/cam?purge=true", None, b"");
    assert_eq!(r.status, 500);
    assert!(f.db.stream_by_name("cam").expect("query").is_some());
}
