//! A fault-injecting TCP proxy between a real camera (scripts/test-camera) and
//! the recorder, for RTSP with interleaved (TCP) transport: it forwards RTSP
//! text as it is and parses the server's `$ channel length` frames, so a test
//! can make the camera go away (connection refused), go silent with the
//! connection open, corrupt RTP, or step its RTP clock, while the camera
//! behind it keeps running.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the camera's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    Pass,
    /// Forwards nothing from the camera (the connection stays open).
    Silent,
    /// Corrupts RTP packets: random payload bytes, and every 7th packet a
    /// random header too.
    Garbage,
}

struct Shared {
    fault: Mutex<Fault>,
    /// Added to every RTP timestamp of even (RTP, not RTCP) channels.
    ts_offset: AtomicU32,
    /// Accepting connections (else the port refuses them).
    up: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// The proxy: listens on `port`, forwards to the camera on `upstream`.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            ts_offset: AtomicU32::new(0),
            up: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || accept_loop(Some(listener), port, upstream, s));
        FaultProxy { port, shared, thread: Some(thread) }
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    pub fn set_fault(&self, f: Fault) {
        *self.shared.fault.lock().expect("fault") = f;
    }

    /// Steps the RTP clock of every connection by `ticks` (wrapping, as RTP does).
    pub fn step_timestamps(&self, ticks: i32) {
        let _ = self
            .shared
            .ts_offset
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| Some(o.wrapping_add(ticks as u32)));
    }

    /// The camera goes away: open connections are cut and the port refuses new ones.
    pub fn down(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        for c in self.shared.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // The accept loop closes its listener within its poll interval.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// The camera is back: the port accepts again (returns once it does).
    pub fn up(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the proxy did not listen again");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.down();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(mut listener: Option<TcpListener>, port: u16, upstream: u16, s: Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        let up = s.up.load(Ordering::SeqCst);
        match (&listener, up) {
            (Some(_), false) => listener = None,
            (None, true) => {
                listener = TcpListener::bind(("127.0.0.1", port)).ok();
                if let Some(l) = &listener {
                    let _ = l.set_nonblocking(true);
                }
            }
            _ => {}
        }
        if let Some(l) = &listener {
            let _ = l.set_nonblocking(true);
            if let Ok((client, _)) = l.accept() {
                let _ = client.set_nonblocking(false);
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                    start_pair(client, server, &s);
                }
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_pair(client: TcpStream, server: TcpStream, s: &Arc<Shared>) {
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
        (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    s.conns.lock().expect("conns").extend([c3, s3]);
    std::thread::spawn(move || copy_raw(c2, s2));
    let sh = s.clone();
    std::thread::spawn(move || copy_camera(server, client, sh));
}

/// Client to camera: RTSP requests (and RTCP), unchanged.
fn copy_raw(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Camera to client: RTSP answers as they are, interleaved frames through the fault.
fn copy_camera(mut from: TcpStream, mut to: TcpStream, s: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(from.local_addr().map(|a| a.port()).unwrap_or(1));
    let mut packets = 0u64;
    'outer: while let Ok(n) = from.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = message_len(&buf) {
            let mut msg: Vec<u8> = buf.drain(..len).collect();
            let fault = *s.fault.lock().expect("fault");
            if msg[0] == b'$' {
                if fault == Fault::Silent {
                    continue;
                }
                if msg[1] % 2 == 0 && msg.len() >= 16 {
                    packets += 1;
                    rewrite_rtp(&mut msg[4..], fault, s.ts_offset.load(Ordering::SeqCst), &mut rng, packets);
                }
            } else if fault == Fault::Silent {
                continue;
            }
            if to.write_all(&msg).is_err() {
                break 'outer;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Length of the first complete message in `buf` (an interleaved frame or an RTSP answer).
fn message_len(buf: &[u8]) -> Option<usize> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == b'$' {
        let n = usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]));
        return (buf.len() >= 4 + n).then_some(4 + n);
    }
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]);
    let body = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

fn next_rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Steps the RTP timestamp, and corrupts the packet if asked.
fn rewrite_rtp(p: &mut [u8], fault: Fault, offset: u32, rng: &mut u64, n: u64) {
    let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(offset);
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    if fault != Fault::Garbage {
        return;
    }
    let from = if n % 7 == 0 { 0 } else { 12 };
    for b in &mut p[from..] {
        if next_rand(rng) % 4 == 0 {
            *b = next_rand(rng) as u8;
        }
    }
}
