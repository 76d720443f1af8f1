//! Webhooks through the real recorder: the release binary recording the real
//! test camera, manual events made with `POST /api/events`, and receivers
//! started here (plain HTTP servers on loopback threads) that check each
//! request as a user's receiver would: the HMAC-SHA256 signature (computed
//! here with ring, not with the recorder's code) and the timestamp.
//!
//! - `events_reach_the_receiver_signed_and_retried_until_accepted`: a
//!   receiver answers 500 twice then 200: the same delivery arrives three
//!   times with the same body, each attempt signed afresh, and once accepted
//!   never again; the end of the event follows. A hook with the wrong secret
//!   is caught by its receiver (401, not retried); a stream filter keeps other
//!   streams' events away; a hook whose secret file is missing says so; the
//!   test button's call; `GET /api/webhooks`; no secret in the API or log.
//!   Figure: median delay from `POST /api/events` answered to the receiver
//!   having the request.
//! - `a_receiver_that_never_answers_holds_nothing_up`: every attempt times
//!   out, the hook's queue stays bounded (the oldest dropped, counted), the
//!   recorder keeps recording and answering, and stops promptly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nvr::{http, poll, Oxinvr, Response, TempOxinvr};
use common::Camera;
use serde_json::{json, Value};

const SECRET: &str = "receiver-shared-secret-0123";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What a receiver does with the n-th request (0-based).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Read the request, then never answer (the socket is held 60 s).
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Got {
    delivery: String,
    body: Value,
    raw: Vec<u8>,
    /// The signature matched the receiver's secret.
    signed: bool,
    /// Its time was within 5 minutes of the receiver's clock.
    fresh: bool,
    at: Instant,
}

/// A webhook receiver on a loopback port, checking signatures with `secret`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(secret: &'static str, plan: impl Fn(usize) -> Answer + Send + 'static) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks/oxinvr", l.local_addr().expect("addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().enumerate() {
                let Ok(s) = conn else { return };
                let Some(g) = read_request(&s, secret) else { continue };
                let signed = g.signed;
                sink.lock().expect("got").push(g);
                match plan(n) {
                    // A receiver refuses what it cannot verify.
                    _ if !signed => answer(s, 401),
                    Answer::Status(code) => answer(s, code),
                    Answer::Hang => {
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(60));
                            drop(s);
                        });
                    }
                }
            }
        });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    fn of(&self, delivery: &str) -> Vec<Got> {
        self.got().into_iter().filter(|g| g.delivery == delivery).collect()
    }
}

fn answer(mut s: TcpStream, code: u16) {
    let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Reads one request and checks its signature and time as a receiver would.
fn read_request(s: &TcpStream, secret: &str) -> Option<Got> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(s);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let len: usize = header("Content-Length")?.parse().ok()?;
    let mut raw = vec![0; len];
    r.read_exact(&mut raw).ok()?;
    let sig = header("X-OxiNVR-Signature").unwrap_or_default();
    let (t, v1) = sig.split_once(',').unwrap_or_default();
    let t: i64 = t.strip_prefix("t=").and_then(|t| t.parse().ok()).unwrap_or(0);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed_text = format!("{t}.").into_bytes();
    signed_text.extend_from_slice(&raw);
    let theirs = v1.strip_prefix("v1=").and_then(unhex).unwrap_or_default();
    let signed = ring::hmac::verify(&key, &signed_text, &theirs).is_ok();
    Some(Got {
        delivery: header("X-OxiNVR-Delivery").unwrap_or_default(),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
        signed,
        fresh: (now_s() - t).abs() <= 300,
        at: Instant::now(),
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn config(camera: &str, hooks: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\nsegment_seconds = 4\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n\
         [[streams]]\nname = \"front\"\nurl = \"{camera}\"\n{hooks}"
    )
}

fn call(nvr: &Oxinvr, method: &str, path: &str, body: &str) -> Response {
    nvr.request(method, path, &[("Content-Type", "application/json")], body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn new_event(nvr: &Oxinvr, body: &str) -> i64 {
    let r = call(nvr, "POST", "/api/events", body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().expect("id")
}

fn hook(nvr: &Oxinvr, name: &str) -> Value {
    let v = nvr.json("/api/webhooks");
    v["webhooks"].as_array().and_then(|a| a.iter().find(|h| h["name"] == name)).cloned().expect(name)
}

/// An API key of a new viewer.
fn viewer_key(nvr: &Oxinvr) -> String {
    let body = json!({ "username": "watcher", "password": "watcher-password", "role": "viewer" }).to_string();
    assert_eq!(call(nvr, "POST", "/api/users", &body).status, 201);
    let login = json!({ "username": "watcher", "password": "watcher-password" }).to_string();
    let r = http(nvr.port, "POST", "/api/auth/login", &[("Content-Type", "application/json")], login.as_bytes())
        .expect("login");
    let cookie = r.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("cookie").to_string();
    let csrf = r.json()["csrf"].as_str().expect("csrf").to_string();
    let headers = [("Content-Type", "application/json"), ("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let r = http(nvr.port, "POST", "/api/keys", &headers, br#"{"name":"t"}"#).expect("key");
    r.json()["key"].as_str().expect("key").to_string()
}

#[test]
fn events_reach_the_receiver_signed_and_retried_until_accepted() {
    let cam = Camera::start(&[]);
    let good = Receiver::start(SECRET, |n| Answer::Status(if n < 2 { 500 } else { 200 }));
    let strict = Receiver::start(SECRET, |_| Answer::Status(200));
    let other = Receiver::start(SECRET, |_| Answer::Status(200));
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = format!(
        "[[webhooks]]\nname = \"ha\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nstreams = [\"front\"]\n\
         [[webhooks]]\nname = \"wrong\"\nurl = \"{}\"\nsecret = \"not-the-receivers-secret\"\n\
         [[webhooks]]\nname = \"back-only\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nstreams = [\"back\"]\n\
         [[webhooks]]\nname = \"lost\"\nurl = \"{}\"\nsecret_file = \"/nonexistent/webhook.secret\"\n",
        good.url, strict.url, other.url, other.url
    );
    let nvr = TempOxinvr::start(dir, &config(&cam.url("h264"), &hooks));

    // A manual event: its start is refused twice, then accepted once.
    let id = new_event(&nvr, r#"{"stream":"front","label":"doorbell"}"#);
    let began = format!("{id}-began");
    poll(Duration::from_secs(20), "the third attempt", || good.of(&began).len() >= 3);
    let tries = good.of(&began);
    assert!(tries.iter().all(|g| g.signed && g.fresh), "every attempt signed and fresh: {tries:?}");
    assert!(tries.windows(2).all(|w| w[0].raw == w[1].raw), "the same body each time");
    let body = &tries[0].body;
    assert_eq!((body["type"].as_str(), body["event"]["id"].as_i64()), (Some("event.began"), Some(id)), "{body}");
    assert_eq!((body["event"]["label"].as_str(), body["event"]["ongoing"].as_bool()), (Some("doorbell"), Some(true)));
    let r = call(&nvr, "POST", &format!("/api/events/{id}/end"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let ended = format!("{id}-ended");
    poll(Duration::from_secs(10), "the end", || !good.of(&ended).is_empty());
    assert_eq!(good.of(&ended)[0].body["event"]["ongoing"], false);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((good.of(&began).len(), good.of(&ended).len()), (3, 1), "accepted means delivered once");

    // The receiver of the hook with the wrong secret tells it apart, and refuses it.
    poll(Duration::from_secs(10), "the wrong secret refused", || hook(&nvr, "wrong")["failed"].as_u64() >= Some(1));
    let wrong = strict.got();
    assert!(!wrong.is_empty() && wrong.iter().all(|g| !g.signed), "{wrong:?}");
    let w = hook(&nvr, "wrong");
    assert_eq!((w["last"]["status"].as_u64(), w["last"]["attempts"].as_u64()), (Some(401), Some(1)), "{w}");

    // Delay from the API's answer to the receiver having it (now answering 200).
    let mut delays = Vec::new();
    for _ in 0..11 {
        let posted = Instant::now();
        let id = new_event(&nvr, r#"{"stream":"front","duration_s":1}"#);
        poll(Duration::from_secs(10), "delivered", || !good.of(&format!("{id}-ended")).is_empty());
        delays.push(good.of(&format!("{id}-began"))[0].at.saturating_duration_since(posted));
    }
    delays.sort();
    eprintln!("figure: event to receiver, median {:?} (min {:?}, max {:?})", delays[5], delays[0], delays[10]);

    let ha = hook(&nvr, "ha");
    assert_eq!((ha["delivered"].as_u64(), ha["failed"].as_u64(), ha["dropped"].as_u64()), (Some(24), Some(0), Some(0)));
    assert_eq!(
        (ha["last"]["ok"].as_bool(), ha["state"].as_str(), ha["queued"].as_u64()),
        (Some(true), Some("idle"), Some(0))
    );
    assert_eq!(ha["recent"].as_array().map(Vec::len), Some(5), "{ha}");
    assert!(other.got().is_empty(), "back-only sends no event of front");
    let lost = hook(&nvr, "lost");
    assert_eq!(lost["state"], "failed");
    assert!(lost["error"].as_str().is_some_and(|e| e.contains("webhooks[3].secret_file")), "{lost}");

    // The test button: operator and up; a failed or unknown hook says why.
    let r = call(&nvr, "POST", "/api/webhooks/ha/test", "");
    assert_eq!(r.status, 202, "{}", r.text());
    let delivery = r.json()["delivery"].as_str().expect("delivery").to_string();
    poll(Duration::from_secs(10), "the test event", || !good.of(&delivery).is_empty());
    let test = &good.of(&delivery)[0];
    assert!(test.signed && test.body["type"] == "event.test" && test.body["event"]["stream"] == "front", "{test:?}");
    let r = call(&nvr, "POST", "/api/webhooks/lost/test", "");
    assert!(r.status == 409 && r.json()["error"].as_str().is_some_and(|e| e.contains("secret_file")), "{}", r.text());
    assert_eq!(call(&nvr, "POST", "/api/webhooks/nope/test", "").status, 404);
    assert_eq!(call(&nvr, "POST", "/api/webhooks/ha/test", r#"{"x":1}"#).status, 400);
    let viewer = format!("Bearer {}", viewer_key(&nvr));
    let r = http(nvr.port, "GET", "/api/webhooks", &[("Authorization", viewer.as_str())], b"").expect("viewer");
    assert_eq!(r.status, 403, "{}", r.text());

    // Secrets are never shown.
    let api =
        format!("{}{}", nvr.get("/api/webhooks").expect("hooks").text(), nvr.get("/api/settings").expect("s").text());
    assert!(!api.contains(SECRET) && !api.contains("not-the-receivers-secret"), "{api}");
    assert!(api.contains("\"secret\":\"***\""), "settings mask the secret");
    assert!(!nvr.log().contains(SECRET), "the log");
}

#[test]
fn a_receiver_that_never_answers_holds_nothing_up() {
    let cam = Camera::start(&[]);
    let silent = Receiver::start(SECRET, |_| Answer::Hang);
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = format!(
        "[[webhooks]]\nname = \"silent\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_seconds = 1\n",
        silent.url
    );
    let nvr = TempOxinvr::start(dir, &config(&cam.url("h264"), &hooks));
    let frames = || nvr.json("/api/streams/front")["status"]["frames"].as_u64().unwrap_or(0);
    poll(Duration::from_secs(20), "recording", || frames() > 0);
    let f0 = frames();

    // 80 events, 160 notices: far more than the hook's queue holds.
    for _ in 0..80 {
        new_event(&nvr, r#"{"stream":"front","duration_s":2}"#);
    }
    poll(Duration::from_secs(20), "a retry after a timeout", || silent.got().len() >= 3);
    let h = hook(&nvr, "silent");
    let queued = h["queued"].as_u64().expect("queued");
    assert!(queued <= 66, "bounded: the hub's 64, one in hand, a test: {h}");
    assert_eq!(h["dropped"].as_u64(), Some(160 - 64 - 1), "the oldest dropped and counted: {h}");
    assert!(h["last"]["error"].as_str().is_some_and(|e| e.contains("timed out: no answer within 1s")), "{h}");
    assert_eq!((h["delivered"].as_u64(), h["state"].as_str()), (Some(0), Some("retrying")), "{h}");
    let got = silent.got();
    assert!(got.iter().all(|g| g.delivery == got[0].delivery && g.signed), "one delivery retried: {got:?}");
    assert_eq!(got[0].body["type"], "event.began");

    // Recording and the API carry on; the recorder stops promptly (TempOxinvr's drop: SIGTERM, 15 s).
    let f1 = frames();
    poll(Duration::from_secs(10), "frames keep coming", || frames() > f1 + 10);
    assert!(f1 > f0);
    assert_eq!(nvr.get("/api/events?limit=1").expect("events").status, 200);
    let heap = &nvr.json("/api/system")["memory"]["heap_by_subsystem"];
    eprintln!("figure: heap with a full webhook queue: webhooks {} B, http {} B", heap["webhooks"], heap["http"]);
}
