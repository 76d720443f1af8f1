//! Events (schema version 8): what happened on a stream and when.
//!
//! Invariants:
//! - `stream` is a stream's name, not a key: an event outlives its stream and
//!   every recording it overlaps (deleting those never deletes it).
//! - `end_ms` is NULL while the event goes on; once set it is final and
//!   `>= start_ms` ([`Db::end_event`] ends only an ongoing event).
//! - `zones` is a JSON array of zone names, `box` a JSON object or NULL;
//!   `snapshot`/`thumbnail` are plain relative paths under the data dir
//!   (checked on write, like segment paths) or NULL.
//! - An event row with files is deleted only in the transaction that puts its
//!   files into `garbage`, committed with `synchronous=FULL` (invariant 3 of
//!   ARCHITECTURE.md, as for segments).
//! - Ids are never reused (`AUTOINCREMENT`): a client's paging cursor or a
//!   subscriber's "last seen" id never names a different, later event.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{is_safe_relative_path, Ctx, Db, DbError};

/// What kind of thing started an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Motion,
    Object,
    Manual,
    External,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [EventKind::Motion, EventKind::Object, EventKind::Manual, EventKind::External];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Motion => "motion",
            EventKind::Object => "object",
            EventKind::Manual => "manual",
            EventKind::External => "external",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A new event as the caller describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub stream: String,
    pub kind: EventKind,
    pub label: String,
    /// 0..=1.
    pub score: f64,
    pub zones: Vec<String>,
    pub start_ms: i64,
    /// Set for an event that is already over (a manual one with a duration).
    pub end_ms: Option<i64>,
    /// The best box as a JSON object (detection's normalised `x, y, w, h`).
    pub best_box: Option<serde_json::Value>,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub stream: String,
    pub kind: EventKind,
    pub label: String,
    pub score: f64,
    pub zones: Vec<String>,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub best_box: Option<serde_json::Value>,
    /// Relative to the data dir.
    pub snapshot: Option<String>,
    pub thumbnail: Option<String>,
}

/// What `GET /api/events` asks for; every field narrows the list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub stream: Option<String>,
    pub kind: Option<EventKind>,
    pub label: Option<String>,
    pub zone: Option<String>,
    /// Events overlapping `[since, until)` (an ongoing one reaches to now).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Newest first; only events strictly older than this `(start_ms, id)`.
    pub before: Option<(i64, i64)>,
    pub limit: u32,
}

const COLS: &str = "id, stream, kind, label, score, zones, start_ms, end_ms, box, snapshot, thumbnail";

fn bad(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.into())
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let id: i64 = r.get(0)?;
    let kind: String = r.get(2)?;
    let kind = EventKind::parse(&kind).ok_or_else(|| bad(2, format!("event {id}: column kind holds {kind:?}")))?;
    let zones: String = r.get(5)?;
    let zones = serde_json::from_str(&zones).map_err(|e| bad(5, format!("event {id}: column zones: {e}")))?;
    let best_box = match r.get::<_, Option<String>>(8)? {
        None => None,
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| bad(8, format!("event {id}: column box: {e}")))?),
    };
    Ok(EventRow {
        id,
        stream: r.get(1)?,
        kind,
        label: r.get(3)?,
        score: r.get(4)?,
        zones,
        start_ms: r.get(6)?,
        end_ms: r.get(7)?,
        best_box,
        snapshot: r.get(9)?,
        thumbnail: r.get(10)?,
    })
}

fn check_path(p: Option<&str>, what: &str) -> Result<(), DbError> {
    match p {
        Some(p) if !is_safe_relative_path(p) => {
            Err(DbError::invalid(format!("event {what} path {p:?} is not a plain relative path")))
        }
        _ => Ok(()),
    }
}

/// The paths of the files of event `id`, inside a transaction.
fn files_of(tx: &Transaction<'_>, id: i64) -> Result<Vec<String>, DbError> {
    let (a, b): (Option<String>, Option<String>) = tx
        .query_row("SELECT snapshot, thumbnail FROM events WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .with_ctx(|| format!("files of event {id}"))?
        .unwrap_or((None, None));
    Ok(a.into_iter().chain(b).collect())
}

impl Db {
    /// Inserts an event; its id.
    pub fn insert_event(&self, e: &NewEvent) -> Result<i64, DbError> {
        if let Some(end) = e.end_ms.filter(|end| *end < e.start_ms) {
            return Err(DbError::invalid(format!("event: end_ms {end} is before start_ms {}", e.start_ms)));
        }
        if !(0.0..=1.0).contains(&e.score) {
            return Err(DbError::invalid(format!("event: score {} is not within 0..=1", e.score)));
        }
        let zones = serde_json::to_string(&e.zones).map_err(|x| DbError::invalid(format!("event zones: {x}")))?;
        let best_box = e.best_box.as_ref().map(serde_json::Value::to_string);
        self.write("insert event", |tx| {
            tx.execute(
                "INSERT INTO events (stream, kind, label, score, zones, start_ms, end_ms, box)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![e.stream, e.kind.as_str(), e.label, e.score, zones, e.start_ms, e.end_ms, best_box],
            )
            .ctx("insert event")?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Ends an ongoing event at `end_ms` (moved up to its start if earlier).
    /// False if there is no such event or it had ended already.
    pub fn end_event(&self, id: i64, end_ms: i64) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute(
                "UPDATE events SET end_ms = max(?2, start_ms) WHERE id = ?1 AND end_ms IS NULL",
                params![id, end_ms],
            )
            .with_ctx(|| format!("end event {id}"))?;
        Ok(n == 1)
    }

    /// Ends the `motion` and `object` events a stopped process left open (only
    /// its detection and ONVIF watchers open those, and a crash ends them
    /// unrecorded): each at the last moment its stream recorded after its start,
    /// else at its start, never past `now_ms`. Manual and external events stay
    /// open (whoever opened them ends them). The number ended.
    pub fn end_events_left_open(&self, now_ms: i64) -> Result<usize, DbError> {
        self.write("end events left open", |tx| {
            tx.execute(
                "UPDATE events SET end_ms = max(start_ms, min(?1, coalesce(
                     (SELECT max(s.end_ms) FROM segments s JOIN streams st ON st.id = s.stream_id
                      WHERE st.name = events.stream), start_ms)))
                 WHERE end_ms IS NULL AND kind IN ('motion', 'object')",
                params![now_ms],
            )
            .ctx("end events left open")
        })
    }

    /// Sets an event's snapshot and thumbnail (relative paths); false if no such event.
    pub fn set_event_files(&self, id: i64, snapshot: Option<&str>, thumbnail: Option<&str>) -> Result<bool, DbError> {
        check_path(snapshot, "snapshot")?;
        check_path(thumbnail, "thumbnail")?;
        let n = self
            .conn
            .execute("UPDATE events SET snapshot = ?2, thumbnail = ?3 WHERE id = ?1", params![id, snapshot, thumbnail])
            .with_ctx(|| format!("set files of event {id}"))?;
        Ok(n == 1)
    }

    /// Sets the zones an event is in (an object walked into more of them); false if no such event.
    pub fn set_event_zones(&self, id: i64, zones: &[String]) -> Result<bool, DbError> {
        let text = serde_json::to_string(zones).map_err(|x| DbError::invalid(format!("event zones: {x}")))?;
        let n = self
            .conn
            .execute("UPDATE events SET zones = ?2 WHERE id = ?1", params![id, text])
            .with_ctx(|| format!("set zones of event {id}"))?;
        Ok(n == 1)
    }

    pub fn event(&self, id: i64) -> Result<Option<EventRow>, DbError> {
        let sql = format!("SELECT {COLS} FROM events WHERE id = ?1");
        self.conn.query_row(&sql, [id], event_from_row).optional().with_ctx(|| format!("event {id}"))
    }

    /// Events matching `f`, newest first (by start, then id), at most `f.limit`.
    pub fn events(&self, f: &EventFilter) -> Result<Vec<EventRow>, DbError> {
        let sql = format!(
            "SELECT {COLS} FROM events
             WHERE (?1 IS NULL OR stream = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR label = ?3)
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(events.zones) WHERE value = ?4))
               AND (?5 IS NULL OR end_ms IS NULL OR end_ms >= ?5) AND (?6 IS NULL OR start_ms < ?6)
               AND (?7 IS NULL OR start_ms < ?7 OR (start_ms = ?7 AND id < ?8))
             ORDER BY start_ms DESC, id DESC LIMIT ?9"
        );
        let mut st = self.conn.prepare_cached(&sql).ctx("list events")?;
        let (before_start, before_id) = f.before.unzip();
        let rows = st
            .query_map(
                params![
                    f.stream,
                    f.kind.map(EventKind::as_str),
                    f.label,
                    f.zone,
                    f.since_ms,
                    f.until_ms,
                    before_start,
                    before_id,
                    f.limit
                ],
                event_from_row,
            )
            .ctx("list events")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("list events")
    }

    /// Deletes events, moving their files into `garbage` in the same durable
    /// transaction; the ids deleted and the files to unlink (then
    /// [`Db::garbage_done_all`]).
    pub fn delete_events_to_garbage(&self, ids: &[i64]) -> Result<(Vec<i64>, Vec<String>), DbError> {
        self.write_durably("delete events", |tx| {
            let (mut deleted, mut files) = (Vec::new(), Vec::new());
            for &id in ids {
                for p in files_of(tx, id)?.into_iter().filter(|p| is_safe_relative_path(p)) {
                    tx.execute("INSERT OR IGNORE INTO garbage (path) VALUES (?1)", [&p])
                        .with_ctx(|| format!("event {id}: garbage {p:?}"))?;
                    files.push(p);
                }
                if tx.execute("DELETE FROM events WHERE id = ?1", [id]).with_ctx(|| format!("delete event {id}"))? == 1
                {
                    deleted.push(id);
                }
            }
            Ok((deleted, files))
        })
    }

    /// Up to `limit` ids of events that ended (or, ongoing, started) before `cutoff_ms`, oldest first.
    pub fn events_older_than(&self, cutoff_ms: i64, limit: u32) -> Result<Vec<i64>, DbError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id FROM events WHERE start_ms < ?1 AND coalesce(end_ms, start_ms) < ?1
                 ORDER BY start_ms LIMIT ?2",
            )
            .ctx("old events")?;
        let rows = st.query_map(params![cutoff_ms, limit], |r| r.get::<_, i64>(0)).ctx("old events")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("old events")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(stream: &str, kind: EventKind, label: &str, start_ms: i64, zones: &[&str]) -> NewEvent {
        NewEvent {
            stream: stream.into(),
            kind,
            label: label.into(),
            score: 0.5,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            start_ms,
            end_ms: None,
            best_box: None,
        }
    }

    fn ids(rows: &[EventRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn events_left_open_end_at_their_streams_last_recorded_moment() {
        let db = Db::open_in_memory().expect("db");
        let spec = crate::index::db::StreamSpec::new("front", "rtsp://cam/front");
        let stream = db.upsert_stream(&spec, 0).expect("stream").id;
        let seg = crate::index::db::NewSegment {
            stream_id: stream,
            path: "recordings/front/d/1000.mp4".into(),
            start_ms: 1000,
            codec: "avc1.64001f".into(),
            width: 640,
            height: 360,
            video_timescale: 90_000,
            init_len: 700,
            has_audio: false,
            trigger: "continuous".into(),
            time_unknown: false,
        };
        let id = db.insert_segment(&seg).expect("segment");
        db.conn.execute("UPDATE segments SET end_ms = 9000 WHERE id = ?1", params![id]).expect("end");
        let motion = db.insert_event(&new("front", EventKind::Motion, "motion", 2000, &[])).expect("motion");
        let late = db.insert_event(&new("front", EventKind::Object, "person", 9500, &[])).expect("late");
        let other = db.insert_event(&new("gone", EventKind::Motion, "onvif", 3000, &[])).expect("other");
        let manual = db.insert_event(&new("front", EventKind::Manual, "door", 2000, &[])).expect("manual");
        assert_eq!(db.end_events_left_open(20_000).expect("end"), 3);
        let end = |id| db.event(id).expect("event").expect("row").end_ms;
        assert_eq!((end(motion), end(late), end(other), end(manual)), (Some(9000), Some(9500), Some(3000), None));
        assert_eq!(db.end_events_left_open(20_000).expect("again"), 0, "ended ones are left as they are");
    }

    #[test]
    fn events_filter_page_and_end() {
        let db = Db::open_in_memory().expect("db");
        let a = db.insert_event(&new("front", EventKind::Manual, "door", 1000, &["gate"])).expect("a");
        let b = db.insert_event(&new("front", EventKind::Motion, "motion", 2000, &[])).expect("b");
        let c = db.insert_event(&new("back", EventKind::Object, "person", 2000, &["gate", "yard"])).expect("c");
        let all = EventFilter { limit: 10, ..Default::default() };
        assert_eq!(ids(&db.events(&all).expect("all")), vec![c, b, a]);
        let f = |f: EventFilter| ids(&db.events(&EventFilter { limit: 10, ..f }).expect("filtered"));
        assert_eq!(f(EventFilter { stream: Some("front".into()), ..Default::default() }), vec![b, a]);
        assert_eq!(f(EventFilter { kind: Some(EventKind::Object), ..Default::default() }), vec![c]);
        assert_eq!(f(EventFilter { label: Some("door".into()), ..Default::default() }), vec![a]);
        assert_eq!(f(EventFilter { zone: Some("gate".into()), ..Default::default() }), vec![c, a]);
        assert_eq!(f(EventFilter { until_ms: Some(2000), ..Default::default() }), vec![a]);
        // Paging: a page of 2, then what is older than its last.
        let page = db.events(&EventFilter { limit: 2, ..Default::default() }).expect("page");
        let last = page.last().expect("two");
        assert_eq!(f(EventFilter { before: Some((last.start_ms, last.id)), ..Default::default() }), vec![a]);

        assert!(db.end_event(a, 500).expect("end"), "ended at its start at least");
        assert_eq!(db.event(a).expect("q").expect("a").end_ms, Some(1000));
        assert!(!db.end_event(a, 3000).expect("again"), "an ended event stays ended");
        assert!(!db.end_event(999, 3000).expect("none"));
        // Ended at 1000: not in a span starting after it; ongoing b and c still are.
        assert_eq!(f(EventFilter { since_ms: Some(1500), ..Default::default() }), vec![c, b]);
    }

    #[test]
    fn deleting_an_event_queues_its_files() {
        let db = Db::open_in_memory().expect("db");
        let a = db.insert_event(&new("front", EventKind::Manual, "x", 1000, &[])).expect("a");
        assert!(db.set_event_files(a, Some("events/front/1.jpg"), Some("events/front/1-t.jpg")).expect("files"));
        assert!(db.set_event_files(a, Some("../etc/passwd"), None).is_err());
        assert_eq!(db.events_older_than(1001, 10).expect("old"), vec![a]);
        assert_eq!(db.events_older_than(1000, 10).expect("old"), Vec::<i64>::new());
        let (deleted, files) = db.delete_events_to_garbage(&[a, 77]).expect("delete");
        assert_eq!((deleted, files), (vec![a], vec!["events/front/1.jpg".into(), "events/front/1-t.jpg".into()]));
        assert_eq!(db.garbage().expect("garbage"), vec!["events/front/1-t.jpg", "events/front/1.jpg"]);
        assert_eq!(db.event(a).expect("q"), None);
        let bad = NewEvent { score: 1.5, ..new("front", EventKind::Manual, "x", 1, &[]) };
        assert!(db.insert_event(&bad).is_err());
        let back = NewEvent { end_ms: Some(0), ..new("front", EventKind::Manual, "x", 1, &[]) };
        assert!(db.insert_event(&back).is_err());
    }
}
