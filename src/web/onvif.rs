//! The ONVIF routes (`crate::onvif` does the talking):
//! - `POST /api/onvif/discover` (operator): WS-Discovery, the devices found;
//! - `POST /api/onvif/probe` (operator): one camera with its credentials, its
//!   device information and profiles with stream and snapshot URIs;
//! - `GET|PUT|DELETE /api/streams/{name}/onvif`: the camera behind a stream
//!   (PUT checks it answers with those credentials and has the profile, and
//!   with `events` an Events service); GET adds the event watcher's status;
//! - `POST /api/streams/{name}/ptz` (operator): move, stop, presets.
//!
//! Invariants:
//! - Passwords never appear in an answer or a log line (the camera is sent
//!   only their digest, so its errors cannot quote them either).
//! - Each camera call has the `[onvif] timeout_ms` deadline; at most
//!   `MAX_RUNNING` ONVIF requests hold an http worker at once (503 beyond).
//! - The running event watchers (`onvif::watch`) match the `onvif` rows with
//!   `events` on: [`sync_watchers`] runs at start-up and after every change
//!   of a binding or a stream's removal.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::api::json_object;
use super::permit::Permit;
use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;
use crate::index::db::OnvifRow;
use crate::onvif::device::{Camera, Velocity};
use crate::onvif::discovery;
use crate::onvif::soap::Credentials;
use crate::onvif::watch;

/// ONVIF requests running at once; each holds an http worker for up to a few deadlines.
const MAX_RUNNING: usize = 2;
static RUNNING: AtomicUsize = AtomicUsize::new(0);

fn slot() -> Result<Permit, ApiError> {
    Permit::try_take(&RUNNING, MAX_RUNNING)
        .ok_or_else(|| ApiError::new(503, format!("{MAX_RUNNING} ONVIF requests are running; try again shortly")))
}

fn field_error(field: &str, what: &str) -> ApiError {
    ApiError::bad_request(format!("body field {field:?} {what}"))
}

/// The body as an object with only `known` fields; an empty body is `{}`.
fn fields(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) { Map::new() } else { json_object(body)? };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(field_error(k, &format!("is unknown (known: {})", known.join(", "))));
    }
    Ok(obj)
}

fn string<'a>(obj: &'a Map<String, Value>, field: &str, max: usize) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(Value::String(_)) => Err(field_error(field, &format!("is longer than {max} bytes"))),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str, max: usize) -> Result<&'a str, ApiError> {
    string(obj, field, max)?.filter(|s| !s.is_empty()).ok_or_else(|| field_error(field, "is required"))
}

fn int(obj: &Map<String, Value>, field: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (lo..=hi).contains(n))
            .map(Some)
            .ok_or_else(|| field_error(field, &format!("must be an integer {lo}..={hi}"))),
    }
}

/// `host`, `host:port` or a device service URL, as the device service URL.
pub fn device_url(address: &str) -> Result<String, ApiError> {
    let full =
        if address.contains("://") { address.to_string() } else { format!("http://{address}/onvif/device_service") };
    let u = url::Url::parse(&full).map_err(|_| field_error("address", "is not a host, host:port or http:// URL"))?;
    if u.scheme() != "http" {
        return Err(field_error("address", "must be an http:// URL (https is not supported)"));
    }
    if u.host_str().is_none_or(str::is_empty) || !u.username().is_empty() || u.password().is_some() {
        return Err(field_error("address", "needs a host and no credentials (send username and password)"));
    }
    Ok(u.to_string())
}

fn camera(ctx: &Ctx, device_url: String, username: &str, password: &str) -> Camera {
    let creds = Credentials { username: username.to_string(), password: password.to_string() };
    Camera {
        device_url,
        creds: Some(creds).filter(|c| !c.username.is_empty()),
        deadline: Duration::from_millis(u64::from(ctx.nvr.config.onvif.timeout_ms)),
        now_ms: ctx.nvr.clock.now_ms(),
    }
    .on_camera_clock()
}

/// `POST /api/onvif/discover` `{"timeout_ms"?, "target"?}`.
pub fn discover(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let obj = fields(body, &["timeout_ms", "target"])?;
    let cfg = &ctx.nvr.config.onvif;
    let wait = int(&obj, "timeout_ms", 100, 30_000)?.unwrap_or(u64::from(cfg.discovery_ms));
    let target = string(&obj, "target", 64)?.unwrap_or(&cfg.discovery_target);
    let target = target.parse().map_err(|_| field_error("target", "is not an IPv4 address:port"))?;
    let interface = cfg.interface.parse().map_err(|_| ApiError::internal("onvif.interface is not an IPv4 address"))?;
    let _slot = slot()?;
    let p = discovery::Probe { target, interface, wait: Duration::from_millis(wait) };
    let found = discovery::probe(&p)?;
    log::info!("onvif discover via {target}: {} device(s)", found.len());
    let devices: Vec<Value> = found
        .iter()
        .map(|f| {
            let mut v = json!(f);
            // The first http:// address is the one to probe (IPv6 link-local ones rarely work).
            v["address"] = json!(f.xaddrs.iter().find(|x| x.starts_with("http://")).unwrap_or(&f.xaddrs[0]));
            v
        })
        .collect();
    Ok(Reply::json(200, &json!({ "devices": devices })))
}

/// `POST /api/onvif/probe` `{"address", "username"?, "password"?}`.
pub fn probe(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let obj = fields(body, &["address", "username", "password"])?;
    let url = device_url(required(&obj, "address", 512)?)?;
    let user = string(&obj, "username", 128)?.unwrap_or_default();
    let password = string(&obj, "password", 128)?.unwrap_or_default();
    let _slot = slot()?;
    let d = crate::onvif::describe(&camera(ctx, url.clone(), user, password)).inspect_err(|e| {
        log::info!("onvif probe {url} as {user:?}: {e}");
    })?;
    log::info!("onvif probe {url}: {} {}, {} profile(s)", d.device.manufacturer, d.device.model, d.profiles.len());
    let mut v = json!(d);
    v["device_url"] = json!(url);
    v["ptz"] = json!(d.services.ptz.is_some());
    Ok(Reply::json(200, &v))
}

fn settings_json(ctx: &Ctx, name: &str, o: &OnvifRow) -> Value {
    let watchers = ctx.nvr.onvif_watchers.lock().unwrap_or_else(|p| p.into_inner());
    let status = watchers.get(name).map(|(_, w)| w.status());
    json!({ "stream": name, "device_url": o.device_url, "username": o.username, "profile": o.profile,
            "ptz": o.ptz_url.is_some(), "events": o.events, "events_status": status })
}

/// Stops every event watcher, ending their open events (the recorder exits).
pub fn stop_watchers(nvr: &super::state::Nvr) {
    let all = std::mem::take(&mut *nvr.onvif_watchers.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, (_, w)) in all {
        w.stop();
    }
}

/// Starts, restarts (settings changed) and stops event watchers so that one
/// runs for each stream whose ONVIF camera has `events` on, and no other.
pub fn sync_watchers(nvr: &super::state::Nvr, db: &crate::index::db::Db) -> Result<(), ApiError> {
    let want = db.onvif_event_sources()?;
    let mut running = nvr.onvif_watchers.lock().unwrap_or_else(|p| p.into_inner());
    running.retain(|name, (row, _)| want.iter().any(|(n, r)| n == name && r == row));
    for (name, row) in want {
        if running.contains_key(&name) {
            continue;
        }
        let settings = watch::Settings {
            stream: name.clone(),
            device_url: row.device_url.clone(),
            creds: Some(Credentials { username: row.username.clone(), password: row.password.clone() })
                .filter(|c| !c.username.is_empty()),
            deadline: Duration::from_millis(u64::from(nvr.config.onvif.timeout_ms)),
            pull: Duration::from_secs(u64::from(nvr.config.onvif.pull_seconds)),
        };
        let w = watch::Watcher::spawn(settings, nvr.events.clone(), nvr.clock.clone())
            .map_err(|e| ApiError::internal(format!("cannot start the ONVIF events thread of {name}: {e}")))?;
        running.insert(name, (row, w));
    }
    Ok(())
}

fn settings_of(ctx: &Ctx, name: &str) -> Result<OnvifRow, ApiError> {
    if ctx.db.stream_by_name(name)?.is_none() {
        return Err(ApiError::not_found(format!("no stream named {name:?}")));
    }
    ctx.db.onvif_of(name)?.ok_or_else(|| {
        ApiError::not_found(format!("stream {name:?} has no ONVIF camera; PUT /api/streams/{name}/onvif sets one"))
    })
}

/// `GET /api/streams/{name}/onvif`: the settings, without the password.
pub fn get_settings(ctx: &Ctx, name: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::json(200, &settings_json(ctx, name, &settings_of(ctx, name)?)))
}

/// `PUT /api/streams/{name}/onvif` `{"address", "username"?, "password"?, "profile", "events"?}`:
/// checked against the camera, then saved. A password left out keeps the stored one.
pub fn put_settings(ctx: &Ctx, name: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let obj = fields(body, &["address", "username", "password", "profile", "events"])?;
    let events = match obj.get("events") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field_error("events", "must be true or false")),
    };
    if ctx.db.stream_by_name(name)?.is_none() {
        return Err(ApiError::not_found(format!("no stream named {name:?}")));
    }
    let url = device_url(required(&obj, "address", 512)?)?;
    let profile = required(&obj, "profile", 64)?;
    let user = string(&obj, "username", 128)?.unwrap_or_default();
    let password = match string(&obj, "password", 128)? {
        Some(p) => p.to_string(),
        None => ctx.db.onvif_of(name)?.map(|o| o.password).unwrap_or_default(),
    };
    let _slot = slot()?;
    let cam = camera(ctx, url.clone(), user, &password);
    let services = cam.services()?;
    let media = services.media.unwrap_or_default();
    let profiles = cam.profiles(&media)?;
    let Some(p) = profiles.iter().find(|p| p.token == profile) else {
        let known: Vec<&str> = profiles.iter().map(|p| p.token.as_str()).collect();
        return Err(ApiError::new(
            422,
            format!("body field \"profile\": the camera has no profile {profile:?} (it has: {})", known.join(", ")),
        ));
    };
    if events && services.events.is_none() {
        return Err(ApiError::new(
            422,
            "body field \"events\": the camera has no Events service (GetCapabilities names none)".to_string(),
        ));
    }
    // PTZ only where the camera has the service and the profile a PTZ configuration.
    let ptz_url = services.ptz.filter(|_| p.ptz);
    let row = OnvifRow {
        device_url: url,
        username: user.to_string(),
        password,
        profile: profile.to_string(),
        media_url: media,
        ptz_url,
        events,
    };
    if !ctx.db.set_onvif(name, &row)? {
        return Err(ApiError::not_found(format!("no stream named {name:?}")));
    }
    log::info!(
        "stream {name}: ONVIF camera {} profile {profile} (ptz: {}, events: {events})",
        row.device_url,
        row.ptz_url.is_some()
    );
    sync_watchers(ctx.nvr, ctx.db)?;
    Ok(Reply::json(200, &settings_json(ctx, name, &row)))
}

pub fn delete_settings(ctx: &Ctx, name: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    settings_of(ctx, name)?;
    ctx.db.delete_onvif(name)?;
    sync_watchers(ctx.nvr, ctx.db)?;
    Ok(Reply::json(200, &json!({ "deleted": name })))
}

/// `POST /api/streams/{name}/ptz` `{"action": "move"|"stop"|"goto_preset"|"set_preset"|"presets", ...}`.
pub fn ptz(ctx: &Ctx, name: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let obj = fields(body, &["action", "pan", "tilt", "zoom", "timeout_ms", "preset", "name"])?;
    let action = required(&obj, "action", 32)?;
    let o = settings_of(ctx, name)?;
    let Some(ptz) = o.ptz_url.clone() else {
        return Err(ApiError::conflict(format!("stream {name:?}: its ONVIF camera profile has no PTZ")));
    };
    let speed = |f: &str| -> Result<f64, ApiError> {
        match obj.get(f) {
            None | Some(Value::Null) => Ok(0.0),
            Some(v) => {
                v.as_f64().filter(|x| (-1.0..=1.0).contains(x)).ok_or_else(|| field_error(f, "must be a number -1..=1"))
            }
        }
    };
    let cam = camera(ctx, o.device_url.clone(), &o.username, &o.password);
    let answer = match action {
        "move" => {
            let v = Velocity { pan: speed("pan")?, tilt: speed("tilt")?, zoom: speed("zoom")? };
            let timeout = int(&obj, "timeout_ms", 100, 60_000)?.map(Duration::from_millis);
            let _slot = slot()?;
            cam.continuous_move(&ptz, &o.profile, v, timeout)?;
            json!({ "ok": true })
        }
        "stop" => {
            let _slot = slot()?;
            cam.stop(&ptz, &o.profile)?;
            json!({ "ok": true })
        }
        "goto_preset" => {
            let preset = required(&obj, "preset", 64)?;
            let _slot = slot()?;
            cam.goto_preset(&ptz, &o.profile, preset)?;
            json!({ "ok": true })
        }
        "set_preset" => {
            let label = required(&obj, "name", 64)?;
            let _slot = slot()?;
            json!({ "ok": true, "preset": cam.set_preset(&ptz, &o.profile, label)? })
        }
        "presets" => {
            let _slot = slot()?;
            json!({ "ok": true, "presets": cam.presets(&ptz, &o.profile)? })
        }
        other => {
            return Err(field_error(
                "action",
                &format!("{other:?} is unknown (known: move, stop, goto_preset, set_preset, presets)"),
            ))
        }
    };
    log::info!("stream {name}: PTZ {action}");
    Ok(Reply::json(200, &answer))
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_become_device_urls() {
        assert_eq!(super::device_url("10.0.0.5").expect("host"), "http://10.0.0.5/onvif/device_service");
        assert_eq!(super::device_url("cam:8080").expect("port"), "http://cam:8080/onvif/device_service");
        assert_eq!(super::device_url("http://h:81/onvif/dev").expect("url"), "http://h:81/onvif/dev");
        assert!(super::device_url("https://h/").is_err());
        assert!(super::device_url("http://u:p@h/").is_err());
        assert!(super::device_url("a b").is_err());
    }
}
