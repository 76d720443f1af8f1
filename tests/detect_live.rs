//! Motion detection in the running recorder: the real binary records the
//! GStreamer test camera and runs a `detect-NAME` thread on the stream's ring.

mod common;

use std::path::{Path, PathBuf};
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
    out
}

#[test]
fn a_moving_ball_starts_motion_and_detection_shows_in_memory() {
    // 5 fps (what detect.fps samples evenly), a keyframe every 2 s.
    let cam = Camera::start(&["--pattern", "ball", "--fps", "5", "--gop", "10"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264")));
    wait_streaming(&nvr);
    let streaming = Instant::now();
    let deadline = streaming + Duration::from_secs(20);
    while !nvr.log().contains("detect cam: motion started") {
        assert!(Instant::now() < deadline, "no motion from a moving ball in 20 s:\n{}", nvr.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("motion logged {:?} after the stream was streaming", streaming.elapsed());
    let mem = &nvr.json("/api/system")["memory"];
    assert!(mem["heap_by_subsystem"]["detect"].as_i64().unwrap_or(0) > 0, "{mem}");
    assert!(mem["detect_native_bytes"].as_i64().unwrap_or(0) > 0, "{mem}");
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
    let recorded: u64 = mp4_files(&tmp.path().join("data/recordings")).iter().map(|f| common::frame_count(f)).sum();
    // Everything ingested up to the status read (and more, up to the stop) is in the files.
    assert!(recorded >= ingested, "recorded {recorded} frames, ingested {ingested} before the stop");
}
