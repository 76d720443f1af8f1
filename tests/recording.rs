//! End-to-end recording tests: the real binary records a real RTSP camera
//! (GStreamer, started here), and ffmpeg/ffprobe check every file it wrote.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::Camera;
use oxinvr::index::db::Db;

const FPS: f64 = 15.0;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Every .mp4 under `dir`, sorted.
fn mp4_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Rows and files agree: the same set of paths, and every file has the row's size.
fn assert_rows_match_files(data_dir: &Path) {
    let db = Db::open(&data_dir.join("oxinvr.db")).expect("open db");
    let mut rows = BTreeSet::new();
    for st in db.list_streams().expect("streams") {
        for seg in db.segments_overlapping(st.id, i64::MIN, i64::MAX).expect("segments") {
            let len = std::fs::metadata(data_dir.join(&seg.path)).map(|m| m.len()).unwrap_or(u64::MAX);
            assert_eq!(len, seg.bytes, "{} is {len} bytes, its row says {}", seg.path, seg.bytes);
            assert!(seg.closed, "{} still open after a clean stop / recovery", seg.path);
            rows.insert(data_dir.join(&seg.path));
        }
    }
    let files: BTreeSet<PathBuf> = mp4_files(&data_dir.join("recordings")).into_iter().collect();
    assert_eq!(rows, files, "rows and files differ");
}

fn assert_all_decode(data_dir: &Path) -> usize {
    let files = mp4_files(&data_dir.join("recordings"));
    assert!(!files.is_empty(), "nothing recorded");
    for f in &files {
        common::decode_ok(f).unwrap_or_else(|e| panic!("{} does not decode: {e}", f.display()));
    }
    files.len()
}

/// The longest fragment (s) of `stream` in the index. An export is made of
/// whole fragments (each one or more whole GOPs, cut at the first keyframe
/// after `sync_seconds`), so it can run up to one fragment past either end.
fn longest_fragment(data_dir: &Path, stream: &str) -> f64 {
    let db = Db::open(&data_dir.join("oxinvr.db")).expect("open db");
    let st = db.list_streams().expect("streams").into_iter().find(|s| s.spec.name == stream).expect("stream row");
    let mut longest: f64 = 0.0;
    for seg in db.segments_overlapping(st.id, i64::MIN, i64::MAX).expect("segments") {
        let ts = f64::from(seg.video_timescale.max(1));
        for f in &seg.fragments {
            longest = longest.max(f64::from(f.duration_ticks) / ts);
        }
    }
    longest
}

fn config(streams: &[(&str, String)], storage_extra: &str) -> String {
    let mut t =
        format!("[storage]\ndata_dir = \"{{DATA}}\"\n{storage_extra}\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n");
    for (name, url) in streams {
        t.push_str(&format!("[[streams]]\nname = \"{name}\"\nurl = \"{url}\"\nbitrate_kbps = 1000\n"));
    }
    t
}

fn wait_streaming(nvr: &Oxinvr, name: &str) {
    nvr.wait_for(&format!("/api/streams/{name}"), Duration::from_secs(30), &format!("{name} streaming"), |v| {
        v["status"]["state"] == "streaming" && v["status"]["frames"].as_u64().unwrap_or(0) > 0
    });
}

fn recordings(nvr: &Oxinvr, stream: &str) -> Vec<serde_json::Value> {
    let v = nvr.json(&format!("/api/recordings?stream={stream}&start=0&end={}", now_ms() + 60_000));
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// ffmpeg decodes an HTTP URL (export or playlist) to the end; returns frames decoded.
/// ffmpeg sends `auth` (an `Authorization` header) with the playlist and
/// with every request the HLS demuxer makes for it.
fn decode_url_frames(url: &str, auth: &(String, String)) -> u64 {
    let headers = format!("{}: {}\r\n", auth.0, auth.1);
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-stats",
            "-headers",
            &headers,
            "-i",
            url,
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed on {url}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("frame=") && !l.trim().is_empty()).collect();
    assert!(errors.is_empty(), "ffmpeg complained about {url}: {errors:?}");
    let last = err.rsplit("frame=").next().unwrap_or("");
    last.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn records_h264_aac_and_h265_then_exports_and_plays_back_across_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--audio", "--fps", "15"]);
    let cfg =
        config(&[("cam264", cam.url("h264")), ("cam265", cam.url("h265"))], "segment_seconds = 10\nsync_seconds = 2\n");
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    wait_streaming(&nvr, "cam264");
    wait_streaming(&nvr, "cam265");
    std::thread::sleep(Duration::from_secs(26));

    // Export and HLS of a span crossing the first segment boundary.
    let segs = recordings(&nvr, "cam264");
    assert!(segs.len() >= 2, "expected at least two segments after 26 s: {segs:?}");
    let boundary = segs[1]["start_ms"].as_i64().expect("start_ms");
    let (start, end) = (boundary - 3000, boundary + 3000);
    let span_s = (end - start) as f64 / 1000.0;
    let export = format!("/api/export.mp4?stream=cam264&start={start}&end={end}");
    let r = nvr.get(&export).expect("export");
    assert_eq!(r.status, 200, "{}", r.text());
    let export_file = tmp.path().join("export.mp4");
    std::fs::write(&export_file, &r.body).expect("write export");
    common::decode_ok(&export_file).expect("export decodes");
    let d = common::media_duration(&export_file);
    let probe = common::ffprobe_json(&export_file);
    // The export runs from the start of the fragment holding the start to the
    // end of the fragment holding the end: at most two fragments more than
    // the span (sync_seconds = 2 and 1 s GOPs make them ~2 s; a starved
    // encoder spaces keyframes, and so fragments, wider).
    let frag = longest_fragment(&tmp.path().join("data"), "cam264");
    assert!(
        d >= span_s - 0.2 && d <= span_s + 2.0 * frag + 0.2,
        "export lasts {d} s for a {span_s} s span [{start}, {end}) with fragments up to {frag} s; streams {}; recordings {segs:?}",
        probe["streams"]
    );
    let codecs: Vec<&str> =
        probe["streams"].as_array().expect("streams").iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "export streams: {codecs:?}");
    // Range on the export: the tail bytes equal the same bytes of the whole.
    let total = r.body.len();
    let tail = nvr.request("GET", &export, &[("Range", &format!("bytes={}-", total - 1000))], b"").expect("range");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, r.body[total - 1000..]);

    let playlist = format!("http://127.0.0.1:{}/api/playback/cam264.m3u8?start={start}&end={end}", nvr.port);
    let pl = nvr.get(&playlist[playlist.find("/api").unwrap_or(0)..]).expect("playlist");
    assert_eq!(pl.status, 200, "{}", pl.text());
    assert!(pl.text().contains("#EXT-X-BYTERANGE") && pl.text().contains("#EXT-X-MAP"), "{}", pl.text());
    let frames = decode_url_frames(&playlist, &nvr.auth_header());
    let hls_s = frames as f64 / FPS;
    assert!(
        hls_s >= span_s - 0.2 && hls_s <= span_s + 2.0 * frag + 0.2,
        "HLS played {hls_s} s for a {span_s} s span with fragments up to {frag} s"
    );

    // Clean stop, then every file decodes and durations match the wall clock.
    let first_start = segs[0]["start_ms"].as_i64().expect("start");
    std::thread::sleep(Duration::from_secs(6));
    let stop_ms = now_ms();
    let (status, took) = nvr.terminate(Duration::from_secs(15));
    // Frames keep arriving until the recorder has acted on SIGTERM: they are recorded.
    let exit_ms = now_ms();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let data = tmp.path().join("data");
    assert!(assert_all_decode(&data) >= 6);
    assert_rows_match_files(&data);

    for (stream, codec) in [("cam264", "h264"), ("cam265", "hevc")] {
        let files = mp4_files(&data.join("recordings").join(stream));
        let mut recorded = 0.0;
        for f in &files {
            let p = common::ffprobe_json(f);
            let streams = p["streams"].as_array().expect("streams");
            assert!(streams.iter().any(|s| s["codec_name"] == codec), "{} lacks {codec}", f.display());
            assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{} lacks AAC audio", f.display());
            recorded += common::video_duration(f);
        }
        let wall = (stop_ms - first_start) as f64 / 1000.0;
        let wall_to_exit = (exit_ms - first_start) as f64 / 1000.0;
        let err = if recorded < wall { (wall - recorded) / wall } else { (recorded - wall_to_exit).max(0.0) / wall };
        // The second stream starts later (staggered bring-up); compare against its own start.
        // Video time, not container time: each file's AAC track may run up to
        // a frame past its video, which summed over the files is not a gap.
        if stream == "cam264" {
            assert!(
                err < 0.02,
                "{stream}: recorded {recorded:.2} s of video in {} files over {wall:.2} s wall-clock to SIGTERM, {wall_to_exit:.2} s to exit ({:.1} %)",
                files.len(),
                err * 100.0
            );
        }
        assert!(recorded > 25.0, "{stream}: only {recorded} s recorded");
    }
    let check = std::process::Command::new(common::nvr::oxinvr_bin())
        .args(["check", "--config"])
        .arg(nvr_config(tmp.path()))
        .output()
        .expect("check");
    assert!(check.status.success(), "oxinvr check: {}", String::from_utf8_lossy(&check.stdout));
}

fn nvr_config(dir: &Path) -> PathBuf {
    dir.join("oxinvr.toml")
}

#[test]
fn sigkill_then_restart_leaves_every_file_playable_and_loses_at_most_sync_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let cfg = config(&[("cam", cam.url("h264"))], "sync_seconds = 2\n");
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    wait_streaming(&nvr, "cam");
    std::thread::sleep(Duration::from_secs(12));
    let (port, data) = (nvr.port, nvr.data_dir.clone());
    let kill_ms = now_ms();
    nvr.kill9();

    // Make the open segment's tail torn, as a power cut in mid-write would.
    let files = mp4_files(&data.join("recordings"));
    let open = files.last().expect("a segment file").clone();
    let good_len = std::fs::metadata(&open).expect("stat").len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&open).expect("open");
    std::io::Write::write_all(&mut f, b"\0\0\x10\0moof\0\0\0\x10mfhd\0\0\0\0\0\0\0\x07torn tail").expect("append");
    drop(f);

    let nvr = Oxinvr::restart(&nvr_config(tmp.path()), &data, port);
    let (status, _) = nvr.terminate(Duration::from_secs(15));
    assert!(status.success());
    assert_eq!(std::fs::metadata(&open).expect("stat").len(), good_len, "the torn tail was not cut");
    assert_all_decode(&data);
    assert_rows_match_files(&data);
    let db = Db::open(&data.join("oxinvr.db")).expect("db");
    let st = db.stream_by_name("cam").expect("query").expect("stream");
    let segs = db.segments_overlapping(st.id, 0, kill_ms).expect("segments");
    let before_kill = segs.iter().rfind(|s| s.start_ms < kill_ms).expect("recovered segment");
    let lost_ms = kill_ms - before_kill.end_ms;
    assert!(lost_ms <= 2000, "lost {lost_ms} ms at SIGKILL (sync_seconds = 2)");

    // A valid file without a row (e.g. restored from a backup) is adopted by `check --repair`.
    let orphan = open.with_file_name(format!("{}.mp4", before_kill.start_ms - 60_000));
    std::fs::copy(&open, &orphan).expect("copy");
    let check = |repair: bool| {
        let mut c = std::process::Command::new(common::nvr::oxinvr_bin());
        c.args(["check", "--config"]).arg(nvr_config(tmp.path()));
        if repair {
            c.arg("--repair");
        }
        let out = c.output().expect("check");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = check(false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("\"orphans_adopted\": 1"), "{out}");
    let (code, out) = check(true);
    assert_eq!(code, Some(0), "{out}");
    assert_rows_match_files(&data);
    let adopted = db.segments_overlapping(st.id, 0, before_kill.start_ms).expect("segments");
    assert!(adopted.iter().any(|s| s.path.ends_with(&*orphan.file_name().expect("name").to_string_lossy())));
}

#[test]
fn camera_stop_and_restart_resumes_recording_and_records_the_gap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let port = cam.port;
    let cfg = config(&[("cam", cam.url("h264"))], "sync_seconds = 2\n");
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    wait_streaming(&nvr, "cam");
    std::thread::sleep(Duration::from_secs(5));
    let down_ms = now_ms();
    drop(cam);
    std::thread::sleep(Duration::from_secs(6));
    let cam = Camera::start_on_port(port, &["--fps", "15"]);
    let up_ms = now_ms();
    let v = nvr.wait_for(
        &format!("/api/recordings?stream=cam&start=0&end={}", now_ms() + 600_000),
        Duration::from_secs(60),
        "a recorded gap and a segment after it",
        |v| {
            let gaps = v["gaps"].as_array().map(|g| !g.is_empty()).unwrap_or(false);
            let after =
                v["recordings"].as_array().is_some_and(|r| r.iter().any(|s| s["start_ms"].as_i64() > Some(up_ms)));
            gaps && after
        },
    );
    let gap = &v["gaps"][0];
    let (gs, ge) = (gap["start_ms"].as_i64().unwrap_or(0), gap["end_ms"].as_i64().unwrap_or(0));
    assert!(gs <= down_ms + 1500 && gs >= down_ms - 3000, "gap starts at {gs}, camera stopped at {down_ms}");
    assert!(ge >= up_ms, "gap ends at {ge}, before the camera came back at {up_ms}");
    let status = nvr.json("/api/streams/cam");
    assert!(status["status"]["connects"].as_u64().unwrap_or(0) >= 2, "{status}");
    drop(cam);
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
    assert_all_decode(&tmp.path().join("data"));
}

#[test]
fn over_quota_the_oldest_recordings_go_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Snow does not compress: the camera really sends ~2 Mbit/s, so 1 MB fills in seconds.
    let cam = Camera::start(&["--fps", "15", "--pattern", "snow", "--bitrate", "2000"]);
    let mut cfg = config(&[("cam", cam.url("h264"))], "segment_seconds = 2\nsync_seconds = 1\n");
    cfg.push_str("max_storage_mb = 1\n");
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    wait_streaming(&nvr, "cam");
    std::thread::sleep(Duration::from_secs(6));
    let early: Vec<i64> = recordings(&nvr, "cam").iter().filter_map(|s| s["id"].as_i64()).collect();
    assert!(!early.is_empty());
    let first = early[0];
    let began = Instant::now();
    let v = nvr.wait_for(
        &format!("/api/recordings?stream=cam&start=0&end={}", now_ms() + 600_000),
        Duration::from_secs(60),
        "the oldest segment to be deleted",
        |v| v["recordings"].as_array().is_some_and(|r| r.iter().all(|s| s["id"].as_i64() != Some(first))),
    );
    let left: Vec<&serde_json::Value> = v["recordings"].as_array().expect("list").iter().collect();
    let ids: Vec<i64> = left.iter().filter_map(|s| s["id"].as_i64()).collect();
    // Deleted ones are the oldest: what is left is a contiguous run of the newest.
    let min_left = *ids.iter().min().expect("something left");
    assert!(early.iter().filter(|&&id| id < min_left).count() >= 1);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "not the oldest went first: {ids:?}");
    let closed_bytes: u64 = left.iter().filter(|s| s["closed"] == true).filter_map(|s| s["bytes"].as_u64()).sum();
    let biggest = left.iter().filter_map(|s| s["bytes"].as_u64()).max().unwrap_or(0);
    assert!(closed_bytes <= 1024 * 1024 + biggest, "{closed_bytes} bytes kept over a 1 MB quota");
    eprintln!("oldest deleted after {:?}", began.elapsed());
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
    let data = tmp.path().join("data");
    assert_all_decode(&data);
    assert_rows_match_files(&data);
}

#[test]
fn credentials_in_the_url_are_used_and_never_shown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15", "--user", "admin", "--password", "s3cr:t"]);
    let good = format!("rtsp://admin:s3cr%3At@127.0.0.1:{}/h264", cam.port);
    let bad = format!("rtsp://admin:wrong@127.0.0.1:{}/h264", cam.port);
    let nvr = Oxinvr::start(tmp.path(), &config(&[("good", good), ("bad", bad)], ""));
    wait_streaming(&nvr, "good");
    let bad = nvr.wait_for("/api/streams/bad", Duration::from_secs(30), "an error on the bad stream", |v| {
        v["status"]["last_error"].is_string()
    });
    let err = bad["status"]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("401") || err.to_lowercase().contains("auth"), "{err}");
    let listing = nvr.get("/api/streams").expect("streams").text();
    assert!(!listing.contains("s3cr") && !listing.contains("wrong"), "a password leaked: {listing}");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
    assert_all_decode(&tmp.path().join("data"));
}
