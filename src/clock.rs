//! Time as a dependency: code that decides by time (retention, reconnect
//! backoff, sync policy) takes a `Clock` so tests can drive it deterministically.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that only moves when told to. (A mutex, not an `AtomicI64`: 32-bit
/// MIPS has no 64-bit atomics.)
#[derive(Debug, Default)]
pub struct SimulatedClock(Mutex<i64>);

impl SimulatedClock {
    pub fn new(ms: i64) -> Self {
        SimulatedClock(Mutex::new(ms))
    }
    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += d.as_millis() as i64;
    }
    pub fn set(&self, ms: i64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = ms;
    }
}

impl Clock for SimulatedClock {
    fn now_ms(&self) -> i64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
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
    fn times_parse_and_format() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T23:13:20.123+01:00"), Ok(1_700_000_000_123));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
