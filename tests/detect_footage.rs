//! Motion detection on real H.264: footage and test patterns encoded by
//! ffmpeg / GStreamer's x264enc, cut into access units and pushed through a
//! real ring to a real `detect-NAME` thread (OpenH264 decoding, the motion
//! detector, the rate gate). Frames are pushed as fast as the thread takes
//! them (none is lost), with pts at the clip's frame rate, so motion times
//! are the clip's own.
//!
//! Needs ffmpeg, gst-launch-1.0 (x264enc, timeoverlay) and opencv-doc's
//! vtest.avi (scripts/lib/deps.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use oxinvr::base::clock::{Clock, SimulatedClock};
use oxinvr::config::DetectConfig;
use oxinvr::detect::{annexb, DetectSetup, Mask, MotionChange};
use oxinvr::recording::media::{Frame, RunStart, Track, VideoParams};
use oxinvr::recording::ring::Ring;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const T0: i64 = 1_750_000_000_000;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// vtest.avi (768x576, 10 fps, 80 s of people walking) as 640x480 H.264, GOP 2 s.
fn vtest(dir: &Path) -> PathBuf {
    let out = dir.join("vtest.h264");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", VTEST, "-vf", "scale=640:-2", "-c:v", "libx264"])
        .args(["-preset", "veryfast", "-g", "20", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(&out));
    out
}

/// `frames` of a videotestsrc pattern (640x360, `fps`, GOP 2 s) through `filters`.
fn pattern(dir: &Path, name: &str, pattern: &str, filters: &str, frames: u32, fps: u32) -> PathBuf {
    let out = dir.join(format!("{name}.h264"));
    let desc = format!(
        "gst-launch-1.0 -q videotestsrc pattern={pattern} num-buffers={frames} ! video/x-raw,format=I420,width=640,height=360,framerate={fps}/1 \
         {filters} ! x264enc speed-preset=veryfast key-int-max={gop} bframes=0 ! video/x-h264,stream-format=byte-stream \
         ! filesink location='{}'",
        out.display(),
        gop = fps * 2
    );
    run(Command::new("sh").arg("-c").arg(desc));
    out
}

struct Replay {
    changes: Vec<MotionChange>,
    decoded: u64,
    ms_per_frame: f64,
}

/// Pushes `file` at `fps` through a ring to a detection thread; returns what it reported.
fn replay(file: &Path, fps: i64, mask: Mask) -> Replay {
    let bytes = std::fs::read(file).expect("clip");
    let stream = annexb::parse(&bytes).expect("H.264 clip");
    assert!(stream.units.len() > 10, "{}: {} access units", file.display(), stream.units.len());
    let ring = Arc::new(Ring::new("clip", 16 << 20, None).expect("ring"));
    let (tx, rx) = mpsc::channel();
    // The clock stays at the clip's start: only frame times drive the detector.
    let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(T0));
    let setup = DetectSetup {
        stream: "clip".into(),
        rings: {
            let r = ring.clone();
            Arc::new(move || Some(r.clone()))
        },
        config: DetectConfig::default(),
        mask,
        zones: Vec::new(),
        live: None,
        clock,
        sink: Box::new(tx),
        objects: None,
        snapshot: None,
        slow: Duration::ZERO,
    };
    let handle = oxinvr::detect::spawn(setup).expect("detect thread");
    let video = VideoParams {
        codec: stream.codec.clone(),
        width: 0,
        height: 0,
        timescale: 90_000,
        sample_entry: stream.sample_entry.clone(),
    };
    ring.push_run(&RunStart { video, audio: None, anchor_pts: 0, anchor_wall_ms: T0, time_unknown: false })
        .expect("run");
    for (i, unit) in stream.units.iter().enumerate() {
        let pts = i as i64 * 90_000 / fps;
        ring.push_frame(&Frame { track: Track::Video, key: unit.key, pts, data: &unit.data }).expect("push");
        let deadline = Instant::now() + Duration::from_secs(20);
        while handle.stats.snapshot().frames_seen < i as u64 + 1 {
            assert!(Instant::now() < deadline, "the detection thread stopped taking frames at {i}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let stats = handle.stats.clone();
    handle.stop(); // ends motion still in progress
    let c = stats.snapshot();
    let (decoded, busy) = (c.frames_decoded, c.busy_us);
    assert_eq!(c.frames_lost, 0);
    assert_eq!(c.decode_errors, 0, "{}", file.display());
    let changes = rx.try_iter().map(|(_, c)| c).collect();
    Replay { changes, decoded, ms_per_frame: busy as f64 / 1000.0 / decoded.max(1) as f64 }
}

/// (start, end) times relative to the clip's start; every start has its end.
fn events(changes: &[MotionChange]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut open = None;
    for c in changes {
        match *c {
            MotionChange::Start { at_ms, .. } => {
                assert!(open.is_none(), "two starts in a row: {changes:?}");
                open = Some(at_ms - T0);
            }
            MotionChange::End { at_ms, .. } => {
                let start = open.take().unwrap_or_else(|| panic!("an end without a start: {changes:?}"));
                out.push((start, at_ms - T0));
            }
        }
    }
    assert!(open.is_none(), "a start without an end: {changes:?}");
    out
}

#[test]
fn people_walking_give_a_few_motion_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = replay(&vtest(dir.path()), 10, Mask::default());
    let ev = events(&r.changes);
    eprintln!("vtest: {} frames decoded, {:.2} ms each (decode + motion); events {ev:?}", r.decoded, r.ms_per_frame);
    assert!(!ev.is_empty(), "no motion in vtest.avi");
    assert!(ev.len() <= 5, "one walk past should be one event, got {}: {ev:?}", ev.len());
    // People are in the picture from the first seconds.
    assert!(ev[0].0 < 5000, "{ev:?}");
    let covered: i64 = ev.iter().map(|(s, e)| e - s).sum();
    assert!(covered > 30_000, "people walk through most of the clip; motion covered {covered} ms: {ev:?}");
}

#[test]
fn a_clock_overlay_moves_until_it_is_masked() {
    let dir = tempfile::tempdir().expect("tmp");
    // smpte75 is still (smpte has a noise patch); the running time overlay (x 0.04..0.66,
    // y 0.08..0.27) is as big as a camera's on a sub stream. 5 fps: what detect.fps samples
    // evenly (a 25 fps clip is sampled in bursts at the start of each GOP, see worker::Gate).
    let overlay = "! timeoverlay halignment=left valignment=top font-desc=\"Sans 48\"";
    let clip = pattern(dir.path(), "clock", "smpte75", overlay, 300, 5);
    let open = events(&replay(&clip, 5, Mask::default()).changes);
    assert!(!open.is_empty(), "the running clock is motion when nothing masks it");
    let mask = Mask { polygons: vec![vec![[0.0, 0.0], [0.7, 0.0], [0.7, 0.32], [0.0, 0.32]]] };
    let masked = events(&replay(&clip, 5, mask).changes);
    assert!(masked.is_empty(), "motion on a still pattern with its clock masked: {masked:?}");
}

#[test]
fn a_moving_ball_is_seen_within_two_seconds() {
    let dir = tempfile::tempdir().expect("tmp");
    // 25 fps: the gate decodes keyframes and short bursts after them.
    let clip = pattern(dir.path(), "ball", "ball", "", 150, 25);
    let r = replay(&clip, 25, Mask::default());
    let ev = events(&r.changes);
    eprintln!("ball: {} frames decoded, {:.2} ms each; events {ev:?}", r.decoded, r.ms_per_frame);
    assert!(ev.first().is_some_and(|&(start, _)| start <= 2000), "{ev:?}");
}
