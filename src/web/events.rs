//! Event handlers: list, one event, its clip, snapshot and thumbnail, manual
//! and external events (create, end) and deletion. The live push is
//! `live::sse`.
//!
//! Invariants:
//! - Reads go through the worker's connection; every change goes through
//!   `nvr.events` (the store), so it is broadcast to subscribers.
//! - A clip is the export (`media::export_mp4`) of the event's span widened
//!   by `pre`/`post` seconds; an ongoing event's span ends now.
//! - Files are served from the paths in the row only (checked plain relative
//!   paths under the data dir), never from the URL.
//! - A bad field or parameter is a 400 that names it; unknown ones are refused.

use serde_json::{json, Map, Value};

use crate::base::clock::{parse_time, rfc3339};
use crate::events::StoreError;
use crate::index::db::{self, EventFilter, EventKind, EventRow, NewEvent};

use super::api::{json_object, DAY_MS};
use super::reply::{ApiError, Body, Reply};
use super::router::Query;
use super::Ctx;

/// Default and largest page of `GET /api/events`.
const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Longest `pre`/`post` of a clip, seconds.
const MAX_PAD_S: i64 = 300;
/// Longest label, bytes.
const MAX_LABEL: usize = 64;
/// Largest snapshot served (a JPEG of a 4K frame is well below).
const MAX_IMAGE: u64 = 16 << 20;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::Ended(_) => ApiError::conflict(e.to_string()),
            StoreError::Db(d) => d.into(),
        }
    }
}

/// An event as the API shows it.
pub fn event_json(e: &EventRow) -> Value {
    let url = |what: &str, has: bool| has.then(|| format!("/api/events/{}/{what}", e.id));
    json!({
        "id": e.id,
        "stream": e.stream,
        "kind": e.kind,
        "label": e.label,
        "score": e.score,
        "zones": e.zones,
        "start_ms": e.start_ms,
        "end_ms": e.end_ms,
        "start": rfc3339(e.start_ms),
        "end": e.end_ms.map(rfc3339),
        "ongoing": e.end_ms.is_none(),
        "box": e.best_box,
        "clip_url": format!("/api/events/{}/clip", e.id),
        "snapshot_url": url("snapshot", e.snapshot.is_some()),
        "thumbnail_url": url("thumbnail", e.thumbnail.is_some()),
    })
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::bad_request(format!("event id {id:?} is not an integer")))
}

fn find(ctx: &Ctx, id: &str) -> Result<EventRow, ApiError> {
    let id = parse_id(id)?;
    ctx.db.event(id)?.ok_or_else(|| ApiError::not_found(format!("no event with id {id}")))
}

fn time_param(q: &Query, name: &str) -> Result<Option<i64>, ApiError> {
    q.get(name).map(|v| parse_time(v).map_err(|e| ApiError::bad_request(format!("parameter {name}: {e}")))).transpose()
}

/// `cursor` of a page: `START_MS:ID` of the last event of the previous page.
fn parse_cursor(v: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad_request(format!("parameter cursor: {v:?} is not a next_cursor this API gave"));
    let (s, i) = v.split_once(':').ok_or_else(bad)?;
    Ok((s.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?))
}

fn filter(q: &Query) -> Result<EventFilter, ApiError> {
    q.only(&["stream", "kind", "label", "zone", "since", "until", "limit", "cursor"]).map_err(ApiError::bad_request)?;
    let kind = match q.get("kind") {
        None => None,
        Some(k) => Some(EventKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!("parameter kind: {k:?} is not motion, object, manual or external"))
        })?),
    };
    let limit = match q.get("limit") {
        None => PAGE,
        Some(v) => v.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("parameter limit: {v:?} is not a number from 1 to {MAX_PAGE}"))
        })?,
    };
    let (since_ms, until_ms) = (time_param(q, "since")?, time_param(q, "until")?);
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if u <= s {
            return Err(ApiError::bad_request("parameter until must be after since"));
        }
    }
    Ok(EventFilter {
        stream: q.get("stream").map(str::to_owned),
        kind,
        label: q.get("label").map(str::to_owned),
        zone: q.get("zone").map(str::to_owned),
        since_ms,
        until_ms,
        before: q.get("cursor").map(parse_cursor).transpose()?,
        limit,
    })
}

/// `GET /api/events`: newest first; `next_cursor` pages on (null on the last page).
pub fn list(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    let f = filter(q)?;
    let rows = ctx.db.events(&f)?;
    let next =
        rows.last().filter(|_| rows.len() as u64 == u64::from(f.limit)).map(|e| format!("{}:{}", e.start_ms, e.id));
    let events: Vec<Value> = rows.iter().map(event_json).collect();
    Ok(Reply::json(200, &json!({ "events": events, "next_cursor": next })))
}

pub fn get(ctx: &Ctx, id: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::json(200, &event_json(&find(ctx, id)?)))
}

/// A field of the body; `null` is a value (refused as the wrong type), not an absence.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name)
}

fn string_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ApiError::bad_request(format!("field {name}: {v} is not a string"))),
    }
}

fn int_field(m: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    match field(m, name) {
        None => Ok(None),
        Some(v) => {
            v.as_i64().map(Some).ok_or_else(|| ApiError::bad_request(format!("field {name}: {v} is not an integer")))
        }
    }
}

/// The event a `POST /api/events` body describes (`now_ms`: its default start).
pub(super) fn new_event(m: &Map<String, Value>, now_ms: i64) -> Result<NewEvent, ApiError> {
    const KNOWN: [&str; 8] = ["stream", "kind", "label", "score", "zones", "start_ms", "duration_s", "box"];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {k:?} (known: {})", KNOWN.join(", "))));
    }
    let stream = string_field(m, "stream")?.ok_or_else(|| ApiError::bad_request("field stream is required"))?;
    let kind = match string_field(m, "kind")?.as_deref() {
        None | Some("manual") => EventKind::Manual,
        Some("external") => EventKind::External,
        // An object another detector saw (it counts in MQTT's object counts like detection's).
        Some("object") => EventKind::Object,
        Some(k) => return Err(ApiError::bad_request(format!("field kind: {k:?} is not manual, external or object"))),
    };
    let label = string_field(m, "label")?.unwrap_or_else(|| kind.as_str().to_owned());
    if label.is_empty() || label.len() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "field label: must be 1 to {MAX_LABEL} bytes without control characters"
        )));
    }
    let score = match field(m, "score") {
        None => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or_else(|| ApiError::bad_request(format!("field score: {v} is not a number from 0 to 1")))?,
    };
    let zones = match field(m, "zones") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 32 => a
            .iter()
            .map(|z| z.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_LABEL).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request("field zones: every zone must be a name of 1 to 64 bytes"))?,
        Some(v) => return Err(ApiError::bad_request(format!("field zones: {v} is not a list of at most 32 names"))),
    };
    let start_ms = int_field(m, "start_ms")?.unwrap_or(now_ms);
    if !(0..=now_ms.saturating_add(DAY_MS)).contains(&start_ms) {
        return Err(ApiError::bad_request(format!(
            "field start_ms: {start_ms} is not a time from 1970 to a day from now"
        )));
    }
    let end_ms = match int_field(m, "duration_s")? {
        None => None,
        Some(d) if (0..=DAY_MS / 1000).contains(&d) => Some(start_ms + d * 1000),
        Some(d) => return Err(ApiError::bad_request(format!("field duration_s: {d} is not 0 to 86400 seconds"))),
    };
    let best_box = match field(m, "box") {
        None => None,
        Some(b @ Value::Object(_)) => Some(b.clone()),
        Some(v) => return Err(ApiError::bad_request(format!("field box: {v} is not an object"))),
    };
    Ok(NewEvent { stream, kind, label, score, zones, start_ms, end_ms, best_box })
}

/// `POST /api/events`: a manual, external or object event, ongoing unless `duration_s` is given.
pub fn create(ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let e = new_event(&json_object(body)?, ctx.nvr.clock.now_ms())?;
    if ctx.db.stream_by_name(&e.stream)?.is_none() {
        return Err(ApiError::not_found(format!("field stream: no stream named {:?}", e.stream)));
    }
    let row = ctx.nvr.events.create(&e)?;
    Ok(Reply::json(201, &event_json(&row)).with_header("Location", format!("/api/events/{}", row.id)))
}

/// `POST /api/events/{id}/end` with an optional `{"end_ms": ..}` (default now).
pub fn end(ctx: &Ctx, id: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let id = parse_id(id)?;
    let m = if body.iter().all(u8::is_ascii_whitespace) { Map::new() } else { json_object(body)? };
    if let Some(k) = m.keys().find(|k| k.as_str() != "end_ms") {
        return Err(ApiError::bad_request(format!("unknown field {k:?} (known: end_ms)")));
    }
    let at = int_field(&m, "end_ms")?.unwrap_or_else(|| ctx.nvr.clock.now_ms());
    Ok(Reply::json(200, &event_json(&ctx.nvr.events.end(id, at)?)))
}

/// `DELETE /api/events/{id}`: the event and its files.
pub fn delete(ctx: &Ctx, id: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let row = ctx.nvr.events.delete(parse_id(id)?)?;
    Ok(Reply::json(200, &json!({ "deleted": row.id })))
}

fn pad(q: &Query, name: &str) -> Result<i64, ApiError> {
    match q.get(name) {
        None => Ok(5),
        Some(v) => v.parse().ok().filter(|s| (0..=MAX_PAD_S).contains(s)).ok_or_else(|| {
            ApiError::bad_request(format!("parameter {name}: {v:?} is not a number of seconds from 0 to {MAX_PAD_S}"))
        }),
    }
}

/// The clip's span: the event's, widened by `pre`/`post` s, at most a day.
fn clip_span(e: &EventRow, now_ms: i64, pre_s: i64, post_s: i64) -> (i64, i64) {
    let start = e.start_ms.saturating_sub(pre_s * 1000);
    let end = e.end_ms.unwrap_or(now_ms).max(e.start_ms).saturating_add(post_s * 1000);
    (start, end.clamp(start + 1, start.saturating_add(DAY_MS)))
}

/// `GET /api/events/{id}/clip?pre=5&post=5`: the export of the event's span.
pub fn clip(ctx: &Ctx, id: &str, q: &Query, range: Option<&str>) -> Result<Reply, ApiError> {
    q.only(&["pre", "post"]).map_err(ApiError::bad_request)?;
    let (pre, post) = (pad(q, "pre")?, pad(q, "post")?);
    let e = find(ctx, id)?;
    let (start, end) = clip_span(&e, ctx.nvr.clock.now_ms(), pre, post);
    let export = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("stream", &e.stream)
        .append_pair("start", &start.to_string())
        .append_pair("end", &end.to_string())
        .finish();
    super::media::export_mp4(ctx, &Query::parse(&export), range)
}

/// `GET /api/events/{id}/snapshot` (or `thumbnail`): the JPEG, 404 while there is none.
pub fn image(ctx: &Ctx, id: &str, which: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let e = find(ctx, id)?;
    let rel = if which == "thumbnail" { &e.thumbnail } else { &e.snapshot };
    let rel = rel.as_deref().ok_or_else(|| ApiError::not_found(format!("event {} has no {which} yet", e.id)))?;
    if !db::is_safe_relative_path(rel) {
        return Err(ApiError::internal(format!("event {} has an unsafe {which} path {rel:?}", e.id)));
    }
    let path = ctx.nvr.config.storage.data_dir.join(rel);
    let missing = |m: String| ApiError::not_found(format!("the {which} of event {} cannot be read: {m}", e.id));
    let fresh = ctx.nvr.clock.now_ms().saturating_sub(e.start_ms) < FRESH_MS;
    let len = picture_len(&path, fresh).map_err(|x| missing(x.to_string()))?;
    if len > MAX_IMAGE {
        return Err(ApiError::internal(format!("the {which} of event {} is {len} bytes, too large", e.id)));
    }
    let bytes = std::fs::read(&path).map_err(|x| missing(x.to_string()))?;
    Ok(Reply { status: 200, headers: vec![("Content-Type", "image/jpeg".into())], body: Body::Bytes(bytes) }
        .with_header("Cache-Control", "private, max-age=3600".into()))
}

/// An event younger than this may have its row before its picture files.
const FRESH_MS: i64 = 10_000;
/// How long a request for a fresh event's picture waits for the file.
const PICTURE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The picture file's length. The events store commits the row (naming the
/// files) before it writes them, so a cut never leaves a file no row names;
/// a page that follows a brand-new event's URL can get there first, so for a
/// `fresh` event a missing file is waited for a moment.
fn picture_len(path: &std::path::Path, fresh: bool) -> std::io::Result<u64> {
    let until = std::time::Instant::now() + PICTURE_WAIT;
    loop {
        match std::fs::metadata(path) {
            Err(e) if fresh && e.kind() == std::io::ErrorKind::NotFound && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map(|m| m.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Map<String, Value> {
        json_object(text.as_bytes()).expect("object")
    }

    #[test]
    fn new_events_are_checked_field_by_field() {
        let e = new_event(&body(r#"{"stream":"front","duration_s":10,"zones":["gate"]}"#), 5_000).expect("ok");
        assert_eq!(
            (e.kind, e.label.as_str(), e.start_ms, e.end_ms),
            (EventKind::Manual, "manual", 5_000, Some(15_000))
        );
        for (text, field) in [
            (r#"{}"#, "field stream"),
            (r#"{"stream":"a","kind":"motion"}"#, "field kind"),
            (r#"{"stream":"a","score":2}"#, "field score"),
            (r#"{"stream":"a","duration_s":-1}"#, "field duration_s"),
            (r#"{"stream":"a","start_ms":"now"}"#, "field start_ms"),
            (r#"{"stream":"a","zones":"gate"}"#, "field zones"),
            (r#"{"stream":"a","label":""}"#, "field label"),
            (r#"{"stream":"a","box":[1]}"#, "field box"),
            (r#"{"stream":"a","colour":1}"#, "\"colour\""),
            (r#"{"stream":"a","box":null}"#, "field box"),
            (r#"{"stream":"a","label":null}"#, "field label"),
        ] {
            let err = new_event(&body(text), 5_000).expect_err(text);
            assert!(err.status == 400 && err.message.contains(field), "{text}: {}", err.message);
        }
    }

    #[test]
    fn clip_spans_are_padded_and_bounded() {
        let mut e = EventRow {
            id: 1,
            stream: "s".into(),
            kind: EventKind::Manual,
            label: "x".into(),
            score: 1.0,
            zones: Vec::new(),
            start_ms: 100_000,
            end_ms: Some(110_000),
            best_box: None,
            snapshot: None,
            thumbnail: None,
        };
        assert_eq!(clip_span(&e, 0, 5, 5), (95_000, 115_000));
        e.end_ms = None;
        assert_eq!(clip_span(&e, 120_000, 0, 1), (100_000, 121_000), "ongoing: until now");
        assert_eq!(clip_span(&e, 100_000, 0, 0), (100_000, 100_001), "never empty");
        assert_eq!(clip_span(&e, 10 * DAY_MS, 0, 0).1, 100_000 + DAY_MS, "at most a day");
        assert!(parse_cursor("12:3").is_ok() && parse_cursor("x").is_err());
    }
}
