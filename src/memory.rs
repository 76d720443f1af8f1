//! Memory accounting: a counting global allocator that attributes heap bytes to
//! the subsystem of the thread that allocated them, plus the process figures
//! the kernel reports. Shown by `GET /api/system`.
//!
//! Invariant: counting costs two relaxed atomic adds per allocation; bytes
//! freed by another thread than the one that allocated them are subtracted
//! from the freeing thread's subsystem, so the total is exact and a
//! subsystem's figure is true as long as its data stays among its own threads.
//! Hence every thread that handles a subsystem's data is tagged with it,
//! tiny_http's accept and connection threads too (they read the requests the
//! http workers free).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Subsystem {
    Other = 0,
    Ingest = 1,
    Storage = 2,
    Http = 3,
}

const NAMES: [&str; 4] = ["other", "ingest", "storage", "http"];

static BYTES: [AtomicIsize; 4] = [const { AtomicIsize::new(0) }; 4];

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Attributes this thread's future allocations to `s`.
pub fn set_subsystem(s: Subsystem) {
    CURRENT.with(|c| c.set(s as usize));
}

fn slot() -> usize {
    CURRENT.try_with(|c| c.get()).unwrap_or(0)
}

pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES[slot()].fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        BYTES[slot()].fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES[slot()].fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

/// Heap bytes currently attributed to each subsystem.
pub fn heap_by_subsystem() -> Vec<(&'static str, i64)> {
    NAMES.iter().zip(BYTES.iter()).map(|(n, b)| (*n, b.load(Ordering::Relaxed) as i64)).collect()
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

    #[test]
    fn process_memory_reads_proc() {
        let m = process_memory();
        assert!(m.rss > 0 && m.threads >= 1 && m.mem_total > 0, "{m:?}");
    }
}
