//! Time as a dependency: code that decides by time (retention, reconnect
//! backoff, bring-up, stall detection, sync policy) takes a `Clock` so tests
//! can drive it deterministically.
//!
//! Two times: *wall* time (`now_ms`, epoch milliseconds, may step when NTP
//! answers) names recordings; *monotonic* time (`mono`) measures intervals and
//! deadlines and never steps. `sleep` waits in monotonic time.
//!
//! The wall-clock floor: a box without a battery clock boots in 1970 until NTP
//! answers. A wall time below `floor_ms` (30 days before the firmware's
//! build date, `WALL_FLOOR_MS`) is *untrusted*. Meanwhile runs are anchored on the
//! *provisional* timeline, `origin_ms + mono` (the wall clock as it read when
//! monotonic time began, then monotonic time: it never steps). Once the wall
//! clock is trusted, `step_ms` (wall minus provisional, measured now: how far
//! NTP stepped it since the process started) turns a provisional time of this
//! process into wall time. A restart loses that link: provisional times of an
//! earlier process stay unknown.
//!
//! Invariant: a `SimulatedClock` moves only when told (`advance`, `set`), and
//! a sleeper wakes exactly when monotonic time reaches its deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A future that completes after a `Clock::sleep`.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

// `WALL_FLOOR_MS`: 30 days before the build date, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/build_time.rs"));

pub trait Clock: Send + Sync {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Monotonic time since an arbitrary origin (fixed per clock).
    fn mono(&self) -> Duration;
    /// Completes once `d` of monotonic time has passed.
    fn sleep(&self, d: Duration) -> Sleep;
    /// The wall time as it read when `mono` was zero: the origin of the
    /// provisional timeline.
    fn origin_ms(&self) -> i64;
    /// Wall times below this are not believed (the firmware's build date).
    fn floor_ms(&self) -> i64 {
        WALL_FLOOR_MS
    }

    /// True once the wall clock reads at least the floor.
    fn trusted(&self) -> bool {
        self.now_ms() >= self.floor_ms()
    }
    /// Now on the provisional timeline (origin + monotonic time; never steps).
    fn provisional_ms(&self) -> i64 {
        self.origin_ms().saturating_add(self.mono().as_millis() as i64)
    }
    /// What turns a provisional time of this process into wall time, once the
    /// wall clock is trusted: the step it made since monotonic time began.
    fn step_ms(&self) -> Option<i64> {
        let now = self.now_ms();
        (now >= self.floor_ms()).then(|| now - self.provisional_ms())
    }
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealClock;

impl RealClock {
    fn wall_ms() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    /// The monotonic origin and the wall time read with it (taken once per process).
    fn origin() -> &'static (Instant, i64) {
        static ORIGIN: OnceLock<(Instant, i64)> = OnceLock::new();
        ORIGIN.get_or_init(|| (Instant::now(), Self::wall_ms()))
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> i64 {
        Self::wall_ms()
    }
    fn mono(&self) -> Duration {
        Self::origin().0.elapsed()
    }
    fn origin_ms(&self) -> i64 {
        Self::origin().1
    }
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    }
}

/// A clock that only moves when told to. (A mutex, not an `AtomicI64`: 32-bit
/// MIPS has no 64-bit atomics.)
#[derive(Debug, Default)]
pub struct SimulatedClock(Arc<Mutex<SimState>>);

#[derive(Debug, Default)]
struct SimState {
    wall_ms: i64,
    mono: Duration,
    /// Wall time when it was made; the floor (`i64::MIN` unless given: trusted).
    origin_ms: i64,
    floor_ms: i64,
    /// Pending sleepers: deadline and the waker of the task waiting.
    sleepers: Vec<(Duration, Waker)>,
}

impl SimulatedClock {
    /// A clock at wall `ms` that trusts any wall time.
    pub fn new(ms: i64) -> Self {
        Self::with_floor(ms, i64::MIN)
    }

    /// A clock at wall `ms` that does not believe wall times below `floor_ms`.
    pub fn with_floor(ms: i64, floor_ms: i64) -> Self {
        let state = SimState { wall_ms: ms, origin_ms: ms, floor_ms, ..SimState::default() };
        SimulatedClock(Arc::new(Mutex::new(state)))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves wall and monotonic time forward by `d` and wakes the sleepers due.
    pub fn advance(&self, d: Duration) {
        let due: Vec<Waker> = {
            let mut s = self.state();
            s.wall_ms += d.as_millis() as i64;
            s.mono += d;
            let now = s.mono;
            let (due, keep) = std::mem::take(&mut s.sleepers).into_iter().partition(|(t, _)| *t <= now);
            s.sleepers = keep;
            due.into_iter().map(|(_, w)| w).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Steps wall time only (what NTP does to a box that booted in 1970).
    pub fn set(&self, ms: i64) {
        self.state().wall_ms = ms;
    }

    /// The earliest deadline a sleeper waits for, if any.
    pub fn next_wake(&self) -> Option<Duration> {
        self.state().sleepers.iter().map(|(t, _)| *t).min()
    }
}

impl Clock for SimulatedClock {
    fn now_ms(&self) -> i64 {
        self.state().wall_ms
    }
    fn mono(&self) -> Duration {
        self.state().mono
    }
    fn origin_ms(&self) -> i64 {
        self.state().origin_ms
    }
    fn floor_ms(&self) -> i64 {
        self.state().floor_ms
    }
    fn sleep(&self, d: Duration) -> Sleep {
        let until = self.mono() + d;
        Box::pin(SimSleep { state: self.0.clone(), until })
    }
}

struct SimSleep {
    state: Arc<Mutex<SimState>>,
    until: Duration,
}

impl Future for SimSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.mono >= self.until {
            return Poll::Ready(());
        }
        s.sleepers.push((self.until, cx.waker().clone()));
        Poll::Pending
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC (e.g. `2026-11-21T08:33:17.250Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Parses a time given as RFC 3339 or as epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("{s:?} is neither RFC 3339 (2026-11-21T08:00:00Z) nor epoch milliseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_moves_only_when_told() {
        let c = SimulatedClock::new(1000);
        assert_eq!(c.now_ms(), 1000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3000);
    }

    #[test]
    fn simulated_sleepers_wake_at_their_deadline() {
        let c = Arc::new(SimulatedClock::new(0));
        let woke = Arc::new(Mutex::new(Vec::new()));
        let ex = smol::LocalExecutor::new();
        for ms in [300u64, 100, 200] {
            let (c, woke) = (c.clone(), woke.clone());
            ex.spawn(async move {
                c.sleep(Duration::from_millis(ms)).await;
                woke.lock().expect("lock").push((ms, c.mono().as_millis()));
            })
            .detach();
        }
        while ex.try_tick() {}
        assert_eq!(c.next_wake(), Some(Duration::from_millis(100)));
        c.advance(Duration::from_millis(150));
        while ex.try_tick() {}
        assert_eq!(*woke.lock().expect("lock"), vec![(100, 150)]);
        c.advance(Duration::from_millis(150));
        while ex.try_tick() {}
        let mut all = woke.lock().expect("lock").clone();
        all.sort();
        assert_eq!(all, vec![(100, 150), (200, 300), (300, 300)]);
        assert_eq!(c.now_ms(), 300, "wall time moves with monotonic time");
        c.set(5);
        assert_eq!((c.now_ms(), c.mono()), (5, Duration::from_millis(300)), "a wall step leaves monotonic time");
    }

    #[test]
    fn the_step_past_the_floor_is_measured_against_monotonic_time() {
        let c = SimulatedClock::with_floor(5_000, 1_000_000);
        assert!(!c.trusted() && c.step_ms().is_none());
        c.advance(Duration::from_secs(10));
        assert_eq!(c.provisional_ms(), 15_000, "origin + monotonic time");
        c.set(2_000_000); // NTP answered
        c.advance(Duration::from_secs(1));
        assert!(c.trusted());
        assert_eq!(c.step_ms(), Some(2_000_000 - 15_000));
        assert_eq!(c.provisional_ms() + c.step_ms().unwrap_or(0), c.now_ms());
        let real = RealClock;
        let built = 1_700_000_000_000..=real.now_ms() - 30 * 86_400_000;
        assert!(built.contains(&WALL_FLOOR_MS), "30 days before the build date is the floor: {WALL_FLOOR_MS}");
        assert!(real.trusted() && real.step_ms().is_some_and(|s| s.abs() < 1000), "this machine's clock is set");
    }

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T23:13:20.123+01:00"), Ok(1_700_000_000_123));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
