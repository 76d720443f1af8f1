//! The one shutdown signal every long-running loop is given: cheap to clone,
//! cheap to poll, and waitable (a loop that sleeps wakes at once when the
//! recorder stops instead of finishing its sleep).
//!
//! Invariant: once triggered it stays triggered.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder to stop; wakes those waiting.
    pub fn trigger(&self) {
        let (lock, cv) = &*self.inner;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps up to `d`; true if the shutdown was triggered (before or during).
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv.wait_timeout_while(guard, d, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiting_loop_wakes_when_triggered_and_the_signal_stays() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        let other = s.clone();
        let t = std::thread::spawn(move || {
            let began = Instant::now();
            (other.wait_timeout(Duration::from_secs(30)), began.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        let (woke, after) = t.join().expect("join");
        assert!(woke && after < Duration::from_secs(10));
        assert!(s.is_triggered() && s.wait_timeout(Duration::from_secs(30)));
    }
}
