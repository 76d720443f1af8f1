//! The small state the web layer acts through: its config, auth, clock and the
//! recorder (never the storage thread or the executor directly).

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Auth;
use crate::base::clock::Clock;
use crate::base::shutdown::Shutdown;
use crate::config::Config;
use crate::governor::budget::mib;
use crate::governor::watchdog::StatusHandle;
use crate::recording::recorder::Recorder;

/// The shared handle of a running recorder: what the web layer, the shell and
/// the start-up code need. Streams are changed only through `recorder.edit()`.
pub struct Nvr {
    pub config: Config,
    /// Login lockout and the console token (the rest of auth is in the database).
    pub auth: Auth,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub started_ms: i64,
    pub recorder: Recorder,
    /// Triggered when the recorder stops: HTTP workers and live views end.
    pub shutdown: Shutdown,
    /// The pressure ladder, the swapfile and the OOM score (`web::pressure`).
    pub pressure: crate::web::pressure::Pressure,
    /// The HTTPS certificate, set by `web::spawn` when `web.tls` is on.
    pub tls: std::sync::OnceLock<Arc<crate::auth::tls::Store>>,
    /// go2rtc's supervisor, set at start-up when `[go2rtc] binary` is set.
    pub go2rtc: std::sync::OnceLock<Arc<crate::governor::go2rtc::Supervisor>>,
    /// The database connection live clients' credential checks share.
    pub live_db: crate::web::live::LiveDb,
    /// The hardware watchdog's state (`off` unless `[watchdog] device` is set).
    pub watchdog: StatusHandle,
    /// Events: every change goes through it and is broadcast (`events`).
    pub events: Arc<crate::events::Store>,
    /// The MQTT client, set at start-up when `[mqtt] url` is set (`web::mqtt`).
    pub mqtt: std::sync::OnceLock<Arc<crate::notify::mqtt::Mqtt>>,
    /// The webhooks, set at start-up when `[[webhooks]]` has entries (`web::webhooks`).
    pub webhooks: std::sync::OnceLock<Arc<crate::notify::webhook::Webhooks>>,
    /// The uploader to the bucket, set at start-up when `[replicate] endpoint` is set.
    pub replicate: std::sync::OnceLock<Arc<crate::replicate::Replicator>>,
    /// Archive mode (`oxinvr archive`): media is read from this store (the
    /// bucket) instead of the data dir, and the archive's index thread.
    pub media: std::sync::OnceLock<Arc<dyn crate::playback::source::MediaStore>>,
    pub archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
    /// Each stream's detection counters while its thread runs (`detect::fleet`).
    pub detection: Arc<crate::detect::fleet::StatsMap>,
    /// Detection on/off per stream: the page (`PUT /api/streams/NAME/detection`) and MQTT flip it.
    pub detect_switch: crate::detect::switch::Switch,
    /// The ONVIF event watchers of streams whose camera is an event source,
    /// with the settings each runs with (`web::onvif::sync_watchers`).
    pub onvif_watchers: std::sync::Mutex<
        std::collections::BTreeMap<String, (crate::index::db::OnvifRow, crate::onvif::watch::Watcher)>,
    >,
}

impl Nvr {
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Self {
        let started_ms = clock.now_ms();
        let mem_total = crate::base::memory::process_memory().mem_total;
        let budget = crate::governor::budget(&config, mem_total);
        log::info!("memory budget: {} ({} free for streams)", mib(budget.total()), mib(budget.free()));
        let recorder = Recorder::new(config.storage.ring_seconds, &config.storage.ring_dir, budget);
        recorder.set_lock_rings(config.memory.lock_rings);
        let pressure = crate::web::pressure::Pressure::new(&config);
        let events = Arc::new(crate::events::Store::new(&config.db_path(), &config.storage.data_dir));
        Nvr {
            events,
            pressure,
            config,
            auth: Auth::default(),
            watchdog: StatusHandle::off(clock.clone()),
            clock,
            started: Instant::now(),
            started_ms,
            recorder,
            shutdown: Shutdown::new(),
            tls: std::sync::OnceLock::new(),
            go2rtc: std::sync::OnceLock::new(),
            live_db: Default::default(),
            mqtt: std::sync::OnceLock::new(),
            webhooks: std::sync::OnceLock::new(),
            replicate: std::sync::OnceLock::new(),
            media: std::sync::OnceLock::new(),
            archive: std::sync::OnceLock::new(),
            detection: Arc::default(),
            detect_switch: Default::default(),
            onvif_watchers: Default::default(),
        }
    }
}
