//! Recording modes through the real recorder: the release binary recording
//! the GStreamer test camera (1 s GOP) into real SQLite, driven over HTTP,
//! the files checked with ffprobe and ffmpeg.
//!
//! - `events_mode_records_around_events_from_the_ring`: a stream in `events`
//!   mode writes nothing until a manual event (POST /api/events); the
//!   recording starts at least `pre_seconds - 1` s before the event (the
//!   ring's pre-buffer: the camera session is never restarted), the files
//!   last what their rows say and decode to the end, it ends within a GOP of
//!   `post_seconds` after the event ended, and nothing is recorded between
//!   two events further apart than pre + post.
//! - `switching_continuous_events_continuous_keeps_the_session`: the mode
//!   changes through the API on the running session (one camera connection
//!   throughout); in events mode with no event the recordings stop growing,
//!   back in continuous they grow again; bad values are named.
//! - `a_schedule_window_records_only_inside_it`: `record = "off"` with a
//!   schedule entry of one minute in continuous (the recorder runs with
//!   TZ=UTC): it records in that minute, the recording closes at the
//!   window's end and nothing more is written; bad entries are named.

mod common;

use std::time::Duration;

use common::nvr::{poll, Oxinvr};
use common::Camera;
use serde_json::{json, Value};

const PRE: i64 = 3;
const POST: i64 = 2;
/// The test camera's GOP (1 s) and a little for the storage thread's 50 ms passes.
const GOP_MS: i64 = 1_300;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn config(url: &str, record: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\nsegment_seconds = 4\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n\
         [[streams]]\nname = \"front\"\nurl = \"{url}\"\nrecord = \"{record}\"\n\
         pre_seconds = {PRE}\npost_seconds = {POST}\n"
    )
}

fn send(nvr: &Oxinvr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let r = nvr
        .request(method, path, &[("Content-Type", "application/json")], text.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if r.body.is_empty() { Value::Null } else { r.json() };
    (r.status, v)
}

fn status(nvr: &Oxinvr) -> Value {
    nvr.json("/api/streams/front")["status"].clone()
}

/// (start_ms, end_ms, path) of every recording of the stream, oldest first, closed or not.
fn recordings(nvr: &Oxinvr) -> Vec<(i64, i64, String, bool)> {
    let v = nvr.json(&format!("/api/recordings?stream=front&start=0&end={}", now_ms() + 60_000));
    let mut out: Vec<_> = v["recordings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let (s, e) = (r["start_ms"].as_i64().unwrap_or(0), r["end_ms"].as_i64().unwrap_or(0));
            (s, e, r["path"].as_str().unwrap_or_default().to_string(), r["closed"] == true)
        })
        .collect();
    out.sort();
    out
}

fn wait_streaming(nvr: &Oxinvr) {
    poll(Duration::from_secs(30), "the stream streaming", || status(nvr)["state"] == "streaming");
}

fn wait_event_recording(nvr: &Oxinvr, on: bool) {
    let what = format!("event_recording = {on}");
    poll(Duration::from_secs(30), &what, || status(nvr)["event_recording"] == on);
}

#[test]
fn events_mode_records_around_events_from_the_ring() {
    let cam = Camera::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "events"));
    wait_streaming(&nvr);
    assert_eq!(status(&nvr)["event_recording"], false, "events mode, no event: not recording");
    // Let the ring fill with more than the pre-buffer, then check nothing was written.
    std::thread::sleep(Duration::from_millis((PRE as u64 + 3) * 1000));
    assert_eq!(recordings(&nvr), vec![], "nothing is recorded before an event");

    // Event 1: ongoing, ended through the API 2 s later.
    let (code, e1) = send(&nvr, "POST", "/api/events", &json!({"stream": "front", "label": "one"}));
    assert_eq!(code, 201, "{e1}");
    let (id1, start1) = (e1["id"].as_i64().expect("id"), e1["start_ms"].as_i64().expect("start"));
    wait_event_recording(&nvr, true);
    std::thread::sleep(Duration::from_secs(2));
    let (code, ended) = send(&nvr, "POST", &format!("/api/events/{id1}/end"), &Value::Null);
    assert_eq!(code, 200, "{ended}");
    let end1 = ended["end_ms"].as_i64().expect("end");
    wait_event_recording(&nvr, false);

    // Quiet for longer than pre + post, then event 2, stored over at once (1 s).
    std::thread::sleep(Duration::from_millis(((PRE + POST) as u64 + 4) * 1000));
    let quiet_from = now_ms();
    let (code, e2) = send(&nvr, "POST", "/api/events", &json!({"stream": "front", "label": "two", "duration_s": 1}));
    assert_eq!(code, 201, "{e2}");
    let (start2, end2) = (e2["start_ms"].as_i64().expect("start"), e2["end_ms"].as_i64().expect("end"));
    std::thread::sleep(Duration::from_millis(300));
    wait_event_recording(&nvr, false);
    poll(Duration::from_secs(20), "every recording closed", || recordings(&nvr).iter().all(|r| r.3));

    let recs = recordings(&nvr);
    assert!(start2 - quiet_from < 1_000 && start2 - PRE * 1000 > end1 + POST * 1000 + 3_000, "spaced apart");
    println!("event 1 {start1}..{end1}, event 2 {start2}..{end2}; recordings: {recs:?}");
    assert!(!recs.is_empty());
    let window = |s: i64, e: i64| (s - PRE * 1000 - GOP_MS, e + POST * 1000 + GOP_MS);
    let (w1, w2) = (window(start1, end1), window(start2, end2));
    assert!(w2.0 > w1.1 + 1_000, "a stretch between the events' windows: {w1:?} {w2:?}");
    for (s, e, path, _) in &recs {
        let inside = |w: (i64, i64)| *s >= w.0 && *e <= w.1;
        assert!(inside(w1) || inside(w2), "recording {s}..{e} lies outside both events' windows {w1:?} {w2:?}");
        assert!(*e <= w1.1 || *s >= w2.0, "recording {s}..{e}: nothing is recorded between the events");
        // The file holds what its row says, and decodes to the end.
        let file = nvr.data_dir.join(path);
        common::decode_ok(&file).unwrap_or_else(|err| panic!("{path} does not decode: {err}"));
        let secs = common::media_duration(&file);
        let row_secs = (e - s) as f64 / 1000.0;
        assert!((secs - row_secs).abs() < 1.1, "{path}: ffprobe says {secs} s, its row {row_secs} s");
    }
    for (start, end) in [(start1, end1), (start2, end2)] {
        let mine: Vec<_> = recs.iter().filter(|r| r.1 >= start && r.0 <= end + POST * 1000 + GOP_MS).collect();
        let first = mine.first().map(|r| r.0).expect("a recording for the event");
        let last = mine.iter().map(|r| r.1).max().unwrap_or(0);
        assert!(first <= start - (PRE - 1) * 1000, "starts {} ms before the event, not {PRE} - 1 s", start - first);
        assert!(last >= end + (POST - 1) * 1000, "ends {} ms after the event, not {POST} s", last - end);
        // One recording (its segments back to back: segment_seconds = 4) per event.
        for pair in mine.windows(2) {
            assert!(pair[1].0 - pair[0].1 < 200, "a hole inside an event's recording: {pair:?}");
        }
        // The first file starts with the pre-buffer: its length covers start - first.
        let total: f64 = mine.iter().map(|r| common::media_duration(&nvr.data_dir.join(&r.2))).sum();
        let span = (last - first) as f64 / 1000.0;
        assert!((total - span).abs() < 1.1, "files total {total} s, rows span {span} s");
    }
    let log = nvr.log();
    assert_eq!(status(&nvr)["connects"], 1, "one camera session throughout:\n{log}");
    assert!(!log.contains("no longer holds the pre-buffer"), "{log}");
}

#[test]
fn switching_continuous_events_continuous_keeps_the_session() {
    let cam = Camera::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "continuous"));
    wait_streaming(&nvr);
    let written = |nvr: &Oxinvr| recordings(nvr).iter().map(|r| r.1).max().unwrap_or(0);
    poll(Duration::from_secs(20), "continuous recording", || written(&nvr) > 0);
    assert_eq!(status(&nvr)["event_recording"], Value::Null, "not in events mode");

    // Bad values are named.
    for (body, field) in [
        (json!({"record": "motion"}), "record"),
        (json!({"pre_seconds": 31}), "pre_seconds"),
        (json!({"post_seconds": 601}), "post_seconds"),
        (json!({"event_retention_days": 0}), "event_retention_days"),
    ] {
        let (code, v) = send(&nvr, "PUT", "/api/streams/front", &body);
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(field)), "{body}: {v}");
    }

    let (code, v) = send(&nvr, "PUT", "/api/streams/front", &json!({"record": "events"}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["record"], "events");
    wait_event_recording(&nvr, false);
    poll(Duration::from_secs(10), "the open segment closed", || recordings(&nvr).iter().all(|r| r.3));
    let stopped_at = written(&nvr);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(written(&nvr), stopped_at, "events mode without an event writes nothing");

    let (code, v) = send(&nvr, "PUT", "/api/streams/front", &json!({"record": "continuous"}));
    assert_eq!(code, 200, "{v}");
    poll(Duration::from_secs(20), "recording again", || written(&nvr) > stopped_at + 2_000);
    assert_eq!(status(&nvr)["event_recording"], Value::Null);
    let log = nvr.log();
    assert_eq!(status(&nvr)["connects"], 1, "the camera session ran on:\n{log}");
    assert!(!log.contains("restarting it"), "{log}");
    for r in recordings(&nvr).iter().filter(|r| r.3) {
        common::decode_ok(&nvr.data_dir.join(&r.2)).unwrap_or_else(|e| panic!("{}: {e}", r.2));
    }
}

/// Local (here UTC: the recorder runs with TZ=UTC) "HH:MM" of `min` minutes after midnight.
fn hhmm(min: i64) -> String {
    let m = min.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[test]
fn a_schedule_window_records_only_inside_it() {
    let cam = Camera::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // A window of the current minute: wait for a fresh one so it lasts long enough to see.
    if now_ms() % 60_000 > 40_000 {
        std::thread::sleep(Duration::from_millis((61_000 - now_ms() % 60_000) as u64));
    }
    let minute = now_ms().div_euclid(60_000);
    let window_end_ms = (minute + 1) * 60_000;
    let entry = format!("daily {}-{} continuous", hhmm(minute % 1440), hhmm(minute % 1440 + 1));
    let cfg = format!("{}schedule = [\"sat 00:00-00:01 off\", \"{entry}\"]\n", config(&cam.url("h264"), "off"));
    let nvr = Oxinvr::start_with_env(tmp.path(), &cfg, &[("TZ", "UTC")]);
    wait_streaming(&nvr);
    let written = |nvr: &Oxinvr| recordings(nvr).iter().map(|r| r.1).max().unwrap_or(0);
    poll(Duration::from_secs(20), "recording inside the window", || written(&nvr) > 0);
    assert_eq!(status(&nvr)["record_now"], "continuous", "{}", nvr.log());
    assert_eq!(nvr.json("/api/streams/front")["schedule"][1], entry.as_str());

    // The window ends: the recording closes at its end (within a GOP and a pass) and stays closed.
    let wait = Duration::from_millis((window_end_ms - now_ms()).max(0) as u64 + 20_000);
    poll(wait, "record_now off after the window", || status(&nvr)["record_now"] == "off");
    poll(Duration::from_secs(10), "the open segment closed", || recordings(&nvr).iter().all(|r| r.3));
    let stopped_at = written(&nvr);
    assert!(
        stopped_at >= window_end_ms - GOP_MS && stopped_at <= window_end_ms + 2 * GOP_MS,
        "recording ended at {stopped_at}, the window at {window_end_ms}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(written(&nvr), stopped_at, "nothing is written outside the window");
    for r in recordings(&nvr) {
        common::decode_ok(&nvr.data_dir.join(&r.2)).unwrap_or_else(|e| panic!("{}: {e}", r.2));
    }

    // Bad entries are named; the schedule in force is unchanged.
    for bad in ["mon-fry 07:00-19:00 continuous", "daily 07:00-25:00 events", "daily 07:00-08:00 always"] {
        let (code, v) = send(&nvr, "PUT", "/api/streams/front", &json!({ "schedule": [bad] }));
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("schedule")), "{bad}: {v}");
    }
    assert_eq!(nvr.json("/api/streams/front")["schedule"][1], entry.as_str());
}
