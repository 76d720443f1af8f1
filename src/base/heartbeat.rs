//! Heartbeats: one counter per part of the recorder that must keep making
//! progress (the ingest executor, the storage thread, the HTTP pool). Each part
//! bumps its counter as it works or on an idle tick; `governor::watchdog` feeds
//! the hardware watchdog only while every counter moves.
//!
//! Invariants:
//! - A beat is one relaxed atomic add: cheap enough for every loop pass.
//! - Counters only grow; a reader compares two readings, never an absolute value.
//! - The test-only stall (`stall`) is refused unless the process enabled the
//!   test knobs (`enable_test_knobs`, from `OXINVR_TEST_KNOBS=1` at start). A
//!   stalled part blocks for good at its next beat: it stops working and beating,
//!   as a thread stuck in a driver or a lock would.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// The parts watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Executor,
    Storage,
    Http,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Executor, Part::Storage, Part::Http];

    pub fn name(self) -> &'static str {
        match self {
            Part::Executor => "executor",
            Part::Storage => "storage",
            Part::Http => "http",
        }
    }

    pub fn parse(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How often an idle part beats anyway (an executor timer, an HTTP worker's
/// receive timeout, the storage thread's poll is shorter still).
pub const IDLE_BEAT: Duration = Duration::from_secs(1);

/// 32 bits: the A1 (MIPS32) has no 64-bit atomics. A counter wraps (after
/// years at the storage thread's pace); a reader only asks whether it changed.
static BEATS: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
static STALLED: [AtomicBool; 3] = [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)];
static KNOBS: AtomicBool = AtomicBool::new(false);

/// `part` made progress. Blocks for good if the test knob stalled it.
pub fn beat(part: Part) {
    if STALLED[part.index()].load(Ordering::Relaxed) {
        log::warn!("{}: stalled by the test knob (no more work, no more heartbeats)", part.name());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    BEATS[part.index()].fetch_add(1, Ordering::Relaxed);
}

/// Every part's counter, in `Part::ALL` order.
pub fn counts() -> [u32; 3] {
    Part::ALL.map(|p| BEATS[p.index()].load(Ordering::Relaxed))
}

/// Allows `stall` (tests only: `OXINVR_TEST_KNOBS=1` when the process starts).
pub fn enable_test_knobs() {
    KNOBS.store(true, Ordering::Relaxed);
}

pub fn test_knobs_enabled() -> bool {
    KNOBS.load(Ordering::Relaxed)
}

/// Test-only: makes `part` block at its next beat. Refused unless the test knobs are on.
pub fn stall(part: Part) -> Result<(), String> {
    if !test_knobs_enabled() {
        return Err("test-only knob: refused unless oxinvr was started with OXINVR_TEST_KNOBS=1".into());
    }
    log::warn!("test knob: stalling {} at its next heartbeat", part.name());
    STALLED[part.index()].store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_count_and_stall_is_refused_without_the_knob() {
        let before = counts();
        beat(Part::Http);
        assert_ne!(counts()[2], before[2]);
        assert!(stall(Part::Storage).unwrap_err().contains("OXINVR_TEST_KNOBS=1"));
        assert_eq!(Part::parse("storage"), Some(Part::Storage));
        assert_eq!(Part::parse("disk"), None);
    }
}
