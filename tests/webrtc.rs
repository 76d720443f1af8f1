//! WebRTC live view through go2rtc: OxiNVR relays the SDP offer after its own
//! authentication. go2rtc itself cannot run here (no binary is reachable from
//! this machine), so a small stand-in that speaks the two calls of go2rtc's
//! HTTP API we use (`PUT /api/streams?name=&src=`, `POST /api/webrtc?src=`)
//! plays its part; everything on OxiNVR's side is the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::nvr::{http, Oxinvr};

/// The stand-in go2rtc: answers PUT /api/streams with 200 and POST /api/webrtc
/// with a JSON SDP answer; records the request lines and bodies it got.
struct FakeGo2rtc {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeGo2rtc {
    fn start() -> FakeGo2rtc {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                log.lock().expect("log").push((line.trim().to_string(), body));
                let answer = if line.starts_with("POST /api/webrtc?src=cam ") {
                    r#"{"type":"answer","sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=go2rtc\r\n"}"#
                } else {
                    ""
                };
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        FakeGo2rtc { port, seen }
    }
}

const OFFER: &[u8] = br#"{"type":"offer","sdp":"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"}"#;

#[test]
fn offers_are_relayed_to_go2rtc_only_after_authentication() {
    let go2rtc = FakeGo2rtc::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n\
         go2rtc_api = \"http://127.0.0.1:{}\"\n\n[[streams]]\nname = \"cam\"\nurl = \"rtsp://u:pw@127.0.0.1:9/x\"\n\n\
         [[streams]]\nname = \"off\"\nurl = \"rtsp://127.0.0.1:9/y\"\nenabled = false\n",
        go2rtc.port
    );
    let nvr = Oxinvr::start(dir.path(), &config);
    let json = [("Content-Type", "application/json")];

    // The page learns that WebRTC is available.
    assert_eq!(nvr.json("/api/auth/status")["webrtc"], serde_json::Value::Bool(true));
    // Without a credential nothing reaches go2rtc.
    let r = http(nvr.port, "POST", "/api/streams/cam/webrtc", &json, OFFER).expect("post");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(go2rtc.seen.lock().expect("seen").is_empty(), "go2rtc was asked before authentication");

    let r = nvr.request("POST", "/api/streams/cam/webrtc", &json, OFFER).expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["type"], "answer");
    assert!(answer["sdp"].as_str().is_some_and(|s| s.starts_with("v=0") && s.contains("go2rtc")), "{answer}");
    let seen = go2rtc.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].0.starts_with("PUT /api/streams?name=cam&src=rtsp%3A%2F%2Fu%3Apw%40127.0.0.1%3A9%2Fx "),
        "{seen:?}"
    );
    assert!(seen[1].0.starts_with("POST /api/webrtc?src=cam "), "{seen:?}");
    assert!(
        seen[1].1.contains("\"type\":\"offer\"") && seen[1].1.contains("o=- 2 2"),
        "the offer is relayed: {seen:?}"
    );

    // Unknown and disabled streams are not asked for; malformed offers are refused.
    let r = nvr.request("POST", "/api/streams/off/webrtc", &json, OFFER).expect("post");
    assert_eq!(r.status, 409, "{}", r.text());
    let r = nvr.request("POST", "/api/streams/nope/webrtc", &json, OFFER).expect("post");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = nvr.request("POST", "/api/streams/cam/webrtc", &json, br#"{"type":"answer","sdp":"x"}"#).expect("post");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(go2rtc.seen.lock().expect("seen").len(), 2, "nothing more reached go2rtc");
}

#[test]
fn without_go2rtc_the_page_is_told_to_use_the_websocket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(dir.path(), "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n");
    assert_eq!(nvr.json("/api/auth/status")["webrtc"], serde_json::Value::Bool(false));
    let r =
        nvr.request("POST", "/api/streams/cam/webrtc", &[("Content-Type", "application/json")], OFFER).expect("post");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("go2rtc_api"), "{}", r.text());
}

#[test]
fn go2rtc_must_be_on_loopback() {
    for bad in ["http://192.0.2.1:1984", "https://127.0.0.1:1984", "http://127.0.0.1:1984/x", "1984"] {
        let text = format!("[web]\ngo2rtc_api = \"{bad}\"\n");
        let e = oxinvr::config::Config::parse(&text, "t.toml").expect_err(bad);
        assert_eq!(e.key.as_deref(), Some("web.go2rtc_api"), "{bad}: {e}");
    }
    assert!(oxinvr::config::Config::parse("[web]\ngo2rtc_api = \"http://localhost:1984\"\n", "t").is_ok());
}
