//! The memory budget: the bytes the process may use (`[memory] budget_mb`),
//! split into fixed reservations (the process itself, HTTP, live viewers), a
//! safety margin of `MARGIN_PERCENT` and one reservation per running stream.
//! A stream whose reservation does not fit waits, with the numbers, until one
//! is released or the budget is raised.
//!
//! Invariants:
//! - The reservations held never sum to more than the budget, except after
//!   the budget was lowered: running streams keep theirs (stopping them is the
//!   pressure ladder's decision, not the budget's), and nothing new is
//!   admitted until they fit again.
//! - Waiting streams are admitted in order of priority (higher first), then of
//!   asking. One that does not fit blocks those behind it, so a large stream of
//!   high priority is never starved by a stream of small ones.
//! - Pure bookkeeping: no I/O, no clock; callers start what was admitted.

use std::collections::BTreeMap;

use serde::Serialize;

const MIB: u64 = 1 << 20;
/// Share of the budget kept free for what the estimates miss.
pub const MARGIN_PERCENT: u64 = 10;

/// Why a stream waits: what it needs and what the budget has free now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Wait {
    pub needs_bytes: u64,
    pub free_bytes: u64,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "waiting for memory: needs {}, {} free in the budget", mib(self.needs_bytes), mib(self.free_bytes))
    }
}

/// `bytes` as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[derive(Clone, Debug)]
struct Waiter {
    name: String,
    bytes: u64,
    priority: i32,
}

/// The budget and who holds what (see the module invariants).
#[derive(Debug)]
pub struct Budget {
    total: u64,
    fixed: Vec<(&'static str, u64)>,
    held: BTreeMap<String, u64>,
    /// In admission order: priority descending, then order of asking.
    waiting: Vec<Waiter>,
}

/// The budget as `/api/system` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub budget_bytes: u64,
    pub free_bytes: u64,
    pub fixed: BTreeMap<&'static str, u64>,
    pub streams: BTreeMap<String, u64>,
    pub waiting: Vec<WaitingStream>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WaitingStream {
    pub name: String,
    pub needs_bytes: u64,
    pub priority: i32,
}

impl Budget {
    /// A budget of `total` bytes less the `fixed` reservations and the margin.
    pub fn new(total: u64, fixed: Vec<(&'static str, u64)>) -> Self {
        Budget { total, fixed, held: BTreeMap::new(), waiting: Vec::new() }
    }

    fn margin(&self) -> u64 {
        self.total / 100 * MARGIN_PERCENT
    }

    fn used(&self) -> u64 {
        self.fixed.iter().map(|(_, b)| b).chain(self.held.values()).sum::<u64>() + self.margin()
    }

    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used())
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Asks for `bytes` for stream `name`: `None` if admitted now, else why it
    /// waits. Asking again under the same name replaces the earlier request; a
    /// stream holding a reservation (a restart) keeps its place if the new
    /// size fits in what it held plus what is free.
    pub fn ask(&mut self, name: &str, bytes: u64, priority: i32) -> Option<Wait> {
        if let Some(&old) = self.held.get(name) {
            if bytes <= self.free() + old {
                self.held.insert(name.to_string(), bytes);
                return None;
            }
        }
        self.forget(name);
        let w = Waiter { name: name.to_string(), bytes, priority };
        let at = self.waiting.iter().position(|o| o.priority < priority).unwrap_or(self.waiting.len());
        self.waiting.insert(at, w);
        self.admit();
        self.wait_of(name)
    }

    /// Drops `name`'s reservation (or its place in the queue); returns the
    /// streams this admitted.
    pub fn release(&mut self, name: &str) -> Vec<String> {
        self.forget(name);
        self.admit()
    }

    /// Admits what fits now (after a reservation shrank); returns the names.
    pub fn admit_waiting(&mut self) -> Vec<String> {
        self.admit()
    }

    /// Sets the budget; returns the streams a raise admitted.
    pub fn set_total(&mut self, total: u64) -> Vec<String> {
        self.total = total;
        self.admit()
    }

    /// Why `name` waits, if it does.
    pub fn wait_of(&self, name: &str) -> Option<Wait> {
        let w = self.waiting.iter().find(|w| w.name == name)?;
        Some(Wait { needs_bytes: w.bytes, free_bytes: self.free() })
    }

    /// Every waiting stream with its wait, in admission order.
    pub fn waits(&self) -> Vec<(String, Wait)> {
        let free = self.free();
        self.waiting.iter().map(|w| (w.name.clone(), Wait { needs_bytes: w.bytes, free_bytes: free })).collect()
    }

    pub fn report(&self) -> Report {
        Report {
            budget_bytes: self.total,
            free_bytes: self.free(),
            fixed: self.fixed.iter().copied().chain([("margin", self.margin())]).collect(),
            streams: self.held.clone(),
            waiting: self
                .waiting
                .iter()
                .map(|w| WaitingStream { name: w.name.clone(), needs_bytes: w.bytes, priority: w.priority })
                .collect(),
        }
    }

    fn forget(&mut self, name: &str) {
        self.held.remove(name);
        self.waiting.retain(|w| w.name != name);
    }

    /// Admits waiters from the front while they fit.
    fn admit(&mut self) -> Vec<String> {
        let mut admitted = Vec::new();
        while let Some(w) = self.waiting.first() {
            if w.bytes > self.free() {
                break;
            }
            let w = self.waiting.remove(0);
            self.held.insert(w.name.clone(), w.bytes);
            admitted.push(w.name);
        }
        admitted
    }
}

/// The default budget for a machine with `mem_total` bytes: what is left after
/// 64 MiB for the kernel, go2rtc and the rest of the box, less 40 % of that
/// for the page cache that recording writes through; at least 32 MiB, at most
/// 4 GiB. 156 MB (the stock A1's Linux) gives 55 MiB, 256 MB 115 MiB.
pub fn default_total(mem_total: u64) -> u64 {
    let rest = mem_total.saturating_sub(64 * MIB);
    (rest / 10 * 6).clamp(32 * MIB, 4096 * MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 MiB less 10 MiB fixed and the 10 MiB margin: 80 MiB for streams.
    fn budget() -> Budget {
        Budget::new(100 * MIB, vec![("process", 10 * MIB)])
    }

    #[test]
    fn streams_fit_until_the_budget_is_spent_then_wait_with_the_numbers() {
        let mut b = budget();
        assert_eq!(b.ask("a", 38 * MIB, 0), None);
        assert_eq!(b.ask("b", 38 * MIB, 0), None);
        let w = b.ask("c", 38 * MIB, 0).expect("c waits");
        assert_eq!(w, Wait { needs_bytes: 38 * MIB, free_bytes: 4 * MIB });
        assert_eq!(w.to_string(), "waiting for memory: needs 38.0 MiB, 4.0 MiB free in the budget");
        assert_eq!(b.release("a"), vec!["c".to_string()], "a freed reservation admits the next one");
        assert_eq!(b.free(), 4 * MIB);
        let r = b.report();
        assert_eq!((r.fixed["process"], r.fixed["margin"]), (10 * MIB, 10 * MIB));
    }

    #[test]
    fn higher_priority_goes_first_and_blocks_smaller_ones_behind_it() {
        let mut b = budget();
        assert_eq!(b.ask("big", 70 * MIB, 0), None);
        assert!(b.ask("low", 8 * MIB, 0).is_none(), "8 of 10 MiB free: fits");
        assert!(b.ask("high", 10 * MIB, 5).is_some());
        assert!(b.ask("small", MIB, 0).is_some(), "behind a waiting stream of higher priority");
        assert_eq!(b.waits().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["high", "small"]);
        assert_eq!(b.release("big"), vec!["high".to_string(), "small".to_string()]);
    }

    #[test]
    fn a_raised_budget_admits_and_a_lowered_one_stops_nobody() {
        let mut b = budget();
        assert_eq!(b.ask("a", 60 * MIB, 0), None);
        assert!(b.ask("b", 30 * MIB, 0).is_some());
        assert_eq!(b.set_total(200 * MIB), vec!["b".to_string()]);
        assert!(b.set_total(50 * MIB).is_empty());
        assert_eq!(b.report().streams.len(), 2, "running streams keep their reservations");
        assert_eq!(b.free(), 0);
        assert!(b.ask("c", MIB, 9).is_some(), "nothing new until they fit again");
    }

    #[test]
    fn asking_again_replaces_the_request() {
        let mut b = budget();
        assert_eq!(b.ask("a", 70 * MIB, 0), None);
        assert!(b.ask("w", 12 * MIB, 9).is_some(), "10 MiB free");
        assert_eq!(b.ask("a", 75 * MIB, 0), None, "a restart with a larger ring keeps its place");
        assert_eq!(b.report().streams["a"], 75 * MIB);
        assert_eq!(b.ask("a", 60 * MIB, 0), None);
        assert_eq!(b.admit_waiting(), vec!["w".to_string()], "a smaller one makes room");
        assert!(b.ask("a", 90 * MIB, 0).is_some(), "too large even for its own place: it waits");
        assert!(!b.report().streams.contains_key("a"));
    }

    #[test]
    fn the_default_follows_the_machine() {
        assert_eq!(default_total(156 * MIB) / MIB, 55);
        assert_eq!(default_total(256 * MIB) / MIB, 115);
        assert_eq!(default_total(64 * MIB), 32 * MIB);
        assert_eq!(default_total(24 << 30), 4096 * MIB);
    }
}
