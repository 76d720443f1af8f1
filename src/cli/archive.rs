//! `oxinvr archive`: start-up and shutdown of an archive server.
//!
//! Start: config (`[archive]` must be set) -> data dir (locked; it holds the
//! console token and, by default, the index) -> index database (migrations)
//! -> the `archive-index` thread -> HTTP, whose media reads go to the bucket.
//! No camera, no recorder thread, no storage thread, no retention: the
//! bucket's own lifecycle rules decide what is kept. Stop (SIGTERM/SIGINT):
//! HTTP, then the index thread is told to stop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::base::clock::{Clock, RealClock};
use crate::base::error::{Context as _, Error, Result};
use crate::config::Config;
use crate::index::db::Db;
use crate::web::{self, state::Nvr};

use super::app::{block_stop_signals, lock_data_dir, wait_for_stop};

const HTTP_STOP: Duration = Duration::from_millis(250);

pub fn run(config_path: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config_path)?;
    if !cfg.archive.enabled() {
        return Err(Error::invalid(format!("{}: `oxinvr archive` needs [archive] endpoint", cfg.source)));
    }
    let stop_signals = block_stop_signals()?;
    let dir = &cfg.storage.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    let _lock = lock_data_dir(dir)?;
    let index = cfg.db_path();
    let db = Db::open(&index).with_context(|| format!("archive index {}", index.display()))?;
    let log_file = dir.join("oxinvr.log");
    if let Err(e) = crate::base::logging::log_to_file(&log_file) {
        log::warn!("cannot write the log to {}: {e}", log_file.display());
    }
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let nvr = Arc::new(Nvr::new(cfg.clone(), clock.clone()));
    nvr.auth
        .issue_console_token(dir)
        .with_context(|| format!("cannot write the console token into {}", dir.display()))?;
    if db.user_count()? == 0 {
        log::warn!(
            "no user exists yet: open the web page for first-run setup, or run `oxinvr user add NAME --role admin`"
        );
    }
    drop(db);
    let archive = crate::archive::start(&cfg.archive, &index, clock).map_err(Error::invalid)?;
    let _ = nvr.media.set(archive.media());
    let archive = Arc::new(archive);
    let _ = nvr.archive.set(archive.clone());
    let http = web::spawn(nvr.clone()).context("web")?;
    log::info!(
        "oxinvr {} archive of bucket {} (index {}); API on http://{}/",
        env!("CARGO_PKG_VERSION"),
        cfg.archive.bucket,
        index.display(),
        cfg.web.listen
    );
    let why = wait_for_stop(&stop_signals);
    log::info!("{why}: stopping the archive");
    http.stop(HTTP_STOP);
    archive.stop();
    Ok(())
}
