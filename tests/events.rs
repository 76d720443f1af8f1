//! Events through the real recorder: the release binary recording the real
//! test camera into real SQLite, driven over HTTP with real users' API keys.
//!
//! - `manual_events_through_the_api`: roles (a viewer cannot create, an
//!   operator cannot delete), bad input named by field, filters and paging,
//!   ending an event, the clip (an export checked with ffprobe: it covers the
//!   event's span plus pre/post and decodes), the snapshot served and deleted
//!   with its event, the live push (server-sent events) seeing it all, and
//!   events outliving their stream's recordings.
//! - `a_schema_7_database_upgrades_and_keeps_its_data`: a database at main's
//!   schema before events (the migrations up to 7, as that binary wrote
//!   them) is opened by the recorder, keeps its stream and gets events.
//! - `old_events_go_with_their_files`: `[events] retention_days` in the
//!   storage thread's retention pass.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nvr::{http, poll, Oxinvr, Response};
use common::Camera;
use oxinvr::index::db::Db;
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn config(stream_url: &str, extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\nsegment_seconds = 4\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n{extra}\n\
         [[streams]]\nname = \"front\"\nurl = \"{stream_url}\"\n"
    )
}

/// An API key of a new user with `role`.
fn key_of(nvr: &Oxinvr, role: &str) -> String {
    nvr.api_key("ev", role)
}

fn call(nvr: &Oxinvr, key: &str, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {key}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    http(nvr.port, method, path, &headers, body.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn ids(v: &Value) -> Vec<i64> {
    v["events"].as_array().map(|a| a.iter().filter_map(|e| e["id"].as_i64()).collect()).unwrap_or_default()
}

/// A raw `GET /api/events/stream` whose text is read by a thread into a shared buffer.
struct Push {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Push {
    fn open(port: u16, key: &str) -> Push {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let req = format!("GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n");
        s.write_all(req.as_bytes()).expect("request");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Push { text }
    }

    fn text(&self) -> String {
        self.text.lock().expect("lock").clone()
    }

    /// Waits until the stream has said `what`.
    fn wait_for(&self, what: &str) {
        poll(Duration::from_secs(10), &format!("{what:?} on the event stream"), || self.text().contains(what));
    }
}

#[test]
fn manual_events_through_the_api() {
    let began = Instant::now();
    let cam = Camera::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), ""));
    let (viewer, operator, admin) = (key_of(&nvr, "viewer"), key_of(&nvr, "operator"), key_of(&nvr, "admin"));
    let push = Push::open(nvr.port, &viewer);
    push.wait_for("text/event-stream");

    // Roles and field-naming validation.
    let r = call(&nvr, &viewer, "POST", "/api/events", r#"{"stream":"front"}"#);
    assert_eq!(r.status, 403, "a viewer cannot create events: {}", r.text());
    for (body, field) in [
        (r#"{"label":"x"}"#, "field stream"),
        (r#"{"stream":"front","score":2}"#, "field score"),
        (r#"{"stream":"front","kind":"motion"}"#, "field kind"),
        (r#"{"stream":"front","duration_s":-3}"#, "field duration_s"),
        (r#"{"stream":"front","zones":"yard"}"#, "field zones"),
        (r#"{"stream":"front","colour":"red"}"#, "\"colour\""),
    ] {
        let r = call(&nvr, &operator, "POST", "/api/events", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| e.contains(field)), "{body}: {}", r.text());
    }
    let r = call(&nvr, &operator, "POST", "/api/events", r#"{"stream":"nope"}"#);
    assert!(r.status == 404 && r.text().contains("field stream"), "{}", r.text());
    assert_eq!(call(&nvr, &viewer, "GET", "/api/events?kind=sneeze", "").status, 400);

    // An event over a span the camera records: 3 s, starting 4 s from now (the camera was
    // connected about when the recorder answered, so its 2 s before are recorded too).
    let t0 = now_ms() + 4_000;
    let body = json!({"stream": "front", "label": "doorbell", "start_ms": t0, "duration_s": 3, "zones": ["porch"]});
    let r = call(&nvr, &operator, "POST", "/api/events", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let bell = r.json();
    let bell_id = bell["id"].as_i64().expect("id");
    assert_eq!((bell["kind"].as_str(), bell["end_ms"].as_i64()), (Some("manual"), Some(t0 + 3_000)), "{bell}");
    push.wait_for(&format!("event: began\nid: {bell_id}\n"));
    push.wait_for(&format!("event: ended\nid: {bell_id}\n"));

    // An ongoing external event, ended through the API.
    let r = call(&nvr, &operator, "POST", "/api/events", r#"{"stream":"front","kind":"external","label":"alarm"}"#);
    let alarm = r.json();
    let alarm_id = alarm["id"].as_i64().expect("id");
    assert!(alarm["end_ms"].is_null() && alarm["ongoing"] == true, "{alarm}");
    let r = call(&nvr, &operator, "POST", &format!("/api/events/{alarm_id}/end"), "");
    assert!(r.status == 200 && r.json()["end_ms"].is_i64(), "{}", r.text());
    assert_eq!(call(&nvr, &operator, "POST", &format!("/api/events/{alarm_id}/end"), "").status, 409);

    // Filters and paging.
    for i in 0..5 {
        let body =
            json!({"stream": "front", "label": format!("tick{i}"), "start_ms": t0 - 60_000 + i, "duration_s": 1});
        assert_eq!(call(&nvr, &operator, "POST", "/api/events", &body.to_string()).status, 201);
    }
    let all = ids(&call(&nvr, &viewer, "GET", "/api/events?stream=front", "").json());
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(all[..2], [bell_id, alarm_id], "newest first, by start (the bell starts 4 s ahead)");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let v = call(&nvr, &viewer, "GET", &format!("/api/events?stream=front&limit=3{q}"), "").json();
        paged.extend(ids(&v));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all, "pages of 3 give the whole list once, in order");
    let only = |q: &str| ids(&call(&nvr, &viewer, "GET", &format!("/api/events?{q}"), "").json());
    assert_eq!(only("kind=external"), vec![alarm_id]);
    assert_eq!(only("label=doorbell"), vec![bell_id]);
    assert_eq!(only("zone=porch"), vec![bell_id]);
    assert_eq!(only(&format!("since={}&until={}", t0 + 1_000, t0 + 2_000)), vec![bell_id]);
    assert_eq!(only("stream=back"), Vec::<i64>::new());

    // The clip covers the event's span plus 2 s each side, and decodes.
    // The index (a row's end and fragments, moved at each sync) must reach past the clip's
    // end (t0 + 5 s) by more than a fragment (GOP 1 s): the export is made of indexed fragments.
    poll(Duration::from_secs(30), "recordings indexed past the clip", || {
        let v = nvr.json(&format!("/api/recordings?stream=front&start={}&end={}", t0 - 10_000, now_ms() + 1_000));
        let end = v["recordings"].as_array().into_iter().flatten().filter_map(|r| r["end_ms"].as_i64());
        end.max().is_some_and(|e| e > t0 + 7_500)
    });
    let r = call(&nvr, &viewer, "GET", &format!("/api/events/{bell_id}/clip?pre=2&post=2"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let clip = tmp.path().join("clip.mp4");
    std::fs::write(&clip, &r.body).expect("write clip");
    common::decode_ok(&clip).unwrap_or_else(|e| panic!("the clip does not decode: {e}"));
    let seconds = common::media_duration(&clip);
    println!("clip of a 3 s event with pre=2 post=2: {seconds:.2} s");
    // Whole fragments from the keyframe at or before the start to the end of the one holding
    // the end. A fragment is cut at the first keyframe at least 1 s in: with the live camera's
    // jittery 1 s GOP, a keyframe 0.99 s in waits for the next, so fragments last 1 or 2 s.
    assert!(
        (6.9..11.2).contains(&seconds),
        "the clip lasts {seconds} s, the span 7 s (+ up to a fragment, 2 s, each side)"
    );

    // A snapshot (as detection will store one) is served, then deleted with its event.
    let snap = nvr.data_dir.join("events/front/1.jpg");
    std::fs::create_dir_all(snap.parent().expect("dir")).expect("mkdir");
    std::fs::write(&snap, b"\xff\xd8not really a jpeg\xff\xd9").expect("snapshot");
    let db = Db::open(&nvr.data_dir.join("oxinvr.db")).expect("db");
    assert!(db.set_event_files(bell_id, Some("events/front/1.jpg"), None).expect("files"));
    let r = call(&nvr, &viewer, "GET", &format!("/api/events/{bell_id}/snapshot"), "");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/jpeg")));
    let r = call(&nvr, &viewer, "GET", &format!("/api/events/{bell_id}/thumbnail"), "");
    assert!(r.status == 404 && r.text().contains("no thumbnail yet"), "{}", r.text());
    assert_eq!(call(&nvr, &operator, "DELETE", &format!("/api/events/{bell_id}"), "").status, 403);
    assert_eq!(call(&nvr, &admin, "DELETE", &format!("/api/events/{bell_id}"), "").status, 200);
    assert!(!snap.exists(), "the snapshot went with its event");
    assert_eq!(call(&nvr, &viewer, "GET", &format!("/api/events/{bell_id}"), "").status, 404);
    push.wait_for(&format!("event: deleted\nid: {bell_id}\n"));

    // Events outlive their stream's recordings.
    let r = nvr.request("DELETE", "/api/streams/front?purge=true", &[], b"").expect("purge");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(only("stream=front").len(), 6, "events stay when the recordings go");
    println!("manual_events_through_the_api took {:?}", began.elapsed());
}

/// Creates `path` at schema version `v` (the first `v` migrations, as the
/// binary of that version wrote them) with one stream.
fn database_at(path: &Path, v: usize) {
    let conn = rusqlite::Connection::open(path).expect("raw db");
    for step in &oxinvr::index::db::MIGRATIONS[..v] {
        conn.execute_batch(step).expect("migration");
    }
    conn.pragma_update(None, "user_version", v as i64).expect("version");
    conn.execute_batch(
        "INSERT INTO streams (id, name, url, created_ms, updated_ms, source)
         VALUES (1, 'front', 'rtsp://127.0.0.1:9/old', 100, 200, 'api');",
    )
    .expect("seed");
}

#[test]
fn a_schema_7_database_upgrades_and_keeps_its_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    database_at(&data.join("oxinvr.db"), 7);
    let nvr = Oxinvr::start(tmp.path(), &config("rtsp://127.0.0.1:9/none", ""));
    assert!(nvr.log().contains("migrated schema to version 8"), "{}", nvr.log());
    let r = nvr.request("POST", "/api/events", &[("Content-Type", "application/json")], br#"{"stream":"front"}"#);
    assert_eq!(r.expect("post").status, 201);
    assert_eq!(ids(&nvr.json("/api/events")).len(), 1);
    let db = Db::open(&data.join("oxinvr.db")).expect("db");
    assert_eq!(db.schema_version().expect("version") as usize, oxinvr::index::db::MIGRATIONS.len());
    assert_eq!(db.stream_by_name("front").expect("q").map(|s| s.created_ms), Some(100), "the stream row survived");
}

#[test]
fn old_events_go_with_their_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &config("rtsp://127.0.0.1:9/none", "[events]\nretention_days = 1\n"));
    let post = |body: Value| {
        let r =
            nvr.request("POST", "/api/events", &[("Content-Type", "application/json")], body.to_string().as_bytes());
        let r = r.expect("post");
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_i64().expect("id")
    };
    let day = 86_400_000;
    let old = post(json!({"stream": "front", "start_ms": now_ms() - 3 * day, "duration_s": 60}));
    let recent = post(json!({"stream": "front", "start_ms": now_ms() - day / 2, "duration_s": 60}));
    let snap = nvr.data_dir.join("events/front/old.jpg");
    std::fs::create_dir_all(snap.parent().expect("dir")).expect("mkdir");
    std::fs::write(&snap, b"jpeg").expect("snapshot");
    let db = Db::open(&nvr.data_dir.join("oxinvr.db")).expect("db");
    assert!(db.set_event_files(old, Some("events/front/old.jpg"), None).expect("files"));
    // The retention pass runs every 10 s.
    let v = nvr.wait_for("/api/events", Duration::from_secs(30), "the old event to go", |v| ids(v) == vec![recent]);
    assert_eq!(ids(&v), vec![recent]);
    assert!(!snap.exists(), "its snapshot went with it");
}
