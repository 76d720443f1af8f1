//! ONVIF cameras end to end: a real oxinvr finds a camera by WS-Discovery,
//! asks it for its profiles with a WS-Security password digest, records the
//! profile's stream, and moves it (PTZ).
//!
//! Simulated: the ONVIF device itself (tests/onvif-sim/sim.py, run with
//! /usr/bin/python3): its WS-Discovery answers (unicast on 127.0.0.1, since
//! multicast may not reach loopback in CI) and its SOAP Device, Media and PTZ
//! services, answered from documents shaped after the ONVIF WSDLs and common
//! cameras. It checks the UsernameToken digest for real and records every
//! request, which the tests read back. Real: the RTSP stream its GetStreamUri
//! names (scripts/test-camera, GStreamer), oxinvr, SQLite, ffprobe.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::nvr::{http, poll, TempOxinvr};
use common::Camera;
use serde_json::{json, Value};

const USER: &str = "admin";
const PASSWORD: &str = "Sim-pass-42";

/// The simulator, with its HTTP and discovery ports.
struct Sim {
    child: Child,
    http: u16,
    discovery: u16,
}

impl Sim {
    fn start(cam: &Camera) -> Sim {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/onvif-sim/sim.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--user", USER, "--password", PASSWORD, "--name", "Front%20Gate"])
            .args(["--main-uri", &cam.url("h264"), "--sub-uri", &cam.url("h264")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/onvif-sim/sim.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the simulator's ports");
        let ports: Value = serde_json::from_str(&line).expect("a JSON line of ports");
        let port = |k: &str| ports[k].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port");
        Sim { http: port("http"), discovery: port("discovery"), child }
    }

    /// The SOAP requests it got: [{"service", "op", "body", "auth"}].
    fn requests(&self) -> Vec<Value> {
        let r = http(self.http, "GET", "/sim/requests", &[], b"").expect("GET /sim/requests");
        r.json().as_array().cloned().unwrap_or_default()
    }

    fn last(&self, op: &str) -> Value {
        self.requests().into_iter().rev().find(|r| r["op"] == op).unwrap_or_else(|| panic!("no {op} request"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nvr(sim: &Sim) -> TempOxinvr {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         pbkdf2_iterations = 1000\n[onvif]\ndiscovery_target = \"127.0.0.1:{}\"\ndiscovery_ms = 1500\n",
        sim.discovery
    );
    TempOxinvr::start(dir, &config)
}

fn post(nvr: &TempOxinvr, path: &str, body: &Value) -> (u16, Value) {
    let r = nvr
        .request("POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (r.status, r.json())
}

fn put(nvr: &TempOxinvr, path: &str, body: &Value) -> (u16, Value) {
    let r = nvr
        .request("PUT", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    (r.status, r.json())
}

/// The element named `local` in a recorded SOAP body, by local name.
fn text_of(body: &str, local: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(body).ok()?;
    let n = doc.descendants().find(|n| n.is_element() && n.tag_name().name() == local)?;
    Some(n.text().unwrap_or_default().trim().to_string())
}

fn attr_of(body: &str, local: &str, attr: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(body).ok()?;
    let n = doc.descendants().find(|n| n.is_element() && n.tag_name().name() == local)?;
    n.attribute(attr).map(str::to_string)
}

#[test]
fn discover_probe_add_record_and_move() {
    let cam = Camera::start(&[]);
    let sim = Sim::start(&cam);
    let nvr = start_nvr(&sim);

    // Discovery: one device although the simulator answers twice.
    let (status, v) = post(&nvr, "/api/onvif/discover", &json!({}));
    assert_eq!(status, 200, "{v}");
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "one device, deduplicated by endpoint: {v}");
    assert_eq!(devices[0]["name"], "Front Gate", "{v}");
    let address = devices[0]["address"].as_str().expect("address").to_string();
    assert_eq!(address, format!("http://127.0.0.1:{}/onvif/device_service", sim.http));
    // The UART shell's `discover` lists it too.
    let out = common::nvr::shell_output(&nvr.config, "discover\nexit\n");
    assert!(out.contains("1 ONVIF camera(s):") && out.contains("Front Gate") && out.contains(&address), "{out}");

    // Probe with the right password: device information and both profiles with their URIs.
    let (status, d) =
        post(&nvr, "/api/onvif/probe", &json!({"address": address, "username": USER, "password": PASSWORD}));
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["device"]["manufacturer"], "SimCam");
    assert_eq!(d["device"]["model"], "SC-PTZ-2");
    let profiles = d["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 2, "{d}");
    assert_eq!((profiles[0]["token"].as_str(), profiles[0]["width"].as_u64()), (Some("Profile_1"), Some(1920)));
    assert_eq!(profiles[0]["stream_uri"], cam.url("h264"));
    assert!(profiles[0]["snapshot_uri"].as_str().is_some_and(|s| s.contains("snapshot.jpg")), "{d}");
    assert_eq!((profiles[0]["ptz"].as_bool(), profiles[1]["ptz"].as_bool()), (Some(true), Some(false)));
    assert!(!d.to_string().contains(PASSWORD), "the password is not in the answer");
    // Every call carried a digest the simulator accepted, never the password itself.
    let reqs = sim.requests();
    let soap: Vec<&Value> = reqs.iter().filter(|r| r["service"] != "discovery").collect();
    assert!(soap.len() >= 5 && soap.iter().all(|r| r["auth"] == "ok"), "{soap:?}");

    // Add the main profile as a stream: it records the camera for real.
    let url = profiles[0]["stream_uri"].as_str().expect("uri");
    let (status, v) = post(&nvr, "/api/streams", &json!({"name": "gate", "url": url}));
    assert_eq!(status, 201, "{v}");
    let (status, v) = put(
        &nvr,
        "/api/streams/gate/onvif",
        &json!({"address": address, "username": USER, "password": PASSWORD, "profile": "Profile_1"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ptz"], true, "{v}");
    assert!(!v.to_string().contains(PASSWORD));
    let dir = nvr.data_dir.join("recordings/gate");
    poll(Duration::from_secs(30), "a closed segment of the ONVIF stream", || common::mp4_files(&dir).len() >= 2);
    let file = &common::mp4_files(&dir)[0];
    let probe = common::ffprobe_json(file);
    assert_eq!(probe["streams"][0]["codec_name"], "h264", "{probe}");
    assert!(common::media_duration(file) > 0.5, "{probe}");

    // PTZ: each call reaches the camera with the SOAP body ONVIF specifies.
    let ptz = |body: Value| post(&nvr, "/api/streams/gate/ptz", &body);
    let (status, v) = ptz(json!({"action": "move", "pan": 0.5, "tilt": -0.25, "zoom": 0}));
    assert_eq!(status, 200, "{v}");
    let m = sim.last("ContinuousMove");
    let body = m["body"].as_str().expect("body");
    assert_eq!((m["service"].as_str(), m["auth"].as_str()), (Some("ptz"), Some("ok")));
    assert_eq!(text_of(body, "ProfileToken").as_deref(), Some("Profile_1"));
    assert_eq!(attr_of(body, "PanTilt", "x").as_deref(), Some("0.5"));
    assert_eq!(attr_of(body, "PanTilt", "y").as_deref(), Some("-0.25"));
    assert_eq!(attr_of(body, "Zoom", "x").as_deref(), Some("0"));
    assert_eq!(ptz(json!({"action": "stop"})).0, 200);
    let s = sim.last("Stop");
    assert_eq!(text_of(s["body"].as_str().expect("body"), "PanTilt").as_deref(), Some("true"));
    let (status, v) = ptz(json!({"action": "set_preset", "name": "Gate & drive"}));
    assert_eq!(status, 200, "{v}");
    let token = v["preset"].as_str().expect("preset token").to_string();
    assert_eq!(
        text_of(sim.last("SetPreset")["body"].as_str().expect("body"), "PresetName").as_deref(),
        Some("Gate & drive")
    );
    let (status, v) = ptz(json!({"action": "presets"}));
    assert_eq!(status, 200, "{v}");
    assert!(v["presets"]
        .as_array()
        .expect("presets")
        .iter()
        .any(|p| p["token"] == token.as_str() && p["name"] == "Gate & drive"));
    assert_eq!(ptz(json!({"action": "goto_preset", "preset": token})).0, 200);
    assert_eq!(
        text_of(sim.last("GotoPreset")["body"].as_str().expect("body"), "PresetToken").as_deref(),
        Some(token.as_str())
    );
    // A preset the camera does not have: its fault, named.
    let (status, v) = ptz(json!({"action": "goto_preset", "preset": "99"}));
    assert_eq!(status, 502, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("NoToken")), "{v}");
    // Out-of-range speeds are the caller's error, not sent.
    let (status, v) = ptz(json!({"action": "move", "pan": 2}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("pan")), "{v}");
    assert!(!nvr.log().contains(PASSWORD), "the password is not logged");
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let cam = Camera::start(&[]);
    let sim = Sim::start(&cam);
    let nvr = start_nvr(&sim);
    let address = format!("127.0.0.1:{}", sim.http);
    let (status, v) =
        post(&nvr, "/api/onvif/probe", &json!({"address": address, "username": USER, "password": "wrong"}));
    assert_eq!(status, 422, "{v}");
    let e = v["error"].as_str().expect("error");
    assert!(e.contains("refused the user name or password") && e.contains("NotAuthorized"), "{e}");
    assert_eq!(sim.last("GetDeviceInformation")["auth"], "wrong", "the simulator checked the digest");
    // Saving a stream's camera with it is refused the same way, and nothing is saved.
    let (status, _) = post(&nvr, "/api/streams", &json!({"name": "gate", "url": cam.url("h264")}));
    assert_eq!(status, 201);
    let (status, v) = put(
        &nvr,
        "/api/streams/gate/onvif",
        &json!({"address": address, "username": USER, "password": "wrong", "profile": "Profile_1"}),
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(nvr.get("/api/streams/gate/onvif").expect("get").status, 404);
    // A profile the camera does not have is named with those it has.
    let (status, v) = put(
        &nvr,
        "/api/streams/gate/onvif",
        &json!({"address": address, "username": USER, "password": PASSWORD, "profile": "nope"}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("Profile_1, Profile_2")), "{v}");
    // PTZ on a profile without it is refused before any camera call.
    let (status, _) = put(
        &nvr,
        "/api/streams/gate/onvif",
        &json!({"address": address, "username": USER, "password": PASSWORD, "profile": "Profile_2"}),
    );
    assert_eq!(status, 200);
    let (status, v) = post(&nvr, "/api/streams/gate/ptz", &json!({"action": "stop"}));
    assert_eq!(status, 409, "{v}");
}
