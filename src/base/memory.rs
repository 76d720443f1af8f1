//! Memory accounting: a counting global allocator that attributes heap bytes to
//! the subsystem of the thread that allocated them, plus the process figures
//! the kernel reports. Shown by `GET /api/system`.
//!
//! Invariant: every block carries its subsystem in one byte just past the
//! caller's bytes, so a free (from whatever thread) is taken off the subsystem
//! that allocated the block, and a realloc moves the block to the subsystem of
//! the thread that resizes it. A subsystem's figure is thus the bytes of its
//! live blocks: never negative, and the figures sum to the exact total.
//! Counting costs two relaxed atomic adds per allocation and the tag byte,
//! which malloc's 16-byte rounding absorbs for 15 of 16 request sizes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Subsystem {
    Other = 0,
    Ingest = 1,
    Storage = 2,
    Http = 3,
    /// The MQTT client's thread (`notify::mqtt`).
    Mqtt = 4,
    /// Decoding and motion detection (`detect-NAME` threads).
    Detect = 5,
    /// Webhook deliveries (`webhook-N` threads, `notify::webhook`).
    Webhooks = 6,
    /// ONVIF event subscriptions (`onvif-NAME` threads, `onvif::watch`).
    Onvif = 7,
    /// Uploads to the bucket (the `replicate` thread).
    Replicate = 8,
}

const NAMES: [&str; 9] = ["other", "ingest", "storage", "http", "mqtt", "detect", "webhooks", "onvif", "replicate"];

static BYTES: [AtomicUsize; 9] = [const { AtomicUsize::new(0) }; 9];

/// Bytes C code holds outside this allocator, as its Rust owners estimate
/// them (OpenH264's pictures: see `detect::decode`).
static DETECT_NATIVE: AtomicUsize = AtomicUsize::new(0);

/// Moves the native estimate of the detection decoders from `old` to `new` bytes.
pub fn detect_native_update(old: usize, new: usize) {
    DETECT_NATIVE.fetch_add(new, Ordering::Relaxed);
    DETECT_NATIVE.fetch_sub(old, Ordering::Relaxed);
}

/// The decoders' native bytes (an estimate; outside [`heap_by_subsystem`]).
pub fn detect_native_bytes() -> u64 {
    DETECT_NATIVE.load(Ordering::Relaxed) as u64
}

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Attributes this thread's future allocations to `s`.
pub fn set_subsystem(s: Subsystem) {
    CURRENT.with(|c| c.set(s as usize));
}

/// The subsystem this thread's allocations are counted under now.
pub fn current_subsystem() -> Subsystem {
    match slot() {
        1 => Subsystem::Ingest,
        2 => Subsystem::Storage,
        3 => Subsystem::Http,
        4 => Subsystem::Mqtt,
        5 => Subsystem::Detect,
        6 => Subsystem::Webhooks,
        7 => Subsystem::Onvif,
        8 => Subsystem::Replicate,
        _ => Subsystem::Other,
    }
}

fn slot() -> usize {
    CURRENT.try_with(|c| c.get()).unwrap_or(0)
}

/// The layout of a block with room for its tag byte.
fn tagged(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(1)?, align).ok()
}

/// Writes the subsystem of this thread after the `size` bytes at `p` and counts them.
///
/// # Safety
/// `p` must point to a block of at least `size + 1` bytes.
unsafe fn tag(p: *mut u8, size: usize) {
    let s = slot();
    // SAFETY: the block has `size + 1` bytes (caller).
    unsafe { p.add(size).write(s as u8) };
    BYTES[s].fetch_add(size, Ordering::Relaxed);
}

/// The subsystem that allocated the block of `size` caller bytes at `p`.
///
/// # Safety
/// `p` must be a live block of ours of `size` caller bytes.
unsafe fn owner(p: *mut u8, size: usize) -> usize {
    // SAFETY: our blocks have their tag at offset `size` (written by `tag`).
    usize::from(unsafe { p.add(size).read() }) % BYTES.len()
}

pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(l) = tagged(layout.size(), layout.align()) else { return std::ptr::null_mut() };
        // SAFETY: `l` is `layout` plus one byte, non-zero in size.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            // SAFETY: the block has `size + 1` bytes.
            unsafe { tag(p, layout.size()) };
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(l) = tagged(layout.size(), layout.align()) else { return std::ptr::null_mut() };
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            // SAFETY: the block has `size + 1` bytes.
            unsafe { tag(p, layout.size()) };
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of ours of `layout.size()` bytes (GlobalAlloc contract).
        let s = unsafe { owner(ptr, layout.size()) };
        if let Some(l) = tagged(layout.size(), layout.align()) {
            // SAFETY: the block was allocated with exactly this layout by `alloc`.
            unsafe { System.dealloc(ptr, l) };
            BYTES[s].fetch_sub(layout.size(), Ordering::Relaxed);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (Some(old), Some(_)) = (tagged(layout.size(), layout.align()), tagged(new_size, layout.align())) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `ptr` is a live block of ours; its owner is read before it moves.
        let s = unsafe { owner(ptr, layout.size()) };
        // SAFETY: the block was allocated with `old`; `new_size + 1` is valid for its alignment.
        let p = unsafe { System.realloc(ptr, old, new_size + 1) };
        if !p.is_null() {
            BYTES[s].fetch_sub(layout.size(), Ordering::Relaxed);
            // SAFETY: the new block has `new_size + 1` bytes.
            unsafe { tag(p, new_size) };
        }
        p
    }
}

/// Heap bytes of the live blocks each subsystem's threads allocated.
pub fn heap_by_subsystem() -> Vec<(&'static str, u64)> {
    NAMES.iter().zip(BYTES.iter()).map(|(n, b)| (*n, b.load(Ordering::Relaxed) as u64)).collect()
}

/// Process memory from /proc/self/status and /proc/self/smaps_rollup, in bytes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProcessMemory {
    pub rss: u64,
    pub peak_rss: u64,
    pub pss: Option<u64>,
    pub threads: u64,
    pub mem_total: u64,
    pub mem_available: u64,
    /// glibc's malloc as a whole (every arena; None elsewhere): what it got from
    /// the kernel (`arena` + `mapped`), what is handed out, and what it holds free.
    /// A heap that grows while `in_use` does not is fragmentation, not a leak.
    pub malloc: Option<MallocStats>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MallocStats {
    pub arena: u64,
    pub mapped: u64,
    pub in_use: u64,
    pub free: u64,
    pub releasable: u64,
}

fn malloc_stats() -> Option<MallocStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters (taking each arena's lock).
        let m = unsafe { nix::libc::mallinfo2() };
        Some(MallocStats {
            arena: m.arena as u64,
            mapped: m.hblkhd as u64,
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
            releasable: m.keepcost as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

pub fn process_memory() -> ProcessMemory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ProcessMemory {
        rss: kb_field(&status, "VmRSS:").unwrap_or(0),
        peak_rss: kb_field(&status, "VmHWM:").unwrap_or(0),
        pss: kb_field(&rollup, "Pss:"),
        threads: status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        mem_total: kb_field(&meminfo, "MemTotal:").unwrap_or(0),
        mem_available: kb_field(&meminfo, "MemAvailable:").unwrap_or(0),
        malloc: malloc_stats(),
    }
}

/// Sets glibc's malloc up for a long-running recorder with many short-lived
/// threads (connections, live viewers): two arenas instead of eight per core,
/// and a fixed 128 KiB threshold above which blocks are mapped (and unmapped
/// when freed) instead of glibc raising it to 32 MiB after the first large
/// free. With the defaults the soak's anonymous memory reached 30 MiB after 50
/// minutes while the live heap stayed at 2.4 MiB (and SQLite's at 2 MiB); with
/// these, 10 MiB after 10 minutes. No-op elsewhere (musl's malloc on the box),
/// and when `GLIBC_TUNABLES` sets malloc parameters itself (they then stand).
pub fn tune_allocator() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called at start.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Gives the free pages glibc's malloc holds back to the kernel (the storage
/// thread calls it once a minute). No-op elsewhere.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe; it takes each arena's lock in turn.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Parses a `Name:   1234 kB` line into bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields_parse() {
        let t = "Name:\toxinvr\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(kb_field(t, "VmRSS:"), Some(2 * 1024 * 1024));
        assert_eq!(kb_field(t, "VmHWM:"), None);
    }

    /// Heap bytes of one subsystem.
    fn bytes_of(s: Subsystem) -> u64 {
        heap_by_subsystem()[s as usize].1
    }

    /// The test binary's global allocator is the system's: only these tests move
    /// the counters, and only this one counts for storage and http.
    #[test]
    fn a_block_freed_or_grown_elsewhere_leaves_its_owner() {
        let layout = Layout::from_size_align(1000, 8).expect("layout");
        let before = (bytes_of(Subsystem::Storage), bytes_of(Subsystem::Http));
        let addr = std::thread::spawn(move || {
            set_subsystem(Subsystem::Storage);
            // SAFETY: a valid non-zero layout.
            unsafe { CountingAlloc.alloc(layout) as usize }
        })
        .join()
        .expect("thread");
        assert_ne!(addr, 0);
        assert_eq!(bytes_of(Subsystem::Storage), before.0 + 1000);
        std::thread::spawn(move || {
            set_subsystem(Subsystem::Http);
            // SAFETY: `addr` is a live block of `layout` from this allocator.
            let p = unsafe { CountingAlloc.realloc(addr as *mut u8, layout, 3000) };
            assert!(!p.is_null());
            // A grown block belongs to the thread that grew it.
            assert_eq!(bytes_of(Subsystem::Storage), before.0);
            assert_eq!(bytes_of(Subsystem::Http), before.1 + 3000);
            // SAFETY: `p` is live with 3000 bytes.
            unsafe { CountingAlloc.dealloc(p, Layout::from_size_align(3000, 8).expect("layout")) };
        })
        .join()
        .expect("thread");
        assert_eq!((bytes_of(Subsystem::Storage), bytes_of(Subsystem::Http)), before);
    }

    #[test]
    fn the_tag_byte_keeps_alignment_and_zeroing() {
        let layout = Layout::from_size_align(64, 64).expect("layout");
        // SAFETY: a valid non-zero layout; the block is freed with it.
        unsafe {
            let p = CountingAlloc.alloc_zeroed(layout);
            assert!(!p.is_null() && p as usize % 64 == 0);
            assert!(std::slice::from_raw_parts(p, 64).iter().all(|b| *b == 0));
            CountingAlloc.dealloc(p, layout);
        }
    }

    #[test]
    fn process_memory_reads_proc() {
        let m = process_memory();
        assert!(m.rss > 0 && m.threads >= 1 && m.mem_total > 0, "{m:?}");
    }
}
