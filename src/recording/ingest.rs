//! Ingest: one camera session per stream, all on one smol `LocalExecutor`
//! (the `executor` thread). retina needs a tokio reactor; `async_compat::Compat`
//! provides it (one extra `async-compat/tokio-1` thread for all streams).
//! The logic is generic over `rtsp::Opener` and `Clock`, so bring-up order,
//! deadlines, reconnect timing and run boundaries are unit-tested in simulated
//! time against scripted cameras (tests below); `spawn_executor` plugs in retina.
//!
//! Invariants:
//! - Ingest never waits on disk, HTTP or readers: frames go straight into the
//!   stream's ring, which overwrites its oldest records.
//! - Each run in the ring starts with a `RunStart` followed by a video keyframe.
//!   A codec parameter change or a timestamp jump starts a new run (and so a new
//!   segment) instead of ending the recording.
//! - Nothing waits on a camera without a deadline: opening (every RTSP step and
//!   `OPEN_DEADLINE` overall), the first keyframe (`KEYFRAME_WAIT`), and every
//!   frame after it (`STALL_TIMEOUT`).
//! - Streams are brought up one at a time, in the order started (priority
//!   order): the next one's turn comes when the previous one's session is open
//!   (PLAY answered), failed, or had its turn for `BRING_UP_TURN` (3 s),
//!   whichever is first. Only the handshake is staggered: waiting for the first
//!   keyframe costs nothing, and staggering it too kept the last of 64 cameras
//!   a minute from recording after a reboot.
//!   A stream queues for a turn only once its camera accepted a TCP connection
//!   (`Opener::reachable`, within `STEP_DEADLINE`): addresses that never answer
//!   (a hundred of them) wait outside the gate and delay no one.
//! - Media time follows wall time: each video frame's duration is slewed by at
//!   most `MAX_SLEW_PPM` toward the wall clock (audio by the same amount), so
//!   slow drift never accumulates; only a real step starts a new run: video
//!   time behind wall time by `MAX_DRIFT_MS`, ahead of it by `MAX_AHEAD_MS`, or
//!   going back. Pts in the ring are the slewed ones; they stay strictly increasing.
//!   A video frame at the same pts as the previous one is a repeat and dropped.
//! - A wall clock below its floor (a box that booted in 1970) never stops
//!   recording: a run started then is anchored on the clock's provisional
//!   timeline and marked `time_unknown`, and follows that timeline (which never
//!   steps) for its whole life, so NTP setting the clock does not cut it; the
//!   storage thread re-stamps its rows by the measured step.
//! - Reconnects: a camera that refused the connection is tried again every
//!   `RETRY_UNREACHABLE` (a refused connect costs nothing, and a camera that
//!   comes back is recording again within that); other failures back off
//!   exponentially from 1 s to 30 s; a session that recorded for
//!   `HEALTHY_SESSION` (4 s) resets the backoff.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_compat::Compat;
use smol::LocalExecutor;

use crate::base::clock::Clock;
use crate::base::heartbeat::{self, Part};
use crate::recording::media::{AudioParams, Frame, RunStart, Track, VideoParams};
use crate::recording::rtsp::{MediaFrame, OpenError, Opener, RetinaOpener, Source};
use crate::recording::stream::{StreamRuntime, StreamState};

/// Deadline of each RTSP step (TCP + DESCRIBE, SETUP, PLAY).
pub const STEP_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of opening as a whole (every step together).
const OPEN_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait for the first keyframe of a session.
const KEYFRAME_WAIT: Duration = Duration::from_secs(20);
/// A session that delivers nothing for this long is dropped and reconnected.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a session checks for a stall (one timer per check, not per frame).
const STALL_CHECK: Duration = Duration::from_secs(2);
/// Longest bring-up turn of one stream before the next may connect.
const BRING_UP_TURN: Duration = Duration::from_secs(3);
/// Video time and wall time may disagree by this much before a new run starts
/// (a wall-clock step, or a camera whose clock runs away faster than the slew).
const MAX_DRIFT_MS: i64 = 10_000;
/// Video time ahead of wall time by more than this is a forward step of the
/// camera's clock (a frame cannot arrive before it was taken: only the anchor
/// frame's own delay can put later frames ahead), so it starts a new run; left
/// to the slew, a 5 s jump would sit in one frame lasting 5 s for hours.
const MAX_AHEAD_MS: i64 = 2_000;
/// Most a frame's duration is stretched or shrunk to follow the wall clock
/// (500 ppm: 1.8 s an hour, far more than a camera's crystal drifts, and no
/// one sees a frame 0.05 % longer).
const MAX_SLEW_PPM: i64 = 500;
/// Retry interval for a camera that refused the connection.
const RETRY_UNREACHABLE: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that recorded this long (from its turn) resets the backoff: long
/// enough that a camera dropping every session after a GOP or two backs off,
/// short enough that one flapping 5 s up / 5 s down is back within a second
/// each time (at 60 s its backoff reached 8 s by the fourth flap and it missed
/// whole up-periods: `scripts/fault-cameras`).
const HEALTHY_SESSION: Duration = Duration::from_secs(4);

/// Commands to the executor thread.
pub enum Command {
    Start(Arc<StreamRuntime>),
    Stop(String),
    Shutdown,
}

/// Capped exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Starts the executor thread with retina as the opener. Streams are added and
/// removed with `Command`s.
pub fn spawn_executor(
    clock: Arc<dyn Clock>,
) -> std::io::Result<(smol::channel::Sender<Command>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = smol::channel::unbounded::<Command>();
    let handle = std::thread::Builder::new().name("executor".into()).spawn(move || {
        crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Ingest);
        let ex = LocalExecutor::new();
        let ingest = Ingest::new(RetinaOpener { step: STEP_DEADLINE }, clock);
        // A task among the stream tasks: it beats only while the executor runs its tasks.
        ex.spawn(async {
            loop {
                heartbeat::beat(Part::Executor);
                smol::Timer::after(heartbeat::IDLE_BEAT).await;
            }
        })
        .detach();
        smol::block_on(ex.run(ingest.serve(&ex, rx)));
    })?;
    Ok((tx, handle))
}

/// Shared by every stream task of one executor.
pub struct Ingest<O> {
    opener: O,
    clock: Arc<dyn Clock>,
    gate: Rc<Gate>,
}

impl<O: Opener + 'static> Ingest<O> {
    pub fn new(opener: O, clock: Arc<dyn Clock>) -> Rc<Self> {
        Rc::new(Ingest { opener, clock, gate: Rc::default() })
    }

    /// Runs commands until `Shutdown` (or the sender is gone), then cancels every stream.
    pub async fn serve(self: Rc<Self>, ex: &LocalExecutor<'_>, rx: smol::channel::Receiver<Command>) {
        let mut tasks: HashMap<String, smol::Task<()>> = HashMap::new();
        while let Ok(cmd) = rx.recv().await {
            match cmd {
                Command::Start(rt) => {
                    let name = rt.name().to_string();
                    // Compat: each task polls retina's tokio sockets inside tokio's context.
                    let task = ex.spawn(Compat::new(self.clone().run_stream(rt)));
                    if let Some(old) = tasks.insert(name, task) {
                        old.cancel().await;
                    }
                }
                Command::Stop(name) => {
                    if let Some(t) = tasks.remove(&name) {
                        t.cancel().await;
                    }
                }
                Command::Shutdown => break,
            }
        }
        for (_, t) in tasks.drain() {
            t.cancel().await;
        }
    }

    /// One stream, until cancelled: wait for a turn, connect, record into the ring,
    /// wait, reconnect.
    pub async fn run_stream(self: Rc<Self>, rt: Arc<StreamRuntime>) {
        let mut backoff = Backoff::default();
        loop {
            rt.set_state(StreamState::Connecting);
            rt.with_status(|s| s.connects += 1);
            if let Err(e) = self.reachable(&rt).await {
                let delay =
                    if matches!(e, OpenError::Unreachable(_)) { RETRY_UNREACHABLE } else { backoff.next_delay() };
                rt.set_error(e.to_string(), self.clock.now_ms());
                rt.set_state(StreamState::Backoff);
                self.clock.sleep(delay).await;
                continue;
            }
            rt.set_state(StreamState::Queued);
            let turn = Gate::enter(&self.gate, rt.spec().priority).await;
            rt.set_state(StreamState::Connecting);
            let began = self.clock.mono();
            let mut session = Session::new(&rt, &*self.clock, turn.clone());
            let turn_ends = async {
                self.clock.sleep(BRING_UP_TURN).await;
                turn.end();
                std::future::pending::<Ended>().await
            };
            let outcome = smol::future::or(contained(session.run(&self.opener)), turn_ends).await;
            turn.end();
            // Only a session that lasted resets the backoff: a camera that drops every
            // session after one GOP must not be redialled (and a file started) every second.
            if session.keyframes > 0 && self.clock.mono() - began >= HEALTHY_SESSION {
                backoff.reset();
            }
            let delay = match &outcome {
                Ended::Open(OpenError::Unreachable(_)) => RETRY_UNREACHABLE,
                _ => backoff.next_delay(),
            };
            rt.set_error(outcome.to_string(), self.clock.now_ms());
            rt.set_state(StreamState::Backoff);
            self.clock.sleep(delay).await;
        }
    }
}

/// A session that panicked (a bug in it or in retina, met on a camera's input)
/// ends as a failure of that session: the stream reconnects and every other
/// stream on the executor keeps recording. (The MIPS build aborts on a panic;
/// there the watchdog restarts the recorder.)
async fn contained(session: impl Future<Output = Ended>) -> Ended {
    use smol::future::FutureExt;
    std::panic::AssertUnwindSafe(session).catch_unwind().await.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!("a camera session panicked (a bug; the stream reconnects): {what}");
        Ended::Failed(format!("internal error in the camera session: {what}"))
    })
}

impl<O: Opener> Ingest<O> {
    /// The camera's address accepts TCP, within `STEP_DEADLINE`: checked before
    /// the bring-up turn, so a dead address (SYNs dropped) never holds it.
    async fn reachable(&self, rt: &StreamRuntime) -> Result<(), OpenError> {
        let url = rt.spec().url;
        let deadline = async {
            self.clock.sleep(STEP_DEADLINE).await;
            Err(OpenError::Timeout { step: "TCP connect", after: STEP_DEADLINE })
        };
        smol::future::or(self.opener.reachable(&url), deadline).await
    }
}

/// The bring-up gate: one stream connects at a time; waiting streams get
/// their turn highest priority first, then first come (a semaphore's wake-up
/// order is not guaranteed). Single-threaded: lives on the executor.
#[derive(Default)]
pub struct Gate {
    busy: Cell<bool>,
    waiting: RefCell<Vec<Waiter>>,
    tickets: Cell<u64>,
}

struct Waiter {
    priority: i32,
    ticket: u64,
    granted: bool,
    waker: Option<Waker>,
}

impl Gate {
    /// Waits for the turn of a stream of `priority`.
    fn enter(gate: &Rc<Gate>, priority: i32) -> Entering {
        let ticket = gate.tickets.get();
        gate.tickets.set(ticket + 1);
        Entering { gate: gate.clone(), priority, ticket, queued: false }
    }

    /// Hands the turn to the best waiter, or frees the gate.
    fn pass_on(&self) {
        let mut waiting = self.waiting.borrow_mut();
        let best = waiting.iter_mut().filter(|w| !w.granted).min_by_key(|w| (std::cmp::Reverse(w.priority), w.ticket));
        match best {
            Some(w) => {
                w.granted = true;
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            }
            None => self.busy.set(false),
        }
    }
}

/// The future of `Gate::enter`.
struct Entering {
    gate: Rc<Gate>,
    priority: i32,
    ticket: u64,
    queued: bool,
}

impl Future for Entering {
    type Output = Turn;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        let gate = self.gate.clone();
        if !self.queued {
            if !gate.busy.get() {
                gate.busy.set(true);
                return Poll::Ready(Turn(Rc::new(TurnInner { gate, ended: Cell::new(false) })));
            }
            let w = Waiter { priority: self.priority, ticket: self.ticket, granted: false, waker: None };
            gate.waiting.borrow_mut().push(w);
            self.queued = true;
        }
        let mut waiting = gate.waiting.borrow_mut();
        let Some(i) = waiting.iter().position(|w| w.ticket == self.ticket) else { return Poll::Pending };
        if waiting[i].granted {
            waiting.remove(i);
            self.queued = false;
            drop(waiting);
            return Poll::Ready(Turn(Rc::new(TurnInner { gate, ended: Cell::new(false) })));
        }
        waiting[i].waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Entering {
    /// A stream stopped while waiting leaves the queue, and passes on a turn it was given.
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let granted = {
            let mut waiting = self.gate.waiting.borrow_mut();
            let i = waiting.iter().position(|w| w.ticket == self.ticket);
            i.map(|i| waiting.remove(i).granted).unwrap_or(false)
        };
        if granted {
            self.gate.pass_on();
        }
    }
}

/// A stream's bring-up turn; ended (the next stream may connect) at most
/// once: explicitly, or when the last copy is dropped.
#[derive(Clone)]
struct Turn(Rc<TurnInner>);

struct TurnInner {
    gate: Rc<Gate>,
    ended: Cell<bool>,
}

impl Turn {
    fn end(&self) {
        self.0.end();
    }
}

impl TurnInner {
    fn end(&self) {
        if !self.ended.replace(true) {
            self.gate.pass_on();
        }
    }
}

impl Drop for TurnInner {
    fn drop(&mut self) {
        self.end();
    }
}

/// Why a session ended.
#[derive(Debug)]
enum Ended {
    Open(OpenError),
    /// The camera ended the session (RTSP teardown, EOF).
    ByCamera,
    Failed(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Open(e) => write!(f, "{e}"),
            Ended::ByCamera => f.write_str("the camera ended the stream"),
            Ended::Failed(m) => f.write_str(m),
        }
    }
}

/// State of one camera session.
struct Session<'a> {
    rt: &'a StreamRuntime,
    clock: &'a dyn Clock,
    turn: Turn,
    run: Option<RunStart>,
    audio: Option<AudioParams>,
    keyframes: u64,
    slew: Slew,
}

impl<'a> Session<'a> {
    fn new(rt: &'a StreamRuntime, clock: &'a dyn Clock, turn: Turn) -> Self {
        Session { rt, clock, turn, run: None, audio: None, keyframes: 0, slew: Slew::default() }
    }

    async fn run<O: Opener>(&mut self, opener: &O) -> Ended {
        let url = self.rt.spec().url;
        let opened = smol::future::or(async { opener.open(&url).await.map(Some) }, async {
            self.clock.sleep(OPEN_DEADLINE).await;
            Ok(None)
        })
        .await;
        let mut src = match opened {
            Ok(Some(src)) => src,
            Ok(None) => return Ended::Open(OpenError::Timeout { step: "opening", after: OPEN_DEADLINE }),
            Err(e) => return Ended::Open(e),
        };
        self.turn.end();
        self.rt.set_state(StreamState::Streaming);
        let began = self.clock.mono();
        let mut last_item = began;
        let mut need_run = true;
        let mut watchdog = self.clock.sleep(STALL_CHECK);
        loop {
            let next = smol::future::or(async { Some(src.next().await) }, async {
                (&mut watchdog).await;
                None
            })
            .await;
            let now = self.clock.mono();
            let frame = match next {
                None => {
                    watchdog = self.clock.sleep(STALL_CHECK);
                    if let Some(why) = self.overdue(began, last_item, now) {
                        return Ended::Failed(why);
                    }
                    continue;
                }
                Some(None) => return Ended::ByCamera,
                Some(Some(Err(e))) => return Ended::Failed(e),
                Some(Some(Ok(f))) => f,
            };
            last_item = now;
            if let Err(e) = self.take(&src, frame, &mut need_run) {
                return Ended::Failed(e);
            }
        }
    }

    /// Why the session should end if nothing arrived in time.
    fn overdue(&self, began: Duration, last_item: Duration, now: Duration) -> Option<String> {
        if self.keyframes == 0 && now - began >= KEYFRAME_WAIT {
            return Some(format!("no keyframe in {} s", KEYFRAME_WAIT.as_secs()));
        }
        (now - last_item >= STALL_TIMEOUT).then(|| format!("no data for {} s", STALL_TIMEOUT.as_secs()))
    }

    /// Puts one frame into the ring, starting a run where one is due.
    fn take(&mut self, src: &impl Source, f: MediaFrame, need_run: &mut bool) -> Result<(), String> {
        if f.track == Track::Audio {
            if let Some(a) = self.run.as_ref().and_then(|r| r.audio.as_ref().map(|a| (a.timescale, r.video.timescale)))
            {
                let pts = self.slew.audio(f.pts, a.0, a.1);
                // An audio frame that does not fit is dropped; video goes on.
                let _ = self.rt.ring.push_frame(&Frame { track: Track::Audio, key: true, pts, data: &f.data });
            }
            return Ok(());
        }
        let now = self.clock.now_ms();
        if f.new_params || self.run.is_none() {
            *need_run = true;
            if self.audio.is_none() {
                self.audio = src.audio_params();
            }
        }
        if let (Some(last), false) = (self.slew.last_in.filter(|&last| f.pts <= last), *need_run) {
            if f.pts == last {
                // A second frame at the same time is a repeat: an RTSP server that
                // shares one encoder among its clients resends one when another
                // client joins. Dropped; a new run for it left 0.1 s recordings.
                log::debug!("stream {}: a second video frame at {} ticks: dropped", self.rt.name(), f.pts);
                return Ok(());
            }
            log::warn!(
                "stream {}: video time went backwards ({} to {} ticks); starting a new run",
                self.rt.name(),
                last,
                f.pts
            );
            *need_run = true;
        }
        let mut pts = f.pts;
        if let (Some(run), false) = (&self.run, *need_run) {
            let run_now = if run.time_unknown { self.clock.provisional_ms() } else { now };
            pts = self.slew.video(f.pts, run, run_now);
            let drift = run_now - run.wall_ms(pts);
            if !(-MAX_AHEAD_MS..=MAX_DRIFT_MS).contains(&drift) {
                log::warn!("stream {}: video time is {drift} ms off wall time; starting a new run", self.rt.name());
                *need_run = true;
            }
        }
        if *need_run {
            if !f.key {
                return Ok(()); // a run starts on a keyframe
            }
            let video = src.video_params().ok_or("the camera sent video without codec parameters")?;
            self.start_run(video, f.pts)?;
            self.slew = Slew::starting_at(f.pts);
            pts = f.pts;
            *need_run = false;
        }
        if f.key {
            self.keyframes += 1;
        }
        if let Err(e) = self.rt.ring.push_frame(&Frame { track: Track::Video, key: f.key, pts, data: &f.data }) {
            self.rt.set_error(format!("frame not kept: {e}"), now);
        }
        self.rt.with_status(|s| s.count_video_frame(f.data.len(), now));
        Ok(())
    }

    /// Starts a run at `pts`, anchored now on the wall clock, or on the
    /// provisional timeline while the wall clock is untrusted.
    fn start_run(&mut self, video: VideoParams, pts: i64) -> Result<(), String> {
        let time_unknown = !self.clock.trusted();
        let anchor_wall_ms = if time_unknown { self.clock.provisional_ms() } else { self.clock.now_ms() };
        let run = RunStart { video, audio: self.audio.clone(), anchor_pts: pts, anchor_wall_ms, time_unknown };
        log::info!(
            "stream {}: new run {} {}x{}{}{}",
            self.rt.name(),
            run.video.codec,
            run.video.width,
            run.video.height,
            run.audio.as_ref().map(|a| format!(" + {}", a.codec)).unwrap_or_default(),
            if time_unknown {
                " (the clock is over 30 days before the firmware build date: time unknown until it is set)"
            } else {
                ""
            }
        );
        self.rt.ring.push_run(&run).map_err(|e| format!("cannot start a run: {e}"))?;
        self.rt.with_status(|s| {
            s.codec = Some(run.video.codec.clone());
            s.width = Some(run.video.width);
            s.height = Some(run.video.height);
            s.audio = run.audio.as_ref().map(|a| a.codec.clone());
        });
        self.run = Some(run);
        Ok(())
    }
}

/// The correction of one run's media time toward wall time (see the module
/// invariants): `corr` video ticks are added to the camera's pts.
#[derive(Debug, Default)]
struct Slew {
    corr: i64,
    last_in: Option<i64>,
    /// Millionths of a tick not yet applied.
    carry: i64,
}

impl Slew {
    fn starting_at(pts: i64) -> Slew {
        Slew { last_in: Some(pts), ..Slew::default() }
    }

    /// The slewed pts of a video frame of `run` that arrived at wall `now_ms`.
    fn video(&mut self, pts_in: i64, run: &RunStart, now_ms: i64) -> i64 {
        let Some(last) = self.last_in.replace(pts_in) else { return pts_in + self.corr };
        let delta = pts_in - last;
        let err_ms = now_ms - run.wall_ms(pts_in + self.corr);
        // 10 ppm per ms of error: 50 ms behind or ahead already slews at full rate.
        let ppm = (err_ms * 10).clamp(-MAX_SLEW_PPM, MAX_SLEW_PPM);
        let num = delta.max(0) * ppm + self.carry;
        self.corr += num / 1_000_000;
        self.carry = num % 1_000_000;
        pts_in + self.corr
    }

    /// The slewed pts of an audio frame: the video correction in audio ticks.
    fn audio(&self, pts_in: i64, audio_timescale: u32, video_timescale: u32) -> i64 {
        pts_in + self.corr * i64::from(audio_timescale) / i64::from(video_timescale.max(1))
    }
}

#[cfg(test)]
mod tests;
