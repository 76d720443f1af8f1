//! Ingest's logic in simulated time against scripted cameras: bring-up order,
//! deadlines, reconnect timing, keyframe wait, stalls and run boundaries. The
//! executor runs until it is idle, then the clock jumps to the next timer, so
//! a minute of camera life takes milliseconds and every run is the same.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::base::clock::SimulatedClock;
use crate::index::db::{StreamRow, StreamSpec};
use crate::recording::media::RunStart;
use crate::recording::ring::{ReadResult, Ring};

const FPS: i64 = 10;
const GOP: i64 = 10;
const T0: i64 = 1_795_000_000_000;

/// What a scripted camera does when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plays frames at `FPS`, a keyframe every `GOP`.
    Up,
    /// Refuses the connection.
    Down,
    /// Accepts and never answers.
    Hang,
    /// Never accepts TCP (SYNs dropped): `reachable` never returns.
    NoAnswer,
    /// Answers RTSP with 404.
    NotFound,
    /// Plays, but never a keyframe.
    NoKeyframes,
    /// Plays a few frames, then goes silent with the connection open.
    Stalls,
    /// Plays a few frames, then the source panics (a bug met on camera input).
    Panics,
}

struct Camera {
    mode: Mode,
    /// How much faster than real time the camera's clock runs (parts per million).
    ppm: i64,
    /// Bumped whenever the mode changes, so a playing session notices.
    epoch: u32,
    /// Added to every pts from now on (a camera whose clock steps).
    offset: i64,
    /// How long its RTSP handshake takes.
    handshake: Duration,
}

/// Every camera by URL, and the log of `open` calls (URL, monotonic ms).
#[derive(Clone)]
struct Cameras {
    clock: Arc<SimulatedClock>,
    cams: Rc<RefCell<HashMap<String, Camera>>>,
    opens: Rc<RefCell<Vec<(String, u128)>>>,
    /// TCP reachability checks (URL), one per connect attempt.
    dials: Rc<RefCell<Vec<String>>>,
}

impl Cameras {
    fn new(clock: Arc<SimulatedClock>) -> Self {
        Cameras { clock, cams: Rc::default(), opens: Rc::default(), dials: Rc::default() }
    }
    fn set(&self, url: &str, mode: Mode) {
        let mut cams = self.cams.borrow_mut();
        let cam = cams.entry(url.to_string()).or_insert(Camera {
            mode,
            ppm: 0,
            epoch: 0,
            offset: 0,
            handshake: Duration::ZERO,
        });
        cam.mode = mode;
        cam.epoch += 1;
    }
    fn set_ppm(&self, url: &str, ppm: i64) {
        if let Some(c) = self.cams.borrow_mut().get_mut(url) {
            c.ppm = ppm;
        }
    }
    fn set_handshake(&self, url: &str, d: Duration) {
        if let Some(c) = self.cams.borrow_mut().get_mut(url) {
            c.handshake = d;
        }
    }
    fn ppm(&self, url: &str) -> i64 {
        self.cams.borrow().get(url).map_or(0, |c| c.ppm)
    }
    fn step_pts(&self, url: &str, ticks: i64) {
        if let Some(c) = self.cams.borrow_mut().get_mut(url) {
            c.offset += ticks;
        }
    }
    fn offset(&self, url: &str) -> i64 {
        self.cams.borrow().get(url).map_or(0, |c| c.offset)
    }
    fn mode(&self, url: &str) -> (Mode, u32) {
        self.cams.borrow().get(url).map_or((Mode::Down, 0), |c| (c.mode, c.epoch))
    }
    fn opens_of(&self, url: &str) -> Vec<u128> {
        self.opens.borrow().iter().filter(|(u, _)| u == url).map(|(_, t)| *t).collect()
    }
}

impl Opener for Cameras {
    type Source = Scripted;
    async fn open(&self, url: &str) -> Result<Scripted, OpenError> {
        self.opens.borrow_mut().push((url.to_string(), self.clock.mono().as_millis()));
        let handshake = self.cams.borrow().get(url).map_or(Duration::ZERO, |c| c.handshake);
        if !handshake.is_zero() {
            self.clock.sleep(handshake).await;
        }
        let (mode, epoch) = self.mode(url);
        match mode {
            Mode::Down => Err(OpenError::Unreachable("connection refused".into())),
            Mode::Hang | Mode::NoAnswer => std::future::pending().await,
            Mode::NotFound => Err(OpenError::Status { step: "DESCRIBE", code: 404, message: "Not Found".into() }),
            _ => Ok(Scripted { cams: self.clone(), url: url.to_string(), epoch, n: 0 }),
        }
    }
    async fn reachable(&self, url: &str) -> Result<(), OpenError> {
        self.dials.borrow_mut().push(url.to_string());
        match self.mode(url).0 {
            Mode::Down => Err(OpenError::Unreachable("connection refused".into())),
            Mode::NoAnswer => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

struct Scripted {
    cams: Cameras,
    url: String,
    epoch: u32,
    n: i64,
}

/// A real avc1 sample entry, so the storage thread can write files of these runs.
fn video() -> VideoParams {
    crate::recording::mp4::tests::run_start(false, 0).video
}

impl Source for Scripted {
    fn video_params(&self) -> Option<VideoParams> {
        Some(video())
    }
    fn audio_params(&self) -> Option<AudioParams> {
        None
    }
    async fn next(&mut self) -> Option<Result<MediaFrame, String>> {
        self.cams.clock.sleep(Duration::from_millis(1000 / FPS as u64)).await;
        let (mode, epoch) = self.cams.mode(&self.url);
        if epoch != self.epoch && mode != Mode::Up {
            return Some(Err("RTSP error: connection reset".into()));
        }
        if mode == Mode::Stalls && self.n >= 5 {
            return std::future::pending().await;
        }
        if mode == Mode::Panics && self.n >= 15 {
            panic!("push with data already pending");
        }
        let n = self.n;
        self.n += 1;
        let key = mode != Mode::NoKeyframes && n % GOP == 0;
        let data = vec![0u8; 100];
        let pts = n * 90_000 / FPS * (1_000_000 + self.cams.ppm(&self.url)) / 1_000_000 + self.cams.offset(&self.url);
        Some(Ok(MediaFrame { track: Track::Video, key, pts, data, new_params: n == 0 }))
    }
}

struct Harness {
    clock: Arc<SimulatedClock>,
    cams: Cameras,
    ingest: Rc<Ingest<Cameras>>,
    ex: LocalExecutor<'static>,
    tasks: Vec<smol::Task<()>>,
    /// A cursor at the start of each stream's ring.
    starts: RefCell<HashMap<String, crate::recording::ring::Cursor>>,
}

impl Harness {
    fn new() -> Self {
        Self::with_clock(SimulatedClock::new(T0))
    }

    fn with_clock(clock: SimulatedClock) -> Self {
        let clock = Arc::new(clock);
        let cams = Cameras::new(clock.clone());
        let ingest = Ingest::new(cams.clone(), clock.clone());
        Harness { clock, cams, ingest, ex: LocalExecutor::new(), tasks: Vec::new(), starts: RefCell::default() }
    }

    /// Starts a stream whose camera is at `url` (streams start in call order).
    fn stream(&mut self, name: &str, url: &str, mode: Mode) -> Arc<StreamRuntime> {
        self.stream_with_priority(name, url, mode, 0)
    }

    fn stream_with_priority(&mut self, name: &str, url: &str, mode: Mode, priority: i32) -> Arc<StreamRuntime> {
        self.cams.set(url, mode);
        let spec = StreamSpec { priority, ..StreamSpec::new(name, url) };
        let row = StreamRow { id: 1, spec, created_ms: T0, updated_ms: T0 };
        let ring = Ring::new(name, 1 << 20, None).expect("ring");
        self.starts.borrow_mut().insert(name.to_string(), ring.cursor_at_end());
        let rt = Arc::new(StreamRuntime::new(row, Arc::new(ring)));
        self.tasks.push(self.ex.spawn(self.ingest.clone().run_stream(rt.clone())));
        rt
    }

    /// Runs every task until idle, jumping the clock from timer to timer, for `d`.
    fn run_for(&self, d: Duration) {
        let end = self.clock.mono() + d;
        loop {
            while self.ex.try_tick() {}
            let now = self.clock.mono();
            match self.clock.next_wake() {
                Some(t) if t <= end => self.clock.advance(t.saturating_sub(now)),
                _ => {
                    self.clock.advance(end.saturating_sub(now));
                    while self.ex.try_tick() {}
                    return;
                }
            }
        }
    }

    /// Runs until `f` holds (checked after every timer), at most `limit`;
    /// returns the monotonic time it first held.
    fn run_until(&self, limit: Duration, f: impl Fn() -> bool) -> Option<Duration> {
        let end = self.clock.mono() + limit;
        loop {
            while self.ex.try_tick() {}
            if f() {
                return Some(self.clock.mono());
            }
            let now = self.clock.mono();
            match self.clock.next_wake() {
                Some(t) if t <= end => self.clock.advance(t.saturating_sub(now)),
                _ => return None,
            }
        }
    }
}

fn frames(rt: &StreamRuntime) -> u64 {
    rt.status().frames
}

/// Runs and frames in a ring since it was made: ("run", anchor wall ms) or ("key"/"frame", pts).
fn ring_records(h: &Harness, rt: &StreamRuntime) -> Vec<(&'static str, i64)> {
    let mut cursor = h.starts.borrow()[rt.name()];
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match rt.ring.read(&mut cursor, &mut buf) {
            ReadResult::Run { run, .. } => out.push(("run", run.anchor_wall_ms)),
            ReadResult::Frame { key, pts, .. } => out.push((if key { "key" } else { "frame" }, pts)),
            ReadResult::Empty => return out,
            ReadResult::Gap { .. } => panic!("the test ring wrapped"),
        }
    }
}

#[test]
fn a_hung_camera_does_not_hold_up_the_others() {
    let mut h = Harness::new();
    let hung = h.stream("hung", "rtsp://hung/", Mode::Hang);
    let b = h.stream("b", "rtsp://b/", Mode::Up);
    let c = h.stream("c", "rtsp://c/", Mode::Up);
    // b waits for the hung camera's turn to end, then c waits for b's handshake.
    let b_at = h.run_until(Duration::from_secs(30), || frames(&b) > 0).expect("b records");
    let c_at = h.run_until(Duration::from_secs(30), || frames(&c) > 0).expect("c records");
    assert_eq!(b_at, BRING_UP_TURN + Duration::from_millis(100), "b connects when the hung turn ends");
    assert_eq!(c_at, b_at, "c connects as soon as b's session is open");
    assert_eq!(h.cams.opens_of("rtsp://b/"), vec![BRING_UP_TURN.as_millis()]);
    assert_eq!(hung.status().state, StreamState::Connecting);
    // The hung open ends at its deadline with a clear error, and is tried again.
    h.run_until(Duration::from_secs(30), || hung.status().state == StreamState::Backoff).expect("backoff");
    assert_eq!(h.clock.mono(), OPEN_DEADLINE);
    assert_eq!(hung.status().last_error.as_deref(), Some("timeout: opening got no answer in 20000 ms"));
    h.run_for(Duration::from_secs(2));
    let retry = (OPEN_DEADLINE + BACKOFF_MIN).as_millis();
    assert_eq!(h.cams.opens_of("rtsp://hung/"), vec![0, retry], "retried after the 1 s backoff");
    assert!(frames(&b) >= 100 && frames(&c) >= 100, "the others kept recording: {} {}", frames(&b), frames(&c));
}

#[test]
fn a_session_that_panics_costs_that_session_only() {
    let mut h = Harness::new();
    let bad = h.stream("bad", "rtsp://bad/", Mode::Panics);
    let good = h.stream("good", "rtsp://good/", Mode::Up);
    h.run_until(Duration::from_secs(10), || bad.status().connects >= 2).expect("the panicked stream dials again");
    let err = bad.status().last_error.unwrap_or_default();
    assert!(err.contains("internal error in the camera session: push with data already pending"), "{err}");
    assert!(frames(&bad) >= 15, "it recorded before the panic: {}", frames(&bad));
    let before = frames(&good);
    h.run_for(Duration::from_secs(5));
    assert!(frames(&good) >= before + 45, "the other stream kept recording: {before} -> {}", frames(&good));
}

#[test]
fn a_hundred_addresses_that_never_answer_hold_no_bring_up_turn() {
    let mut h = Harness::new();
    let dead: Vec<_> = (0..100)
        .map(|i| h.stream_with_priority(&format!("d{i}"), &format!("rtsp://dead{i}/"), Mode::NoAnswer, 10))
        .collect();
    let good = h.stream("good", "rtsp://good/", Mode::Up);
    let first = h.run_until(Duration::from_secs(5), || frames(&good) > 0).expect("good records");
    assert_eq!(first, Duration::from_millis(100), "the good camera's first frame comes at once");
    // The dead ones time out in their TCP connect and are tried again, outside the gate.
    h.run_for(Duration::from_secs(20));
    assert_eq!(dead[0].status().last_error.as_deref(), Some("timeout: TCP connect got no answer in 5000 ms"));
    assert!(h.cams.opens_of("rtsp://dead0/").is_empty(), "no RTSP open of an address that never answered");
    // The good camera drops; back after 5 s, it records within the refused-retry interval.
    h.cams.set("rtsp://good/", Mode::Down);
    h.run_for(Duration::from_secs(5));
    h.cams.set("rtsp://good/", Mode::Up);
    let back = h.clock.mono();
    let before = frames(&good);
    let again = h.run_until(Duration::from_secs(5), || frames(&good) > before).expect("good records again");
    assert!(again - back <= RETRY_UNREACHABLE + Duration::from_millis(100), "back after {:?}", again - back);
}

#[test]
fn streams_handshake_one_at_a_time_in_the_order_started() {
    let mut h = Harness::new();
    let names = ["p3", "p2", "p1", "p0"];
    let rts: Vec<_> = names.iter().map(|n| h.stream(n, &format!("rtsp://{n}/"), Mode::Up)).collect();
    for n in names {
        h.cams.set_handshake(&format!("rtsp://{n}/"), Duration::from_millis(30));
    }
    h.run_for(Duration::from_secs(2));
    let opened: Vec<String> = h.cams.opens.borrow().iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(opened, ["rtsp://p3/", "rtsp://p2/", "rtsp://p1/", "rtsp://p0/"]);
    let times: Vec<u128> = h.cams.opens.borrow().iter().map(|(_, t)| *t).collect();
    // The handshake is the costly part; waiting for the first keyframe is not,
    // so the next one starts when the previous session is open.
    assert_eq!(times, [0, 30, 60, 90], "each opens when the previous one's handshake is done");
    assert!(rts.iter().all(|rt| rt.status().state == StreamState::Streaming));
}

#[test]
fn a_waiting_stream_of_higher_priority_goes_first() {
    let mut h = Harness::new();
    h.stream("first", "rtsp://first/", Mode::Hang);
    h.stream_with_priority("low", "rtsp://low/", Mode::Up, 0);
    h.stream_with_priority("high", "rtsp://high/", Mode::Up, 5);
    h.cams.set_handshake("rtsp://high/", Duration::from_millis(30));
    h.run_for(BRING_UP_TURN + Duration::from_secs(1));
    let turn = BRING_UP_TURN.as_millis();
    assert_eq!(h.cams.opens_of("rtsp://high/"), vec![turn]);
    assert_eq!(h.cams.opens_of("rtsp://low/"), vec![turn + 30], "low goes once high's session is open");
}

#[test]
fn a_camera_that_comes_back_records_again_within_a_second() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(5));
    let before = frames(&rt);
    h.cams.set("rtsp://cam/", Mode::Down);
    h.run_for(Duration::from_secs(5));
    assert_eq!(rt.status().state, StreamState::Backoff);
    let dials = || h.cams.dials.borrow().iter().filter(|u| *u == "rtsp://cam/").count();
    let tries = dials();
    assert!(tries >= 8, "a refused camera is tried every 500 ms: {tries} connects in 5 s");
    h.cams.set("rtsp://cam/", Mode::Up);
    let back = h.clock.mono();
    let resumed = h.run_until(Duration::from_secs(10), || frames(&rt) > before + 1).expect("resumes");
    assert!(resumed - back <= Duration::from_millis(700), "resumed {:?} after the camera returned", resumed - back);
    assert_eq!(rt.status().connects as usize, dials());
}

#[test]
fn protocol_failures_back_off_and_success_resets_the_backoff() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::NotFound);
    h.run_for(Duration::from_secs(16));
    assert_eq!(h.cams.opens_of("rtsp://cam/"), vec![0, 1_000, 3_000, 7_000, 15_000], "1, 2, 4, 8 s apart");
    assert!(rt.status().last_error.is_some_and(|e| e.starts_with("404 not found")));
    // Up for a minute, then a failure: the next wait starts at 1 s again.
    h.cams.set("rtsp://cam/", Mode::Up);
    h.run_until(Duration::from_secs(40), || frames(&rt) > 0).expect("records");
    h.run_for(HEALTHY_SESSION);
    h.cams.set("rtsp://cam/", Mode::NotFound);
    let failed = h.run_until(Duration::from_secs(5), || rt.status().state == StreamState::Backoff).expect("fails");
    h.run_for(Duration::from_secs(2));
    let last = *h.cams.opens_of("rtsp://cam/").last().expect("opens");
    assert_eq!(Duration::from_millis(last as u64) - failed, Duration::from_secs(1));
}

#[test]
fn a_camera_that_drops_every_session_after_a_gop_is_not_redialled_every_second() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    // Each session ends 2 s in (camera drops it), the camera answers again at once.
    for _ in 0..6 {
        h.run_for(Duration::from_secs(2));
        h.cams.set("rtsp://cam/", Mode::NotFound);
        h.run_until(Duration::from_secs(5), || rt.status().state == StreamState::Backoff).expect("dropped");
        h.cams.set("rtsp://cam/", Mode::Up);
        h.run_until(Duration::from_secs(60), || rt.status().state == StreamState::Streaming).expect("back");
    }
    let opens = h.cams.opens_of("rtsp://cam/");
    let gaps: Vec<u128> = opens.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "waits grow between short sessions: {gaps:?}");
    assert!(*gaps.last().expect("gaps") >= 2_000 + 16_000, "{gaps:?}");
}

#[test]
fn video_before_the_first_keyframe_is_skipped_and_a_keyframe_never_sent_ends_the_session() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::NoKeyframes);
    let ended = h.run_until(Duration::from_secs(60), || rt.status().state == StreamState::Backoff).expect("ends");
    assert_eq!(ended, KEYFRAME_WAIT);
    assert_eq!(rt.status().last_error.as_deref(), Some("no keyframe in 20 s"));
    assert_eq!(frames(&rt), 0);
    assert!(ring_records(&h, &rt).is_empty(), "nothing undecodable was kept");
}

#[test]
fn a_silent_session_is_dropped_after_the_stall_timeout() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Stalls);
    let ended = h.run_until(Duration::from_secs(60), || rt.status().state == StreamState::Backoff).expect("ends");
    assert_eq!(rt.status().last_error.as_deref(), Some("no data for 10 s"));
    // The last frame came at 0.5 s; the check runs every 2 s: dropped at the first check >= 10.5 s.
    assert_eq!(ended, Duration::from_secs(12));
    assert_eq!(frames(&rt), 5);
}

#[test]
fn a_wall_clock_step_starts_a_new_run_and_small_drift_does_not() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(3));
    h.clock.set(h.clock.now_ms() + 5_000); // within the drift limit
    h.run_for(Duration::from_secs(2));
    h.clock.set(h.clock.now_ms() + 3_600_000); // NTP answered
    h.run_for(Duration::from_secs(2));
    let records = ring_records(&h, &rt);
    let runs: Vec<i64> = records.iter().filter(|(k, _)| *k == "run").map(|(_, w)| *w - T0).collect();
    assert_eq!(runs.len(), 2, "{records:?}");
    assert_eq!(runs[0], 100);
    // The new run starts at the first keyframe after the step (frames are 100 ms apart).
    assert!(runs[1] > 3_600_000 + 5_000 && runs[1] <= 3_600_000 + 5_000 + 7_100, "{}", runs[1]);
    let after = records.iter().position(|(k, w)| *k == "run" && *w - T0 == runs[1]).expect("second run");
    assert_eq!(records[after + 1].0, "key", "a run starts on a keyframe");
}

#[test]
fn a_camera_clock_step_of_seconds_forward_or_back_starts_a_new_run() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(3));
    h.cams.step_pts("rtsp://cam/", 5 * 90_000); // 5 s forward: under MAX_DRIFT_MS, still a step
    h.run_for(Duration::from_secs(3));
    h.cams.step_pts("rtsp://cam/", -8 * 90_000); // back
    h.run_for(Duration::from_secs(3));
    let records = ring_records(&h, &rt);
    let runs = records.iter().filter(|(k, _)| *k == "run").count();
    assert_eq!(runs, 3, "{records:?}");
    // Within each run the pts move forward by about a frame: no frame spans a step.
    let mut last: Option<i64> = None;
    for (k, v) in &records {
        match (*k, last) {
            ("run", _) => last = None,
            (_, Some(l)) => {
                assert!(*v > l && *v - l < 90_000 / FPS * 2, "a frame of {} ticks: {records:?}", *v - l);
                last = Some(*v);
            }
            (_, None) => last = Some(*v),
        }
    }
}

#[test]
fn a_repeated_frame_is_dropped_without_a_new_run() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(2));
    // The next frame carries the previous one's pts again (a server resending it).
    h.cams.step_pts("rtsp://cam/", -90_000 / FPS);
    h.run_for(Duration::from_secs(2));
    let records = ring_records(&h, &rt);
    assert_eq!(records.iter().filter(|(k, _)| *k == "run").count(), 1, "{records:?}");
    let pts: Vec<i64> = records.iter().filter(|(k, _)| *k != "run").map(|(_, v)| *v).collect();
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "pts strictly increase: {pts:?}");
    // 4 s of frames at FPS, less the repeat; the status counts what was kept.
    assert_eq!(pts.len() as i64, 4 * FPS - 1, "only the repeat is missing: {pts:?}");
    assert_eq!(pts.len() as u64, frames(&rt));
}

/// The run in effect at the newest keyframe and the last frame's pts.
fn newest(rt: &StreamRuntime) -> (RunStart, i64) {
    let mut cursor = rt.ring.cursor_at_latest_keyframe();
    let (mut run, mut last, mut buf) = (None, None, Vec::new());
    loop {
        match rt.ring.read(&mut cursor, &mut buf) {
            ReadResult::Run { run: r, .. } => run = Some(r),
            ReadResult::Frame { pts, .. } => last = Some(pts),
            ReadResult::Empty => break,
            ReadResult::Gap { .. } => panic!("gap while reading the newest frames"),
        }
    }
    (run.expect("a run"), last.expect("a frame"))
}

#[test]
fn a_drifting_camera_clock_is_slewed_without_a_new_run() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.cams.set_ppm("rtsp://cam/", 300); // 1.08 s an hour
    h.run_for(Duration::from_secs(3600));
    let (run, pts) = newest(&rt);
    assert_eq!(run.anchor_wall_ms - T0, 100, "still the first run");
    let off = h.clock.now_ms() - run.wall_ms(pts);
    // Proportional slew: a steady 300 ppm needs 30 ms of error (10 ppm per ms).
    assert!((-50..=150).contains(&off), "the newest frame maps {off} ms before now (unslewed: -1080)");
}

#[test]
fn a_camera_clock_faster_than_the_slew_gets_a_new_run_at_the_limit() {
    let mut h = Harness::new();
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    // 2500 ppm beyond the slew: video time 2 s ahead of wall time (MAX_AHEAD_MS) after 800 s.
    h.cams.set_ppm("rtsp://cam/", 3000);
    h.run_for(Duration::from_secs(750));
    assert_eq!(newest(&rt).0.anchor_wall_ms - T0, 100, "still the first run at 750 s");
    h.run_for(Duration::from_secs(100));
    let (run, pts) = newest(&rt);
    assert!(run.anchor_wall_ms - T0 > 750_000, "a new run once 2 s ahead: {}", run.anchor_wall_ms - T0);
    assert!((h.clock.now_ms() - run.wall_ms(pts)).abs() < 1000);
}

/// Every run start in the ring since it was made: (anchor, time unknown), and the frames.
fn runs_and_frames(h: &Harness, rt: &StreamRuntime) -> (Vec<(i64, bool)>, u64) {
    let mut cursor = h.starts.borrow()[rt.name()];
    let (mut runs, mut frames, mut buf) = (Vec::new(), 0, Vec::new());
    loop {
        match rt.ring.read(&mut cursor, &mut buf) {
            ReadResult::Run { run, .. } => runs.push((run.anchor_wall_ms, run.time_unknown)),
            ReadResult::Frame { .. } => frames += 1,
            ReadResult::Empty => return (runs, frames),
            ReadResult::Gap { .. } => panic!("the test ring wrapped"),
        }
    }
}

/// A box without a battery clock: 1970 plus 20 s of boot at start.
const BOOT: i64 = 20_000;
/// The firmware's build date in these tests: a day before T0.
const FLOOR: i64 = T0 - 86_400_000;

#[test]
fn a_box_booted_in_1970_records_in_provisional_time_and_the_ntp_step_starts_no_run() {
    let mut h = Harness::with_clock(SimulatedClock::with_floor(BOOT, FLOOR));
    let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(40));
    h.clock.set(T0); // NTP answered: a step of about 56 years
    h.run_for(Duration::from_secs(30));
    let (runs, frames) = runs_and_frames(&h, &rt);
    assert_eq!(runs, vec![(BOOT + 100, true)], "one run, anchored on the provisional timeline at the first keyframe");
    assert_eq!((frames, rt.status().frames), (700, 700), "every frame kept, before and after the step");
    let (run, pts) = newest(&rt);
    let off = h.clock.provisional_ms() - run.wall_ms(pts);
    assert!((0..=200).contains(&off), "the run still follows the provisional timeline: {off} ms");
    // The next session (camera reconnects) is anchored on the wall clock, now trusted.
    h.cams.set("rtsp://cam/", Mode::NotFound);
    h.run_for(Duration::from_secs(2));
    h.cams.set("rtsp://cam/", Mode::Up);
    h.run_for(Duration::from_secs(3));
    let (runs, _) = runs_and_frames(&h, &rt);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(!runs[1].1 && runs[1].0 > T0 + 30_000 && runs[1].0 < T0 + 36_000, "{runs:?}");
}

mod with_storage {
    use super::*;
    use crate::index::db::{Db, SegmentRow};
    use crate::recording::storage::{self, StorageSettings};

    /// Runs a storage thread on `h`'s clock that records `rt` while `f` drives ingest,
    /// then shuts it down (the ring drained, every segment closed).
    fn record(h: &Harness, rt: &Arc<StreamRuntime>, dir: &std::path::Path, f: impl FnOnce()) {
        let settings = StorageSettings {
            data_dir: dir.to_path_buf(),
            db_path: dir.join("oxinvr.db"),
            segment_seconds: 10,
            sync_seconds: 1,
            min_free_percent: 0,
            events_retention_days: 30,
            events: None,
            keep_until_replicated: false,
        };
        let (tx, thread) = storage::spawn(settings, h.clock.clone()).expect("storage");
        tx.send(storage::Command::Add(rt.clone())).expect("add");
        // Commands run in order: the answer to this no-op means the cursor is in place.
        let (answer, purged) = std::sync::mpsc::channel();
        tx.send(storage::Command::Purge(-1, answer)).expect("purge");
        assert_eq!(purged.recv_timeout(Duration::from_secs(20)).expect("answer"), Ok(0));
        f();
        let (ack, done) = std::sync::mpsc::channel();
        tx.send(storage::Command::Shutdown(ack)).expect("shutdown");
        done.recv_timeout(Duration::from_secs(20)).expect("storage stopped");
        thread.join().expect("storage thread");
    }

    fn db_with_cam(dir: &std::path::Path) -> Db {
        let db = Db::open(&dir.join("oxinvr.db")).expect("db");
        let spec = StreamSpec::new("cam", "rtsp://cam/");
        assert_eq!(db.upsert_stream(&spec, 0).expect("stream").id, 1, "the harness's stream id");
        db
    }

    fn rows(db: &Db) -> Vec<SegmentRow> {
        db.segments_overlapping(1, i64::MIN, i64::MAX).expect("segments")
    }

    /// Waits (real time: the storage thread polls every 50 ms) until `f` holds.
    fn wait(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn rows_recorded_before_the_ntp_step_are_restamped_and_none_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_with_cam(dir.path());
        let mut h = Harness::with_clock(SimulatedClock::with_floor(BOOT, FLOOR));
        let rt = h.stream("cam", "rtsp://cam/", Mode::Up);
        record(&h, &rt, dir.path(), || {
            h.run_for(Duration::from_secs(40));
            // Three closed segments of unknown time on disk before the clock is set.
            wait("3 closed rows", || rows(&db).iter().filter(|r| r.closed && r.time_unknown).count() == 3);
            assert!(rows(&db)[0].start_ms < FLOOR);
            h.clock.set(T0);
            h.run_for(Duration::from_secs(30));
            wait("the re-stamp", || rows(&db).iter().all(|r| !r.time_unknown));
        });
        let segs = rows(&db);
        assert_eq!(segs.len(), 7, "one run of 70 s in segments of 10 s: {segs:?}");
        // The first keyframe came 100 ms after start, 40 s before NTP answered at T0.
        assert_eq!(segs[0].start_ms, T0 - 40_000 + 100);
        assert!((segs[6].end_ms - (T0 + 30_000)).abs() <= 100, "{}", segs[6].end_ms - T0);
        for w in segs.windows(2) {
            assert_eq!(w[0].end_ms, w[1].start_ms, "contiguous across the step");
        }
        assert!(segs.iter().all(|s| s.closed && !s.time_unknown));
        assert!(db.gaps_overlapping(1, i64::MIN, i64::MAX).expect("gaps").is_empty());
        let frames: u64 = segs.iter().map(|s| s.frames).sum();
        assert_eq!(frames, rt.status().frames, "no frame lost");
        for s in &segs {
            let scan = crate::recording::mp4::scan_file(&dir.path().join(&s.path)).expect("scan");
            assert_eq!((scan.valid_len, scan.fragments.len()), (s.bytes, s.fragments.len()), "{}", s.path);
        }
        assert!(segs[0].path.contains("/1970-01-01/"), "file names keep their provisional start: {}", segs[0].path);
    }

    #[test]
    fn after_a_restart_without_a_set_clock_the_earlier_rows_stay_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_with_cam(dir.path());
        let mut first = Harness::with_clock(SimulatedClock::with_floor(BOOT, FLOOR));
        let rt = first.stream("cam", "rtsp://cam/", Mode::Up);
        record(&first, &rt, dir.path(), || first.run_for(Duration::from_secs(15)));
        let before = rows(&db);
        assert!(before.len() == 2 && before.iter().all(|r| r.time_unknown), "{before:?}");
        // The next boot: the link between the first process's timeline and wall time is gone.
        let mut second = Harness::with_clock(SimulatedClock::with_floor(BOOT, FLOOR));
        let rt = second.stream("cam", "rtsp://cam/", Mode::Up);
        record(&second, &rt, dir.path(), || {
            second.run_for(Duration::from_secs(5));
            second.clock.set(T0);
            second.run_for(Duration::from_secs(5));
            wait("the re-stamp", || rows(&db).iter().filter(|r| !r.time_unknown).count() == 1);
        });
        let after = rows(&db);
        assert_eq!(after[..2], before[..], "the first boot's rows are untouched");
        assert_eq!((after[2].start_ms, after[2].time_unknown), (T0 - 5_000 + 100, false));
    }
}
