//! The pressure ladder: how hard the kernel finds memory, read from its own
//! signals, turned into a step 0..=4 with hysteresis. The steps (applied by
//! the web layer's `pressure` driver, undone in reverse):
//! 1. shed live-view queues and refuse new live clients,
//! 2. pause detection on low-priority streams (a documented no-op until
//!    detection exists),
//! 3. turn swap on (`governor::swap`),
//! 4. stop the lowest-priority streams.
//!
//! The signal: PSI (`/proc/pressure/memory`, `some`/`full` avg10, percent of
//! time tasks stalled on memory) where the kernel has it, else MemAvailable
//! (`/proc/meminfo`) as a share of MemTotal. `OXINVR_PROC_ROOT` replaces
//! `/proc` for these two files only: a test-only knob (tests/pressure_ladder.rs
//! writes the files), documented as such.
//!
//! Invariants:
//! - Pure state machine: time and readings are passed in (`Ladder::tick`),
//!   so the logic is tested with an injected clock and readings.
//! - One step per change: climbing needs `climb_ms` of continuous pressure
//!   per step, descending `calm_ms` of continuous calm per step; a reading in
//!   between (neither high nor calm) restarts both waits.
//! - Each change is counted per step entered and left, with its reason.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The top step.
pub const MAX_STEP: u8 = 4;

/// What each step does, as the API and the log name it.
pub const STEP_NAMES: [&str; 5] = [
    "normal",
    "live view shed",
    "detection paused on low-priority streams",
    "swap on",
    "lowest-priority streams stopped",
];

/// One look at the kernel's memory signals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reading {
    /// PSI `some avg10` and `full avg10` (percent), if the kernel has PSI.
    pub some_avg10: Option<f32>,
    pub full_avg10: Option<f32>,
    pub mem_available: u64,
    pub mem_total: u64,
}

/// Where readings come from (the kernel, or a test's script).
pub trait Source: Send {
    fn read(&mut self) -> io::Result<Reading>;
}

/// The test-only override of `/proc` for the pressure files.
pub const PROC_ROOT_ENV: &str = "OXINVR_PROC_ROOT";

/// The kernel's files: `<root>/pressure/memory` and `<root>/meminfo`.
pub struct ProcSource {
    root: PathBuf,
}

impl ProcSource {
    /// `/proc`, or `OXINVR_PROC_ROOT` (test-only).
    pub fn from_env() -> Self {
        let root = std::env::var_os(PROC_ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| "/proc".into());
        ProcSource { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Source for ProcSource {
    fn read(&mut self) -> io::Result<Reading> {
        let meminfo_path = self.root.join("meminfo");
        let meminfo = std::fs::read_to_string(&meminfo_path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", meminfo_path.display())))?;
        let (mem_total, mem_available) = parse_meminfo(&meminfo).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no MemTotal/MemAvailable lines", meminfo_path.display()),
            )
        })?;
        // No PSI (old kernel, CONFIG_PSI off, psi=0): MemAvailable alone.
        let psi = std::fs::read_to_string(self.root.join("pressure/memory")).ok();
        let (some_avg10, full_avg10) = psi.as_deref().map(parse_psi).unwrap_or((None, None));
        Ok(Reading { some_avg10, full_avg10, mem_available, mem_total })
    }
}

/// (MemTotal, MemAvailable) in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// (`some avg10`, `full avg10`) of `/proc/pressure/memory`.
pub fn parse_psi(text: &str) -> (Option<f32>, Option<f32>) {
    let avg10 = |kind: &str| {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(kind))?;
        line.split_whitespace().find_map(|f| f.strip_prefix("avg10=")?.parse::<f32>().ok())
    };
    (avg10("some"), avg10("full"))
}

/// When memory counts as short, or calm again (`[memory]` in the config).
#[derive(Clone, Debug, Serialize)]
pub struct Thresholds {
    /// Climb when PSI some avg10 reaches this (percent).
    pub some_percent: f32,
    /// ... or PSI full avg10 reaches this.
    pub full_percent: f32,
    /// Without PSI: climb when MemAvailable is below this share of MemTotal.
    pub available_percent: f32,
    /// Pressure held this long climbs one step.
    pub climb_ms: i64,
    /// Calm held this long descends one step.
    pub calm_ms: i64,
}

/// Calm means below half the PSI thresholds, or (without PSI) more than 1.5
/// times the MemAvailable threshold free: the gap is the hysteresis.
const CALM_PSI_FACTOR: f32 = 0.5;
const CALM_AVAILABLE_FACTOR: f32 = 1.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    High,
    Between,
    Calm,
}

impl Thresholds {
    /// How `r` compares with the thresholds, and why in words.
    fn judge(&self, r: &Reading) -> (Level, String) {
        if let (Some(some), Some(full)) = (r.some_avg10, r.full_avg10) {
            let why = format!("PSI memory some avg10 {some:.1} %, full avg10 {full:.1} %");
            let level = if some >= self.some_percent || full >= self.full_percent {
                Level::High
            } else if some < self.some_percent * CALM_PSI_FACTOR && full < self.full_percent * CALM_PSI_FACTOR {
                Level::Calm
            } else {
                Level::Between
            };
            return (level, why);
        }
        let pct = if r.mem_total == 0 { 100.0 } else { r.mem_available as f32 * 100.0 / r.mem_total as f32 };
        let why = format!("MemAvailable {} MiB of {} MiB ({pct:.1} %)", r.mem_available >> 20, r.mem_total >> 20);
        let level = if pct < self.available_percent {
            Level::High
        } else if pct > self.available_percent * CALM_AVAILABLE_FACTOR {
            Level::Calm
        } else {
            Level::Between
        };
        (level, why)
    }
}

/// A move of the ladder by one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: u8,
    pub to: u8,
    pub why: String,
}

impl Change {
    pub fn climbed(&self) -> bool {
        self.to > self.from
    }
}

/// The ladder (see the module invariants).
#[derive(Debug)]
pub struct Ladder {
    limits: Thresholds,
    step: u8,
    since_ms: i64,
    why: String,
    high_since: Option<i64>,
    calm_since: Option<i64>,
    /// Times each step was entered / left.
    entered: [u64; 5],
    left: [u64; 5],
    last: Option<Reading>,
    /// When pressure began (start of the high run that led up from step 0).
    pressure_began_ms: Option<i64>,
    /// ms from the start of pressure to entering each step, last climb.
    reached_after_ms: [Option<i64>; 5],
}

/// The ladder as `/api/system` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub step: u8,
    pub name: &'static str,
    pub why: String,
    pub since_ms: i64,
    pub entered: [u64; 5],
    pub left: [u64; 5],
    /// ms from the start of memory pressure to reaching each step (last climb).
    pub reached_after_ms: [Option<i64>; 5],
    pub reading: Option<Reading>,
    pub thresholds: Thresholds,
}

impl Ladder {
    pub fn new(limits: Thresholds, now_ms: i64) -> Self {
        Ladder {
            limits,
            step: 0,
            since_ms: now_ms,
            why: "no memory pressure seen yet".into(),
            high_since: None,
            calm_since: None,
            entered: [0; 5],
            left: [0; 5],
            last: None,
            pressure_began_ms: None,
            reached_after_ms: [None; 5],
        }
    }

    pub fn step(&self) -> u8 {
        self.step
    }

    /// Takes one reading at `now_ms`; returns the change it caused, if any.
    pub fn tick(&mut self, now_ms: i64, r: Reading) -> Option<Change> {
        let (level, why) = self.limits.judge(&r);
        self.last = Some(r);
        match level {
            Level::High => {
                self.calm_since = None;
                let since = *self.high_since.get_or_insert(now_ms);
                if self.step == 0 && self.pressure_began_ms.is_none() {
                    self.pressure_began_ms = Some(since);
                }
                if self.step < MAX_STEP && now_ms - since >= self.limits.climb_ms {
                    self.high_since = Some(now_ms);
                    let secs = self.limits.climb_ms as f64 / 1000.0;
                    return Some(self.go(self.step + 1, now_ms, format!("{why} for {secs:.0} s")));
                }
            }
            Level::Calm => {
                self.high_since = None;
                if self.step == 0 {
                    self.pressure_began_ms = None;
                }
                let since = *self.calm_since.get_or_insert(now_ms);
                if self.step > 0 && now_ms - since >= self.limits.calm_ms {
                    self.calm_since = Some(now_ms);
                    let secs = self.limits.calm_ms as f64 / 1000.0;
                    return Some(self.go(self.step - 1, now_ms, format!("{why}: calm for {secs:.0} s")));
                }
            }
            Level::Between => {
                self.high_since = None;
                self.calm_since = None;
            }
        }
        None
    }

    fn go(&mut self, to: u8, now_ms: i64, why: String) -> Change {
        let from = self.step;
        self.left[usize::from(from)] += 1;
        self.entered[usize::from(to)] += 1;
        if to > from {
            self.reached_after_ms[usize::from(to)] = self.pressure_began_ms.map(|b| now_ms - b);
        }
        if to == 0 {
            self.pressure_began_ms = None;
        }
        self.step = to;
        self.since_ms = now_ms;
        self.why = why.clone();
        Change { from, to, why }
    }

    pub fn report(&self) -> Report {
        Report {
            step: self.step,
            name: STEP_NAMES[usize::from(self.step)],
            why: self.why.clone(),
            since_ms: self.since_ms,
            entered: self.entered,
            left: self.left,
            reached_after_ms: self.reached_after_ms,
            reading: self.last.clone(),
            thresholds: self.limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> Thresholds {
        Thresholds { some_percent: 10.0, full_percent: 5.0, available_percent: 10.0, climb_ms: 5000, calm_ms: 60_000 }
    }

    fn psi(some: f32, full: f32) -> Reading {
        Reading { some_avg10: Some(some), full_avg10: Some(full), mem_available: 100 * MIB, mem_total: 200 * MIB }
    }

    fn avail(mib: u64) -> Reading {
        Reading { some_avg10: None, full_avg10: None, mem_available: mib * MIB, mem_total: 100 * MIB }
    }

    /// Ticks once a second from `from_s` to `to_s` (inclusive) with `r`; the changes.
    fn run(l: &mut Ladder, from_s: i64, to_s: i64, r: Reading) -> Vec<(i64, u8)> {
        (from_s..=to_s).filter_map(|s| l.tick(s * 1000, r.clone()).map(|c| (s, c.to))).collect()
    }

    #[test]
    fn pressure_climbs_one_step_per_climb_time_and_stops_at_the_top() {
        let mut l = Ladder::new(limits(), 0);
        assert_eq!(run(&mut l, 0, 30, psi(40.0, 12.0)), vec![(5, 1), (10, 2), (15, 3), (20, 4)]);
        let r = l.report();
        assert_eq!((r.step, r.name), (4, "lowest-priority streams stopped"));
        assert_eq!(r.why, "PSI memory some avg10 40.0 %, full avg10 12.0 % for 5 s");
        assert_eq!((r.since_ms, r.entered, r.left), (20_000, [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]));
        assert_eq!(r.reached_after_ms, [None, Some(5000), Some(10_000), Some(15_000), Some(20_000)]);
    }

    #[test]
    fn calm_descends_one_step_per_calm_time_in_reverse() {
        let mut l = Ladder::new(limits(), 0);
        run(&mut l, 0, 10, psi(40.0, 0.0));
        assert_eq!(l.step(), 2);
        let down = run(&mut l, 11, 200, psi(1.0, 0.0));
        assert_eq!(down, vec![(71, 1), (131, 0)], "60 s of calm per step");
        assert_eq!(l.report().why, "PSI memory some avg10 1.0 %, full avg10 0.0 %: calm for 60 s");
        assert_eq!(l.report().entered[0], 1);
    }

    #[test]
    fn a_short_spike_or_a_middling_reading_moves_nothing() {
        let mut l = Ladder::new(limits(), 0);
        assert!(run(&mut l, 0, 3, psi(40.0, 0.0)).is_empty(), "4 s of pressure is not 5");
        assert!(run(&mut l, 4, 4, psi(7.0, 0.0)).is_empty(), "between calm and high: the wait restarts");
        assert!(run(&mut l, 5, 9, psi(40.0, 0.0)).is_empty());
        assert_eq!(run(&mut l, 10, 10, psi(40.0, 0.0)), vec![(10, 1)]);
        // Between the thresholds for minutes: neither climbs nor descends.
        assert!(run(&mut l, 11, 300, psi(7.0, 1.0)).is_empty());
        assert_eq!(l.step(), 1);
        // Calm, interrupted by one middling reading, needs a full 60 s again.
        assert!(run(&mut l, 301, 350, psi(0.0, 0.0)).is_empty());
        assert!(run(&mut l, 351, 351, psi(6.0, 0.0)).is_empty());
        assert_eq!(run(&mut l, 352, 420, psi(0.0, 0.0)), vec![(412, 0)]);
    }

    #[test]
    fn full_stalls_alone_count_as_pressure() {
        let mut l = Ladder::new(limits(), 0);
        assert_eq!(run(&mut l, 0, 5, psi(0.0, 5.0)), vec![(5, 1)]);
    }

    #[test]
    fn without_psi_mem_available_drives_it_with_its_own_hysteresis() {
        let mut l = Ladder::new(limits(), 0);
        assert_eq!(run(&mut l, 0, 5, avail(8)), vec![(5, 1)]);
        assert!(l.report().why.starts_with("MemAvailable 8 MiB of 100 MiB (8.0 %)"), "{}", l.report().why);
        assert!(run(&mut l, 6, 100, avail(14)).is_empty(), "14 % is above 10 % but not calm (15 %)");
        assert_eq!(run(&mut l, 101, 161, avail(16)), vec![(161, 0)]);
    }

    #[test]
    fn the_time_to_each_step_counts_from_the_start_of_pressure() {
        let mut l = Ladder::new(limits(), 0);
        run(&mut l, 100, 104, psi(1.0, 0.0));
        run(&mut l, 105, 111, psi(50.0, 0.0));
        assert_eq!(l.report().reached_after_ms[1], Some(5000));
        assert_eq!(l.report().reached_after_ms[2], None);
    }

    #[test]
    fn the_kernel_files_parse() {
        let psi =
            "some avg10=12.50 avg60=3.00 avg300=0.50 total=123\nfull avg10=4.25 avg60=1.00 avg300=0.10 total=45\n";
        assert_eq!(parse_psi(psi), (Some(12.5), Some(4.25)));
        assert_eq!(parse_psi("garbage"), (None, None));
        let mi = "MemTotal:       16000 kB\nMemFree:  100 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(parse_meminfo(mi), Some((16000 * 1024, 4000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn the_proc_source_reads_psi_when_present_and_meminfo_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = ProcSource { root: dir.path().to_path_buf() };
        let e = src.read().expect_err("no meminfo");
        assert!(e.to_string().contains("meminfo"), "{e}");
        std::fs::write(dir.path().join("meminfo"), "MemTotal: 1024 kB\nMemAvailable: 512 kB\n").expect("write");
        assert_eq!(src.read().expect("read").some_avg10, None);
        std::fs::create_dir(dir.path().join("pressure")).expect("mkdir");
        std::fs::write(dir.path().join("pressure/memory"), "some avg10=1.00\nfull avg10=2.00\n").expect("write");
        let r = src.read().expect("read");
        assert_eq!((r.some_avg10, r.full_avg10, r.mem_available), (Some(1.0), Some(2.0), 512 * 1024));
    }
}
