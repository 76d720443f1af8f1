//! Handler tests over a real database and real segment files, without a
//! socket: route -> dispatch -> reply, as the workers do.

use std::io::Read;
use std::sync::Arc;

use serde_json::Value;

use super::export::tests::write_segment;
use super::reply::{Body, Reply};
use super::router::{self, Query};
use super::{dispatch, Call, Ctx};
use crate::clock::SimulatedClock;
use crate::config::Config;
use crate::db::{Db, NewSegment, SegmentProgress};
use crate::nvr::Nvr;

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
    let spec = crate::db::StreamSpec {
        name: "cam".into(),
        url: "rtsp://u:pw@h/x".into(),
        enabled: false,
        record: crate::db::RecordMode::Continuous,
        retention_days: None,
        max_storage_mb: None,
        priority: 0,
        bitrate_kbps: None,
        source: "api".into(),
    };
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
    let c = Call { matched, query: Query::parse(query), range, body };
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
    assert_eq!(recs[1]["start"].as_str(), Some(crate::clock::rfc3339(T0 + 10_000).as_str()));
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
    let scan = crate::mp4::scan_file(&out).expect("scan");
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
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1, "{text}");
    assert_eq!(text.matches("#EXTINF:1.000,").count(), 4, "{text}");
    for id in f.ids {
        assert!(text.contains(&format!("#EXT-X-MAP:URI=\"/api/recordings/{id}/file.mp4\"")), "{text}");
    }
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
