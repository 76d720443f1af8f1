//! Start-up and shutdown of the whole recorder, in order.
//!
//! Start: config -> data dir -> database (migrations) -> streams from the
//! config upserted -> reconcile rows and files -> storage thread -> executor ->
//! streams started in priority order -> detection threads (streams with
//! `detect = ["motion"]`) -> MQTT (`[mqtt] url`) -> webhooks (`[[webhooks]]`) -> ONVIF event
//! watchers (streams whose camera has `events` on) -> HTTP. With `storage.require_mount`
//! and no disk mounted on the data directory, only `web::no_disk` (nothing
//! records, nothing is written).
//! Stop (SIGTERM/SIGINT, taken by sigwait in the main thread): HTTP stops
//! accepting (workers still busy with a client are not waited for past 0.25 s),
//! MQTT says `offline` (0.5 s at most), ONVIF event watchers end their open events and are told
//! to stop, webhook threads are told to stop (not waited for),
//! ingest drops every session, the storage thread drains the rings, writes the
//! pending fragments, syncs and closes the segments (10 s at most), the
//! watchdog is disarmed (magic close) if all of that finished, then exit.
//! The watchdog (`[watchdog] device`) is held from just after the config is
//! read and watches the heartbeats once HTTP runs.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::base::clock::{Clock, RealClock};
use crate::base::error::{Context as _, Error, Result};
use crate::config::Config;
use crate::governor::watchdog::Watchdog;
use crate::index::db::Db;
use crate::recording::recorder::Channels;
use crate::recording::{ingest, storage};
use crate::web::{self, state::Nvr};

/// SIGTERM and SIGINT are blocked in every thread (threads inherit the mask of
/// the thread that starts them, so this runs before any other exists) and taken
/// by `wait_for_stop` in the main thread: no handler, no polled flag.
pub(super) fn block_stop_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::internal(format!("cannot block SIGTERM/SIGINT: {e}")))?;
    Ok(set)
}

/// Sleeps until SIGTERM or SIGINT arrives; names it.
pub(super) fn wait_for_stop(set: &nix::sys::signal::SigSet) -> String {
    match set.wait() {
        Ok(sig) => sig.as_str().to_string(),
        Err(e) => format!("sigwait failed ({e})"),
    }
}

/// How long shutdown waits for HTTP workers still answering clients.
const HTTP_STOP: Duration = Duration::from_millis(250);
/// How long it waits for the MQTT client to say `offline` to a connected broker.
const MQTT_STOP: Duration = Duration::from_millis(500);
/// How long it waits for the storage thread to write and sync the open segments.
const STORAGE_STOP: Duration = Duration::from_secs(10);

/// Held while a process owns the data directory, so `check --repair` can never
/// truncate a file that a running recorder is writing.
pub struct DataLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub(super) fn lock_data_dir(dir: &Path) -> Result<DataLock> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("oxinvr.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map(DataLock)
        .map_err(|_| Error::conflict(format!("{} is in use by another oxinvr process; stop it first", dir.display())))
}

/// Opens the data directory and database, and reconciles files with rows.
fn open_storage(cfg: &Config, repair: bool) -> Result<(Db, storage::Report, DataLock)> {
    let dir = &cfg.storage.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    let lock = lock_data_dir(dir)?;
    let db = Db::open(&cfg.db_path()).with_context(|| format!("database {}", cfg.db_path().display()))?;
    let now = RealClock.now_ms();
    for s in &cfg.streams {
        let stored = db.stream_by_name(&s.name).with_context(|| format!("stream {}", s.name))?;
        db.upsert_stream(&s.to_spec_over(stored.map(|r| r.spec).as_ref()), now)
            .with_context(|| format!("stream {}", s.name))?;
    }
    let began = Instant::now();
    // reconcile's own messages name the file or row at fault.
    let report = storage::reconcile(&db, dir, repair).map_err(Error::io)?;
    log::info!("reconciled {} segments in {:?}: {report:?}", report.segments_checked, began.elapsed());
    Ok((db, report, lock))
}

/// Why nothing may record, if `storage.require_mount` and the data directory is not a mount point.
fn missing_disk(cfg: &Config) -> Option<String> {
    if !cfg.storage.require_mount {
        return None;
    }
    let dir = cfg.storage.data_dir.display();
    match crate::base::fs::is_mount_point(&cfg.storage.data_dir) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "the data disk is missing: {dir} is not a mount point (storage.require_mount), so nothing records"
        )),
        Err(e) => Some(format!("the data disk is missing: {dir}: {e} (storage.require_mount), so nothing records")),
    }
}

/// Without the data disk: only the web server that says why (`web::no_disk`), until stopped.
/// The watchdog is fed (never armed: nothing records to watch) while that page is served.
fn run_without_disk(cfg: &Config, stop_signals: &nix::sys::signal::SigSet, why: String) -> Result<()> {
    log::error!("{why}; serving only a page that says so on http://{}/", cfg.web.listen);
    let watchdog = Watchdog::start(&cfg.watchdog, Arc::new(RealClock)).context("watchdog")?;
    let server = web::no_disk::spawn(cfg, why).context("web")?;
    let sig = wait_for_stop(stop_signals);
    log::info!("{sig}: stopping");
    server.stop();
    if let Some(w) = watchdog {
        w.stop(true);
    }
    Ok(())
}

/// `OXINVR_TEST_KNOBS=1`: allows the test-only knobs (`base::heartbeat::stall`).
fn test_knobs_from_env() {
    if std::env::var("OXINVR_TEST_KNOBS").as_deref() == Ok("1") {
        crate::base::heartbeat::enable_test_knobs();
        log::warn!("OXINVR_TEST_KNOBS=1: test-only knobs are on (POST /api/system/test-stall); never in production");
    }
}

pub fn run(config_path: Option<&Path>) -> Result<()> {
    crate::base::memory::tune_allocator();
    let cfg = Config::load(config_path)?;
    if cfg.archive.enabled() {
        return Err(Error::invalid(format!(
            "{}: [archive] is set: this file is for `oxinvr archive`, not `oxinvr run`",
            cfg.source
        )));
    }
    let stop_signals = block_stop_signals()?;
    test_knobs_from_env();
    if let Some(why) = missing_disk(&cfg) {
        return run_without_disk(&cfg, &stop_signals, why);
    }
    let (db, _, _lock) = open_storage(&cfg, true)?;
    // The UART shell's `logs` reads this file.
    let log_file = cfg.storage.data_dir.join("oxinvr.log");
    if let Err(e) = crate::base::logging::log_to_file(&log_file) {
        log::warn!("cannot write the log to {}: {e}", log_file.display());
    }
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    end_events_left_open(&db, clock.now_ms());
    // Held from here (fed unconditionally) until `arm`, once every watched part runs.
    let watchdog = Watchdog::start(&cfg.watchdog, clock.clone()).context("watchdog")?;
    let mut nvr = Nvr::new(cfg.clone(), clock.clone());
    if let Some(w) = &watchdog {
        nvr.watchdog = w.status();
    }
    let nvr = Arc::new(nvr);
    nvr.auth
        .issue_console_token(&cfg.storage.data_dir)
        .with_context(|| format!("cannot write the console token into {}", cfg.storage.data_dir.display()))?;
    if db.user_count()? == 0 {
        log::warn!(
            "no user exists yet: open the web page for first-run setup, or run `oxinvr user add NAME --role admin`"
        );
    }
    let settings = storage::StorageSettings {
        data_dir: cfg.storage.data_dir.clone(),
        db_path: cfg.db_path(),
        segment_seconds: cfg.storage.segment_seconds,
        sync_seconds: cfg.storage.sync_seconds,
        min_free_percent: cfg.storage.min_free_percent,
        events_retention_days: cfg.events.retention_days,
        events: Some(nvr.events.hub().subscribe()),
        keep_until_replicated: cfg.replicate.enabled() && cfg.replicate.keep_until_replicated,
    };
    let (storage_tx, storage_thread) = storage::spawn(settings, clock.clone()).context("storage")?;
    let (ingest_tx, executor_thread) = ingest::spawn_executor(clock.clone()).context("executor")?;
    nvr.recorder.set_channels(Channels { ingest: ingest_tx.clone(), storage: storage_tx.clone() });
    let mut rows = db.list_streams()?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.spec.priority));
    let mut edit = nvr.recorder.edit();
    for row in rows {
        if let Err(e) = edit.apply(&row) {
            log::error!("stream {} not started: {e}", row.spec.name);
        }
    }
    drop(edit);
    drop(db);
    start_go2rtc(&nvr, &cfg, &clock)?;
    web::mqtt::start(&nvr).map_err(Error::internal)?;
    web::webhooks::start(&nvr).map_err(Error::internal)?;
    let replicator = crate::replicate::start(&cfg.replicate, &cfg.storage.data_dir, &cfg.db_path(), clock.clone())
        .map_err(Error::invalid)?;
    if let Some(r) = replicator {
        let _ = nvr.replicate.set(Arc::new(r));
    }
    start_onvif_events(&nvr);
    let detectors = start_detection(&nvr, &cfg, &clock)?;
    let http = web::spawn(nvr.clone()).context("web")?;
    if let Some(w) = &watchdog {
        w.arm();
    }
    // Not joined at exit: it may be writing the swapfile; it ends at the shutdown signal.
    let _pressure = web::pressure::spawn(nvr.clone(), web::pressure::kernel_source()).context("pressure")?;
    log::info!(
        "oxinvr {} recording {} stream(s) into {}; API on http://{}/",
        env!("CARGO_PKG_VERSION"),
        nvr.recorder.streams().len(),
        cfg.storage.data_dir.display(),
        cfg.web.listen
    );
    let why = wait_for_stop(&stop_signals);
    log::info!("{why}: stopping (HTTP, then the camera sessions, then the open segments are written and synced)");
    let began = Instant::now();
    if let Some(w) = &watchdog {
        w.stopping();
    }
    http.stop(HTTP_STOP);
    if let Some(m) = nvr.mqtt.get() {
        m.stop(MQTT_STOP);
    }
    web::onvif::stop_watchers(&nvr);
    if let Some(w) = nvr.webhooks.get() {
        w.stop();
    }
    if let Some(r) = nvr.replicate.get() {
        r.stop();
    }
    if let Some(g) = nvr.go2rtc.get() {
        g.stop();
    }
    detectors.stop();
    // Sessions end first, so the rings hold everything that will ever arrive.
    let _ = ingest_tx.send_blocking(ingest::Command::Shutdown);
    let _ = executor_thread.join();
    let (ack_tx, ack_rx) = mpsc::channel();
    let _ = storage_tx.send(storage::Command::Shutdown(ack_tx));
    let clean = match ack_rx.recv_timeout(STORAGE_STOP) {
        Ok(()) => storage_thread.join().is_ok(),
        Err(_) => {
            log::error!("storage did not finish in {STORAGE_STOP:?}; exiting without it");
            false
        }
    };
    // Disarmed only by a clean stop: a recorder that could not stop cleanly is reset.
    if let Some(w) = watchdog {
        w.stop(clean);
    }
    log::info!("stopped in {:?}", began.elapsed());
    Ok(())
}

/// Ends the motion and object events a crash or power cut left open (nothing
/// would ever end them: the threads that opened them are gone). A failure is
/// logged: recording matters more than tidy events.
fn end_events_left_open(db: &Db, now_ms: i64) {
    match db.end_events_left_open(now_ms) {
        Ok(0) => {}
        Ok(n) => log::warn!("{n} event(s) left open by the last run ended at their stream's last recorded moment"),
        Err(e) => log::error!("events left open by the last run not ended: {e}"),
    }
}

/// Starts an `onvif-NAME` thread for each stream whose ONVIF camera is its
/// event source. A failure is logged: recording goes on without those events.
fn start_onvif_events(nvr: &Nvr) {
    let started = Db::open(&nvr.config.db_path())
        .map_err(|e| e.to_string())
        .and_then(|db| web::onvif::sync_watchers(nvr, &db).map_err(|e| e.message));
    match started {
        Ok(()) => {
            let n = nvr.onvif_watchers.lock().map(|w| w.len()).unwrap_or(0);
            if n > 0 {
                log::info!("onvif events: watching {n} camera(s)");
            }
        }
        Err(e) => log::error!("onvif events not started: {e}"),
    }
}

/// Starts the detection fleet: a `detect-NAME` thread on the ring of each
/// stream the recorder has, now and as the API adds and deletes streams.
/// Its settings are live (the stream's spec, which the API edits): a stream
/// with `detect = []` has a paused thread that wakes when detection is
/// switched on. Test knob (with `OXINVR_TEST_KNOBS=1`):
/// `OXINVR_DETECT_SLOW_MS` adds that much time to every decoded frame.
fn start_detection(nvr: &Arc<Nvr>, cfg: &Config, clock: &Arc<dyn Clock>) -> Result<crate::detect::fleet::Fleet> {
    let slow = std::env::var("OXINVR_DETECT_SLOW_MS")
        .ok()
        .filter(|_| std::env::var("OXINVR_TEST_KNOBS").as_deref() == Ok("1"))
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    if !slow.is_zero() {
        log::warn!("detect: test knob: every decoded frame takes {} ms more", slow.as_millis());
    }
    let weak = Arc::downgrade(nvr);
    let names = Box::new(move || {
        weak.upgrade().map(|n| n.recorder.streams().iter().map(|rt| rt.name().to_owned()).collect()).unwrap_or_default()
    });
    let (weak, config, clock) = (Arc::downgrade(nvr), cfg.detect.clone(), clock.clone());
    let setups = Box::new(move |name: &str| {
        let nvr = weak.upgrade()?;
        let spec = nvr.recorder.stream(name)?.spec();
        let end_ms = i64::from(config.end_seconds) * 1000;
        let sink = Box::new(
            crate::detect::sink::EventSink::new(nvr.events.clone(), detection_switch(&nvr)).object_end_ms(end_ms),
        );
        // The thread builds its object detector when its settings ask for one.
        Some(crate::detect::DetectSetup {
            stream: name.to_owned(),
            rings: stream_rings(&nvr, name),
            config: config.clone(),
            mask: crate::detect::Mask { polygons: spec.motion_mask.clone() },
            zones: spec.zones.clone(),
            live: Some(stream_settings(&nvr, name)),
            clock: clock.clone(),
            sink,
            objects: None,
            snapshot: Some(stream_snapshot_url(&nvr, name)),
            slow,
        })
    });
    crate::detect::fleet::Fleet::spawn(names, setups, nvr.detection.clone()).context("detection")
}

/// The detection settings `stream` has now (weak, like the rings).
fn stream_settings(nvr: &Arc<Nvr>, stream: &str) -> crate::detect::SettingsSource {
    let (weak, name) = (Arc::downgrade(nvr), stream.to_string());
    Arc::new(move || {
        weak.upgrade().and_then(|n| n.recorder.stream(&name)).map(|rt| crate::detect::Settings::of(&rt.spec()))
    })
}

/// The ring detection reads for `stream` now: its sub stream's when it has
/// one, else its own (both change when the stream restarts). Weak, like the
/// switch below.
fn stream_rings(nvr: &Arc<Nvr>, stream: &str) -> crate::detect::worker::RingSource {
    let (weak, name) = (Arc::downgrade(nvr), stream.to_string());
    Arc::new(move || {
        let rt = weak.upgrade().and_then(|n| n.recorder.stream(&name))?;
        Some(rt.sub().map_or_else(|| rt.ring.clone(), |sub| sub.ring.clone()))
    })
}

/// The stream's `snapshot_url` as it is now (the API may change it). Weak.
fn stream_snapshot_url(nvr: &Arc<Nvr>, stream: &str) -> crate::detect::worker::SnapshotSource {
    let (weak, name) = (Arc::downgrade(nvr), stream.to_string());
    Arc::new(move || weak.upgrade().and_then(|n| n.recorder.stream(&name)).and_then(|rt| rt.spec().snapshot_url))
}

/// The per-stream detection switch the page and MQTT flip. Weak: the
/// detection threads must not keep a stopping recorder alive.
fn detection_switch(nvr: &Arc<Nvr>) -> crate::detect::sink::Enabled {
    let weak = Arc::downgrade(nvr);
    Arc::new(move |stream: &str| weak.upgrade().is_none_or(|n| n.detect_switch.enabled(stream)))
}

/// Starts go2rtc's supervisor when `[go2rtc] binary` is set; it serves every
/// enabled stream (read from the recorder at each check, so API edits reach it).
fn start_go2rtc(nvr: &Arc<Nvr>, cfg: &Config, clock: &Arc<dyn Clock>) -> Result<()> {
    use crate::governor::go2rtc::{Settings, Supervisor};
    let Some(settings) = Settings::from_config(cfg) else { return Ok(()) };
    // Weak: the supervisor lives in the Nvr it reads from.
    let weak = Arc::downgrade(nvr);
    let streams = Box::new(move || {
        let Some(nvr) = weak.upgrade() else { return Vec::new() };
        nvr.recorder.streams().iter().map(|rt| rt.spec()).filter(|s| s.enabled).map(|s| (s.name, s.url)).collect()
    });
    let sup = Supervisor::spawn(settings, streams, clock.clone()).context("go2rtc")?;
    let _ = nvr.go2rtc.set(sup);
    Ok(())
}

/// `oxinvr check`: returns the number of problems found (after repair).
pub fn check(config_path: Option<&Path>, repair: bool) -> Result<usize> {
    let cfg = Config::load(config_path)?;
    let (_, report, _lock) = open_storage(&cfg, repair)?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    let problems = report.problems() + if repair { 0 } else { report.orphans_adopted + report.orphans_removed };
    if problems == 0 {
        println!("ok: database and files agree ({} segments)", report.segments_checked);
    } else if repair {
        println!("repaired; {problems} problem(s) could not be fixed");
    } else {
        println!("{problems} problem(s); run `oxinvr check --repair` to fix them");
    }
    Ok(if repair { report.problems() } else { problems })
}
