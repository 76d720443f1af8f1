//! The detection fleet: one `detect-NAME` thread per stream the recorder
//! has, kept in step with the stream list by the `detect-fleet` thread, so a
//! stream added through the API gets detection without a restart and a
//! deleted one's thread ends.
//!
//! Invariants: at most one thread per stream name; a stream's counters are
//! in [`StatsMap`] exactly while its thread runs; stopping the fleet stops
//! every thread (flags first, then joins: [`DetectHandle::stop_all`]).

use super::worker::{DetectHandle, DetectSetup, DetectStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the fleet compares its threads with the stream list.
const SYNC_EVERY: Duration = Duration::from_millis(500);

/// Each running detection thread's counters, by stream name (the API reads them).
#[derive(Debug, Default)]
pub struct StatsMap(Mutex<HashMap<String, Arc<DetectStats>>>);

impl StatsMap {
    pub fn get(&self, stream: &str) -> Option<Arc<DetectStats>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(stream).cloned()
    }

    fn set(&self, stream: &str, stats: Option<Arc<DetectStats>>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match stats {
            Some(s) => map.insert(stream.to_owned(), s),
            None => map.remove(stream),
        };
    }
}

/// The stream names there are now.
pub type Names = Box<dyn Fn() -> Vec<String> + Send>;
/// What a new thread for a stream needs (None: the stream went away meanwhile).
pub type Setups = Box<dyn Fn(&str) -> Option<DetectSetup> + Send>;

/// The running fleet; [`Fleet::stop`] ends it and every detection thread.
pub struct Fleet {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    /// Starts a thread for every stream in `names()` now (before returning,
    /// so the API finds them), then the `detect-fleet` thread that follows the list.
    pub fn spawn(names: Names, setups: Setups, stats: Arc<StatsMap>) -> std::io::Result<Fleet> {
        let mut running = Running { handles: HashMap::new(), setups, stats };
        running.sync(&names());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::Builder::new().name("detect-fleet".into()).stack_size(128 << 10).spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(SYNC_EVERY);
                    running.sync(&names());
                }
                running.stop_all();
            })?;
        Ok(Fleet { stop, thread: Some(thread) })
    }

    /// Stops the fleet and every detection thread, and waits for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Running {
    handles: HashMap<String, DetectHandle>,
    setups: Setups,
    stats: Arc<StatsMap>,
}

impl Running {
    /// Starts threads for new names, stops those whose stream is gone.
    fn sync(&mut self, names: &[String]) {
        let gone: Vec<String> = self.handles.keys().filter(|n| !names.contains(n)).cloned().collect();
        let stopped: Vec<DetectHandle> = gone.iter().filter_map(|n| self.remove(n)).collect();
        DetectHandle::stop_all(stopped);
        for name in names {
            if self.handles.contains_key(name) {
                continue;
            }
            let Some(setup) = (self.setups)(name) else { continue };
            match super::worker::spawn(setup) {
                Ok(h) => {
                    self.stats.set(name, Some(h.stats.clone()));
                    self.handles.insert(name.clone(), h);
                }
                Err(e) => log::error!("stream {name}: detection not started: {e}"),
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<DetectHandle> {
        self.stats.set(name, None);
        self.handles.remove(name)
    }

    fn stop_all(&mut self) {
        let names: Vec<String> = self.handles.keys().cloned().collect();
        let all: Vec<DetectHandle> = names.iter().filter_map(|n| self.remove(n)).collect();
        DetectHandle::stop_all(all);
    }
}
