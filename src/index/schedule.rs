//! A stream's weekly recording schedule: entries like
//! `"mon-fri 07:00-19:00 continuous"` or `"sat,sun 22:00-06:00 events"`,
//! in the box's local time. At a given local time the first entry that
//! covers it gives the record mode; where none does, the stream's `record`.
//!
//! Invariants:
//! - An entry is days, a window and a mode, separated by spaces. Days are
//!   `mon`..`sun`, ranges (`mon-fri`, `fri-mon` wraps), lists (`sat,sun`) or
//!   `daily`. The window is `HH:MM-HH:MM`, start inclusive, end exclusive;
//!   `24:00` ends at midnight; an end at or before the start runs past
//!   midnight into the next day (a window belongs to the day it starts).
//! - Parsing never panics and names what is wrong; matching is pure (the
//!   local week minute comes from [`local_week_minute`]).

use super::db::RecordMode;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_MIN: u32 = 24 * 60;
const WEEK_MIN: u32 = 7 * DAY_MIN;

/// One parsed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Bit `d` set: the window starts on weekday `d` (0 = Monday).
    days: u8,
    start_min: u32,
    /// Minutes from `start_min`, 1..=1440.
    len_min: u32,
    pub mode: RecordMode,
}

impl Entry {
    pub fn parse(text: &str) -> Result<Entry, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [days, window, mode] = words[..] else {
            return Err(format!("schedule entry {text:?}: expected \"<days> <HH:MM>-<HH:MM> <mode>\", e.g. \"mon-fri 07:00-19:00 continuous\""));
        };
        let days = parse_days(days).map_err(|e| format!("schedule entry {text:?}: {e}"))?;
        let (start, end) = window
            .split_once('-')
            .ok_or_else(|| format!("schedule entry {text:?}: window {window:?} is not HH:MM-HH:MM"))?;
        let start_min = parse_time(start).map_err(|e| format!("schedule entry {text:?}: {e}"))?;
        let end_min = parse_time(end).map_err(|e| format!("schedule entry {text:?}: {e}"))?;
        if start_min == DAY_MIN {
            return Err(format!("schedule entry {text:?}: a window cannot start at 24:00"));
        }
        let mode = RecordMode::parse(mode).ok_or_else(|| {
            format!("schedule entry {text:?}: mode {mode:?} is not \"continuous\", \"events\" or \"off\"")
        })?;
        let len_min = if end_min > start_min { end_min - start_min } else { end_min + DAY_MIN - start_min };
        Ok(Entry { days, start_min, len_min, mode })
    }

    /// Whether the entry covers `week_min` (minutes since Monday 00:00).
    fn covers(&self, week_min: u32) -> bool {
        (0..7u32).filter(|d| self.days & (1 << d) != 0).any(|d| {
            let from = d * DAY_MIN + self.start_min;
            // Minutes since the window's start, the week wrapping (Sunday night into Monday).
            let since = (week_min + WEEK_MIN - from) % WEEK_MIN;
            since < self.len_min
        })
    }
}

fn parse_days(text: &str) -> Result<u8, String> {
    if text == "daily" {
        return Ok(0x7f);
    }
    let mut bits = 0u8;
    for part in text.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (day(a)?, day(b)?);
        let mut d = a;
        loop {
            bits |= 1 << d;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(bits)
}

fn day(text: &str) -> Result<u32, String> {
    DAY_NAMES
        .iter()
        .position(|d| *d == text.to_ascii_lowercase())
        .map(|d| d as u32)
        .ok_or_else(|| format!("day {text:?} is not one of mon tue wed thu fri sat sun (or \"daily\")"))
}

fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("time {text:?} is not HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) => Ok(DAY_MIN),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// Parses every entry; the first error names the entry.
pub fn parse(entries: &[String]) -> Result<Vec<Entry>, String> {
    entries.iter().map(|e| Entry::parse(e)).collect()
}

/// The mode at `week_min`: the first covering entry's, else `default`.
/// Unparsable entries (validated away before they are stored) are skipped.
pub fn mode_at(entries: &[String], default: RecordMode, week_min: u32) -> RecordMode {
    entries.iter().filter_map(|e| Entry::parse(e).ok()).find(|e| e.covers(week_min)).map_or(default, |e| e.mode)
}

/// Minutes since Monday 00:00 in the box's local time (the `TZ` variable or
/// /etc/localtime; UTC when neither is set) at wall time `ms`.
// time_t is i64 on glibc x86-64 (the conversion is then the identity), 32 bits on some targets.
#[allow(irrefutable_let_patterns, clippy::useless_conversion)]
pub fn local_week_minute(ms: i64) -> u32 {
    // time_t's width differs by C library (and musl deprecates naming it): inferred.
    let Ok(secs) = ms.div_euclid(1000).try_into() else { return utc_week_minute(ms) };
    // SAFETY: localtime_r only writes the `tm` we own; a zeroed tm is a valid value.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::localtime_r(&secs, &mut tm).is_null() } {
        return utc_week_minute(ms);
    }
    let weekday = (tm.tm_wday as u32 + 6) % 7; // tm_wday: 0 = Sunday
    weekday * DAY_MIN + tm.tm_hour as u32 * 60 + tm.tm_min as u32
}

/// UTC arithmetic, for times the C library cannot convert (1970-01-01 was a Thursday).
fn utc_week_minute(ms: i64) -> u32 {
    let min = ms.div_euclid(60_000);
    ((min + 3 * i64::from(DAY_MIN)).rem_euclid(i64::from(WEEK_MIN))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, h: u32, m: u32) -> u32 {
        day * DAY_MIN + h * 60 + m
    }

    fn mode(entries: &[&str], week_min: u32) -> RecordMode {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        mode_at(&e, RecordMode::Off, week_min)
    }

    #[test]
    fn weekdays_window_and_default_outside() {
        let s = ["mon-fri 07:00-19:00 continuous"];
        assert_eq!(mode(&s, at(0, 7, 0)), RecordMode::Continuous);
        assert_eq!(mode(&s, at(4, 18, 59)), RecordMode::Continuous);
        assert_eq!(mode(&s, at(4, 19, 0)), RecordMode::Off, "end is exclusive");
        assert_eq!(mode(&s, at(5, 12, 0)), RecordMode::Off, "saturday is outside");
        assert_eq!(mode(&s, at(0, 6, 59)), RecordMode::Off);
    }

    #[test]
    fn windows_past_midnight_and_sunday_into_monday() {
        let s = ["sun 22:00-06:00 events"];
        assert_eq!(mode(&s, at(6, 23, 0)), RecordMode::Events);
        assert_eq!(mode(&s, at(0, 5, 59)), RecordMode::Events, "Sunday's night runs into Monday");
        assert_eq!(mode(&s, at(0, 6, 0)), RecordMode::Off);
        assert_eq!(mode(&s, at(5, 23, 0)), RecordMode::Off);
        let all = ["daily 00:00-24:00 continuous"];
        assert!((0..WEEK_MIN).step_by(37).all(|m| mode(&all, m) == RecordMode::Continuous));
    }

    #[test]
    fn first_entry_wins_and_lists_and_wrapping_ranges_parse() {
        let s = ["sat,sun 00:00-24:00 off", "daily 08:00-20:00 continuous"];
        assert_eq!(mode(&s, at(5, 10, 0)), RecordMode::Off);
        assert_eq!(mode(&s, at(2, 10, 0)), RecordMode::Continuous);
        assert_eq!(parse_days("fri-mon"), Ok(0b111_0001));
        assert_eq!(parse_days("Mon,wed"), Ok(0b101));
    }

    #[test]
    fn bad_entries_name_what_is_wrong() {
        for (text, needle) in [
            ("mon-fri 07:00-19:00", "expected"),
            ("mon-fry 07:00-19:00 continuous", "\"fry\""),
            ("mon 7:00-19:00 continuous", "\"7:00\""),
            ("mon 07:00-25:00 continuous", "\"25:00\""),
            ("mon 24:00-01:00 continuous", "24:00"),
            ("mon 07:00 continuous", "HH:MM-HH:MM"),
            ("mon 07:00-08:00 always", "\"always\""),
        ] {
            let e = Entry::parse(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn local_week_minute_follows_the_clock() {
        // 2026-12-07 is a Monday; the test process runs in UTC unless TZ says otherwise,
        // so only check the minute-of-day moves with the clock and stays in range.
        let monday_noon_utc = 1_796_644_800_000;
        let a = local_week_minute(monday_noon_utc);
        let b = local_week_minute(monday_noon_utc + 90 * 60_000);
        assert!(a < WEEK_MIN && b < WEEK_MIN);
        assert_eq!((b + WEEK_MIN - a) % WEEK_MIN, 90);
        assert_eq!(utc_week_minute(monday_noon_utc), 12 * 60, "the UTC fallback knows Monday noon");
    }
}
