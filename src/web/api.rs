//! JSON handlers: health, streams (CRUD), recordings listing, system.
//!
//! Invariants:
//! - Stream URLs leave the API with their password masked (`user:***@`); a
//!   PUT that sends the masked URL back keeps the stored one.
//! - Every stream change validates like the configuration file does, refuses
//!   unknown fields, and names the field at fault.
//! - A stream with recordings is never deleted (nor stopped) unless
//!   `?purge=true` is given.

use serde_json::{json, Map, Value};

use crate::base::clock::{parse_time, rfc3339, Clock};
use crate::base::memory;
use crate::config::StreamConfig;
use crate::index::db::{ClockStep, GapRow, SegmentRow, StreamRow, StreamSpec};
use crate::recording::recorder::Edit;
use crate::recording::retention;
use crate::recording::stream::{StreamRuntime, Writing};

use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;

/// Longest span export and playback accept, and the default listing span.
pub const DAY_MS: i64 = 86_400_000;

pub fn health(ctx: &Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::json(
        200,
        &json!({ "ok": true, "version": env!("CARGO_PKG_VERSION"),
                 "firmware": crate::appliance::firmware_version(),
                 "uptime_s": ctx.nvr.started.elapsed().as_secs(),
                 "clock": clock_json(&*ctx.nvr.clock) }),
    ))
}

/// The wall clock against its floor (30 days before the firmware's build date). Public in
/// /api/health, so every page can say when recordings' times are unknown.
fn clock_json(clock: &dyn Clock) -> Value {
    let (now, floor) = (clock.now_ms(), clock.floor_ms());
    json!({ "trusted": clock.trusted(), "now_ms": now, "now": rfc3339(now), "floor_ms": floor, "floor": rfc3339(floor) })
}

// ---- time spans ----

/// `start`/`end` of a query (RFC 3339 or epoch ms). Defaults: end = now,
/// start = end - 24 h. Refuses end <= start and spans over `max_ms`.
pub fn span(q: &Query, now_ms: i64, max_ms: Option<i64>) -> Result<(i64, i64), ApiError> {
    let time = |name: &str| {
        q.get(name)
            .map(|v| parse_time(v).map_err(|e| ApiError::bad_request(format!("parameter {name}: {e}"))))
            .transpose()
    };
    let end = time("end")?.unwrap_or(now_ms);
    let start = time("start")?.unwrap_or(end.saturating_sub(DAY_MS));
    if end <= start {
        return Err(ApiError::bad_request(format!(
            "parameter end ({}) must be after start ({})",
            rfc3339(end),
            rfc3339(start)
        )));
    }
    match max_ms {
        Some(max) if end.saturating_sub(start) > max => Err(ApiError::bad_request(format!(
            "the span from start to end is {:.1} h; at most {} h are allowed",
            end.saturating_sub(start) as f64 / 3_600_000.0,
            max / 3_600_000
        ))),
        _ => Ok((start, end)),
    }
}

// ---- streams: views ----

/// `rtsp://user:pass@host/x` -> `rtsp://user:***@host/x`; other URLs unchanged.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let Some(colon) = authority[..at].find(':') else { return url.to_string() };
    format!("{}{}:***{}", &url[..scheme_end], &authority[..colon], &rest[at..])
}

fn status_json(rt: &StreamRuntime) -> Value {
    let st = rt.status();
    let mut v = serde_json::to_value(&st).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("fps".into(), round1(st.fps).into());
        m.insert("bitrate_kbps".into(), round1(st.bitrate_kbps).into());
        m.insert("last_frame".into(), st.last_frame_ms.map(rfc3339).into());
        m.insert("last_error_time".into(), st.last_error_ms.map(rfc3339).into());
    }
    v
}

/// An f32 rate as an f64 with one decimal (no float noise in the JSON).
fn round1(v: f32) -> f64 {
    (f64::from(v) * 10.0).round() / 10.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

fn ring_json(rt: &StreamRuntime) -> Value {
    let s = rt.ring.stats();
    json!({
        "capacity": s.capacity,
        "used_bytes": s.used_bytes,
        "use_percent": percent(s.used_bytes as u64, s.capacity as u64),
        "records": s.records,
        "keyframes": s.keyframes,
        "evictions": s.evictions,
        "oversized": s.oversized,
    })
}

/// A stream's sub stream: its live status and its ring.
fn sub_json(sub: &StreamRuntime) -> Value {
    json!({ "status": status_json(sub), "ring": ring_json(sub) })
}

/// A stream as the API shows it: row (URL masked), live status, ring, storage use.
fn stream_json(ctx: &Ctx, row: &StreamRow, usage: (u64, u64)) -> Value {
    let mut v = serde_json::to_value(row).unwrap_or_else(|_| json!({}));
    let rt = ctx.nvr.recorder.stream(&row.spec.name);
    if let Value::Object(m) = &mut v {
        m.insert("url".into(), mask_url(&row.spec.url).into());
        m.insert("sub_url".into(), row.spec.sub_url.as_deref().map(mask_url).into());
        m.insert("snapshot_url".into(), row.spec.snapshot_url.as_deref().map(mask_url).into());
        m.insert("created".into(), rfc3339(row.created_ms).into());
        m.insert("updated".into(), rfc3339(row.updated_ms).into());
        m.insert("status".into(), rt.as_deref().map_or(Value::Null, status_json));
        m.insert("ring".into(), rt.as_deref().map_or(Value::Null, ring_json));
        m.insert("sub".into(), rt.as_deref().and_then(StreamRuntime::sub).as_deref().map_or(Value::Null, sub_json));
        m.insert("storage".into(), json!({ "bytes": usage.0, "segments": usage.1 }));
        m.insert("detection".into(), detection_json(ctx.nvr, &row.spec));
        let origin = ctx.nvr.archive.get().and_then(|a| a.origin(&row.spec.name));
        m.insert("archive".into(), origin.map_or(Value::Null, |(b, s)| json!({ "box": b, "stream": s })));
    }
    v
}

/// A stream's detectors (as its spec says now), switch, counters and
/// problem; null for a stream without a detection thread.
pub(super) fn detection_json(nvr: &super::state::Nvr, spec: &StreamSpec) -> Value {
    let name = spec.name.as_str();
    let Some(stats) = nvr.detection.get(name) else { return Value::Null };
    let c = stats.snapshot();
    let has_sub = nvr.recorder.stream(name).is_some_and(|rt| rt.sub().is_some());
    let source = if c.snapshot {
        "snapshot"
    } else if has_sub {
        "sub"
    } else {
        "main"
    };
    json!({
        "detectors": spec.detect,
        "source": source,
        "enabled": nvr.detect_switch.enabled(name),
        "in_motion": c.in_motion,
        "frames_seen": c.frames_seen,
        "frames_decoded": c.frames_decoded,
        "decode_errors": c.decode_errors,
        "frames_lost": c.frames_lost,
        "ring_changes": c.ring_changes,
        "busy_ms": c.busy_us / 1000,
        "problem": stats.problem(),
    })
}

/// (bytes, segments) recorded by a stream.
fn usage_of(ctx: &Ctx, stream_id: i64) -> Result<(u64, u64), ApiError> {
    let usage = ctx.db.stream_usage()?;
    Ok(usage.iter().find(|u| u.0 == stream_id).map_or((0, 0), |u| (u.1, u.2)))
}

fn find_stream(ctx: &Ctx, name: &str) -> Result<StreamRow, ApiError> {
    ctx.db.stream_by_name(name)?.ok_or_else(|| ApiError::not_found(format!("no stream named {name:?}")))
}

pub fn list_streams(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let usage = ctx.db.stream_usage()?;
    let rows = ctx.db.list_streams()?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let u = usage.iter().find(|u| u.0 == r.id).map_or((0, 0), |u| (u.1, u.2));
            stream_json(ctx, r, u)
        })
        .collect();
    Ok(Reply::json(200, &json!({ "streams": list })))
}

pub fn get_stream(ctx: &Ctx, name: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let row = find_stream(ctx, name)?;
    let usage = usage_of(ctx, row.id)?;
    Ok(Reply::json(200, &stream_json(ctx, &row, usage)))
}

// ---- streams: changes ----

/// The body as a JSON object, or a 400 naming what is wrong with it. A
/// number written with a zero fraction (`5.0`) is read as the integer it is
/// (JSON Schema's `integer`, and what JavaScript may send).
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.values_mut().for_each(integral);
            Ok(m)
        }
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) if body.iter().all(u8::is_ascii_whitespace) => {
            Err(ApiError::bad_request(format!("the request body is empty; a JSON object is expected ({e})")))
        }
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON in the request body: {e}"))),
    }
}

/// Turns numbers with a zero fraction that fit an i64 into integers, deeply.
fn integral(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // The bounds are exact powers of two: every f64 in [-2^63, 2^63) is an i64.
            if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral),
        Value::Object(m) => m.values_mut().for_each(integral),
        _ => {}
    }
}

/// The fields of a stream as a JSON object (the shape `StreamConfig` reads).
fn spec_fields(s: &StreamSpec) -> Map<String, Value> {
    let v = json!({
        "name": s.name,
        "url": s.url,
        "enabled": s.enabled,
        "record": s.record,
        "retention_days": s.retention_days,
        "max_storage_mb": s.max_storage_mb,
        "priority": s.priority,
        "bitrate_kbps": s.bitrate_kbps,
        "pre_seconds": s.pre_seconds,
        "post_seconds": s.post_seconds,
        "event_retention_days": s.event_retention_days,
        "sub_url": s.sub_url,
        "snapshot_url": s.snapshot_url,
        "detect": s.detect,
        "motion_mask": s.motion_mask,
        "zones": s.zones,
        "replicate": s.replicate,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `base` with the fields of `patch` laid over it, read as a `StreamConfig`.
/// On failure names the first field of `patch` that is wrong on its own.
fn merge_fields(base: &Map<String, Value>, patch: &Map<String, Value>) -> Result<StreamConfig, ApiError> {
    let read = |fields: &[(&String, &Value)]| {
        let mut m = base.clone();
        for (k, v) in fields {
            m.insert((*k).clone(), (*v).clone());
        }
        serde_json::from_value::<StreamConfig>(Value::Object(m))
    };
    let all: Vec<(&String, &Value)> = patch.iter().collect();
    read(&all).map_err(|e| {
        let culprit = all.iter().find_map(|kv| read(&[*kv]).err().map(|e1| (kv.0, e1)));
        match culprit {
            Some((_, e1)) if e1.to_string().starts_with("unknown field") => ApiError::bad_request(e1.to_string()),
            Some((k, e1)) => ApiError::bad_request(format!("field {k}: {e1}")),
            None => ApiError::bad_request(format!("stream fields: {e}")),
        }
    })
}

/// The checks of the configuration file, for one stream.
fn validate(c: &StreamConfig) -> Result<(), ApiError> {
    c.validate().map_err(|(field, m)| ApiError::bad_request(format!("field {field}: {m}")))
}

/// Saves a stream and brings the running one in line (restarted only if a
/// session setting changed); the answer shows it. The caller holds `edit`
/// since before it read the row, so concurrent changes apply one at a time.
fn save_and_apply(ctx: &Ctx, edit: &mut Edit, spec: &StreamSpec, status: u16) -> Result<Reply, ApiError> {
    let row = ctx.db.upsert_stream(spec, ctx.nvr.clock.now_ms())?;
    if let Err(e) = edit.apply(&row) {
        return Err(ApiError::internal(format!("stream {:?} was saved but could not be started: {e}", spec.name)));
    }
    let usage = usage_of(ctx, row.id)?;
    Ok(Reply::json(status, &stream_json(ctx, &row, usage)))
}

pub fn create_stream(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let fields = json_object(body)?;
    for required in ["name", "url"] {
        if !fields.contains_key(required) {
            return Err(ApiError::bad_request(format!("field {required} is required")));
        }
    }
    let base = Map::from_iter([("name".to_string(), json!("x")), ("url".to_string(), json!("rtsp://x/"))]);
    let cfg = merge_fields(&base, &fields)?;
    validate(&cfg)?;
    let mut edit = ctx.nvr.recorder.edit();
    if ctx.db.stream_by_name(&cfg.name)?.is_some() {
        return Err(ApiError::conflict(format!(
            "stream {:?} already exists; PUT /api/streams/{} changes it",
            cfg.name, cfg.name
        )));
    }
    save_and_apply(ctx, &mut edit, &cfg.to_spec("api"), 201)
}

pub fn update_stream(ctx: &Ctx, name: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let mut patch = json_object(body)?;
    let mut edit = ctx.nvr.recorder.edit();
    let row = find_stream(ctx, name)?;
    // The path names the stream; a body may repeat the name (the page sends
    // the object back) but not rename it. A masked URL sent back means "unchanged".
    match patch.remove("name") {
        Some(Value::String(n)) if n == name => {}
        None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field name: {other} differs from the stream {name:?} of the path; streams cannot be renamed"
            )))
        }
    }
    let masked = [
        ("url", Some(&row.spec.url)),
        ("sub_url", row.spec.sub_url.as_ref()),
        ("snapshot_url", row.spec.snapshot_url.as_ref()),
    ];
    for (field, old) in masked {
        if old.is_some_and(|u| patch.get(field).and_then(Value::as_str) == Some(mask_url(u).as_str())) {
            patch.remove(field);
        }
    }
    let cfg = merge_fields(&spec_fields(&row.spec), &patch)?;
    validate(&cfg)?;
    save_and_apply(ctx, &mut edit, &cfg.to_spec(&row.spec.source), 200)
}

pub fn flag(q: &Query, name: &str) -> Result<bool, ApiError> {
    match q.get(name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!("parameter {name}: {v:?} is not true or false"))),
    }
}

pub fn delete_stream(ctx: &Ctx, name: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&["purge"]).map_err(ApiError::bad_request)?;
    let purge = flag(q, "purge")?;
    let mut edit = ctx.nvr.recorder.edit();
    let row = find_stream(ctx, name)?;
    let (_, segments) = usage_of(ctx, row.id)?;
    if segments > 0 && !purge {
        return Err(ApiError::conflict(format!(
            "stream {name:?} has {segments} recording(s); DELETE /api/streams/{name}?purge=true deletes them with the stream"
        )));
    }
    edit.remove(name);
    let deleted = if purge { ctx.nvr.recorder.purge_recordings(row.id) } else { Ok(0) };
    let deleted = match deleted {
        Ok(n) => n,
        Err(e) => {
            return Err(restart(&mut edit, row, ApiError::internal(format!("stream {name:?}: purge failed: {e}"))))
        }
    };
    match ctx.db.delete_stream(name) {
        Ok(_) => {
            ctx.nvr.detect_switch.forget(name);
            // Its ONVIF binding went with it (cascade): so does its event watcher.
            if let Err(e) = super::onvif::sync_watchers(ctx.nvr, ctx.db) {
                log::warn!("stream {name}: ONVIF event watchers not updated: {}", e.message);
            }
            Ok(Reply::json(200, &json!({ "deleted": name, "recordings_deleted": deleted })))
        }
        Err(crate::index::db::DbError::InUse { segments, .. }) => Err(restart(
            &mut edit,
            row,
            ApiError::conflict(format!(
                "stream {name:?} still has {segments} recording(s) (being written?); it was restarted, try again"
            )),
        )),
        Err(e) => Err(restart(&mut edit, row, e.into())),
    }
}

/// Puts a stream back after a failed deletion and passes the error on.
fn restart(edit: &mut Edit, row: StreamRow, err: ApiError) -> ApiError {
    if let Err(e) = edit.apply(&row) {
        log::warn!("stream {}: cannot restart after a failed deletion: {e}", row.spec.name);
    }
    err
}

// ---- recordings ----

/// A recording as listed; an open one also says how far it is written
/// (`writing`: the row's end and bytes move only at each sync).
fn segment_json(seg: &SegmentRow, stream: &str, writing: Option<Writing>) -> Value {
    let mut v = serde_json::to_value(seg).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("stream".into(), stream.into());
        m.insert("start".into(), rfc3339(seg.start_ms).into());
        m.insert("end".into(), rfc3339(seg.end_ms).into());
        m.insert("duration_ms".into(), seg.end_ms.saturating_sub(seg.start_ms).into());
        m.insert("fragments".into(), seg.fragments.len().into());
        m.insert("url".into(), format!("/api/recordings/{}/file", seg.id).into());
        if let Some(w) = writing.filter(|w| !seg.closed && w.segment_id == seg.id) {
            m.insert("writing".into(), writing_json(seg, &w));
        }
    }
    v
}

fn writing_json(seg: &SegmentRow, w: &Writing) -> Value {
    let end_ms = w.end_ms.max(seg.end_ms);
    json!({
        "end_ms": end_ms,
        "end": rfc3339(end_ms),
        "duration_ms": end_ms.saturating_sub(seg.start_ms),
        "bytes": w.bytes.max(seg.bytes),
    })
}

fn gap_json(g: &GapRow, stream: &str) -> Value {
    json!({
        "stream": stream,
        "stream_id": g.stream_id,
        "start_ms": g.start_ms,
        "end_ms": g.end_ms,
        "start": rfc3339(g.start_ms),
        "end": rfc3339(g.end_ms),
        "duration_ms": g.end_ms.saturating_sub(g.start_ms),
        "reason": g.reason,
        "time_unknown": g.time_unknown,
    })
}

pub fn recordings(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&["stream", "start", "end"]).map_err(ApiError::bad_request)?;
    let (start, end) = span(q, ctx.nvr.clock.now_ms(), None)?;
    let streams = match q.get("stream") {
        Some(name) => vec![find_stream(ctx, name)?],
        None => ctx.db.list_streams()?,
    };
    let mut recs: Vec<(i64, i64, Value)> = Vec::new();
    let mut gaps: Vec<(i64, Value)> = Vec::new();
    for s in &streams {
        let writing = ctx.nvr.recorder.stream(&s.spec.name).and_then(|rt| rt.with_status(|st| st.writing));
        for seg in ctx.db.segments_overlapping(s.id, start, end)? {
            recs.push((seg.start_ms, seg.id, segment_json(&seg, &s.spec.name, writing)));
        }
        for g in ctx.db.gaps_overlapping(s.id, start, end)? {
            gaps.push((g.start_ms, gap_json(&g, &s.spec.name)));
        }
    }
    recs.sort_by_key(|r| (r.0, r.1));
    gaps.sort_by_key(|g| g.0);
    let steps = ctx.db.clock_steps(start, end)?;
    Ok(Reply::json(
        200,
        &json!({
            "start": rfc3339(start),
            "end": rfc3339(end),
            "recordings": recs.into_iter().map(|r| r.2).collect::<Vec<_>>(),
            "gaps": gaps.into_iter().map(|g| g.1).collect::<Vec<_>>(),
            "clock_steps": steps.iter().map(clock_step_json).collect::<Vec<_>>(),
        }),
    ))
}

/// A step of the wall clock, for the timeline: where it happened on both sides.
fn clock_step_json(s: &ClockStep) -> Value {
    json!({
        "at_ms": s.at_ms,
        "at": rfc3339(s.at_ms),
        "before_ms": s.at_ms - s.step_ms,
        "step_ms": s.step_ms,
    })
}

// ---- system ----

/// `GET /api/system/memory`: the memory budget, its reservations and the
/// streams waiting for one.
pub fn memory_budget(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::json(200, &ctx.nvr.recorder.budget_report()))
}

/// `PUT /api/system/memory` `{"budget_mb": N}`: sets the budget until the
/// recorder restarts (the file's `memory.budget_mb` then applies again). A
/// raise admits waiting streams now; a cut stops no running stream.
pub fn set_memory_budget(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let mut m = json_object(body)?;
    let (lo, hi) = crate::config::BUDGET_MB_RANGE;
    let mb = m.remove("budget_mb").ok_or_else(|| ApiError::bad_request("budget_mb is required"))?;
    let mb = mb
        .as_u64()
        .filter(|mb| (u64::from(lo)..=u64::from(hi)).contains(mb))
        .ok_or_else(|| ApiError::bad_request(format!("budget_mb must be a whole number of MiB, {lo}..={hi}: {mb}")))?;
    if let Some(k) = m.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field {k:?} (only budget_mb)")));
    }
    log::info!("memory budget set to {mb} MiB through the API");
    Ok(Reply::json(200, &ctx.nvr.recorder.set_budget(mb << 20)))
}

/// The stream's last bitrate samples, oldest first, as [epoch ms, kbit/s] pairs.
fn bitrate_history_json(rt: &StreamRuntime) -> Value {
    let samples = rt.with_status(|s| s.bitrate_history());
    samples.into_iter().map(|(ms, kbps)| json!([ms, round1(kbps)])).collect()
}

/// Recording is paused while the storage thread cannot write some stream: the first one's reason.
pub(super) fn recording_problem(nvr: &crate::web::state::Nvr) -> Option<String> {
    nvr.recorder.streams().iter().find_map(|rt| rt.with_status(|s| s.storage_error.clone()))
}

pub fn system(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let nvr = ctx.nvr;
    let heap: Map<String, Value> =
        memory::heap_by_subsystem().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    let data_dir = &nvr.config.storage.data_dir;
    let mut disk = json!({ "data_dir": data_dir.display().to_string() });
    // A disk that fails (EIO) fails the database too: the rest of this answer still says what is wrong.
    match ctx.db.stream_usage() {
        Ok(usage) => disk["recordings_bytes"] = usage.iter().map(|u| u.1).sum::<u64>().into(),
        Err(e) => disk["database_error"] = e.to_string().into(),
    }
    disk["reserve_held"] = crate::recording::reserve::Reserve::new(data_dir).held().into();
    match retention::disk_usage(data_dir) {
        Ok(d) => {
            disk["total_bytes"] = d.total_bytes.into();
            disk["free_bytes"] = d.free_bytes.into();
            disk["free_percent"] = percent(d.free_bytes, d.total_bytes).into();
        }
        Err(e) => disk["error"] = e.to_string().into(),
    }
    let problem = recording_problem(nvr);
    disk["recording"] = if problem.is_some() { "paused" } else { "ok" }.into();
    disk["problem"] = problem.into();
    let streams: Vec<Value> = nvr
        .recorder
        .streams()
        .iter()
        .map(|rt| json!({ "name": rt.name(), "ring": ring_json(rt), "bitrate_history": bitrate_history_json(rt) }))
        .collect();
    Ok(Reply::json(
        200,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "firmware": crate::appliance::firmware_version(),
            "uptime_s": nvr.started.elapsed().as_secs(),
            "started": rfc3339(nvr.started_ms),
            "memory": {
                "heap_by_subsystem": heap,
                "rings_bytes": nvr.recorder.ring_bytes_total(),
                "sub_rings_bytes": nvr.recorder.sub_ring_bytes_total(),
                "sqlite_bytes": crate::index::db::Db::memory_used(),
                "detect_native_bytes": memory::detect_native_bytes(),
                "budget": nvr.recorder.budget_report(),
                "rings_locked_bytes": nvr.recorder.ring_bytes_locked(),
                "pressure": nvr.pressure.report(nvr.clock.now_ms()),
                "process": memory::process_memory(),
            },
            "disk": disk,
            "clock": clock_json(&*nvr.clock),
            "streams": streams,
            "watchdog": nvr.watchdog.snapshot(),
            "live_clients": super::live::live_clients(),
            "senders_busy": super::send::sending(),
            "go2rtc": nvr.go2rtc.get().map(|g| g.status()),
            "mqtt": nvr.mqtt.get().map(|m| m.status()),
            "replicate": nvr.replicate.get().map(|r| r.status_json()),
            "archive": nvr.archive.get().map(|a| a.status_json()),
        }),
    ))
}

/// `POST /api/system/test-stall?part=storage|executor|http`: test-only, the
/// part blocks at its next heartbeat (the watchdog then stops feeding). 403
/// unless the process was started with `OXINVR_TEST_KNOBS=1`.
pub fn test_stall(q: &Query) -> Result<Reply, ApiError> {
    use crate::base::heartbeat::{self, Part};
    q.only(&["part"]).map_err(ApiError::bad_request)?;
    let name = q.get("part").ok_or_else(|| ApiError::bad_request("part is required: storage, executor or http"))?;
    let part = Part::parse(name)
        .ok_or_else(|| ApiError::bad_request(format!("part={name:?}: give storage, executor or http")))?;
    heartbeat::stall(part).map_err(|m| ApiError::new(403, m))?;
    Ok(Reply::json(200, &json!({ "stalled": part.name() })))
}

/// `GET /api/system/logs?lines=N`: the newest lines of the recorder's log
/// file (default 200, at most 2000; only its last 512 KiB are read).
pub fn logs(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    use std::io::{Read, Seek, SeekFrom};
    q.only(&["lines"]).map_err(ApiError::bad_request)?;
    let n = match q.get("lines") {
        None => 200,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=2000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("lines={v:?}: give a number from 1 to 2000")))?,
    };
    let path = ctx.nvr.config.storage.data_dir.join("oxinvr.log");
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(&path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub(512 << 10);
        f.seek(SeekFrom::Start(from))
            .and_then(|_| f.take(512 << 10).read_to_end(&mut text))
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))?;
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let lines = &all[all.len().saturating_sub(n)..];
    Ok(Reply::json(200, &json!({ "file": path.display().to_string(), "lines": lines })))
}

/// `GET /api/settings`: the configuration in effect, stream passwords masked,
/// and each stream as it runs now next to what the configuration file says
/// (`streams`). The file is edited by hand; streams also through the API.
pub fn settings(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let mut cfg = ctx.nvr.config.clone();
    for s in &mut cfg.streams {
        s.url = mask_url(&s.url);
    }
    if !cfg.mqtt.password.is_empty() {
        cfg.mqtt.password = "***".into();
    }
    for w in cfg.webhooks.iter_mut().filter(|w| !w.secret.is_empty()) {
        w.secret = "***".into();
    }
    if !cfg.replicate.secret_key.is_empty() {
        cfg.replicate.secret_key = "***".into();
    }
    if !cfg.archive.secret_key.is_empty() {
        cfg.archive.secret_key = "***".into();
    }
    let config =
        serde_json::to_value(&cfg).map_err(|e| ApiError::internal(format!("cannot encode the settings: {e}")))?;
    let file = &ctx.nvr.config.streams;
    let rows = ctx.db.list_streams()?;
    let spec_in_file = |name: &str| {
        let stored = rows.iter().find(|r| r.spec.name == name).map(|r| &r.spec);
        file.iter().find(|c| c.name == name).map(|c| c.to_spec_over(stored))
    };
    let mut streams: Vec<Value> =
        rows.iter().map(|r| stream_setting(Some(&r.spec), spec_in_file(&r.spec.name).as_ref())).collect();
    for c in file.iter().filter(|c| !rows.iter().any(|r| r.spec.name == c.name)) {
        streams.push(stream_setting(None, Some(&c.to_spec("config"))));
    }
    Ok(Reply::json(200, &json!({ "config": config, "streams": streams })))
}

/// One stream's settings: in effect (the database row), in the file, and the
/// fields a restart sets back to the file's values (the file's streams are
/// written into the database at every start).
fn stream_setting(effect: Option<&StreamSpec>, file: Option<&StreamSpec>) -> Value {
    let fields = |s: &StreamSpec| {
        let mut m = spec_fields(s);
        m.remove("name");
        m
    };
    let (now, in_file) = (effect.map(fields), file.map(fields));
    let reset: Vec<&String> = match (&now, &in_file) {
        (Some(n), Some(f)) => f.iter().filter(|(k, v)| n.get(*k) != Some(v)).map(|(k, _)| k).collect(),
        (None, Some(f)) => f.keys().collect(),
        _ => Vec::new(),
    };
    let masked = |m: &Map<String, Value>| {
        let mut m = m.clone();
        for key in ["url", "sub_url", "snapshot_url"] {
            if let Some(url) = m.get(key).and_then(Value::as_str) {
                m.insert(key.into(), mask_url(url).into());
            }
        }
        m
    };
    let name = effect.or(file).map(|s| s.name.clone()).unwrap_or_default();
    json!({
        "name": name,
        "source": effect.map_or("config", |s| s.source.as_str()),
        "in_effect": now.as_ref().map(masked),
        "file": in_file.as_ref().map(masked),
        "restart_resets": reset,
    })
}

/// For the JSON fuzz target (`web::fuzz`): `body` as a new stream and as a
/// change of an existing one, through the same checks as the handlers.
/// A body that passes must give a spec whose name and URL validate.
pub(super) fn check_stream_bodies(body: &[u8]) {
    let Ok(fields) = json_object(body) else { return };
    let base = Map::from_iter([("name".to_string(), json!("x")), ("url".to_string(), json!("rtsp://x/"))]);
    let existing = StreamConfig {
        name: "cam".into(),
        url: "rtsp://u:pw@cam/x".into(),
        enabled: true,
        record: Default::default(),
        retention_days: Some(7),
        max_storage_mb: Some(100),
        priority: 1,
        bitrate_kbps: Some(2000),
        pre_seconds: 5,
        post_seconds: 10,
        event_retention_days: 30,
        detect: Vec::new(),
        motion_mask: Vec::new(),
        schedule: vec!["mon-fri 07:00-19:00 events".into()],
        sub_url: Some("rtsp://u:pw@cam/sub".into()),
        snapshot_url: Some("http://u:pw@cam/snap.jpg".into()),
        zones: Vec::new(),
        replicate: true,
    };
    for (base, patch) in [(base, fields.clone()), (spec_fields(&existing.to_spec("api")), fields)] {
        if let Ok(cfg) = merge_fields(&base, &patch) {
            if validate(&cfg).is_ok() {
                let spec = cfg.to_spec("api");
                assert!(crate::config::validate_stream_url(&spec.url).is_ok(), "a validated stream has a bad URL");
                let _ = mask_url(&spec.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_url("rtsp://admin:secret@10.0.0.2:554/s1"), "rtsp://admin:***@10.0.0.2:554/s1");
        assert_eq!(mask_url("rtsp://admin:p@ss@cam/s?x=@"), "rtsp://admin:***@cam/s?x=@");
        assert_eq!(mask_url("rtsp://admin@cam/s"), "rtsp://admin@cam/s");
        assert_eq!(mask_url("rtsp://cam/a:b@c"), "rtsp://cam/a:b@c");
        assert_eq!(mask_url("rtsp://u:@cam"), "rtsp://u:***@cam");
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn spans_default_and_are_checked() {
        let q = Query::parse("");
        assert_eq!(span(&q, 100 * DAY_MS, None), Ok((99 * DAY_MS, 100 * DAY_MS)));
        let q = Query::parse("start=1000&end=2000");
        assert_eq!(span(&q, 0, Some(DAY_MS)), Ok((1000, 2000)));
        let e = span(&Query::parse("start=yesterday"), 0, None).unwrap_err();
        assert!(e.status == 400 && e.message.contains("parameter start"), "{e:?}");
        let e = span(&Query::parse("end=x"), 0, None).unwrap_err();
        assert!(e.message.contains("parameter end"), "{e:?}");
        let e = span(&Query::parse("start=2000&end=2000"), 0, None).unwrap_err();
        assert!(e.message.contains("must be after"), "{e:?}");
        let e = span(&Query::parse(&format!("start=0&end={}", DAY_MS + 1)), 0, Some(DAY_MS)).unwrap_err();
        assert!(e.message.contains("at most 24 h"), "{e:?}");
        assert!(span(&Query::parse(&format!("start={}&end={}", i64::MIN, i64::MAX)), 0, Some(DAY_MS)).is_err());
    }

    #[test]
    fn stream_fields_merge_and_name_the_bad_field() {
        let base = spec_fields(&StreamConfig::to_spec(
            &merge_fields(&Map::new(), &json_object(br#"{"name":"a","url":"rtsp://h/x"}"#).expect("obj")).expect("cfg"),
            "api",
        ));
        let c = merge_fields(&base, &json_object(br#"{"enabled":false,"retention_days":7}"#).expect("obj"))
            .expect("merged");
        assert!(!c.enabled);
        assert_eq!(c.retention_days, Some(7));
        assert_eq!(c.url, "rtsp://h/x");
        let c = merge_fields(&spec_fields(&c.to_spec("api")), &json_object(br#"{"retention_days":null}"#).expect("o"))
            .expect("cleared");
        assert_eq!(c.retention_days, None);
        let e = merge_fields(&base, &json_object(br#"{"enabled":true,"priority":"high"}"#).expect("o")).unwrap_err();
        assert!(e.message.contains("field priority"), "{e:?}");
        let e = merge_fields(&base, &json_object(br#"{"colour":"red"}"#).expect("o")).unwrap_err();
        assert!(e.message.contains("colour"), "{e:?}");
        let e = merge_fields(&base, &json_object(br#"{"record":"sometimes"}"#).expect("o")).unwrap_err();
        assert!(e.message.contains("field record"), "{e:?}");
    }

    #[test]
    fn settings_say_what_a_restart_puts_back() {
        let spec = |body: &[u8], source| {
            merge_fields(&Map::new(), &json_object(body).expect("obj")).expect("cfg").to_spec(source)
        };
        let file = spec(br#"{"name":"door","url":"rtsp://u:pw@h/x"}"#, "config");
        let changed = spec(br#"{"name":"door","url":"rtsp://u:pw@h/x","retention_days":7}"#, "config");
        let v = stream_setting(Some(&changed), Some(&file));
        assert_eq!(v["in_effect"]["retention_days"], 7, "{v}");
        assert_eq!(v["file"]["retention_days"], Value::Null, "{v}");
        assert_eq!(v["restart_resets"], json!(["retention_days"]), "{v}");
        assert_eq!((v["source"].as_str(), v["in_effect"]["url"].as_str()), (Some("config"), Some("rtsp://u:***@h/x")));
        let other_password = spec(br#"{"name":"door","url":"rtsp://u:new@h/x"}"#, "config");
        assert_eq!(stream_setting(Some(&other_password), Some(&file))["restart_resets"], json!(["url"]));
        let api = spec(br#"{"name":"yard","url":"rtsp://h/y"}"#, "api");
        let v = stream_setting(Some(&api), None);
        assert_eq!((v["source"].as_str(), &v["file"], &v["restart_resets"]), (Some("api"), &Value::Null, &json!([])));
        let v = stream_setting(None, Some(&file));
        assert!(v["in_effect"].is_null() && v["restart_resets"].as_array().is_some_and(|a| a.len() == 16), "{v}");
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(json_object(b"{\"a\":1").unwrap_err().message.contains("malformed JSON"));
        assert!(json_object(b"[1]").unwrap_err().message.contains("JSON object"));
        assert!(json_object(b"").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn validation_names_fields() {
        let cfg = |body: &[u8]| merge_fields(&Map::new(), &json_object(body).expect("obj")).expect("cfg");
        let e = validate(&cfg(br#"{"name":"../x","url":"rtsp://h/x"}"#)).unwrap_err();
        assert!(e.message.starts_with("field name"), "{e:?}");
        let e = validate(&cfg(br#"{"name":"a","url":"http://h/x"}"#)).unwrap_err();
        assert!(e.message.starts_with("field url"), "{e:?}");
        let e = validate(&cfg(br#"{"name":"a","url":"rtsp://h/x","bitrate_kbps":1}"#)).unwrap_err();
        assert!(e.message.starts_with("field bitrate_kbps"), "{e:?}");
        let e = validate(&cfg(br#"{"name":"a","url":"rtsp://h/x","retention_days":0}"#)).unwrap_err();
        assert!(e.message.starts_with("field retention_days"), "{e:?}");
        assert!(validate(&cfg(br#"{"name":"a-1_b","url":"rtsp://u:p@h:554/x"}"#)).is_ok());
    }
}
