//! The hardware watchdog, fed from heartbeats: a named `watchdog` thread holds
//! the device (`[watchdog] device`, e.g. /dev/watchdog) and feeds it once a
//! second only while the ingest executor, the storage thread and the HTTP pool
//! all make progress (`base::heartbeat`). A part stuck for `stuck_s` stops the
//! feeding, the log and `GET /api/system` name it, and the board resets
//! `timeout_s` later.
//!
//! Invariants:
//! - From start until `arm` (every part running) the device is fed without
//!   looking at heartbeats: start-up (reconcile of a large disk) is bounded by
//!   the appliance's health check instead.
//! - After `arm`, a feed happens only if every part's counter moved within
//!   `stuck_s` (`Watch`, pure, tested with made-up times).
//! - The magic close ('V', which disarms the watchdog) is written only by a
//!   clean stop; a crash, a stuck part or an unclean shutdown leave it armed,
//!   so a box that cannot stop cleanly resets.
//! - A device that cannot be opened (absent, or still held by busybox
//!   `watchdog` during the hand-over) is retried every tick, and the status says why.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::base::clock::Clock;
use crate::base::heartbeat::{self, Part};
use crate::config::WatchdogConfig;

/// How often the thread checks the heartbeats and feeds.
const TICK: Duration = Duration::from_secs(1);

nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, std::ffi::c_int);

/// Which parts have not beaten for too long. Pure: times are given.
pub struct Watch {
    stuck_after: Duration,
    /// Per part: the counter last seen and when it last moved.
    last: [(u32, Duration); 3],
}

impl Watch {
    pub fn new(now: Duration, counts: [u32; 3], stuck_after: Duration) -> Watch {
        Watch { stuck_after, last: counts.map(|c| (c, now)) }
    }

    /// The parts whose counter has not moved for `stuck_after`, with how long.
    pub fn stuck(&mut self, now: Duration, counts: [u32; 3]) -> Vec<(Part, Duration)> {
        let mut out = Vec::new();
        for (i, part) in Part::ALL.into_iter().enumerate() {
            if counts[i] != self.last[i].0 {
                self.last[i] = (counts[i], now);
            }
            let silent = now.saturating_sub(self.last[i].1);
            if silent >= self.stuck_after {
                out.push((part, silent));
            }
        }
        out
    }
}

/// What `GET /api/system` shows as `watchdog`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// `off` (no device configured), `opening` (cannot open it yet: see error),
    /// `starting` (fed until every part runs), `feeding`, `not_feeding` (a part
    /// is stuck: the board resets), `stopping` (fed during a shutdown),
    /// `stopped` (clean stop, magic close written).
    pub state: &'static str,
    pub device: String,
    /// The timeout the driver accepted (the configured one if it takes no WDIOC_SETTIMEOUT).
    pub timeout_s: u32,
    pub stuck_s: u32,
    pub feeds: u64,
    /// Wall time of the last feed (ms since the epoch), and how long ago it was.
    pub last_feed_ms: Option<i64>,
    pub last_feed_age_ms: Option<u64>,
    /// The parts whose heartbeat has not moved for `stuck_s`, with for how long.
    pub stuck: Vec<StuckPart>,
    pub error: Option<String>,
    #[serde(skip)]
    last_feed_mono: Option<Duration>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StuckPart {
    pub part: &'static str,
    pub silent_s: u64,
}

/// The status as the web layer reads it (cheap to clone).
#[derive(Clone)]
pub struct StatusHandle {
    status: Arc<Mutex<Status>>,
    clock: Arc<dyn Clock>,
}

impl StatusHandle {
    /// Without a watchdog: `state` says `off`.
    pub fn off(clock: Arc<dyn Clock>) -> StatusHandle {
        let status = Status { state: "off", ..Status::default() };
        StatusHandle { status: Arc::new(Mutex::new(status)), clock }
    }

    pub fn snapshot(&self) -> Status {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = self.clock.mono();
        s.last_feed_age_ms = s.last_feed_mono.map(|t| now.saturating_sub(t).as_millis() as u64);
        s
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

enum Msg {
    Arm,
    Stopping,
    Stop { clean: bool },
}

/// The running watchdog thread.
pub struct Watchdog {
    tx: mpsc::Sender<Msg>,
    thread: std::thread::JoinHandle<()>,
    status: StatusHandle,
}

impl Watchdog {
    /// Starts the `watchdog` thread if `cfg.device` is set (None otherwise).
    pub fn start(cfg: &WatchdogConfig, clock: Arc<dyn Clock>) -> std::io::Result<Option<Watchdog>> {
        if cfg.device.is_empty() {
            return Ok(None);
        }
        let status = StatusHandle::off(clock.clone());
        status.update(|s| {
            *s = Status {
                state: "opening",
                device: cfg.device.clone(),
                timeout_s: cfg.timeout_s,
                stuck_s: cfg.stuck_s,
                ..Status::default()
            }
        });
        let (tx, rx) = mpsc::channel();
        let (cfg, st) = (cfg.clone(), status.clone());
        let thread = std::thread::Builder::new().name("watchdog".into()).spawn(move || run(&cfg, &*clock, &rx, &st))?;
        Ok(Some(Watchdog { tx, thread, status }))
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Every part runs: from now on feed only while all of them beat.
    pub fn arm(&self) {
        let _ = self.tx.send(Msg::Arm);
    }

    /// Shutdown began: parts end one by one and stop beating, so feed without
    /// watching them until `stop` (the shutdown is bounded), unless a part was
    /// already stuck (then the board still resets).
    pub fn stopping(&self) {
        let _ = self.tx.send(Msg::Stopping);
    }

    /// Ends the thread; `clean` writes the magic close (the watchdog is disarmed).
    pub fn stop(self, clean: bool) {
        let _ = self.tx.send(Msg::Stop { clean });
        if self.thread.join().is_err() {
            log::error!("the watchdog thread ended with a panic");
        }
    }
}

fn run(cfg: &WatchdogConfig, clock: &dyn Clock, rx: &mpsc::Receiver<Msg>, status: &StatusHandle) {
    let stuck_after = Duration::from_secs(u64::from(cfg.stuck_s));
    let mut device: Option<File> = None;
    let mut watch: Option<Watch> = None;
    let mut was_stuck: Vec<&'static str> = Vec::new();
    let mut stopping = false;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Arm) => watch = Some(Watch::new(clock.mono(), heartbeat::counts(), stuck_after)),
            Ok(Msg::Stopping) if was_stuck.is_empty() => {
                watch = None;
                stopping = true;
            }
            Ok(Msg::Stopping) => {}
            Ok(Msg::Stop { clean }) => return close(device, clean, &cfg.device, status),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return close(device, false, &cfg.device, status),
        }
        if device.is_none() {
            device = open(cfg, status);
        }
        let Some(dev) = device.as_mut() else { continue };
        let stuck = watch.as_mut().map(|w| w.stuck(clock.mono(), heartbeat::counts())).unwrap_or_default();
        let names: Vec<&'static str> = stuck.iter().map(|(p, _)| p.name()).collect();
        if names != was_stuck {
            report_change(&stuck, cfg);
            was_stuck = names;
        }
        let listed = stuck.iter().map(|(p, d)| StuckPart { part: p.name(), silent_s: d.as_secs() }).collect();
        if !stuck.is_empty() {
            status.update(|s| {
                s.state = "not_feeding";
                s.stuck = listed;
            });
            continue;
        }
        let fed = dev.write_all(b"k").and_then(|_| dev.flush());
        let (now, now_ms) = (clock.mono(), clock.now_ms());
        status.update(|s| {
            s.stuck = listed;
            match &fed {
                Ok(()) => {
                    s.state = match (&watch, stopping) {
                        (Some(_), _) => "feeding",
                        (None, true) => "stopping",
                        (None, false) => "starting",
                    };
                    s.feeds += 1;
                    s.last_feed_ms = Some(now_ms);
                    s.last_feed_mono = Some(now);
                    s.error = None;
                }
                Err(e) => s.error = Some(format!("cannot feed {}: {e}", cfg.device)),
            }
        });
        if let Err(e) = fed {
            log::error!("watchdog: cannot feed {}: {e}", cfg.device);
        }
    }
}

/// Logs which parts are stuck (feeding stops) or that every part runs again.
fn report_change(stuck: &[(Part, Duration)], cfg: &WatchdogConfig) {
    if stuck.is_empty() {
        log::warn!("watchdog: every part makes progress again; feeding {} again", cfg.device);
        return;
    }
    let parts: Vec<String> =
        stuck.iter().map(|(p, d)| format!("{} (no heartbeat for {} s)", p.name(), d.as_secs())).collect();
    log::error!(
        "watchdog: stuck: {}; no longer feeding {}: the board resets within {} s",
        parts.join(", "),
        cfg.device,
        cfg.timeout_s
    );
}

/// Opens the device and sets its timeout; None (and the status says why) if it cannot be opened.
fn open(cfg: &WatchdogConfig, status: &StatusHandle) -> Option<File> {
    let file = match std::fs::OpenOptions::new().write(true).open(&cfg.device) {
        Ok(f) => f,
        Err(e) => {
            let why = format!("cannot open {}: {e} (retrying every second)", cfg.device);
            let first = status.snapshot().error.as_deref() != Some(why.as_str());
            if first {
                log::warn!("watchdog: {why}");
            }
            status.update(|s| s.error = Some(why));
            return None;
        }
    };
    let timeout = set_timeout(&file, cfg);
    log::info!(
        "watchdog: holding {} (timeout {timeout} s), fed while the executor, storage and HTTP beat (stuck after {} s)",
        cfg.device,
        cfg.stuck_s
    );
    status.update(|s| {
        s.state = "starting";
        s.timeout_s = timeout;
        s.error = None;
    });
    Some(file)
}

/// WDIOC_SETTIMEOUT; returns the timeout the driver took (it may round), or the
/// configured one for a device without the ioctl (a plain file in tests).
fn set_timeout(file: &File, cfg: &WatchdogConfig) -> u32 {
    use std::os::fd::AsRawFd;
    let mut t = std::ffi::c_int::try_from(cfg.timeout_s).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: the fd is open for the call and `t` outlives it.
    match unsafe { wdioc_settimeout(file.as_raw_fd(), &mut t) } {
        Ok(_) => u32::try_from(t).unwrap_or(cfg.timeout_s),
        Err(e) => {
            log::warn!("watchdog: {} takes no WDIOC_SETTIMEOUT ({e}): its own timeout applies", cfg.device);
            cfg.timeout_s
        }
    }
}

/// Ends the hold on the device: the magic close only if `clean`.
fn close(device: Option<File>, clean: bool, path: &str, status: &StatusHandle) {
    let Some(mut dev) = device else { return };
    if !clean {
        log::warn!("watchdog: not a clean stop: {path} stays armed (the board resets unless fed)");
        return;
    }
    match dev.write_all(b"V").and_then(|_| dev.flush()) {
        Ok(()) => {
            log::info!("watchdog: clean stop, magic close written to {path} (disarmed)");
            status.update(|s| s.state = "stopped");
        }
        Err(e) => log::error!("watchdog: cannot write the magic close to {path}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_part_whose_counter_stops_is_stuck_after_the_limit_and_fresh_again_once_it_moves() {
        let mut w = Watch::new(S(0), [0, 0, 0], S(30));
        assert!(w.stuck(S(10), [5, 0, 3]).is_empty());
        // Storage (index 1) never moved since 0 s: stuck at 30 s, not at 29.
        assert!(w.stuck(S(29), [9, 0, 6]).is_empty());
        assert_eq!(w.stuck(S(30), [10, 0, 7]), vec![(Part::Storage, S(30))]);
        // The executor stops at 30 s as well: both stuck at 60 s.
        assert_eq!(w.stuck(S(60), [10, 0, 9]), vec![(Part::Executor, S(30)), (Part::Storage, S(60))]);
        assert!(w.stuck(S(61), [11, 1, 10]).is_empty());
    }
}
