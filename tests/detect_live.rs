//! Motion detection in the running recorder: the real binary records the
//! GStreamer test camera and runs a `detect-NAME` thread on the stream's ring.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::Camera;

fn config(url: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{url}\"\nbitrate_kbps = 1000\ndetect = [\"motion\"]\n"
    )
}

fn wait_streaming(nvr: &Oxinvr) {
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), "cam streaming", |v| {
        v["status"]["state"] == "streaming" && v["status"]["frames"].as_u64().unwrap_or(0) > 0
    });
}

/// Fetches `path` (a JPEG) into `dir/name` and checks it with ffprobe: its width.
fn jpeg_width(nvr: &Oxinvr, path: &str, file: &Path) -> u64 {
    let r = nvr.get(path).expect("GET picture");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/jpeg")), "{path}: {}", r.text());
    std::fs::write(file, &r.body).expect("write picture");
    let probe = common::ffprobe_json(file);
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg", "{probe}");
    probe["streams"][0]["width"].as_u64().expect("width")
}

#[test]
fn a_moving_ball_opens_a_motion_event_with_pictures_and_detection_shows_in_memory() {
    // 5 fps (what detect.fps samples evenly), a keyframe every 2 s.
    let cam = Camera::start(&["--pattern", "ball", "--fps", "5", "--gop", "10"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264")));
    wait_streaming(&nvr);
    let streaming = Instant::now();
    let events = nvr.wait_for("/api/events?stream=cam", Duration::from_secs(20), "a motion event", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    eprintln!("motion event in the API {:?} after the stream was streaming", streaming.elapsed());
    let e = &events["events"][0];
    assert_eq!(
        (e["stream"].as_str(), e["kind"].as_str(), e["label"].as_str()),
        (Some("cam"), Some("motion"), Some("motion")),
        "{e}"
    );
    let score = e["score"].as_f64().expect("score");
    assert!(score > 0.0 && score <= 1.0, "{e}");
    assert!(e["start_ms"].as_i64().is_some() && e["end_ms"].is_null(), "the ball keeps moving: {e}");
    assert!(nvr.log().contains("detect cam: motion started"), "{}", nvr.log());
    let snap = jpeg_width(&nvr, e["snapshot_url"].as_str().expect("snapshot url"), &tmp.path().join("snap.jpg"));
    let thumb = jpeg_width(&nvr, e["thumbnail_url"].as_str().expect("thumbnail url"), &tmp.path().join("thumb.jpg"));
    assert!(snap == 640 && thumb == 192, "snapshot {snap} px wide, thumbnail {thumb} (camera is 640 wide)");

    let mem = &nvr.json("/api/system")["memory"];
    assert!(mem["heap_by_subsystem"]["detect"].as_i64().unwrap_or(0) > 0, "{mem}");
    assert!(mem["detect_native_bytes"].as_i64().unwrap_or(0) > 0, "{mem}");
    // Prometheus has detection's work for the stream, and its motion.
    let metrics = nvr.get("/api/metrics").expect("metrics").text();
    let sample = |name: &str| {
        let line = format!("{name}{{stream=\"cam\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.parse::<f64>().ok())
    };
    assert!(sample("oxinvr_detect_frames_total") > Some(0.0), "{metrics}");
    assert!(sample("oxinvr_detect_busy_seconds_total") > Some(0.0), "{metrics}");
    assert_eq!(sample("oxinvr_detect_in_motion"), Some(1.0), "the ball keeps moving");
    let id = e["id"].as_i64().expect("id");
    let (config, data, port) = (nvr.config.clone(), nvr.data_dir.clone(), nvr.port);
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());

    // A clean stop ends the open event: nothing stays "ongoing" across a restart.
    let nvr = Oxinvr::restart(&config, &data, port);
    let e = nvr.json(&format!("/api/events/{id}"));
    assert!(e["end_ms"].as_i64() >= e["start_ms"].as_i64() && e["ongoing"] == false, "{e}");

    // A crash cannot end it: the next start does, at the last moment recorded.
    let open = nvr.wait_for("/api/events?stream=cam", Duration::from_secs(30), "a new motion event", |v| {
        v["events"].as_array().is_some_and(|e| e.iter().any(|e| e["id"].as_i64() > Some(id) && e["end_ms"].is_null()))
    });
    let open = open["events"].as_array().into_iter().flatten().find(|e| e["end_ms"].is_null()).expect("open");
    let open_id = open["id"].as_i64().expect("id");
    nvr.kill9();
    let nvr = Oxinvr::restart(&config, &data, port);
    let e = nvr.json(&format!("/api/events/{open_id}"));
    assert!(e["end_ms"].as_i64() >= e["start_ms"].as_i64() && e["ongoing"] == false, "after SIGKILL: {e}");
    assert!(nvr.log().contains("left open by the last run"), "{}", nvr.log());
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

/// The stream's `detection` object once `f` holds for it.
fn detection_when(nvr: &Oxinvr, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), what, |v| f(&v["detection"]))["detection"].clone()
}

#[test]
fn detection_follows_a_restarted_stream_and_names_a_stream_it_cannot_decode() {
    let cam = Camera::start(&["--pattern", "ball", "--fps", "5", "--gop", "10"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264")));
    let d = detection_when(&nvr, "frames decoded", |d| d["frames_decoded"].as_u64() > Some(0));
    assert_eq!((d["detectors"][0].as_str(), d["problem"].as_str()), (Some("motion"), None), "{d}");

    // A new URL restarts the stream on a new ring: an H.265 one detection cannot decode.
    let put = |url: String| {
        let body = serde_json::json!({ "url": url }).to_string();
        let r = nvr.request("PUT", "/api/streams/cam", &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(r.as_ref().map(|r| r.status).ok(), Some(200), "{:?}", r.map(|r| r.text()));
    };
    put(cam.url("h265"));
    let d = detection_when(&nvr, "detection to name the H.265 stream", |d| d["problem"].as_str().is_some());
    assert!(d["problem"].as_str().is_some_and(|p| p.contains("H.264")), "{d}");
    assert!(d["ring_changes"].as_u64() >= Some(1), "{d}");

    // Back to H.264: detection decodes again on the newest ring, with no restart of its own.
    put(cam.url("h264"));
    let before = d["frames_decoded"].as_u64().unwrap_or(0);
    let d = detection_when(&nvr, "decoding again", |d| {
        d["problem"].is_null() && d["frames_decoded"].as_u64() > Some(before + 5)
    });
    assert!(d["ring_changes"].as_u64() >= Some(2), "{d}");

    // A stream added through the API detects too, with no restart; deleted, its thread ends.
    let body = serde_json::json!({ "name": "added", "url": cam.url("h264"), "detect": ["motion"] }).to_string();
    let r = nvr.request("POST", "/api/streams", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.as_ref().map(|r| r.status).ok(), Some(201), "{:?}", r.map(|r| r.text()));
    nvr.wait_for("/api/events?stream=added", Duration::from_secs(30), "a motion event on the added stream", |v| {
        v["events"].as_array().is_some_and(|e| e.iter().any(|e| e["label"] == "motion"))
    });
    let r = nvr.request("DELETE", "/api/streams/added?purge=true", &[], b"").expect("DELETE");
    assert!(r.status < 300, "{}", r.text());
    let gone = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        !thread_names(nvr.pid().as_raw()).iter().any(|n| n == "detect-added")
    });
    assert!(gone, "detect-added still runs after the stream was deleted: {:?}", thread_names(nvr.pid().as_raw()));
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

/// The names of a process's threads (/proc/PID/task/*/comm).
fn thread_names(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).map(|n| n.trim().to_owned()).collect()
}

#[test]
fn people_walking_past_the_camera_open_person_events() {
    // vtest.avi (opencv-doc: people walking, seen from above) replayed by the test camera.
    let tmp = tempfile::tempdir().expect("tempdir");
    let clip = tmp.path().join("vtest.mp4");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", "/usr/share/doc/opencv-doc/examples/data/vtest.avi", "-t", "40"])
        .args(["-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&clip)
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cam = Camera::start(&["--replay", clip.to_str().expect("utf-8")]);
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/nanodet-g.onnx");
    let body = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n[detect]\nmodel = \"{model}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 1000\ndetect = [\"motion\", \"objects\"]\n",
        cam.url("replay")
    );
    let nvr = Oxinvr::start(tmp.path(), &body);
    let deadline = Instant::now() + Duration::from_secs(40);
    let events = loop {
        let v = nvr.json("/api/events?stream=cam&kind=object");
        if v["events"].as_array().is_some_and(|e| e.iter().any(|e| e["label"] == "person")) {
            break v;
        }
        assert!(Instant::now() < deadline, "no person event in 40 s: {v}\n{}", nvr.log());
        std::thread::sleep(Duration::from_millis(250));
    };
    let e = events["events"].as_array().into_iter().flatten().find(|e| e["label"] == "person").expect("person");
    let score = e["score"].as_f64().unwrap_or(0.0);
    assert!((0.3..=1.0).contains(&score), "{e}");
    let b = &e["box"];
    let (w, h) = (b["w"].as_f64().unwrap_or(0.0), b["h"].as_f64().unwrap_or(0.0));
    assert!(w > 0.01 && w < 0.5 && h > 0.02 && h < 0.8, "a pedestrian-sized box: {e}");
    let thumb = jpeg_width(&nvr, e["thumbnail_url"].as_str().expect("thumbnail"), &tmp.path().join("person.jpg"));
    assert_eq!(thumb, 192);
    let motion = nvr.json("/api/events?stream=cam&kind=motion");
    assert!(!motion["events"].as_array().is_none_or(Vec::is_empty), "objects are looked for while it moves: {motion}");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

#[test]
fn a_slow_detector_never_costs_recording_a_frame() {
    let cam = Camera::start(&["--pattern", "ball", "--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // 400 ms per decoded frame: the detector falls far behind 15 fps and jumps ahead.
    let nvr = Oxinvr::start_with_env(
        tmp.path(),
        &config(&cam.url("h264")),
        &[("OXINVR_TEST_KNOBS", "1"), ("OXINVR_DETECT_SLOW_MS", "400")],
    );
    wait_streaming(&nvr);
    assert!(nvr.log().contains("every decoded frame takes 400 ms more"), "{}", nvr.log());
    std::thread::sleep(Duration::from_secs(12));
    let status = nvr.json("/api/streams/cam")["status"].clone();
    let ingested = status["frames"].as_u64().unwrap_or(0);
    assert_eq!(status["gaps"].as_u64(), Some(0), "recording lost frames: {status}");
    assert!(ingested >= 150, "{status}");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
    let recorded: u64 =
        common::mp4_files(&tmp.path().join("data/recordings")).iter().map(|f| common::frame_count(f)).sum();
    // Everything ingested up to the status read (and more, up to the stop) is in the files.
    assert!(recorded >= ingested, "recorded {recorded} frames, ingested {ingested} before the stop");
}
