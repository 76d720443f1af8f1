//! The per-stream ring buffer of encoded frames: one writer (the ingest task),
//! any number of readers (the segment writer, live view), each with its own
//! [`Cursor`].
//!
//! Layout: a fixed-size byte buffer backed by a memory map (a file created in
//! a given directory, sized, mapped and unlinked at once, or an anonymous map)
//! holding records back to back. A record is a [`HEADER_LEN`]-byte header
//! (sequence number, pts, payload length, kind, key flag, magic; little
//! endian) followed by its payload: the frame data, or a [`RunStart`] as JSON.
//!
//! Invariants (all guarded by one `Mutex` whose critical sections are memcpys
//! and arithmetic, never I/O; the only allocation under it is growing a
//! reader's buffer, or keeping a copy of a run start that leaves the index):
//! - Sequence numbers start at 1 and grow by 1 per pushed record; the records
//!   in the ring are exactly `oldest_seq..next_seq` (empty when equal).
//! - A record is contiguous in the buffer. If it does not fit between the
//!   write position and the end of the buffer it goes to offset 0 and the tail
//!   of the buffer is wasted. Record `s + 1` therefore starts where record `s`
//!   ends (offset `capacity` counting as 0), unless it is the record most
//!   recently written at offset 0 (`zero_seq`); no two records in the ring
//!   ever start at offset 0, so a reader finds any live record from the end of
//!   the previous one.
//! - A record (header + payload) is at most `capacity / 2` bytes; bigger ones
//!   are refused with [`RingError::Oversized`] and counted.
//! - Pushing never waits for readers: it evicts the oldest records until the
//!   new one fits. A reader whose next record was evicted gets one
//!   [`ReadResult::Gap`] and resumes at the oldest video keyframe or run start
//!   still in the ring (or at the end if there is none).
//! - The keyframe index holds `(seq, offset)` of video keyframes and run
//!   starts that are in the ring, oldest first, at most [`KEY_INDEX_LEN`]
//!   (the oldest entry is dropped when it is full). The last run start that
//!   left the index is kept aside, so a reader that resumes (after a gap, or
//!   from [`Ring::cursor_at_latest_keyframe`]) at a keyframe is first given
//!   the run start in effect there, whether or not it is still in the ring.
//! - No input makes this module panic: lengths and offsets are checked, and a
//!   header that fails validation (which would be a bug) resets the ring to
//!   empty, which readers see as a gap.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memmap2::{MmapMut, MmapOptions};

use crate::recording::media::{Frame, RunStart, Track};

/// Bytes of the header in front of every record's payload.
pub const HEADER_LEN: usize = 24;
/// Smallest capacity [`Ring::new`] accepts.
pub const MIN_CAPACITY: usize = 1024;
/// Entries of the keyframe index (video keyframes and run starts).
pub const KEY_INDEX_LEN: usize = 256;
/// Floor of [`ring_bytes`]: 1 MiB.
pub const RING_MIN_BYTES: usize = 1 << 20;
/// Cap of [`ring_bytes`]: 512 MiB (a 32 Mbit/s 4K stream for about two
/// minutes). The ring lives in RAM (tmpfs or anonymous memory) on small boxes,
/// so asking for more is almost certainly a configuration mistake.
pub const RING_MAX_BYTES: usize = 512 << 20;

const MAGIC: u16 = 0x5249;
const KIND_VIDEO: u8 = 1;
const KIND_AUDIO: u8 = 2;
const KIND_RUN: u8 = 3;
const FLAG_KEY: u8 = 1;

/// Ring size for `seconds` of a stream of `bitrate_kbps` (1000 bits/s units):
/// `bitrate * seconds / 8` bytes rounded up to a whole MiB, at least
/// [`RING_MIN_BYTES`] and at most [`RING_MAX_BYTES`].
pub fn ring_bytes(bitrate_kbps: u32, seconds: u32) -> usize {
    const MIB: u128 = 1 << 20;
    let bytes = (u128::from(bitrate_kbps) * 1000 * u128::from(seconds)).div_ceil(8);
    let rounded = bytes.div_ceil(MIB) * MIB;
    let clamped = rounded.clamp(RING_MIN_BYTES as u128, RING_MAX_BYTES as u128);
    usize::try_from(clamped).unwrap_or(RING_MAX_BYTES)
}

/// Why a push was refused.
#[derive(Debug)]
pub enum RingError {
    /// Header + payload is more than half the ring. `len` is the payload
    /// length, `max` the largest payload this ring accepts.
    Oversized { len: usize, max: usize },
    /// The run start could not be serialized.
    Encode(serde_json::Error),
    /// The ring's bookkeeping was found inconsistent (a bug); the ring was
    /// reset to empty and the record dropped.
    Internal,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Oversized { len, max } => {
                write!(f, "record of {len} bytes is larger than the ring accepts ({max})")
            }
            RingError::Encode(e) => write!(f, "cannot encode run start: {e}"),
            RingError::Internal => f.write_str("ring bookkeeping inconsistent; ring reset"),
        }
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// A snapshot of a ring's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStats {
    pub capacity: usize,
    /// Bytes from the oldest record to the write position, wasted tail
    /// included.
    pub used_bytes: usize,
    /// Records in the ring (`next_seq - oldest_seq`).
    pub records: u64,
    /// Sequence number of the oldest record; equals `next_seq` when empty.
    pub oldest_seq: u64,
    /// Sequence number the next pushed record will get.
    pub next_seq: u64,
    /// Entries in the keyframe index.
    pub keyframes: usize,
    /// Records refused as too big.
    pub oversized: u64,
    /// Records pushed.
    pub pushes: u64,
    /// Records evicted to make room.
    pub evictions: u64,
}

/// A reader's position. Only meaningful with the ring that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    next_seq: u64,
    /// Where record `next_seq` starts unless it is the ring's `zero_seq`.
    offset: usize,
    /// A run start (by seq, 0 for none) to deliver before record `next_seq`.
    replay_run: u64,
}

impl Cursor {
    /// Sequence number of the next record this cursor will read.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// What [`Ring::read`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// A frame; its data is in the caller's buffer.
    Frame { seq: u64, track: Track, key: bool, pts: i64 },
    /// A run start. After a [`ReadResult::Gap`], and first from a cursor made
    /// by [`Ring::cursor_at_latest_keyframe`], this may be the run start in
    /// effect at the resume point even though it is older than that point
    /// (its `seq` then lies in the lost range); seqs a reader sees are still
    /// strictly increasing.
    Run { seq: u64, run: RunStart },
    /// Caught up: nothing to read yet.
    Empty,
    /// The records `[lost_from, lost_to)` were overwritten before this reader
    /// got them (or skipped because they cannot be decoded without what was
    /// overwritten). The cursor has been moved to the oldest video keyframe or
    /// run start still in the ring, so the next read starts decodable; if
    /// there is none it is moved to the end, and the reader must skip video
    /// until the next keyframe. It is the reader's job to record a gap.
    Gap { lost_from: u64, lost_to: u64 },
}

/// One stream's ring. Share it as `Arc<Ring>`; see the module documentation.
pub struct Ring {
    name: String,
    capacity: usize,
    state: Mutex<State>,
    locked: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("name", &self.name).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl Ring {
    /// Creates a ring of `capacity` bytes (at least [`MIN_CAPACITY`]). With a
    /// directory (tmpfs such as `/dev/shm` or `/run/oxinvr`, or a disk
    /// directory) the buffer is a file created there, reserved with
    /// `fallocate` where supported (so a full tmpfs fails here rather than
    /// with SIGBUS later), mapped, and unlinked before this returns, even on
    /// error; without one it is an anonymous map. Prefer tmpfs or the
    /// anonymous map: on a disk directory the kernel writes dirty pages of the
    /// (unlinked) file back to disk for nothing. The map is populated at once
    /// (`MAP_POPULATE`): the ring costs its whole capacity from the start, in
    /// the process's RSS too, instead of growing into it page by page as the
    /// first lap writes it (an hour at a low bitrate, which looked like a leak),
    /// and the ingest path takes no page faults.
    pub fn new(name: &str, capacity: usize, dir: Option<&Path>) -> io::Result<Ring> {
        if capacity < MIN_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring capacity {capacity} is below the minimum {MIN_CAPACITY}"),
            ));
        }
        let map = match dir {
            None => MmapOptions::new().len(capacity).populate().map_anon()?,
            Some(dir) => map_file(name, capacity, dir)?,
        };
        if map.len() != capacity {
            return Err(io::Error::other("memory map has the wrong length"));
        }
        Ok(Ring {
            name: name.to_owned(),
            capacity,
            state: Mutex::new(State {
                map,
                head: 0,
                tail: 0,
                count: 0,
                oldest_seq: 1,
                next_seq: 1,
                zero_seq: 0,
                index: heapless::Deque::new(),
                dropped_run_seq: 0,
                dropped_run: Vec::new(),
                oversized: 0,
                pushes: 0,
                evictions: 0,
            }),
            locked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Locks the mapping in RAM (mlock) so the kernel never swaps it out;
    /// fails (ENOMEM/EPERM) past RLIMIT_MEMLOCK without CAP_IPC_LOCK.
    pub fn lock_in_memory(&self) -> io::Result<()> {
        self.lock().map.lock()?;
        self.locked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// True once `lock_in_memory` succeeded.
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest payload a record of this ring may have.
    pub fn max_payload(&self) -> usize {
        (self.capacity / 2).saturating_sub(HEADER_LEN)
    }

    /// Appends a frame, evicting the oldest records as needed; returns its seq.
    pub fn push_frame(&self, frame: &Frame) -> Result<u64, RingError> {
        let kind = match frame.track {
            Track::Video => KIND_VIDEO,
            Track::Audio => KIND_AUDIO,
        };
        self.push_record(kind, frame.key, frame.pts, frame.data)
    }

    /// Appends a run start, evicting the oldest records as needed; returns its
    /// seq.
    pub fn push_run(&self, run: &RunStart) -> Result<u64, RingError> {
        let payload = serde_json::to_vec(run).map_err(RingError::Encode)?;
        self.push_record(KIND_RUN, true, run.anchor_pts, &payload)
    }

    fn push_record(&self, kind: u8, key: bool, pts: i64, payload: &[u8]) -> Result<u64, RingError> {
        let max = self.max_payload();
        let mut st = self.lock();
        if payload.len() > max || u32::try_from(payload.len()).is_err() {
            st.oversized += 1;
            return Err(RingError::Oversized { len: payload.len(), max });
        }
        st.push(kind, key, pts, payload)
    }

    pub fn stats(&self) -> RingStats {
        let st = self.lock();
        let used_bytes = if st.count == 0 {
            0
        } else if st.head > st.tail {
            st.head - st.tail
        } else {
            self.capacity - st.tail + st.head
        };
        RingStats {
            capacity: self.capacity,
            used_bytes,
            records: st.count,
            oldest_seq: st.oldest_seq,
            next_seq: st.next_seq,
            keyframes: st.index.len(),
            oversized: st.oversized,
            pushes: st.pushes,
            evictions: st.evictions,
        }
    }

    /// A cursor that will read the next record pushed after now.
    pub fn cursor_at_end(&self) -> Cursor {
        let st = self.lock();
        Cursor { next_seq: st.next_seq, offset: st.head, replay_run: 0 }
    }

    /// A cursor at the newest run start or video keyframe still in the ring
    /// (for live view / pre-buffer), or at the end if there is none. If it is
    /// not at a run start, its first read returns the run start in effect
    /// there (if any run was ever pushed), even one no longer in the ring.
    pub fn cursor_at_latest_keyframe(&self) -> Cursor {
        let st = self.lock();
        match st.index.back().copied() {
            Some((seq, off)) => st.cursor_resuming_at(seq, to_usize(off)),
            None => st.cursor_resuming_at(st.next_seq, st.head),
        }
    }

    /// A cursor at the oldest run start or video keyframe still in the ring
    /// (the events mode's pre-buffer at its longest), or at the end if there
    /// is none; its first read gives the run start in effect there.
    pub fn cursor_at_oldest_keyframe(&self) -> Cursor {
        let st = self.lock();
        match st.index.front().copied() {
            Some((seq, off)) => st.cursor_resuming_at(seq, to_usize(off)),
            None => st.cursor_resuming_at(st.next_seq, st.head),
        }
    }

    /// A cursor at the indexed keyframe or run start `seq` (as the other
    /// keyframe cursors), or `None` if it has left the ring or its index.
    pub fn cursor_at_keyframe(&self, seq: u64) -> Option<Cursor> {
        let st = self.lock();
        let &(seq, off) = st.index.iter().find(|&&(s, _)| s == seq)?;
        Some(st.cursor_resuming_at(seq, to_usize(off)))
    }

    /// A cursor at the oldest record (which may not be decodable).
    #[cfg(test)]
    fn cursor_at_oldest(&self) -> Cursor {
        let st = self.lock();
        Cursor { next_seq: st.oldest_seq, offset: st.tail, replay_run: 0 }
    }

    /// Copies the next record for this cursor into `buf` (cleared first) and
    /// advances the cursor. `buf` holds the frame data after
    /// [`ReadResult::Frame`] and is empty otherwise.
    pub fn read(&self, cursor: &mut Cursor, buf: &mut Vec<u8>) -> ReadResult {
        buf.clear();
        if cursor.replay_run != 0 {
            let seq = std::mem::take(&mut cursor.replay_run);
            let found = self.lock().copy_run(seq, buf);
            let run = if found { decode_run(buf) } else { None };
            buf.clear();
            if let Some(run) = run {
                return ReadResult::Run { seq, run };
            }
        }
        let got = self.lock().read_next(cursor, buf);
        match got {
            Got::Frame { seq, track, key, pts } => ReadResult::Frame { seq, track, key, pts },
            Got::Run { seq } => {
                let run = decode_run(buf);
                buf.clear();
                match run {
                    Some(run) => ReadResult::Run { seq, run },
                    // Only if the ring's memory was corrupted: report the
                    // record as lost rather than hand out garbage.
                    None => ReadResult::Gap { lost_from: seq, lost_to: seq.saturating_add(1) },
                }
            }
            Got::Empty => ReadResult::Empty,
            Got::Gap { lost_from, lost_to } => ReadResult::Gap { lost_from, lost_to },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state is still
        // consistent enough (every update is bounds-checked), so go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn decode_run(buf: &[u8]) -> Option<RunStart> {
    serde_json::from_slice(buf).ok()
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Creates, sizes, maps and unlinks the backing file.
fn map_file(name: &str, capacity: usize, dir: &Path) -> io::Result<MmapMut> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(48)
        .collect();
    let pid = std::process::id();
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("oxinvr-ring-{safe}-{pid}-{n}"));
        let file = match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let mapped = size_and_map(&file, capacity);
        let unlinked = fs::remove_file(&path);
        let map = mapped?;
        unlinked?;
        return Ok(map);
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free ring file name"))
}

fn size_and_map(file: &File, capacity: usize) -> io::Result<MmapMut> {
    let len = u64::try_from(capacity).map_err(io::Error::other)?;
    file.set_len(len)?;
    reserve(file, len)?;
    // SAFETY: the file was just created by us (create_new, mode 0600) and is
    // unlinked as soon as this returns, so nothing else can open it
    // afterwards; its length is never changed again. The only writes to the
    // mapped memory go through this `MmapMut`, which lives in the ring's
    // mutex, so no other code observes it while it changes.
    unsafe { MmapOptions::new().len(capacity).populate().map_mut(file) }
}

/// Reserves the file's blocks (tmpfs pages), so running out of space shows up
/// now as an error and not later as SIGBUS on a write to the map.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{fallocate, FallocateFlags};
    let len = nix::libc::off_t::try_from(len).map_err(io::Error::other)?; // i32 on 32-bit gnu
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP) => {
            log::warn!("ring file: fallocate not supported here, the file stays sparse");
            Ok(())
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

/// A record header as stored in the ring.
#[derive(Clone, Copy, Debug)]
struct Header {
    seq: u64,
    pts: i64,
    len: usize,
    kind: u8,
    key: bool,
}

impl Header {
    fn encode(&self, out: &mut [u8]) {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&self.seq.to_le_bytes());
        h[8..16].copy_from_slice(&self.pts.to_le_bytes());
        h[16..20].copy_from_slice(&u32::try_from(self.len).unwrap_or(u32::MAX).to_le_bytes());
        h[20] = self.kind;
        h[21] = if self.key { FLAG_KEY } else { 0 };
        h[22..24].copy_from_slice(&MAGIC.to_le_bytes());
        if let Some(dst) = out.get_mut(..HEADER_LEN) {
            dst.copy_from_slice(&h);
        }
    }

    /// Reads and validates the header of the record at `off`: the magic, the
    /// kind, and that the whole record lies inside `map`.
    fn decode(map: &[u8], off: usize) -> Option<Header> {
        let end = off.checked_add(HEADER_LEN)?;
        let h = map.get(off..end)?;
        let bytes = |at: usize| -> Option<[u8; 8]> { h.get(at..at + 8)?.try_into().ok() };
        let (seq, pts) = (u64::from_le_bytes(bytes(0)?), i64::from_le_bytes(bytes(8)?));
        let [l0, l1, l2, l3, kind, flags, m0, m1] = bytes(16)?;
        if u16::from_le_bytes([m0, m1]) != MAGIC || !(KIND_VIDEO..=KIND_RUN).contains(&kind) {
            return None;
        }
        let len = usize::try_from(u32::from_le_bytes([l0, l1, l2, l3])).ok()?;
        if end.checked_add(len)? > map.len() {
            return None;
        }
        Some(Header { seq, pts, len, kind, key: flags & FLAG_KEY != 0 })
    }

    fn record_len(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// What `State::read_next` found (a run start's JSON is decoded outside the
/// lock).
enum Got {
    Frame { seq: u64, track: Track, key: bool, pts: i64 },
    Run { seq: u64 },
    Empty,
    Gap { lost_from: u64, lost_to: u64 },
}

struct State {
    map: MmapMut,
    /// Where the next record goes if it fits before the end (`< capacity`).
    head: usize,
    /// Where the oldest record starts (meaningless when empty).
    tail: usize,
    /// Records in the ring, `next_seq - oldest_seq`.
    count: u64,
    oldest_seq: u64,
    next_seq: u64,
    /// The record most recently written at offset 0 (0 for none yet).
    zero_seq: u64,
    /// `(seq, offset)` of video keyframes and run starts in the ring.
    index: heapless::Deque<(u64, u64), KEY_INDEX_LEN>,
    /// The newest run start that left the index (0 for none) and its JSON.
    dropped_run_seq: u64,
    dropped_run: Vec<u8>,
    oversized: u64,
    pushes: u64,
    evictions: u64,
}

impl State {
    fn capacity(&self) -> usize {
        self.map.len()
    }

    /// `off` with the end of the buffer mapped to 0.
    fn wrap_end(&self, off: usize) -> usize {
        if off >= self.capacity() {
            0
        } else {
            off
        }
    }

    /// Where record `seq` (which must be in the ring) starts, given where the
    /// previous record ended.
    fn offset_of(&self, seq: u64, after_prev: usize) -> usize {
        if seq == self.zero_seq {
            0
        } else {
            after_prev
        }
    }

    fn header_of(&self, seq: u64, off: usize) -> Option<Header> {
        Header::decode(&self.map, off).filter(|h| h.seq == seq)
    }

    fn push(&mut self, kind: u8, key: bool, pts: i64, payload: &[u8]) -> Result<u64, RingError> {
        let cap = self.capacity();
        // payload <= capacity / 2 - HEADER_LEN was checked by the caller.
        let rec_len = HEADER_LEN + payload.len();
        let wrap = self.head + rec_len > cap;
        let at = if wrap { 0 } else { self.head };
        while self.count > 0 && !self.fits(rec_len, wrap) {
            self.evict_oldest();
        }
        let seq = self.next_seq;
        let Some(dst) = self.map.get_mut(at..at + rec_len) else {
            self.reset();
            return Err(RingError::Internal);
        };
        Header { seq, pts, len: payload.len(), kind, key }.encode(dst);
        if let Some(body) = dst.get_mut(HEADER_LEN..) {
            body.copy_from_slice(payload);
        }
        if self.count == 0 {
            self.tail = at;
            self.oldest_seq = seq;
        }
        if at == 0 {
            self.zero_seq = seq;
        }
        self.head = self.wrap_end(at + rec_len);
        self.count += 1;
        self.next_seq += 1;
        self.pushes += 1;
        if kind == KIND_RUN || (kind == KIND_VIDEO && key) {
            if self.index.is_full() {
                self.drop_index_front();
            }
            // Cannot fail: there is room now.
            let _ = self.index.push_back((seq, at as u64));
        }
        Ok(seq)
    }

    /// Whether a record of `rec_len` bytes fits at the head (or, if `wrap`,
    /// at 0 with the tail of the buffer wasted) without touching the oldest
    /// record. Only called when the ring is not empty.
    fn fits(&self, rec_len: usize, wrap: bool) -> bool {
        let (head, tail) = (self.head, self.tail);
        if wrap {
            // [head, capacity) and [0, rec_len) must be free: the live records
            // must lie in [rec_len, head).
            tail < head && rec_len <= tail
        } else if tail > head {
            head + rec_len <= tail
        } else {
            // tail < head: [head, capacity) is free. tail == head: full.
            tail < head
        }
    }

    fn evict_oldest(&mut self) {
        let Some(h) = self.header_of(self.oldest_seq, self.tail) else {
            self.reset();
            return;
        };
        while self.index.front().is_some_and(|&(s, _)| s <= self.oldest_seq) {
            self.drop_index_front();
        }
        self.oldest_seq += 1;
        self.count -= 1;
        self.evictions += 1;
        self.tail = if self.count == 0 {
            self.head
        } else {
            let after = self.wrap_end(self.tail + h.record_len());
            self.offset_of(self.oldest_seq, after)
        };
    }

    /// Removes the oldest index entry; keeps a copy of it if it is a run
    /// start (still in the map: entries leave the index before their record
    /// is overwritten).
    fn drop_index_front(&mut self) {
        let Some((seq, off)) = self.index.pop_front() else {
            return;
        };
        let off = to_usize(off);
        if let Some(h) = self.header_of(seq, off).filter(|h| h.kind == KIND_RUN) {
            if let Some(payload) = self.map.get(off + HEADER_LEN..off + h.record_len()) {
                self.dropped_run.clear();
                self.dropped_run.extend_from_slice(payload);
                self.dropped_run_seq = seq;
            }
        }
    }

    /// Forgets every record (only when the bookkeeping is found broken).
    fn reset(&mut self) {
        log::error!("ring bookkeeping inconsistent at seq {}; dropping its contents", self.oldest_seq);
        while !self.index.is_empty() {
            self.drop_index_front();
        }
        self.count = 0;
        self.oldest_seq = self.next_seq;
        self.tail = self.head;
    }

    fn is_run_at(&self, seq: u64, off: usize) -> bool {
        self.header_of(seq, off).is_some_and(|h| h.kind == KIND_RUN)
    }

    /// The newest run start before `seq` (0 for none).
    fn run_before(&self, seq: u64) -> u64 {
        self.index
            .iter()
            .rev()
            .filter(|&&(s, _)| s < seq)
            .find(|&&(s, off)| self.is_run_at(s, to_usize(off)))
            .map(|&(s, _)| s)
            .unwrap_or(if self.dropped_run_seq < seq { self.dropped_run_seq } else { 0 })
    }

    /// A cursor at `seq` (an index entry, or the end) that first replays the
    /// run start in effect there unless `seq` is itself one.
    fn cursor_resuming_at(&self, seq: u64, off: usize) -> Cursor {
        let replay_run = if seq < self.next_seq && self.is_run_at(seq, off) { 0 } else { self.run_before(seq) };
        Cursor { next_seq: seq, offset: off, replay_run }
    }

    /// Appends the JSON of run start `seq` to `buf`, if it is still known.
    fn copy_run(&self, seq: u64, buf: &mut Vec<u8>) -> bool {
        if seq == self.dropped_run_seq {
            buf.extend_from_slice(&self.dropped_run);
            return true;
        }
        let Some(&(_, off)) = self.index.iter().find(|&&(s, _)| s == seq) else {
            return false;
        };
        let off = to_usize(off);
        match self.header_of(seq, off).filter(|h| h.kind == KIND_RUN) {
            Some(h) => match self.map.get(off + HEADER_LEN..off + h.record_len()) {
                Some(payload) => {
                    buf.extend_from_slice(payload);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    fn read_next(&mut self, cursor: &mut Cursor, buf: &mut Vec<u8>) -> Got {
        let seq = cursor.next_seq;
        if seq >= self.next_seq {
            return Got::Empty;
        }
        if seq < self.oldest_seq {
            return self.resync(cursor, seq, self.oldest_seq);
        }
        let off = self.offset_of(seq, cursor.offset);
        let Some(h) = self.header_of(seq, off) else {
            // Cannot happen for a cursor of this ring; skip ahead.
            return self.resync(cursor, seq, seq + 1);
        };
        let Some(payload) = self.map.get(off + HEADER_LEN..off + h.record_len()) else {
            return self.resync(cursor, seq, seq + 1);
        };
        cursor.next_seq = seq + 1;
        cursor.offset = self.wrap_end(off + h.record_len());
        match h.kind {
            KIND_RUN => {
                buf.extend_from_slice(payload);
                Got::Run { seq }
            }
            kind => {
                buf.extend_from_slice(payload);
                let track = if kind == KIND_VIDEO { Track::Video } else { Track::Audio };
                Got::Frame { seq, track, key: h.key, pts: h.pts }
            }
        }
    }

    /// Moves `cursor` to the oldest index entry at or after `min_seq` (or the
    /// end) and reports `[lost_from, that seq)` as lost.
    fn resync(&self, cursor: &mut Cursor, lost_from: u64, min_seq: u64) -> Got {
        let target = self.index.iter().find(|&&(s, _)| s >= min_seq).copied();
        let (seq, off) = match target {
            Some((s, off)) => (s, to_usize(off)),
            None => (self.next_seq, self.head),
        };
        let mut resumed = self.cursor_resuming_at(seq, off);
        if resumed.replay_run < lost_from {
            // The reader already had it (or there is none).
            resumed.replay_run = 0;
        }
        *cursor = resumed;
        Got::Gap { lost_from, lost_to: seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::media::{AudioParams, VideoParams};
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Resident bytes of the ring's map in this process, and its length:
    /// pages present in /proc/self/pagemap (what RSS counts), over exactly the
    /// ring's range, since the kernel may merge an anonymous ring with a
    /// neighbouring map so its smaps entry covers more than the ring. `None`
    /// where smaps does not show this process's own addresses (the MIPS tests
    /// under qemu-user read the emulator's).
    fn resident(ring: &Ring) -> Option<(u64, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        const PAGE: u64 = 4096;
        let st = ring.lock();
        let (addr, len) = (st.map.as_ptr() as u64, st.map.len() as u64);
        let maps = fs::read_to_string("/proc/self/maps").ok()?;
        let shown = maps.lines().any(|l| {
            let range = l.split(' ').next().unwrap_or("");
            let (a, b) = range.split_once('-').unwrap_or(("", ""));
            let a = u64::from_str_radix(a, 16).unwrap_or(u64::MAX);
            let b = u64::from_str_radix(b, 16).unwrap_or(0);
            a <= addr && addr + len <= b
        });
        if !shown {
            return None;
        }
        let mut pagemap = fs::File::open("/proc/self/pagemap").expect("pagemap");
        pagemap.seek(SeekFrom::Start(addr / PAGE * 8)).expect("seek pagemap");
        let mut entries = vec![0u8; (len / PAGE * 8) as usize];
        pagemap.read_exact(&mut entries).expect("read pagemap");
        let present = entries
            .chunks_exact(8)
            .filter(|e| u64::from_le_bytes(<[u8; 8]>::try_from(*e).expect("8 bytes")) >> 63 == 1)
            .count() as u64;
        Some((present * PAGE, len))
    }

    #[test]
    fn a_new_ring_is_resident_from_the_start() {
        // Otherwise the process grows into its rings during the first lap, which
        // at a low bitrate takes hours and reads as a leak.
        let dir = tempfile::tempdir().expect("tempdir");
        for d in [None, Some(dir.path())] {
            let ring = Ring::new("resident", 1 << 20, d).expect("ring");
            let Some((resident, len)) = resident(&ring) else {
                eprintln!("skipped: /proc/self/smaps does not show this process's mappings (emulated?)");
                return;
            };
            assert_eq!(resident, len, "ring in {d:?}: {resident} of {len} bytes resident");
        }
    }

    fn video(key: bool, pts: i64, data: &[u8]) -> Frame<'_> {
        Frame { track: Track::Video, key, pts, data }
    }

    fn run_start(anchor: i64) -> RunStart {
        RunStart {
            video: VideoParams {
                codec: "avc1.64001f".into(),
                width: 1920,
                height: 1080,
                timescale: 90_000,
                sample_entry: vec![1, 2, 3, 4, 5],
            },
            audio: Some(AudioParams {
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                channels: 2,
                frame_ticks: 1024,
                sample_entry: vec![9, 8, 7],
            }),
            anchor_pts: anchor,
            anchor_wall_ms: 1_700_000_000_000,
            time_unknown: false,
        }
    }

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn pattern(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8).collect()
    }

    fn expect_frame(r: ReadResult) -> (u64, Track, bool, i64) {
        match r {
            ReadResult::Frame { seq, track, key, pts } => (seq, track, key, pts),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn ring_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ring>();
        check::<Cursor>();
    }

    #[test]
    fn ring_bytes_rounds_floors_and_caps() {
        assert_eq!(ring_bytes(0, 0), RING_MIN_BYTES);
        assert_eq!(ring_bytes(100, 10), RING_MIN_BYTES);
        // 4 Mbit/s for 10 s = 5 000 000 bytes -> 5 MiB.
        assert_eq!(ring_bytes(4000, 10), 5 << 20);
        // Exactly 2 MiB stays 2 MiB: 2 MiB * 8 bits = 16 777 216 bits = 16 777.216 kbit.
        assert_eq!(ring_bytes(16_384, 1), 2 << 20);
        assert_eq!(ring_bytes(u32::MAX, u32::MAX), RING_MAX_BYTES);
    }

    #[test]
    fn too_small_capacity_is_refused() {
        assert!(Ring::new("x", MIN_CAPACITY - 1, None).is_err());
        assert!(Ring::new("x", 0, None).is_err());
        assert!(Ring::new("x", MIN_CAPACITY, None).is_ok());
    }

    #[test]
    fn push_and_read_in_order() {
        let ring = Ring::new("cam", 64 << 10, None).expect("ring");
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        for i in 0..20u64 {
            let data = pattern(i, 100 + i as usize);
            let track = if i % 3 == 2 { Track::Audio } else { Track::Video };
            let f = Frame { track, key: i % 5 == 0, pts: i as i64 * 3000 - 7, data: &data };
            assert_eq!(ring.push_frame(&f).expect("push"), i + 1);
        }
        for i in 0..20u64 {
            let (seq, track, key, pts) = expect_frame(ring.read(&mut cur, &mut buf));
            assert_eq!(seq, i + 1);
            assert_eq!(track, if i % 3 == 2 { Track::Audio } else { Track::Video });
            assert_eq!(key, i % 5 == 0);
            assert_eq!(pts, i as i64 * 3000 - 7);
            assert_eq!(buf, pattern(i, 100 + i as usize));
        }
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        assert!(buf.is_empty());
        let s = ring.stats();
        assert_eq!((s.records, s.oldest_seq, s.next_seq, s.pushes, s.evictions), (20, 1, 21, 20, 0));
        assert_eq!(s.used_bytes, (0..20).map(|i| HEADER_LEN + 100 + i).sum::<usize>());
        // Video keyframes only: i = 0, 5, 10, 15 are video; 5 % 3 == 2 is audio.
        assert_eq!(s.keyframes, 3);
        // A zero-length frame is fine.
        let seq = ring.push_frame(&video(false, 0, &[])).expect("empty frame");
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, seq);
        assert!(buf.is_empty());
    }

    #[test]
    fn records_that_end_exactly_at_the_end_and_tiny_tails() {
        let cap = 1024;
        let ring = Ring::new("cam", cap, None).expect("ring");
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        let half = cap / 2 - HEADER_LEN;
        // Two records filling the buffer exactly: the second ends at the end.
        for (seq, len) in [(1u64, half), (2, half)] {
            ring.push_frame(&video(true, seq as i64, &pattern(seq, len))).expect("push");
        }
        assert_eq!(ring.lock().head, 0);
        assert_eq!(ring.stats().used_bytes, cap);
        for seq in 1..=2 {
            assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, seq);
            assert_eq!(buf, pattern(seq, half));
        }
        // The third goes to 0 and evicts the first only.
        ring.push_frame(&video(true, 3, &pattern(3, 100))).expect("push");
        let s = ring.stats();
        assert_eq!((s.oldest_seq, s.records, s.evictions), (2, 2, 1));
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, 3);
        assert_eq!(buf, pattern(3, 100));
        // Leave fewer than HEADER_LEN bytes before the end, then wrap.
        ring.push_frame(&video(false, 4, &pattern(4, 400))).expect("push");
        let head = ring.lock().head;
        let fill = cap - head - 10 - HEADER_LEN;
        ring.push_frame(&video(false, 5, &pattern(5, fill))).expect("push");
        assert_eq!(ring.lock().head, cap - 10);
        ring.push_frame(&video(false, 6, &pattern(6, 50))).expect("push");
        assert_eq!(ring.lock().head, HEADER_LEN + 50);
        assert_eq!(ring.stats().oldest_seq, 4);
        for (seq, len) in [(4, 400), (5, fill), (6, 50)] {
            assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, seq);
            assert_eq!(buf, pattern(seq, len));
        }
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        // A cursor made at the end before a wrapping push finds the record at 0.
        ring.push_frame(&video(false, 7, &pattern(7, 400))).expect("push");
        ring.push_frame(&video(false, 8, &pattern(8, 400))).expect("push");
        assert_eq!(ring.lock().head, HEADER_LEN + 50 + 2 * (HEADER_LEN + 400));
        let mut late = ring.cursor_at_end();
        ring.push_frame(&video(false, 9, &pattern(9, 200))).expect("push");
        ring.push_frame(&video(false, 10, &pattern(10, 200))).expect("push");
        assert_eq!(ring.lock().zero_seq, 9);
        for seq in [9, 10] {
            assert_eq!(expect_frame(ring.read(&mut late, &mut buf)).0, seq);
            assert_eq!(buf, pattern(seq, 200));
        }
        assert_eq!(ring.read(&mut late, &mut buf), ReadResult::Empty);
    }

    /// Every live record is intact and the ring doesn't evict more than needed.
    fn check_against_model(ring: &Ring, model: &VecDeque<(u64, Vec<u8>)>, max_rec: usize) {
        let s = ring.stats();
        let live: Vec<_> = model.iter().filter(|(seq, _)| *seq >= s.oldest_seq).collect();
        assert_eq!(live.len() as u64, s.records);
        assert_eq!(s.next_seq, model.back().map_or(1, |m| m.0 + 1));
        let live_bytes: usize = live.iter().map(|(_, d)| HEADER_LEN + d.len()).sum();
        assert!(live_bytes <= s.used_bytes && s.used_bytes <= s.capacity);
        if s.evictions > 0 {
            assert!(live_bytes + 2 * max_rec >= s.capacity, "over-evicted: {live_bytes} live");
        }
        let mut cur = ring.cursor_at_oldest();
        let mut buf = Vec::new();
        for (seq, data) in live {
            let (got, ..) = expect_frame(ring.read(&mut cur, &mut buf));
            assert_eq!(got, *seq);
            assert_eq!(&buf, data, "record {seq}");
        }
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
    }

    #[test]
    fn wraps_many_times_with_variable_sizes() {
        let cap = 4096;
        let ring = Ring::new("cam", cap, None).expect("ring");
        let max = ring.max_payload();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut follower = ring.cursor_at_end();
        let mut buf = Vec::new();
        let mut exact_hits = 0;
        for i in 0..20_000u64 {
            let head = ring.lock().head;
            let len = match rng.below(10) {
                // Exactly reach the end of the buffer when that is allowed.
                0 if cap - head >= HEADER_LEN && cap - head - HEADER_LEN <= max => cap - head - HEADER_LEN,
                1 => max,
                2 => 0,
                3 => rng.below(max as u64 + 1) as usize,
                _ => rng.below(300) as usize,
            };
            if head + HEADER_LEN + len == cap {
                exact_hits += 1;
            }
            let data = pattern(rng.next(), len);
            let seq = ring.push_frame(&video(i % 7 == 0, i as i64, &data)).expect("push");
            assert_eq!(seq, i + 1);
            model.push_back((seq, data));
            while model.len() > cap / HEADER_LEN {
                model.pop_front();
            }
            // A reader keeping up sees every record.
            {
                loop {
                    match ring.read(&mut follower, &mut buf) {
                        ReadResult::Empty => break,
                        ReadResult::Frame { seq, pts, .. } => {
                            let (_, data) = model.iter().find(|m| m.0 == seq).expect("in model");
                            assert_eq!(&buf, data);
                            assert_eq!(pts, seq as i64 - 1);
                        }
                        other => panic!("follower got {other:?}"),
                    }
                }
            }
            if i % 97 == 0 {
                check_against_model(&ring, &model, HEADER_LEN + max);
            }
        }
        check_against_model(&ring, &model, HEADER_LEN + max);
        assert!(exact_hits > 100, "only {exact_hits} exact hits");
        let s = ring.stats();
        assert!(s.evictions > 15_000);
        assert_eq!(s.pushes, 20_000);
        assert_eq!(s.keyframes as u64, ring.lock().index.iter().count() as u64);
        assert!(ring.lock().index.iter().all(|&(seq, _)| seq >= s.oldest_seq && (seq - 1) % 7 == 0));
    }

    #[test]
    fn slow_reader_gets_one_gap_then_resumes_at_a_keyframe() {
        let ring = Ring::new("cam", 4096, None).expect("ring");
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        let run = run_start(0);
        assert_eq!(ring.push_run(&run).expect("run"), 1);
        // Frames 2.. ; keyframe every 10th.
        for i in 0..500u64 {
            let seq = ring.push_frame(&video(i % 10 == 0, i as i64, &pattern(i, 100))).expect("push");
            assert_eq!(seq, i + 2);
        }
        let s = ring.stats();
        assert!(s.oldest_seq > 2);
        let first_key = (s.oldest_seq..).find(|seq| (seq - 2) % 10 == 0).expect("key");
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Gap { lost_from: 1, lost_to: first_key });
        // The run start was lost: it is handed over first.
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run: run.clone() });
        let (seq, _, key, _) = expect_frame(ring.read(&mut cur, &mut buf));
        assert_eq!((seq, key), (first_key, true));
        assert_eq!(buf, pattern(first_key - 2, 100));
        let mut last = seq;
        loop {
            match ring.read(&mut cur, &mut buf) {
                ReadResult::Frame { seq, .. } => {
                    assert_eq!(seq, last + 1);
                    assert_eq!(buf, pattern(seq - 2, 100));
                    last = seq;
                }
                ReadResult::Empty => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(last, s.next_seq - 1);
    }

    #[test]
    fn gap_without_keyframe_resumes_at_end() {
        let ring = Ring::new("cam", 4096, None).expect("ring");
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        ring.push_frame(&video(true, 0, &[1; 100])).expect("push");
        for i in 1..200 {
            ring.push_frame(&video(false, i, &[2; 100])).expect("push");
        }
        assert_eq!(ring.stats().keyframes, 0);
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Gap { lost_from: 1, lost_to: 201 });
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        ring.push_frame(&video(true, 200, &[3; 10])).expect("push");
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, 201);
    }

    #[test]
    fn writer_never_fails_when_readers_lag() {
        let ring = Ring::new("cam", MIN_CAPACITY, None).expect("ring");
        let stalled = ring.cursor_at_end();
        let mut rng = Rng(7);
        for i in 0..10_000 {
            let len = rng.below(ring.max_payload() as u64 + 1) as usize;
            ring.push_frame(&video(i % 3 == 0, i, &vec![5; len])).expect("push never fails");
        }
        let s = ring.stats();
        assert_eq!(s.pushes, 10_000);
        assert!(s.evictions > 9_000);
        let mut cur = stalled;
        let mut buf = Vec::new();
        assert!(matches!(ring.read(&mut cur, &mut buf), ReadResult::Gap { lost_from: 1, .. }));
    }

    #[test]
    fn oversized_record_is_refused() {
        let ring = Ring::new("cam", 4096, None).expect("ring");
        let max = ring.max_payload();
        assert_eq!(max, 2048 - HEADER_LEN);
        let big = vec![0u8; max + 1];
        match ring.push_frame(&video(true, 0, &big)) {
            Err(RingError::Oversized { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
            other => panic!("expected oversized, got {other:?}"),
        }
        let huge = vec![0u8; 1 << 20];
        assert!(ring.push_frame(&video(true, 0, &huge)).is_err());
        let s = ring.stats();
        assert_eq!((s.oversized, s.pushes, s.next_seq), (2, 0, 1));
        assert_eq!(ring.push_frame(&video(true, 0, &big[..max])).expect("max fits"), 1);
        let mut cur = ring.cursor_at_latest_keyframe();
        let mut buf = Vec::new();
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, 1);
        assert_eq!(buf.len(), max);
    }

    #[test]
    fn file_backed_ring_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Ring::new("cam 1/main..", 64 << 10, Some(dir.path())).expect("ring");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        for i in 0..2000u64 {
            ring.push_frame(&video(i % 10 == 0, i as i64, &pattern(i, 500))).expect("push");
            let (seq, ..) = expect_frame(ring.read(&mut cur, &mut buf));
            assert_eq!(seq, i + 1);
            assert_eq!(buf, pattern(i, 500));
        }
        drop(ring);
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
        // A missing directory is an error, not a panic.
        assert!(Ring::new("cam", 64 << 10, Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn run_records_round_trip() {
        let ring = Ring::new("cam", 64 << 10, None).expect("ring");
        let mut cur = ring.cursor_at_end();
        let mut buf = Vec::new();
        let mut run = run_start(12_345);
        assert_eq!(ring.push_run(&run).expect("run"), 1);
        run.audio = None;
        run.anchor_pts = -5;
        assert_eq!(ring.push_run(&run).expect("run"), 2);
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run: run_start(12_345) });
        assert!(buf.is_empty());
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 2, run });
        assert_eq!(ring.stats().keyframes, 2);
    }

    #[test]
    fn cursor_at_latest_keyframe() {
        let ring = Ring::new("cam", 64 << 10, None).expect("ring");
        let mut buf = Vec::new();
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        let run = run_start(0);
        ring.push_run(&run).expect("run"); // 1
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run: run.clone() });
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        ring.push_frame(&video(true, 0, b"k2")).expect("push"); // 2
        ring.push_frame(&video(false, 1, b"p3")).expect("push"); // 3
        ring.push_frame(&Frame { track: Track::Audio, key: true, pts: 1, data: b"a4" }).expect("push"); // 4
        ring.push_frame(&video(true, 2, b"k5")).expect("push"); // 5
        ring.push_frame(&video(false, 3, b"p6")).expect("push"); // 6
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(cur.next_seq(), 5);
        // The run in effect comes first, then the keyframe.
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run: run.clone() });
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)), (5, Track::Video, true, 2));
        assert_eq!(buf, b"k5");
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, 6);
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        // A newer run start is the position itself, without replay.
        let run2 = run_start(99);
        ring.push_run(&run2).expect("run"); // 7
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 7, run: run2.clone() });
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
        // The end cursor does not replay anything.
        let mut end = ring.cursor_at_end();
        assert_eq!(ring.read(&mut end, &mut buf), ReadResult::Empty);
    }

    #[test]
    fn run_in_effect_survives_index_overflow_and_eviction() {
        let ring = Ring::new("cam", 64 << 10, None).expect("ring");
        let mut buf = Vec::new();
        let run = run_start(5);
        ring.push_run(&run).expect("run");
        for i in 0..300 {
            ring.push_frame(&video(true, i, &[1; 8])).expect("push");
        }
        let s = ring.stats();
        assert_eq!((s.keyframes, s.evictions), (KEY_INDEX_LEN, 0));
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run: run.clone() });
        assert_eq!(expect_frame(ring.read(&mut cur, &mut buf)).0, 301);
        // Now evict everything, with no keyframe left: still known.
        for i in 0..2000 {
            ring.push_frame(&video(false, i, &[2; 100])).expect("push");
        }
        assert_eq!(ring.stats().keyframes, 0);
        let mut cur = ring.cursor_at_latest_keyframe();
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Run { seq: 1, run });
        assert_eq!(ring.read(&mut cur, &mut buf), ReadResult::Empty);
    }

    #[test]
    fn scribbled_memory_does_not_panic() {
        let ring = Ring::new("cam", 4096, None).expect("ring");
        let mut buf = Vec::new();
        let mut cur = ring.cursor_at_end();
        let mut stale = ring.cursor_at_end();
        for i in 0..10 {
            ring.push_frame(&video(i % 3 == 0, i, &[7; 100])).expect("push");
        }
        // Anything in the map (a bug, or another process) must not make us panic.
        ring.lock().map.fill(0xFF);
        assert!(matches!(ring.read(&mut cur, &mut buf), ReadResult::Gap { lost_from: 1, .. }));
        for seed in 0..50u8 {
            let _ = ring.push_frame(&video(seed % 3 == 0, i64::from(seed), &[seed; 300]));
            if seed % 5 == 0 {
                let mut st = ring.lock();
                let tail = st.tail;
                if let Some(b) = st.map.get_mut(tail..tail + 30) {
                    b.fill(seed);
                }
            }
            let _ = ring.read(&mut stale, &mut buf);
            let _ = ring.cursor_at_latest_keyframe();
            let _ = ring.stats();
        }
        // Once writes go on normally, the ring is healthy again.
        let mut cur = ring.cursor_at_end();
        for i in 0..100 {
            let seq = ring.push_frame(&video(true, i, &pattern(i as u64, 200))).expect("push");
            let (got, ..) = expect_frame(ring.read(&mut cur, &mut buf));
            assert_eq!(got, seq);
            assert_eq!(buf, pattern(i as u64, 200));
        }
    }

    /// Frame data for the concurrency test: index, filler, FNV-1a checksum.
    fn checked_data(i: u64, len: usize) -> Vec<u8> {
        let mut d = Vec::with_capacity(len + 16);
        d.extend_from_slice(&i.to_le_bytes());
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            d.push(x as u8);
        }
        let sum = fnv(&d);
        d.extend_from_slice(&sum.to_le_bytes());
        d
    }

    fn fnv(d: &[u8]) -> u64 {
        d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }

    #[test]
    fn concurrent_writer_and_reader() {
        const FRAMES: u64 = 100_000;
        let ring = Arc::new(Ring::new("cam", 256 << 10, None).expect("ring"));
        let done = Arc::new(AtomicBool::new(false));
        let mut cur = ring.cursor_at_end();
        let writer = {
            let (ring, done) = (Arc::clone(&ring), Arc::clone(&done));
            std::thread::spawn(move || {
                for i in 0..FRAMES {
                    let len = ((i * 7919) % 1500) as usize;
                    let data = checked_data(i, len);
                    let seq = ring.push_frame(&video(i % 30 == 0, i as i64, &data)).expect("push");
                    assert_eq!(seq, i + 1);
                }
                done.store(true, Ordering::Release);
            })
        };
        let mut buf = Vec::new();
        let (mut last_seq, mut frames, mut gaps) = (0u64, 0u64, 0u64);
        loop {
            match ring.read(&mut cur, &mut buf) {
                ReadResult::Frame { seq, pts, .. } => {
                    assert!(seq > last_seq, "seq {seq} after {last_seq}");
                    last_seq = seq;
                    frames += 1;
                    let (body, sum) = buf.split_at(buf.len() - 8);
                    assert_eq!(fnv(body).to_le_bytes(), sum, "checksum of seq {seq}");
                    let i = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    assert_eq!(i + 1, seq);
                    assert_eq!(pts, i as i64);
                    assert_eq!(buf, checked_data(i, ((i * 7919) % 1500) as usize));
                }
                ReadResult::Gap { lost_from, lost_to } => {
                    assert!(lost_from > last_seq && lost_to > lost_from);
                    last_seq = lost_to - 1;
                    gaps += 1;
                }
                ReadResult::Empty => {
                    if done.load(Ordering::Acquire) && ring.stats().next_seq == cur.next_seq() {
                        break;
                    }
                    std::thread::yield_now();
                }
                ReadResult::Run { .. } => panic!("no runs were pushed"),
            }
        }
        writer.join().expect("writer");
        assert_eq!(last_seq, FRAMES);
        assert!(frames > 0);
        eprintln!("concurrent: {frames} frames read, {gaps} gaps");
    }
}
