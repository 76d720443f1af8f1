//! The archive's index (schema version 17), used only by `oxinvr archive`:
//! the same streams and segments tables as a box, filled from the sidecars
//! of a bucket instead of by recording.
//!
//! Invariants:
//! - An archived stream is one (box, stream) of the bucket; its row in
//!   `streams` is named [`stream_name`]`(box, stream)`, is disabled, records
//!   nothing and is not replicated; `archive_streams` maps it back.
//! - An archived segment is `closed` from its insert, and its `path` is the
//!   object's name in the bucket (not a file under the data dir).
//! - Every sidecar read is in `archive_objects` with its size, as `indexed`
//!   or `skipped` (with why): a poll reads only sidecars not there (or whose
//!   size changed), so a malformed one is told once, not every poll.
//! - [`Db::archive_add`] writes a whole listing page in one transaction;
//!   segment paths are unique, so indexing the same sidecar twice is a no-op.
//! - [`Db::archive_prune`] drops the segment of a sidecar no longer in the
//!   bucket (its lifecycle rules deleted it) and forgets the sidecar; it
//!   touches only archived streams' rows.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::{Ctx, Db, DbError, FragmentEntry, RecordMode, StreamSpec};

/// An archived stream: its row's id and name, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveStream {
    pub stream_id: i64,
    pub name: String,
    pub box_name: String,
    pub stream: String,
}

/// One segment as its sidecar describes it, ready to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub stream_id: i64,
    /// The object's name in the bucket.
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes: u64,
    pub frames: u64,
    pub audio_frames: u64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub video_timescale: u32,
    pub init_len: u64,
    pub has_audio: bool,
    pub protected: bool,
    pub trigger: String,
    pub fragments: Vec<FragmentEntry>,
}

/// The stream name of `stream` of `box_name`: `<box>-<stream>`, every
/// character a stream name may not hold replaced by `_`; `None` if longer
/// than a stream name may be.
pub fn stream_name(box_name: &str, stream: &str) -> Option<String> {
    let name: String = format!("{box_name}-{stream}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    super::validate_stream_name(&name).is_ok().then_some(name)
}

fn to_i64(v: u64, what: &str) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::invalid(format!("{what} {v} is out of range")))
}

impl Db {
    /// Every sidecar read so far: key -> size.
    pub fn archive_seen(&self) -> Result<HashMap<String, u64>, DbError> {
        let op = "archive_seen";
        let mut st = self.conn.prepare_cached("SELECT key, size FROM archive_objects").ctx(op)?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).ctx(op)?;
        let mut out = HashMap::new();
        for row in rows {
            let (k, n) = row.ctx(op)?;
            out.insert(k, u64::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    /// The archived stream of (`box_name`, `stream`), made if new.
    pub fn archive_stream(&self, box_name: &str, stream: &str, now_ms: i64) -> Result<ArchiveStream, DbError> {
        let op = "archive_stream";
        let found: Option<(i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT a.stream_id, s.name FROM archive_streams a JOIN streams s ON s.id = a.stream_id
                 WHERE a.box = ?1 AND a.stream = ?2",
            )
            .and_then(|mut st| st.query_row(params![box_name, stream], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .ctx(op)?;
        let archived = |(stream_id, name)| ArchiveStream {
            stream_id,
            name,
            box_name: box_name.to_string(),
            stream: stream.to_string(),
        };
        if let Some(f) = found {
            return Ok(archived(f));
        }
        let name = stream_name(box_name, stream)
            .ok_or_else(|| DbError::invalid(format!("box {box_name:?} stream {stream:?}: the name is too long")))?;
        if self.stream_by_name(&name)?.is_some() {
            return Err(DbError::invalid(format!(
                "box {box_name:?} stream {stream:?}: the stream name {name:?} is taken by another"
            )));
        }
        let mut spec = StreamSpec::new(&name, &format!("archive:{box_name}/{stream}"));
        (spec.enabled, spec.record, spec.replicate) = (false, RecordMode::Off, false);
        let row = self.upsert_stream(&spec, now_ms)?;
        self.write(op, |tx| {
            tx.prepare_cached("INSERT INTO archive_streams (stream_id, box, stream) VALUES (?1, ?2, ?3)")
                .and_then(|mut st| st.execute(params![row.id, box_name, stream]))
                .ctx(op)
                .map(drop)
        })?;
        Ok(archived((row.id, name)))
    }

    /// Every archived stream.
    pub fn archive_streams(&self) -> Result<Vec<ArchiveStream>, DbError> {
        let op = "archive_streams";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT a.stream_id, s.name, a.box, a.stream FROM archive_streams a
                 JOIN streams s ON s.id = a.stream_id ORDER BY a.box, a.stream",
            )
            .ctx(op)?;
        let rows = st
            .query_map([], |r| {
                Ok(ArchiveStream { stream_id: r.get(0)?, name: r.get(1)?, box_name: r.get(2)?, stream: r.get(3)? })
            })
            .ctx(op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(op)
    }

    /// One listing page in one transaction: `segments` with the sidecar
    /// (key, size) each came from, and the sidecars `skipped` (key, size,
    /// why). Returns how many segments were new.
    pub fn archive_add(
        &self,
        segments: &[(ArchivedSegment, String, u64)],
        skipped: &[(String, u64, String)],
        now_ms: i64,
    ) -> Result<usize, DbError> {
        let op = "archive_add";
        self.write(op, |tx| {
            let mut new = 0;
            let mut seg = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO segments (stream_id, path, state, start_ms, end_ms, bytes, frames,
                         audio_frames, codec, width, height, video_timescale, init_len, has_audio, fragments,
                         protected, \"trigger\", time_unknown)
                     VALUES (?1, ?2, 'closed', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0)",
                )
                .ctx(op)?;
            let mut seen = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO archive_objects (key, size, state, reason, seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .ctx(op)?;
            for (s, side, size) in segments {
                if !super::is_safe_relative_path(&s.key) {
                    return Err(DbError::invalid(format!("object {:?} is not a plain relative name", s.key)));
                }
                new += seg
                    .execute(params![
                        s.stream_id,
                        s.key,
                        s.start_ms,
                        s.end_ms,
                        to_i64(s.bytes, "bytes")?,
                        to_i64(s.frames, "frames")?,
                        to_i64(s.audio_frames, "audio_frames")?,
                        s.codec,
                        s.width,
                        s.height,
                        s.video_timescale,
                        to_i64(s.init_len, "init_len")?,
                        s.has_audio,
                        FragmentEntry::encode_all(&s.fragments),
                        s.protected,
                        s.trigger,
                    ])
                    .with_ctx(|| format!("{op}: segment {:?}", s.key))?;
                seen.execute(params![side, to_i64(*size, "size")?, "indexed", None::<String>, now_ms]).ctx(op)?;
            }
            for (key, size, why) in skipped {
                seen.execute(params![key, to_i64(*size, "size")?, "skipped", why, now_ms]).ctx(op)?;
            }
            Ok(new)
        })
    }

    /// Forgets the sidecars `keys` (gone from the bucket) and drops the
    /// archived segments they described. Returns how many segments went.
    pub fn archive_prune(&self, keys: &[String]) -> Result<usize, DbError> {
        let op = "archive_prune";
        self.write(op, |tx| {
            let mut seg = tx
                .prepare_cached(
                    "DELETE FROM segments WHERE path = ?1
                       AND stream_id IN (SELECT stream_id FROM archive_streams)",
                )
                .ctx(op)?;
            let mut obj = tx.prepare_cached("DELETE FROM archive_objects WHERE key = ?1").ctx(op)?;
            let mut gone = 0;
            for key in keys {
                if let Some(object) = key.strip_suffix(".json") {
                    gone += seg.execute([object]).ctx(op)?;
                }
                obj.execute([key]).ctx(op)?;
            }
            Ok(gone)
        })
    }

    /// How many segments the archive's index holds.
    pub fn archive_segment_count(&self) -> Result<u64, DbError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM segments WHERE stream_id IN (SELECT stream_id FROM archive_streams)",
                [],
                |r| super::get_num(r, 0, "count"),
            )
            .ctx("archive_segment_count")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(stream_id: i64, key: &str) -> ArchivedSegment {
        ArchivedSegment {
            stream_id,
            key: key.into(),
            start_ms: 1000,
            end_ms: 3000,
            bytes: 500,
            frames: 60,
            audio_frames: 0,
            codec: "avc1.64001f".into(),
            width: 640,
            height: 480,
            video_timescale: 90_000,
            init_len: 100,
            has_audio: false,
            protected: false,
            trigger: "continuous".into(),
            fragments: vec![FragmentEntry {
                offset: 100,
                size: 400,
                start_ticks: 0,
                duration_ticks: 180_000,
                frames: 60,
                key: true,
            }],
        }
    }

    #[test]
    fn pages_index_once_and_remember_what_was_skipped() {
        let db = Db::open_in_memory().expect("db");
        let a = db.archive_stream("box.1", "cam", 5).expect("stream");
        assert_eq!(a.name, "box_1-cam");
        assert_eq!(db.archive_stream("box.1", "cam", 6).expect("again"), a);
        let row = db.stream_by_name("box_1-cam").expect("read").expect("row");
        assert!(!row.spec.enabled && row.spec.record == RecordMode::Off && !row.spec.replicate);
        assert!(db.archive_stream("box_1", "cam", 7).is_err(), "a name taken by another box is refused");
        let k = "p/box.1/cam/1970-01-01/1000.mp4";
        let page = vec![(seg(a.stream_id, k), format!("{k}.json"), 900)];
        let bad = vec![("p/box.1/cam/x.mp4.json".to_string(), 3, "not JSON".to_string())];
        assert_eq!(db.archive_add(&page, &bad, 10).expect("add"), 1);
        assert_eq!(db.archive_add(&page, &[], 11).expect("again"), 0, "idempotent");
        let got = db.segments_overlapping(a.stream_id, 0, 10_000).expect("segments");
        assert_eq!(got.len(), 1);
        assert!(got[0].closed && got[0].path == k && got[0].fragments == page[0].0.fragments);
        let seen = db.archive_seen().expect("seen");
        assert_eq!((seen.get(&format!("{k}.json")), seen.get("p/box.1/cam/x.mp4.json")), (Some(&900), Some(&3)));
        assert_eq!(db.archive_streams().expect("streams"), vec![a]);
        assert_eq!(stream_name(&"b".repeat(64), "cam"), None);
    }
}
