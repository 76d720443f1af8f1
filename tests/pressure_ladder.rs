//! The pressure ladder with the real binary, the GStreamer test camera and a
//! real swapfile. Memory pressure cannot be made for real on a 24 GB test
//! machine without starving the others, so the kernel's two files are
//! replaced (test-only `OXINVR_PROC_ROOT`, read for `pressure/memory` and
//! `meminfo` only) and this test rewrites them. The ladder climbs step by
//! step: a live viewer is let go and a new one refused (503), swap goes on
//! (`/proc/swaps` lists the file), the low-priority stream is stopped with
//! the reason while the high-priority one keeps recording every frame; then
//! calm brings everything back in reverse, to step 0.
//!
//! Prints the time from the pressure to each step (the figure).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nvr::{poll, Oxinvr};
use common::Camera;
use oxinvr::web::websocket::{FrameReader, Message};
use serde_json::Value;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn write_proc(root: &Path, some: f32, full: f32) {
    std::fs::create_dir_all(root.join("pressure")).expect("mkdir pressure");
    let psi = format!(
        "some avg10={some:.2} avg60=0.00 avg300=0.00 total=1\nfull avg10={full:.2} avg60=0.00 avg300=0.00 total=1\n"
    );
    // Whole-file replacement, so the recorder never reads half a file.
    let tmp = root.join("pressure/memory.new");
    std::fs::write(&tmp, psi).expect("write psi");
    std::fs::rename(&tmp, root.join("pressure/memory")).expect("rename psi");
    std::fs::write(root.join("meminfo"), "MemTotal: 262144 kB\nMemFree: 1000 kB\nMemAvailable: 131072 kB\n")
        .expect("write meminfo");
}

fn pressure(nvr: &Oxinvr) -> Value {
    nvr.json("/api/system")["memory"]["pressure"].clone()
}

fn stream_status(nvr: &Oxinvr, name: &str) -> Value {
    nvr.json(&format!("/api/streams/{name}"))["status"].clone()
}

/// Asks for live view; the status and, for a 101, the socket and what followed the head.
fn live(nvr: &Oxinvr, stream: &str) -> (u16, TcpStream, Vec<u8>) {
    let mut sock = TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (k, v) = nvr.auth_header();
    let req = format!(
        "GET /api/streams/{stream}/live HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{k}: {v}\r\n\r\n",
        nvr.port
    );
    sock.write_all(req.as_bytes()).expect("handshake");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = sock.read(&mut buf).expect("read head");
        assert!(n > 0, "closed before the head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, sock, raw[end..].to_vec())
}

/// Reads live messages until a text one that is not `init`; returns it.
fn reason_for_end(sock: &mut TcpStream, rest: &[u8]) -> String {
    let mut reader = FrameReader::client(64 << 20);
    reader.push(rest);
    loop {
        match reader.read_message(sock).expect("live message") {
            Message::Text(t) if !t.contains("\"init\"") => return t,
            Message::Close(c) => panic!("closed without a reason: {c:?}"),
            _ => {}
        }
    }
}

fn swap_listed(file: &Path) -> bool {
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    swaps.lines().any(|l| l.split_whitespace().next() == Some(file.to_str().unwrap_or("?")))
}

#[test]
fn pressure_climbs_the_ladder_step_by_step_and_calm_brings_everything_back() {
    let as_root = is_root();
    let cam = Camera::start(&["--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let proc_root = tmp.path().join("proc");
    write_proc(&proc_root, 0.0, 0.0);
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 4\nsync_seconds = 1\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [memory]\nclimb_seconds = 2\ncalm_seconds = 3\nswap_file_mb = 8\n\
         [[streams]]\nname = \"hi\"\nurl = \"{url}\"\nbitrate_kbps = 1000\npriority = 5\n\
         [[streams]]\nname = \"lo\"\nurl = \"{url}\"\nbitrate_kbps = 1000\npriority = 0\n",
        url = cam.url("h264")
    );
    let root = proc_root.display().to_string();
    let nvr = Oxinvr::start_with_env(tmp.path(), &config, &[("OXINVR_PROC_ROOT", &root)]);
    let swapfile = std::fs::canonicalize(&nvr.data_dir).expect("data dir").join("oxinvr.swap");
    for name in ["hi", "lo"] {
        nvr.wait_for(&format!("/api/streams/{name}"), Duration::from_secs(30), "streaming", |v| {
            v["status"]["state"] == "streaming" && v["status"]["frames"].as_u64().unwrap_or(0) > 15
        });
    }
    let p = pressure(&nvr);
    assert_eq!((p["step"].as_u64(), p["name"].as_str()), (Some(0), Some("normal")), "{p}");
    assert_eq!(p["reading"]["some_avg10"], 0.0, "the test's files are read: {p}");
    if as_root {
        poll(Duration::from_secs(20), "the swapfile written", || {
            std::fs::metadata(&swapfile).map(|m| m.len() == 8 << 20).unwrap_or(false)
        });
    }
    let (status, mut viewer, rest) = live(&nvr, "hi");
    assert_eq!(status, 101, "live view before the pressure");

    // Pressure: every step in turn, each after climb_seconds more of it.
    write_proc(&proc_root, 45.0, 12.0);
    let began = Instant::now();
    let mut reached = [Duration::ZERO; 5];
    for step in 1..=4u64 {
        poll(Duration::from_secs(15), &format!("ladder step {step}"), || pressure(&nvr)["step"].as_u64() >= Some(step));
        reached[step as usize] = began.elapsed();
        let p = pressure(&nvr);
        assert_eq!(p["step"].as_u64(), Some(step), "one step at a time: {p}");
        assert!(p["why"].as_str().is_some_and(|w| w.contains("PSI memory some avg10 45.0 %")), "{p}");
        match step {
            1 => {
                let said = reason_for_end(&mut viewer, &rest);
                assert!(said.contains("memory is short"), "the viewer is told why: {said}");
                let (status, mut sock, mut body) = live(&nvr, "lo");
                if !body.ends_with(b"}") {
                    let _ = sock.read_to_end(&mut body);
                }
                let body = String::from_utf8_lossy(&body);
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("memory is short"), "{body}");
            }
            3 if as_root => assert!(swap_listed(&swapfile), "swap on at step 3: {p}"),
            _ => {}
        }
    }
    let lo_before = stream_status(&nvr, "lo");
    let p = pressure(&nvr);
    assert_eq!(lo_before["state"], "stopped", "{lo_before}");
    assert!(
        lo_before["stopped_for"].as_str().is_some_and(|w| w.starts_with("stopped for memory pressure")),
        "{lo_before}"
    );
    assert_eq!(p["entered"], serde_json::json!([0, 1, 1, 1, 1]), "{p}");
    assert!(nvr.log().contains("memory pressure: step 3 -> 4"), "every step is logged");
    if as_root {
        assert_eq!(p["swap"]["on"], true, "{p}");
    }
    let hi_frames = stream_status(&nvr, "hi")["frames"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    let (hi, lo) = (stream_status(&nvr, "hi"), stream_status(&nvr, "lo"));
    assert!(hi["frames"].as_u64().unwrap_or(0) > hi_frames + 20, "the high-priority stream records on: {hi}");
    assert_eq!(lo["frames"], lo_before["frames"], "the stopped stream takes no frames: {lo}");

    // Calm: down again in reverse, one step per calm_seconds, to 0.
    write_proc(&proc_root, 0.0, 0.0);
    let calm = Instant::now();
    poll(Duration::from_secs(30), "back to step 0", || pressure(&nvr)["step"].as_u64() == Some(0));
    let down = calm.elapsed();
    let p = pressure(&nvr);
    // Steps 1-3 were each entered twice (climbing, descending) and left twice.
    assert_eq!(p["entered"], serde_json::json!([1, 2, 2, 2, 1]), "{p}");
    assert_eq!(p["left"], serde_json::json!([1, 2, 2, 2, 1]), "{p}");
    assert!(!swap_listed(&swapfile), "swap off again");
    nvr.wait_for("/api/streams/lo", Duration::from_secs(30), "lo recording again", |v| {
        v["status"]["state"] == "streaming" && v["status"]["frames"].as_u64() > lo_before["frames"].as_u64()
    });
    let (status101, _sock, _) = live(&nvr, "hi");
    assert_eq!(status101, 101, "live view open again");

    // The high-priority stream never lost a frame nor its session; its files hold what it got.
    let hi = stream_status(&nvr, "hi");
    assert_eq!((hi["connects"].as_u64(), hi["gaps"].as_u64()), (Some(1), Some(0)), "{hi}");
    poll(Duration::from_secs(20), "a closed recording of hi", || !closed(&nvr, "hi").is_empty());
    for r in closed(&nvr, "hi") {
        let path = nvr.data_dir.join(r["path"].as_str().expect("path"));
        assert_eq!(common::frame_count(&path), r["frames"].as_u64().expect("frames"), "{}", path.display());
    }
    let ms = |d: Duration| d.as_millis();
    eprintln!(
        "pressure to step 1: {} ms, 2: {} ms, 3: {} ms, 4: {} ms (climb_seconds 2); calm to step 0: {} ms (calm_seconds 3); \
         the recorder's own: {}",
        ms(reached[1]),
        ms(reached[2]),
        ms(reached[3]),
        ms(reached[4]),
        ms(down),
        p["reached_after_ms"]
    );
    drop(cam);
}

fn closed(nvr: &Oxinvr, stream: &str) -> Vec<Value> {
    let v = nvr.json(&format!("/api/recordings?stream={stream}"));
    let recs = v["recordings"].as_array().cloned().unwrap_or_default();
    recs.into_iter().filter(|r| r["closed"] == true).collect()
}

/// True when running as root (`swapon` needs CAP_SYS_ADMIN).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}
