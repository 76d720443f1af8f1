//! The governor: what the box's memory is spent on. `budget` admits each
//! stream into a memory budget (docs/ARCHITECTURE.md, "Memory budget");
//! `go2rtc` runs go2rtc within its reservation (docs/ARCHITECTURE.md,
//! "go2rtc supervised"). Later stages (the pressure ladder, swap) live here too.
//!
//! Layer: after `config`, before `auth` and `recording`, which asks it for
//! admission; it names no higher layer.

pub mod budget;
pub mod go2rtc;

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
