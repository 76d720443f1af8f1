//! The recorder as the MQTT client sees it (`notify::mqtt::Host`): stream
//! views, the box's figures, and recording switched on/off the way
//! `PUT /api/streams/NAME` does it (the row saved, then `Recorder::edit`).
//!
//! Invariant: holds the recorder only weakly (the client lives in the `Nvr`
//! it reads), so a stopping recorder is never kept alive by MQTT.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};

use super::state::Nvr;
use crate::index::db::{Db, RecordMode};
use crate::notify::mqtt::{self, Host, Mqtt, Settings, StreamView};
use crate::recording::stream::StreamState;

struct NvrHost(Weak<Nvr>);

impl Host for NvrHost {
    fn streams(&self) -> Vec<StreamView> {
        let Some(nvr) = self.0.upgrade() else { return Vec::new() };
        let streams = nvr.recorder.streams();
        let views = streams.iter().map(|rt| {
            let (spec, st) = (rt.spec(), rt.status());
            let connected = st.state == StreamState::Streaming;
            let record = spec.record.records();
            StreamView {
                name: spec.name,
                state: serde_json::to_value(st.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                record,
                recording: record && spec.enabled && connected && st.storage_error.is_none(),
                connected,
                fps: st.fps,
                bitrate_kbps: st.bitrate_kbps,
            }
        });
        views.collect()
    }

    fn box_figures(&self) -> Value {
        let Some(nvr) = self.0.upgrade() else { return json!({}) };
        let mem = crate::base::memory::process_memory();
        let mut v = json!({
            "uptime_s": nvr.started.elapsed().as_secs(),
            "mem_total_bytes": mem.mem_total,
            "mem_available_bytes": mem.mem_available,
            "rss_bytes": mem.rss,
            "streams": nvr.recorder.streams().len(),
        });
        match crate::recording::retention::disk_usage(&nvr.config.storage.data_dir) {
            Ok(d) => {
                v["disk_free_bytes"] = d.free_bytes.into();
                v["disk_total_bytes"] = d.total_bytes.into();
            }
            Err(e) => v["disk_error"] = e.to_string().into(),
        }
        v
    }

    fn set_recording(&self, stream: &str, on: bool) -> Result<(), String> {
        let nvr = self.0.upgrade().ok_or("the recorder is stopping")?;
        let db_path = nvr.config.db_path();
        let db = Db::open(&db_path).map_err(|e| format!("database {}: {e}", db_path.display()))?;
        let mut edit = nvr.recorder.edit();
        let row = db.stream_by_name(stream).map_err(|e| e.to_string())?.ok_or(format!("no stream {stream:?}"))?;
        let mut spec = row.spec.clone();
        spec.record = if on { RecordMode::Continuous } else { RecordMode::Off };
        if spec.record == row.spec.record {
            return Ok(());
        }
        let row = db.upsert_stream(&spec, nvr.clock.now_ms()).map_err(|e| e.to_string())?;
        edit.apply(&row).map(|_| ()).map_err(|e| format!("stream {stream:?} was saved but could not be restarted: {e}"))
    }
}

/// Starts the MQTT client when `[mqtt] url` is set; its handle goes in `nvr.mqtt`.
pub fn start(nvr: &Arc<Nvr>) -> Result<(), String> {
    let Some(settings) = Settings::from_config(&nvr.config.mqtt, &mqtt::hostname())? else { return Ok(()) };
    let host = Arc::new(NvrHost(Arc::downgrade(nvr)));
    let client =
        Mqtt::spawn(settings, host, nvr.clock.clone()).map_err(|e| format!("cannot start the mqtt thread: {e}"))?;
    let _ = nvr.mqtt.set(client);
    Ok(())
}
