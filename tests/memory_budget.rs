//! The memory budget with the real binary and the GStreamer test camera:
//! `[memory] budget_mb = 64` and 24 streams sized for 4 Mbit/s. The streams
//! whose reservation fits record (every frame, one session each, files ffprobe
//! reads); the others say `waiting_for_memory` with the numbers, and record
//! nothing; the process stays under its budget; the high-priority streams are
//! among the admitted; raising the budget through the API admits more without
//! restarting the running ones.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::nvr::{poll, Oxinvr};
use common::Camera;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Stream name -> its status, from GET /api/streams.
fn statuses(nvr: &Oxinvr) -> BTreeMap<String, Value> {
    let v = nvr.json("/api/streams");
    let list = v["streams"].as_array().cloned().unwrap_or_default();
    list.into_iter().map(|s| (s["name"].as_str().unwrap_or("").to_string(), s["status"].clone())).collect()
}

fn waiting(st: &Value) -> bool {
    st["state"] == "waiting_for_memory"
}

/// Names of the streams not waiting, once every one of them has recorded frames.
fn admitted_and_recording(nvr: &Oxinvr) -> Option<Vec<String>> {
    let all = statuses(nvr);
    let admitted: Vec<String> = all.iter().filter(|(_, st)| !waiting(st)).map(|(n, _)| n.clone()).collect();
    let recording = admitted.iter().all(|n| all[n]["frames"].as_u64().unwrap_or(0) > 30);
    (recording && !admitted.is_empty()).then_some(admitted)
}

fn put_budget(nvr: &Oxinvr, body: &str) -> common::nvr::Response {
    nvr.request("PUT", "/api/system/memory", &[("Content-Type", "application/json")], body.as_bytes())
        .expect("PUT /api/system/memory")
}

#[test]
fn a_budget_admits_what_fits_and_a_raise_admits_more_without_restarting_anyone() {
    let cam = Camera::start(&["--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = String::from(
        "[storage]\ndata_dir = \"{DATA}\"\nsegment_seconds = 4\nsync_seconds = 1\n\
         [web]\nlisten = \"127.0.0.1:{PORT}\"\n[memory]\nbudget_mb = 64\n",
    );
    for i in 0..24 {
        // The last four matter most: they must be admitted whatever their place.
        let priority = if i >= 20 { 5 } else { 0 };
        config += &format!(
            "[[streams]]\nname = \"cam{i:02}\"\nurl = \"{}\"\nbitrate_kbps = 4000\npriority = {priority}\n",
            cam.url("h264")
        );
    }
    let nvr = Oxinvr::start(tmp.path(), &config);

    let mut admitted = Vec::new();
    poll(Duration::from_secs(90), "every admitted stream recording", || {
        admitted = admitted_and_recording(&nvr).unwrap_or_default();
        !admitted.is_empty()
    });
    let all = statuses(&nvr);
    assert!(admitted.len() >= 3 && admitted.len() < 24, "admitted {admitted:?}");
    for high in ["cam20", "cam21", "cam22", "cam23"] {
        assert!(admitted.iter().any(|n| n == high), "priority 5 stream {high} waits: {admitted:?}");
    }
    for (name, st) in all.iter().filter(|(_, st)| waiting(st)) {
        let w = &st["memory_wait"];
        let (needs, free) = (w["needs_bytes"].as_u64().unwrap_or(0), w["free_bytes"].as_u64().unwrap_or(u64::MAX));
        assert!(needs > 4 * MIB && needs > free, "{name} waits for {needs} bytes with {free} free: {st}");
        assert_eq!(st["frames"], 0, "{name} waits yet received frames");
    }

    // Within the budget, by its own account and by the kernel's.
    let system = nvr.json("/api/system");
    let budget = &system["memory"]["budget"];
    assert_eq!(budget["budget_bytes"], 64 * MIB);
    let held: u64 = budget["streams"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    let fixed: u64 = budget["fixed"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    assert!(held + fixed <= 64 * MIB, "reservations {held} + {fixed} exceed the budget: {budget}");
    // A waiting stream holds no ring of its own size: the budget's refusal frees the memory.
    let rings = system["memory"]["rings_bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(rings < (admitted.len() as u64 + 1) * 4 * MIB, "rings of {rings} bytes for {} admitted", admitted.len());
    assert_eq!(budget["waiting"].as_array().map(Vec::len), Some(24 - admitted.len()), "{budget}");
    // Let the rings fill (4 MiB each, a few seconds of this camera), then measure.
    std::thread::sleep(Duration::from_secs(20));
    let pss = nvr.json("/api/system")["memory"]["process"]["pss"].as_u64().unwrap_or(0);
    assert!(pss > 0 && pss < 64 * MIB, "process PSS {pss} bytes with a 64 MiB budget");
    eprintln!("budget 64 MiB: {} of 24 admitted, PSS {:.1} MiB", admitted.len(), pss as f64 / MIB as f64);

    // Raised through the API: more are admitted, none of the running restarts.
    let bad = put_budget(&nvr, r#"{"budget_mb": 5}"#);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("budget_mb"), "{}", bad.text());
    let before = statuses(&nvr);
    let r = put_budget(&nvr, r#"{"budget_mb": 96}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut more = Vec::new();
    poll(Duration::from_secs(60), "the streams the raise admitted recording", || {
        more = admitted_and_recording(&nvr).unwrap_or_default();
        more.len() > admitted.len()
    });
    let after = statuses(&nvr);
    eprintln!("budget 96 MiB: {} of 24 admitted", more.len());
    for name in &admitted {
        let (b, a) = (&before[name], &after[name]);
        assert_eq!(a["connects"], 1, "{name} was restarted: {a}");
        assert_eq!(a["gaps"], 0, "{name} lost frames: {a}");
        assert!(a["frames"].as_u64() > b["frames"].as_u64(), "{name} stopped recording");
    }

    // Every recording of an admitted stream plays; waiting ones have none.
    poll(Duration::from_secs(30), "a closed recording of each newly admitted stream", || {
        more.iter().filter(|n| !admitted.contains(n)).all(|n| !closed(&nvr, n).is_empty())
    });
    for name in statuses(&nvr).keys() {
        let recs = closed(&nvr, name);
        if !more.contains(name) {
            assert!(recs.is_empty(), "{name} waits yet has recordings: {recs:?}");
        }
        for r in recs {
            let path = nvr.data_dir.join(r["path"].as_str().expect("path"));
            assert_eq!(common::frame_count(&path), r["frames"].as_u64().expect("frames"), "{}", path.display());
        }
    }
    drop(cam);
}

fn closed(nvr: &Oxinvr, stream: &str) -> Vec<Value> {
    let v = nvr.json(&format!("/api/recordings?stream={stream}"));
    let recs = v["recordings"].as_array().cloned().unwrap_or_default();
    recs.into_iter().filter(|r| r["closed"] == true).collect()
}
