//! The HTTP API's error paths against the real binary: `oxinvr run` with a
//! temporary data dir, no camera configured, and the tests' own HTTP/1.1
//! client in tests/common (one request per connection).
//!
//! The binary is `$OXINVR_BIN` if set, else the one cargo built.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::time::{Duration, Instant};

use common::nvr::{send_raw, Oxinvr, Response, TempOxinvr};
use serde_json::{json, Value};

const MAX_BODY: usize = 2048;

/// A running `oxinvr run` in its own temporary directory.
struct Nvr(TempOxinvr);

impl Nvr {
    fn start() -> Nvr {
        let dir = tempfile::tempdir().expect("tempdir");
        let rings = dir.path().join("rings");
        std::fs::create_dir_all(&rings).expect("ring dir");
        let config = format!(
            "[storage]\ndata_dir = \"{{DATA}}\"\nring_dir = {:?}\n\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\nthreads = 2\nmax_body_bytes = {MAX_BODY}\n",
            rings.display().to_string(),
        );
        Nvr(TempOxinvr::start(dir, &config))
    }

    fn req(&self, method: &str, path: &str, body: &[u8]) -> Response {
        self.request(method, path, &[], body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    fn raw(&self, bytes: &[u8]) -> Response {
        send_raw(self.port, bytes).unwrap_or_else(|e| panic!("raw request: {e}\n{}", self.log()))
    }
}

impl Deref for Nvr {
    type Target = Oxinvr;
    fn deref(&self) -> &Oxinvr {
        &self.0
    }
}

/// The `error` message of a JSON error answer.
fn json_error(r: &Response) -> String {
    let v = r.json();
    v["error"].as_str().unwrap_or_else(|| panic!("no \"error\" in {v}")).to_string()
}

fn assert_error(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(r.header("Content-Type").is_some_and(|v| v.contains("application/json")), "{:?}", r.headers);
    let e = json_error(r);
    assert!(e.contains(needle), "error {e:?} should mention {needle:?}");
}

#[test]
fn health_and_system_answer() {
    let nvr = Nvr::start();
    let h = nvr.req("GET", "/api/health", b"").json();
    assert_eq!(h["ok"], Value::Bool(true));
    assert_eq!(h["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    let s = nvr.req("GET", "/api/system", b"");
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert!(s["memory"]["process"]["rss"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["memory"]["heap_by_subsystem"]["http"].is_i64(), "{s}");
    assert!(s["disk"]["total_bytes"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(s["disk"]["recordings_bytes"].as_u64(), Some(0), "{s}");
    let l = nvr.req("GET", "/api/streams", b"").json();
    assert_eq!(l["streams"], Value::Array(vec![]));
    let r = nvr.req("GET", "/api/recordings", b"").json();
    assert_eq!(r["recordings"], Value::Array(vec![]), "{r}");
}

/// The system page's memory by subsystem: after a few hundred requests (each on
/// its own connection, read by tiny_http's threads, answered by the workers) no
/// subsystem shows a negative heap, and the HTTP one holds what it uses.
#[test]
fn heap_by_subsystem_stays_true_under_traffic() {
    let nvr = Nvr::start();
    for i in 0..300 {
        let path = ["/api/openapi.json", "/api/streams", "/", "/api/nope"][i % 4];
        nvr.req("GET", path, b"");
    }
    let s = nvr.req("GET", "/api/system", b"").json();
    let heap = s["memory"]["heap_by_subsystem"].as_object().cloned().unwrap_or_default();
    assert_eq!(heap.len(), 9, "other, ingest, storage, http, mqtt, detect, webhooks, onvif, replicate: {s}");
    for (name, bytes) in &heap {
        assert!(bytes.as_i64().is_some_and(|b| b >= 0), "{name}: {bytes} bytes in {s}");
    }
    assert!(heap["http"].as_i64().unwrap_or(0) > 0, "{s}");
}

#[test]
fn unknown_routes_methods_and_streams() {
    let nvr = Nvr::start();
    assert_error(&nvr.req("GET", "/api/nope", b""), 404, "/api/nope");
    assert_error(&nvr.req("GET", "/no-such-file.js", b""), 404, "no-such-file");
    let r = nvr.req("DELETE", "/api/health", b"");
    assert_error(&r, 405, "DELETE");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert_error(&nvr.req("PATCH", "/api/streams/x", b""), 405, "PATCH");
    assert_error(&nvr.req("GET", "/api/streams/nope", b""), 404, "nope");
    assert_error(&nvr.req("PUT", "/api/streams/nope", b"{}"), 404, "nope");
    assert_error(&nvr.req("DELETE", "/api/streams/nope", b""), 404, "nope");
    assert_error(&nvr.req("GET", "/api/recordings?stream=nope", b""), 404, "nope");
    assert_error(&nvr.req("GET", "/api/playback/nope.m3u8", b""), 404, "nope");
    assert_error(&nvr.req("GET", "/api/export.mp4?stream=nope", b""), 404, "nope");
    assert_error(&nvr.req("GET", "/api/recordings/123/file", b""), 404, "123");
    // No [[webhooks]] here: an empty list, and a test names the hook it did not find.
    assert_eq!(nvr.req("GET", "/api/webhooks", b"").json(), json!({"webhooks": []}));
    assert_error(&nvr.req("POST", "/api/webhooks/nope/test", b""), 404, "nope");
    assert_error(&nvr.req("POST", "/api/webhooks/nope/test", br#"{"colour":1}"#), 400, "colour");
    assert_error(&nvr.req("POST", "/api/webhooks/nope/test", b"[]"), 400, "object");
    assert_error(&nvr.req("GET", "/api/webhooks?x=1", b""), 400, "x");
    let r = nvr.req("GET", "/api/webhooks/nope/test", b"");
    assert_error(&r, 405, "GET");
    assert_eq!(r.header("Allow"), Some("POST"));
}

#[test]
fn bad_parameters_are_named() {
    let nvr = Nvr::start();
    assert_error(&nvr.req("GET", "/api/recordings?start=yesterday", b""), 400, "start");
    assert_error(&nvr.req("GET", "/api/recordings?end=2026-13-45T00:00:00Z", b""), 400, "end");
    assert_error(&nvr.req("GET", "/api/recordings?start=2000&end=1000", b""), 400, "end");
    assert_error(&nvr.req("GET", "/api/recordings?strat=1", b""), 400, "strat");
    assert_error(&nvr.req("GET", "/api/export.mp4", b""), 400, "stream");
    assert_error(&nvr.req("GET", "/api/recordings/abc/file", b""), 400, "abc");
    assert_error(&nvr.req("DELETE", "/api/streams/x?purge=maybe", b""), 400, "purge");
    let onvif = br#"{"address": "127.0.0.1:9", "profile": "p", "events": "yes"}"#;
    assert_error(&nvr.req("PUT", "/api/streams/x/onvif", onvif), 400, "events");
    assert_error(&nvr.req("POST", "/api/events", br#"{"stream": "x", "kind": "objects"}"#), 400, "kind");
    // Span checks of export need an existing stream.
    let body = br#"{"name":"spans","url":"rtsp://127.0.0.1:9/x","enabled":false}"#;
    assert_eq!(nvr.req("POST", "/api/streams", body).status, 201);
    assert_error(&nvr.req("GET", "/api/export.mp4?stream=spans&start=5000&end=5000", b""), 400, "end");
    assert_error(&nvr.req("GET", "/api/export.mp4?stream=spans&start=0&end=90000000", b""), 400, "24 h");
    assert_error(&nvr.req("GET", "/api/playback/spans.m3u8?start=x", b""), 400, "start");
    assert_error(&nvr.req("GET", "/api/export.mp4?stream=spans&start=0&end=1000", b""), 404, "nothing recorded");
    assert_error(&nvr.req("GET", "/api/playback/spans.m3u8?start=0&end=1000", b""), 404, "nothing recorded");
}

#[test]
fn bad_bodies_are_refused() {
    let nvr = Nvr::start();
    assert_error(&nvr.req("POST", "/api/streams", br#"{"name": "a","#), 400, "JSON");
    assert_error(&nvr.req("POST", "/api/streams", b"[]"), 400, "object");
    assert_error(&nvr.req("POST", "/api/streams", b""), 400, "empty");
    assert_error(&nvr.req("POST", "/api/streams", br#"{"url":"rtsp://h/x"}"#), 400, "name");
    assert_error(&nvr.req("POST", "/api/streams", br#"{"name":"../etc","url":"rtsp://h/x"}"#), 400, "name");
    assert_error(&nvr.req("POST", "/api/streams", br#"{"name":"a b","url":"rtsp://h/x"}"#), 400, "name");
    assert_error(&nvr.req("POST", "/api/streams", br#"{"name":"a","url":"http://h/x"}"#), 400, "url");
    assert_error(&nvr.req("POST", "/api/streams", br#"{"name":"a","url":"rtsp://h/x","colour":1}"#), 400, "colour");
    let sub = br#"{"name":"a","url":"rtsp://h/x","sub_url":"http://h/sub"}"#;
    assert_error(&nvr.req("POST", "/api/streams", sub), 400, "sub_url");
    let snap = br#"{"name":"a","url":"rtsp://h/x","snapshot_url":"https://h/snap.jpg"}"#;
    assert_error(&nvr.req("POST", "/api/streams", snap), 400, "snapshot_url");
    assert_error(
        &nvr.req("POST", "/api/streams", br#"{"name":"a","url":"rtsp://h/x","priority":"hi"}"#),
        400,
        "priority",
    );
    // Declared too large: refused without reading it.
    let big = vec![b'x'; MAX_BODY + 1];
    assert_error(&nvr.req("POST", "/api/streams", &big), 413, "max_body_bytes");
    // Chunked, too large once read.
    let (k, v) = nvr.auth_header();
    let mut raw = format!(
        "POST /api/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{k}: {v}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        raw.extend_from_slice(format!("{:x}\r\n", MAX_BODY).as_bytes());
        raw.extend(std::iter::repeat_n(b' ', MAX_BODY));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_error(&nvr.raw(&raw), 413, "max_body_bytes");
    // Nothing was created by any of this.
    assert_eq!(nvr.req("GET", "/api/streams", b"").json()["streams"], Value::Array(vec![]));
}

/// Reads what arrives within `wait` (the answer may never end).
fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let _ = s.set_read_timeout(Some(wait));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn huge_declared_bodies_do_not_hurt_the_server() {
    let nvr = Nvr::start();
    for (method, declared) in
        [("POST /api/streams", "100000000000000"), ("GET /api/health", "50000000"), ("PUT /api/streams/x", "5000")]
    {
        let mut s = TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
        let head = format!("{method} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\nabc");
        s.write_all(head.as_bytes()).expect("write");
        let got = read_for(&mut s, Duration::from_secs(2));
        assert!(got.starts_with("HTTP/1.1 413 "), "{method} with {declared}: {got:?}");
        assert!(got.contains("max_body_bytes"), "{got:?}");
        drop(s);
        assert_eq!(nvr.req("GET", "/api/health", b"").status, 200, "after {method} with {declared}:\n{}", nvr.log());
    }
}

#[test]
fn traversal_attempts_never_serve_files() {
    let nvr = Nvr::start();
    for path in [
        "/api/recordings/..%2F..%2Fetc%2Fpasswd/file",
        "/api/recordings/../../etc/passwd",
        "/api/recordings/%2e%2e/file",
        "/api/recordings/1%2F..%2F..%2Fetc%2Fpasswd/file",
        "/api/playback/..%2F..%2Fetc%2Fpasswd.m3u8",
        "/api/streams/..%2F..%2Fetc%2Fpasswd",
        "/api/export.mp4?stream=..%2F..%2Fetc%2Fpasswd",
        "/../../etc/passwd",
    ] {
        let r = nvr.req("GET", path, b"");
        assert!(r.status == 400 || r.status == 404, "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("root:"), "{path} served a file");
        let _ = json_error(&r);
    }
}

#[test]
fn stream_lifecycle() {
    let nvr = Nvr::start();
    let body = br#"{"name":"cam1","url":"rtsp://user:secret@127.0.0.1:9/x","retention_days":3}"#;
    let r = nvr.req("POST", "/api/streams", body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("secret"), "password shown: {}", r.text());
    let v = r.json();
    assert_eq!(v["url"].as_str(), Some("rtsp://user:***@127.0.0.1:9/x"));
    assert_eq!(v["source"].as_str(), Some("api"));
    assert_eq!(v["retention_days"].as_u64(), Some(3));
    assert_error(&nvr.req("POST", "/api/streams", body), 409, "cam1");

    // The camera never answers: the status says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let r = nvr.req("GET", "/api/streams/cam1", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let st = v["status"].clone();
        if st["last_error"].is_string() || st["state"] == "backoff" {
            break v;
        }
        assert!(Instant::now() < deadline, "no error or backoff after 20 s: {v}\n{}", nvr.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status["ring"]["capacity"].as_u64().unwrap_or(0) > 0, "{status}");
    assert_eq!(status["storage"]["segments"].as_u64(), Some(0), "{status}");
    let list = nvr.req("GET", "/api/streams", b"").json();
    assert_eq!(list["streams"][0]["name"].as_str(), Some("cam1"), "{list}");
    assert!(!list.to_string().contains("secret"));

    // A rename is refused (not silently ignored); a partial update with the
    // masked URL sent back keeps the stored one.
    let body = br#"{"name":"other","enabled":false,"url":"rtsp://user:***@127.0.0.1:9/x"}"#;
    assert_error(&nvr.req("PUT", "/api/streams/cam1", body), 400, "cannot be renamed");
    let r = nvr.req(
        "PUT",
        "/api/streams/cam1",
        br#"{"name":"cam1","enabled":false,"url":"rtsp://user:***@127.0.0.1:9/x"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"].as_str(), Some("cam1"));
    assert_eq!(v["enabled"], Value::Bool(false));
    assert_eq!(v["retention_days"].as_u64(), Some(3));
    assert_error(&nvr.req("PUT", "/api/streams/cam1", br#"{"retention_days":0}"#), 400, "retention_days");
    assert_error(&nvr.req("PUT", "/api/streams/cam1", br#"{"url":"ftp://x/"}"#), 400, "url");
    let db = oxinvr::index::db::Db::open(&nvr.data_dir.join("oxinvr.db")).expect("db");
    let row = db.stream_by_name("cam1").expect("query").expect("row");
    assert_eq!(row.spec.url, "rtsp://user:secret@127.0.0.1:9/x");
    assert!(!row.spec.enabled);

    let r = nvr.req("DELETE", "/api/streams/cam1", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"].as_str(), Some("cam1"));
    assert_error(&nvr.req("GET", "/api/streams/cam1", b""), 404, "cam1");
    assert_error(&nvr.req("DELETE", "/api/streams/cam1", b""), 404, "cam1");
    assert_eq!(nvr.req("GET", "/api/streams", b"").json()["streams"], Value::Array(vec![]));
}

#[test]
fn head_requests_have_no_body() {
    let nvr = Nvr::start();
    let r = nvr.req("HEAD", "/api/health", b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

/// What tests/api_fuzz.rs (Schemathesis against openapi.json) found, one
/// request each: answers that disagreed with the document.
#[test]
fn what_the_api_fuzzer_found_stays_fixed() {
    let nvr = Nvr::start();
    let json = [("Content-Type", "application/json")];
    let req = |m: &str, p: &str, body: &str| {
        nvr.request(m, p, &json, body.as_bytes()).unwrap_or_else(|e| panic!("{m} {p}: {e}"))
    };
    let user = r#"{"username":"bob","password":"bob-password","role":"viewer"}"#;
    assert_eq!(req("POST", "/api/users", user).status, 201);
    // A JSON array is not an object, though serde would read the fields from it.
    assert_error(&req("PUT", "/api/users/bob", "[null, null]"), 400, "JSON object");
    assert_error(&req("POST", "/api/users", r#"["eve","eve-password","admin"]"#), 400, "JSON object");
    assert_eq!(req("GET", "/api/users/eve", "").status, 404, "no user made from an array");
    // 256 characters are allowed even when they take more bytes.
    let long = "é".repeat(256);
    let body = format!(r#"{{"username":"carol","password":"{long}","role":"viewer"}}"#);
    assert_eq!(req("POST", "/api/users", &body).status, 201, "256 two-byte characters");
    let body = format!(r#"{{"username":"dave","password":"{long}é","role":"viewer"}}"#);
    assert_error(&req("POST", "/api/users", &body), 400, "257 characters");
    // Integers written with a zero fraction are integers (JSON Schema's reading).
    let body = r#"{"name":"f1","url":"rtsp://127.0.0.1:9/x","enabled":false,"priority":3.0,"max_storage_mb":256.0}"#;
    let r = req("POST", "/api/streams", body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!((r.json()["priority"].as_i64(), r.json()["max_storage_mb"].as_i64()), (Some(3), Some(256)));
    assert_error(&req("PUT", "/api/streams/f1", r#"{"priority":2.5}"#), 400, "priority");
    assert_error(&req("POST", "/api/probe", r#"{"url":"rtsp://127.0.0.1:9/x","timeout_ms":100.5}"#), 400, "timeout_ms");
    // A PUT may repeat the stream's name but not change it.
    assert_eq!(req("PUT", "/api/streams/f1", r#"{"name":"f1","priority":1}"#).status, 200);
    assert_error(&req("PUT", "/api/streams/f1", r#"{"name":"","priority":1}"#), 400, "field name");
    assert_error(&req("PUT", "/api/streams/f1", r#"{"name":"f2"}"#), 400, "cannot be renamed");
    // Camera URLs have the shape the document's pattern states.
    for (url, why) in [
        ("/api/recordings/7/file", "rtsp://"),
        ("rtsp://h:70000/x", "port"),
        ("rtsp://h:0554/x", "port"),
        ("rtsp://h/a b", "printable ASCII"),
        ("rtsp://u:p#w@h/x", "port"),
        ("rtsp://h_ö/x", "host"),
    ] {
        let body = json!({ "url": url }).to_string();
        assert_error(&req("PUT", "/api/streams/f1", &body), 400, why);
    }
    assert_eq!(req("PUT", "/api/streams/f1", r#"{"url":"rtsp://u:p%23w@h.lan:8554/a?b=1"}"#).status, 200);
    assert_error(&req("POST", "/api/probe", r#"{"url":" rtsp://127.0.0.1:9/x"}"#), 400, "url");
    // Upper bounds of the stream settings.
    assert_error(&req("PUT", "/api/streams/f1", r#"{"retention_days":36501}"#), 400, "retention_days");
    assert_error(&req("PUT", "/api/streams/f1", r#"{"max_storage_mb":1000000001}"#), 400, "max_storage_mb");
}

/// `PUT /api/streams/{name}/detection`: the page's toggle. Mistakes are named;
/// a stream without detection is a 409; the state shows in `detection.enabled`.
#[test]
fn detection_switch_names_its_mistakes_and_shows_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Cameras that never answer: detection threads start anyway (they wait on the ring).
    let config = "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\nthreads = 2\n\n\
                  [[streams]]\nname = \"watched\"\nurl = \"rtsp://127.0.0.1:9/x\"\ndetect = [\"motion\"]\n\n\
                  [[streams]]\nname = \"plain\"\nurl = \"rtsp://127.0.0.1:9/y\"\n";
    let nvr = Nvr(TempOxinvr::start(dir, config));
    let path = "/api/streams/watched/detection";
    let enabled = || nvr.req("GET", "/api/streams/watched", b"").json()["detection"]["enabled"].clone();
    assert_eq!(enabled(), json!(true), "on until switched off");
    assert_error(&nvr.req("PUT", "/api/streams/nope/detection", br#"{"enabled":false}"#), 404, "nope");
    assert_error(&nvr.req("PUT", "/api/streams/plain/detection", br#"{"enabled":false}"#), 409, "runs no detection");
    assert_error(&nvr.req("PUT", path, b""), 400, "empty");
    assert_error(&nvr.req("PUT", path, b"[]"), 400, "object");
    assert_error(&nvr.req("PUT", path, b"{}"), 400, "enabled");
    assert_error(&nvr.req("PUT", path, br#"{"enabled":"no"}"#), 400, "true or false");
    assert_error(&nvr.req("PUT", path, br#"{"enabled":false,"motion":1}"#), 400, "motion");
    assert_error(&nvr.req("PUT", &format!("{path}?x=1"), br#"{"enabled":false}"#), 400, "x");
    let r = nvr.req("GET", path, b"");
    assert_error(&r, 405, "GET");
    assert_eq!(r.header("Allow"), Some("PUT"));
    assert_eq!(enabled(), json!(true), "no mistake switched it");

    let r = nvr.req("PUT", path, br#"{"enabled":false}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["enabled"].clone(), r.json()["detectors"].clone()), (json!(false), json!(["motion"])));
    assert_eq!(enabled(), json!(false));
    let list = nvr.req("GET", "/api/streams", b"").json();
    let plain = list["streams"].as_array().and_then(|l| l.iter().find(|s| s["name"] == "plain")).cloned();
    // Its thread is paused (detect = []): no detectors, and the problem says so.
    let plain = plain.map(|s| s["detection"].clone()).unwrap_or_default();
    assert_eq!(plain["detectors"], json!([]), "{list}");
    assert!(plain["problem"].as_str().is_some_and(|p| p.contains("off")), "{list}");
    assert_eq!(nvr.req("PUT", path, br#"{"enabled":true}"#).json()["enabled"], json!(true));
    assert_eq!(enabled(), json!(true));
    assert!(nvr.log().contains("stream watched: detection switched off"), "{}", nvr.log());
}
