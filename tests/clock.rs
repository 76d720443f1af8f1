//! The wall-clock floor with the real binary and the real test camera: the
//! recorder runs under libfaketime (LD_PRELOAD; it answers the wall-clock
//! `clock_gettime` calls, monotonic time is left real) starting in 1970, like a
//! box without a battery clock before NTP answers. It must record, say the
//! clock is not set, flag every recording, write files ffprobe reads; then the
//! clock is stepped to the real time (libfaketime rereads its timestamp file)
//! and the same recordings must be re-stamped, in one session, without holes.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::nvr::Oxinvr;
use common::Camera;
use serde_json::Value;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Debian's libfaketime (package faketime, installed by scripts/lib/deps.sh).
fn libfaketime() -> PathBuf {
    let dirs = ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime"];
    dirs.iter()
        .map(|d| PathBuf::from(d).join("libfaketime.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime.so.1 not found: install Debian's faketime (scripts/lib/deps.sh)")
}

/// Every recording of `cam` the recorder lists, whatever its clock says.
fn recordings(nvr: &Oxinvr) -> Vec<Value> {
    let v = nvr.json(&format!("/api/recordings?stream=cam&start=0&end={}", now_ms() + 86_400_000));
    v["recordings"].as_array().cloned().unwrap_or_default()
}

fn closed(recs: &[Value]) -> Vec<&Value> {
    recs.iter().filter(|r| r["closed"] == true).collect()
}

/// The real binary under libfaketime, its wall clock read from a file that
/// starts as `at` (rewrite it to step the clock); returns the file's path too.
fn start_faked(dir: &std::path::Path, at: &str, config: &str) -> (Oxinvr, PathBuf) {
    let stamp = dir.join("faketime");
    std::fs::write(&stamp, at).expect("write the fake time");
    let (lib, stamp_path) = (libfaketime().display().to_string(), stamp.display().to_string());
    let env = [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", stamp_path.as_str()),
        ("FAKETIME_CACHE_DURATION", "1"), // reread the file at most every second
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    (Oxinvr::start_with_env(dir, config, &env), stamp)
}

#[test]
fn a_recorder_started_in_1970_flags_its_recordings_and_restamps_them_when_the_clock_is_set() {
    let cam = Camera::start(&["--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 3\nsync_seconds = 1\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 1000\n",
        cam.url("h264")
    );
    let (nvr, stamp) = start_faked(tmp.path(), "@1970-01-01 00:00:20\n", &config);

    // The recorder believes it is 1970, below the build date: it says so, publicly too.
    let sys = nvr.json("/api/system");
    assert_eq!(sys["clock"]["trusted"], false, "libfaketime did not reach the binary: {}", sys["clock"]);
    assert!(sys["clock"]["now"].as_str().is_some_and(|t| t.starts_with("1970-01-01")), "{}", sys["clock"]);
    assert!(sys["clock"]["floor_ms"].as_i64().unwrap_or(0) > 1_700_000_000_000, "{}", sys["clock"]);
    let health = common::nvr::http(nvr.port, "GET", "/api/health", &[], b"").expect("health").json();
    assert_eq!(health["clock"]["trusted"], false, "{health}");

    // It records anyway; every recording is flagged and every closed file plays.
    common::nvr::poll(Duration::from_secs(40), "three closed recordings in 1970", || {
        closed(&recordings(&nvr)).len() >= 3
    });
    let before = recordings(&nvr);
    for r in &before {
        assert_eq!(r["time_unknown"], true, "{r}");
        assert!(r["start"].as_str().is_some_and(|t| t.starts_with("1970-01-01")), "{r}");
    }
    for r in closed(&before) {
        let path = nvr.data_dir.join(r["path"].as_str().expect("path"));
        let probe = common::ffprobe_json(&path);
        assert_eq!(probe["streams"][0]["codec_name"], "h264", "{}: {probe}", path.display());
        assert_eq!(common::frame_count(&path), r["frames"].as_u64().expect("frames"), "{}", path.display());
    }
    let starts: BTreeMap<i64, i64> = closed(&before)
        .iter()
        .map(|r| (r["id"].as_i64().expect("id"), r["start_ms"].as_i64().expect("start")))
        .collect();

    // NTP answers: the wall clock steps to now. The same rows move to real time.
    std::fs::write(&stamp, "+0\n").expect("step the fake clock");
    let stepped_at = now_ms();
    common::nvr::poll(Duration::from_secs(10), "the clock trusted", || {
        nvr.json("/api/system")["clock"]["trusted"] == true
    });
    common::nvr::poll(Duration::from_secs(10), "every recording re-stamped", || {
        recordings(&nvr).iter().all(|r| r["time_unknown"] == false)
    });
    common::nvr::poll(Duration::from_secs(20), "a recording started after the step", || {
        recordings(&nvr).iter().any(|r| r["start_ms"].as_i64().unwrap_or(0) > stepped_at + 1000)
    });
    let after = recordings(&nvr);
    let by_id: BTreeMap<i64, &Value> = after.iter().map(|r| (r["id"].as_i64().unwrap_or(0), r)).collect();
    let steps: Vec<i64> =
        starts.iter().map(|(id, start)| by_id[id]["start_ms"].as_i64().expect("start") - start).collect();
    assert!(steps.iter().all(|s| (s - steps[0]).abs() <= 2), "one step for every row: {steps:?}");
    let first = after[0]["start_ms"].as_i64().expect("start");
    assert!(
        first > stepped_at - 120_000 && first < stepped_at,
        "the first recording began when it really did: {first}"
    );
    for w in after.windows(2) {
        let hole = w[1]["start_ms"].as_i64().unwrap_or(0) - w[0]["end_ms"].as_i64().unwrap_or(0);
        // A new run (the camera's pts going back) may start a file tens of ms off; a 56-year
        // step or a lost stretch would be far more.
        assert!(
            hole.abs() <= 250,
            "recordings follow each other across the step: {hole} ms between {} and {}",
            w[0],
            w[1]
        );
    }
    let status = nvr.json("/api/streams/cam")["status"].clone();
    assert_eq!(status["connects"], 1, "the step did not end the session: {status}");
    let gaps = nvr.json(&format!("/api/recordings?stream=cam&start=0&end={}", now_ms() + 60_000))["gaps"].clone();
    assert_eq!(gaps, Value::Array(Vec::new()), "no gap recorded");
    assert!(nvr.log().contains("the wall clock is set"), "{}", nvr.log());
}

/// The session cookie of a first admin made with POST /api/auth/setup.
fn setup_session(nvr: &Oxinvr) -> String {
    let body = br#"{"username":"ann","password":"correct horse battery"}"#;
    let r = common::nvr::http(nvr.port, "POST", "/api/auth/setup", &[("Content-Type", "application/json")], body)
        .expect("setup");
    assert_eq!(r.status, 201, "{}", r.text());
    let cookie = r.header("Set-Cookie").expect("a session cookie").to_string();
    cookie.split(';').next().expect("name=value").to_string()
}

fn logged_in(nvr: &Oxinvr, cookie: &str) -> bool {
    let r = common::nvr::http(nvr.port, "GET", "/api/streams/cam", &[("Cookie", cookie)], b"").expect("GET");
    r.status == 200
}

/// What the recorder lists now (by id: start_ms) and its clock steps.
fn listing(nvr: &Oxinvr, around_ms: i64) -> (BTreeMap<i64, i64>, Vec<Value>) {
    let day = 86_400_000;
    let v = nvr.json(&format!("/api/recordings?stream=cam&start={}&end={}", around_ms - 2 * day, around_ms + 2 * day));
    let recs = v["recordings"].as_array().cloned().unwrap_or_default();
    let starts = recs.iter().map(|r| (r["id"].as_i64().unwrap_or(0), r["start_ms"].as_i64().unwrap_or(0))).collect();
    (starts, v["clock_steps"].as_array().cloned().unwrap_or_default())
}

#[test]
fn a_clock_set_back_an_hour_then_a_year_ahead_keeps_recordings_sessions_and_retention_sane() {
    const HOUR: i64 = 3_600_000;
    const YEAR: i64 = 365 * 86_400_000;
    let cam = Camera::start(&["--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Keep a day: a year's jump would make every recording "older" than that.
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\nsync_seconds = 1\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 1000\nretention_days = 1\n",
        cam.url("h264")
    );
    let (nvr, stamp) = start_faked(tmp.path(), "+0\n", &config);
    let cookie = setup_session(&nvr);
    common::nvr::poll(Duration::from_secs(30), "two closed recordings", || closed(&recordings(&nvr)).len() >= 2);
    let (before, steps) = listing(&nvr, now_ms());
    assert!(steps.is_empty(), "no step yet: {steps:?}");

    // An operator sets the clock back an hour.
    std::fs::write(&stamp, "-3600\n").expect("step back");
    let back_at = now_ms() - HOUR;
    common::nvr::poll(Duration::from_secs(60), "the step back on the timeline and a recording after it", || {
        let (recs, steps) = listing(&nvr, back_at);
        let stepped = steps.iter().any(|s| (s["step_ms"].as_i64().unwrap_or(0) + HOUR).abs() < 3_000);
        stepped && recs.values().any(|start| (start - back_at).abs() < 20_000)
    });
    let (recs, _) = listing(&nvr, back_at);
    for (id, start) in &before {
        assert_eq!(recs.get(id), Some(start), "a recording made before the step keeps its time");
    }
    assert!(logged_in(&nvr, &cookie), "the session survives the step back");

    // Then someone sets it a year ahead: what was recorded is not a year old.
    std::fs::write(&stamp, "+365d\n").expect("step ahead");
    let ahead_at = now_ms() + YEAR;
    common::nvr::poll(Duration::from_secs(60), "the year ahead on the timeline and a recording after it", || {
        let (recs, steps) = listing(&nvr, ahead_at);
        let stepped = steps.iter().any(|s| (s["step_ms"].as_i64().unwrap_or(0) - (YEAR + HOUR)).abs() < 3_000);
        stepped && recs.values().any(|start| (start - ahead_at).abs() < 20_000)
    });
    // Segments of 2 s rotate and retention runs after each rotation: give it a few.
    std::thread::sleep(Duration::from_secs(8));
    let all = recordings(&nvr);
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap_or(0)).collect();
    for id in before.keys() {
        assert!(ids.contains(id), "recording {id} of before the jump was deleted by age: {ids:?}\n{}", nvr.log());
    }
    assert!(logged_in(&nvr, &cookie), "the session survives the year ahead");
    assert!(nvr.log().contains("the wall clock stepped by"), "{}", nvr.log());
    // Every recording plays.
    for r in closed(&all) {
        let path = nvr.data_dir.join(r["path"].as_str().expect("path"));
        assert_eq!(common::frame_count(&path), r["frames"].as_u64().expect("frames"), "{}", path.display());
    }
}
