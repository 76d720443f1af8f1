//! No client can hold the server: the real binary and test camera, and hostile
//! clients on other loopback addresses (127.0.0.10-13: downloads never read;
//! 127.0.0.3: heads sent one byte a second) while a good client on 127.0.0.1
//! uses the API. Latencies are printed, not asserted beyond a generous bound
//! (scripts/bench-slow-clients measures them).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nvr::{http, Oxinvr, Response};
use common::Camera;
use nix::sys::socket::{bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

const IO_TIMEOUT_S: u64 = 8;
const HEAD_TIMEOUT_S: u64 = 10;
const HOSTILE: usize = 64;
const SENDERS: usize = 16;
/// Generous: an answer slower than this means a client held the server.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn config(url: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         io_timeout_seconds = {IO_TIMEOUT_S}\nhead_timeout_seconds = {HEAD_TIMEOUT_S}\n\
         [[streams]]\nname = \"cam\"\nurl = \"{url}\"\nbitrate_kbps = 8000\n"
    )
}

/// A connection to the recorder from `from` (any 127.x address is loopback);
/// `rcvbuf` shrinks the receive window so a client that does not read stalls
/// the sender soon.
fn connect_from(from: Ipv4Addr, port: u16, rcvbuf: Option<usize>) -> TcpStream {
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).expect("socket");
    if let Some(n) = rcvbuf {
        setsockopt(&fd, sockopt::RcvBuf, &n).expect("SO_RCVBUF");
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(from, 0))).expect("bind");
    let to = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &to).expect("connect");
    TcpStream::from(fd)
}

/// Reads one answer's head (and what came with it) from a kept-alive socket.
fn read_head(s: &mut TcpStream, limit: Duration) -> std::io::Result<String> {
    s.set_read_timeout(Some(limit))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn get(nvr: &Oxinvr, path: &str, auth: bool) -> (std::io::Result<Response>, Duration) {
    let began = Instant::now();
    let r = if auth { nvr.get(path) } else { http(nvr.port, "GET", path, &[], b"") };
    (r, began.elapsed())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `n` good calls (health, then an authenticated one, in turn): each must
/// answer 200 within `ANSWER_BOUND`; returns their latencies.
fn good_calls(nvr: &Oxinvr, n: usize, what: &str) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let path = if i % 2 == 0 { "/api/health" } else { "/api/streams/cam" };
            let (r, took) = get(nvr, path, i % 2 == 1);
            let status = r.as_ref().map(|r| r.status).unwrap_or(0);
            assert_eq!(status, 200, "{what}: GET {path}: {:?}", r.map(|r| r.text()));
            assert!(took < ANSWER_BOUND, "{what}: GET {path} took {took:?}");
            took
        })
        .collect()
}

/// Sends `head` one byte a second to each socket until `stop`.
fn trickle(mut socks: Vec<TcpStream>, head: Vec<u8>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for b in head.iter().cycle() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            for s in &mut socks {
                let _ = s.write_all(&[*b]);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn no_client_can_hold_the_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Snow does not compress: ~1 MB/s, so an export of a few seconds outgrows the socket buffers.
    let cam = Camera::start(&["--fps", "15", "--pattern", "snow", "--bitrate", "8000"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam.url("h264")));
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), "cam records", |v| {
        v["status"]["frames"].as_u64().unwrap_or(0) > 0
    });
    let t0 = now_ms();
    std::thread::sleep(Duration::from_secs(7));
    let export = format!("/api/export.mp4?stream=cam&start={t0}&end={}", t0 + 6_000);
    let mut calm = good_calls(&nvr, 20, "no hostile clients");

    // 64 clients ask for the export and never read; 64 send a head one byte a second.
    let (k, v) = nvr.auth_header();
    let ask = format!("GET {export} HTTP/1.1\r\nHost: 127.0.0.1\r\n{k}: {v}\r\n\r\n");
    // From 4 addresses: one address may hold only a quarter of the senders.
    let bad_reader = |i: usize| Ipv4Addr::new(127, 0, 0, 10 + (i % 4) as u8);
    let mut stalled: Vec<TcpStream> = (0..HOSTILE)
        .map(|i| {
            let mut s = connect_from(bad_reader(i), nvr.port, Some(4096));
            s.write_all(ask.as_bytes()).expect("send the request");
            s
        })
        .collect();
    let trickled = Instant::now();
    let slow_heads: Vec<TcpStream> =
        (0..HOSTILE).map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 3), nvr.port, None)).collect();
    let mut probe_head = slow_heads[0].try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let head = format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(64));
    let trickler = trickle(slow_heads, head.into_bytes(), stop.clone());

    // A 65th connection from one address is refused by the accept thread.
    let mut extra = connect_from(Ipv4Addr::new(127, 0, 0, 3), nvr.port, None);
    extra.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let refused = read_head(&mut extra, Duration::from_secs(5)).expect("the 65th connection is answered");
    assert!(refused.starts_with("HTTP/1.1 503"), "65th connection from one address: {refused}");
    assert!(refused.contains("\"error\":"), "{refused}");

    // Every sender holds a client that does not read: one more download gets 503 + Retry-After.
    let busy = |nvr: &Oxinvr| nvr.json("/api/system")["senders_busy"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while busy(&nvr) < SENDERS as u64 {
        if Instant::now() > deadline {
            let log = nvr.log();
            let tail: Vec<&str> =
                log.lines().filter(|l| l.contains("export") || l.contains("send-")).take(20).collect();
            panic!("the senders never all got busy: {}\n{}", busy(&nvr), tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stalled_at = Instant::now();
    let r = nvr.get(&export).expect("download while the senders are busy");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some_and(|s| s.parse::<u32>().is_ok()), "{:?}", r.headers);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("web.max_senders")), "{}", r.text());
    // An address that holds its share is told so.
    let mut more = connect_from(bad_reader(0), nvr.port, None);
    more.write_all(ask.as_bytes()).expect("send");
    let got = read_head(&mut more, Duration::from_secs(5)).unwrap_or_else(|e| format!("{e}"));
    assert!(got.starts_with("HTTP/1.1 503") && got.contains("your address"), "{got}");

    // While all of them are connected, health and the API answer.
    let mut hostile = good_calls(&nvr, 20, "with 128 hostile clients");
    assert!(trickled.elapsed() < Duration::from_secs(HEAD_TIMEOUT_S), "measured after the heads' deadline");
    let (calm_ms, hostile_ms) = (median(&mut calm), median(&mut hostile));
    println!("API latency median: {calm_ms:?} alone, {hostile_ms:?} with {HOSTILE} stalled downloads and {HOSTILE} slow heads");

    // A slow head gets 408 within its deadline.
    let answer = read_head(&mut probe_head, Duration::from_secs(HEAD_TIMEOUT_S + 5)).unwrap_or_else(|e| format!("{e}"));
    let took = trickled.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(answer.starts_with("HTTP/1.1 408"), "a head sent one byte a second: {answer:?}");
    assert!(took < Duration::from_secs(HEAD_TIMEOUT_S + 3), "408 after {took:?}");
    println!("slow head: 408 after {took:?} (head_timeout_seconds = {HEAD_TIMEOUT_S})");

    // The senders are freed within the write timeout, and their clients disconnected.
    let bound = Duration::from_secs(IO_TIMEOUT_S + 5);
    while busy(&nvr) > 0 {
        if stalled_at.elapsed() > bound {
            let log = nvr.log();
            let tail: Vec<&str> = log.lines().filter(|l| l.contains("send-")).take(30).collect();
            panic!("senders still busy after {:?}: {}\n{}", stalled_at.elapsed(), busy(&nvr), tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("senders freed {:?} after all were busy (io_timeout_seconds = {IO_TIMEOUT_S})", stalled_at.elapsed());
    let (mut cut, mut drained) = (0, Duration::ZERO);
    for s in &mut stalled {
        // Those refused with 503 are kept alive; those that got a sender were cut off.
        let head = read_head(s, Duration::from_secs(2)).unwrap_or_default();
        if !head.starts_with("HTTP/1.1 200") {
            continue;
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        // What the kernel had queued still arrives, then the end (or a reset).
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let t = Instant::now();
        let mut rest = Vec::new();
        let ended = match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        drained += t.elapsed();
        assert!(ended, "a client that stopped reading is still connected");
        assert!(head.len() + rest.len() < len, "the whole answer ({len} bytes) reached a client that did not read");
        cut += 1;
    }
    println!("{cut} stalled downloads were cut off (their queued bytes drained in {drained:?})");
    assert!(cut >= SENDERS, "{cut} downloads were cut, {SENDERS} expected");

    // A later download gets a sender and the whole file.
    let r = nvr.get(&export).expect("download after the stalled clients");
    assert_eq!(r.status, 200, "{}", r.text());
    let len: usize = r.header("Content-Length").and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(len > 1 << 20 && r.body.len() == len, "{} of {len} bytes", r.body.len());
    let _ = trickler.join();
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success(), "{st}");
    drop(cam);
}

/// Reads until the peer closes (or `limit`): whether it closed, and what came.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (bool, String) {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    let closed = match s.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (closed, String::from_utf8_lossy(&got).into_owned())
}

/// Bodies sent a byte a second, bodies declared too large and requests
/// pipelined without reading hold none of the `http-N` workers (4 here).
#[test]
fn trickled_bodies_and_pipelines_hold_no_worker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(
        tmp.path(),
        &format!(
            "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\nthreads = 4\n\
             io_timeout_seconds = {IO_TIMEOUT_S}\nhead_timeout_seconds = {HEAD_TIMEOUT_S}\n\
             [[streams]]\nname = \"cam\"\nurl = \"rtsp://127.0.0.1:9/off\"\nenabled = false\n"
        ),
    );
    let mut calm = good_calls(&nvr, 10, "no hostile clients");
    let from = Ipv4Addr::new(127, 0, 0, 4);

    // 16 logins whose 4,000-byte body comes a byte a second (the head at once).
    let login = "POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: 4000\r\n\r\n{\"user\":\"";
    let trickled: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = connect_from(from, nvr.port, None);
            s.write_all(login.as_bytes()).expect("send the head");
            s
        })
        .collect();
    let mut probe = trickled[0].try_clone().expect("clone");
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = trickle(trickled, b"a".to_vec(), stop.clone());

    // 8 uploads declaring 10 MB to a JSON route: 413 at once, then the connection
    // ends (the body is not drained from a client that may never send it).
    let mut big: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect_from(from, nvr.port, None);
            let head = "POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                        Content-Length: 10000000\r\n\r\n{";
            s.write_all(head.as_bytes()).expect("send");
            s
        })
        .collect();

    // 6 clients pipeline 3,000 requests each and read nothing: once their
    // buffers are full, an answer written to them would block its writer.
    let burst = "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(3000);
    let pipeliners: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = connect_from(from, nvr.port, Some(4096));
            s.set_write_timeout(Some(Duration::from_secs(1))).expect("timeout");
            let _ = s.write_all(burst.as_bytes()); // blocks once the buffers are full
            s
        })
        .collect();

    let mut hostile = good_calls(&nvr, 20, "with trickled bodies and pipeliners");
    assert!(began.elapsed() < Duration::from_secs(HEAD_TIMEOUT_S), "measured after the bodies' deadline");
    println!(
        "API latency median: {:?} alone, {:?} with 16 trickled bodies, 8 oversized bodies and 6 pipeliners",
        median(&mut calm),
        median(&mut hostile)
    );
    for s in &mut big {
        let (closed, got) = read_until_closed(s, Duration::from_secs(5));
        assert!(got.starts_with("HTTP/1.1 413"), "a declared 10 MB body: {got:?}");
        assert!(closed, "the connection of a refused, unread body stays open");
    }

    // A trickled body gets 408 when its head's deadline passes.
    let answer = read_head(&mut probe, Duration::from_secs(HEAD_TIMEOUT_S + 5)).unwrap_or_else(|e| format!("{e}"));
    stop.store(true, Ordering::SeqCst);
    assert!(answer.starts_with("HTTP/1.1 408"), "a body sent one byte a second: {answer:?}");
    println!("trickled body: 408 after {:?} (head_timeout_seconds = {HEAD_TIMEOUT_S})", began.elapsed());
    let _ = trickler.join();

    // A client that sends `Expect: 100-continue` is told to go on and answered.
    let mut s = connect_from(Ipv4Addr::LOCALHOST, nvr.port, None);
    let body = format!("{{\"username\":\"nobody\",\"password\":\"{}\"}}", "x".repeat(2000));
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send the head");
    let cont = read_head(&mut s, Duration::from_secs(5)).expect("100 Continue");
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont:?}");
    s.write_all(body.as_bytes()).expect("send the body");
    let answer = read_head(&mut s, Duration::from_secs(5)).expect("the answer");
    assert!(answer.starts_with("HTTP/1.1 401"), "a wrong login after 100-continue: {answer:?}");

    drop(pipeliners);
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success(), "{st}");
}
