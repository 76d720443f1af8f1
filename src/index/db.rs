//! The SQLite index of streams, segments, gaps and pending file deletions.
//!
//! One [`Db`] wraps one `rusqlite::Connection`; it is `Send` but not `Sync`, so
//! every thread that needs the index opens its own (the storage thread writes,
//! HTTP workers mostly read). All connections share one file in WAL mode.
//!
//! Invariants:
//! - `PRAGMA user_version` is the number of [`MIGRATIONS`] applied. Each
//!   migration runs in its own `BEGIN IMMEDIATE` transaction together with the
//!   version bump, so a crash leaves the schema at some exact version. A
//!   database whose version is newer than `MIGRATIONS.len()` is refused before
//!   anything in it is touched.
//! - `foreign_keys=ON`: every segment and gap belongs to an existing stream.
//!   A stream with segments cannot be deleted ([`Db::delete_stream`] says
//!   [`DbError::InUse`]); [`Db::purge_stream`] moves its segments to garbage and
//!   deletes it in one transaction. Gaps go with their stream.
//! - Every segment path is relative to the data dir, made of plain components
//!   (no `..`, no root; see [`is_safe_relative_path`]), and unique.
//! - A segment is inserted `open` with `bytes = 0` (trivially true for
//!   invariant 1 of ARCHITECTURE.md). `closed` is final: an open row takes
//!   any progress, a closed row only a closed one (start-up repair of a
//!   closed row whose file turned out shorter), never goes back to `open`.
//!   `end_ms >= start_ms` for segments and gaps.
//! - Invariant 3 of ARCHITECTURE.md: a segment row is only ever deleted in the
//!   same transaction that inserts its path into `garbage`
//!   ([`Db::delete_segments_to_garbage`], [`Db::purge_stream`]); that
//!   transaction is committed with `synchronous=FULL`, so it is on disk before
//!   the caller unlinks any file.
//! - Protected segments are never deleted by
//!   [`Db::delete_unprotected_segments_to_garbage`], which retention uses, so
//!   a "protect" request from an HTTP thread racing retention wins.
//!   [`Db::delete_segments_to_garbage`] (recovery, discarding an empty
//!   segment, explicit deletion) and [`Db::purge_stream`] delete them too.
//!
//! Durability choice: `synchronous=NORMAL` in WAL mode for everything else.
//! A commit lost to a power cut only rolls the index back to an earlier
//! consistent state: an inserted segment disappears (its file is adopted at
//! start-up, invariant 2), progress of an open segment goes back to fewer
//! bytes (still a prefix of the file, invariant 1), a close reverts to `open`
//! (start-up recovery rescans open segments), a `garbage_done` reverts (the
//! unlink is retried and finds the file gone). The one commit whose loss would
//! break an invariant is a deletion followed by an unlink -- a row would come
//! back pointing to no file -- so those run with `synchronous=FULL`. So do
//! the user's own settings, which nothing rebuilds: streams added, changed
//! or deleted, and what grants or revokes access (`users`): power cuts on
//! the emulated board lost an API key made seconds before, and a stream
//! added through the API is as exposed.
//!
//! Time is milliseconds since the Unix epoch; intervals are half-open
//! `[start_ms, end_ms)`, and a zero-length interval is the point `start_ms`.
//! A segment or gap with `time_unknown` was recorded while the wall clock was
//! below its floor: its times are on that process's provisional timeline
//! (`base::clock`). [`Db::restamp`] moves the ones of the running process to
//! wall time once the clock is set; those of an earlier process stay unknown.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::fragments::FragmentEntry;

/// Schema migrations; `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1`. Never edit an entry once released: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: streams, segments, pending deletions.
    r#"
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        record TEXT NOT NULL DEFAULT 'continuous' CHECK (record IN ('continuous', 'off')),
        retention_days INTEGER CHECK (retention_days IS NULL OR retention_days >= 0),
        max_storage_mb INTEGER CHECK (max_storage_mb IS NULL OR max_storage_mb >= 0),
        priority INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        source TEXT NOT NULL DEFAULT 'config' CHECK (source IN ('config', 'api'))
    ) STRICT;

    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        stream_id INTEGER NOT NULL REFERENCES streams (id),
        path TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
        frames INTEGER NOT NULL DEFAULT 0 CHECK (frames >= 0),
        audio_frames INTEGER NOT NULL DEFAULT 0 CHECK (audio_frames >= 0),
        codec TEXT NOT NULL,
        width INTEGER NOT NULL CHECK (width >= 0),
        height INTEGER NOT NULL CHECK (height >= 0),
        video_timescale INTEGER NOT NULL CHECK (video_timescale >= 0),
        init_len INTEGER NOT NULL CHECK (init_len >= 0),
        has_audio INTEGER NOT NULL DEFAULT 0 CHECK (has_audio IN (0, 1)),
        CHECK (end_ms >= start_ms)
    ) STRICT;
    CREATE INDEX segments_stream_start ON segments (stream_id, start_ms);
    CREATE INDEX segments_start ON segments (start_ms);
    CREATE INDEX segments_open ON segments (stream_id) WHERE state = 'open';

    CREATE TABLE garbage (
        path TEXT PRIMARY KEY NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 2: per-segment fragment index (FragmentEntry::encode_all) and recording gaps.
    r#"
    ALTER TABLE segments ADD COLUMN fragments BLOB NOT NULL DEFAULT x'';

    CREATE TABLE gaps (
        id INTEGER PRIMARY KEY,
        stream_id INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        CHECK (end_ms >= start_ms)
    ) STRICT;
    CREATE INDEX gaps_stream_start ON gaps (stream_id, start_ms);
    "#,
    // 3: protected (event) segments and the expected bitrate for ring sizing.
    r#"
    ALTER TABLE segments ADD COLUMN protected INTEGER NOT NULL DEFAULT 0
        CHECK (protected IN (0, 1));
    ALTER TABLE segments ADD COLUMN "trigger" TEXT NOT NULL DEFAULT 'continuous';
    ALTER TABLE streams ADD COLUMN bitrate_kbps INTEGER
        CHECK (bitrate_kbps IS NULL OR bitrate_kbps >= 0);
    "#,
    // 4: users, login sessions and API keys (see db::users and auth).
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        password_hash TEXT NOT NULL,
        totp_secret BLOB,
        totp_pending BLOB,
        totp_last_step INTEGER,
        created_ms INTEGER NOT NULL,
        last_login_ms INTEGER
    ) STRICT;

    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        address TEXT NOT NULL,
        user_agent TEXT NOT NULL
    ) STRICT;
    CREATE INDEX sessions_user ON sessions (user_id);

    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        secret_hash BLOB NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        last_used_ms INTEGER
    ) STRICT;
    "#,
    // 5: rows recorded while the wall clock was below the firmware's build date.
    r#"
    ALTER TABLE segments ADD COLUMN time_unknown INTEGER NOT NULL DEFAULT 0
        CHECK (time_unknown IN (0, 1));
    ALTER TABLE gaps ADD COLUMN time_unknown INTEGER NOT NULL DEFAULT 0
        CHECK (time_unknown IN (0, 1));
    CREATE INDEX segments_time_unknown ON segments (id) WHERE time_unknown = 1;
    "#,
    // 6: which writer wrote a row of unknown time (`Db::mark_rows_of_unknown_time`):
    // only that running process knows the step that corrects it. Row ids cannot tell, as
    // SQLite reuses the highest id once its row is deleted.
    r#"
    ALTER TABLE segments ADD COLUMN clock_mark INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE gaps ADD COLUMN clock_mark INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: steps of the wall clock seen while recording (`Db::record_clock_step`): the
    // timeline shows them, and age retention does not count a forward step as age.
    r#"
    CREATE TABLE clock_steps (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        step_ms INTEGER NOT NULL CHECK (step_ms != 0)
    ) STRICT;
    CREATE INDEX clock_steps_at ON clock_steps (at_ms);
    "#,
    // 8: events (see db::events). `stream` is the name, not a key: an event outlives its
    // stream and its recordings.
    r#"
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('motion', 'object', 'manual', 'external')),
        label TEXT NOT NULL,
        score REAL NOT NULL CHECK (score >= 0 AND score <= 1),
        zones TEXT NOT NULL DEFAULT '[]',
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,
        box TEXT,
        snapshot TEXT,
        thumbnail TEXT,
        CHECK (end_ms IS NULL OR end_ms >= start_ms)
    ) STRICT;
    CREATE INDEX events_stream_start ON events (stream, start_ms);
    CREATE INDEX events_start ON events (start_ms);
    "#,
    // 9: recording modes (continuous, events, off) and the events mode's settings.
    // `record`'s CHECK cannot change in place, so `record_mode` is the truth from now on;
    // `record` keeps 'continuous' for an events stream (an older firmware then records
    // it all rather than nothing).
    r#"
    ALTER TABLE streams ADD COLUMN record_mode TEXT NOT NULL DEFAULT 'continuous'
        CHECK (record_mode IN ('continuous', 'events', 'off'));
    UPDATE streams SET record_mode = record;
    ALTER TABLE streams ADD COLUMN pre_seconds INTEGER NOT NULL DEFAULT 5 CHECK (pre_seconds >= 0);
    ALTER TABLE streams ADD COLUMN post_seconds INTEGER NOT NULL DEFAULT 10 CHECK (post_seconds >= 0);
    ALTER TABLE streams ADD COLUMN event_retention_days INTEGER NOT NULL DEFAULT 30
        CHECK (event_retention_days >= 0);
    "#,
    // 10: a stream's ONVIF camera (see db::onvif), gone with its stream.
    r#"
    CREATE TABLE onvif (
        stream_id INTEGER PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
        device_url TEXT NOT NULL,
        username TEXT NOT NULL,
        password TEXT NOT NULL,
        profile TEXT NOT NULL,
        media_url TEXT NOT NULL,
        ptz_url TEXT
    ) STRICT;
    "#,
    // 11: a stream's weekly recording schedule (a JSON array of entries, see index::schedule).
    r#"
    ALTER TABLE streams ADD COLUMN schedule TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(schedule));
    "#,
    // 12: a stream's camera may be its motion event source (ONVIF PullPoint, `onvif::watch`).
    r#"
    ALTER TABLE onvif ADD COLUMN events INTEGER NOT NULL DEFAULT 0 CHECK (events IN (0, 1));
    "#,
    // 13: a stream's sub stream (a second, small RTSP session of the same camera, for
    // detection and the live grid) and its JPEG snapshot URL (detection of H.265 cameras).
    r#"
    ALTER TABLE streams ADD COLUMN sub_url TEXT;
    ALTER TABLE streams ADD COLUMN snapshot_url TEXT;
    "#,
    // 14: per-stream detection settings, editable through the API (JSON text: the
    // detectors' names, the motion mask's polygons, the zones; see `Zone`).
    r#"
    ALTER TABLE streams ADD COLUMN detect TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE streams ADD COLUMN motion_mask TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE streams ADD COLUMN zones TEXT NOT NULL DEFAULT '[]';
    "#,
    // 15: replication to an S3 bucket: a stream may opt out, and the upload queue, one
    // row per closed segment to upload (see db/replicate.rs). The row goes with its
    // segment; an upload id left by a deleted row is aborted by the uploader's sweep.
    r#"
    ALTER TABLE streams ADD COLUMN replicate INTEGER NOT NULL DEFAULT 1 CHECK (replicate IN (0, 1));
    CREATE TABLE replicate_queue (
        segment_id INTEGER PRIMARY KEY REFERENCES segments (id) ON DELETE CASCADE,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_try_ms INTEGER NOT NULL DEFAULT 0,
        upload_id TEXT,
        parts TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(parts)),
        last_error TEXT,
        queued_ms INTEGER NOT NULL,
        done_ms INTEGER
    ) STRICT;
    CREATE INDEX replicate_queue_pending ON replicate_queue (next_try_ms) WHERE state = 'pending';
    "#,
    // 16: event snapshots are replicated too: when an event's picture and sidecar
    // reached the bucket (or were found to have no picture to send).
    r#"
    ALTER TABLE events ADD COLUMN replicated_ms INTEGER;
    CREATE INDEX events_to_replicate ON events (id) WHERE replicated_ms IS NULL AND snapshot IS NOT NULL;
    "#,
    // 17: archive mode (`oxinvr archive`, see db/archive.rs): which box and stream of
    // the bucket each archived stream is, and every sidecar read (indexed or skipped),
    // so a poll reads only new ones. Unused on a box.
    r#"
    CREATE TABLE archive_streams (
        stream_id INTEGER PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
        box TEXT NOT NULL,
        stream TEXT NOT NULL,
        UNIQUE (box, stream)
    ) STRICT;
    CREATE TABLE archive_objects (
        key TEXT PRIMARY KEY,
        size INTEGER NOT NULL CHECK (size >= 0),
        state TEXT NOT NULL CHECK (state IN ('indexed', 'skipped')),
        reason TEXT,
        seen_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // 18: an event snapshot whose upload fails waits on its own backoff, so it does not
    // hold up the others; the index holds only ended events (the ones offered).
    r#"
    ALTER TABLE events ADD COLUMN replicate_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN replicate_next_ms INTEGER NOT NULL DEFAULT 0;
    DROP INDEX events_to_replicate;
    CREATE INDEX events_to_replicate ON events (id)
        WHERE replicated_ms IS NULL AND snapshot IS NOT NULL AND end_ms IS NOT NULL;
    "#,
];

/// A step of the wall clock: at `at_ms` (wall time just after it) the clock
/// read `step_ms` more than it did just before (negative: set back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClockStep {
    pub at_ms: i64,
    pub step_ms: i64,
}

impl ClockStep {
    /// Whether a time on the timeline before the step (`t`) lies before it:
    /// split at the middle of the jump, since times near the step may be
    /// a little off on either side.
    pub fn is_after(&self, t: i64) -> bool {
        t < self.at_ms - self.step_ms / 2
    }
}

/// A new mark for the rows of unknown time one writer (a storage thread's
/// connection) writes: positive, and different from any earlier one (the
/// pid, the instant and a counter).
fn new_clock_mark() -> i64 {
    // 32 bits: MIPS32 has no 64-bit atomics.
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = u64::from(COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mixed = nanos.rotate_left(20) ^ u64::from(std::process::id()) ^ n.rotate_left(48);
    ((mixed & (i64::MAX as u64)) as i64).max(1)
}

mod archive;
mod events;
mod onvif;
mod replicate;
mod users;
pub use archive::{ArchiveStream, ArchivedSegment};
pub use events::{EventFilter, EventKind, EventRow, NewEvent};
pub use onvif::OnvifRow;
pub use replicate::{Backlog, EventUpload, UploadJob};
pub use users::{KeyRow, Role, SessionRow, UserRow};

/// What retention planning knows of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionItem {
    pub id: i64,
    pub stream_id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes: u64,
    pub protected: bool,
    pub open: bool,
    /// Recorded while the wall clock was untrusted: its age is unknown.
    pub time_unknown: bool,
    /// Overlaps an event of its stream (its span widened by the stream's
    /// pre/post seconds) or was recorded for one (`trigger = 'event'`): kept
    /// `event_retention_days`. Only worked out for items past their stream's
    /// `retention_days` (the only ones age could take).
    pub event: bool,
    /// Its stream replicates and it is one the replication queue takes, but it is not
    /// in the bucket yet (queued or about to be: retention must not race the enqueue).
    pub unreplicated: bool,
}

/// An event counts for the recordings of at most its first day (bounds the
/// retention walk's look-up of events; a longer one is a detector stuck on).
pub const MAX_EVENT_SPAN_MS: i64 = 86_400_000;

/// How long a connection waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of each connection, KiB.
const CACHE_KIB: i64 = 1024;
/// SQLite's heap, all connections together, above which it frees cached pages
/// before it allocates (a soft limit: a query in progress may exceed it).
pub const SQLITE_HEAP_LIMIT: i64 = 8 << 20;

/// Sets SQLite's process-wide soft heap limit (once).
fn limit_heap() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a plain call setting SQLite's global limit; thread-safe.
    ONCE.call_once(|| unsafe {
        rusqlite::ffi::sqlite3_soft_heap_limit64(SQLITE_HEAP_LIMIT);
    });
}

/// What went wrong, always naming the operation or the value at fault.
#[derive(Debug)]
pub enum DbError {
    /// SQLite failed while doing `op`.
    Sqlite { op: Cow<'static, str>, source: rusqlite::Error },
    /// The database was written by a newer OxiNVR; nothing was changed.
    TooNew { path: String, found: u32, known: u32 },
    /// The stream still has segments, so its row cannot go.
    InUse { stream: String, segments: u64 },
    /// There is no such row.
    NotFound { what: String },
    /// A value passed in cannot be stored (out of range, unsafe path, ...).
    Invalid { what: String },
    /// A value read from the database is malformed.
    Corrupt { what: String },
    /// The change would break a rule (a taken name, removing the last admin).
    Conflict { what: String },
}

impl DbError {
    fn sql(op: impl Into<Cow<'static, str>>, source: rusqlite::Error) -> DbError {
        DbError::Sqlite { op: op.into(), source }
    }
    fn invalid(what: impl Into<String>) -> DbError {
        DbError::Invalid { what: what.into() }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite { op, source } => write!(f, "database: {op}: {source}"),
            DbError::TooNew { path, found, known } => write!(
                f,
                "database {path} has schema version {found} but this OxiNVR knows only up to \
                 {known}; refusing to open it (run a newer OxiNVR or restore a backup)"
            ),
            DbError::InUse { stream, segments } => {
                write!(f, "stream {stream:?} still has {segments} recorded segment(s); purge them first")
            }
            DbError::NotFound { what } => write!(f, "database: no {what}"),
            DbError::Invalid { what } => write!(f, "database: invalid input: {what}"),
            DbError::Corrupt { what } => write!(f, "database: corrupt value: {what}"),
            DbError::Conflict { what } => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Into the glue's error: the kind the variant already tells; SQLite's own
/// failure stays the source.
impl From<DbError> for crate::base::error::Error {
    fn from(e: DbError) -> Self {
        use crate::base::error::{Error, Kind};
        let kind = match e {
            DbError::Sqlite { op, source } => return Error::wrap(Kind::Io, source).context(format!("database: {op}")),
            // The kind says it is a missing row; the message needs no "database:".
            DbError::NotFound { what } => return Error::not_found(format!("no {what}")),
            DbError::Invalid { .. } => Kind::InvalidInput,
            DbError::InUse { .. } | DbError::Conflict { .. } | DbError::TooNew { .. } => Kind::Conflict,
            DbError::Corrupt { .. } => Kind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

/// Attaches the operation name to a rusqlite error.
trait Ctx<T> {
    fn ctx(self, op: &'static str) -> Result<T, DbError>;
    fn with_ctx(self, op: impl FnOnce() -> String) -> Result<T, DbError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, op: &'static str) -> Result<T, DbError> {
        self.map_err(|e| DbError::sql(op, e))
    }
    fn with_ctx(self, op: impl FnOnce() -> String) -> Result<T, DbError> {
        self.map_err(|e| DbError::sql(op(), e))
    }
}

/// Whether a stream records: every frame, around its events only, or not at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    #[default]
    Continuous,
    /// From `pre_seconds` before an event of the stream to `post_seconds` after the last one ended.
    Events,
    Off,
}

impl RecordMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordMode::Continuous => "continuous",
            RecordMode::Events => "events",
            RecordMode::Off => "off",
        }
    }
    pub fn parse(s: &str) -> Option<RecordMode> {
        match s {
            "continuous" => Some(RecordMode::Continuous),
            "events" => Some(RecordMode::Events),
            "off" => Some(RecordMode::Off),
            _ => None,
        }
    }
    /// Whether the storage thread reads the stream's ring (all the time, or around events).
    pub fn records(self) -> bool {
        self != RecordMode::Off
    }
}

impl StreamSpec {
    /// A stream with every optional setting at the default a file or API
    /// request that omits it gets (enabled, continuous, source "api").
    pub fn new(name: &str, url: &str) -> StreamSpec {
        StreamSpec {
            name: name.to_owned(),
            url: url.to_owned(),
            enabled: true,
            record: RecordMode::default(),
            retention_days: None,
            max_storage_mb: None,
            priority: 0,
            bitrate_kbps: None,
            pre_seconds: DEFAULT_PRE_SECONDS,
            post_seconds: DEFAULT_POST_SECONDS,
            event_retention_days: DEFAULT_EVENT_RETENTION_DAYS,
            schedule: Vec::new(),
            sub_url: None,
            snapshot_url: None,
            detect: Vec::new(),
            motion_mask: Vec::new(),
            zones: Vec::new(),
            replicate: true,
            source: default_source(),
        }
    }

    /// The record mode at local week minute `week_min` (the schedule's, else `record`).
    pub fn record_at(&self, week_min: u32) -> RecordMode {
        super::schedule::mode_at(&self.schedule, self.record, week_min)
    }

    /// Whether the stream records at some time of the week: its storage
    /// recorder, ring and budget share exist (the mode of the moment says when it writes).
    pub fn may_record(&self) -> bool {
        self.record.records()
            || super::schedule::parse(&self.schedule).is_ok_and(|es| es.iter().any(|e| e.mode.records()))
    }

    /// Whether events mode may be in force at some time of the week (the ring holds the pre-buffer).
    pub fn may_record_events(&self) -> bool {
        self.record == RecordMode::Events
            || super::schedule::parse(&self.schedule).is_ok_and(|es| es.iter().any(|e| e.mode == RecordMode::Events))
    }
}

/// Defaults of the events mode's settings.
pub const DEFAULT_PRE_SECONDS: u32 = 5;
pub const DEFAULT_POST_SECONDS: u32 = 10;
pub const DEFAULT_EVENT_RETENTION_DAYS: u32 = 30;

fn default_pre_seconds() -> u32 {
    DEFAULT_PRE_SECONDS
}
fn default_post_seconds() -> u32 {
    DEFAULT_POST_SECONDS
}
fn default_event_retention_days() -> u32 {
    DEFAULT_EVENT_RETENTION_DAYS
}

/// A polygon in normalised coordinates: `[x, y]` points, 0..=1, x right, y down.
pub type Polygon = Vec<[f64; 2]>;

/// A named area of a stream's picture for object detection (`[[streams.zones]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// 1 to 64 bytes, unique in its stream; events name it in `zones`.
    pub name: String,
    /// 3 to 64 points.
    pub polygon: Polygon,
    /// Labels that count in this zone (empty: every label).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Lowest score that counts in this zone (none: the `[detect]` filter alone).
    #[serde(default)]
    pub min_score: Option<f64>,
    /// When a stream has required zones, an object outside all of them opens no event.
    #[serde(default)]
    pub required: bool,
}

fn default_true() -> bool {
    true
}
fn default_source() -> String {
    "api".to_owned()
}

/// What a stream is, as configured (file or API). Unknown fields are refused
/// when deserializing; omitted optional ones take their defaults (enabled,
/// continuous, priority 0, source "api").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` (it names a directory).
    pub name: String,
    pub url: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub record: RecordMode,
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub max_storage_mb: Option<u64>,
    #[serde(default)]
    pub priority: i32,
    /// Expected bitrate, for ring sizing.
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
    /// Events mode: seconds recorded before an event (from the ring, which is sized for them).
    #[serde(default = "default_pre_seconds")]
    pub pre_seconds: u32,
    /// Events mode: seconds recorded after the last event ended.
    #[serde(default = "default_post_seconds")]
    pub post_seconds: u32,
    /// Days a recording overlapping an event of the stream is kept (never less than
    /// `retention_days`; with no `retention_days`, until space runs out).
    #[serde(default = "default_event_retention_days")]
    pub event_retention_days: u32,
    /// Weekly schedule (see [`super::schedule`]): where an entry covers the
    /// box's local time, its mode replaces `record`.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// The camera's low-resolution stream (RTSP): detection and the live grid use it.
    #[serde(default)]
    pub sub_url: Option<String>,
    /// The camera's JPEG snapshot (http://): detection of a stream with no H.264 source.
    #[serde(default)]
    pub snapshot_url: Option<String>,
    /// Detectors on this stream: `[]` (off), `["motion"]`, `["motion", "objects"]`.
    #[serde(default)]
    pub detect: Vec<String>,
    /// Polygons where motion is ignored.
    #[serde(default)]
    pub motion_mask: Vec<Polygon>,
    /// Named areas for object detection.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Its closed segments are uploaded when `[replicate]` is set (`replicate`).
    #[serde(default = "default_true")]
    pub replicate: bool,
    /// `"config"` or `"api"`.
    #[serde(default = "default_source")]
    pub source: String,
}

/// The columns of a segment that start-up reconciliation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCheck {
    pub id: i64,
    pub path: String,
    pub closed: bool,
    pub start_ms: i64,
    pub bytes: u64,
}

/// A stream as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamRow {
    pub id: i64,
    #[serde(flatten)]
    pub spec: StreamSpec,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A segment as it starts: `open`, no bytes, no fragments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSegment {
    pub stream_id: i64,
    /// Relative to the data dir, plain components only.
    pub path: String,
    pub start_ms: i64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub video_timescale: u32,
    pub init_len: u64,
    pub has_audio: bool,
    pub trigger: String,
    /// Times on the provisional timeline (the wall clock was untrusted).
    pub time_unknown: bool,
}

/// What a writer reports about an open segment; `closed: true` is final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentProgress {
    pub end_ms: i64,
    pub bytes: u64,
    pub frames: u64,
    pub audio_frames: u64,
    pub fragments: Vec<FragmentEntry>,
    pub closed: bool,
}

/// A segment as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentRow {
    pub id: i64,
    pub stream_id: i64,
    pub path: String,
    pub closed: bool,
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
    #[serde(skip)]
    pub fragments: Vec<FragmentEntry>,
    pub protected: bool,
    pub trigger: String,
    pub time_unknown: bool,
}

/// A stretch of time a stream did not record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GapRow {
    pub stream_id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub reason: String,
    pub time_unknown: bool,
}

/// Checks a stream name: it becomes a directory under `recordings/` and a
/// shell argument, so 1-64 of A-Z a-z 0-9 `_` `-`, not starting with `-`.
/// The one rule for the config file, the API and the database.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("stream name {name:?} must be 1 to 64 characters"));
    }
    if name.starts_with('-') {
        return Err(format!("stream name {name:?} must not start with '-'"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
        return Err(format!("stream name {name:?} contains {c:?}; allowed are A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

/// True if `p` is non-empty, relative and made only of plain components
/// (no `.`, `..`, root or prefix), so `data_dir.join(p)` stays inside the data dir.
pub fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.contains('\\')
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
        && !p.split('/').any(|part| part == "." || part == "..")
}

/// The id of the stream named `name`, inside a transaction of operation `op`.
fn stream_id(tx: &Transaction<'_>, name: &str, op: &str) -> Result<Option<i64>, DbError> {
    tx.query_row("SELECT id FROM streams WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
        .optional()
        .with_ctx(|| format!("{op} {name:?}: find"))
}

fn to_i64(v: u64, what: impl FnOnce() -> String) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::invalid(format!("{} = {v} does not fit in 63 bits", what())))
}

fn check_range(start_ms: i64, end_ms: i64, what: &str) -> Result<(), DbError> {
    if end_ms < start_ms {
        return Err(DbError::invalid(format!("{what}: end_ms {end_ms} is before start_ms {start_ms}")));
    }
    Ok(())
}

/// Reads an integer column into a narrower or unsigned type, naming the
/// column if the value does not fit.
fn get_num<T: TryFrom<i64>>(row: &Row<'_>, idx: usize, col: &str) -> rusqlite::Result<T> {
    let v: i64 = row.get(idx)?;
    T::try_from(v).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("column {col} holds {v}, out of range for {}", std::any::type_name::<T>()).into(),
        )
    })
}

/// A JSON text column read as `T`.
fn get_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize, col: &str) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| bad_value(idx, rusqlite::types::Type::Text, format!("column {col} holds {text:?}: {e}")))
}

fn bad_value(idx: usize, ty: rusqlite::types::Type, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, msg.into())
}

const STREAM_COLS: &str = "id, name, url, enabled, record_mode, retention_days, max_storage_mb, priority, \
                           bitrate_kbps, source, created_ms, updated_ms, pre_seconds, post_seconds, \
                           event_retention_days, schedule, sub_url, snapshot_url, detect, motion_mask, zones, replicate";

fn stream_from_row(row: &Row<'_>) -> rusqlite::Result<StreamRow> {
    let record: String = row.get(4)?;
    let record = RecordMode::parse(&record)
        .ok_or_else(|| bad_value(4, rusqlite::types::Type::Text, format!("column record holds {record:?}")))?;
    Ok(StreamRow {
        id: row.get(0)?,
        spec: StreamSpec {
            name: row.get(1)?,
            url: row.get(2)?,
            enabled: row.get(3)?,
            record,
            retention_days: match row.get::<_, Option<i64>>(5)? {
                None => None,
                Some(_) => Some(get_num(row, 5, "retention_days")?),
            },
            max_storage_mb: match row.get::<_, Option<i64>>(6)? {
                None => None,
                Some(_) => Some(get_num(row, 6, "max_storage_mb")?),
            },
            priority: get_num(row, 7, "priority")?,
            bitrate_kbps: match row.get::<_, Option<i64>>(8)? {
                None => None,
                Some(_) => Some(get_num(row, 8, "bitrate_kbps")?),
            },
            source: row.get(9)?,
            pre_seconds: get_num(row, 12, "pre_seconds")?,
            post_seconds: get_num(row, 13, "post_seconds")?,
            event_retention_days: get_num(row, 14, "event_retention_days")?,
            schedule: {
                let text: String = row.get(15)?;
                serde_json::from_str(&text)
                    .map_err(|e| bad_value(15, rusqlite::types::Type::Text, format!("column schedule: {e}")))?
            },
            sub_url: row.get(16)?,
            snapshot_url: row.get(17)?,
            detect: get_json(row, 18, "detect")?,
            motion_mask: get_json(row, 19, "motion_mask")?,
            zones: get_json(row, 20, "zones")?,
            replicate: row.get(21)?,
        },
        created_ms: row.get(10)?,
        updated_ms: row.get(11)?,
    })
}

const SEGMENT_COLS: &str = "id, stream_id, path, state, start_ms, end_ms, bytes, frames, \
                            audio_frames, codec, width, height, video_timescale, init_len, \
                            has_audio, fragments, protected, \"trigger\", time_unknown";

fn segment_from_row(row: &Row<'_>) -> rusqlite::Result<SegmentRow> {
    let id: i64 = row.get(0)?;
    let state: String = row.get(3)?;
    let closed = match state.as_str() {
        "open" => false,
        "closed" => true,
        _ => {
            return Err(bad_value(
                3,
                rusqlite::types::Type::Text,
                format!("segment {id}: column state holds {state:?}"),
            ))
        }
    };
    let blob: Vec<u8> = row.get(15)?;
    let fragments = FragmentEntry::decode_all(&blob).ok_or_else(|| {
        bad_value(
            15,
            rusqlite::types::Type::Blob,
            format!(
                "segment {id}: fragment index of {} bytes is not a multiple of {}",
                blob.len(),
                FragmentEntry::ENCODED_LEN
            ),
        )
    })?;
    Ok(SegmentRow {
        id,
        stream_id: row.get(1)?,
        path: row.get(2)?,
        closed,
        start_ms: row.get(4)?,
        end_ms: row.get(5)?,
        bytes: get_num(row, 6, "bytes")?,
        frames: get_num(row, 7, "frames")?,
        audio_frames: get_num(row, 8, "audio_frames")?,
        codec: row.get(9)?,
        width: get_num(row, 10, "width")?,
        height: get_num(row, 11, "height")?,
        video_timescale: get_num(row, 12, "video_timescale")?,
        init_len: get_num(row, 13, "init_len")?,
        has_audio: row.get(14)?,
        fragments,
        protected: row.get(16)?,
        trigger: row.get(17)?,
        time_unknown: row.get(18)?,
    })
}

fn gap_from_row(row: &Row<'_>) -> rusqlite::Result<GapRow> {
    Ok(GapRow {
        stream_id: row.get(0)?,
        start_ms: row.get(1)?,
        end_ms: row.get(2)?,
        reason: row.get(3)?,
        time_unknown: row.get(4)?,
    })
}

fn user_version(conn: &Connection) -> Result<u32, DbError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).ctx("read user_version")?;
    u32::try_from(v).map_err(|_| DbError::Corrupt { what: format!("PRAGMA user_version is {v}") })
}

/// Brings the schema to `migrations.len()`, one transaction per step.
/// The version is re-read inside each write transaction, so two processes
/// opening the same file at once do not both apply a step.
fn migrate(conn: &mut Connection, label: &str, migrations: &[&str]) -> Result<u32, DbError> {
    let known = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    // Fast path without the write lock: already current (the usual case for
    // every connection after the first).
    if user_version(conn)? == known {
        return Ok(known);
    }
    loop {
        let tx = Transaction::new(conn, TransactionBehavior::Immediate).ctx("begin migration")?;
        let v = user_version(&tx)?;
        if v > known {
            return Err(DbError::TooNew { path: label.to_owned(), found: v, known });
        }
        if v == known {
            tx.commit().ctx("end migration check")?;
            return Ok(v);
        }
        let step = migrations[v as usize];
        tx.execute_batch(step).with_ctx(|| format!("apply migration {} of {label}", v + 1))?;
        tx.pragma_update(None, "user_version", v + 1).with_ctx(|| format!("set user_version {} of {label}", v + 1))?;
        tx.commit().with_ctx(|| format!("commit migration {} of {label}", v + 1))?;
        log::info!("database {label}: migrated schema to version {}", v + 1);
    }
}

/// The index. See the module documentation for its invariants.
pub struct Db {
    conn: Connection,
    /// The `clock_mark` this connection puts on rows of unknown time (0: none;
    /// see [`Db::mark_rows_of_unknown_time`]).
    clock_mark: i64,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("path", &self.conn.path()).finish()
    }
}

impl Db {
    /// Bytes SQLite holds now, all connections of the process together (its
    /// own allocations: page caches, schemas, statements), which the counting
    /// allocator does not see.
    pub fn memory_used() -> u64 {
        // SAFETY: a plain read of SQLite's global statistics, thread-safe.
        let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
        u64::try_from(used).unwrap_or(0)
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let label = path.display().to_string();
        let conn = Connection::open(path).with_ctx(|| format!("open {label}"))?;
        Db::setup(conn, &label, MIGRATIONS, true)
    }

    /// A private, migrated, in-memory database (tests, tools).
    pub fn open_in_memory() -> Result<Db, DbError> {
        let conn = Connection::open_in_memory().ctx("open in-memory database")?;
        Db::setup(conn, ":memory:", MIGRATIONS, false)
    }

    fn setup(mut conn: Connection, label: &str, migrations: &[&str], on_disk: bool) -> Result<Db, DbError> {
        conn.busy_timeout(BUSY_TIMEOUT).with_ctx(|| format!("set busy_timeout on {label}"))?;
        // Refuse a too-new schema before changing anything (even the journal mode).
        let known = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
        let found = user_version(&conn).map_err(|e| match e {
            DbError::Sqlite { source, .. } => DbError::sql(format!("read schema version of {label}"), source),
            other => other,
        })?;
        if found > known {
            return Err(DbError::TooNew { path: label.to_owned(), found, known });
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .with_ctx(|| format!("set journal_mode=WAL on {label}"))?;
        if on_disk && !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "database {label}: journal_mode is {mode}, not wal \
                 (file system without shared memory?)"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL").with_ctx(|| format!("set synchronous on {label}"))?;
        conn.pragma_update(None, "foreign_keys", true).with_ctx(|| format!("set foreign_keys on {label}"))?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024_i64)
            .with_ctx(|| format!("set journal_size_limit on {label}"))?;
        // Negative: KiB. Each HTTP worker has a connection; at SQLite's default
        // (2 MiB each) their caches filled slowly for hours.
        conn.pragma_update(None, "cache_size", -CACHE_KIB).with_ctx(|| format!("set cache_size on {label}"))?;
        limit_heap();
        migrate(&mut conn, label, migrations)?;
        Ok(Db { conn, clock_mark: 0 })
    }

    /// The raw connection, for tests that need to reach under the API.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// The number of migrations applied.
    pub fn schema_version(&self) -> Result<u32, DbError> {
        user_version(&self.conn)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (write lock taken up front,
    /// so no upgrade deadlock with another writer).
    fn write<T>(&self, op: &'static str, f: impl FnOnce(&Transaction<'_>) -> Result<T, DbError>) -> Result<T, DbError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).ctx(op)?;
        let v = f(&tx)?;
        tx.commit().ctx(op)?;
        Ok(v)
    }

    /// Like [`Db::write`] but committed with `synchronous=FULL`: on disk when this returns.
    fn write_durably<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.conn.pragma_update(None, "synchronous", "FULL").ctx(op)?;
        let result = self.write(op, f);
        let restored = self.conn.pragma_update(None, "synchronous", "NORMAL").ctx(op);
        let v = result?;
        restored?;
        Ok(v)
    }

    // ---- streams ----

    /// Inserts or updates the stream named `s.name`. `created_ms` is kept on
    /// update; `updated_ms` moves to `now_ms` only if something changed.
    pub fn upsert_stream(&self, s: &StreamSpec, now_ms: i64) -> Result<StreamRow, DbError> {
        validate_stream_name(&s.name).map_err(DbError::invalid)?;
        if s.url.trim().is_empty() {
            return Err(DbError::invalid(format!("stream {:?}: url is empty", s.name)));
        }
        if s.source != "config" && s.source != "api" {
            return Err(DbError::invalid(format!(
                "stream {:?}: source is {:?}, expected \"config\" or \"api\"",
                s.name, s.source
            )));
        }
        let max_mb =
            s.max_storage_mb.map(|v| to_i64(v, || format!("stream {:?}: max_storage_mb", s.name))).transpose()?;
        super::schedule::parse(&s.schedule).map_err(|e| DbError::invalid(format!("stream {:?}: {e}", s.name)))?;
        let schedule = serde_json::to_string(&s.schedule).unwrap_or_else(|_| "[]".into());
        let json = |v: Result<String, serde_json::Error>, what: &str| {
            v.map_err(|e| DbError::invalid(format!("stream {:?}: {what}: {e}", s.name)))
        };
        let detect = json(serde_json::to_string(&s.detect), "detect")?;
        let mask = json(serde_json::to_string(&s.motion_mask), "motion_mask")?;
        let zones = json(serde_json::to_string(&s.zones), "zones")?;
        self.write_durably("upsert_stream", |tx| {
            tx.prepare_cached(
                "INSERT INTO streams (name, url, enabled, record, record_mode, retention_days,
                                      max_storage_mb, priority, bitrate_kbps, source, created_ms,
                                      updated_ms, pre_seconds, post_seconds, event_retention_days,
                                      sub_url, snapshot_url, detect, motion_mask, zones, replicate)
                 VALUES (?1, ?2, ?3, CASE ?4 WHEN 'off' THEN 'off' ELSE 'continuous' END, ?4, ?5,
                         ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
                 ON CONFLICT (name) DO UPDATE SET
                     url = excluded.url, enabled = excluded.enabled, record = excluded.record,
                     record_mode = excluded.record_mode,
                     retention_days = excluded.retention_days,
                     max_storage_mb = excluded.max_storage_mb,
                     priority = excluded.priority, bitrate_kbps = excluded.bitrate_kbps,
                     source = excluded.source, updated_ms = excluded.updated_ms,
                     pre_seconds = excluded.pre_seconds, post_seconds = excluded.post_seconds,
                     event_retention_days = excluded.event_retention_days,
                     sub_url = excluded.sub_url, snapshot_url = excluded.snapshot_url,
                     detect = excluded.detect, motion_mask = excluded.motion_mask, zones = excluded.zones,
                     replicate = excluded.replicate
                 WHERE streams.url IS NOT excluded.url OR streams.enabled IS NOT excluded.enabled
                    OR streams.record_mode IS NOT excluded.record_mode
                    OR streams.retention_days IS NOT excluded.retention_days
                    OR streams.max_storage_mb IS NOT excluded.max_storage_mb
                    OR streams.priority IS NOT excluded.priority
                    OR streams.bitrate_kbps IS NOT excluded.bitrate_kbps
                    OR streams.source IS NOT excluded.source
                    OR streams.pre_seconds IS NOT excluded.pre_seconds
                    OR streams.post_seconds IS NOT excluded.post_seconds
                    OR streams.event_retention_days IS NOT excluded.event_retention_days
                    OR streams.sub_url IS NOT excluded.sub_url
                    OR streams.snapshot_url IS NOT excluded.snapshot_url
                    OR streams.detect IS NOT excluded.detect
                    OR streams.motion_mask IS NOT excluded.motion_mask
                    OR streams.zones IS NOT excluded.zones
                    OR streams.replicate IS NOT excluded.replicate",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.name,
                    s.url,
                    s.enabled,
                    s.record.as_str(),
                    s.retention_days,
                    max_mb,
                    s.priority,
                    s.bitrate_kbps,
                    s.source,
                    now_ms,
                    s.pre_seconds,
                    s.post_seconds,
                    s.event_retention_days,
                    s.sub_url,
                    s.snapshot_url,
                    detect,
                    mask,
                    zones,
                    s.replicate
                ])
            })
            .with_ctx(|| format!("upsert_stream {:?}", s.name))?;
            tx.prepare_cached(
                "UPDATE streams SET schedule = ?2, updated_ms = ?3 WHERE name = ?1 AND schedule IS NOT ?2",
            )
            .and_then(|mut st| st.execute(params![s.name, schedule, now_ms]))
            .with_ctx(|| format!("upsert_stream {:?}: schedule", s.name))?;
            let read_back = format!("SELECT {STREAM_COLS} FROM streams WHERE name = ?1");
            tx.query_row(&read_back, [&s.name], stream_from_row)
                .with_ctx(|| format!("upsert_stream {:?}: read back", s.name))
        })
    }

    /// All streams, by name.
    pub fn list_streams(&self) -> Result<Vec<StreamRow>, DbError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {STREAM_COLS} FROM streams ORDER BY name"))
            .ctx("list_streams")?;
        let rows = st.query_map([], stream_from_row).ctx("list_streams")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("list_streams")
    }

    pub fn stream_by_name(&self, name: &str) -> Result<Option<StreamRow>, DbError> {
        self.conn
            .query_row(&format!("SELECT {STREAM_COLS} FROM streams WHERE name = ?1"), [name], stream_from_row)
            .optional()
            .with_ctx(|| format!("stream_by_name {name:?}"))
    }

    pub fn stream_by_id(&self, id: i64) -> Result<Option<StreamRow>, DbError> {
        self.conn
            .query_row(&format!("SELECT {STREAM_COLS} FROM streams WHERE id = ?1"), [id], stream_from_row)
            .optional()
            .with_ctx(|| format!("stream_by_id {id}"))
    }

    /// Deletes the stream row (and its gaps). `Ok(false)` if there is no such
    /// stream; [`DbError::InUse`] if it still has segments (see
    /// [`Db::purge_stream`]).
    pub fn delete_stream(&self, name: &str) -> Result<bool, DbError> {
        self.write_durably("delete_stream", |tx| {
            let Some(id) = stream_id(tx, name, "delete_stream")? else {
                return Ok(false);
            };
            let segments: i64 = tx
                .query_row("SELECT count(*) FROM segments WHERE stream_id = ?1", [id], |r| r.get(0))
                .with_ctx(|| format!("delete_stream {name:?}: count segments"))?;
            if segments > 0 {
                return Err(DbError::InUse { stream: name.to_owned(), segments: segments.unsigned_abs() });
            }
            tx.execute("DELETE FROM streams WHERE id = ?1", [id]).with_ctx(|| format!("delete_stream {name:?}"))?;
            Ok(true)
        })
    }

    /// Deletes the stream, its gaps and all its segments (protected ones too),
    /// moving the segment paths to `garbage` in the same durable transaction.
    /// Returns `None` if there is no such stream, else the paths to unlink
    /// (then [`Db::garbage_done`] each).
    pub fn purge_stream(&self, name: &str) -> Result<Option<Vec<String>>, DbError> {
        self.write_durably("purge_stream", |tx| {
            let Some(id) = stream_id(tx, name, "purge_stream")? else {
                return Ok(None);
            };
            let paths = {
                let op = || format!("purge_stream {name:?}: list segments");
                let mut st =
                    tx.prepare("SELECT path FROM segments WHERE stream_id = ?1 ORDER BY start_ms, id").with_ctx(op)?;
                let rows = st.query_map([id], |r| r.get::<_, String>(0)).with_ctx(op)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().with_ctx(op)?
            };
            tx.execute(
                "INSERT OR IGNORE INTO garbage (path)
                 SELECT path FROM segments WHERE stream_id = ?1",
                [id],
            )
            .with_ctx(|| format!("purge_stream {name:?}: to garbage"))?;
            tx.execute("DELETE FROM segments WHERE stream_id = ?1", [id])
                .with_ctx(|| format!("purge_stream {name:?}: delete segments"))?;
            tx.execute("DELETE FROM streams WHERE id = ?1", [id])
                .with_ctx(|| format!("purge_stream {name:?}: delete stream"))?;
            Ok(Some(paths))
        })
    }

    // ---- segments ----

    /// Inserts a segment in state `open` with `end_ms = start_ms`, `bytes =
    /// init_len` (the writer syncs the init before inserting the row), no
    /// frames, no fragments, not protected. Returns its id.
    pub fn insert_segment(&self, s: &NewSegment) -> Result<i64, DbError> {
        if !is_safe_relative_path(&s.path) {
            return Err(DbError::invalid(format!(
                "segment path {:?} is not a plain relative path inside the data dir",
                s.path
            )));
        }
        let init_len = to_i64(s.init_len, || format!("segment {:?}: init_len", s.path))?;
        // Not `RETURNING id` with `query_row`: that reads the row and then resets the
        // statement, and an autocommit INSERT commits at that reset, whose error (a full
        // disk: SQLITE_FULL) rusqlite drops. The id of a row that was rolled back came
        // back as if inserted (and was handed out again to the next segment). `execute`
        // steps to the end, so a failed commit is this call's error.
        self.conn
            .prepare_cached(
                "INSERT INTO segments (stream_id, path, state, start_ms, end_ms, codec, width, height,
                                       video_timescale, init_len, bytes, has_audio, \"trigger\", time_unknown,
                                       clock_mark)
                 VALUES (?1, ?2, 'open', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.stream_id,
                    s.path,
                    s.start_ms,
                    s.codec,
                    s.width,
                    s.height,
                    s.video_timescale,
                    init_len,
                    s.has_audio,
                    s.trigger,
                    s.time_unknown,
                    if s.time_unknown { self.clock_mark } else { 0 }
                ])
            })
            .map(|_| self.conn.last_insert_rowid())
            .with_ctx(|| format!("insert_segment {:?} of stream {}", s.path, s.stream_id))
    }

    /// Records progress of an open segment; `p.closed` closes it for good.
    /// A closed segment may be rewritten only with `p.closed` (repair after
    /// a rescan of its file). [`DbError::NotFound`] if there is no such
    /// segment, [`DbError::Invalid`] if `p` would reopen a closed segment or
    /// `p.end_ms` is before its start.
    pub fn update_segment(&self, id: i64, p: &SegmentProgress) -> Result<(), DbError> {
        let what = || format!("segment {id}");
        let bytes = to_i64(p.bytes, || format!("{}: bytes", what()))?;
        let frames = to_i64(p.frames, || format!("{}: frames", what()))?;
        let audio_frames = to_i64(p.audio_frames, || format!("{}: audio_frames", what()))?;
        let blob = FragmentEntry::encode_all(&p.fragments);
        let state = if p.closed { "closed" } else { "open" };
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE segments SET end_ms = ?2, bytes = ?3, frames = ?4, audio_frames = ?5,
                                     fragments = ?6, state = ?7
                 WHERE id = ?1 AND (state = 'open' OR ?7 = 'closed') AND start_ms <= ?2",
            )
            .and_then(|mut st| st.execute(params![id, p.end_ms, bytes, frames, audio_frames, blob, state]))
            .with_ctx(|| format!("update_segment {id}"))?;
        if changed == 1 {
            return Ok(());
        }
        match self.segment(id)? {
            None => Err(DbError::NotFound { what: format!("segment {id} to update") }),
            Some(row) if row.closed && !p.closed => {
                Err(DbError::invalid(format!("segment {id} is closed; it cannot be reopened")))
            }
            Some(row) => Err(DbError::invalid(format!(
                "segment {id}: end_ms {} is before its start_ms {}",
                p.end_ms, row.start_ms
            ))),
        }
    }

    pub fn segment(&self, id: i64) -> Result<Option<SegmentRow>, DbError> {
        self.conn
            .prepare_cached(&format!("SELECT {SEGMENT_COLS} FROM segments WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], segment_from_row).optional())
            .with_ctx(|| format!("read segment {id}"))
    }

    pub fn segment_by_path(&self, path: &str) -> Result<Option<SegmentRow>, DbError> {
        self.conn
            .prepare_cached(&format!("SELECT {SEGMENT_COLS} FROM segments WHERE path = ?1"))
            .and_then(|mut st| st.query_row([path], segment_from_row).optional())
            .with_ctx(|| format!("read segment {path:?}"))
    }

    fn segments_where(
        &self,
        op: &'static str,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<SegmentRow>, DbError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {SEGMENT_COLS} FROM segments WHERE {cond} ORDER BY start_ms, id"))
            .ctx(op)?;
        let rows = st.query_map(p, segment_from_row).ctx(op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(op)
    }

    /// Segments of `stream_id` that overlap `[start_ms, end_ms)`, by start.
    /// A segment `[s, e)` overlaps if `s < end_ms` and `e > start_ms`; a
    /// zero-length one (just opened) overlaps if `start_ms <= s < end_ms`.
    /// An empty range gives nothing; a reversed one is [`DbError::Invalid`].
    pub fn segments_overlapping(&self, stream_id: i64, start_ms: i64, end_ms: i64) -> Result<Vec<SegmentRow>, DbError> {
        check_range(start_ms, end_ms, "segments_overlapping")?;
        if start_ms == end_ms {
            return Ok(Vec::new());
        }
        self.segments_where(
            "segments_overlapping",
            "stream_id = ?1 AND start_ms < ?3 AND (end_ms > ?2 OR start_ms >= ?2)",
            params![stream_id, start_ms, end_ms],
        )
    }

    /// Segments in state `open` (after a crash: the ones to recover), by start.
    pub fn open_segments(&self) -> Result<Vec<SegmentRow>, DbError> {
        self.segments_where("open_segments", "state = 'open'", [])
    }

    /// What start-up reconciliation checks of every segment of a stream: no
    /// fragment index (the largest column), so 30 days of a box's recordings
    /// stay a few MB to read.
    pub fn segment_checks(&self, stream_id: i64) -> Result<Vec<SegmentCheck>, DbError> {
        let op = "segment_checks";
        let mut st = self
            .conn
            .prepare_cached("SELECT id, path, state = 'closed', start_ms, bytes FROM segments WHERE stream_id = ?1")
            .ctx(op)?;
        let rows = st
            .query_map([stream_id], |r| {
                let bytes: i64 = r.get(4)?;
                Ok(SegmentCheck {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    closed: r.get(2)?,
                    start_ms: r.get(3)?,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                })
            })
            .ctx(op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(op)
    }

    /// The file paths of one stream's segments (start-up looks for orphans one
    /// stream at a time, so only one stream's paths are in memory).
    pub fn segment_paths(&self, stream_id: i64) -> Result<HashSet<String>, DbError> {
        let op = "segment_paths";
        let mut st = self.conn.prepare_cached("SELECT path FROM segments WHERE stream_id = ?1").ctx(op)?;
        let rows = st.query_map([stream_id], |r| r.get::<_, String>(0)).ctx(op)?;
        rows.collect::<rusqlite::Result<HashSet<_>>>().ctx(op)
    }

    /// Sets or clears the protection of a segment; `false` if there is no such segment.
    pub fn set_protected(&self, id: i64, protected: bool) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("UPDATE segments SET protected = ?2 WHERE id = ?1", params![id, protected])
            .with_ctx(|| format!("set_protected {id}"))?;
        Ok(n == 1)
    }

    /// Walks what the retention planner needs of every segment, oldest first
    /// (by `(start_ms, id)`, along the `segments_start` index: no sort, no
    /// list in memory), until `f` returns false.
    pub fn each_retention_item(&self, now_ms: i64, f: &mut dyn FnMut(&RetentionItem) -> bool) -> Result<(), DbError> {
        let op = "each_retention_item";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT s.id, s.stream_id, s.start_ms, s.end_ms, s.bytes, s.protected, s.state, s.time_unknown,
                     CASE WHEN st.retention_days IS NULL OR s.end_ms >= ?1 - st.retention_days * 86400000 THEN 0
                          WHEN s.\"trigger\" = 'event' THEN 1
                          ELSE EXISTS (SELECT 1 FROM events e
                                       WHERE e.stream = st.name
                                         AND e.start_ms < s.end_ms + st.pre_seconds * 1000
                                         AND e.start_ms >= s.start_ms - st.post_seconds * 1000 - ?2
                                         AND coalesce(e.end_ms, e.start_ms) + st.post_seconds * 1000 >= s.start_ms)
                     END,
                     st.replicate = 1 AND s.time_unknown = 0 AND s.bytes > 0
                       AND NOT EXISTS (SELECT 1 FROM replicate_queue q WHERE q.segment_id = s.id AND q.state = 'done')
                 FROM segments s JOIN streams st ON st.id = s.stream_id
                 ORDER BY s.start_ms, s.id",
            )
            .ctx(op)?;
        let mut rows = st.query(params![now_ms, MAX_EVENT_SPAN_MS]).ctx(op)?;
        while let Some(r) = rows.next().ctx(op)? {
            let item = RetentionItem {
                id: r.get(0).ctx(op)?,
                stream_id: r.get(1).ctx(op)?,
                start_ms: r.get(2).ctx(op)?,
                end_ms: r.get(3).ctx(op)?,
                bytes: get_num(r, 4, "bytes").ctx(op)?,
                protected: r.get(5).ctx(op)?,
                open: r.get::<_, String>(6).ctx(op)? != "closed",
                time_unknown: r.get(7).ctx(op)?,
                event: r.get(8).ctx(op)?,
                unreplicated: r.get(9).ctx(op)?,
            };
            if !f(&item) {
                break;
            }
        }
        Ok(())
    }

    /// Every retention item, oldest first (tests compare with the walk).
    #[cfg(test)]
    pub fn retention_items(&self) -> Result<Vec<RetentionItem>, DbError> {
        let mut out = Vec::new();
        self.each_retention_item(0, &mut |it| {
            out.push(*it);
            true
        })?;
        Ok(out)
    }

    /// Every segment's path (tests).
    #[cfg(test)]
    pub fn all_segment_paths(&self) -> Result<HashSet<String>, DbError> {
        let mut out = HashSet::new();
        for s in self.list_streams()? {
            out.extend(self.segment_paths(s.id)?);
        }
        Ok(out)
    }

    /// Invariant 3 of ARCHITECTURE.md: deletes the rows of `ids` and inserts
    /// their paths into `garbage`, in one transaction committed durably
    /// (`synchronous=FULL`). Unknown ids are skipped; protected segments are
    /// deleted too (see [`Db::delete_unprotected_segments_to_garbage`]).
    /// Returns the paths of the rows deleted: unlink them, fsync their
    /// directories, then call [`Db::garbage_done`].
    pub fn delete_segments_to_garbage(&self, ids: &[i64]) -> Result<Vec<String>, DbError> {
        self.delete_to_garbage("delete_segments_to_garbage", ids, true)
    }

    /// [`Db::delete_segments_to_garbage`] that leaves protected segments (and
    /// does not return their paths): what retention uses, so a segment
    /// protected after the plan was made survives.
    pub fn delete_unprotected_segments_to_garbage(&self, ids: &[i64]) -> Result<Vec<String>, DbError> {
        self.delete_to_garbage("delete_unprotected_segments_to_garbage", ids, false)
    }

    fn delete_to_garbage(&self, op: &'static str, ids: &[i64], protected_too: bool) -> Result<Vec<String>, DbError> {
        self.write_durably(op, |tx| {
            let mut find =
                tx.prepare_cached("SELECT path FROM segments WHERE id = ?1 AND (?2 OR protected = 0)").ctx(op)?;
            let mut to_garbage = tx.prepare_cached("INSERT OR IGNORE INTO garbage (path) VALUES (?1)").ctx(op)?;
            let mut delete = tx.prepare_cached("DELETE FROM segments WHERE id = ?1").ctx(op)?;
            let mut paths = Vec::with_capacity(ids.len());
            for &id in ids {
                let Some(path) = find
                    .query_row(params![id, protected_too], |r| r.get::<_, String>(0))
                    .optional()
                    .with_ctx(|| format!("{op}: find segment {id}"))?
                else {
                    continue;
                };
                to_garbage.execute([&path]).with_ctx(|| format!("{op}: garbage {path:?}"))?;
                delete.execute([id]).with_ctx(|| format!("{op}: delete segment {id}"))?;
                paths.push(path);
            }
            Ok(paths)
        })
    }

    /// Paths whose rows are gone but whose files may still exist.
    pub fn garbage(&self) -> Result<Vec<String>, DbError> {
        let mut st = self.conn.prepare_cached("SELECT path FROM garbage ORDER BY path").ctx("garbage")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).ctx("garbage")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("garbage")
    }

    /// The file of `path` is unlinked and its directory synced.
    pub fn garbage_done(&self, path: &str) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM garbage WHERE path = ?1", [path])
            .with_ctx(|| format!("garbage_done {path:?}"))?;
        Ok(())
    }

    /// [`Db::garbage_done`] for many paths, in one transaction.
    pub fn garbage_done_all(&self, paths: &[String]) -> Result<(), DbError> {
        self.write("garbage_done_all", |tx| {
            let mut st = tx.prepare_cached("DELETE FROM garbage WHERE path = ?1").ctx("garbage_done_all")?;
            for p in paths {
                st.execute([p]).with_ctx(|| format!("garbage_done {p:?}"))?;
            }
            Ok(())
        })
    }

    // ---- gaps ----

    pub fn insert_gap(&self, stream_id: i64, start_ms: i64, end_ms: i64, reason: &str) -> Result<(), DbError> {
        self.insert_gap_of(stream_id, start_ms, end_ms, reason, false)
    }

    /// [`Db::insert_gap`], on the provisional timeline if `time_unknown`.
    pub fn insert_gap_of(
        &self,
        stream_id: i64,
        start_ms: i64,
        end_ms: i64,
        reason: &str,
        time_unknown: bool,
    ) -> Result<(), DbError> {
        check_range(start_ms, end_ms, "insert_gap")?;
        self.conn
            .prepare_cached(
                "INSERT INTO gaps (stream_id, start_ms, end_ms, reason, time_unknown, clock_mark)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    stream_id,
                    start_ms,
                    end_ms,
                    reason,
                    time_unknown,
                    if time_unknown { self.clock_mark } else { 0 }
                ])
            })
            .with_ctx(|| format!("insert_gap {start_ms}..{end_ms} of stream {stream_id}"))?;
        Ok(())
    }

    /// Gaps of `stream_id` overlapping `[start_ms, end_ms)`, by start; same
    /// rules as [`Db::segments_overlapping`].
    pub fn gaps_overlapping(&self, stream_id: i64, start_ms: i64, end_ms: i64) -> Result<Vec<GapRow>, DbError> {
        let op = "gaps_overlapping";
        check_range(start_ms, end_ms, op)?;
        if start_ms == end_ms {
            return Ok(Vec::new());
        }
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT stream_id, start_ms, end_ms, reason, time_unknown FROM gaps
                 WHERE stream_id = ?1 AND start_ms < ?3 AND (end_ms > ?2 OR start_ms >= ?2)
                 ORDER BY start_ms, id",
            )
            .ctx(op)?;
        let rows = st.query_map(params![stream_id, start_ms, end_ms], gap_from_row).ctx(op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(op)
    }

    /// Makes the rows of unknown time this connection writes from now on its
    /// own, for [`Db::restamp`] (the storage thread, once per start).
    pub fn mark_rows_of_unknown_time(&mut self) {
        self.clock_mark = new_clock_mark();
    }

    /// Moves the `time_unknown` segments and gaps this connection wrote since
    /// [`Db::mark_rows_of_unknown_time`] by `step_ms` and clears their flag, in
    /// one transaction; rows of earlier processes stay as they are (their time
    /// is never known, so they are not replicated). The closed segments moved
    /// are queued for replication. Returns how many segments and gaps moved.
    pub fn restamp(&self, step_ms: i64, now_ms: i64) -> Result<(usize, usize), DbError> {
        let mark = self.clock_mark;
        if mark == 0 {
            return Ok((0, 0));
        }
        self.write("restamp", |tx| {
            // The replication scan only looks forward from the oldest open
            // segment: closed ones that now get a time are queued here.
            tx.execute(
                "INSERT OR IGNORE INTO replicate_queue (segment_id, queued_ms)
                 SELECT s.id, ?2 FROM segments s JOIN streams st ON st.id = s.stream_id
                 WHERE s.time_unknown = 1 AND s.clock_mark = ?1 AND s.state = 'closed' AND s.bytes > 0
                   AND st.replicate = 1",
                params![mark, now_ms],
            )
            .ctx("restamp: queue for replication")?;
            let mut moved = [0; 2];
            for (n, table) in ["segments", "gaps"].into_iter().enumerate() {
                let sql = format!(
                    "UPDATE {table} SET start_ms = start_ms + ?2, end_ms = end_ms + ?2, time_unknown = 0, clock_mark = 0
                     WHERE time_unknown = 1 AND clock_mark = ?1"
                );
                moved[n] = tx.execute(&sql, params![mark, step_ms]).with_ctx(|| format!("restamp {table}"))?;
            }
            Ok((moved[0], moved[1]))
        })
    }

    /// Records a step of the wall clock and moves the login sessions made
    /// before it by the same step, so that each keeps the time it had left
    /// (a box whose clock NTP set from 1970 does not log everyone out; one set
    /// back an hour does not give sessions an hour more). One transaction.
    pub fn record_clock_step(&self, step: ClockStep) -> Result<usize, DbError> {
        if step.step_ms == 0 {
            return Err(DbError::invalid("a clock step of 0 ms"));
        }
        self.write("record_clock_step", |tx| {
            tx.execute("INSERT INTO clock_steps (at_ms, step_ms) VALUES (?1, ?2)", params![step.at_ms, step.step_ms])
                .ctx("insert clock step")?;
            tx.execute(
                "UPDATE sessions SET created_ms = created_ms + ?2, last_seen_ms = last_seen_ms + ?2,
                        expires_ms = expires_ms + ?2
                 WHERE created_ms <= ?1",
                params![step.at_ms - step.step_ms, step.step_ms],
            )
            .ctx("move sessions by the clock step")
        })
    }

    /// The clock steps made at `from_ms..=to_ms` (either timeline), oldest first.
    pub fn clock_steps(&self, from_ms: i64, to_ms: i64) -> Result<Vec<ClockStep>, DbError> {
        let op = "clock_steps";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT at_ms, step_ms FROM clock_steps
                 WHERE at_ms BETWEEN ?1 AND ?2 OR at_ms - step_ms BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .ctx(op)?;
        let rows = st.query_map(params![from_ms, to_ms], |r| Ok(ClockStep { at_ms: r.get(0)?, step_ms: r.get(1)? }));
        // Bound to a name so the statement outlives the rows borrowing it.
        #[allow(clippy::let_and_return)]
        let steps = rows.ctx(op)?.collect::<Result<Vec<_>, _>>().ctx(op);
        steps
    }

    /// Every forward step, oldest first (age retention discounts them).
    pub fn forward_clock_steps(&self) -> Result<Vec<ClockStep>, DbError> {
        let op = "forward_clock_steps";
        let mut st =
            self.conn.prepare_cached("SELECT at_ms, step_ms FROM clock_steps WHERE step_ms > 0 ORDER BY id").ctx(op)?;
        let rows = st.query_map([], |r| Ok(ClockStep { at_ms: r.get(0)?, step_ms: r.get(1)? }));
        // Bound to a name so the statement outlives the rows borrowing it.
        #[allow(clippy::let_and_return)]
        let steps = rows.ctx(op)?.collect::<Result<Vec<_>, _>>().ctx(op);
        steps
    }

    /// Deletes gaps that ended before `before_ms` (older than any recording
    /// kept); returns how many.
    pub fn delete_gaps_before(&self, before_ms: i64) -> Result<usize, DbError> {
        self.conn
            .execute("DELETE FROM gaps WHERE end_ms < ?1", [before_ms])
            .with_ctx(|| format!("delete_gaps_before {before_ms}"))
    }

    // ---- stats ----

    /// `(stream id, bytes, segments)` for every stream (zeros if it has none), by id.
    pub fn stream_usage(&self) -> Result<Vec<(i64, u64, u64)>, DbError> {
        let op = "stream_usage";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT s.id, COALESCE(SUM(g.bytes), 0), COUNT(g.id)
                 FROM streams s LEFT JOIN segments g ON g.stream_id = s.id
                 GROUP BY s.id ORDER BY s.id",
            )
            .ctx(op)?;
        let rows =
            st.query_map([], |r| Ok((r.get(0)?, get_num(r, 1, "sum(bytes)")?, get_num(r, 2, "count(*)")?))).ctx(op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> StreamSpec {
        StreamSpec {
            retention_days: Some(7),
            max_storage_mb: Some(1000),
            priority: 1,
            bitrate_kbps: Some(4000),
            source: "config".to_owned(),
            ..StreamSpec::new(name, &format!("rtsp://cam/{name}"))
        }
    }

    fn new_seg(stream_id: i64, start_ms: i64) -> NewSegment {
        NewSegment {
            stream_id,
            path: format!("recordings/s{stream_id}/1970-01-01/{start_ms}.mp4"),
            start_ms,
            codec: "avc1.64001f".to_owned(),
            width: 1920,
            height: 1080,
            video_timescale: 90_000,
            init_len: 700,
            has_audio: true,
            trigger: "continuous".to_owned(),
            time_unknown: false,
        }
    }

    fn progress(end_ms: i64, bytes: u64, closed: bool) -> SegmentProgress {
        SegmentProgress { end_ms, bytes, frames: 10, audio_frames: 5, fragments: Vec::new(), closed }
    }

    /// A segment `[start, end)`, closed.
    fn closed_seg(db: &Db, stream_id: i64, start: i64, end: i64, bytes: u64) -> i64 {
        let id = db.insert_segment(&new_seg(stream_id, start)).expect("insert");
        db.update_segment(id, &progress(end, bytes, true)).expect("close");
        id
    }

    /// A raw connection holding only the first `k` migrations.
    fn raw_at(path: &Path, k: usize) -> Connection {
        let mut conn = Connection::open(path).expect("open raw");
        migrate(&mut conn, "test", &MIGRATIONS[..k]).expect("partial migration");
        conn
    }

    fn sample_fragments() -> Vec<FragmentEntry> {
        vec![
            FragmentEntry { offset: 700, size: 50_000, start_ticks: 0, duration_ticks: 180_000, frames: 60, key: true },
            FragmentEntry {
                offset: 50_700,
                size: 48_000,
                start_ticks: 180_000,
                duration_ticks: 177_000,
                frames: 59,
                key: true,
            },
        ]
    }

    /// Data valid for schema version `k` (1..MIGRATIONS.len()).
    fn seed(conn: &Connection, k: usize) {
        conn.execute_batch(
            "INSERT INTO streams (id, name, url, enabled, record, retention_days, max_storage_mb, priority,
                                  created_ms, updated_ms, source)
             VALUES (1, 'front', 'rtsp://cam/front', 1, 'continuous', 7, 500, 2, 100, 200, 'config'),
                    (2, 'back', 'rtsp://cam/back', 0, 'off', NULL, NULL, 0, 101, 201, 'api');
             INSERT INTO segments (id, stream_id, path, state, start_ms, end_ms, bytes, frames, audio_frames,
                                   codec, width, height, video_timescale, init_len, has_audio)
             VALUES (10, 1, 'recordings/front/1970-01-01/1000.mp4', 'closed', 1000, 61000, 123456, 1800, 2800,
                     'avc1.64001f', 1920, 1080, 90000, 700, 1),
                    (11, 1, 'recordings/front/1970-01-01/61000.mp4', 'open', 61000, 65000, 4000, 120, 0,
                     'hvc1.1.6.L93.B0', 2560, 1440, 90000, 800, 0);
             INSERT INTO garbage (path) VALUES ('recordings/front/1970-01-01/0.mp4');",
        )
        .expect("seed v1");
        if k >= 2 {
            conn.execute(
                "UPDATE segments SET fragments = ?1 WHERE id = 10",
                [FragmentEntry::encode_all(&sample_fragments())],
            )
            .expect("seed v2 fragments");
            conn.execute_batch(
                "INSERT INTO gaps (stream_id, start_ms, end_ms, reason)
                 VALUES (1, 65000, 70000, 'lost')",
            )
            .expect("seed v2 gaps");
        }
        if k >= 3 {
            conn.execute_batch(
                "UPDATE segments SET protected = 1, \"trigger\" = 'motion' WHERE id = 10;
                 UPDATE streams SET bitrate_kbps = 4000 WHERE id = 1;",
            )
            .expect("seed v3");
        }
        if k >= 9 {
            // From 9 `record_mode` is the truth (the seed above wrote `record` only).
            conn.execute_batch("UPDATE streams SET record_mode = record").expect("seed v9");
        }
    }

    #[test]
    fn fresh_database_is_fully_migrated_in_wal_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oxinvr.db");
        let db = Db::open(&path).expect("open");
        assert_eq!(db.schema_version().expect("version") as usize, MIGRATIONS.len());
        let mode: String = db.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("journal_mode");
        assert_eq!(mode, "wal");
        let fk: i64 = db.conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).expect("foreign_keys");
        assert_eq!(fk, 1);
        let sync: i64 = db.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("synchronous");
        assert_eq!(sync, 1, "NORMAL");
        drop(db);
        // Reopening is a no-op; a second connection works alongside.
        let a = Db::open(&path).expect("reopen");
        let b = Db::open(&path).expect("second connection");
        a.upsert_stream(&spec("cam"), 1).expect("write on a");
        assert_eq!(b.list_streams().expect("read on b").len(), 1);

        let mem = Db::open_in_memory().expect("in memory");
        assert_eq!(mem.schema_version().expect("version") as usize, MIGRATIONS.len());
    }

    #[test]
    fn migrates_from_every_earlier_schema_keeping_data() {
        assert!(MIGRATIONS.len() >= 2);
        for k in 1..MIGRATIONS.len() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("oxinvr.db");
            {
                let conn = raw_at(&path, k);
                seed(&conn, k);
                assert_eq!(user_version(&conn).expect("v") as usize, k);
            }
            let db = Db::open(&path).unwrap_or_else(|e| panic!("open from v{k}: {e}"));
            assert_eq!(db.schema_version().expect("v") as usize, MIGRATIONS.len(), "from v{k}");

            let streams = db.list_streams().expect("streams");
            assert_eq!(streams.len(), 2);
            let front = db.stream_by_name("front").expect("q").expect("front survived");
            assert_eq!(front.id, 1);
            assert_eq!(front.spec.url, "rtsp://cam/front");
            assert_eq!(front.spec.retention_days, Some(7));
            assert_eq!(front.spec.max_storage_mb, Some(500));
            assert_eq!(front.spec.priority, 2);
            assert_eq!(front.spec.bitrate_kbps, if k >= 3 { Some(4000) } else { None });
            assert_eq!((front.created_ms, front.updated_ms), (100, 200));
            let back = db.stream_by_name("back").expect("q").expect("back survived");
            assert!(!back.spec.enabled);
            assert_eq!(back.spec.record, RecordMode::Off);
            assert_eq!(back.spec.retention_days, None);
            assert_eq!(back.spec.source, "api");

            let s = db.segment(10).expect("q").expect("segment 10 survived");
            assert!(s.closed);
            assert_eq!((s.start_ms, s.end_ms, s.bytes, s.frames, s.audio_frames), (1000, 61000, 123456, 1800, 2800));
            assert_eq!((s.codec.as_str(), s.width, s.height), ("avc1.64001f", 1920, 1080));
            assert_eq!((s.video_timescale, s.init_len, s.has_audio), (90000, 700, true));
            assert_eq!(s.fragments, if k >= 2 { sample_fragments() } else { Vec::new() });
            assert_eq!(s.protected, k >= 3);
            assert_eq!(s.trigger, if k >= 3 { "motion" } else { "continuous" });
            let open = db.open_segments().expect("open");
            assert_eq!(open.iter().map(|s| s.id).collect::<Vec<_>>(), vec![11]);
            assert_eq!(db.garbage().expect("garbage"), vec!["recordings/front/1970-01-01/0.mp4".to_owned()]);
            let gaps = db.gaps_overlapping(1, 0, i64::MAX).expect("gaps");
            assert_eq!(gaps.len(), usize::from(k >= 2));

            // The migrated schema accepts new writes.
            let id = closed_seg(&db, 2, 70_000, 80_000, 9);
            assert!(db.set_protected(id, true).expect("protect"));
            let ev = NewEvent {
                stream: "front".into(),
                kind: EventKind::Manual,
                label: "migrated".into(),
                score: 1.0,
                zones: Vec::new(),
                start_ms: 70_000,
                end_ms: None,
                best_box: None,
            };
            let ev = db.insert_event(&ev).expect("events table after migration");
            assert_eq!(db.event(ev).expect("q").map(|e| e.label), Some("migrated".into()));
        }
    }

    #[test]
    fn partial_migration_refuses_too_new_for_its_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oxinvr.db");
        drop(Db::open(&path).expect("open"));
        let mut conn = Connection::open(&path).expect("raw");
        let err = migrate(&mut conn, "x", &MIGRATIONS[..1]).expect_err("too new for 1 migration");
        let DbError::TooNew { found, known, .. } = err else {
            panic!("expected TooNew, got {err:?}");
        };
        assert_eq!((found as usize, known), (MIGRATIONS.len(), 1));
    }

    #[test]
    fn too_new_database_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oxinvr.db");
        let newer = MIGRATIONS.len() as i64 + 1;
        {
            let conn = Connection::open(&path).expect("raw");
            conn.execute_batch("CREATE TABLE future (x INTEGER)").expect("table");
            conn.pragma_update(None, "user_version", newer).expect("version");
        }
        let err = Db::open(&path).expect_err("must refuse");
        match &err {
            DbError::TooNew { found, known, path: p } => {
                assert_eq!(i64::from(*found), newer);
                assert_eq!(*known as usize, MIGRATIONS.len());
                assert!(p.contains("oxinvr.db"));
            }
            other => panic!("wrong error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("schema version {newer}")) && msg.contains("refusing"), "{msg}");
        let conn = Connection::open(&path).expect("raw");
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("v");
        assert_eq!(v, newer);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("mode");
        assert_eq!(mode, "delete", "journal mode untouched");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))
            .expect("tables");
        assert_eq!(tables, 1, "no migration ran");
    }

    #[test]
    fn non_database_file_error_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notadb.db");
        std::fs::write(&path, vec![0x5a_u8; 4096]).expect("write");
        let err = Db::open(&path).expect_err("not a database");
        assert!(err.to_string().contains("notadb.db"), "{err}");
    }

    #[test]
    fn stream_upsert_list_delete() {
        let db = Db::open_in_memory().expect("db");
        let a = db.upsert_stream(&spec("b-cam"), 1000).expect("insert");
        assert_eq!((a.created_ms, a.updated_ms), (1000, 1000));
        assert_eq!(a.spec, spec("b-cam"));
        // Unchanged upsert: same row, updated_ms kept.
        let same = db.upsert_stream(&spec("b-cam"), 2000).expect("same");
        assert_eq!(same, a);
        // Changed upsert: created kept, updated moves, id kept.
        let mut changed = spec("b-cam");
        changed.url = "rtsp://other".to_owned();
        changed.retention_days = None;
        changed.record = RecordMode::Off;
        changed.source = "api".to_owned();
        let c = db.upsert_stream(&changed, 3000).expect("update");
        assert_eq!((c.id, c.created_ms, c.updated_ms), (a.id, 1000, 3000));
        assert_eq!(c.spec, changed);
        db.upsert_stream(&spec("a-cam"), 4000).expect("second");
        let names: Vec<String> = db.list_streams().expect("list").into_iter().map(|s| s.spec.name).collect();
        assert_eq!(names, vec!["a-cam", "b-cam"]);
        assert_eq!(db.stream_by_id(a.id).expect("q").map(|s| s.spec.name), Some("b-cam".to_owned()));
        assert!(db.stream_by_name("nope").expect("q").is_none());

        // Bad input is refused with a message naming the field.
        let mut bad = spec("x");
        bad.source = "web".to_owned();
        assert!(db.upsert_stream(&bad, 0).expect_err("source").to_string().contains("source"));
        for name in ["", "../etc", ".hidden", "a/b", "caméra", &"x".repeat(65)] {
            assert!(matches!(db.upsert_stream(&spec(name), 0), Err(DbError::Invalid { .. })), "{name:?}");
        }
        let mut big = spec("big");
        big.max_storage_mb = Some(u64::MAX);
        assert!(db.upsert_stream(&big, 0).expect_err("range").to_string().contains("max_storage_mb"));

        // Delete: refused while segments exist; gaps go with the stream.
        let seg = closed_seg(&db, a.id, 0, 10, 1);
        db.insert_gap(a.id, 10, 20, "lost").expect("gap");
        match db.delete_stream("b-cam") {
            Err(DbError::InUse { stream, segments: 1 }) => assert_eq!(stream, "b-cam"),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert_eq!(db.delete_segments_to_garbage(&[seg]).expect("delete"), vec![new_seg(a.id, 0).path]);
        assert!(db.delete_stream("b-cam").expect("delete"));
        assert!(!db.delete_stream("b-cam").expect("again"));
        assert!(db.stream_by_name("b-cam").expect("q").is_none());
        let gaps: i64 = db.conn.query_row("SELECT count(*) FROM gaps", [], |r| r.get(0)).expect("count");
        assert_eq!(gaps, 0);
    }

    #[test]
    fn purge_stream_moves_all_segments_to_garbage() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let other = db.upsert_stream(&spec("other"), 0).expect("stream");
        let a = closed_seg(&db, s.id, 0, 10, 1);
        let b = closed_seg(&db, s.id, 10, 20, 1);
        let keep = closed_seg(&db, other.id, 0, 10, 1);
        db.set_protected(b, true).expect("protect");
        let paths = db.purge_stream("cam").expect("purge").expect("existed");
        assert_eq!(paths, vec![new_seg(s.id, 0).path, new_seg(s.id, 10).path]);
        assert!(db.segment(a).expect("q").is_none() && db.segment(b).expect("q").is_none());
        assert!(db.segment(keep).expect("q").is_some());
        assert_eq!(db.garbage().expect("g").len(), 2);
        assert!(db.stream_by_name("cam").expect("q").is_none());
        assert_eq!(db.purge_stream("cam").expect("purge"), None);
    }

    #[test]
    fn stream_spec_json() {
        let s: StreamSpec = serde_json::from_str(r#"{"name":"door","url":"rtsp://x"}"#).expect("minimal");
        assert!(s.enabled);
        assert_eq!((s.record, s.priority, s.source.as_str()), (RecordMode::Continuous, 0, "api"));
        let s: StreamSpec =
            serde_json::from_str(r#"{"name":"door","url":"rtsp://x","record":"off","retention_days":3}"#).expect("off");
        assert_eq!((s.record, s.retention_days), (RecordMode::Off, Some(3)));
        assert!(serde_json::from_str::<StreamSpec>(r#"{"name":"d","url":"u","record":"motion"}"#).is_err());
        assert!(serde_json::from_str::<StreamSpec>(r#"{"name":"d","url":"u","retention":3}"#).is_err());
        let row = StreamRow { id: 3, spec: s, created_ms: 1, updated_ms: 2 };
        let v = serde_json::to_value(&row).expect("json");
        assert_eq!(v["id"], 3);
        assert_eq!(v["name"], "door");
        assert_eq!(v["record"], "off");
    }

    #[test]
    fn segment_insert_update_and_fragments_round_trip() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let id = db.insert_segment(&new_seg(s.id, 5000)).expect("insert");
        let row = db.segment(id).expect("q").expect("row");
        assert!(!row.closed && !row.protected);
        assert_eq!((row.start_ms, row.end_ms, row.bytes, row.frames), (5000, 5000, row.init_len, 0));
        assert!(row.init_len > 0, "the synced init counts as bytes");
        assert!(row.fragments.is_empty());
        assert_eq!(row.trigger, "continuous");
        assert_eq!(db.open_segments().expect("open").len(), 1);

        let mut p = progress(7000, 98_700, false);
        p.fragments = sample_fragments();
        db.update_segment(id, &p).expect("progress");
        let row = db.segment(id).expect("q").expect("row");
        assert_eq!(row.fragments, sample_fragments());
        assert_eq!((row.end_ms, row.bytes, row.frames, row.audio_frames, row.closed), (7000, 98_700, 10, 5, false));

        // A large index survives too.
        let many: Vec<FragmentEntry> = (0..3600_u32)
            .map(|i| FragmentEntry {
                offset: u64::from(i) * 1_000_000 + 700,
                size: 999_999,
                start_ticks: u64::from(i) * 90_000,
                duration_ticks: 90_000,
                frames: 30,
                key: i % 7 != 3,
            })
            .collect();
        p.fragments = many.clone();
        p.closed = true;
        db.update_segment(id, &p).expect("close");
        let row = db.segment_by_path(&new_seg(s.id, 5000).path).expect("q").expect("row");
        assert!(row.closed);
        assert_eq!(row.fragments, many);
        assert!(db.open_segments().expect("open").is_empty());
        let json = serde_json::to_value(&row).expect("json");
        assert!(json.get("fragments").is_none());
        assert_eq!(json["closed"], true);

        // Closed is final (a closed row may be repaired as closed); unknown
        // ids, bad ranges and bad paths are named.
        let mut repaired = p.clone();
        repaired.bytes = 50;
        repaired.fragments.truncate(1);
        db.update_segment(id, &repaired).expect("repair a closed row");
        let row = db.segment(id).expect("q").expect("row");
        assert_eq!((row.closed, row.bytes, row.fragments.len()), (true, 50, 1));
        let mut reopen = p.clone();
        reopen.closed = false;
        let err = db.update_segment(id, &reopen).expect_err("reopen");
        assert!(err.to_string().contains("cannot be reopened"), "{err}");
        assert!(db.segment(id).expect("q").expect("row").closed);
        assert!(matches!(db.update_segment(999, &p), Err(DbError::NotFound { .. })));
        let id2 = db.insert_segment(&new_seg(s.id, 9000)).expect("insert");
        let err = db.update_segment(id2, &progress(8999, 1, false)).expect_err("end before start");
        assert!(err.to_string().contains("before its start"), "{err}");
        let err = db.update_segment(id2, &progress(9001, u64::MAX, false)).expect_err("bytes range");
        assert!(err.to_string().contains("bytes"), "{err}");
        assert!(db.insert_segment(&new_seg(s.id, 9000)).is_err(), "duplicate path");
        let err = db.insert_segment(&new_seg(999, 1)).expect_err("unknown stream");
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        for bad in ["", "/abs.mp4", "../x.mp4", "a/../b.mp4", "a/./b.mp4", "a\\b.mp4"] {
            let mut n = new_seg(s.id, 1);
            n.path = bad.to_owned();
            assert!(matches!(db.insert_segment(&n), Err(DbError::Invalid { .. })), "{bad:?}");
        }

        // A corrupt blob is reported, not panicked on.
        db.conn.execute("UPDATE segments SET fragments = x'0102' WHERE id = ?1", [id]).expect("corrupt");
        let err = db.segment(id).expect_err("corrupt blob");
        assert!(err.to_string().contains("fragment index"), "{err}");
    }

    #[test]
    fn overlap_query_boundaries() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let o = db.upsert_stream(&spec("other"), 0).expect("stream");
        let a = closed_seg(&db, s.id, 1000, 2000, 1);
        let b = closed_seg(&db, s.id, 2000, 3000, 1);
        closed_seg(&db, o.id, 1000, 3000, 1);
        let z = db.insert_segment(&new_seg(s.id, 5000)).expect("zero length open");
        let ids = |from: i64, to: i64| -> Vec<i64> {
            db.segments_overlapping(s.id, from, to).expect("query").into_iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(0, 1000), Vec::<i64>::new(), "ends where a starts");
        assert_eq!(ids(0, 1001), vec![a]);
        assert_eq!(ids(1999, 2000), vec![a]);
        assert_eq!(ids(2000, 2001), vec![b], "a ends at 2000, exclusive");
        assert_eq!(ids(1999, 2001), vec![a, b]);
        assert_eq!(ids(0, 10_000), vec![a, b, z], "ordered by start");
        assert_eq!(ids(3000, 5000), Vec::<i64>::new());
        assert_eq!(ids(5000, 5001), vec![z]);
        assert_eq!(ids(4000, 5000), Vec::<i64>::new());
        assert_eq!(ids(1500, 1500), Vec::<i64>::new(), "empty range");
        assert!(matches!(db.segments_overlapping(s.id, 10, 5), Err(DbError::Invalid { .. })));

        db.insert_gap(s.id, 3000, 5000, "camera offline").expect("gap");
        db.insert_gap(s.id, 6000, 6000, "timestamp jump").expect("point gap");
        db.insert_gap(o.id, 0, 10_000, "other").expect("gap");
        let gaps = |from: i64, to: i64| -> Vec<(i64, i64)> {
            db.gaps_overlapping(s.id, from, to).expect("gaps").into_iter().map(|g| (g.start_ms, g.end_ms)).collect()
        };
        assert_eq!(gaps(0, 3000), vec![]);
        assert_eq!(gaps(0, 3001), vec![(3000, 5000)]);
        assert_eq!(gaps(5000, 6000), vec![]);
        assert_eq!(gaps(4999, 6001), vec![(3000, 5000), (6000, 6000)]);
        let g = &db.gaps_overlapping(s.id, 3000, 3001).expect("g")[0];
        assert_eq!((g.stream_id, g.reason.as_str()), (s.id, "camera offline"));
        assert!(db.insert_gap(s.id, 5, 4, "x").is_err());
        assert!(db.insert_gap(999, 4, 5, "x").is_err(), "unknown stream");
        assert_eq!(gaps(0, 0), vec![], "empty range");
        assert_eq!(db.delete_gaps_before(5001).expect("prune"), 1, "only cam's 3000..5000 ended before 5001");
        assert_eq!(gaps(0, 10_000), vec![(6000, 6000)]);
    }

    #[test]
    fn delete_to_garbage_is_atomic_and_retention_variant_skips_protected() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let a = closed_seg(&db, s.id, 0, 10, 1);
        let b = closed_seg(&db, s.id, 10, 20, 2);
        let p = closed_seg(&db, s.id, 20, 30, 4);
        db.set_protected(p, true).expect("protect");
        assert!(!db.set_protected(999, true).expect("unknown"));

        // Make deleting b fail inside the transaction: nothing at all may change.
        db.conn
            .execute_batch(&format!(
                "CREATE TEMP TRIGGER refuse BEFORE DELETE ON segments WHEN old.id = {b}
                 BEGIN SELECT RAISE(ABORT, 'test refuses'); END;"
            ))
            .expect("trigger");
        let err = db.delete_segments_to_garbage(&[a, b]).expect_err("must fail");
        assert!(err.to_string().contains("delete segment"), "{err}");
        assert!(db.segment(a).expect("q").is_some(), "a rolled back");
        assert!(db.garbage().expect("g").is_empty(), "garbage rolled back");
        let sync: i64 = db.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("sync");
        assert_eq!(sync, 1, "back to NORMAL after a failure");

        db.conn.execute_batch("DROP TRIGGER refuse").expect("drop");
        let paths = db.delete_unprotected_segments_to_garbage(&[a, b, p, 999, a]).expect("delete");
        assert_eq!(paths, vec![new_seg(s.id, 0).path, new_seg(s.id, 10).path]);
        assert!(db.segment(a).expect("q").is_none() && db.segment(b).expect("q").is_none());
        assert!(db.segment(p).expect("q").is_some(), "protected kept");
        let mut g = db.garbage().expect("g");
        g.sort();
        assert_eq!(g, paths);
        assert_eq!(db.all_segment_paths().expect("paths"), HashSet::from([new_seg(s.id, 20).path]));
        let sync: i64 = db.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("sync");
        assert_eq!(sync, 1, "back to NORMAL");

        db.garbage_done(&paths[0]).expect("done");
        db.garbage_done("never there").expect("done is idempotent");
        assert_eq!(db.garbage().expect("g"), vec![paths[1].clone()]);
        db.garbage_done_all(&paths).expect("all");
        assert!(db.garbage().expect("g").is_empty());

        // The plain variant deletes protected segments too.
        let gone = db.delete_segments_to_garbage(&[p]).expect("delete protected");
        assert_eq!(gone, vec![new_seg(s.id, 20).path]);
        assert!(db.segment(p).expect("q").is_none());
        assert_eq!(db.garbage().expect("g"), gone);
    }

    #[test]
    fn a_clock_step_is_recorded_and_sessions_made_before_it_keep_their_time_left() {
        const YEARS: i64 = 56 * 365 * 86_400_000;
        let db = Db::open_in_memory().expect("db");
        let u = db.create_user("ann", Role::Admin, "hash", 0).expect("user");
        // Logged in at 1970 + 1 min for an hour; a session of an earlier boot (with
        // a set clock) is "in the future" of that 1970 clock.
        db.create_session(u.id, b"t1970", "c", 60_000, 60_000 + 3_600_000, "a", "ua").expect("session");
        db.create_session(u.id, b"tearlier", "c", YEARS - 86_400_000, YEARS + 3_600_000, "a", "ua").expect("s");
        // NTP sets the clock at 1970 + 2 min: it jumps 56 years.
        let step = ClockStep { at_ms: YEARS + 120_000, step_ms: YEARS };
        assert_eq!(db.record_clock_step(step).expect("step"), 1, "only the session made before the step moves");
        let (s, _) = db.session_by_token(b"t1970", YEARS + 180_000).expect("read").expect("still alive a minute on");
        assert_eq!((s.created_ms, s.expires_ms), (YEARS + 60_000, YEARS + 60_000 + 3_600_000));
        let (s, _) = db.session_by_token(b"tearlier", YEARS + 180_000).expect("read").expect("alive");
        assert_eq!(s.expires_ms, YEARS + 3_600_000, "the earlier boot's session is not moved");
        // Then someone sets the clock back an hour.
        let back = ClockStep { at_ms: YEARS + 240_000 - 3_600_000, step_ms: -3_600_000 };
        db.record_clock_step(back).expect("step back");
        let (s, _) = db.session_by_token(b"t1970", YEARS + 240_000 - 3_600_000).expect("read").expect("alive");
        assert_eq!(s.expires_ms, YEARS + 60_000, "an hour earlier, as the clock");
        assert_eq!(db.clock_steps(YEARS, YEARS + 300_000).expect("steps"), vec![step, back]);
        assert_eq!(db.clock_steps(0, 1000).expect("steps"), vec![], "neither side in the span");
        assert_eq!(db.forward_clock_steps().expect("steps"), vec![step]);
        assert!(db.record_clock_step(ClockStep { at_ms: 1, step_ms: 0 }).is_err());
    }

    #[test]
    fn restamp_moves_only_this_process_rows_of_unknown_time() {
        let mut db = Db::open_in_memory().expect("db");
        db.mark_rows_of_unknown_time();
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        // An earlier process's row of unknown time, and one of known time.
        let old = db.insert_segment(&NewSegment { time_unknown: true, ..new_seg(s.id, 1_000) }).expect("old");
        db.insert_gap_of(s.id, 500, 1_000, "old", true).expect("old gap");
        db.mark_rows_of_unknown_time(); // this process starts
        let known = closed_seg(&db, s.id, 5_000_000, 5_000_010, 10);
        // The newest row is deleted before this process writes: SQLite gives its id
        // again, which must not make the new row look like an earlier one.
        let newest = db.insert_segment(&new_seg(s.id, 6_000_000)).expect("newest");
        db.delete_segments_to_garbage(&[newest]).expect("delete");
        let new = db.insert_segment(&NewSegment { time_unknown: true, ..new_seg(s.id, 2_000) }).expect("new");
        assert_eq!(new, newest, "the id is reused");
        db.update_segment(new, &progress(3_000, 800, true)).expect("close");
        db.insert_gap_of(s.id, 1_500, 2_000, "new", true).expect("new gap");
        assert_eq!(db.restamp(1_000_000, 1_005_000).expect("restamp"), (1, 1));
        let queued = db.replicate_next(i64::MAX, &[]).expect("queue").map(|j| j.segment.id);
        assert_eq!(queued, Some(new), "the closed segment that got a time waits for upload");
        let row = |id| db.segment(id).expect("read").expect("row");
        assert_eq!((row(new).start_ms, row(new).end_ms, row(new).time_unknown), (1_002_000, 1_003_000, false));
        assert_eq!((row(old).start_ms, row(old).time_unknown), (1_000, true), "an earlier process's stays unknown");
        assert_eq!((row(known).start_ms, row(known).time_unknown), (5_000_000, false));
        let gaps = db.gaps_overlapping(s.id, 0, i64::MAX).expect("gaps");
        let spans: Vec<_> = gaps.iter().map(|g| (g.start_ms, g.end_ms, g.time_unknown)).collect();
        assert_eq!(spans, vec![(500, 1_000, true), (1_001_500, 1_002_000, false)]);
        assert_eq!(db.restamp(1_000_000, 1_006_000).expect("again"), (0, 0), "done once");
    }

    #[test]
    fn parallel_uploaders_get_different_segments_oldest_first() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let a = closed_seg(&db, s.id, 10_000, 20_000, 10);
        let b = closed_seg(&db, s.id, 20_000, 30_000, 10);
        db.replicate_enqueue(0, 40_000).expect("enqueue");
        let next = |busy: &[i64]| db.replicate_next(40_000, busy).expect("next").map(|j| j.segment.id);
        assert_eq!(next(&[]), Some(a));
        assert_eq!(next(&[a]), Some(b), "the one being uploaded is skipped");
        assert_eq!(next(&[a, b]), None);
    }

    #[test]
    fn retention_items_overlapping_an_event_are_marked_once_past_retention_days() {
        let db = Db::open_in_memory().expect("db");
        let mut sp = spec("cam"); // retention_days 7
        sp.pre_seconds = 5;
        sp.post_seconds = 10;
        let s = db.upsert_stream(&sp, 0).expect("stream");
        let day = 86_400_000;
        let at = 100 * day;
        let before = closed_seg(&db, s.id, at - 60_000, at - 6_000, 1); // ends 6 s before: outside the pre
        let pre = closed_seg(&db, s.id, at - 4_000, at - 1_000, 1); // within pre_seconds of it
        let during = closed_seg(&db, s.id, at, at + 60_000, 1);
        let post = closed_seg(&db, s.id, at + 69_000, at + 90_000, 1); // within post_seconds of its end
        let after = closed_seg(&db, s.id, at + 71_000, at + 90_000, 1);
        let e = NewEvent {
            stream: "cam".into(),
            kind: EventKind::Manual,
            label: String::new(),
            score: 1.0,
            zones: Vec::new(),
            start_ms: at,
            end_ms: Some(at + 60_000),
            best_box: None,
        };
        db.insert_event(&e).expect("event");
        let marked = |now: i64| {
            let mut out = Vec::new();
            db.each_retention_item(now, &mut |it| {
                if it.event {
                    out.push(it.id);
                }
                true
            })
            .expect("walk");
            out
        };
        assert_eq!(marked(at + 8 * day), vec![pre, during, post], "{before} {after} are not the event's");
        assert_eq!(marked(at + 6 * day), Vec::<i64>::new(), "not worked out before retention_days");
    }

    #[test]
    fn usage_and_retention_items() {
        let db = Db::open_in_memory().expect("db");
        let s = db.upsert_stream(&spec("cam"), 0).expect("stream");
        let empty = db.upsert_stream(&spec("empty"), 0).expect("stream");
        let a = closed_seg(&db, s.id, 0, 10, 100);
        let b = db.insert_segment(&new_seg(s.id, 10)).expect("open");
        db.update_segment(b, &progress(15, 50, false)).expect("progress");
        db.set_protected(a, true).expect("protect");
        assert_eq!(db.stream_usage().expect("usage"), vec![(s.id, 150, 2), (empty.id, 0, 0)]);
        let items = db.retention_items().expect("items");
        assert_eq!(
            items,
            vec![
                RetentionItem {
                    id: a,
                    stream_id: s.id,
                    start_ms: 0,
                    end_ms: 10,
                    bytes: 100,
                    protected: true,
                    open: false,
                    time_unknown: false,
                    event: false,
                    unreplicated: true
                },
                RetentionItem {
                    id: b,
                    stream_id: s.id,
                    start_ms: 10,
                    end_ms: 15,
                    bytes: 50,
                    protected: false,
                    open: true,
                    time_unknown: false,
                    event: false,
                    unreplicated: true
                },
            ]
        );
    }
}
