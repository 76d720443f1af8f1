//! The governor: what the box's memory is spent on. `budget` admits each
//! stream into a memory budget (docs/ARCHITECTURE.md, "Memory budget");
//! `pressure` turns the kernel's memory pressure into a ladder step; `swap`
//! owns the swapfile the ladder turns on. Pure logic and system calls: the
//! web layer's `pressure` driver applies the steps. `watchdog` feeds the
//! hardware watchdog while every part makes progress. `go2rtc` runs go2rtc
//! within its reservation (docs/ARCHITECTURE.md, "go2rtc supervised").
//!
//! Layer: after `config`, before `auth` and `recording`, which asks it for
//! admission; it names no higher layer.

pub mod budget;
pub mod go2rtc;
pub mod pressure;
pub mod swap;
pub mod watchdog;

use crate::config::Config;
use budget::Budget;

const MIB: u64 = 1 << 20;
/// The process without streams: code, SQLite's cache, thread stacks, the
/// allocator's slack (PSS 10.2 MiB on x86 as 16 streams started, `scripts/soak`).
pub const PROCESS_BYTES: u64 = 12 * MIB;
/// HTTP: workers, senders and the pages of connection threads' stacks in use.
pub const HTTP_BYTES: u64 = 4 * MIB;
/// One live viewer: its queue of fragments and socket buffers.
pub const LIVE_CLIENT_BYTES: u64 = 512 << 10;

/// The budget `config` asks for (`memory.budget_mb`, or derived from the
/// machine's `mem_total` bytes when 0) with its fixed reservations; a
/// supervised go2rtc reserves its `max_rss_mb`, the RSS it is killed above.
pub fn budget(config: &Config, mem_total: u64) -> Budget {
    let total = match config.memory.budget_mb {
        0 => budget::default_total(mem_total),
        mb => u64::from(mb) * MIB,
    };
    let live = u64::from(config.web.max_live_clients) * LIVE_CLIENT_BYTES;
    let mut fixed = vec![("process", PROCESS_BYTES), ("http", HTTP_BYTES), ("live", live)];
    if !config.go2rtc.binary.is_empty() {
        fixed.push(("go2rtc", u64::from(config.go2rtc.max_rss_mb) * MIB));
    }
    Budget::new(total, fixed)
}

/// The ladder's thresholds from `[memory]`.
pub fn thresholds(config: &Config) -> pressure::Thresholds {
    let m = &config.memory;
    pressure::Thresholds {
        some_percent: m.pressure_some_percent,
        full_percent: m.pressure_full_percent,
        available_percent: m.available_percent,
        climb_ms: i64::from(m.climb_seconds) * 1000,
        calm_ms: i64::from(m.calm_seconds) * 1000,
    }
}

/// Writes `adj` to /proc/self/oom_score_adj (so the kernel's OOM killer picks
/// another process first); the error names the file and what the kernel said.
pub fn set_oom_score_adj(adj: i32) -> Result<(), String> {
    let path = "/proc/self/oom_score_adj";
    std::fs::write(path, adj.to_string()).map_err(|e| format!("cannot write {adj} to {path}: {e}"))
}
