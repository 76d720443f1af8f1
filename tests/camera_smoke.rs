//! Proves the test camera (scripts/test-camera) is a real RTSP camera before anything
//! else relies on it: ffmpeg records it for 4 s of wall time and ffprobe sees the
//! expected codecs, ~4 s of media at ~15 fps, and every frame decodes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Camera;

const SECONDS: f64 = 4.0;

/// Records `url` with `ffmpeg -rtsp_transport tcp -t 4 -c copy` into `out.mkv`;
/// returns the file and the wall time the recording took.
fn record(url: &str, dir: &std::path::Path) -> (std::path::PathBuf, Duration) {
    let out = dir.join("out.mkv");
    let t0 = Instant::now();
    let o = Command::new("timeout")
        .args(["60", "ffmpeg", "-nostdin", "-v", "error", "-y", "-rtsp_transport", "tcp", "-i", url])
        .args(["-t", &SECONDS.to_string(), "-c", "copy"])
        .arg(&out)
        .output()
        .expect("run ffmpeg");
    assert!(o.status.success(), "ffmpeg recording {url}: {}", String::from_utf8_lossy(&o.stderr));
    (out, t0.elapsed())
}

fn check(args: &[&str], mount: &str, want: &[&str]) {
    let cam = Camera::start(args);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (file, wall) = record(&cam.url(mount), tmp.path());

    let probe = common::ffprobe_json(&file);
    let codecs: Vec<&str> =
        probe["streams"].as_array().expect("streams").iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(codecs, want, "streams of {mount}: {probe}");

    let d = common::media_duration(&file);
    assert!((SECONDS - 0.3..=SECONDS + 0.5).contains(&d), "{mount}: {d} s of media, want ~{SECONDS}");
    // Real time: 4 s of media cannot arrive faster than 4 s of wall time.
    assert!(wall.as_secs_f64() >= SECONDS - 0.3, "{mount}: {d} s of media in {wall:?}");
    let frames = common::frame_count(&file);
    assert!((55..=70).contains(&frames), "{mount}: {frames} frames in {d} s at 15 fps");
    common::decode_ok(&file).unwrap_or_else(|e| panic!("{mount}: {e}"));
}

#[test]
fn camera_h264_with_aac_is_real_time_rtsp() {
    check(&["--audio", "--fps", "15"], "h264", &["h264", "aac"]);
}

#[test]
fn camera_h265_is_real_time_rtsp() {
    check(&["--fps", "15"], "h265", &["hevc"]);
}
