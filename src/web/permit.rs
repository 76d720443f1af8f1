//! A counted permit: at most `max` holders of one counter at a time (live
//! clients, running probes), given back when dropped.
//!
//! Invariant: the counter equals the number of live `Permit`s on it.

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Permit(&'static AtomicUsize);

impl Permit {
    /// A permit if fewer than `max` are held, else None.
    pub fn try_take(counter: &'static AtomicUsize, max: usize) -> Option<Permit> {
        let free = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        free.ok().map(|_| Permit(counter))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
