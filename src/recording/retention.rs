//! Retention: which segments to delete ([`plan`], pure) and deleting them
//! ([`execute`], [`collect_garbage`]) in the order of invariant 3 of
//! ARCHITECTURE.md.
//!
//! Invariants of [`plan`]:
//! - It never picks a protected or an open item.
//! - It picks each id at most once (a duplicate id in the input counts once).
//! - Rules apply in order, each counting what the earlier ones already picked:
//!   1. Age: an item of a stream with `retention_days = Some(d)` goes when its
//!      `end_ms < now_ms - d days` (`d = 0`: every closed item that ended
//!      before `now_ms`); an item overlapping an event (`Item::event`) counts
//!      `event_retention_days` instead (the storage thread makes it at least
//!      `retention_days`; `None` with no `retention_days`). An item of unknown time (`time_unknown`: recorded
//!      while the wall clock was not set) has no age and never goes by age;
//!      quota and free space take it like any other, by its stored time. A
//!      forward step of the wall clock after an item is not age: its end
//!      counts as moved by the step (`AgeClock`), so a clock set a year ahead
//!      does not delete everything; quota and free space still bound the disk.
//!   2. Quota: a stream with `max_bytes = Some(m)` whose items (all of them,
//!      protected and open included: they use the disk too) total more than
//!      `m` loses its oldest deletable items, one at a time, and stops as
//!      soon as its total is `<= m` (or nothing deletable is left).
//!   3. Free space: while `free_bytes + bytes picked so far` is below
//!      `min_free_percent` of `total_bytes`, the oldest deletable item of any
//!      stream goes. Nothing happens if `total_bytes` is 0 (unknown).
//! - "Oldest" is by `(start_ms, id)`; the output lists age deletions, then
//!   quota ones, then free-space ones, each oldest first, so it is
//!   deterministic for a given input.
//!
//! Invariants of the executor: a file is unlinked only after its row is gone
//! and its path is durably in `garbage`; a `garbage` row is removed only after
//! the unlink and an fsync of the file's directory both succeeded (a missing
//! file or directory counts as unlinked). A failure leaves the `garbage` row,
//! so the next pass (or start-up) retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::index::db::{is_safe_relative_path, ClockStep, Db, DbError};

/// "Now" for age: the wall time and the forward steps the clock made.
#[derive(Clone, Debug, Default)]
pub struct AgeClock {
    pub now_ms: i64,
    pub forward_steps: Vec<ClockStep>,
}

impl From<i64> for AgeClock {
    fn from(now_ms: i64) -> AgeClock {
        AgeClock { now_ms, forward_steps: Vec::new() }
    }
}

impl AgeClock {
    /// `end_ms` moved by every forward step made after it.
    fn aged_end(&self, end_ms: i64) -> i64 {
        let later = self.forward_steps.iter().filter(|s| s.step_ms > 0 && s.is_after(end_ms));
        later.fold(end_ms, |t, s| t.saturating_add(s.step_ms))
    }
}

/// What the planner knows of one segment (read from the index).
pub use crate::index::db::RetentionItem as Item;

/// Limits of one stream; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPolicy {
    pub retention_days: Option<u32>,
    /// Age limit of items overlapping an event (`Item::event`).
    pub event_retention_days: Option<u32>,
    pub max_bytes: Option<u64>,
    /// `[replicate] keep_until_replicated` (and the stream replicates): age and
    /// quota leave an item still waiting for upload (`Item::unreplicated`); free
    /// space does not (recording must go on), and says so loudly.
    pub keep_until_replicated: bool,
}

/// Size of the file system holding the recordings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub total_bytes: u64,
    /// Available to an unprivileged process (`f_bavail`).
    pub free_bytes: u64,
}

/// Which rule picked a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Age,
    Quota,
    FreeSpace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub id: i64,
    pub stream_id: i64,
    pub bytes: u64,
    pub reason: Reason,
    /// Still waiting to be uploaded to the bucket (only free space picks such an item
    /// when `keep_until_replicated` is set).
    pub unreplicated: bool,
}

const MS_PER_DAY: i64 = 86_400_000;

/// Never deletes protected or open items. Age: `end_ms` older than `now - days`.
/// Quota: per stream, oldest first until the stream's total `<= max_bytes`.
/// Free space: if free `<` `min_free_percent` of total, delete oldest first
/// across streams (by `start_ms`) until the floor is met, counting bytes
/// already planned. Each id at most once. See the module documentation.
pub fn plan(
    now: impl Into<AgeClock>,
    items: &[Item],
    policies: &HashMap<i64, StreamPolicy>,
    disk: Disk,
    min_free_percent: u8,
) -> Vec<Deletion> {
    // Oldest first, first occurrence of each id only.
    let mut order: Vec<&Item> = Vec::with_capacity(items.len());
    {
        let mut seen = HashSet::with_capacity(items.len());
        order.extend(items.iter().filter(|it| seen.insert(it.id)));
    }
    order.sort_by_key(|it| (it.start_ms, it.id));
    let walk = |f: &mut dyn FnMut(&Item) -> bool| -> Result<(), std::convert::Infallible> {
        for it in &order {
            if !f(it) {
                break;
            }
        }
        Ok(())
    };
    match plan_streaming(now, walk, policies, disk, min_free_percent) {
        Ok(d) => d,
        Err(never) => match never {},
    }
}

/// [`plan`] over a source that walks the items oldest first (by `(start_ms,
/// id)`, each id once) as often as needed, calling `f` until it returns
/// false: memory is the plan's, not the index's (the storage thread walks the
/// database with a cursor, three times at most).
pub fn plan_streaming<E>(
    now: impl Into<AgeClock>,
    mut walk: impl FnMut(&mut dyn FnMut(&Item) -> bool) -> Result<(), E>,
    policies: &HashMap<i64, StreamPolicy>,
    disk: Disk,
    min_free_percent: u8,
) -> Result<Vec<Deletion>, E> {
    let deletable = |it: &Item| !it.protected && !it.open;
    // Age and quota wait for the upload; free space does not.
    let kept = |it: &Item| it.unreplicated && policies.get(&it.stream_id).is_some_and(|p| p.keep_until_replicated);
    let mut picked: HashSet<i64> = HashSet::new();
    let mut out: Vec<Deletion> = Vec::new();
    let pick = |it: &Item, reason: Reason, picked: &mut HashSet<i64>, out: &mut Vec<Deletion>| {
        picked.insert(it.id);
        out.push(Deletion {
            id: it.id,
            stream_id: it.stream_id,
            bytes: it.bytes,
            reason,
            unreplicated: it.unreplicated,
        });
    };

    // 1. Age, and each stream's total of what age leaves.
    let now: AgeClock = now.into();
    let mut left: HashMap<i64, u64> = HashMap::new();
    walk(&mut |it| {
        let days =
            policies.get(&it.stream_id).and_then(|p| if it.event { p.event_retention_days } else { p.retention_days });
        let cutoff = days.map(|d| now.now_ms.saturating_sub(i64::from(d).saturating_mul(MS_PER_DAY)));
        if cutoff.is_some_and(|c| now.aged_end(it.end_ms) < c) && deletable(it) && !kept(it) && !it.time_unknown {
            pick(it, Reason::Age, &mut picked, &mut out);
        } else {
            let total = left.entry(it.stream_id).or_default();
            *total = total.saturating_add(it.bytes);
        }
        true
    })?;

    // 2. Quota: each stream over its limit loses its oldest deletable items.
    let mut over: HashMap<i64, (u64, u64)> = left
        .iter()
        .filter_map(|(s, &total)| {
            let max = policies.get(s).and_then(|p| p.max_bytes)?;
            (total > max).then_some((*s, (total, max)))
        })
        .collect();
    if !over.is_empty() {
        walk(&mut |it| {
            if let Some((total, max)) = over.get_mut(&it.stream_id) {
                if *total > *max && deletable(it) && !kept(it) && !picked.contains(&it.id) {
                    *total = total.saturating_sub(it.bytes);
                    pick(it, Reason::Quota, &mut picked, &mut out);
                }
            }
            over.values().any(|(total, max)| total > max)
        })?;
    }

    // 3. Free space, across streams.
    let floor = u64::try_from(u128::from(disk.total_bytes) * u128::from(min_free_percent.min(100)) / 100)
        .unwrap_or(disk.total_bytes);
    let mut free = out.iter().fold(disk.free_bytes, |acc, d| acc.saturating_add(d.bytes));
    if free < floor {
        walk(&mut |it| {
            if deletable(it) && !picked.contains(&it.id) {
                free = free.saturating_add(it.bytes);
                pick(it, Reason::FreeSpace, &mut picked, &mut out);
            }
            free < floor
        })?;
    }
    Ok(out)
}

/// Size and free space (`f_bavail`, what OxiNVR may use) of the file system
/// holding `path`.
#[allow(clippy::useless_conversion)] // the statvfs field types differ between targets
pub fn disk_usage(path: &Path) -> io::Result<Disk> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("statvfs {}: {e}", path.display())))?;
    let unit = u64::from(st.fragment_size());
    Ok(Disk {
        total_bytes: u64::from(st.blocks()).saturating_mul(unit),
        free_bytes: u64::from(st.blocks_available()).saturating_mul(unit),
    })
}

/// What an executor pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Segment rows moved to `garbage` by this pass.
    pub rows_deleted: usize,
    /// Files unlinked.
    pub files_removed: usize,
    /// Garbage entries whose file was already gone.
    pub already_gone: usize,
    /// Garbage entries left for a later pass, each with what went wrong.
    pub failures: Vec<String>,
}

/// Deletes the planned segments: rows to `garbage` in one durable
/// transaction, then [`collect_garbage`] (which also finishes any earlier
/// pending entries). Protected segments are skipped by the database even if
/// planned (a protect request may have raced the plan).
pub fn execute(db: &Db, data_dir: &Path, deletions: &[Deletion]) -> Result<Outcome, DbError> {
    let ids: Vec<i64> = deletions.iter().map(|d| d.id).collect();
    let moved = db.delete_unprotected_segments_to_garbage(&ids)?;
    DELETED.fetch_add(moved.len(), Ordering::Relaxed);
    let lost: Vec<i64> =
        deletions.iter().filter(|d| d.unreplicated && d.reason == Reason::FreeSpace).map(|d| d.id).collect();
    if !lost.is_empty() {
        DELETED_UNREPLICATED.fetch_add(lost.len(), Ordering::Relaxed);
        log::error!(
            "retention: the disk is full: deleted {} segment(s) NOT YET REPLICATED to the bucket (ids {lost:?}) \
             so recording goes on; the bucket is behind (see /api/system replicate)",
            lost.len()
        );
    }
    let mut outcome = collect_garbage(db, data_dir)?;
    outcome.rows_deleted = moved.len();
    Ok(outcome)
}

/// Segments `execute` deleted since the process started (usize: MIPS32 has
/// no 64-bit atomics; 4 billion deletions are far beyond a box's life).
static DELETED: AtomicUsize = AtomicUsize::new(0);

/// Of those, the ones still waiting for upload that free space took (`keep_until_replicated`).
static DELETED_UNREPLICATED: AtomicUsize = AtomicUsize::new(0);

/// Segments deleted before they were replicated since start (disk full).
pub fn deleted_unreplicated_total() -> u64 {
    DELETED_UNREPLICATED.load(Ordering::Relaxed) as u64
}

/// Segments retention deleted since start (`oxinvr_retention_deleted_segments_total`).
pub fn deleted_total() -> u64 {
    DELETED.load(Ordering::Relaxed) as u64
}

use crate::base::fs::sync_dir;

/// An emptied day directory goes too (its parent is fsynced after).
fn remove_if_empty(dir: &Path) {
    if fs::remove_dir(dir).is_ok() {
        if let Some(parent) = dir.parent() {
            let _ = sync_dir(parent);
        }
    }
}

/// Unlinks every file listed in `garbage`, fsyncs each directory touched, then
/// removes the entries that are done. Run at start-up and after each
/// deletion. A path that is not a plain relative path is never unlinked: its
/// entry is dropped and reported as a failure.
pub fn collect_garbage(db: &Db, data_dir: &Path) -> Result<Outcome, DbError> {
    let mut outcome = Outcome::default();
    let mut done: Vec<String> = Vec::new();
    let mut by_dir: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for rel in db.garbage()? {
        if !is_safe_relative_path(&rel) {
            outcome.failures.push(format!("garbage entry {rel:?} is not a plain relative path; dropped, not unlinked"));
            done.push(rel);
            continue;
        }
        let full = data_dir.join(&rel);
        let dir = full.parent().map_or_else(|| data_dir.to_path_buf(), Path::to_path_buf);
        match fs::remove_file(&full) {
            Ok(()) => outcome.files_removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => outcome.already_gone += 1,
            Err(e) => {
                outcome.failures.push(format!("unlink {}: {e}", full.display()));
                continue;
            }
        }
        by_dir.entry(dir).or_default().push(rel);
    }
    for (dir, rels) in by_dir {
        match sync_dir(&dir) {
            Ok(()) => {
                done.extend(rels);
                remove_if_empty(&dir);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => done.extend(rels),
            Err(e) => outcome.failures.push(format!(
                "fsync directory {}: {e} ({} unlink(s) kept pending)",
                dir.display(),
                rels.len()
            )),
        }
    }
    for f in &outcome.failures {
        log::warn!("retention: {f}");
    }
    db.garbage_done_all(&done)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::db::{NewSegment, SegmentProgress, StreamSpec};

    const MIN: i64 = 60_000;
    const DAY: i64 = MS_PER_DAY;

    fn item(id: i64, stream_id: i64, start_ms: i64, bytes: u64) -> Item {
        Item {
            id,
            stream_id,
            start_ms,
            end_ms: start_ms + MIN,
            bytes,
            protected: false,
            open: false,
            time_unknown: false,
            event: false,
            unreplicated: false,
        }
    }

    fn policies(list: &[(i64, Option<u32>, Option<u64>)]) -> HashMap<i64, StreamPolicy> {
        list.iter()
            .map(|&(s, days, max)| {
                (
                    s,
                    StreamPolicy {
                        event_retention_days: None,
                        retention_days: days,
                        max_bytes: max,
                        keep_until_replicated: false,
                    },
                )
            })
            .collect()
    }

    const ROOMY: Disk = Disk { total_bytes: 1000, free_bytes: 900 };

    fn ids(d: &[Deletion]) -> Vec<i64> {
        d.iter().map(|d| d.id).collect()
    }

    #[test]
    fn recordings_of_events_are_kept_event_retention_days() {
        let pol = HashMap::from([
            (
                1,
                StreamPolicy {
                    retention_days: Some(2),
                    event_retention_days: Some(30),
                    max_bytes: None,
                    keep_until_replicated: false,
                },
            ),
            // No age limit: events or not, kept until space runs out.
            (
                2,
                StreamPolicy {
                    retention_days: None,
                    event_retention_days: None,
                    max_bytes: None,
                    keep_until_replicated: false,
                },
            ),
        ]);
        let items = [
            item(1, 1, 0, 10),
            Item { event: true, ..item(2, 1, 0, 10) },
            Item { event: true, ..item(3, 1, 20 * DAY, 10) },
            Item { event: true, ..item(4, 2, 0, 10) },
            item(5, 2, 0, 10),
        ];
        assert_eq!(ids(&plan(10 * DAY, &items, &pol, ROOMY, 0)), vec![1], "the event's is kept past 2 days");
        assert_eq!(ids(&plan(31 * DAY, &items, &pol, ROOMY, 0)), vec![1, 2], "and goes after 30");
        // Free space takes them like any other, oldest first (2 % of 1000 bytes: two items).
        let full = Disk { total_bytes: 1000, free_bytes: 0 };
        assert_eq!(ids(&plan(10 * DAY, &items, &pol, full, 2)), vec![1, 2]);
    }

    #[test]
    fn a_forward_clock_step_is_not_age() {
        // Stream 1 keeps 2 days. At 10 days the clock jumped a year ahead (a
        // wrong date set by hand): what was recorded before is not a year old.
        let year = 365 * DAY;
        let jump = ClockStep { at_ms: 10 * DAY + year, step_ms: year };
        let pol = HashMap::from([(
            1,
            StreamPolicy {
                event_retention_days: None,
                retention_days: Some(2),
                max_bytes: None,
                keep_until_replicated: false,
            },
        )]);
        let items = [
            Item { end_ms: 9 * DAY, ..item(1, 1, 9 * DAY - MIN, 10) }, // a day before the jump
            Item { end_ms: 7 * DAY, ..item(2, 1, 7 * DAY - MIN, 10) }, // 3 days before the jump
            Item { end_ms: 10 * DAY + year + MIN, ..item(3, 1, 10 * DAY + year, 10) }, // after
        ];
        let now = AgeClock { now_ms: 10 * DAY + year + 60 * MIN, forward_steps: vec![jump] };
        let d = plan(now.clone(), &items, &pol, ROOMY, 0);
        assert_eq!(ids(&d), vec![2], "only what was over 2 days old by the clock before the jump");
        // Without the step known, the jump deletes all but the newest.
        let d = plan(now.now_ms, &items, &pol, ROOMY, 0);
        assert_eq!(ids(&d), vec![2, 1]);
        // Two days after the jump, the item of the day before goes too.
        let later = AgeClock { now_ms: 10 * DAY + year + 2 * DAY, ..now };
        assert_eq!(ids(&plan(later, &items, &pol, ROOMY, 0)), vec![2, 1]);
    }

    #[test]
    fn age_deletes_what_ended_before_the_cutoff() {
        let now = 10 * DAY;
        // Stream 1 keeps 2 days: cutoff = 8 days.
        let items = [
            Item { end_ms: 8 * DAY - 1, ..item(1, 1, 8 * DAY - MIN, 10) },
            Item { end_ms: 8 * DAY, ..item(2, 1, 8 * DAY - MIN + 1, 10) }, // exactly at the cutoff: kept
            item(3, 1, 9 * DAY, 10),
            item(4, 2, 0, 10), // stream 2: no age limit
            item(5, 3, 0, 10), // stream 3: no policy at all
        ];
        let d = plan(now, &items, &policies(&[(1, Some(2), None), (2, None, Some(1000))]), ROOMY, 10);
        assert_eq!(d, vec![Deletion { id: 1, stream_id: 1, bytes: 10, reason: Reason::Age, unreplicated: false }]);
        // retention_days = 0: everything that ended before now.
        let d = plan(now, &items, &policies(&[(1, Some(0), None)]), ROOMY, 10);
        assert_eq!(ids(&d), vec![1, 2, 3]);
        // Recorded while the clock was not set (stored in 1970): no age, kept; a quota still counts it.
        let unknown = [Item { time_unknown: true, ..item(6, 1, 0, 10) }];
        assert!(plan(now, &unknown, &policies(&[(1, Some(0), None)]), ROOMY, 10).is_empty());
        assert_eq!(ids(&plan(now, &unknown, &policies(&[(1, Some(0), Some(5))]), ROOMY, 10)), vec![6]);
    }

    #[test]
    fn quota_deletes_oldest_first_and_stops_as_soon_as_under() {
        // Stream 1: 100+200+300+400 = 1000 bytes, quota 600: deleting 100 (900), 200 (700),
        // 300 (400 <= 600) -> stop; never the newest.
        let items =
            [item(4, 1, 4 * MIN, 400), item(2, 1, 2 * MIN, 200), item(1, 1, MIN, 100), item(3, 1, 3 * MIN, 300)];
        let d = plan(0, &items, &policies(&[(1, None, Some(600))]), ROOMY, 0);
        assert_eq!(ids(&d), vec![1, 2, 3]);
        assert!(d.iter().all(|d| d.reason == Reason::Quota && d.stream_id == 1));
        // Exactly at the quota: nothing.
        assert!(plan(0, &items, &policies(&[(1, None, Some(1000))]), ROOMY, 0).is_empty());
        // One byte over: only the oldest.
        assert_eq!(ids(&plan(0, &items, &policies(&[(1, None, Some(999))]), ROOMY, 0)), vec![1]);
        // Age deletions count toward the quota: segment 1 goes for age, then 2 suffices.
        let aged = [Item { end_ms: 0, ..item(1, 1, -MIN, 100) }, items[1], items[3], items[0]];
        let d = plan(DAY + MIN + 1, &aged, &policies(&[(1, Some(1), Some(700))]), ROOMY, 0);
        assert_eq!(d.iter().map(|d| (d.id, d.reason)).collect::<Vec<_>>(), vec![(1, Reason::Age), (2, Reason::Quota)]);
    }

    #[test]
    fn free_space_deletes_oldest_across_streams() {
        // Disk 10_000, free 500, floor 10% = 1000: needs 500 more bytes.
        let disk = Disk { total_bytes: 10_000, free_bytes: 500 };
        let items =
            [item(1, 1, 3 * MIN, 300), item(2, 2, MIN, 200), item(3, 3, 2 * MIN, 200), item(4, 1, 4 * MIN, 1000)];
        let d = plan(0, &items, &HashMap::new(), disk, 10);
        assert_eq!(ids(&d), vec![2, 3, 1], "oldest first across streams, stop once free >= floor");
        assert!(d.iter().all(|d| d.reason == Reason::FreeSpace));
        // Bytes already planned by quota count: quota on stream 1 removes 300 first (1300 > 1000).
        let d = plan(0, &items, &policies(&[(1, None, Some(1000))]), disk, 10);
        assert_eq!(
            d.iter().map(|d| (d.id, d.reason)).collect::<Vec<_>>(),
            vec![(1, Reason::Quota), (2, Reason::FreeSpace)]
        );
        // Enough free space, or unknown disk size, or 0 %: nothing.
        assert!(plan(0, &items, &HashMap::new(), Disk { total_bytes: 10_000, free_bytes: 1000 }, 10).is_empty());
        assert!(plan(0, &items, &HashMap::new(), Disk { total_bytes: 0, free_bytes: 0 }, 10).is_empty());
        assert!(plan(0, &items, &HashMap::new(), disk, 0).is_empty());
        // More than 100 % is read as 100 %: everything deletable goes, without panicking.
        assert_eq!(plan(0, &items, &HashMap::new(), disk, 255).len(), 4);
    }

    #[test]
    fn protected_and_open_are_exempt_from_every_rule() {
        let now = 100 * DAY;
        let items = [
            Item { protected: true, ..item(1, 1, 0, 1000) },
            Item { open: true, ..item(2, 1, MIN, 1000) },
            item(3, 1, 2 * MIN, 10),
            Item { protected: true, open: true, ..item(4, 1, 3 * MIN, 1000) },
        ];
        let disk = Disk { total_bytes: 1_000_000, free_bytes: 0 };
        let d = plan(now, &items, &policies(&[(1, Some(1), Some(0))]), disk, 50);
        assert_eq!(ids(&d), vec![3], "only the unprotected closed item, once");
        assert_eq!(d[0].reason, Reason::Age);
        // Quota alone: protected/open bytes count against the quota but cannot be freed.
        let d = plan(0, &items, &policies(&[(1, None, Some(100))]), ROOMY, 0);
        assert_eq!(d.iter().map(|d| (d.id, d.reason)).collect::<Vec<_>>(), vec![(3, Reason::Quota)]);
    }

    #[test]
    fn keep_until_replicated_holds_age_and_quota_but_not_free_space() {
        let keep = StreamPolicy {
            retention_days: Some(1),
            event_retention_days: None,
            max_bytes: Some(10),
            keep_until_replicated: true,
        };
        let p = HashMap::from([(1, keep)]);
        let items = [
            Item { unreplicated: true, ..item(1, 1, 0, 10) },
            item(2, 1, MIN, 10),
            Item { unreplicated: true, ..item(3, 1, 10 * DAY, 10) },
            item(4, 1, 10 * DAY + MIN, 10),
        ];
        // Age takes the uploaded old one only; quota the uploaded new one only.
        let d = plan(10 * DAY + 2 * MIN, &items, &p, ROOMY, 10);
        assert_eq!(ids(&d), vec![2, 4]);
        assert!(d.iter().all(|x| !x.unreplicated));
        // Free space takes what it must, uploaded or not, and says which were not.
        let full = Disk { total_bytes: 1000, free_bytes: 0 };
        let d = plan(10 * DAY + 2 * MIN, &items, &p, full, 4);
        assert_eq!(ids(&d), vec![2, 4, 1, 3]);
        assert_eq!(d.iter().filter(|x| x.unreplicated).count(), 2);
        // Without the setting, age takes both old ones.
        let p = HashMap::from([(1, StreamPolicy { keep_until_replicated: false, ..keep })]);
        assert_eq!(ids(&plan(10 * DAY + 2 * MIN, &items, &p, ROOMY, 10))[..2], [1, 2]);
    }

    #[test]
    fn each_id_at_most_once() {
        // An old item over quota with the disk full qualifies for all three rules;
        // a duplicate id in the input counts once.
        let items = [item(1, 1, 0, 500), item(1, 1, 0, 500), item(2, 1, MIN, 500), item(3, 2, 0, 500)];
        let disk = Disk { total_bytes: 100_000, free_bytes: 0 };
        let d = plan(10 * DAY, &items, &policies(&[(1, Some(1), Some(0)), (2, Some(1), None)]), disk, 100);
        let mut seen = HashSet::new();
        assert!(d.iter().all(|d| seen.insert(d.id)), "{d:?}");
        assert_eq!(seen, HashSet::from([1, 2, 3]));
        assert!(d.iter().all(|d| d.reason == Reason::Age));
        // Quota sees the duplicate once: 1000 bytes, quota 600 -> only id 1.
        let d = plan(0, &items, &policies(&[(1, None, Some(600))]), ROOMY, 0);
        assert_eq!(ids(&d), vec![1]);
    }

    /// Checks a plan against the rules, without re-implementing the planner.
    fn check_plan(
        now: i64,
        items: &[Item],
        pol: &HashMap<i64, StreamPolicy>,
        disk: Disk,
        pct: u8,
        d: &[Deletion],
    ) -> (usize, usize, usize) {
        let by_id: HashMap<i64, &Item> = items.iter().map(|i| (i.id, i)).collect();
        let mut picked = HashSet::new();
        for x in d {
            assert!(picked.insert(x.id), "duplicate {}", x.id);
            let it = by_id[&x.id];
            assert!(!it.protected && !it.open, "exempt item {} picked", x.id);
            assert_eq!((x.stream_id, x.bytes), (it.stream_id, it.bytes));
        }
        let deletable = |it: &Item| !it.protected && !it.open;
        let mut sorted: Vec<&Item> = items.iter().collect();
        sorted.sort_by_key(|i| (i.start_ms, i.id));
        let reason_of: HashMap<i64, Reason> = d.iter().map(|x| (x.id, x.reason)).collect();

        // Age: exactly the deletable items past their stream's cutoff.
        let expect_age: HashSet<i64> = items
            .iter()
            .filter(|it| {
                deletable(it)
                    && pol
                        .get(&it.stream_id)
                        .and_then(|p| p.retention_days)
                        .is_some_and(|days| it.end_ms < now - i64::from(days) * DAY)
            })
            .map(|it| it.id)
            .collect();
        let got_age: HashSet<i64> = d.iter().filter(|x| x.reason == Reason::Age).map(|x| x.id).collect();
        assert_eq!(got_age, expect_age);

        // Quota: per stream, a minimal oldest-first prefix of what age left.
        let mut streams: Vec<i64> = items.iter().map(|i| i.stream_id).collect();
        streams.sort_unstable();
        streams.dedup();
        for s in streams {
            let Some(max) = pol.get(&s).and_then(|p| p.max_bytes) else {
                assert!(!d.iter().any(|x| x.stream_id == s && x.reason == Reason::Quota));
                continue;
            };
            let mine: Vec<&&Item> = sorted.iter().filter(|i| i.stream_id == s).collect();
            let total: u64 = mine.iter().map(|i| i.bytes).sum();
            let aged: u64 = mine.iter().filter(|i| reason_of.get(&i.id) == Some(&Reason::Age)).map(|i| i.bytes).sum();
            let candidates: Vec<&&&Item> =
                mine.iter().filter(|i| deletable(i) && !expect_age.contains(&i.id)).collect();
            let quota: Vec<i64> =
                d.iter().filter(|x| x.stream_id == s && x.reason == Reason::Quota).map(|x| x.id).collect();
            let prefix: Vec<i64> = candidates.iter().take(quota.len()).map(|i| i.id).collect();
            assert_eq!(quota, prefix, "stream {s}: quota deletions are the oldest");
            let quota_bytes: u64 = quota.iter().map(|id| by_id[id].bytes).sum();
            let remaining = total - aged - quota_bytes;
            assert!(remaining <= max || quota.len() == candidates.len(), "stream {s} left over quota");
            if let Some(last) = quota.last() {
                assert!(remaining + by_id[last].bytes > max, "stream {s}: deleted more than needed");
            }
        }

        // Free space: a minimal oldest-first prefix across streams of what is left.
        let floor = u64::try_from(u128::from(disk.total_bytes) * u128::from(pct.min(100)) / 100).expect("floor");
        let free_ids: Vec<i64> = d.iter().filter(|x| x.reason == Reason::FreeSpace).map(|x| x.id).collect();
        let before: HashSet<i64> = d.iter().filter(|x| x.reason != Reason::FreeSpace).map(|x| x.id).collect();
        let candidates: Vec<i64> =
            sorted.iter().filter(|i| deletable(i) && !before.contains(&i.id)).map(|i| i.id).collect();
        assert_eq!(free_ids, candidates[..free_ids.len()].to_vec(), "free-space deletions are the oldest");
        let freed: u64 = d.iter().map(|x| x.bytes).sum();
        assert!(disk.free_bytes + freed >= floor || free_ids.len() == candidates.len());
        if let Some(last) = free_ids.last() {
            assert!(disk.free_bytes + freed - by_id[last].bytes < floor, "freed more than needed");
        }
        (got_age.len(), d.iter().filter(|x| x.reason == Reason::Quota).count(), free_ids.len())
    }

    #[test]
    fn plan_at_scale_44_streams_2000_segments() {
        const STREAMS: i64 = 44;
        const PER: i64 = 2000;
        let base = 1_700_000_000_000_i64;
        let now = base + PER * MIN;
        let mut items = Vec::with_capacity((STREAMS * PER) as usize);
        for s in 0..STREAMS {
            for i in 0..PER {
                let id = s * PER + i + 1;
                let start = base + i * MIN + s * 37;
                items.push(Item {
                    id,
                    stream_id: s,
                    start_ms: start,
                    end_ms: start + MIN,
                    bytes: 1_000_000 + ((s * 7919 + i * 104_729) % 500_000) as u64,
                    protected: id % 97 == 0,
                    open: i == PER - 1,
                    time_unknown: false,
                    event: false,
                    unreplicated: false,
                });
            }
        }
        // Shuffle deterministically so the planner cannot rely on input order.
        let n = items.len();
        for k in 0..n {
            let j = (k * 7_919 + 13) % n;
            items.swap(k, j);
        }
        let mut pol = HashMap::new();
        for s in 0..STREAMS {
            let p = match s % 4 {
                0 => StreamPolicy {
                    event_retention_days: None,
                    retention_days: Some(1),
                    max_bytes: None,
                    keep_until_replicated: false,
                },
                1 => StreamPolicy {
                    event_retention_days: None,
                    retention_days: None,
                    max_bytes: Some(1_000_000_000),
                    keep_until_replicated: false,
                },
                2 => StreamPolicy {
                    event_retention_days: None,
                    retention_days: Some(1),
                    max_bytes: Some(500_000_000),
                    keep_until_replicated: false,
                },
                _ => StreamPolicy::default(),
            };
            pol.insert(s, p);
        }
        let total_bytes: u64 = items.iter().map(|i| i.bytes).sum();
        // Recordings fill half the disk, 5 % is free, the floor is 30 %: age and
        // quota free about 0.4 of the recordings (20 % of the disk), so free
        // space must delete across streams too, but not everything.
        let disk = Disk { total_bytes: 2 * total_bytes, free_bytes: total_bytes / 10 };
        let started = std::time::Instant::now();
        let d = plan(now, &items, &pol, disk, 30);
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 20, "planner took {elapsed:?}");
        let (age, quota, free) = check_plan(now, &items, &pol, disk, 30, &d);
        assert!(age > 0 && quota > 0 && free > 0, "every rule exercised: {age} {quota} {free}");
        assert!(d.len() < items.len() * 3 / 5, "{} of {} deleted", d.len(), items.len());

        // Every stream with a quota ends at or under it.
        let mut left: HashMap<i64, u64> = HashMap::new();
        let gone: HashSet<i64> = d.iter().map(|x| x.id).collect();
        for it in items.iter().filter(|i| !gone.contains(&i.id)) {
            let total = left.entry(it.stream_id).or_default();
            *total = total.saturating_add(it.bytes);
        }
        for (s, p) in &pol {
            if let Some(max) = p.max_bytes {
                assert!(left[s] <= max, "stream {s}: {} > {max}", left[s]);
            }
        }

        // Same plan for the same input, whatever its order.
        items.reverse();
        assert_eq!(plan(now, &items, &pol, disk, 30), d);
    }

    #[test]
    fn disk_usage_of_a_temp_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = disk_usage(dir.path()).expect("statvfs");
        assert!(disk.total_bytes > 0 && disk.free_bytes <= disk.total_bytes, "{disk:?}");
        let err = disk_usage(&dir.path().join("missing")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
    }

    fn stream(db: &Db, name: &str) -> i64 {
        let spec = StreamSpec { source: "config".to_owned(), ..StreamSpec::new(name, "rtsp://cam") };
        db.upsert_stream(&spec, 0).expect("stream").id
    }

    /// A closed segment with a real file of `bytes` bytes.
    fn recorded(db: &Db, data_dir: &Path, stream_id: i64, name: &str, start_ms: i64, bytes: u64) -> (i64, String) {
        let rel = format!("recordings/{name}/2024-01-01/{start_ms}.mp4");
        let full = data_dir.join(&rel);
        fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        fs::write(&full, vec![0_u8; bytes as usize]).expect("write");
        let id = db
            .insert_segment(&NewSegment {
                stream_id,
                path: rel.clone(),
                start_ms,
                codec: "avc1.64001f".to_owned(),
                width: 640,
                height: 480,
                video_timescale: 90_000,
                init_len: 100,
                has_audio: false,
                trigger: "continuous".to_owned(),
                time_unknown: false,
            })
            .expect("insert");
        let p = SegmentProgress {
            end_ms: start_ms + MIN,
            bytes,
            frames: 1,
            audio_frames: 0,
            fragments: vec![],
            closed: true,
        };
        db.update_segment(id, &p).expect("close");
        (id, rel)
    }

    #[test]
    fn execute_removes_rows_then_files_and_clears_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        let db = Db::open(&data.join("oxinvr.db")).expect("db");
        let mut pol = HashMap::new();
        let mut all = Vec::new();
        for (k, name) in ["a", "b", "c"].iter().enumerate() {
            let s = stream(&db, name);
            pol.insert(
                s,
                StreamPolicy {
                    event_retention_days: None,
                    retention_days: None,
                    max_bytes: Some(2500),
                    keep_until_replicated: false,
                },
            );
            for i in 0..5 {
                all.push(recorded(&db, data, s, name, i * MIN + k as i64, 1000));
            }
        }
        let protected = all[0].0;
        db.set_protected(protected, true).expect("protect");
        // A pending entry from before a crash, whose file is already gone.
        db.conn_for_tests().execute("INSERT INTO garbage (path) VALUES ('recordings/a/gone.mp4')", []).expect("g");

        let walk = |f: &mut dyn FnMut(&Item) -> bool| db.each_retention_item(0, f);
        let d = plan_streaming(10 * MIN, walk, &pol, disk_usage(data).expect("disk"), 0).expect("plan");
        assert_eq!(d, plan(10 * MIN, &db.retention_items().expect("items"), &pol, disk_usage(data).expect("disk"), 0));
        // Each stream has 5000 bytes against a 2500 quota: 3 go (the protected
        // one of "a" counts but is skipped).
        assert_eq!(d.len(), 9);
        assert!(!d.iter().any(|x| x.id == protected));
        // The user protects one more segment between plan and execute: it must survive.
        let raced = d[0].id;
        db.set_protected(raced, true).expect("protect");

        let out = execute(&db, data, &d).expect("execute");
        assert_eq!(out.rows_deleted, 8);
        assert_eq!(out.files_removed, 8);
        assert_eq!(out.already_gone, 1);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert!(db.garbage().expect("g").is_empty());
        let paths = db.all_segment_paths().expect("paths");
        for (id, rel) in &all {
            let planned = d.iter().any(|x| x.id == *id) && *id != raced;
            assert_eq!(data.join(rel).exists(), !planned, "{rel}");
            assert_eq!(paths.contains(rel), !planned, "{rel}");
        }
        assert!(db.segment(protected).expect("q").is_some() && db.segment(raced).expect("q").is_some());
    }

    #[test]
    fn collect_garbage_keeps_failures_for_later_and_never_leaves_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("recordings/a")).expect("mkdir");
        let outside = dir.path().join("precious.txt");
        fs::write(&outside, b"keep").expect("write");
        let db = Db::open(&data.join("oxinvr.db")).expect("db");
        // A directory cannot be unlinked with remove_file: the entry stays pending.
        fs::create_dir_all(data.join("recordings/a/dir.mp4")).expect("mkdir");
        for p in ["recordings/a/dir.mp4", "../precious.txt", "recordings/a/x.mp4"] {
            db.conn_for_tests().execute("INSERT INTO garbage (path) VALUES (?1)", [p]).expect("g");
        }
        fs::write(data.join("recordings/a/x.mp4"), b"x").expect("write");
        let out = collect_garbage(&db, &data).expect("collect");
        assert_eq!((out.files_removed, out.already_gone), (1, 0));
        assert_eq!(out.failures.len(), 2, "{:?}", out.failures);
        assert!(out.failures.iter().any(|f| f.contains("dir.mp4")));
        assert!(out.failures.iter().any(|f| f.contains("precious")));
        assert!(outside.exists(), "never unlinks outside the data dir");
        assert!(!data.join("recordings/a/x.mp4").exists());
        assert_eq!(db.garbage().expect("g"), vec!["recordings/a/dir.mp4".to_owned()]);
    }
}
