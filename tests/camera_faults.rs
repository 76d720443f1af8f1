//! Camera faults as a user meets them (issue 10, part 5): a camera that flaps,
//! one that goes silent mid-stream, garbage RTP, a resolution change (new
//! SPS), RTP timestamp steps, and a hundred streams at an address that never
//! answers. Real parts: GStreamer test cameras, a fault-injecting TCP proxy
//! (`common::proxy`) in front of a real camera, the release binary, ffprobe.
//! In each, a steady stream recording next to the faulty one never stalls,
//! RSS and open file descriptors stay bounded, and every file plays.
//! (A camera that accepts TCP and never answers RTSP: `tests/streams.rs`.)
//! The long flapping run is `scripts/fault-cameras`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::proxy::{Fault, FaultProxy};
use common::{ffprobe_json, frame_count, Camera};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn stream_toml(name: &str, url: &str, priority: i32, kbps: u32) -> String {
    format!("[[streams]]\nname = \"{name}\"\nurl = \"{url}\"\nbitrate_kbps = {kbps}\npriority = {priority}\n")
}

fn config(streams: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsync_seconds = 1\nsegment_seconds = 10\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n{streams}"
    )
}

fn frames(nvr: &Oxinvr, name: &str) -> u64 {
    nvr.get(&format!("/api/streams/{name}"))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["status"]["frames"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

fn recordings(nvr: &Oxinvr, stream: &str) -> Vec<serde_json::Value> {
    let v = nvr.json(&format!("/api/recordings?stream={stream}&start=0&end={}", now_ms() + 60_000));
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// Watches a running recorder: the steady streams' frame counters (the longest
/// time one did not move), RSS and open descriptors.
struct Watch<'a> {
    nvr: &'a Oxinvr,
    steady: Vec<(String, u64, Instant)>,
    longest_stall: Duration,
    samples: Vec<(u64, usize)>,
}

impl<'a> Watch<'a> {
    fn new(nvr: &'a Oxinvr, steady: &[&str]) -> Self {
        let now = Instant::now();
        let steady = steady.iter().map(|s| (s.to_string(), frames(nvr, s), now)).collect();
        Watch { nvr, steady, longest_stall: Duration::ZERO, samples: Vec::new() }
    }

    fn sample(&mut self) {
        for (name, last, at) in &mut self.steady {
            let f = frames(self.nvr, name);
            if f > *last {
                *last = f;
                *at = Instant::now();
            }
            self.longest_stall = self.longest_stall.max(at.elapsed());
        }
        self.samples.push(self.nvr.rss_kb_and_fds());
    }

    /// Samples every 100 ms for `d`.
    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.sample();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Samples until `f` holds (at most `limit`); returns how long it took.
    fn until(&mut self, limit: Duration, what: &str, mut f: impl FnMut(&Oxinvr) -> bool) -> Duration {
        let began = Instant::now();
        loop {
            if f(self.nvr) {
                return began.elapsed();
            }
            assert!(began.elapsed() < limit, "{what}: not within {limit:?}\n{}", self.nvr.log());
            self.sample();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The steady streams never stalled; RSS and descriptors bounded (after the
    /// first 10 samples, which include start-up): generous, to catch a leak per
    /// reconnect, not to measure.
    fn check(&self, what: &str) {
        self.check_with(what, 0)
    }

    /// `check`, allowing `extra_fds` descriptors more (streams whose connects come and go).
    fn check_with(&self, what: &str, extra_fds: u64) {
        println!("{what}: longest stall of a steady stream {:?}", self.longest_stall);
        assert!(
            self.longest_stall < Duration::from_secs(2),
            "{what}: a steady stream stalled {:?}",
            self.longest_stall
        );
        let settled = &self.samples[self.samples.len().min(10)..];
        let (rss_min, rss_max) = min_max(settled.iter().map(|s| s.0));
        let (fd_min, fd_max) = min_max(settled.iter().map(|s| s.1 as u64));
        println!("{what}: RSS {rss_min}..{rss_max} kB, fds {fd_min}..{fd_max}");
        assert!(rss_max - rss_min < 40 * 1024, "{what}: RSS grew from {rss_min} to {rss_max} kB");
        assert!(fd_max - fd_min < 40 + extra_fds, "{what}: open descriptors went from {fd_min} to {fd_max}");
    }
}

fn min_max(it: impl Iterator<Item = u64>) -> (u64, u64) {
    it.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Every media file the recorder wrote.
fn files(data_dir: &Path) -> Vec<PathBuf> {
    common::mp4_files(&data_dir.join("recordings"))
}

/// Stops the recorder (SIGTERM, clean exit), then ffprobe reads every file and each has frames.
fn every_file_plays(nvr: Oxinvr) -> usize {
    every_file_plays_where(nvr, |_| true)
}

/// `every_file_plays`, where only the `must_decode` names must also decode frames (a
/// file may hold only what a camera garbled). The recorder is stopped first: a file it
/// has just opened holds its init segment only until its first fragment (a GOP) is
/// written, which is not a loss; after a clean stop no file may be without frames.
fn every_file_plays_where(nvr: Oxinvr, must_decode: impl Fn(&Path) -> bool) -> usize {
    let data_dir = nvr.data_dir.clone();
    let (status, _) = nvr.terminate(Duration::from_secs(20));
    assert!(status.success(), "oxinvr exited with {status}");
    let all = files(&data_dir);
    assert!(!all.is_empty(), "no files");
    for f in &all {
        let j = ffprobe_json(f);
        let v = &j["streams"][0];
        assert!(v["width"].as_u64().unwrap_or(0) > 0, "{}: {j}", f.display());
        if must_decode(f) {
            assert!(frame_count(f) > 0, "{}: no frame decodes", f.display());
        }
    }
    all.len()
}

/// One camera, the faulty stream through the proxy and a steady one straight to it.
struct Rig {
    _cam: Camera,
    proxy: FaultProxy,
    nvr: Oxinvr,
    _tmp: tempfile::TempDir,
}

fn rig(cam_args: &[&str]) -> Rig {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(cam_args);
    let proxy = FaultProxy::start(cam.port);
    let streams =
        [stream_toml("faulty", &proxy.url("h264"), 0, 1000), stream_toml("steady", &cam.url("h264"), 0, 1000)].concat();
    let nvr = Oxinvr::start(tmp.path(), &config(&streams));
    for s in ["faulty", "steady"] {
        common::nvr::poll(Duration::from_secs(20), &format!("{s} records"), || frames(&nvr, s) > 15);
    }
    Rig { _cam: cam, proxy, nvr, _tmp: tmp }
}

/// How long after now the faulty stream's frames move again.
fn back_after(w: &mut Watch, limit: Duration) -> Duration {
    let before = frames(w.nvr, "faulty");
    w.until(limit, "the faulty stream records again", |n| frames(n, "faulty") > before)
}

#[test]
fn a_flapping_camera_records_again_within_two_seconds_each_time() {
    let r = rig(&["--fps", "15"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    let mut backs = Vec::new();
    for _ in 0..3 {
        w.run_for(Duration::from_secs(5));
        r.proxy.down();
        w.run_for(Duration::from_secs(5));
        r.proxy.up();
        backs.push(back_after(&mut w, Duration::from_secs(10)));
    }
    println!("flapping: back after {backs:?}");
    for b in &backs {
        assert!(*b < Duration::from_secs(2), "back {b:?} after the camera returned: {backs:?}");
    }
    w.run_for(Duration::from_secs(2));
    w.check("flapping");
    assert!(recordings(&r.nvr, "faulty").len() >= 4, "a new file per session");
    every_file_plays(r.nvr);
}

#[test]
fn a_camera_silent_mid_stream_is_dropped_and_recorded_again() {
    let r = rig(&["--fps", "15"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    r.proxy.set_fault(Fault::Silent);
    let dropped = w.until(Duration::from_secs(15), "the silent session ends", |n| {
        n.json("/api/streams/faulty")["status"]["last_error"].as_str().is_some_and(|e| e.contains("no data for 10 s"))
    });
    r.proxy.set_fault(Fault::Pass);
    // The camera answers again: the next attempt (after a 1 s backoff, or the
    // DESCRIBE deadline of one that went out while it was silent) records.
    let back = back_after(&mut w, Duration::from_secs(15));
    println!("silent camera: dropped after {dropped:?}, back {back:?} after it spoke again");
    w.run_for(Duration::from_secs(2));
    w.check("silent");
    every_file_plays(r.nvr);
}

#[test]
fn garbage_rtp_costs_the_session_not_the_recorder() {
    let r = rig(&["--fps", "15"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    r.proxy.set_fault(Fault::Garbage);
    w.run_for(Duration::from_secs(8));
    r.proxy.set_fault(Fault::Pass);
    let clean_ms = now_ms();
    // A corrupt packet costs its GOP, not the session: clean RTP records at the next keyframe (1 s GOP).
    let back = back_after(&mut w, Duration::from_secs(15));
    let st = r.nvr.json("/api/streams/faulty")["status"].clone();
    println!(
        "garbage RTP: back {back:?} after clean RTP; {} connects, last error {}",
        st["connects"], st["last_error"]
    );
    // Back at all, and within a reconnect (1 s backoff, handshake, a GOP): a loaded
    // 2-core machine took 2.2 s; the figure itself is scripts/fault-cameras' to report.
    assert!(back < Duration::from_secs(8), "back {back:?} after clean RTP");
    w.run_for(Duration::from_secs(3));
    w.check("garbage");
    // What the faulty camera sent while garbled is kept as sent: a file made of
    // corrupt slices only reads but may decode nothing. Every other file decodes.
    let garbled = |f: &Path| {
        let start = f.file_stem().and_then(|s| s.to_str()).and_then(|s| s.split('-').next()?.parse::<i64>().ok());
        f.to_string_lossy().contains("/faulty/") && start.is_some_and(|ms| ms < clean_ms)
    };
    every_file_plays_where(r.nvr, |f| !garbled(f));
}

#[test]
fn a_resolution_change_starts_a_new_file_and_every_file_plays() {
    let r = rig(&["--fps", "15", "--switch-size", "320x240", "--switch-every", "5"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    w.run_for(Duration::from_secs(17));
    w.check("resolution change");
    let recs = recordings(&r.nvr, "faulty");
    let mut sizes: Vec<(u64, u64)> = Vec::new();
    for f in files(&r.nvr.data_dir).iter().filter(|f| f.to_string_lossy().contains("/faulty/")) {
        let j = ffprobe_json(f);
        let sz = (j["streams"][0]["width"].as_u64().unwrap_or(0), j["streams"][0]["height"].as_u64().unwrap_or(0));
        common::decode_ok(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        sizes.push(sz);
    }
    println!("resolution change: {} recordings, file sizes {sizes:?}", recs.len());
    assert!(sizes.contains(&(640, 360)) && sizes.contains(&(320, 240)), "both sizes recorded: {sizes:?}");
    every_file_plays(r.nvr);
}

#[test]
fn rtp_timestamp_steps_start_new_runs_and_no_file_spans_one() {
    let r = rig(&["--fps", "15"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    w.run_for(Duration::from_secs(4));
    r.proxy.step_timestamps(5 * 90_000); // 5 s forward
    w.run_for(Duration::from_secs(4));
    r.proxy.step_timestamps(-20 * 90_000); // 20 s back
    w.run_for(Duration::from_secs(4));
    w.check("timestamp steps");
    let log = r.nvr.log();
    let runs = log.lines().filter(|l| l.contains("stream faulty: new run")).count();
    assert!(runs >= 3, "a new run at each step ({runs}):\n{log}");
    // Each file lasts what its row says (no frame spans a step), rows do not overlap,
    // and none ends in the future.
    let mut recs = recordings(&r.nvr, "faulty");
    recs.sort_by_key(|r| r["start_ms"].as_i64());
    let mut prev_end = 0;
    for rec in &recs {
        let (s, e) = (rec["start_ms"].as_i64().unwrap_or(0), rec["end_ms"].as_i64().unwrap_or(0));
        assert!(s >= prev_end - 100, "recordings overlap: {recs:?}");
        assert!(e <= now_ms() + 1000, "a recording ends in the future: {rec}");
        assert!(e - s < 12_000, "a recording of {} ms in 4 s steps: {rec}", e - s);
        prev_end = e;
    }
    for f in files(&r.nvr.data_dir).iter().filter(|f| f.to_string_lossy().contains("/faulty/")) {
        let d = common::media_duration(f);
        assert!(d < 11.0, "{}: {d} s", f.display());
    }
    every_file_plays(r.nvr);
}

/// A listening socket whose accept queue is full, so further SYNs are dropped:
/// a connect to it hangs until the client gives up (an address that never answers).
fn black_hole() -> (std::os::fd::OwnedFd, Vec<std::net::TcpStream>, u16) {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).expect("socket");
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind");
    listen(&fd, Backlog::new(0).expect("backlog")).expect("listen");
    let addr: SockaddrIn = nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("addr");
    let port = addr.port();
    let mut fill = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)) {
            Ok(s) => fill.push(s),
            Err(_) => return (fd, fill, port), // the queue is full: SYNs are dropped
        }
    }
    panic!("the accept queue of a backlog-0 listener did not fill");
}

#[test]
fn a_hundred_streams_that_never_answer_do_not_slow_two_working_ones() {
    let (_hole, _fill, dead_port) = black_hole();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let proxy = FaultProxy::start(cam.port);
    // The dead ones first and at a higher priority: before the fix each held the
    // bring-up turn for 3 s per try.
    let mut streams: String = (0..100)
        .map(|i| stream_toml(&format!("dead{i}"), &format!("rtsp://127.0.0.1:{dead_port}/s"), 5, 256))
        .collect();
    streams += &stream_toml("faulty", &proxy.url("h264"), 0, 1000);
    streams += &stream_toml("steady", &cam.url("h264"), 0, 1000);
    let began = Instant::now();
    let nvr = Oxinvr::start(tmp.path(), &config(&streams));
    for s in ["faulty", "steady"] {
        common::nvr::poll(Duration::from_secs(20), &format!("{s} records"), || frames(&nvr, s) > 0);
    }
    let first = began.elapsed();
    println!("100 dead streams: the working ones record {first:?} after start");
    assert!(first < Duration::from_secs(8), "the working streams waited {first:?}");
    let mut w = Watch::new(&nvr, &["steady"]);
    w.run_for(Duration::from_secs(8)); // the dead ones time out (5 s) and retry
    let st = nvr.json("/api/streams/dead0")["status"].clone();
    assert!(st["last_error"].as_str().is_some_and(|e| e.contains("TCP connect got no answer")), "{st}");
    let mut backs = Vec::new();
    for _ in 0..2 {
        proxy.down();
        w.run_for(Duration::from_secs(3));
        proxy.up();
        backs.push(back_after(&mut w, Duration::from_secs(10)));
    }
    println!("100 dead streams: the flapping one back after {backs:?}");
    assert!(backs.iter().all(|b| *b < Duration::from_secs(2)), "{backs:?}");
    w.run_for(Duration::from_secs(2));
    // Each dead stream holds one socket while its connect waits (5 s), then none
    // in its backoff: bounded by the stream count, not growing.
    w.check_with("100 dead streams", 100);
    every_file_plays(nvr);
}

/// The long version (`scripts/fault-cameras`, not in CI): flapping 5 s gone /
/// 5 s back for `OXINVR_FLAP_SECONDS` (default 600), figures on stdout.
#[test]
#[ignore]
fn flapping_for_a_long_time() {
    let secs: u64 = std::env::var("OXINVR_FLAP_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let r = rig(&["--fps", "15"]);
    let mut w = Watch::new(&r.nvr, &["steady"]);
    w.run_for(Duration::from_secs(5));
    let first = r.nvr.rss_kb_and_fds();
    let mut backs = Vec::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(secs) {
        r.proxy.down();
        w.run_for(Duration::from_secs(5));
        r.proxy.up();
        let b = back_after(&mut w, Duration::from_secs(10));
        backs.push(b);
        w.run_for(Duration::from_secs(5).saturating_sub(b));
    }
    let last = r.nvr.rss_kb_and_fds();
    let mut ms: Vec<u128> = backs.iter().map(|b| b.as_millis()).collect();
    ms.sort();
    let stall = w.longest_stall;
    w.check("long flapping");
    let n = every_file_plays(r.nvr);
    println!(
        "FIGURES cycles={} back_median_ms={} back_max_ms={} steady_longest_stall_ms={} rss_kb={}->{} fds={}->{} files={n}",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        stall.as_millis(),
        first.0,
        last.0,
        first.1,
        last.1
    );
    assert!(ms[ms.len() - 1] < 2000, "back after {ms:?} ms");
}
