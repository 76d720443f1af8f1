//! The small state the web layer acts through: its config, auth, clock and the
//! recorder (never the storage thread or the executor directly).

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Auth;
use crate::base::clock::Clock;
use crate::base::shutdown::Shutdown;
use crate::config::Config;
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
    /// The HTTPS certificate, set by `web::spawn` when `web.tls` is on.
    pub tls: std::sync::OnceLock<Arc<crate::auth::tls::Store>>,
}

impl Nvr {
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Self {
        let started_ms = clock.now_ms();
        let recorder = Recorder::new(config.storage.ring_seconds, &config.storage.ring_dir);
        Nvr {
            config,
            auth: Auth::default(),
            clock,
            started: Instant::now(),
            started_ms,
            recorder,
            shutdown: Shutdown::new(),
            tls: std::sync::OnceLock::new(),
        }
    }
}
