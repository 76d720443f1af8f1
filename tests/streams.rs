//! The recorder core as a user meets it: a wedged camera next to good ones, a
//! camera that comes back after an outage, and stream edits that must (or must
//! not) reconnect. Real test cameras (GStreamer), the real binary; the wedged
//! camera is a real TCP socket that accepts and never answers.

mod common;

use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::Camera;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn stream_toml(name: &str, url: &str, priority: i32) -> String {
    format!("[[streams]]\nname = \"{name}\"\nurl = \"{url}\"\nbitrate_kbps = 1000\npriority = {priority}\n")
}

fn config(streams: &str) -> String {
    format!("[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n{streams}")
}

fn status(nvr: &Oxinvr, name: &str) -> serde_json::Value {
    nvr.json(&format!("/api/streams/{name}"))["status"].clone()
}

fn frames(nvr: &Oxinvr, name: &str) -> u64 {
    status(nvr, name)["frames"].as_u64().unwrap_or(0)
}

fn recordings(nvr: &Oxinvr, stream: &str) -> Vec<serde_json::Value> {
    let v = nvr.json(&format!("/api/recordings?stream={stream}&start=0&end={}", now_ms() + 60_000));
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// Polls every 50 ms until `f` holds; returns when it first did.
fn poll_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wedged_camera_at_the_highest_priority_does_not_hold_up_the_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wedged = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let wedged_url = format!("rtsp://127.0.0.1:{}/stream", wedged.local_addr().expect("addr").port());
    let cam = Camera::start(&["--fps", "15"]);
    let streams = [
        stream_toml("wedged", &wedged_url, 10),
        stream_toml("a", &cam.url("h264"), 5),
        stream_toml("b", &cam.url("h264"), 1),
    ]
    .concat();
    let began = Instant::now();
    let nvr = Oxinvr::start(tmp.path(), &config(&streams));
    for name in ["a", "b"] {
        poll_until(Duration::from_secs(15), &format!("{name} records"), || frames(&nvr, name) > 0);
    }
    let both = began.elapsed();
    // The wedged camera's DESCRIBE deadline (5 s) and bring-up turn (3 s) bound the wait.
    assert!(both < Duration::from_secs(10), "the good cameras waited {both:?}");
    poll_until(Duration::from_secs(20), "the wedged camera is retried", || {
        status(&nvr, "wedged")["connects"].as_u64().unwrap_or(0) >= 2
    });
    let st = status(&nvr, "wedged");
    let err = st["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("DESCRIBE got no answer in 5000 ms"), "{st}");
    let (a0, b0) = (frames(&nvr, "a"), frames(&nvr, "b"));
    std::thread::sleep(Duration::from_secs(3));
    let (a1, b1) = (frames(&nvr, "a"), frames(&nvr, "b"));
    assert!(a1 >= a0 + 30 && b1 >= b0 + 30, "a and b kept recording: {a0}->{a1}, {b0}->{b1}");
    println!("good cameras recording {both:?} after start next to a wedged one");
    drop(wedged);
}

#[test]
fn a_camera_back_after_a_short_outage_records_again_within_two_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let port = cam.port;
    let nvr = Oxinvr::start(tmp.path(), &config(&stream_toml("cam", &cam.url("h264"), 0)));
    poll_until(Duration::from_secs(20), "cam records", || frames(&nvr, "cam") > 15);
    drop(cam);
    poll_until(Duration::from_secs(15), "the outage is noticed", || status(&nvr, "cam")["state"] == "backoff");
    std::thread::sleep(Duration::from_secs(5));
    let cam = Camera::start_on_port(port, &["--fps", "15"]);
    let back = Instant::now();
    let before = frames(&nvr, "cam");
    let resumed = poll_until(Duration::from_secs(10), "recording resumes", || frames(&nvr, "cam") > before);
    let took = resumed - back;
    println!("recording resumed {took:?} after the camera came back");
    assert!(took < Duration::from_secs(2), "resumed {took:?} after the camera came back");
    drop(cam);
}

#[test]
fn editing_retention_or_priority_keeps_the_session_and_a_url_change_reconnects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&stream_toml("cam", &cam.url("h264"), 0)));
    poll_until(Duration::from_secs(20), "a recording exists", || !recordings(&nvr, "cam").is_empty());
    let connects = |nvr: &Oxinvr| status(nvr, "cam")["connects"].as_u64().unwrap_or(0);
    let (c0, rec0) = (connects(&nvr), recordings(&nvr, "cam"));
    let put = |body: &str| {
        let r = nvr.request("PUT", "/api/streams/cam", &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(r.as_ref().map(|r| r.status).unwrap_or(0), 200, "{:?}", r.map(|r| r.text()));
    };
    put(r#"{"retention_days": 7, "priority": 3, "max_storage_mb": 500}"#);
    let f0 = frames(&nvr, "cam");
    std::thread::sleep(Duration::from_secs(3));
    let v = nvr.json("/api/streams/cam");
    assert_eq!(v["retention_days"].as_u64(), Some(7), "{v}");
    assert_eq!(v["priority"].as_i64(), Some(3), "{v}");
    assert_eq!(connects(&nvr), c0, "a retention/priority change reconnected: {v}");
    assert!(v["status"]["frames"].as_u64().unwrap_or(0) > f0 + 30, "frames stopped: {v}");
    let rec1 = recordings(&nvr, "cam");
    assert_eq!(rec1.len(), rec0.len(), "a new file was started: {rec0:?} -> {rec1:?}");
    assert_eq!(rec1.last().map(|r| r["id"].clone()), rec0.last().map(|r| r["id"].clone()));

    // Another camera path is another session: reconnect and a new file.
    put(&format!(r#"{{"url": "{}"}}"#, cam.url("h265")));
    poll_until(Duration::from_secs(20), "the new URL is recorded", || {
        let st = status(&nvr, "cam");
        connects(&nvr) > c0
            && st["codec"].as_str().is_some_and(|c| c.starts_with("hvc1"))
            && st["frames"].as_u64() > Some(0)
    });
    poll_until(Duration::from_secs(20), "a new file", || recordings(&nvr, "cam").len() > rec1.len());
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

#[test]
fn sigterm_ends_well_under_a_second_past_a_client_that_does_not_read_and_keeps_the_ring() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    // Snow does not compress: ~1 MB/s, so a 12 s export outgrows every socket buffer.
    let cam = Camera::start(&["--fps", "15", "--pattern", "snow", "--bitrate", "8000"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&stream_toml("cam", &cam.url("h264"), 0)));
    poll_until(Duration::from_secs(20), "cam records", || frames(&nvr, "cam") > 0);
    let t0 = now_ms();
    std::thread::sleep(Duration::from_secs(13));
    // A client asks for the export and never reads it: its worker blocks in a write.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
    let (k, v) = nvr.auth_header();
    let target = format!("/api/export.mp4?stream=cam&start={t0}&end={}", t0 + 12_000);
    write!(slow, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{k}: {v}\r\n\r\n").expect("send");
    std::thread::sleep(Duration::from_secs(1));
    let stop_ms = now_ms();
    let log_path = nvr.log_path.clone();
    let data = nvr.data_dir.clone();
    let (st, took) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success(), "{st}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("still answering a client"), "the slow client was not exercised:\n{log}");
    println!("SIGTERM to exit: {took:?} with a client that does not read");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    // Nothing already in the ring is lost: the newest file runs up to the stop.
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![data.join("recordings")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path())
            } else {
                files.push(e.path())
            }
        }
    }
    let newest = files
        .iter()
        .max_by_key(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<i64>().ok()))
        .expect("a file");
    let start: i64 = newest.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("start ms");
    let end = start + (common::media_duration(newest) * 1000.0) as i64;
    assert!(end >= stop_ms - 1000, "the newest file ends {} ms before SIGTERM", stop_ms - end);
    common::decode_ok(newest).expect("the newest file decodes");
    drop(slow);
}
