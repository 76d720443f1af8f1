//! The stream registry and the one control path that changes it: config at
//! start, the API, the shell (and later MQTT) all go through `Recorder::edit`.
//!
//! Invariants: every change of the registry goes through `edit`, one at a time;
//! a running session is restarted only when a setting it runs with changed;
//! an enabled stream runs (ingest, storage) only while it holds a reservation
//! in the memory budget, else it is registered as `waiting_for_memory` and
//! started when a release or a raised budget admits it. A restart keeps the
//! stream's reservation (resized in place when that fits).

use std::collections::BTreeMap;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, RwLock};

use super::ring::{self, Ring};
use super::stream::{StreamRuntime, StreamState, StreamStatus};
use super::{ingest, storage, stream};
use crate::base::error::{Error, Kind};
use crate::governor::budget::{self, Budget};
use crate::index::db::{StreamRow, StreamSpec};

/// Where stream starts and stops are sent.
#[derive(Clone)]
pub struct Channels {
    pub ingest: smol::channel::Sender<ingest::Command>,
    pub storage: std::sync::mpsc::Sender<storage::Command>,
}

/// Default expected bitrate when a stream does not say.
const DEFAULT_BITRATE_KBPS: u32 = 4000;
/// Heap of a stream's ingest beside its ring (the RTSP session's buffers and
/// depacketizer). Measured at 76 KB a stream (16 streams, `scripts/soak`).
const INGEST_HEAP: u64 = 128 << 10;
/// A sub stream's ring: a few seconds (detection reads near the live edge,
/// the live grid starts at the newest keyframe) at a sub stream's usual
/// bitrate; a busier one holds less time, never less than a GOP or two.
pub const SUB_RING_BYTES: usize = 512 << 10;
/// The sub stream's own session heap (retina, depacketizer): as a main one.
const SUB_INGEST_HEAP: u64 = INGEST_HEAP;
/// The storage thread holds about a GOP of a recorded stream: 2 s at its
/// bitrate, at least this (measured at 56 KB a 200 kbit/s stream).
const WRITER_MIN: u64 = 256 << 10;

/// The stream registry and the one control path that changes it.
///
/// Invariants: changes are applied one at a time (`edit` holds a lock for the
/// whole read-modify-write, database row included); a stream's session is
/// restarted only when a setting it runs with changed (`restart_reason`).
pub struct Recorder {
    ring_seconds: u32,
    ring_dir: String,
    streams: RwLock<BTreeMap<String, Arc<StreamRuntime>>>,
    channels: RwLock<Option<Channels>>,
    edits: Mutex<()>,
    budget: Mutex<Budget>,
    /// mlock the ring of each admitted stream (`memory.lock_rings`).
    lock_rings: std::sync::atomic::AtomicBool,
}

/// What `Edit::apply` did to the running stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was not running (new, or just enabled) and now is (or is now disabled).
    Started,
    /// Its session was restarted because this setting changed.
    Restarted(&'static str),
    /// Settings updated in place; the session, ring and open file are untouched.
    Updated,
}

/// The events mode's ring holds `pre_seconds` plus a GOP of this many seconds
/// (the keyframe at or before the pre-buffer's start) plus one of slack for
/// the storage thread to catch up from there.
const PRE_GOP_SECONDS: u32 = 2;
const PRE_SLACK_SECONDS: u32 = 1;

/// The setting whose change needs a new session (and ring), if any: the
/// camera's URL (credentials included), enabled, recording or not (`off`:
/// the reservation differs), and the bitrate the ring is sized for. Between
/// `continuous` and `events` the session runs on (see `Edit::apply`).
pub fn restart_reason(old: &StreamSpec, new: &StreamSpec) -> Option<&'static str> {
    if old.url != new.url {
        Some("url")
    } else if old.sub_url != new.sub_url {
        Some("sub_url")
    } else if old.enabled != new.enabled {
        Some("enabled")
    } else if old.may_record() != new.may_record() {
        Some("record")
    } else if old.bitrate_kbps != new.bitrate_kbps {
        Some("bitrate_kbps")
    } else {
        None
    }
}

impl Recorder {
    pub fn new(ring_seconds: u32, ring_dir: &str, budget: Budget) -> Self {
        Recorder {
            ring_seconds,
            ring_dir: ring_dir.to_string(),
            streams: RwLock::new(BTreeMap::new()),
            channels: RwLock::new(None),
            edits: Mutex::new(()),
            budget: Mutex::new(budget),
            lock_rings: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether admitted streams' rings are locked in RAM (`memory.lock_rings`).
    pub fn set_lock_rings(&self, on: bool) {
        self.lock_rings.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory budget and who holds what.
    pub fn budget_report(&self) -> budget::Report {
        self.budget().report()
    }

    /// Bytes a stream reserves in the budget: its ring, the writer's GOP (if
    /// it records) and its ingest heap.
    pub fn reservation(&self, spec: &StreamSpec) -> u64 {
        let kbps = u64::from(spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS));
        let writer = if spec.may_record() { (kbps * 1000 * 2 / 8).max(WRITER_MIN) } else { 0 };
        let sub = if spec.sub_url.is_some() { SUB_RING_BYTES as u64 + SUB_INGEST_HEAP } else { 0 };
        self.ring_bytes(spec) as u64 + writer + INGEST_HEAP + sub
    }

    pub fn set_channels(&self, ch: Channels) {
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = Some(ch);
    }

    fn channels(&self) -> Option<Channels> {
        self.channels.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The only way to change streams: one edit at a time, for as long as the
    /// returned guard lives.
    pub fn edit(&self) -> Edit<'_> {
        Edit { rec: self, _one_at_a_time: self.edits.lock().unwrap_or_else(|p| p.into_inner()) }
    }

    /// Ring size for a stream: its expected bitrate times its ring seconds.
    pub fn ring_bytes(&self, spec: &StreamSpec) -> usize {
        ring::ring_bytes(spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS), self.ring_seconds_of(spec))
    }

    /// `ring_seconds`, or in events mode at least the pre-buffer, a GOP and
    /// some slack (with the defaults, 5 + 2 + 1 = 8 = `ring_seconds`: the
    /// same ring as continuous, so switching modes keeps the session).
    pub fn ring_seconds_of(&self, spec: &StreamSpec) -> u32 {
        if spec.may_record_events() {
            self.ring_seconds.max(spec.pre_seconds + PRE_GOP_SECONDS + PRE_SLACK_SECONDS)
        } else {
            self.ring_seconds
        }
    }

    fn new_ring(&self, spec: &StreamSpec) -> std::io::Result<Ring> {
        Ring::new(&spec.name, self.ring_bytes(spec), self.ring_dir().as_deref())
    }

    fn ring_dir(&self) -> Option<std::path::PathBuf> {
        if !self.ring_dir.is_empty() {
            return Some((&self.ring_dir).into());
        }
        let shm = std::path::Path::new("/dev/shm");
        shm.is_dir().then(|| shm.to_path_buf())
    }

    /// Asks the storage thread to delete every recording of a stream (row
    /// first, then files) and waits for it. Returns how many were deleted.
    pub fn purge_recordings(&self, stream_id: i64) -> Result<usize, Error> {
        let ch = self.channels().ok_or_else(|| Error::unavailable("the recorder is not running"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = || Error::unavailable("the storage thread has stopped");
        ch.storage.send(storage::Command::Purge(stream_id, tx)).map_err(|_| stopped())?;
        let done = rx.recv_timeout(std::time::Duration::from_secs(60)).map_err(|e| match e {
            RecvTimeoutError::Timeout => Error::new(Kind::Timeout, "the storage thread did not answer in 60 s"),
            RecvTimeoutError::Disconnected => stopped(),
        })?;
        // The storage thread's message names the row or file that failed.
        done.map_err(Error::io)
    }

    /// Sets the memory budget (bytes); streams a raise admits start now, and
    /// no running stream is stopped by a lower one.
    pub fn set_budget(&self, total: u64) -> budget::Report {
        let edit = self.edit();
        let admitted = self.budget().set_total(total);
        edit.launch_admitted(admitted);
        self.budget_report()
    }

    /// Pressure ladder step 4: stops the running streams of the lowest
    /// priority (none if every running stream has the same priority: there
    /// is no lower one to give up; called again, the next lowest, never the
    /// highest). They stay registered, state `stopped`
    /// with `stopped_for` saying why, on a tiny ring (the big one is freed as
    /// ingest and storage let go), and keep their budget reservation so no
    /// waiting stream takes the memory. Returns the names stopped.
    pub fn stop_for_pressure(&self, why: &str) -> Vec<String> {
        let mut edit = self.edit();
        let held = self.budget_report().streams;
        let running: Vec<_> = self
            .streams()
            .into_iter()
            .filter(|rt| held.contains_key(rt.name()) && rt.spec().enabled && rt.status().stopped_for.is_none())
            .collect();
        let prio = |rt: &Arc<StreamRuntime>| rt.spec().priority;
        let (Some(low), Some(high)) = (running.iter().map(prio).min(), running.iter().map(prio).max()) else {
            return Vec::new();
        };
        if low == high {
            log::warn!("memory pressure: every running stream has priority {low}; none is stopped");
            return Vec::new();
        }
        running
            .iter()
            .filter(|rt| prio(rt) == low)
            .filter(|rt| edit.park(rt, why))
            .map(|rt| rt.name().to_string())
            .collect()
    }

    /// Leaving ladder step 4: starts the streams it stopped again (new rings).
    /// Returns the names started.
    pub fn resume_after_pressure(&self) -> Vec<String> {
        let mut edit = self.edit();
        let parked: Vec<_> = self.streams().into_iter().filter(|rt| rt.status().stopped_for.is_some()).collect();
        parked.iter().filter(|rt| edit.unpark(rt)).map(|rt| rt.name().to_string()).collect()
    }

    /// Bytes of all ring mappings (sub streams' included).
    pub fn ring_bytes_total(&self) -> u64 {
        let sub = |s: &Arc<StreamRuntime>| s.sub().map_or(0, |sub| sub.ring.capacity() as u64);
        self.streams().iter().map(|s| s.ring.capacity() as u64 + sub(s)).sum()
    }

    /// Bytes of the sub streams' ring mappings (part of `ring_bytes_total`).
    pub fn sub_ring_bytes_total(&self) -> u64 {
        self.streams().iter().filter_map(|s| s.sub()).map(|sub| sub.ring.capacity() as u64).sum()
    }

    /// Bytes of the ring mappings locked in RAM.
    pub fn ring_bytes_locked(&self) -> u64 {
        self.streams().iter().filter(|s| s.ring.is_locked()).map(|s| s.ring.capacity() as u64).sum()
    }

    pub fn stream(&self, name: &str) -> Option<Arc<StreamRuntime>> {
        self.streams.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn streams(&self) -> Vec<Arc<StreamRuntime>> {
        self.streams.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// The row a running stream was started from (its times are not kept: a
/// `StreamRuntime` needs only the id and the spec).
/// The ring of a stream that does not record (disabled, waiting for memory,
/// stopped for pressure): the smallest there is, in anonymous memory.
fn placeholder(name: &str) -> std::io::Result<Ring> {
    Ring::new(name, ring::MIN_CAPACITY, None)
}

fn row_of(rt: &StreamRuntime) -> StreamRow {
    StreamRow { id: rt.id(), spec: rt.spec(), created_ms: 0, updated_ms: 0 }
}

/// A change of the stream registry in progress (see `Recorder::edit`).
pub struct Edit<'a> {
    rec: &'a Recorder,
    _one_at_a_time: std::sync::MutexGuard<'a, ()>,
}

impl Edit<'_> {
    /// Brings the running stream in line with its (saved) row: starts it if it
    /// is not running, restarts it if a session setting changed, otherwise
    /// updates its settings in place.
    pub fn apply(&mut self, row: &StreamRow) -> std::io::Result<Applied> {
        let Some(rt) = self.rec.stream(&row.spec.name) else {
            self.start(row, None, None)?;
            return Ok(Applied::Started);
        };
        let old = rt.spec();
        // A ring too small for a longer pre-buffer is made anew (a bigger one is kept).
        let grow = (rt.ring.capacity() < self.rec.ring_bytes(&row.spec)).then_some("pre_seconds");
        match restart_reason(&old, &row.spec).or(grow) {
            Some(why) => {
                // The new ring first: if it cannot be made, the old session runs on.
                let ring = self.rec.new_ring(&row.spec)?;
                log::info!("stream {}: {why} changed; restarting it", row.spec.name);
                self.stop(&row.spec.name);
                self.start(row, Some(ring), Some(rt.status()))?;
                Ok(Applied::Restarted(why))
            }
            None => {
                rt.set_spec(row.spec.clone());
                let policy =
                    (old.retention_days, old.max_storage_mb) != (row.spec.retention_days, row.spec.max_storage_mb);
                let policy = policy || old.event_retention_days != row.spec.event_retention_days;
                let mode = (old.record, old.pre_seconds, old.post_seconds, &old.schedule)
                    != (row.spec.record, row.spec.pre_seconds, row.spec.post_seconds, &row.spec.schedule);
                if let Some(ch) = self.rec.channels() {
                    if policy {
                        // A new plan replaces any half-done one made under the old policy.
                        let _ = ch.storage.send(storage::Command::Retention);
                    }
                    if mode && row.spec.may_record() {
                        // Continuous <-> events: the storage thread switches on the same ring
                        // (a stream it does not record, waiting or stopped, is ignored).
                        let _ = ch.storage.send(storage::Command::Mode(row.spec.name.clone()));
                    }
                }
                Ok(Applied::Updated)
            }
        }
    }

    /// Registers the stream, then, if it is enabled and its reservation fits
    /// the budget, recording and ingest as the row says, on `ring` (made here
    /// when `None`); `before` is the status of the session this one replaces.
    /// A disabled or waiting stream is registered on a placeholder ring: its
    /// full ring is made when it is admitted (`launch_admitted`), so memory
    /// the budget refused is not taken anyway.
    fn start(&mut self, row: &StreamRow, ring: Option<Ring>, before: Option<StreamStatus>) -> std::io::Result<()> {
        let spec = &row.spec;
        let (wait, admitted) = if spec.enabled {
            let bytes = self.rec.reservation(spec);
            let mut b = self.rec.budget();
            let wait = b.ask(&spec.name, bytes, spec.priority);
            // A smaller reservation than before (a restart) may admit others.
            (Some(wait), if wait.is_none() { b.admit_waiting() } else { Vec::new() })
        } else {
            (None, self.rec.budget().release(&spec.name))
        };
        let run = matches!(wait, Some(None));
        let ring = match (run, ring) {
            (true, Some(r)) => r,
            (true, None) => match self.rec.new_ring(spec) {
                Ok(r) => r,
                Err(e) => {
                    let admitted = self.rec.budget().release(&spec.name);
                    self.launch_admitted(admitted);
                    return Err(e);
                }
            },
            (false, _) => placeholder(&spec.name)?,
        };
        let rt = Arc::new(StreamRuntime::new(row.clone(), Arc::new(ring)));
        if let Some(old) = before {
            rt.with_status(|s| s.carry_counters(&old));
        }
        self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).insert(rt.name().to_string(), rt.clone());
        match wait {
            Some(None) => self.launch(&rt),
            Some(Some(w)) => log::info!("stream {}: {w}", spec.name),
            None => {}
        }
        self.launch_admitted(admitted);
        Ok(())
    }

    /// Starts recording and ingest of an admitted stream.
    fn launch(&self, rt: &Arc<StreamRuntime>) {
        rt.with_status(|s| s.memory_wait = None);
        // Its ring is in the budget: lock it so recording's hot memory is never swapped.
        if self.rec.lock_rings.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = rt.ring.lock_in_memory() {
                log::warn!("stream {}: ring not locked in RAM (mlock: {e}); the kernel may swap it out", rt.name());
            }
        }
        self.attach_sub(rt);
        let Some(ch) = self.rec.channels() else { return };
        if rt.spec().may_record() {
            let _ = ch.storage.send(storage::Command::Add(rt.clone()));
        }
        let _ = ch.ingest.send_blocking(ingest::Command::Start(rt.clone()));
        if let Some(sub) = rt.sub() {
            let _ = ch.ingest.send_blocking(ingest::Command::Start(sub));
        }
    }

    /// Makes the sub stream of a launched stream with a `sub_url` (its ring is
    /// in the stream's reservation). Without a ring the main stream runs on
    /// alone, and says why in its status.
    fn attach_sub(&self, rt: &Arc<StreamRuntime>) {
        if rt.sub().is_some() {
            return;
        }
        let row = row_of(rt);
        let Some(name) = row.spec.sub_url.as_ref().map(|_| stream::sub_name(rt.name())) else { return };
        let ring = match Ring::new(&name, SUB_RING_BYTES, self.rec.ring_dir().as_deref()) {
            Ok(r) => Arc::new(r),
            Err(e) => return rt.set_error(format!("its sub stream has no ring: {e}"), 0),
        };
        if let Some(sub) = StreamRuntime::sub_of(&row, ring) {
            if self.rec.lock_rings.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sub.ring.lock_in_memory();
            }
            rt.set_sub(Arc::new(sub));
        }
    }

    /// Starts the streams the budget just admitted, and shows every stream
    /// still waiting its numbers as they are now.
    fn launch_admitted(&self, admitted: Vec<String>) {
        for name in admitted {
            let Some(rt) = self.rec.stream(&name) else { continue };
            log::info!("stream {name}: admitted into the memory budget");
            match self.full_ring(&rt) {
                Ok(rt) => self.launch(&rt),
                Err(e) => {
                    log::error!("stream {name}: admitted, but its ring cannot be made: {e}");
                    rt.set_error(format!("cannot make its ring: {e}"), 0);
                }
            }
        }
        for (name, wait) in self.rec.budget().waits() {
            if let Some(rt) = self.rec.stream(&name) {
                rt.with_status(|s| {
                    s.state = StreamState::WaitingForMemory;
                    s.memory_wait = Some(wait);
                });
            }
        }
    }

    /// Stops ingest and recording of a stream (its open segment is closed) and
    /// releases its reservation, which may admit a waiting stream.
    pub fn remove(&mut self, name: &str) -> Option<Arc<StreamRuntime>> {
        let rt = self.stop(name)?;
        let admitted = self.rec.budget().release(name);
        self.launch_admitted(admitted);
        Some(rt)
    }

    /// The stream on a ring of its full size: itself, or (a stream that waited
    /// on a placeholder) a new runtime with its counters, in its place.
    fn full_ring(&self, rt: &Arc<StreamRuntime>) -> std::io::Result<Arc<StreamRuntime>> {
        let spec = rt.spec();
        if rt.ring.capacity() >= self.rec.ring_bytes(&spec) {
            return Ok(rt.clone());
        }
        let ring = self.rec.new_ring(&spec)?;
        let full = Arc::new(StreamRuntime::new(row_of(rt), Arc::new(ring)));
        let old = rt.status();
        full.with_status(|s| s.carry_counters(&old));
        self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).insert(full.name().to_string(), full.clone());
        Ok(full)
    }

    /// Stops a stream for memory pressure (`Recorder::stop_for_pressure`):
    /// ingest and recording end, the registry keeps it on a tiny ring.
    fn park(&mut self, rt: &Arc<StreamRuntime>, why: &str) -> bool {
        let tiny = match placeholder(rt.name()) {
            Ok(r) => r,
            Err(e) => {
                log::error!("stream {}: not stopped for memory pressure: no placeholder ring: {e}", rt.name());
                return false;
            }
        };
        let row = row_of(rt);
        self.stop(rt.name());
        let parked = Arc::new(StreamRuntime::new(row, Arc::new(tiny)));
        let old = rt.status();
        parked.with_status(|s| {
            s.carry_counters(&old);
            s.state = StreamState::Stopped;
            s.stopped_for = Some(why.to_string());
        });
        self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).insert(rt.name().to_string(), parked);
        log::warn!("stream {}: {why}", rt.name());
        true
    }

    /// Starts a parked stream again on a new ring, keeping its reservation.
    fn unpark(&mut self, rt: &Arc<StreamRuntime>) -> bool {
        let row = row_of(rt);
        match self.rec.new_ring(&row.spec) {
            Ok(ring) => {
                if let Err(e) = self.start(&row, Some(ring), Some(rt.status())) {
                    log::error!("stream {}: cannot start again: {e}", rt.name());
                    return false;
                }
                log::info!("stream {}: started again (memory pressure is over)", rt.name());
                true
            }
            Err(e) => {
                let why = format!("stopped for memory pressure; cannot start again: no ring: {e}");
                rt.with_status(|s| s.stopped_for = Some(why));
                false
            }
        }
    }

    /// Stops ingest and recording of a stream, keeping its reservation.
    fn stop(&mut self, name: &str) -> Option<Arc<StreamRuntime>> {
        let rt = self.rec.streams.write().unwrap_or_else(|p| p.into_inner()).remove(name)?;
        if let Some(ch) = self.rec.channels() {
            let _ = ch.ingest.send_blocking(ingest::Command::Stop(name.to_string()));
            if rt.sub().is_some() {
                let _ = ch.ingest.send_blocking(ingest::Command::Stop(stream::sub_name(name)));
            }
            let _ = ch.storage.send(storage::Command::Remove(name.to_string()));
        }
        rt.set_state(StreamState::Stopped);
        if let Some(sub) = rt.sub() {
            // Live viewers of the sub stream are told it stopped.
            sub.set_state(StreamState::Stopped);
        }
        Some(rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn row(id: i64, name: &str, priority: i32) -> StreamRow {
        let spec = StreamSpec { priority, bitrate_kbps: Some(1000), ..StreamSpec::new(name, "rtsp://cam/x") };
        StreamRow { id, spec, created_ms: 0, updated_ms: 0 }
    }

    /// A recorder with no threads behind it (starts are bookkeeping only).
    fn recorder(rows: &[StreamRow]) -> Recorder {
        let rec = Recorder::new(8, "", Budget::new(1024 * MIB, Vec::new()));
        let mut edit = rec.edit();
        for r in rows {
            edit.apply(r).expect("apply");
        }
        drop(edit);
        rec
    }

    #[test]
    fn pressure_stops_only_the_lowest_priority_and_keeps_their_reservation() {
        let rec = recorder(&[row(1, "hi", 5), row(2, "lo", 0), row(3, "lo2", 0), row(4, "mid", 2)]);
        let big = rec.stream("lo").expect("lo").ring.capacity();
        let why = "stopped for memory pressure (ladder step 4: test)";
        assert_eq!(rec.stop_for_pressure(why), vec!["lo".to_string(), "lo2".to_string()]);
        let lo = rec.stream("lo").expect("still registered");
        let st = lo.status();
        assert_eq!((st.state, st.stopped_for.as_deref()), (StreamState::Stopped, Some(why)));
        assert!(lo.ring.capacity() < big, "the big ring is let go");
        assert!(rec.budget_report().streams.contains_key("lo"), "its reservation is kept");
        assert_eq!(rec.stream("mid").expect("mid").status().stopped_for, None);

        // Asked again (the ladder does not: it enters step 4 once), the next lowest goes,
        // never the highest.
        assert_eq!(rec.stop_for_pressure(why), vec!["mid".to_string()]);
        assert!(rec.stop_for_pressure(why).is_empty(), "only the highest priority is left");
        assert_eq!(rec.stream("hi").expect("hi").status().stopped_for, None);

        assert_eq!(rec.resume_after_pressure(), vec!["lo".to_string(), "lo2".to_string(), "mid".to_string()]);
        let lo = rec.stream("lo").expect("lo");
        assert_eq!((lo.status().stopped_for, lo.ring.capacity()), (None, big));
        assert!(rec.resume_after_pressure().is_empty());
    }

    #[test]
    fn pressure_stops_nobody_when_all_share_one_priority() {
        let rec = recorder(&[row(1, "a", 1), row(2, "b", 1)]);
        assert!(rec.stop_for_pressure("x").is_empty());
        assert!(rec.streams().iter().all(|s| s.status().stopped_for.is_none()));
    }
}
