//! Shared helpers of the integration tests: the real test camera
//! (scripts/test-camera, GStreamer's RTSP server) and ffmpeg/ffprobe checks.
#![allow(dead_code)]

pub mod garage;
pub mod nvr;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use nvr::free_port;

/// `~/.cache/oxinvr` (or under `XDG_CACHE_HOME`): where scripts/lib/deps.sh puts the
/// PyPI tools' virtualenvs (`ensure_pypi_venv`).
pub fn tool_cache() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("oxinvr")
}

/// A running `scripts/test-camera` on 127.0.0.1.
pub struct Camera {
    child: Option<Child>,
    pub port: u16,
}

impl Camera {
    /// Starts the camera on a free port with extra `args` (e.g. `--audio`).
    pub fn start(args: &[&str]) -> Camera {
        Self::start_on_port(free_port(), args)
    }

    /// Starts the camera on `port` and waits (20 s at most) for its READY line.
    pub fn start_on_port(port: u16, args: &[&str]) -> Camera {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-camera");
        let mut child = Command::new(script)
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/test-camera");
        let stdout = child.stdout.take().expect("camera stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY") {
                    let _ = tx.send(());
                }
            }
        });
        let cam = Camera { child: Some(child), port };
        rx.recv_timeout(Duration::from_secs(20)).expect("the test camera printed no READY line in 20 s");
        cam
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// ffprobe's JSON (format + streams) of a file.
pub fn ffprobe_json(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .output()
        .expect("run ffprobe (scripts/test installs ffmpeg)");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Decodes every frame of every stream; any error message is a failure. `-xerror` makes a
/// corrupt packet/frame fatal (without it ffmpeg conceals and exits 0); passthrough +
/// `-enc_time_base -1` keep ffmpeg's null muxer from complaining about timestamps it
/// rounded itself to 1/fps (frames closer than that apart), which are not file errors.
pub fn decode_ok(path: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        return Err(format!("ffmpeg: {}", err.trim()));
    }
    Ok(())
}

/// Duration of a media file in seconds, as ffprobe reports it.
pub fn media_duration(path: &Path) -> f64 {
    ffprobe_json(path)["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0)
}

/// Duration (s) of a file's first video stream: the container's duration
/// also counts an audio track that runs a frame past the video.
pub fn video_duration(path: &Path) -> f64 {
    let probe = ffprobe_json(path);
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .and_then(|s| s["duration"].as_str())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// Presentation times (s) of the video keyframes of a file, in order.
pub fn keyframe_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-skip_frame", "nokey", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect()
}

/// Decoded video frames of a file (ffprobe -count_frames).
pub fn frame_count(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Every `.mp4` file under `dir`, sorted (the recorder's files of one stream or all).
pub fn mp4_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}
