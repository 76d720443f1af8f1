//! Live view end to end: the real binary serves `GET /api/streams/{name}/live`
//! from a real RTSP camera (GStreamer, started here); a real TCP client speaks
//! WebSocket with the crate's own framing, and ffmpeg/ffprobe check what it got.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nvr::{http, Oxinvr, Response};
use common::Camera;
use oxinvr::web::websocket::{self, FrameReader, Message, Opcode};

/// The test camera's frame rate (scripts/test-camera `--fps`).
const FPS: f64 = 15.0;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn config(url: &str, web_extra: &str, storage_extra: &str, bitrate_kbps: u32) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n{storage_extra}\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n{web_extra}\n\
         [[streams]]\nname = \"cam\"\nurl = \"{url}\"\nbitrate_kbps = {bitrate_kbps}\n"
    )
}

fn wait_streaming(nvr: &Oxinvr) {
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), "cam streaming", |v| {
        v["status"]["state"] == "streaming" && v["status"]["frames"].as_u64().unwrap_or(0) > 0
    });
}

/// The handshake headers and `extra` (no credential).
fn handshake_headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", KEY)]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The handshake headers, the console credential and `extra`.
fn upgrade_headers(nvr: &Oxinvr, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = handshake_headers(extra);
    h.push(nvr.auth_header());
    h
}

/// A plain HTTP request (the error cases answer before any upgrade), credential as given.
fn request(nvr: &Oxinvr, method: &str, path: &str, headers: &[(String, String)]) -> Response {
    let all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    http(nvr.port, method, path, &all, b"").unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A connected live client.
struct Client {
    sock: TcpStream,
    reader: FrameReader,
}

impl Client {
    /// Connects and upgrades; panics unless the answer is 101 with the right accept key.
    fn connect(nvr: &Oxinvr, stream: &str) -> Client {
        match Self::try_connect(nvr, stream, &[]) {
            Ok(c) => c,
            Err(r) => panic!("live {stream}: {} {}", r.status, r.text()),
        }
    }

    /// Connects and upgrades, or returns the non-101 answer.
    fn try_connect(nvr: &Oxinvr, stream: &str, extra: &[(&str, &str)]) -> Result<Client, Response> {
        Self::try_connect_with(nvr, stream, upgrade_headers(nvr, extra))
    }

    /// Connects with exactly these headers (besides Host).
    fn try_connect_with(nvr: &Oxinvr, stream: &str, headers: Vec<(String, String)>) -> Result<Client, Response> {
        let mut sock = TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut req = format!("GET /api/streams/{stream}/live HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", nvr.port);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).expect("send handshake");
        let (head, rest) = read_head(&mut sock);
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
        if status != 101 {
            let mut body = rest;
            let _ = sock.read_to_end(&mut body);
            return Err(Response { status, headers: Vec::new(), body });
        }
        let accept = websocket::accept_key(KEY);
        assert!(head.lines().any(|l| l.eq_ignore_ascii_case(&format!("sec-websocket-accept: {accept}"))), "{head}");
        let mut reader = FrameReader::client(64 << 20);
        reader.push(&rest);
        Ok(Client { sock, reader })
    }

    fn next(&mut self) -> Message {
        self.reader.read_message(&mut self.sock).unwrap_or_else(|e| panic!("live message: {e}"))
    }

    fn send(&mut self, op: Opcode, payload: &[u8]) {
        let mut out = Vec::new();
        websocket::put_masked_frame(&mut out, op, payload, websocket::random_mask());
        self.sock.write_all(&out).expect("send frame");
    }

    fn text(&mut self) -> serde_json::Value {
        match self.next() {
            Message::Text(t) => serde_json::from_str(&t).expect("JSON"),
            other => panic!("text expected, got {}", describe(&other)),
        }
    }

    /// The init text (checked) and the init segment.
    fn init(&mut self) -> (serde_json::Value, Vec<u8>) {
        let init = self.text();
        assert_eq!(init["type"], "init", "{init}");
        match self.next() {
            Message::Binary(b) if &b[4..8] == b"ftyp" => (init, b),
            other => panic!("init segment expected, got {}", describe(&other)),
        }
    }
}

/// Reads the response head; returns it and the bytes after it.
fn read_head(sock: &mut TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            return (head, raw[end + 4..].to_vec());
        }
        let n = sock.read(&mut byte).expect("read the response head");
        assert!(n > 0, "connection closed before the response head: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&byte[..n]);
    }
}

fn describe(m: &Message) -> String {
    match m {
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

/// What the fragments of a session say: per fragment (video tfdt, duration, first sample sync).
fn video_trafs(fragments: &[Vec<u8>]) -> Vec<(u64, u64, bool)> {
    fragments
        .iter()
        .map(|f| {
            let moof_len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
            assert_eq!(&f[4..8], b"moof");
            let trafs = oxinvr::recording::mp4::parse_moof(&f[..moof_len]).expect("our moof");
            let v = trafs.iter().find(|t| t.track_id == 1).expect("a video traf in every fragment");
            assert_eq!(v.samples, 1, "one video frame per fragment");
            (v.base_decode_time, v.duration, v.first_sync)
        })
        .collect()
}

/// Writes init + fragments, checks decoding; returns the decoded frame count.
fn check_file(path: &Path, init: &[u8], fragments: &[Vec<u8>]) -> u64 {
    let mut bytes = init.to_vec();
    fragments.iter().for_each(|f| bytes.extend_from_slice(f));
    std::fs::write(path, &bytes).expect("write the live capture");
    common::decode_ok(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    common::frame_count(path)
}

/// The first decoded video frame is a keyframe (ffprobe).
fn first_frame_is_key(path: &Path) -> bool {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type"])
        .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().is_some_and(|l| l.starts_with("1,") || l.starts_with('1'))
}

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(nvr: &Oxinvr) -> f64 {
    let stat = find_stat(&nvr.data_dir).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok())).sum();
    ticks / 100.0
}

/// /proc/<pid>/stat of the oxinvr process using `data_dir` (by its command line).
fn find_stat(data_dir: &Path) -> Option<String> {
    let config = data_dir.parent()?.join("oxinvr.toml");
    let want = config.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&want) {
            return std::fs::read_to_string(e.path().join("stat")).ok();
        }
    }
    None
}

/// (wall ms, CRC32) of every video packet of the recordings under `data_dir`:
/// a segment's first frame is at its start (the file name), later ones at their pts.
fn recorded_frames(data_dir: &Path) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![data_dir.join("recordings")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let start_ms = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<f64>().ok());
            match start_ms {
                _ if p.is_dir() => dirs.push(p),
                Some(start) => out.extend(packet_hashes(&p).into_iter().map(|(t, h)| (start + t * 1000.0, h))),
                None => {}
            }
        }
    }
    out
}

/// (pts in seconds, CRC32) of each video packet of a file.
fn packet_hashes(path: &Path) -> Vec<(f64, String)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "quiet", "-select_streams", "v:0", "-show_packets", "-show_data_hash", "crc32"])
        .args(["-show_entries", "packet=pts_time,data_hash", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let (mut t, mut h) = (None, None);
            for f in l.split(',') {
                match f.strip_prefix("CRC32:") {
                    Some(_) => h = Some(f.to_string()),
                    None => t = f.parse::<f64>().ok(),
                }
            }
            Some((t?, h?))
        })
        .collect()
}

/// Milliseconds from the recorder receiving each frame (its wall time in the
/// recording) to the live client receiving its fragment, for the frames found
/// in both, sorted. `arrivals` are the client's wall-clock ms per fragment.
fn ingest_to_client_ms(data_dir: &Path, live: &Path, arrivals: &[f64]) -> Vec<f64> {
    let recorded: std::collections::HashMap<String, f64> =
        recorded_frames(data_dir).into_iter().map(|(wall, h)| (h, wall)).collect();
    let mut lat: Vec<f64> = packet_hashes(live)
        .iter()
        .zip(arrivals)
        .filter_map(|((_, h), arrived)| recorded.get(h).map(|wall| arrived - wall))
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn http_heap(nvr: &Oxinvr) -> i64 {
    nvr.json("/api/system")["memory"]["heap_by_subsystem"]["http"].as_i64().unwrap_or(0)
}

#[test]
fn live_view_decodes_from_a_keyframe_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--audio", "--fps", "15"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "max_live_clients = 1", "", 1000));
    wait_streaming(&nvr);

    // Errors come before any upgrade, as JSON.
    let r = request(&nvr, "GET", "/api/streams/nope/live", &upgrade_headers(&nvr, &[]));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("nope")), "{}", r.text());
    let r = request(&nvr, "GET", "/api/streams/cam/live", &handshake_headers(&[]));
    assert_eq!(r.status, 401, "without a credential: {}", r.text());
    let r = request(&nvr, "GET", "/api/streams/cam/live", &[nvr.auth_header()]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("Upgrade")), "{}", r.text());
    let old =
        upgrade_headers(&nvr, &[])
            .into_iter()
            .map(|(k, v)| if k == "Sec-WebSocket-Version" { (k, "8".into()) } else { (k, v) });
    let r = request(&nvr, "GET", "/api/streams/cam/live", &old.collect::<Vec<_>>());
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Client::try_connect(&nvr, "cam", &[("Origin", "http://evil.example")]).err().expect("403");
    assert_eq!(r.status, 403, "{}", r.text());

    let heap_before = http_heap(&nvr);
    let cpu_before = cpu_seconds(&nvr);
    let origin = format!("http://127.0.0.1:{}", nvr.port);
    let began = Instant::now();
    let mut a = Client::try_connect(&nvr, "cam", &[("Origin", &origin)]).unwrap_or_else(|r| panic!("{}", r.text()));
    // max_live_clients = 1: a second client is refused while the first watches.
    let r = Client::try_connect(&nvr, "cam", &[]).err().expect("503");
    assert_eq!(r.status, 503, "{}", r.text());

    let (init, init_segment) = a.init();
    let first_init = began.elapsed();
    assert_eq!(init["codec"].as_str().map(|c| c.starts_with("avc1.")), Some(true), "{init}");
    assert_eq!(init["audio"], "mp4a.40.2", "{init}");
    assert_eq!((init["width"].as_u64(), init["height"].as_u64()), (Some(640), Some(360)), "{init}");
    assert_eq!(
        init["mime"].as_str(),
        Some(format!("video/mp4; codecs=\"{},mp4a.40.2\"", init["codec"].as_str().unwrap_or("")).as_str())
    );

    a.send(Opcode::Ping, b"are you there");
    let mut fragments = Vec::new();
    let mut pong = false;
    let mut arrivals = Vec::new();
    let collect_from = Instant::now();
    while collect_from.elapsed() < Duration::from_secs(3) {
        match a.next() {
            Message::Binary(b) => {
                arrivals.push((Instant::now(), wall_ms()));
                fragments.push(b);
            }
            Message::Pong(p) => pong = p == b"are you there",
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    assert!(pong, "no pong to the ping");
    let heap_with_client = http_heap(&nvr);
    let cpu_used = cpu_seconds(&nvr) - cpu_before;

    // One video frame per fragment; tfdt from 0 without holes; a keyframe first.
    let trafs = video_trafs(&fragments);
    assert!(trafs[0].2, "the first fragment is not a keyframe");
    let mut t = 0;
    for (i, (tfdt, dur, _)) in trafs.iter().enumerate() {
        assert_eq!(*tfdt, t, "fragment {i} tfdt");
        t += dur;
    }
    let media_s = t as f64 / 90_000.0;

    // 3 s of collection plus the backlog of up to one GOP (1 s) sent at once.
    let n = fragments.len() as f64;
    assert!((2.5 * FPS..=4.5 * FPS).contains(&n), "{n} fragments in 3 s at {FPS} fps");
    let path = tmp.path().join("live.mp4");
    let frames = check_file(&path, &init_segment, &fragments);
    assert_eq!(frames, fragments.len() as u64, "every fragment decodes to one frame");
    assert!(first_frame_is_key(&path), "ffprobe: the first frame is not a keyframe");
    let probe = common::ffprobe_json(&path);
    let codecs: Vec<&str> =
        probe["streams"].as_array().into_iter().flatten().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"], "{probe}");

    // Pacing once caught up: fragments arrive as the camera makes frames.
    let bytes: usize = fragments.iter().map(Vec::len).sum();
    let steady: Vec<f64> = arrivals.windows(2).map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1000.0).skip(20).collect();
    let max_gap = steady.iter().cloned().fold(0.0, f64::max);
    // Latency from ingest to client, matching frames with the recording (flushed per GOP).
    std::thread::sleep(Duration::from_millis(2500));
    let walls: Vec<f64> = arrivals.iter().map(|a| a.1).collect();
    let lat = ingest_to_client_ms(&nvr.data_dir, &path, &walls);
    assert!(lat.len() >= 10, "only {} live frames found in the recording", lat.len());
    let median = lat[lat.len() / 2];

    assert!(median < 500.0, "median ingest-to-client latency {median:.0} ms: {lat:?}");
    eprintln!(
        "live: init after {first_init:?}; {n} fragments = {media_s:.2} s of video, {bytes} bytes in 3 s; \
         steady inter-arrival max {max_gap:.0} ms; ingest->client latency over {} frames: min {:.0} median \
         {median:.0} ms (includes the backlog of the first GOP at max {:.0}); http heap {heap_before} -> \
         {heap_with_client} bytes; recorder CPU {cpu_used:.3} s over {:.1} s",
        lat.len(),
        lat[0],
        lat[lat.len() - 1],
        collect_from.elapsed().as_secs_f64() + first_init.as_secs_f64()
    );

    // A close is answered with a close, and the slot is freed.
    a.send(Opcode::Close, &websocket::close_payload(1000, "done"));
    loop {
        match a.reader.read_message(&mut a.sock) {
            Ok(Message::Close(c)) => {
                assert_eq!(c.map(|c| c.0), Some(1000));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no close reply: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut c = loop {
        match Client::try_connect(&nvr, "cam", &[]) {
            Ok(c) => break c,
            Err(r) if r.status == 503 && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(r) => panic!("slot not freed: {} {}", r.status, r.text()),
        }
    };
    c.init();

    // Deleting the stream ends the live view with an error message and a close frame.
    let r = request(&nvr, "DELETE", "/api/streams/cam?purge=true", &[nvr.auth_header()]);
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "no stream-stopped message");
        match c.next() {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v, serde_json::json!({"type": "error", "error": "stream stopped"}));
                break;
            }
            Message::Binary(_) => {}
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    assert!(matches!(c.next(), Message::Close(Some((1001, _)))));
    // The thread frees its slot just after sending the close frame.
    nvr.wait_for("/api/system", Duration::from_secs(2), "the live slot to be freed", |v| {
        v["live_clients"].as_u64() == Some(0)
    });
}

/// A live view opened with a login ends (error message, close 1008) soon after
/// that session is revoked; one opened with an API key, after the key is deleted.
#[test]
fn revoking_the_login_ends_the_live_view() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "pbkdf2_iterations = 1000", "", 1000));
    wait_streaming(&nvr);
    let json = [("Content-Type", "application/json")];
    let setup = http(nvr.port, "POST", "/api/auth/setup", &json, br#"{"username":"boss","password":"long enough pw"}"#)
        .expect("setup");
    assert_eq!(setup.status, 201, "{}", setup.text());
    let cookie = setup.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("cookie").to_string();
    let csrf = setup.json()["csrf"].as_str().expect("csrf").to_string();
    let key = http(
        nvr.port,
        "POST",
        "/api/keys",
        &[("Content-Type", "application/json"), ("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        br#"{"name":"viewer script"}"#,
    )
    .expect("key")
    .json();

    let by_cookie = handshake_headers(&[("Cookie", cookie.as_str())]);
    let bearer = format!("Bearer {}", key["key"].as_str().expect("key"));
    let by_key = handshake_headers(&[("Authorization", bearer.as_str())]);
    for (headers, revoke) in [
        (by_cookie, "/api/auth/sessions/1".to_string()),
        (by_key, format!("/api/keys/{}", key["id"].as_i64().expect("id"))),
    ] {
        let mut c =
            Client::try_connect_with(&nvr, "cam", headers).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        c.init();
        let r = nvr.request("DELETE", &revoke, &[], b"").expect("revoke");
        assert_eq!(r.status, 204, "{revoke}: {}", r.text());
        let deadline = Instant::now() + Duration::from_secs(6);
        let ended = loop {
            assert!(Instant::now() < deadline, "the live view outlived {revoke}");
            match c.next() {
                Message::Binary(_) => {}
                Message::Text(t) => break t,
                other => panic!("unexpected {}", describe(&other)),
            }
        };
        assert!(ended.contains("login ended"), "{ended}");
        assert!(matches!(c.next(), Message::Close(Some((1008, _)))));
    }
}

/// A client stops reading for `stall`, then reads on: it must get a jump
/// message whose reason contains `reason`, then fragments that still decode.
fn slow_client(storage: &str, bitrate_kbps: u32, stall: Duration, reason: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15", "--pattern", "snow", "--bitrate", "2000"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "", storage, bitrate_kbps));
    wait_streaming(&nvr);
    let mut c = Client::connect(&nvr, "cam");
    let (_, init_segment) = c.init();
    let mut fragments = Vec::new();
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        match c.next() {
            Message::Binary(b) => fragments.push(b),
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    let heap = http_heap(&nvr);
    // Stop reading: kernel buffers fill, the server pauses, the ring moves on.
    std::thread::sleep(stall);
    let mut jump = None;
    let mut after_jump = 0;
    let resumed = Instant::now();
    while after_jump < 30 {
        assert!(resumed.elapsed() < Duration::from_secs(15), "no jump after the stall ({} fragments)", fragments.len());
        match c.next() {
            Message::Binary(b) => {
                fragments.push(b);
                after_jump += usize::from(jump.is_some());
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v["type"], "jump", "{v}");
                assert!(v["skipped_frames"].as_u64().unwrap_or(0) > 0, "{v}");
                assert!(v["reason"].as_str().is_some_and(|r| r.contains(reason)), "{v}");
                eprintln!("slow client: {v} after {} fragments; http heap {heap} bytes while stalled", fragments.len());
                jump = Some(fragments.len());
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    let at = jump.expect("jump");
    let trafs = video_trafs(&fragments);
    assert!(trafs[at].2, "the first fragment after the jump is not a keyframe");
    // The timeline stays contiguous across the jump.
    let mut t = 0;
    for (i, (tfdt, dur, _)) in trafs.iter().enumerate() {
        assert_eq!(*tfdt, t, "fragment {i} tfdt");
        t += dur;
    }
    let frames = check_file(&tmp.path().join("slow.mp4"), &init_segment, &fragments);
    assert_eq!(frames, fragments.len() as u64);
    let after = check_file(&tmp.path().join("after-jump.mp4"), &init_segment, &fragments[at..]);
    assert_eq!(after, (fragments.len() - at) as u64);
    // A watched stream does not hold up a clean stop; the client sees the end.
    let (status, took) = nvr.terminate(Duration::from_secs(15));
    assert!(status.success(), "oxinvr exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.reader.read_message(&mut c.sock) {
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => panic!("still receiving 5 s after the recorder stopped"),
            Err(_) => break,
        }
    }
    eprintln!("slow client: SIGTERM with a live client connected: exit in {took:?}");
}

#[test]
fn a_slow_client_whose_frames_left_the_ring_jumps_to_the_newest_keyframe() {
    // Noise at 2 Mbit/s in a 1 MiB ring (the smallest: ring_seconds 2 x 64 kbit/s
    // rounds up to it) holds about 4 s; the client stalls for 6.
    slow_client("ring_seconds = 2", 64, Duration::from_secs(6), "overwritten");
}

#[test]
fn a_slow_client_too_far_behind_jumps_to_the_newest_keyframe() {
    // A 16 s ring keeps every frame; the client is 4 s behind when it reads on.
    slow_client("ring_seconds = 8", 2000, Duration::from_secs(4), "behind");
}

/// POSTs a probe body; returns the status and JSON answer.
fn probe(nvr: &Oxinvr, body: &str) -> (u16, serde_json::Value) {
    let r = nvr
        .request("POST", "/api/probe", &[("Content-Type", "application/json")], body.as_bytes())
        .expect("POST /api/probe");
    (r.status, r.json())
}

#[test]
fn probe_reports_the_codec_and_size_or_what_failed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15", "--audio", "--size", "320x240"]);
    let locked = Camera::start(&["--fps", "15", "--user", "admin", "--password", "s3cret"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "", "", 1000));
    let (status, v) = probe(&nvr, &format!(r#"{{"url":"{}"}}"#, cam.url("h264")));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["video"]["codec"].as_str().is_some_and(|c| c.starts_with("avc1.")), "{v}");
    assert_eq!((v["video"]["width"].as_u64(), v["video"]["height"].as_u64()), (Some(320), Some(240)), "{v}");
    assert_eq!(v["audio"]["codec"], "mp4a.40.2", "{v}");
    let (_, v) = probe(&nvr, &format!(r#"{{"url":"{}"}}"#, cam.url("h265")));
    assert!(v["video"]["codec"].as_str().is_some_and(|c| c.starts_with("hvc1") || c.starts_with("hev1")), "{v}");

    let wrong = locked.url("h264").replace("rtsp://", "rtsp://admin:wrong-pw@");
    let (status, v) = probe(&nvr, &format!(r#"{{"url":"{wrong}","timeout_ms":5000}}"#));
    assert_eq!((status, &v["ok"]), (200, &serde_json::json!(false)), "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("401")), "{v}");
    assert!(!v.to_string().contains("wrong-pw"), "{v}");
    let right = locked.url("h264").replace("rtsp://", "rtsp://admin:s3cret@");
    let (_, v) = probe(&nvr, &format!(r#"{{"url":"{right}"}}"#));
    assert_eq!(v["ok"], true, "{v}");

    let closed = common::free_port();
    let (_, v) = probe(&nvr, &format!(r#"{{"url":"rtsp://127.0.0.1:{closed}/x"}}"#));
    assert_eq!(v, serde_json::json!({"ok": false, "error": "connection refused"}));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let url = format!("rtsp://127.0.0.1:{}/x", silent.local_addr().expect("addr").port());
    let began = Instant::now();
    let (_, v) = probe(&nvr, &format!(r#"{{"url":"{url}","timeout_ms":500}}"#));
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("timeout")), "{v}");
    assert!(began.elapsed() < Duration::from_millis(2000), "the probe took {:?}", began.elapsed());

    let (status, v) = probe(&nvr, r#"{"url":"http://admin:pw@cam/x"}"#);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("url") && !e.contains("pw@")), "{v}");
    let (status, _) = probe(&nvr, "{not json");
    assert_eq!(status, 400);
    assert!(!nvr.log().contains("s3cret") && !nvr.log().contains("wrong-pw"), "a password reached the log");
}

#[test]
fn stopping_the_recorder_tells_live_viewers_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264"), "", "", 1000));
    wait_streaming(&nvr);
    let mut c = Client::connect(&nvr, "cam");
    c.init();
    let stopper = std::thread::spawn(move || nvr.terminate(Duration::from_secs(15)));
    let ended = loop {
        match c.next() {
            Message::Binary(_) => {}
            Message::Text(t) => break t,
            other => panic!("expected the reason before the end, got {}", describe(&other)),
        }
    };
    assert!(ended.contains("the recorder is stopping"), "{ended}");
    assert!(matches!(c.next(), Message::Close(Some((1001, _)))), "close code 1001 (going away)");
    let (status, _) = stopper.join().expect("stopper");
    assert!(status.success(), "{status:?}");
}
