//! Logging: lines to stderr with time, level and thread, plus the last
//! `KEEP` lines in memory so the API and the UART shell can show them.
//! `OXINVR_LOG` sets the level (error, warn, info, debug, trace; default info);
//! other crates log at warn and above only.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

const KEEP: usize = 500;

struct Logger {
    level: log::LevelFilter,
    recent: Mutex<VecDeque<String>>,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        let ours = m.target().starts_with("oxinvr");
        m.level() <= if ours { self.level } else { self.level.min(log::LevelFilter::Warn) }
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = crate::clock::rfc3339(crate::clock::Clock::now_ms(&crate::clock::RealClock));
        let thread = std::thread::current();
        let line = format!("{now} {:<5} [{}] {}", r.level(), thread.name().unwrap_or("?"), r.args());
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(line);
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = std::env::var("OXINVR_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(log::LevelFilter::Info);
    let logger = LOGGER.get_or_init(|| Logger { level, recent: Mutex::new(VecDeque::new()) });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// The most recent log lines, oldest first.
pub fn recent(n: usize) -> Vec<String> {
    let Some(l) = LOGGER.get() else { return Vec::new() };
    let recent = l.recent.lock().unwrap_or_else(|p| p.into_inner());
    recent.iter().skip(recent.len().saturating_sub(n)).cloned().collect()
}
