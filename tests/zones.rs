//! Zones, motion mask and detection settings per stream, in the running
//! recorder: edited through `PUT /api/streams/{name}` (validated, stored,
//! picked up by the running detection without a restart), the current
//! picture for the editor (`GET /api/streams/{name}/snapshot`), and object
//! events that follow the zones on real footage (vtest.avi through the
//! GStreamer test camera, NanoDet-g).

mod common;

use std::time::{Duration, Instant};

use common::nvr::{Oxinvr, Response};
use common::Camera;
use serde_json::{json, Value};

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

fn put(nvr: &Oxinvr, stream: &str, body: &Value) -> Response {
    nvr.request("PUT", &format!("/api/streams/{stream}"), &JSON, body.to_string().as_bytes()).expect("PUT")
}

/// Asserts a 400 whose JSON message contains every one of `needles`.
fn refused(nvr: &Oxinvr, body: Value, needles: &[&str]) {
    let r = put(nvr, "cam", &body);
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.status, 400, "{body}: {}", r.text());
    for n in needles {
        assert!(msg.contains(n), "{body}: the message {msg:?} does not name {n:?}");
    }
}

fn config(url: &str, extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n{extra}\
         [[streams]]\nname = \"cam\"\nurl = \"{url}\"\nbitrate_kbps = 1000\n"
    )
}

#[test]
fn zones_are_validated_stored_and_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config("rtsp://127.0.0.1:9/none", ""));
    let square = json!([[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]);
    refused(
        &nvr,
        json!({ "zones": [{ "name": "gate", "polygon": [[0.1, 0.1], [1.5, 0.2], [0.3, 0.9]] }] }),
        &["field zones", "gate", "point 1", "outside 0..=1"],
    );
    refused(
        &nvr,
        json!({ "zones": [{ "name": "gate", "polygon": [[0.1, 0.1], [0.2, 0.2]] }] }),
        &["zones", "2 points", "3 to 64"],
    );
    refused(&nvr, json!({ "zones": [{ "name": "a", "polygon": square, "labels": ["unicorn"] }] }), &["unicorn"]);
    refused(&nvr, json!({ "zones": [{ "name": "a", "polygon": square, "min_score": 2 }] }), &["min_score", "0..=1"]);
    refused(&nvr, json!({ "zones": [{ "name": "", "polygon": square }] }), &["zones", "name"]);
    refused(&nvr, json!({ "zones": [{ "name": "a", "polygon": square, "colour": "red" }] }), &["colour"]);
    refused(&nvr, json!({ "zones": [{ "polygon": square }] }), &["zones", "name"]);
    refused(&nvr, json!({ "zones": "everywhere" }), &["zones"]);
    refused(&nvr, json!({ "motion_mask": [[[0.0, 0.0], [0.2, -0.1], [0.2, 0.2]]] }), &["motion_mask", "point 1"]);
    refused(&nvr, json!({ "detect": ["motion", "faces"] }), &["detect", "faces"]);
    assert_eq!(nvr.json("/api/streams/cam")["zones"], json!([]), "nothing refused was stored");

    let zones = json!([
        { "name": "drive way", "polygon": square, "labels": ["car", "person"], "min_score": 0.5, "required": true },
        { "name": "lawn", "polygon": [[0.0, 0.6], [1.0, 0.6], [0.5, 1.0]] },
    ]);
    let mask = json!([[[0.0, 0.0], [0.3, 0.0], [0.3, 0.1]]]);
    let r = put(&nvr, "cam", &json!({ "detect": ["motion", "objects"], "motion_mask": mask, "zones": zones }));
    assert_eq!(r.status, 200, "{}", r.text());
    let want_zones = json!([
        { "name": "drive way", "polygon": square, "labels": ["car", "person"], "min_score": 0.5, "required": true },
        { "name": "lawn", "polygon": [[0.0, 0.6], [1.0, 0.6], [0.5, 1.0]], "labels": [], "min_score": null, "required": false },
    ]);
    for v in [r.json(), nvr.json("/api/streams/cam")] {
        assert_eq!((&v["detect"], &v["motion_mask"], &v["zones"]), (&json!(["motion", "objects"]), &mask, &want_zones));
    }
    // A change of other fields keeps the zones (the body carries only what changes).
    assert_eq!(put(&nvr, "cam", &json!({ "priority": 3 })).status, 200);
    assert_eq!(nvr.json("/api/streams/cam")["zones"], want_zones);

    let (config, data, port) = (nvr.config.clone(), nvr.data_dir.clone(), nvr.port);
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
    let nvr = Oxinvr::restart(&config, &data, port);
    let v = nvr.json("/api/streams/cam");
    // The file sets no detection for cam: what the API stored survives the restart.
    assert_eq!((&v["detect"], &v["motion_mask"], &v["zones"]), (&json!(["motion", "objects"]), &mask, &want_zones));
    assert_eq!(v["priority"], 0, "the file's other fields win at start, as before: {v}");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

#[test]
fn the_snapshot_is_the_current_picture_or_says_why_not() {
    let cam = Camera::start(&["--pattern", "ball"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), ""));
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), "cam streaming", |v| v["status"]["state"] == "streaming");
    let r = nvr.get("/api/streams/nope/snapshot").expect("GET");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap_or_default().contains("nope"), "{}", r.text());
    let r = nvr.get("/api/streams/cam/snapshot").expect("GET");
    assert_eq!(r.status, 409, "detection off: {}", r.text());
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("detection is off") && msg.contains("motion"), "{msg}");

    // Switched on through the API: the running recorder starts detecting (no restart).
    assert_eq!(put(&nvr, "cam", &json!({ "detect": ["motion"] })).status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = nvr.get("/api/streams/cam/snapshot").expect("GET");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/jpeg")), "{}", r.text());
    let file = tmp.path().join("snapshot.jpg");
    std::fs::write(&file, &r.body).expect("write");
    let probe = common::ffprobe_json(&file);
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg", "{probe}");
    assert!(probe["streams"][0]["width"].as_u64().unwrap_or(0) >= 160, "{probe}");
    common::decode_ok(&file).expect("the snapshot decodes");

    // And off again: the thread pauses, the snapshot says so.
    assert_eq!(put(&nvr, "cam", &json!({ "detect": [] })).status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = nvr.get("/api/streams/cam/snapshot").expect("GET");
        if r.status == 409 && r.text().contains("detection is off") {
            break;
        }
        assert!(Instant::now() < deadline, "still a picture after detection was switched off: {}", r.status);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}

/// vtest.avi (people walking on a path across a lawn, seen from above) as H.264.
fn vtest_clip(dir: &std::path::Path) -> std::path::PathBuf {
    let clip = dir.join("vtest.mp4");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", "/usr/share/doc/opencv-doc/examples/data/vtest.avi", "-t", "40"])
        .args(["-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&clip)
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    clip
}

fn object_events(nvr: &Oxinvr, query: &str) -> Vec<Value> {
    let v = nvr.json(&format!("/api/events?stream=cam&kind=object{query}"));
    v["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn objects_count_only_in_the_zones_that_require_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clip = vtest_clip(tmp.path());
    let cam = Camera::start(&["--replay", clip.to_str().expect("utf-8")]);
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/nanodet-g.onnx");
    // The lawn at the bottom left, where nobody walks, is the only (required) zone.
    let body = config(&cam.url("replay"), &format!("[detect]\nmodel = \"{model}\"\n")).replace(
        "bitrate_kbps = 1000\n",
        "bitrate_kbps = 1000\ndetect = [\"motion\", \"objects\"]\n\
         [[streams.zones]]\nname = \"lawn\"\npolygon = [[0.0, 0.72], [0.55, 0.72], [0.55, 1.0], [0.0, 1.0]]\n\
         required = true\n",
    );
    let nvr = Oxinvr::start(tmp.path(), &body);
    // People walk the whole time: motion events come, object events must not.
    nvr.wait_for("/api/events?stream=cam&kind=motion", Duration::from_secs(40), "a motion event", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let busy_before = nvr.json("/api/streams/cam")["detection"]["busy_ms"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(12));
    let busy_after = nvr.json("/api/streams/cam")["detection"]["busy_ms"].as_u64().unwrap_or(0);
    assert!(busy_after > busy_before, "detection kept working: {busy_before} -> {busy_after} ms");
    let none = object_events(&nvr, "");
    assert!(none.is_empty(), "people walk outside the only required zone, yet: {none:?}\n{}", nvr.log());

    // The path where they walk becomes the required zone, through the API, while running.
    let path = json!([{ "name": "path", "polygon": [[0.0, 0.2], [1.0, 0.2], [1.0, 0.95], [0.0, 0.95]], "required": true,
                        "labels": ["person"] }]);
    assert_eq!(put(&nvr, "cam", &json!({ "zones": path })).status, 200);
    let deadline = Instant::now() + Duration::from_secs(40);
    let people = loop {
        let e = object_events(&nvr, "&zone=path");
        if e.iter().any(|e| e["label"] == "person") {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no person event in the path zone in 40 s: {:?}\n{}",
            object_events(&nvr, ""),
            nvr.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for e in &people {
        assert_eq!(e["zones"], json!(["path"]), "{e}");
        let b = &e["box"];
        let feet_y = b["y"].as_f64().unwrap_or(-1.0) + b["h"].as_f64().unwrap_or(0.0);
        assert!((0.2..=0.95).contains(&feet_y), "its feet are in the zone: {e}");
    }
    assert!(object_events(&nvr, "&zone=lawn").is_empty(), "no event names the lawn");
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());
}
