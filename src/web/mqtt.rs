//! The recorder as the MQTT client sees it (`notify::mqtt::Host`): stream
//! views, the box's figures, and recording switched on/off the way
//! `PUT /api/streams/NAME` does it (the row saved, then `Recorder::edit`).
//!
//! Events go out through the `mqtt-events` thread (the events hub's
//! subscriber); `<stream>/trigger` commands come in as manual events.
//!
//! Invariant: holds the recorder only weakly (the client lives in the `Nvr`
//! it reads), so a stopping recorder is never kept alive by MQTT.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};

use super::state::Nvr;
use crate::events::{Change, Subscription};
use crate::index::db::{Db, EventKind, RecordMode};
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
            let detection = nvr.detect_switch.enabled(&spec.name);
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
                detection,
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

    fn set_detection(&self, stream: &str, on: bool) -> Result<(), String> {
        let nvr = self.0.upgrade().ok_or("the recorder is stopping")?;
        super::detection::switch(&nvr, stream, on).map(|_| ()).map_err(|e| e.message)
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

/// Starts the MQTT client when `[mqtt] url` is set; its handle goes in
/// `nvr.mqtt`. Events flow to it from the events hub (`mqtt-events` thread)
/// and its manual triggers become events.
pub fn start(nvr: &Arc<Nvr>) -> Result<(), String> {
    let Some(settings) = Settings::from_config(&nvr.config.mqtt, &mqtt::hostname())? else { return Ok(()) };
    let host = Arc::new(NvrHost(Arc::downgrade(nvr)));
    let client =
        Mqtt::spawn(settings, host, nvr.clock.clone()).map_err(|e| format!("cannot start the mqtt thread: {e}"))?;
    client.set_trigger_hook(trigger_hook(Arc::downgrade(nvr)));
    let (weak, sub, to) = (Arc::downgrade(nvr), nvr.events.hub().subscribe(), client.clone());
    std::thread::Builder::new()
        .name("mqtt-events".into())
        .stack_size(128 << 10)
        .spawn(move || forward_events(&weak, &sub, &to))
        .map_err(|e| format!("cannot start the mqtt-events thread: {e}"))?;
    let _ = nvr.mqtt.set(client);
    Ok(())
}

/// Largest snapshot sent to the broker (a sub stream's is ~50 KB).
const MAX_SNAPSHOT: u64 = 1 << 20;

/// Until the recorder is gone: each event notice to MQTT as JSON, motion
/// events as the stream's `motion` ON/OFF, object events as the stream's
/// per-label counts, a new event's snapshot as the stream's picture.
fn forward_events(weak: &Weak<Nvr>, sub: &Subscription, mqtt: &Mqtt) {
    let mut moving = OpenMotion::default();
    loop {
        let Some(notice) = sub.next(std::time::Duration::from_secs(1)) else {
            if weak.strong_count() == 0 {
                return;
            }
            continue;
        };
        let Some(nvr) = weak.upgrade() else { return };
        let (e, began) = (&notice.event, notice.change == Change::Began);
        let mut v = super::events::event_json(e);
        v["change"] = notice.change.as_str().into();
        mqtt.publish_event(&v);
        if e.kind == EventKind::Motion {
            mqtt.set_motion(&e.stream, moving.note(&e.stream, e.id, began && e.end_ms.is_none()));
        }
        if e.kind == EventKind::Object {
            mqtt.object_event(&e.stream, &e.label, e.id, began && e.end_ms.is_none());
        }
        if let (true, Some(rel)) = (began, &e.snapshot) {
            let path = nvr.config.storage.data_dir.join(rel);
            match std::fs::metadata(&path).map(|m| m.len()) {
                Ok(len) if len <= MAX_SNAPSHOT => match std::fs::read(&path) {
                    Ok(jpeg) => mqtt.publish_snapshot(&e.stream, jpeg),
                    Err(err) => log::warn!("mqtt: snapshot of event {}: {err}", e.id),
                },
                Ok(len) => log::warn!("mqtt: snapshot of event {} is {len} bytes; not sent", e.id),
                Err(err) => log::warn!("mqtt: snapshot of event {}: {err}", e.id),
            }
        }
    }
}

/// Each stream's open motion events (detection's and the camera's own, ONVIF):
/// the stream's `motion` is ON while any is open, not until the first ends.
#[derive(Default)]
struct OpenMotion(std::collections::HashMap<String, std::collections::BTreeSet<i64>>);

impl OpenMotion {
    /// Notes event `id` of `stream` opening or ending; whether the stream has motion now.
    fn note(&mut self, stream: &str, id: i64, open: bool) -> bool {
        let ids = self.0.entry(stream.to_owned()).or_default();
        if open {
            ids.insert(id);
        } else {
            ids.remove(&id);
        }
        let on = !ids.is_empty();
        if !on {
            self.0.remove(stream);
        }
        on
    }
}

/// `<prefix>/<stream>/trigger`: a manual event. A JSON object payload is
/// checked like `POST /api/events`'s body; anything else is a 10 s event.
fn trigger_hook(weak: Weak<Nvr>) -> mqtt::TriggerHook {
    Box::new(move |stream, event| {
        let Some(nvr) = weak.upgrade() else { return };
        let mut body = match event.get("detail") {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::from_iter([("duration_s".to_string(), json!(TRIGGER_SECONDS))]),
        };
        body.insert("stream".into(), stream.into());
        let made = super::events::new_event(&body, nvr.clock.now_ms()).map_err(|e| e.message);
        match made.and_then(|e| nvr.events.create(&e).map_err(|e| e.to_string())) {
            Ok(row) => log::info!("mqtt: manual event {} on {stream}", row.id),
            Err(e) => log::warn!("mqtt: trigger on {stream} refused: {e}"),
        }
    })
}

/// Length of an MQTT-triggered event without a `duration_s`.
const TRIGGER_SECONDS: u32 = 10;

#[cfg(test)]
mod tests {
    use super::OpenMotion;

    #[test]
    fn motion_stays_on_until_every_open_motion_event_of_the_stream_ends() {
        let mut m = OpenMotion::default();
        assert!(m.note("door", 1, true), "detection's event opens");
        assert!(m.note("door", 2, true), "the camera's own (ONVIF) opens");
        assert!(m.note("yard", 3, true));
        assert!(m.note("door", 1, false), "one still open: still ON");
        assert!(!m.note("door", 2, false), "both ended: OFF");
        assert!(!m.note("door", 9, false), "an unknown event ending keeps it OFF");
        assert!(!m.note("yard", 3, false));
    }
}
