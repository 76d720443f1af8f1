//! Main and sub streams, and snapshot URLs for H.265 cameras, in the real
//! binary: two GStreamer test cameras stand for one camera's main (640x360)
//! and sub (320x180) streams; an H.265 camera's JPEG snapshot endpoint is
//! stood in for by a small HTTP server this test runs (its JPEGs are frames
//! of the test camera grabbed by ffmpeg).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::nvr::Oxinvr;
use common::Camera;

/// The config's tables before the streams.
const HEAD: &str = "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n[detect]\nfps = 5\n";

/// The stream's JSON once `f` holds for it (30 s at most).
fn stream_when(nvr: &Oxinvr, name: &str, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    nvr.wait_for(&format!("/api/streams/{name}"), Duration::from_secs(30), what, f)
}

/// Width and height of a picture or video file, by ffprobe.
fn size_of(path: &Path) -> (u64, u64) {
    let p = common::ffprobe_json(path);
    let v = &p["streams"][0];
    (v["width"].as_u64().unwrap_or(0), v["height"].as_u64().unwrap_or(0))
}

/// The `init` message of a live view (`query` after the path): its width and height.
fn live_size(nvr: &Oxinvr, stream: &str, query: &str) -> (u64, u64) {
    let mut sock = TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (k, v) = nvr.auth_header();
    let req = format!(
        "GET /api/streams/{stream}/live{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{k}: {v}\r\n\r\n",
        nvr.port
    );
    sock.write_all(req.as_bytes()).expect("handshake");
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.contains(" 101 "), "live {stream}{query}: {line}");
    while line.trim_end() != "" {
        line.clear();
        r.read_line(&mut line).expect("header");
    }
    // The first message is the text `init` (a server frame: unmasked, length < 64 KiB).
    let mut h = [0u8; 2];
    r.read_exact(&mut h).expect("frame head");
    assert_eq!(h[0], 0x81, "a text frame first");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            r.read_exact(&mut l).expect("length");
            usize::from(u16::from_be_bytes(l))
        }
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("init");
    let init: serde_json::Value = serde_json::from_slice(&body).expect("init JSON");
    assert_eq!(init["type"], "init", "{init}");
    (init["width"].as_u64().unwrap_or(0), init["height"].as_u64().unwrap_or(0))
}

#[test]
fn the_sub_stream_feeds_detection_and_the_grid_while_the_main_is_recorded() {
    // One camera's two streams: a main 640x360 and a sub 320x180 with a moving ball.
    let main = Camera::start(&["--size", "640x360", "--fps", "10", "--gop", "10", "--pattern", "smpte"]);
    let sub = Camera::start(&["--size", "320x180", "--fps", "5", "--gop", "10", "--pattern", "ball"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}[[streams]]\nname = \"cam\"\nurl = \"{}\"\nsub_url = \"{}\"\nbitrate_kbps = 1000\ndetect = [\"motion\"]\n",
        HEAD,
        main.url("h264"),
        sub.url("h264")
    );
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    let s = stream_when(&nvr, "cam", "main and sub streaming", |v| {
        let streaming = |st: &serde_json::Value| st["state"] == "streaming" && st["frames"].as_u64().unwrap_or(0) > 0;
        streaming(&v["status"]) && streaming(&v["sub"]["status"])
    });
    let st = &s["sub"]["status"];
    assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(320), Some(180)), "{s}");
    assert_eq!((s["status"]["width"].as_u64(), s["status"]["height"].as_u64()), (Some(640), Some(360)), "{s}");
    assert_eq!(s["sub"]["ring"]["capacity"].as_u64(), Some(512 << 10), "the sub ring is small: {s}");
    assert!(s["sub_url"].as_str().is_some_and(|u| u.ends_with("/h264")), "{s}");

    // Detection runs on the sub stream: the ball gives a motion event whose picture is the sub's size.
    let events = nvr.wait_for("/api/events?stream=cam", Duration::from_secs(30), "a motion event", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let e = &events["events"][0];
    assert_eq!(e["kind"], "motion", "{e}");
    let snap = nvr.get(e["snapshot_url"].as_str().expect("snapshot url")).expect("snapshot");
    let snap_path = tmp.path().join("snap.jpg");
    std::fs::write(&snap_path, &snap.body).expect("write");
    assert_eq!(size_of(&snap_path), (320, 180), "the event's picture comes from the sub stream");
    let d = nvr.json("/api/streams/cam")["detection"].clone();
    assert_eq!(d["source"], "sub", "{d}");
    assert!(d["frames_decoded"].as_u64().unwrap_or(0) > 0 && d["problem"].is_null(), "{d}");

    // The grid's tiles get the sub stream, full-screen live the main.
    assert_eq!(live_size(&nvr, "cam", "?sub=1"), (320, 180));
    assert_eq!(live_size(&nvr, "cam", ""), (640, 360));
    let bad = nvr.request("GET", "/api/streams/cam/live?sub=maybe", &[], b"").expect("request");
    assert!(bad.status == 400 && bad.text().contains("sub"), "{} {}", bad.status, bad.text());

    // Its ring is counted in /api/system.
    let mem = &nvr.json("/api/system")["memory"];
    let (rings, subs) = (mem["rings_bytes"].as_u64().unwrap_or(0), mem["sub_rings_bytes"].as_u64().unwrap_or(0));
    assert!(subs == 512 << 10 && rings >= (1 << 20) + subs, "{mem}");

    // The sub's camera goes away: the main records on, the sub says why it is down.
    let frames_before = nvr.json("/api/streams/cam")["status"]["frames"].as_u64().unwrap_or(0);
    drop(sub);
    let s = stream_when(&nvr, "cam", "the sub down and the main still recording", |v| {
        v["sub"]["status"]["state"] != "streaming"
            && v["sub"]["status"]["last_error"].is_string()
            && v["status"]["state"] == "streaming"
            && v["status"]["frames"].as_u64().unwrap_or(0) > frames_before + 30
    });
    eprintln!("sub down: {}", s["sub"]["status"]);
    let data = nvr.data_dir.clone();
    let (code, _) = nvr.terminate(Duration::from_secs(15));
    assert!(code.success());
    drop(main);

    // The recordings are the main stream's, whole and decodable.
    let files = common::mp4_files(&data.join("recordings"));
    assert!(!files.is_empty(), "no recording under {}", data.display());
    for f in &files {
        assert_eq!(size_of(f), (640, 360), "{}", f.display());
        common::decode_ok(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

/// A camera's snapshot endpoint (a stand-in for an H.265 camera's
/// `/snapshot.jpg`): Basic auth with `user:password`, then the next of
/// `jpegs` for each request, round and round.
struct SnapshotServer {
    port: u16,
    served: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl SnapshotServer {
    fn start(jpegs: Vec<Vec<u8>>, user: &str, password: &str) -> SnapshotServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, r) = (served.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut rd = BufReader::new(&conn);
                let mut auth = None;
                let mut line = String::new();
                while rd.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
                    if let Some(v) = line.strip_prefix("Authorization: ") {
                        auth = Some(v.trim_end().to_string());
                    }
                    line.clear();
                }
                let mut out = &conn;
                if auth.as_deref() == Some(want.as_str()) {
                    let jpeg = &jpegs[s.fetch_add(1, Ordering::SeqCst) % jpegs.len()];
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        jpeg.len()
                    );
                    let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(jpeg));
                } else {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = out.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"camera\"\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        SnapshotServer { port, served, refused }
    }
}

/// Frames of the test camera's moving ball, grabbed by ffmpeg as JPEGs.
fn ball_jpegs(cam: &Camera, dir: &Path) -> Vec<Vec<u8>> {
    let pattern = dir.join("f%03d.jpg");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", &cam.url("h264"), "-frames:v", "40", "-q:v", "5"])
        .arg(&pattern)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg could not grab the camera's frames");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).expect("read jpeg")).collect()
}

#[test]
fn an_h265_camera_detects_through_its_snapshot_url_and_without_one_says_why() {
    let cam = Camera::start(&["--size", "640x360", "--fps", "10", "--gop", "10", "--pattern", "ball"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    let jpegs = ball_jpegs(&cam, &frames);
    assert!(jpegs.len() >= 20, "{} frames grabbed", jpegs.len());
    let server = SnapshotServer::start(jpegs, "admin", "s3cret-pw");
    let cfg = format!(
        "{}[[streams]]\nname = \"cam\"\nurl = \"{h265}\"\nbitrate_kbps = 1000\ndetect = [\"motion\"]\n\
         snapshot_url = \"http://admin:s3cret-pw@127.0.0.1:{}/snapshot.jpg\"\n\
         [[streams]]\nname = \"bare\"\nurl = \"{h265}\"\nbitrate_kbps = 1000\ndetect = [\"motion\"]\n",
        HEAD,
        server.port,
        h265 = cam.url("h265"),
    );
    let nvr = Oxinvr::start(tmp.path(), &cfg);

    // The snapshot gives motion events on the H.265 stream.
    let events = nvr.wait_for("/api/events?stream=cam", Duration::from_secs(40), "a motion event", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    assert_eq!(events["events"][0]["kind"], "motion", "{events}");
    let s = nvr.json("/api/streams/cam");
    assert!(s["status"]["codec"].as_str().is_some_and(|c| c.starts_with("hvc1") || c.starts_with("hev1")), "{s}");
    assert_eq!(s["detection"]["source"], "snapshot", "{s}");
    assert!(s["detection"]["problem"].is_null(), "{s}");
    assert_eq!(s["snapshot_url"], format!("http://admin:***@127.0.0.1:{}/snapshot.jpg", server.port), "{s}");
    // The first request met the camera's 401, then every one carried the credentials.
    let (served, refused) = (server.served.load(Ordering::SeqCst), server.refused.load(Ordering::SeqCst));
    assert!(served >= 2 && (1..served).contains(&refused), "{served} JPEGs served, {refused} requests refused");

    // Without a sub stream or a snapshot URL, detection says what it needs.
    let bare = stream_when(&nvr, "bare", "bare's detection problem", |v| v["detection"]["problem"].is_string());
    let problem = bare["detection"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("sub_url") && problem.contains("snapshot_url"), "{problem}");
    assert!(nvr.json("/api/events?stream=bare")["events"].as_array().is_some_and(|e| e.is_empty()));

    // The password was never written to the log.
    let log = nvr.log();
    assert!(log.contains("detection samples the snapshot"), "{log}");
    assert!(!log.contains("s3cret-pw"), "the snapshot password is in the log");
    let (code, _) = nvr.terminate(Duration::from_secs(15));
    assert!(code.success());
}

#[test]
fn bad_sub_and_snapshot_urls_are_refused_by_the_api_and_the_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), HEAD);
    let post = |body: serde_json::Value| {
        let r = nvr
            .request("POST", "/api/streams", &[("Content-Type", "application/json")], body.to_string().as_bytes())
            .expect("POST");
        (r.status, r.json()["error"].as_str().unwrap_or_default().to_string())
    };
    let base = |k: &str, v: serde_json::Value| {
        let mut b = serde_json::json!({ "name": "cam", "url": "rtsp://127.0.0.1:9/main" });
        b[k] = v;
        b
    };
    for (field, value, says) in [
        ("sub_url", serde_json::json!("http://cam/sub"), "rtsp://"),
        ("sub_url", serde_json::json!("rtsp://127.0.0.1:9/main"), "main stream"),
        ("sub_url", serde_json::json!(""), "rtsp://"),
        ("sub_url", serde_json::json!(7), "sub_url"),
        ("snapshot_url", serde_json::json!("https://cam/snap.jpg"), "https"),
        ("snapshot_url", serde_json::json!("rtsp://cam/snap"), "http://"),
        ("snapshot_url", serde_json::json!("http://"), "snapshot_url"),
    ] {
        let (status, error) = post(base(field, value.clone()));
        assert_eq!(status, 400, "{field} = {value}: {error}");
        assert!(error.contains(field) && error.contains(says), "{field} = {value}: {error}");
    }
    let ok = base("sub_url", serde_json::json!("rtsp://u:pw@127.0.0.1:9/sub"));
    let mut ok = ok;
    ok["snapshot_url"] = serde_json::json!("http://u:pw@127.0.0.1:9/snap.jpg");
    let r = nvr
        .request("POST", "/api/streams", &[("Content-Type", "application/json")], ok.to_string().as_bytes())
        .expect("POST");
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["sub_url"].as_str(), v["snapshot_url"].as_str()),
        (Some("rtsp://u:***@127.0.0.1:9/sub"), Some("http://u:***@127.0.0.1:9/snap.jpg"))
    );
    // The masked URLs sent back keep the passwords; null removes the sub stream.
    let put = |body: serde_json::Value| {
        nvr.request("PUT", "/api/streams/cam", &[("Content-Type", "application/json")], body.to_string().as_bytes())
            .expect("PUT")
    };
    let r = put(serde_json::json!({ "sub_url": v["sub_url"], "snapshot_url": v["snapshot_url"], "priority": 2 }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["sub"].is_object(), "the sub stream runs: {}", r.text());
    let r = put(serde_json::json!({ "sub_url": null }));
    assert_eq!((r.status, r.json()["sub_url"].is_null(), r.json()["sub"].is_null()), (200, true, true), "{}", r.text());
    let (code, _) = nvr.terminate(Duration::from_secs(15));
    assert!(code.success());

    // The configuration file: the key and what is wrong.
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[[streams]]\nname = \"cam\"\nurl = \"rtsp://127.0.0.1:9/x\"\n\
             snapshot_url = \"ftp://cam/snap.jpg\"\n",
            tmp.path().join("d2").display()
        ),
    )
    .expect("write");
    let out = Command::new(common::nvr::oxinvr_bin()).args(["check", "--config"]).arg(&cfg).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("snapshot_url") && text.contains("http://"), "{text}");
}
