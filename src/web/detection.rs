//! `PUT /api/streams/{name}/detection` `{"enabled": bool}`: the page's
//! motion/object toggle. It flips the same run-time switch as MQTT's
//! `<stream>/detection/set` (`detect::switch::Switch`, held by the `Nvr`), so
//! `/api/streams[].detection.enabled`, MQTT's retained state and the
//! detection threads all follow it.
//!
//! Invariants: off means no new events (decoding, counters and recording go
//! on); the switch lives until the recorder restarts (like MQTT's); a stream
//! that runs no detection is a 409 naming its empty `detect` list, not a
//! silent no-op.

use serde_json::Value;

use super::api::{detection_json, json_object};
use super::reply::{ApiError, Reply};
use super::state::Nvr;
use super::{Ctx, Query};

/// Flips `stream`'s switch (any stream the recorder has: MQTT may switch a
/// stream before detection starts on it); true if that changed it.
pub fn switch(nvr: &Nvr, stream: &str, on: bool) -> Result<bool, ApiError> {
    if nvr.recorder.stream(stream).is_none() {
        return Err(ApiError::not_found(format!("no stream named {stream:?}")));
    }
    let changed = nvr.detect_switch.set(stream, on);
    if changed {
        log::info!("stream {stream}: detection switched {}", if on { "on" } else { "off" });
    }
    Ok(changed)
}

/// The handler: the stream's `detection` object as `GET /api/streams/{name}` shows it.
pub fn put(ctx: &Ctx, name: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let on = enabled_field(body)?;
    let Some(row) = ctx.db.stream_by_name(name)? else {
        return Err(ApiError::not_found(format!("no stream named {name:?}")));
    };
    if row.spec.detect.is_empty() || ctx.nvr.detection.get(name).is_none() {
        return Err(ApiError::conflict(format!(
            "stream {name:?} runs no detection (its detect list is empty: set it in the stream's settings): nothing to switch"
        )));
    }
    switch(ctx.nvr, name, on)?;
    Ok(Reply::json(200, &detection_json(ctx.nvr, &row.spec)))
}

/// `{"enabled": true|false}` and nothing else, or a 400 naming the field.
fn enabled_field(body: &[u8]) -> Result<bool, ApiError> {
    let obj = json_object(body)?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "enabled") {
        return Err(ApiError::bad_request(format!("body field {k:?} is unknown (known: enabled)")));
    }
    match obj.get("enabled") {
        Some(Value::Bool(b)) => Ok(*b),
        None => Err(ApiError::bad_request("body field \"enabled\" is required (true or false)")),
        Some(_) => Err(ApiError::bad_request("body field \"enabled\" must be true or false")),
    }
}
