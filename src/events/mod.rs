//! Events: the store other parts open and close events through (detection,
//! the API, later MQTT and ONVIF), over the index's `events` table, and the
//! broadcast that tells subscribers (the page's live push, MQTT, webhooks)
//! as it happens.
//!
//! Invariants:
//! - Every change made through [`Store`] is committed before it is
//!   broadcast, so a subscriber that reads the event back finds it.
//! - Publishing never blocks the caller beyond a short lock: each subscriber
//!   has a bounded queue ([`QUEUE`] notices) that drops its oldest notice when
//!   full and counts the drops; a subscriber that is gone is forgotten.
//! - An event's files (snapshot, thumbnail) are unlinked only after its row is
//!   gone and the paths are durably in `garbage` (invariant 3 of
//!   ARCHITECTURE.md); a failed unlink stays in `garbage` for the storage
//!   thread's next garbage collection.
//! - Events are not recordings: deleting a recording or a stream leaves its
//!   events; only [`Store::delete`] and age ([`expire`], `[events]
//!   retention_days`) remove them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::index::db::{Db, DbError, EventKind, EventRow, NewEvent};

/// Notices a subscriber may have waiting before the oldest is dropped.
pub const QUEUE: usize = 64;

/// Most events one retention pass deletes (the rest wait for the next pass).
const EXPIRE_BATCH: u32 = 500;

/// What happened to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Began,
    Ended,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Began => "began",
            Change::Ended => "ended",
            Change::Deleted => "deleted",
        }
    }
}

/// One broadcast message: the change and the event as it is after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub change: Change,
    pub event: EventRow,
}

struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    notices: VecDeque<Notice>,
    dropped: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data: go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The broadcast: every subscriber gets every notice published after it subscribed.
#[derive(Default)]
pub struct Hub {
    subscribers: Mutex<Vec<Weak<Queue>>>,
}

/// A subscriber's end; dropping it unsubscribes.
pub struct Subscription {
    queue: Arc<Queue>,
}

impl Hub {
    pub fn subscribe(&self) -> Subscription {
        let queue = Arc::new(Queue { state: Mutex::new(QueueState::default()), ready: Condvar::new() });
        lock(&self.subscribers).push(Arc::downgrade(&queue));
        Subscription { queue }
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).iter().filter(|w| w.strong_count() > 0).count()
    }

    /// Queues `notice` for every subscriber, dropping each one's oldest if full.
    pub fn publish(&self, notice: &Notice) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|w| w.strong_count() > 0);
        for q in subs.iter().filter_map(Weak::upgrade) {
            let mut st = lock(&q.state);
            if st.notices.len() >= QUEUE {
                st.notices.pop_front();
                st.dropped += 1;
            }
            st.notices.push_back(notice.clone());
            q.ready.notify_one();
        }
    }
}

impl Subscription {
    /// The next notice, waiting up to `wait` for one.
    pub fn next(&self, wait: Duration) -> Option<Notice> {
        let st = lock(&self.queue.state);
        let (mut st, _) =
            self.queue.ready.wait_timeout_while(st, wait, |s| s.notices.is_empty()).unwrap_or_else(|p| p.into_inner());
        st.notices.pop_front()
    }

    /// Notices waiting to be taken.
    pub fn waiting(&self) -> usize {
        lock(&self.queue.state).notices.len()
    }

    /// Notices dropped so far because this subscriber fell behind.
    pub fn dropped(&self) -> u64 {
        lock(&self.queue.state).dropped
    }
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// No event with that id.
    NotFound(i64),
    /// The event had ended already.
    Ended(i64),
    Db(DbError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(id) => write!(f, "no event with id {id}"),
            StoreError::Ended(id) => write!(f, "event {id} has ended already"),
            StoreError::Db(e) => write!(f, "events: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Db(e)
    }
}

/// Opens, ends and deletes events and broadcasts each change. Shared by every
/// thread (`Sync`): it writes through its own connection, opened on first use.
pub struct Store {
    db_path: PathBuf,
    data_dir: PathBuf,
    db: Mutex<Option<Db>>,
    hub: Hub,
}

impl Store {
    pub fn new(db_path: &Path, data_dir: &Path) -> Store {
        Store { db_path: db_path.into(), data_dir: data_dir.into(), db: Mutex::new(None), hub: Hub::default() }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Runs `f` on the store's connection (reopened after a failure).
    fn with_db<T>(&self, f: impl FnOnce(&Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = lock(&self.db);
        if slot.is_none() {
            *slot = Some(Db::open(&self.db_path)?);
        }
        let db = slot.as_ref().ok_or(StoreError::Db(DbError::Corrupt { what: "no connection".into() }))?;
        let out = f(db);
        if matches!(out, Err(StoreError::Db(_))) {
            *slot = None;
        }
        out
    }

    fn fetch(db: &Db, id: i64) -> Result<EventRow, StoreError> {
        db.event(id)?.ok_or(StoreError::NotFound(id))
    }

    /// Opens an event at `at_ms` (detection's call); its id.
    pub fn begin(&self, stream: &str, kind: EventKind, label: &str, score: f64, at_ms: i64) -> Result<i64, StoreError> {
        let e = NewEvent {
            stream: stream.into(),
            kind,
            label: label.into(),
            score,
            zones: Vec::new(),
            start_ms: at_ms,
            end_ms: None,
            best_box: None,
        };
        Ok(self.create(&e)?.id)
    }

    /// Stores `e` (ongoing, or over if it has an end) and broadcasts it.
    pub fn create(&self, e: &NewEvent) -> Result<EventRow, StoreError> {
        self.create_with_pictures(e, None)
    }

    /// Stores `e` with its snapshot and thumbnail (JPEG), then broadcasts it,
    /// so subscribers see the pictures with the event. The paths go in the row
    /// first and the files after: a cut in between leaves an event whose
    /// pictures answer 404, never a file no row names. A picture that cannot
    /// be written (disk full) leaves the event without pictures.
    pub fn create_with_pictures(&self, e: &NewEvent, pictures: Option<(&[u8], &[u8])>) -> Result<EventRow, StoreError> {
        let mut row = self.with_db(|db| {
            let id = db.insert_event(e)?;
            if pictures.is_some() {
                let (snap, thumb) = picture_paths(id);
                db.set_event_files(id, Some(&snap), Some(&thumb))?;
            }
            Store::fetch(db, id)
        })?;
        if let (Some((snap, thumb)), Some(snap_rel), Some(thumb_rel)) = (pictures, &row.snapshot, &row.thumbnail) {
            let written = write_picture(&self.data_dir, snap_rel, snap)
                .and_then(|()| write_picture(&self.data_dir, thumb_rel, thumb));
            if let Err(err) = written {
                log::warn!("event {}: pictures not written: {err}; the event is kept without them", row.id);
                self.set_files(row.id, None, None)?;
                (row.snapshot, row.thumbnail) = (None, None);
            }
        }
        self.hub.publish(&Notice { change: Change::Began, event: row.clone() });
        if row.end_ms.is_some() {
            self.hub.publish(&Notice { change: Change::Ended, event: row.clone() });
        }
        Ok(row)
    }

    /// Ends an ongoing event at `at_ms` (at its start if earlier).
    pub fn end(&self, id: i64, at_ms: i64) -> Result<EventRow, StoreError> {
        let row = self.with_db(|db| {
            if !db.end_event(id, at_ms)? {
                Store::fetch(db, id)?;
                return Err(StoreError::Ended(id));
            }
            Store::fetch(db, id)
        })?;
        self.hub.publish(&Notice { change: Change::Ended, event: row.clone() });
        Ok(row)
    }

    /// Records an event's snapshot and thumbnail (paths relative to the data dir).
    pub fn set_files(&self, id: i64, snapshot: Option<&str>, thumbnail: Option<&str>) -> Result<(), StoreError> {
        self.with_db(|db| match db.set_event_files(id, snapshot, thumbnail)? {
            true => Ok(()),
            false => Err(StoreError::NotFound(id)),
        })
    }

    /// Records the zones an ongoing event is in (all it has been in so far).
    pub fn set_zones(&self, id: i64, zones: &[String]) -> Result<(), StoreError> {
        self.with_db(|db| match db.set_event_zones(id, zones)? {
            true => Ok(()),
            false => Err(StoreError::NotFound(id)),
        })
    }

    /// Deletes an event and its files; the event as it was.
    pub fn delete(&self, id: i64) -> Result<EventRow, StoreError> {
        let row = self.with_db(|db| {
            let row = Store::fetch(db, id)?;
            delete_with_files(db, &self.data_dir, &[id])?;
            Ok(row)
        })?;
        self.hub.publish(&Notice { change: Change::Deleted, event: row.clone() });
        Ok(row)
    }
}

/// Where an event's snapshot and thumbnail live, relative to the data dir
/// (a folder per thousand events keeps folders small).
fn picture_paths(id: i64) -> (String, String) {
    let dir = format!("events/{:04}", id / 1000);
    (format!("{dir}/{id}.jpg"), format!("{dir}/{id}-thumb.jpg"))
}

/// Writes `bytes` at `rel` under `data_dir` durably (temporary file, sync, rename).
fn write_picture(data_dir: &Path, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = data_dir.join(rel);
    let dir = path.parent().ok_or_else(|| std::io::Error::other(format!("{rel} has no folder")))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("jpg.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    crate::base::fs::fdatasync(&f)?;
    std::fs::rename(&tmp, &path)?;
    crate::base::fs::sync_dir(dir)
}

/// Deletes events `ids` with their files (invariant 3); the number deleted.
fn delete_with_files(db: &Db, data_dir: &Path, ids: &[i64]) -> Result<usize, DbError> {
    let (deleted, files) = db.delete_events_to_garbage(ids)?;
    let mut done = Vec::new();
    for rel in files {
        let full = data_dir.join(&rel);
        let gone = match std::fs::remove_file(&full) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                log::warn!("events: cannot unlink {}: {e}; left for garbage collection", full.display());
                false
            }
        };
        let synced = full.parent().map_or(Ok(()), crate::base::fs::sync_dir);
        if gone && synced.is_ok() {
            done.push(rel);
        }
    }
    db.garbage_done_all(&done)?;
    Ok(deleted.len())
}

/// Retention of events (the storage thread's pass): deletes, with their
/// files, events that ended more than `retention_days` before `now_ms`, at
/// most [`EXPIRE_BATCH`] a call. The number deleted.
pub fn expire(db: &Db, data_dir: &Path, now_ms: i64, retention_days: u32) -> Result<usize, DbError> {
    let cutoff = now_ms.saturating_sub(i64::from(retention_days).saturating_mul(86_400_000));
    let ids = db.events_older_than(cutoff, EXPIRE_BATCH)?;
    if ids.is_empty() {
        return Ok(0);
    }
    delete_with_files(db, data_dir, &ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: i64) -> Notice {
        let event = EventRow {
            id,
            stream: "s".into(),
            kind: EventKind::Manual,
            label: String::new(),
            score: 1.0,
            zones: Vec::new(),
            start_ms: 0,
            end_ms: None,
            best_box: None,
            snapshot: None,
            thumbnail: None,
        };
        Notice { change: Change::Began, event }
    }

    #[test]
    fn a_slow_subscriber_loses_its_oldest_notices_and_never_blocks_the_publisher() {
        let hub = Hub::default();
        let slow = hub.subscribe();
        let gone = hub.subscribe();
        drop(gone);
        for id in 0..(QUEUE as i64 + 10) {
            hub.publish(&notice(id));
        }
        assert_eq!(hub.subscribers(), 1);
        assert_eq!(slow.dropped(), 10);
        assert_eq!(slow.next(Duration::ZERO).map(|n| n.event.id), Some(10), "the oldest kept");
        let mut last = 10;
        while let Some(n) = slow.next(Duration::ZERO) {
            last = n.event.id;
        }
        assert_eq!(last, QUEUE as i64 + 9);
        assert_eq!(slow.next(Duration::from_millis(10)), None);
    }

    #[test]
    fn the_store_commits_then_tells_and_expires_old_events_with_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("oxinvr.db");
        let store = Store::new(&db_path, dir.path());
        let sub = store.hub().subscribe();
        let id = store.begin("front", EventKind::Motion, "motion", 0.7, 1_000).expect("begin");
        let began = sub.next(Duration::ZERO).expect("began told");
        assert_eq!((began.change, began.event.id, began.event.end_ms), (Change::Began, id, None));
        assert_eq!(store.end(id, 5_000).expect("end").end_ms, Some(5_000));
        assert_eq!(sub.next(Duration::ZERO).map(|n| n.change), Some(Change::Ended));
        assert!(matches!(store.end(id, 6_000), Err(StoreError::Ended(_))));
        assert!(matches!(store.end(404, 6_000), Err(StoreError::NotFound(404))));

        std::fs::create_dir_all(dir.path().join("events/front")).expect("mkdir");
        std::fs::write(dir.path().join("events/front/1.jpg"), b"jpeg").expect("snapshot");
        store.set_files(id, Some("events/front/1.jpg"), None).expect("files");
        let db = Db::open(&db_path).expect("db");
        let day = 86_400_000;
        assert_eq!(expire(&db, dir.path(), 5_000 + day, 1).expect("not yet"), 0);
        assert_eq!(expire(&db, dir.path(), 5_001 + day, 1).expect("expire"), 1);
        assert!(!dir.path().join("events/front/1.jpg").exists(), "its snapshot went with it");
        assert_eq!(db.garbage().expect("garbage"), Vec::<String>::new());
        assert_eq!(db.event(id).expect("q"), None);
    }

    #[test]
    fn pictures_are_on_disk_when_the_event_is_told_and_go_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(&dir.path().join("oxinvr.db"), dir.path());
        let sub = store.hub().subscribe();
        let e = NewEvent {
            stream: "front".into(),
            kind: EventKind::Motion,
            label: "motion".into(),
            score: 0.2,
            zones: Vec::new(),
            start_ms: 1_000,
            end_ms: None,
            best_box: None,
        };
        let row = store.create_with_pictures(&e, Some((b"snap", b"thumb"))).expect("create");
        let told = sub.next(Duration::ZERO).expect("told").event;
        let snap = dir.path().join(told.snapshot.as_deref().expect("snapshot path"));
        let thumb = dir.path().join(told.thumbnail.as_deref().expect("thumbnail path"));
        assert_eq!(std::fs::read(&snap).expect("snapshot on disk when told"), b"snap");
        assert_eq!(std::fs::read(&thumb).expect("thumbnail"), b"thumb");
        store.delete(row.id).expect("delete");
        assert!(!snap.exists() && !thumb.exists(), "pictures went with the event");

        // A data dir where the pictures cannot be written keeps the event without them.
        std::fs::remove_dir_all(dir.path().join("events")).expect("rm");
        std::fs::write(dir.path().join("events"), b"a file where the folder goes").expect("block");
        let row = store.create_with_pictures(&e, Some((b"snap", b"thumb"))).expect("kept");
        assert_eq!((row.snapshot, row.thumbnail), (None, None));
    }
}
