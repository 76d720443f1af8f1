//! ONVIF cameras end to end: a real oxinvr finds a camera by WS-Discovery
//! (unicast, and multicast to 239.255.255.250:3702 on loopback), asks it for
//! its profiles with a WS-Security password digest, records the profile's
//! stream, moves it (PTZ), and takes the camera's own motion detection as
//! events (PullPoint subscription).
//!
//! Simulated: the ONVIF device itself (tests/onvif-sim/sim.py, run with
//! /usr/bin/python3): its WS-Discovery answers and its SOAP Device, Media, PTZ
//! and Events services (with the PullPoint subscriptions and their motion
//! notifications, raised and cleared by a test knob), answered from
//! documents shaped after the ONVIF WSDLs and common cameras. It checks the
//! UsernameToken digest for real and records every request, which the tests
//! read back. Real: the RTSP stream its GetStreamUri names
//! (scripts/test-camera, GStreamer), oxinvr, SQLite, ffprobe, the kernel's
//! multicast on the loopback interface.

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
        Sim::start_with(cam, &[])
    }

    /// With more command line arguments (`--http-port`, `--multicast`, ...).
    fn start_with(cam: &Camera, args: &[&str]) -> Sim {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/onvif-sim/sim.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--user", USER, "--password", PASSWORD, "--name", "Front%20Gate"])
            .args(["--main-uri", &cam.url("h264"), "--sub-uri", &cam.url("h264")])
            .args(args)
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

    fn count(&self, op: &str) -> usize {
        self.requests().iter().filter(|r| r["op"] == op).count()
    }

    /// The test knob: the camera's motion detector sees motion, or not.
    fn motion(&self, on: bool) {
        let r = http(self.http, "POST", &format!("/sim/motion?on={}", u8::from(on)), &[], b"").expect("/sim/motion");
        assert_eq!(r.status, 200);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    // The camera's time was asked unsigned (as ONVIF allows), then every call carried a
    // digest the simulator accepted, never the password itself.
    let reqs = sim.requests();
    let soap: Vec<&Value> = reqs.iter().filter(|r| r["service"] != "discovery").collect();
    assert_eq!((soap[0]["op"].as_str(), soap[0]["auth"].as_str()), (Some("GetSystemDateAndTime"), Some("missing")));
    assert!(soap.len() >= 6 && soap[1..].iter().all(|r| r["auth"] == "ok"), "{soap:?}");

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

#[test]
fn a_camera_whose_clock_is_two_hours_off_is_still_signed_in() {
    // The simulated camera refuses a digest whose Created is 5 minutes off its clock, as
    // real ones do; its clock is 2 h ahead, and GetSystemDateAndTime says so.
    let cam = Camera::start(&[]);
    let sim = Sim::start_with(&cam, &["--clock-offset", "7200"]);
    let nvr = start_nvr(&sim);
    let address = format!("127.0.0.1:{}", sim.http);
    let (status, v) =
        post(&nvr, "/api/onvif/probe", &json!({"address": address, "username": USER, "password": PASSWORD}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(2), "{v}");
    let ops: Vec<String> = sim.requests().iter().filter_map(|r| r["op"].as_str().map(str::to_string)).collect();
    assert_eq!(ops.first().map(String::as_str), Some("GetSystemDateAndTime"), "the time is asked first: {ops:?}");
    assert_eq!(sim.last("GetDeviceInformation")["auth"], "ok");
    let log = nvr.log();
    assert!(log.contains("the camera's clock is +7199.") || log.contains("the camera's clock is +7200."), "{log}");
}

/// The stream's ONVIF binding (with the event watcher's status).
fn onvif_of(nvr: &TempOxinvr, stream: &str) -> Value {
    nvr.json(&format!("/api/streams/{stream}/onvif"))
}

/// The events of `stream` labelled `onvif` (the camera's own motion), newest first.
fn camera_events(nvr: &TempOxinvr, stream: &str) -> Vec<Value> {
    let v = nvr.json(&format!("/api/events?stream={stream}&kind=motion&label=onvif"));
    v["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn camera_motion_events_by_pullpoint_survive_the_camera_going_away() {
    let cam = Camera::start(&[]);
    // The camera grants 6 s however long is asked: only renewals keep the subscription.
    let mut sim = Sim::start_with(&cam, &["--max-lifetime", "6"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pull_seconds = 3;
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         pbkdf2_iterations = 1000\n[onvif]\ntimeout_ms = 2000\npull_seconds = {pull_seconds}\n"
    );
    let nvr = TempOxinvr::start(dir, &config);
    let address = format!("127.0.0.1:{}", sim.http);
    assert_eq!(post(&nvr, "/api/streams", &json!({"name": "gate", "url": cam.url("h264")})).0, 201);
    let binding = json!({"address": address, "username": USER, "password": PASSWORD, "profile": "Profile_1",
                         "events": true});
    let (status, v) = put(&nvr, "/api/streams/gate/onvif", &binding);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"], true, "{v}");
    let within = Duration::from_secs(pull_seconds + 5);
    poll(within, "the camera's events subscribed", || onvif_of(&nvr, "gate")["events_status"]["state"] == "subscribed");
    let create = sim.last("CreatePullPointSubscription");
    assert_eq!(create["auth"], "ok", "the subscription carries the digest: {create}");
    assert_eq!(text_of(create["body"].as_str().expect("body"), "InitialTerminationTime").as_deref(), Some("PT60S"));
    // The "Initialized" state (no motion) opens nothing.
    poll(within, "a PullMessages long poll", || sim.count("PullMessages") >= 1);
    let pull = sim.last("PullMessages");
    let sub_url = format!("http://127.0.0.1:{}/onvif/subscription/1", sim.http);
    assert_eq!(pull["to"], sub_url.as_str(), "PullMessages goes to the subscription (WS-Addressing To)");
    // The long poll is pull_seconds, or less when the renewal (at half the 6 s) comes first.
    let timeout = text_of(pull["body"].as_str().expect("body"), "Timeout").expect("Timeout");
    assert!(["PT1S", "PT2S", "PT3S"].contains(&timeout.as_str()), "{timeout}");
    assert!(camera_events(&nvr, "gate").is_empty());

    // Motion raised in the camera: one event (two topics say it), ongoing, within the pull timeout.
    sim.motion(true);
    poll(within, "the camera's motion as an ongoing event", || {
        camera_events(&nvr, "gate").first().is_some_and(|e| e["ongoing"] == true)
    });
    let events = camera_events(&nvr, "gate");
    assert_eq!(events.len(), 1, "{events:?}");
    let id = events[0]["id"].as_i64().expect("id");
    assert_eq!(onvif_of(&nvr, "gate")["events_status"]["motion"], true);
    // Cleared: the event ends.
    sim.motion(false);
    poll(within, "the event ends when the camera's motion does", || {
        nvr.json(&format!("/api/events/{id}"))["ongoing"] == false
    });
    assert_eq!(camera_events(&nvr, "gate").len(), 1);
    // Renewed before it terminates: still the first subscription well past its 6 s.
    poll(Duration::from_secs(20), "two renewals", || sim.count("Renew") >= 2);
    std::thread::sleep(Duration::from_secs(4));
    let st = onvif_of(&nvr, "gate")["events_status"].clone();
    assert_eq!((st["state"].as_str(), st["subscriptions"].as_u64()), (Some("subscribed"), Some(1)), "{st}");
    assert!(st["renewals"].as_u64() >= Some(2), "{st}");
    assert_eq!(sim.last("Renew")["to"], sub_url.as_str());

    // The camera goes away: recording goes on, the status says why.
    let segments = |nvr: &TempOxinvr| common::mp4_files(&nvr.data_dir.join("recordings/gate")).len();
    let port = sim.http.to_string();
    sim.stop();
    poll(within, "the watcher's error", || {
        let st = &onvif_of(&nvr, "gate")["events_status"];
        st["state"] == "error" && st["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    let before = segments(&nvr);
    poll(Duration::from_secs(20), "segments recorded while the camera's events are down", || {
        segments(&nvr) >= before + 2
    });
    // Back (same address, a fresh device without our subscription): subscribed again, motion works.
    let sim = Sim::start_with(&cam, &["--http-port", &port, "--max-lifetime", "6"]);
    poll(Duration::from_secs(45), "subscribed again after the camera came back", || {
        let st = onvif_of(&nvr, "gate")["events_status"].clone();
        st["state"] == "subscribed" && st["subscriptions"].as_u64() >= Some(2)
    });
    sim.motion(true);
    poll(within, "motion after resubscribing", || camera_events(&nvr, "gate").len() == 2);

    // Events off: the watcher unsubscribes and its open event ends.
    let off = json!({"address": address, "username": USER, "profile": "Profile_1", "events": false});
    let (status, v) = put(&nvr, "/api/streams/gate/onvif", &off);
    assert_eq!(status, 200, "{v}");
    assert!(v["events_status"].is_null(), "{v}");
    poll(within, "an Unsubscribe", || sim.count("Unsubscribe") == 1);
    poll(within, "the open event ends with the watcher", || {
        camera_events(&nvr, "gate").iter().all(|e| e["ongoing"] == false)
    });
    assert!(!nvr.log().contains(PASSWORD), "the password is not logged");
}

#[test]
fn events_need_a_camera_with_an_events_service_and_a_boolean() {
    let cam = Camera::start(&[]);
    let sim = Sim::start_with(&cam, &["--no-events"]);
    let nvr = start_nvr(&sim);
    assert_eq!(post(&nvr, "/api/streams", &json!({"name": "gate", "url": cam.url("h264")})).0, 201);
    let address = format!("127.0.0.1:{}", sim.http);
    let mut body = json!({"address": address, "username": USER, "password": PASSWORD, "profile": "Profile_1",
                          "events": "yes"});
    let (status, v) = put(&nvr, "/api/streams/gate/onvif", &body);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("events")), "{v}");
    body["events"] = json!(true);
    let (status, v) = put(&nvr, "/api/streams/gate/onvif", &body);
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("no Events service")), "{v}");
    assert_eq!(nvr.get("/api/streams/gate/onvif").expect("get").status, 404, "nothing saved");
}

#[test]
fn discovery_over_real_multicast_on_loopback() {
    // The simulator joins 239.255.255.250 on lo and listens on WS-Discovery's port;
    // oxinvr sends its Probe to the group from [onvif] interface = 127.0.0.1 (the
    // kernel sends a multicast datagram from a bound address out of that address's
    // interface), and the answer comes back unicast.
    let cam = Camera::start(&[]);
    let sim = Sim::start_with(&cam, &["--multicast", "--discovery-port", "3702"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\npbkdf2_iterations = 1000\n\
                  [onvif]\ndiscovery_target = \"239.255.255.250:3702\"\ninterface = \"127.0.0.1\"\ndiscovery_ms = 1500\n";
    let nvr = TempOxinvr::start(dir, config);
    let (status, v) = post(&nvr, "/api/onvif/discover", &json!({}));
    assert_eq!(status, 200, "{v}");
    // Another simulator on this machine may answer too: ours is the one at our port.
    let ours = format!("http://127.0.0.1:{}/onvif/device_service", sim.http);
    let devices = v["devices"].as_array().expect("devices");
    let found = devices.iter().find(|d| d["address"] == ours.as_str()).unwrap_or_else(|| panic!("not found: {v}"));
    assert_eq!(found["name"], "Front Gate", "{v}");
    let probe = sim.last("Probe");
    assert!(probe["body"].as_str().is_some_and(|b| b.contains("NetworkVideoTransmitter")), "{probe}");
}
