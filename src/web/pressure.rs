//! The pressure ladder's driver: one thread (`pressure`) reads the kernel's
//! memory signals once a second, ticks `governor::pressure::Ladder` and
//! applies each step it enters or leaves (docs/ARCHITECTURE.md, "Pressure
//! ladder"):
//! 1. live view: clients let go, new ones refused with 503 (`live::set_shedding`);
//! 2. detection paused on low-priority streams: `pause_detection`, a no-op
//!    hook until detection exists;
//! 3. swap on (`governor::swap::Manager`);
//! 4. the lowest-priority streams stopped (`Recorder::stop_for_pressure`).
//!
//! Invariants:
//! - Steps are entered in order 1..4 and left in reverse, one per change, so
//!   what a step did is undone exactly when the ladder descends below it.
//! - Every change is logged with its reason and the action's outcome, and
//!   shown (with counts) in `/api/system` `memory.pressure`.
//! - The ladder runs on a monotonic clock (a wall-clock step is no pressure);
//!   the API converts `since` to wall time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::base::clock::rfc3339;
use crate::config::Config;
use crate::governor::pressure::{self, Change, Ladder, Source, STEP_NAMES};
use crate::governor::swap;
use crate::web::state::Nvr;

/// How often the signals are read (PSI's shortest average is 10 s; this only
/// bounds how late a step is taken).
const TICK: Duration = Duration::from_secs(1);

/// The ladder, the swapfile and what the last change did.
pub struct Pressure {
    began: Instant,
    ladder: Mutex<Ladder>,
    swap: Mutex<swap::Manager>,
    /// The outcome of the last step's action, and of the OOM score setting.
    last_action: Mutex<Option<String>>,
    oom: Mutex<Option<Result<i32, String>>>,
    read_error: Mutex<Option<String>>,
}

impl Pressure {
    pub fn new(config: &Config) -> Self {
        let m = &config.memory;
        let (path, explicit) = m.swap_path(&config.storage.data_dir);
        Pressure {
            began: Instant::now(),
            ladder: Mutex::new(Ladder::new(crate::governor::thresholds(config), 0)),
            swap: Mutex::new(swap::Manager::new(path, u64::from(m.swap_file_mb) << 20, explicit)),
            last_action: Mutex::new(None),
            oom: Mutex::new(None),
            read_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.began.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    pub fn step(&self) -> u8 {
        lock(&self.ladder).step()
    }

    /// `/api/system` `memory.pressure`: the step, why, since when (wall time),
    /// the counts, the last reading, swap and the OOM score.
    pub fn report(&self, wall_now_ms: i64) -> Value {
        let r = lock(&self.ladder).report();
        let since = wall_now_ms - (self.now_ms() - r.since_ms);
        let oom = match &*lock(&self.oom) {
            Some(Ok(v)) => json!({ "value": v, "error": null }),
            Some(Err(e)) => json!({ "value": null, "error": e }),
            None => Value::Null,
        };
        json!({
            "step": r.step,
            "name": r.name,
            "why": r.why,
            "since": rfc3339(since),
            "steps": STEP_NAMES,
            "entered": r.entered,
            "left": r.left,
            "reached_after_ms": r.reached_after_ms,
            "reading": r.reading,
            "read_error": *lock(&self.read_error),
            "thresholds": r.thresholds,
            "last_action": *lock(&self.last_action),
            "swap": lock(&self.swap).report(),
            "oom_score_adj": oom,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Step 2's hook. Detection does not exist yet, so there is nothing to pause;
/// when it does, this pauses it on every stream below the highest priority
/// (and `false` resumes it). Returns what it did, for the log.
fn pause_detection(pause: bool) -> &'static str {
    if pause {
        "detection does not exist yet: nothing to pause"
    } else {
        "detection does not exist yet: nothing to resume"
    }
}

/// Sets the OOM score, makes the swapfile, then runs the ladder until the
/// recorder stops. `source` is the kernel (`ProcSource`) outside unit tests.
pub fn spawn(nvr: Arc<Nvr>, source: Box<dyn Source>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pressure".into()).spawn(move || run(&nvr, source))
}

fn run(nvr: &Nvr, mut source: Box<dyn Source>) {
    let p = &nvr.pressure;
    let adj = nvr.config.memory.oom_score_adj;
    let oom = crate::governor::set_oom_score_adj(adj).map(|()| adj);
    match &oom {
        Ok(v) => log::info!("oom_score_adj set to {v}"),
        Err(e) => log::warn!("{e}; the kernel may kill OxiNVR first when memory runs out"),
    }
    *lock(&p.oom) = Some(oom);
    lock(&p.swap).prepare();
    while !nvr.shutdown.wait_timeout(TICK) {
        let reading = match source.read() {
            Ok(r) => r,
            Err(e) => {
                let e = format!("cannot read the memory pressure: {e}");
                if lock(&p.read_error).as_ref() != Some(&e) {
                    log::error!("{e}");
                }
                *lock(&p.read_error) = Some(e);
                continue;
            }
        };
        *lock(&p.read_error) = None;
        let change = lock(&p.ladder).tick(p.now_ms(), reading);
        if let Some(c) = change {
            apply(nvr, &c);
        }
    }
}

/// Enters or leaves the step of `c`, logs and keeps the outcome.
fn apply(nvr: &Nvr, c: &Change) {
    let p = &nvr.pressure;
    let outcome = if c.climbed() { enter(nvr, c) } else { leave(nvr, c.from) };
    let name = STEP_NAMES[usize::from(c.to)];
    let line = format!("memory pressure: step {} -> {} ({name}): {}; {outcome}", c.from, c.to, c.why);
    if c.climbed() {
        log::warn!("{line}");
    } else {
        log::info!("{line}");
    }
    *lock(&p.last_action) = Some(outcome);
}

fn enter(nvr: &Nvr, c: &Change) -> String {
    match c.to {
        1 => {
            super::live::set_shedding(true);
            format!("live view shed ({} client(s) let go), new clients refused", super::live::live_clients())
        }
        2 => pause_detection(true).to_string(),
        3 => match lock(&nvr.pressure.swap).on() {
            Ok(()) => "swap on".to_string(),
            Err(e) => format!("swap not turned on: {e}"),
        },
        _ => {
            let why = format!("stopped for memory pressure (ladder step 4: {})", c.why);
            let stopped = nvr.recorder.stop_for_pressure(&why);
            if stopped.is_empty() {
                "no stream stopped (none of lower priority than the others is running)".to_string()
            } else {
                format!("stopped {}", stopped.join(", "))
            }
        }
    }
}

fn leave(nvr: &Nvr, step: u8) -> String {
    match step {
        1 => {
            super::live::set_shedding(false);
            "live view open again".to_string()
        }
        2 => pause_detection(false).to_string(),
        3 => match lock(&nvr.pressure.swap).off() {
            Ok(()) => "swap off".to_string(),
            Err(e) => format!("swap not turned off: {e}"),
        },
        _ => {
            let started = nvr.recorder.resume_after_pressure();
            format!("started again: {}", if started.is_empty() { "none".to_string() } else { started.join(", ") })
        }
    }
}

/// The kernel's signals (or `OXINVR_PROC_ROOT`'s files, test-only).
pub fn kernel_source() -> Box<dyn Source> {
    let src = pressure::ProcSource::from_env();
    if src.root() != std::path::Path::new("/proc") {
        log::warn!("memory pressure read from {} ({}; test-only)", src.root().display(), pressure::PROC_ROOT_ENV);
    }
    Box::new(src)
}
