//! The replication upload queue (schema version 15): one row per closed
//! segment to upload to the bucket, kept until the segment itself is deleted.
//!
//! Invariants:
//! - A row is made only for a closed segment of known time whose stream has
//!   `replicate = 1`; `INSERT OR IGNORE` makes enqueueing idempotent, so the
//!   uploader may rescan any range (start-up rescans everything: a power cut
//!   between a close and its enqueue loses nothing).
//! - `pending` -> `done` only; `done` is final and clears the upload id and
//!   parts. A pending row with an `upload_id` has a multipart upload open in
//!   the bucket, and `parts` lists the parts the bucket acknowledged
//!   (`[[number, etag], ...]`); both are written before the next part is sent.
//! - The row goes with its segment (foreign key, `ON DELETE CASCADE`).
//! - Event snapshots (schema version 16) need no queue of their own: an
//!   ended event with a snapshot whose `replicated_ms` is NULL waits, and
//!   setting it is final. Only events ended `settle_ms` ago are offered, so
//!   the picture written just after the row is on the disk by then. A failed
//!   attempt sets the event's own `replicate_next_ms` (schema version 18).
//! - Several uploads run at once: the `busy` ids a caller passes are
//!   skipped, so no row is given to two uploaders.

use rusqlite::{params, OptionalExtension};

use super::{get_num, Ctx, Db, DbError, SegmentRow};

/// One segment to upload.
#[derive(Clone, Debug)]
pub struct UploadJob {
    pub segment: SegmentRow,
    pub stream: String,
    pub attempts: u32,
    /// An open multipart upload and the parts it holds (number, ETag).
    pub upload_id: Option<String>,
    pub parts: Vec<(u32, String)>,
}

/// One event snapshot to upload.
#[derive(Clone, Debug)]
pub struct EventUpload {
    pub id: i64,
    pub stream: String,
    pub kind: String,
    pub label: String,
    pub score: f64,
    /// JSON text, as stored.
    pub zones: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The snapshot's path under the data dir.
    pub snapshot: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What waits to be uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub segments: u64,
    pub bytes: u64,
    /// End (epoch ms) of the oldest segment still to upload.
    pub oldest_pending_ms: Option<i64>,
    /// Ended events' snapshots still to upload (ongoing ones wait for their end).
    pub events: u64,
}

impl Db {
    /// Queues every closed, replicated segment with `id >= from_id` not queued yet.
    /// Returns how many were queued and the id to scan from next time: the
    /// lowest open segment's (it may close later), else one past the highest.
    pub fn replicate_enqueue(&self, from_id: i64, now_ms: i64) -> Result<(usize, i64), DbError> {
        let op = "replicate_enqueue";
        self.write(op, |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO replicate_queue (segment_id, queued_ms)
                     SELECT s.id, ?2 FROM segments s JOIN streams st ON st.id = s.stream_id
                     WHERE s.id >= ?1 AND s.state = 'closed' AND s.time_unknown = 0 AND s.bytes > 0
                       AND st.replicate = 1",
                )
                .and_then(|mut st| st.execute(params![from_id, now_ms]))
                .ctx(op)?;
            let next: i64 = tx
                .query_row(
                    "SELECT coalesce((SELECT min(id) FROM segments WHERE state = 'open'),
                                     (SELECT max(id) + 1 FROM segments), ?1)",
                    [from_id],
                    |r| r.get(0),
                )
                .ctx(op)?;
            Ok((n, next.max(from_id)))
        })
    }

    /// The pending row due first (oldest segment first), if one is due at
    /// `now_ms`, but for the segments in `busy` (being uploaded).
    pub fn replicate_next(&self, now_ms: i64, busy: &[i64]) -> Result<Option<UploadJob>, DbError> {
        let op = "replicate_next";
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        let row = self
            .conn
            .prepare_cached(
                "SELECT q.segment_id, q.attempts, q.upload_id, q.parts, st.name
                 FROM replicate_queue q JOIN segments s ON s.id = q.segment_id
                      JOIN streams st ON st.id = s.stream_id
                 WHERE q.state = 'pending' AND q.next_try_ms <= ?1
                   AND q.segment_id NOT IN (SELECT value FROM json_each(?2))
                 ORDER BY s.start_ms, s.id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![now_ms, busy], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        get_num::<u32>(r, 1, "attempts")?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()
            })
            .ctx(op)?;
        let Some((id, attempts, upload_id, parts, stream)) = row else { return Ok(None) };
        let Some(segment) = self.segment(id)? else { return Ok(None) };
        let parts: Vec<(u32, String)> = serde_json::from_str(&parts)
            .map_err(|e| DbError::invalid(format!("replicate_queue of segment {id}: parts: {e}")))?;
        Ok(Some(UploadJob { segment, stream, attempts, upload_id, parts }))
    }

    /// Records the open multipart upload of segment `id` and the parts it holds.
    pub fn replicate_progress(&self, id: i64, upload_id: Option<&str>, parts: &[(u32, String)]) -> Result<(), DbError> {
        let parts = serde_json::to_string(parts).unwrap_or_else(|_| "[]".into());
        self.write("replicate_progress", |tx| {
            tx.prepare_cached("UPDATE replicate_queue SET upload_id = ?2, parts = ?3 WHERE segment_id = ?1")
                .and_then(|mut st| st.execute(params![id, upload_id, parts]))
                .ctx("replicate_progress")
                .map(drop)
        })
    }

    /// A failed attempt: counted, told, and the next one not before `next_try_ms`.
    pub fn replicate_failed(&self, id: i64, error: &str, next_try_ms: i64) -> Result<(), DbError> {
        self.write("replicate_failed", |tx| {
            tx.prepare_cached(
                "UPDATE replicate_queue SET attempts = attempts + 1, last_error = ?2, next_try_ms = ?3
                 WHERE segment_id = ?1",
            )
            .and_then(|mut st| st.execute(params![id, error, next_try_ms]))
            .ctx("replicate_failed")
            .map(drop)
        })
    }

    /// Segment `id` and its sidecar are in the bucket.
    pub fn replicate_done(&self, id: i64, now_ms: i64) -> Result<(), DbError> {
        self.write("replicate_done", |tx| {
            tx.prepare_cached(
                "UPDATE replicate_queue SET state = 'done', upload_id = NULL, parts = '[]', last_error = NULL,
                        done_ms = ?2 WHERE segment_id = ?1",
            )
            .and_then(|mut st| st.execute(params![id, now_ms]))
            .ctx("replicate_done")
            .map(drop)
        })
    }

    /// Whether segment `id` is uploaded (false if it has no row).
    pub fn replicated(&self, id: i64) -> Result<bool, DbError> {
        self.conn
            .query_row("SELECT state = 'done' FROM replicate_queue WHERE segment_id = ?1", [id], |r| r.get(0))
            .optional()
            .ctx("replicated")
            .map(|v| v.unwrap_or(false))
    }

    /// The upload ids of every open multipart upload the queue knows.
    pub fn replicate_upload_ids(&self) -> Result<Vec<String>, DbError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT upload_id FROM replicate_queue WHERE upload_id IS NOT NULL")
            .ctx("replicate_upload_ids")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).ctx("replicate_upload_ids")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("replicate_upload_ids")
    }

    /// What waits. Reads only pending rows (the partial index): done rows
    /// pile up with every segment kept, and this runs every second.
    pub fn replicate_backlog(&self) -> Result<Backlog, DbError> {
        let op = "replicate_backlog";
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(s.bytes), 0), min(s.end_ms),
                        (SELECT count(*) FROM events e JOIN streams st ON st.name = e.stream
                         WHERE e.replicated_ms IS NULL AND e.snapshot IS NOT NULL AND st.replicate = 1
                           AND e.end_ms IS NOT NULL)
                 FROM replicate_queue q JOIN segments s ON s.id = q.segment_id
                 WHERE q.state = 'pending'",
                [],
                |r| {
                    Ok(Backlog {
                        segments: get_num(r, 0, "count")?,
                        bytes: get_num(r, 1, "bytes")?,
                        oldest_pending_ms: r.get(2)?,
                        events: get_num(r, 3, "count")?,
                    })
                },
            )
            .ctx(op)
    }

    /// The oldest event of a replicated stream whose snapshot waits, ended
    /// at or before `ended_by_ms` (ongoing ones wait for their end), due at
    /// `now_ms`, but for the events in `busy`.
    pub fn replicate_next_event(
        &self,
        ended_by_ms: i64,
        now_ms: i64,
        busy: &[i64],
    ) -> Result<Option<EventUpload>, DbError> {
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        self.conn
            .prepare_cached(
                "SELECT e.id, e.stream, e.kind, e.label, e.score, e.zones, e.start_ms, e.end_ms, e.snapshot,
                        e.replicate_attempts
                 FROM events e JOIN streams st ON st.name = e.stream
                 WHERE e.replicated_ms IS NULL AND e.snapshot IS NOT NULL AND st.replicate = 1
                   AND e.end_ms IS NOT NULL AND e.end_ms <= ?1 AND e.replicate_next_ms <= ?2
                   AND e.id NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY e.id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![ended_by_ms, now_ms, busy], |r| {
                    Ok(EventUpload {
                        id: r.get(0)?,
                        stream: r.get(1)?,
                        kind: r.get(2)?,
                        label: r.get(3)?,
                        score: r.get(4)?,
                        zones: r.get(5)?,
                        start_ms: r.get(6)?,
                        end_ms: r.get(7)?,
                        snapshot: r.get(8)?,
                        attempts: get_num(r, 9, "attempts")?,
                    })
                })
                .optional()
            })
            .ctx("replicate_next_event")
    }

    /// A failed attempt at event `id`'s snapshot: the next not before `next_try_ms`.
    /// Returns how many attempts failed so far.
    pub fn replicate_event_failed(&self, id: i64, next_try_ms: i64) -> Result<u32, DbError> {
        let op = "replicate_event_failed";
        self.write(op, |tx| {
            tx.prepare_cached(
                "UPDATE events SET replicate_attempts = replicate_attempts + 1, replicate_next_ms = ?2
                 WHERE id = ?1 RETURNING replicate_attempts",
            )
            .and_then(|mut st| st.query_row(params![id, next_try_ms], |r| get_num::<u32>(r, 0, "attempts")).optional())
            .ctx(op)
            .map(Option::unwrap_or_default)
        })
    }

    /// Event `id`'s snapshot is in the bucket (or there was none to send).
    pub fn replicate_event_done(&self, id: i64, now_ms: i64) -> Result<(), DbError> {
        self.write("replicate_event_done", |tx| {
            tx.prepare_cached("UPDATE events SET replicated_ms = ?2 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id, now_ms]))
                .ctx("replicate_event_done")
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EventKind, NewEvent, StreamSpec};
    use super::*;

    fn event(db: &Db, stream: &str, start_ms: i64, end_ms: Option<i64>, picture: bool) -> i64 {
        let e = NewEvent {
            stream: stream.into(),
            kind: EventKind::Motion,
            label: "motion".into(),
            score: 0.5,
            zones: Vec::new(),
            start_ms,
            end_ms,
            best_box: None,
        };
        let id = db.insert_event(&e).expect("event");
        if picture {
            db.set_event_files(id, Some(&format!("events/0000/{id}.jpg")), None).expect("files");
        }
        id
    }

    #[test]
    fn an_event_snapshot_waits_for_its_end_and_its_streams_consent() {
        let db = Db::open_in_memory().expect("db");
        db.upsert_stream(&StreamSpec::new("cam", "rtsp://cam/1"), 0).expect("cam");
        db.upsert_stream(&StreamSpec { replicate: false, ..StreamSpec::new("private", "rtsp://cam/2") }, 0)
            .expect("private");
        let ongoing = event(&db, "cam", 1_000, None, true);
        event(&db, "cam", 1_000, Some(2_000), false); // no picture: nothing to send
        event(&db, "private", 1_000, Some(2_000), true); // the stream opted out
        let ended = event(&db, "cam", 3_000, Some(4_000), true);
        assert_eq!(db.replicate_backlog().expect("backlog").events, 1, "the ended one; the ongoing one waits");
        assert!(db.replicate_next_event(3_999, 0, &[]).expect("next").is_none(), "not yet settled");
        let next = db.replicate_next_event(4_000, 0, &[]).expect("next").expect("due");
        assert_eq!((next.id, next.snapshot.as_str()), (ended, format!("events/0000/{ended}.jpg").as_str()));
        db.replicate_event_done(ended, 5_000).expect("done");
        assert!(db.replicate_next_event(i64::MAX, 0, &[]).expect("next").is_none(), "an ongoing event waits");
        db.end_event(ongoing, 6_000).expect("end");
        assert_eq!(db.replicate_next_event(i64::MAX, 0, &[]).expect("next").map(|e| e.id), Some(ongoing));
        assert_eq!(db.replicate_backlog().expect("backlog").events, 1);
    }

    #[test]
    fn a_failing_snapshot_waits_alone_and_busy_rows_are_skipped() {
        let db = Db::open_in_memory().expect("db");
        db.upsert_stream(&StreamSpec::new("cam", "rtsp://cam/1"), 0).expect("cam");
        let first = event(&db, "cam", 1_000, Some(2_000), true);
        let second = event(&db, "cam", 3_000, Some(4_000), true);
        assert_eq!(db.replicate_event_failed(first, 60_000).expect("failed"), 1);
        assert_eq!(db.replicate_event_failed(first, 60_000).expect("failed"), 2);
        let next = |now, busy: &[i64]| db.replicate_next_event(i64::MAX, now, busy).expect("next").map(|e| e.id);
        assert_eq!(next(10_000, &[]), Some(second), "the failing one waits; the next goes");
        assert_eq!(next(10_000, &[second]), None, "a busy one is not offered twice");
        assert_eq!(next(60_000, &[]), Some(first), "due again after its backoff");
        assert_eq!(next(60_000, &[first]), Some(second));
    }
}
