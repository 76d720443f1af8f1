//! Retention at scale, as a user who lowers `retention_days` by months meets it:
//! 10,000 old segments (real files, hard links of recorded ones) to delete while
//! 8 streams record from a real camera. Nothing may fall behind: no stream may
//! lose a record from its ring (a gap) while the storage thread deletes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::Camera;

const STREAMS: usize = 8;
const OLD_PER_STREAM: usize = 1250;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn config(cam: &Camera, retention: Option<u32>) -> String {
    let mut t = "[storage]\ndata_dir = \"{DATA}\"\nsegment_seconds = 2\nsync_seconds = 1\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n"
        .to_string();
    for i in 0..STREAMS {
        t.push_str(&format!("[[streams]]\nname = \"cam{i}\"\nurl = \"{}\"\nbitrate_kbps = 1000\n", cam.url("h264")));
        if let Some(days) = retention {
            t.push_str(&format!("retention_days = {days}\n"));
        }
    }
    t
}

/// Segments of a stream that started before `before_ms`.
fn count_before(nvr: &Oxinvr, stream: &str, before_ms: i64) -> usize {
    let v = nvr.json(&format!("/api/recordings?stream={stream}&start=0&end={before_ms}"));
    v["recordings"].as_array().map_or(0, Vec::len)
}

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn ten_thousand_deletions_while_eight_streams_record_lose_no_frame() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    // 1. Record a little, so every stream has a closed segment to clone.
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, None));
    nvr.wait_for("/api/recordings?stream=cam7&start=0", Duration::from_secs(60), "two segments per stream", |v| {
        v["recordings"].as_array().is_some_and(|r| r.len() >= 2)
    });
    let (port, data, cfg_path) = (nvr.port, nvr.data_dir.clone(), nvr.config.clone());
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());

    // 2. 10,000 segments, 60 days and older, then retention of 30 days.
    let fill = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/fill_history.py");
    let out = Command::new("/usr/bin/python3")
        .arg(fill)
        .args(["--data", data.to_str().expect("utf-8"), "--count", &OLD_PER_STREAM.to_string()])
        .args(["--segment-seconds", "300", "--gap-days", "60"])
        .output()
        .expect("run fill_history.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old_files = files_under(&data.join("recordings"));
    assert!(old_files >= STREAMS * OLD_PER_STREAM, "{old_files} files");
    let text =
        config(&cam, Some(30)).replace("{DATA}", &data.display().to_string()).replace("{PORT}", &port.to_string());
    std::fs::write(&cfg_path, text).expect("config");
    let month_ago = now_ms() - 30 * 86_400_000;

    // 3. Start recording again; retention deletes while the cameras stream.
    let nvr = Oxinvr::restart(&cfg_path, &data, port);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(180);
    loop {
        let left: usize = (0..STREAMS).map(|i| count_before(&nvr, &format!("cam{i}"), month_ago)).sum();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} old segments left after 180 s\n{}", nvr.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = began.elapsed();
    println!("10,000 old segments deleted in {took:?} while {STREAMS} streams recorded");
    std::thread::sleep(Duration::from_secs(2));
    let mut worst = 0;
    for i in 0..STREAMS {
        let v = nvr.json(&format!("/api/streams/cam{i}"));
        let s = &v["status"];
        assert_eq!(s["gaps"].as_u64(), Some(0), "cam{i} lost records while retention ran: {v}");
        assert_eq!(s["state"], "streaming", "{v}");
        assert!(s["frames"].as_u64().unwrap_or(0) as f64 >= took.as_secs_f64() * 15.0 * 0.8, "cam{i}: {v}");
        worst = worst.max(s["storage_lag_max_ms"].as_u64().unwrap_or(u64::MAX));
    }
    // Deleting in batches of at most 50 ms between drains keeps every wait short
    // (one pass over all 10,000 made the rings wait 378 ms on this project's CI
    // disk, seconds on an SD card). How short is a figure, not a pass mark: it
    // depends on the machine's load, so it is printed (and benchmarked); what a
    // user would notice, a lost frame, is asserted above.
    println!("longest a ring waited for the storage thread: {worst} ms");
    assert!(!nvr.log().contains("recording fell behind"), "{}", nvr.log());
    assert!(files_under(&data.join("recordings")) < old_files / 10, "the files went with their rows");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}
