//! Object detection with the real model (models/nanodet-g.onnx, tract) on
//! real footage, and the remote detector between real OxiNVR processes.
//!
//! - `people_in_footage_and_nothing_in_a_pattern`: a frame of opencv-doc's
//!   vtest.avi (people walking, seen from above) gives `person` boxes of a
//!   pedestrian's size; a flat picture and a test pattern give nothing; the
//!   label filter drops what is not asked for.
//! - `the_detect_endpoint`: `POST /api/detect` on a running oxinvr with the
//!   model: an operator API key gets the people as JSON, no key 401, a
//!   viewer 403, garbage 400, a too large body 413; a second oxinvr without a
//!   model answers 503. Then a third oxinvr process (`oxinvr detect-bench
//!   --objects` with `detect.backend` = the first one's URL and the key) finds
//!   the same labels through the remote backend as the local model here.
//! - `bad_detector_settings_are_named`: `oxinvr check` names a missing model
//!   file, a file that is not ONNX, and a remote URL without a key.
//!
//! Needs ffmpeg and opencv-doc's vtest.avi (scripts/lib/deps.sh installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::nvr::{http, oxinvr_bin, send_raw, Oxinvr, Response};
use oxinvr::config::DetectConfig;
use oxinvr::detect::objects::{Detection, Detector};
use oxinvr::detect::picture::Rgb;
use serde_json::Value;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/nanodet-g.onnx").display().to_string()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One frame of vtest.avi at `at` (seconds) as a JPEG (768x576).
fn vtest_frame(dir: &Path, at: &str) -> PathBuf {
    let out = dir.join(format!("vtest-{at}.jpg"));
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-ss", at, "-i", VTEST, "-frames:v", "1", "-q:v", "3"])
        .arg(&out));
    out
}

/// One frame of an ffmpeg test source (`lavfi` graph) as a JPEG.
fn lavfi_frame(dir: &Path, name: &str, graph: &str) -> PathBuf {
    let out = dir.join(format!("{name}.jpg"));
    run(Command::new("ffmpeg").args(["-v", "error", "-y", "-f", "lavfi", "-i", graph, "-frames:v", "1"]).arg(&out));
    out
}

fn picture(path: &Path) -> Rgb {
    Rgb::from_jpeg(&std::fs::read(path).expect("jpeg"), 1 << 24).expect("decodes")
}

fn local(cfg: DetectConfig) -> Detector {
    Detector::from_config(&DetectConfig { model: model(), ..cfg }).expect("the model loads")
}

/// A box a pedestrian of vtest.avi fills: seen from above at 768x576, a
/// person is a few percent of the frame, taller than wide or about square.
fn pedestrian_sized(d: &Detection) -> bool {
    let [x0, y0, x1, y1] = d.bbox;
    let (w, h) = (x1 - x0, y1 - y0);
    (0.01..0.4).contains(&w) && (0.03..0.6).contains(&h) && h > 0.6 * w
}

#[test]
fn people_in_footage_and_nothing_in_a_pattern() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut detector = local(DetectConfig::default());
    let frame = picture(&vtest_frame(dir.path(), "5"));
    let found = detector.detect(&frame).expect("detects");
    eprintln!("vtest @5 s: {found:?}");
    let people: Vec<_> = found.iter().filter(|d| d.label == "person").collect();
    assert!(!people.is_empty(), "no person in a frame of people walking: {found:?}");
    assert!(people.iter().all(|d| pedestrian_sized(d)), "odd person boxes: {people:?}");
    assert!(people.iter().all(|d| d.score >= 0.5), "below detect.min_score: {people:?}");

    for (name, graph) in
        [("grey", "color=c=gray:s=640x360"), ("smpte", "smptebars=s=640x360"), ("black", "color=c=black:s=640x360")]
    {
        let pic = picture(&lavfi_frame(dir.path(), name, graph));
        let found = detector.detect(&pic).expect("detects");
        assert!(found.is_empty(), "{name}: {found:?}");
    }

    let mut cars_only = local(DetectConfig { labels: vec!["car".into()], ..Default::default() });
    let found = cars_only.detect(&frame).expect("detects");
    assert!(found.iter().all(|d| d.label == "car"), "the label filter let through: {found:?}");
}

/// An API key of a new user with `role`.
fn key_of(nvr: &Oxinvr, role: &str) -> String {
    nvr.api_key("od", role)
}

fn post_jpeg(port: u16, key: Option<&str>, body: &[u8]) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "image/jpeg")];
    if let Some(a) = auth.as_deref() {
        headers.push(("Authorization", a));
    }
    http(port, "POST", "/api/detect", &headers, body).expect("POST /api/detect")
}

fn config(extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n{extra}\n"
    )
}

fn labels(v: &Value) -> Vec<String> {
    let mut l: Vec<String> =
        v.as_array().expect("a list").iter().filter_map(|d| d["label"].as_str().map(String::from)).collect();
    l.sort();
    l.dedup();
    l
}

#[test]
fn the_detect_endpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let frame = vtest_frame(dir.path(), "5");
    let jpeg = std::fs::read(&frame).expect("jpeg");
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).expect("dir");
    let server = Oxinvr::start(&server_dir, &config(&format!("[detect]\nmodel = \"{}\"\n", model())));
    let (operator, viewer) = (key_of(&server, "operator"), key_of(&server, "viewer"));

    let r = post_jpeg(server.port, Some(&operator), &jpeg);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(768), Some(576)), "{v}");
    assert_eq!(v["model"], "nanodet-g.onnx@416");
    assert!(labels(&v["detections"]).contains(&"person".to_string()), "{v}");
    for d in v["detections"].as_array().expect("list") {
        let b: Vec<f64> = d["box"].as_array().expect("box").iter().filter_map(Value::as_f64).collect();
        assert!(b.len() == 4 && b[0] < b[2] && b[1] < b[3] && b.iter().all(|x| (0.0..=1.0).contains(x)), "{d}");
    }

    let r = post_jpeg(server.port, None, &jpeg);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_jpeg(server.port, Some(&viewer), &jpeg);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap_or_default().contains("operator"), "{}", r.text());
    let r = post_jpeg(server.port, Some(&operator), b"this is not a picture at all");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap_or_default().contains("JPEG"), "{}", r.text());
    // Declared too large: refused before the body is read (so none is sent).
    let head = format!(
        "POST /api/detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\n\
         Content-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        (4 << 20) + 1
    );
    let r = send_raw(server.port, head.as_bytes()).expect("413");
    assert_eq!(r.status, 413, "{}", r.text());
    // Within the limit in bytes but a picture larger than 3840x2160: a JPEG header says so.
    let big = lavfi_frame(dir.path(), "big", "color=c=gray:s=4000x2200");
    let r = post_jpeg(server.port, Some(&operator), &std::fs::read(big).expect("jpeg"));
    assert_eq!(r.status, 413, "{}", r.text());
    let r = http(
        server.port,
        "POST",
        "/api/detect?min_score=2",
        &[("Authorization", &format!("Bearer {operator}"))],
        &jpeg,
    )
    .expect("post");
    assert_eq!(r.status, 400, "{}", r.text());

    // A box without a model says so.
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).expect("dir");
    let bare = Oxinvr::start(&bare_dir, &config(""));
    let r = bare.request("POST", "/api/detect", &[("Content-Type", "image/jpeg")], &jpeg).expect("post");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap_or_default().contains("detect.model"), "{}", r.text());

    // Another oxinvr process detects through the first one (the remote backend).
    let client_cfg = dir.path().join("client.toml");
    let url = format!("http://127.0.0.1:{}/api/detect", server.port);
    std::fs::write(&client_cfg, format!("[detect]\nbackend = \"{url}\"\napi_key = \"{operator}\"\n")).expect("cfg");
    let out = Command::new(oxinvr_bin())
        .args(["detect-bench", "--objects"])
        .arg(&frame)
        .args(["--runs", "2", "--config"])
        .arg(&client_cfg)
        .output()
        .expect("detect-bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let remote: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(remote["detector"], url.as_str());
    let here = local(DetectConfig::default()).detect(&picture(&frame)).expect("detects");
    let here: Vec<String> = {
        let mut l: Vec<String> = here.iter().map(|d| d.label.to_string()).collect();
        l.sort();
        l.dedup();
        l
    };
    assert_eq!(labels(&remote["objects"]), here, "remote {remote} vs local");
    assert_eq!(remote["objects"].as_array().map(Vec::len), v["detections"].as_array().map(Vec::len));

    // A wrong key is the remote's 401, named.
    std::fs::write(&client_cfg, format!("[detect]\nbackend = \"{url}\"\napi_key = \"wrong\"\n")).expect("cfg");
    let out = Command::new(oxinvr_bin())
        .args(["detect-bench", "--objects"])
        .arg(&frame)
        .args(["--runs", "1", "--config"])
        .arg(&client_cfg)
        .output()
        .expect("detect-bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401") && err.contains(&url), "{err}");
}

#[test]
fn bad_detector_settings_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let not_onnx = dir.path().join("model.onnx");
    std::fs::write(&not_onnx, "<html>a download page, not a model</html>").expect("write");
    let missing = dir.path().join("missing.onnx");
    let cases = [
        (format!("[detect]\nmodel = \"{}\"\n", missing.display()), missing.display().to_string()),
        (format!("[detect]\nmodel = \"{}\"\n", not_onnx.display()), "not an ONNX model".to_string()),
        ("[detect]\nbackend = \"http://10.1.2.3:8080/api/detect\"\n".to_string(), "detect.api_key".to_string()),
        ("[detect]\nbackend = \"ftp://x/api/detect\"\n".to_string(), "detect.backend".to_string()),
        ("[detect]\ninput_size = 300\n".to_string(), "multiple of 32".to_string()),
        ("[detect]\nlabels = [\"unicorn\"]\n".to_string(), "unicorn".to_string()),
        (
            "[[streams]]\nname = \"a\"\nurl = \"rtsp://127.0.0.1:1/x\"\ndetect = [\"motion\", \"objects\"]\n"
                .to_string(),
            "detect.model".to_string(),
        ),
    ];
    for (text, want) in cases {
        let cfg = dir.path().join("oxinvr.toml");
        std::fs::write(&cfg, format!("[storage]\ndata_dir = \"{}\"\n{text}", dir.path().join("data").display()))
            .expect("cfg");
        let out = Command::new(oxinvr_bin()).args(["check", "--config"]).arg(&cfg).output().expect("check");
        let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}: accepted");
        assert!(err.contains(&want), "{text}: {err}");
    }
}
