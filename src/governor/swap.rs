//! The swap manager: one swapfile on the data disk (`[memory] swap_file_mb`,
//! `<data_dir>/oxinvr.swap` unless `swap_file` says otherwise), turned on at
//! pressure ladder step 3 and off when the ladder leaves it.
//!
//! Invariants:
//! - The file is written, never sparse: every byte is written once (zeros;
//!   `fallocate` is not enough for swap on every file system), then the swap
//!   header (what `mkswap` writes: version 1, last page, UUID, label
//!   "oxinvr", the `SWAPSPACE2` magic at the end of the first page, in the
//!   running machine's page size and byte order), then fsync. A file of the
//!   right size with our header is reused as it is.
//! - `swapon`/`swapoff` are the system calls (no tool needed); whether the
//!   file is on is read back from `/proc/swaps`, never assumed.
//! - A file on an SD card (`/dev/mmcblk*`) is refused unless its path was
//!   configured explicitly (`swap_file`): swap wears flash out.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// The label `mkswap -L` would write.
pub const LABEL: &[u8] = b"oxinvr";
/// Priority of the swapfile (above the kernel's default negative ones; zram,
/// faster, would get a higher one).
pub const PRIORITY: i32 = 10;
const MAGIC: &[u8; 10] = b"SWAPSPACE2";
/// Where the header's fields start in the first page (after the boot block).
const INFO_OFFSET: usize = 1024;
/// `SWAP_FLAG_PREFER` and the priority's mask (linux/swap.h).
const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
const SWAP_FLAG_PRIO_MASK: libc::c_int = 0x7fff;
/// Smallest swapfile worth having: the kernel wants at least 10 pages.
pub const MIN_BYTES: u64 = 1 << 20;

/// The machine's page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

/// The first page of a swap area of `bytes` (what `mkswap` writes).
pub fn header(bytes: u64, page: u64, uuid: [u8; 16]) -> Vec<u8> {
    let page_len = page as usize;
    let mut h = vec![0u8; page_len];
    let last_page = u32::try_from(bytes / page - 1).unwrap_or(u32::MAX);
    let mut at = INFO_OFFSET;
    for v in [1u32, last_page, 0] {
        h[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        at += 4;
    }
    h[at..at + 16].copy_from_slice(&uuid);
    h[at + 16..at + 16 + LABEL.len()].copy_from_slice(LABEL);
    h[page_len - MAGIC.len()..].copy_from_slice(MAGIC);
    h
}

/// A random version 4 UUID (from the kernel's random source).
fn new_uuid() -> io::Result<[u8; 16]> {
    let mut u = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut u)?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// True if `path` is `bytes` long, fully allocated, and starts with our header.
fn is_ours(path: &Path, bytes: u64, page: u64) -> bool {
    let Ok(meta) = fs::metadata(path) else { return false };
    if meta.len() != bytes || meta.blocks() * 512 < bytes {
        return false;
    }
    let mut first = vec![0u8; page as usize];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut first));
    read.is_ok() && first.ends_with(MAGIC) && first[INFO_OFFSET + 28..].starts_with(LABEL)
}

/// Writes a swapfile of `bytes` at `path` (zeros, then the header, then
/// fsync), unless one of ours is there already. Returns true if it wrote.
pub fn create(path: &Path, bytes: u64) -> io::Result<bool> {
    let page = page_size();
    let bytes = bytes / page * page;
    if bytes < MIN_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a swapfile of {bytes} bytes is too small")));
    }
    if is_ours(path, bytes, page) {
        return Ok(false);
    }
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    let _ = fs::remove_file(path);
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| ctx("cannot create", e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(|e| ctx("cannot write", e))?;
        left -= n as u64;
    }
    let uuid = new_uuid().map_err(|e| ctx("no random UUID for", e))?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&header(bytes, page, uuid), 0).map_err(|e| ctx("cannot write the header of", e))?;
    f.sync_all().map_err(|e| ctx("cannot sync", e))?;
    Ok(true)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} holds a NUL byte", path.display())))
}

/// `swapon(2)` with `priority`.
pub fn swap_on(path: &Path, priority: i32) -> io::Result<()> {
    let p = c_path(path)?;
    let flags = SWAP_FLAG_PREFER | (priority.clamp(0, SWAP_FLAG_PRIO_MASK) & SWAP_FLAG_PRIO_MASK);
    // SAFETY: `p` is a NUL-terminated path that outlives the call.
    if unsafe { libc::swapon(p.as_ptr(), flags) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("swapon {}: {e}", path.display())));
    }
    Ok(())
}

/// `swapoff(2)`: the kernel first reads every swapped page back into RAM.
pub fn swap_off(path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    // SAFETY: as in `swap_on`.
    if unsafe { libc::swapoff(p.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("swapoff {}: {e}", path.display())));
    }
    Ok(())
}

/// The files and partitions `/proc/swaps` lists (its escapes undone).
pub fn active() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/swaps").unwrap_or_default();
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(|p| PathBuf::from(unescape(p))).collect()
}

/// `/proc/swaps` and `/proc/mounts` write a space as `\040`.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// True if the kernel swaps to `path` now.
pub fn is_on(path: &Path) -> bool {
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    active().contains(&canon)
}

/// Turns off every swapfile under `dir` (a factory reset wipes the data
/// partition, and an active swapfile cannot be removed). Returns how many.
pub fn off_under(dir: &Path) -> io::Result<usize> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut n = 0;
    for p in active().into_iter().filter(|p| p.starts_with(&dir)) {
        swap_off(&p)?;
        n += 1;
    }
    Ok(n)
}

/// The device a path's file system comes from (`/proc/mounts`), if known.
fn device_of(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path.parent()?).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), PathBuf::from(unescape(f.next()?))))
        })
        .filter(|(_, mp)| path.starts_with(mp))
        .max_by_key(|(_, mp)| mp.as_os_str().len())
        .map(|(dev, _)| dev)
}

/// The configured swapfile, its state and the last failure.
#[derive(Debug)]
pub struct Manager {
    path: PathBuf,
    bytes: u64,
    /// Why swap cannot be used (no file configured, on an SD card, creation failed).
    unusable: Option<String>,
    last_error: Option<String>,
    ons: u64,
    offs: u64,
}

/// The swap manager as `/api/system` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub file: String,
    pub bytes: u64,
    pub on: bool,
    pub unusable: Option<String>,
    pub last_error: Option<String>,
    pub ons: u64,
    pub offs: u64,
}

impl Manager {
    /// A manager of `bytes` at `path` (0 bytes: no swap). `explicit`: the path
    /// was configured, so an SD card is allowed.
    pub fn new(path: PathBuf, bytes: u64, explicit: bool) -> Self {
        let unusable = if bytes == 0 {
            Some("no swapfile configured (memory.swap_file_mb = 0)".to_string())
        } else {
            device_of(&path).filter(|d| d.starts_with("/dev/mmcblk") && !explicit).map(|d| {
                format!("{} is on the SD card ({d}); set memory.swap_file to put swap there anyway", path.display())
            })
        };
        Manager { path, bytes, unusable, last_error: None, ons: 0, offs: 0 }
    }

    /// Creates the file (once, at start: never under pressure) and makes sure
    /// it is off, as step 0 wants it.
    pub fn prepare(&mut self) {
        if self.unusable.is_some() {
            return;
        }
        if is_on(&self.path) {
            if let Err(e) = swap_off(&self.path) {
                self.last_error = Some(e.to_string());
            }
        }
        match create(&self.path, self.bytes) {
            Ok(true) => log::info!("swap: wrote {} ({} MiB)", self.path.display(), self.bytes >> 20),
            Ok(false) => log::info!("swap: {} is ready", self.path.display()),
            Err(e) => self.unusable = Some(format!("cannot make the swapfile: {e}")),
        }
    }

    /// Turns swap on (ladder step 3). Err says why not.
    pub fn on(&mut self) -> Result<(), String> {
        if let Some(why) = &self.unusable {
            return Err(why.clone());
        }
        if is_on(&self.path) {
            return Ok(());
        }
        swap_on(&self.path, PRIORITY).map_err(|e| self.failed(e))?;
        self.ons += 1;
        Ok(())
    }

    /// Turns swap off (leaving step 3).
    pub fn off(&mut self) -> Result<(), String> {
        if self.unusable.is_some() || !is_on(&self.path) {
            return Ok(());
        }
        swap_off(&self.path).map_err(|e| self.failed(e))?;
        self.offs += 1;
        Ok(())
    }

    fn failed(&mut self, e: io::Error) -> String {
        self.last_error = Some(e.to_string());
        e.to_string()
    }

    pub fn report(&self) -> Report {
        Report {
            file: self.path.display().to_string(),
            bytes: self.bytes,
            on: self.unusable.is_none() && is_on(&self.path),
            unusable: self.unusable.clone(),
            last_error: self.last_error.clone(),
            ons: self.ons,
            offs: self.offs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_what_mkswap_writes() {
        let uuid = [7u8; 16];
        let h = header(64 << 20, 4096, uuid);
        assert_eq!(h.len(), 4096);
        assert!(h[..1024].iter().all(|&b| b == 0), "the boot block is left zero");
        let word = |at: usize| u32::from_ne_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!((word(1024), word(1028), word(1032)), (1, (64 << 20) / 4096 - 1, 0));
        assert_eq!(&h[1036..1052], &uuid);
        assert_eq!(&h[1052..1058], b"oxinvr");
        assert_eq!(&h[4086..], b"SWAPSPACE2");
    }

    #[test]
    fn the_file_is_written_in_full_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("oxinvr.swap");
        assert!(create(&p, 4 << 20).expect("create"), "written");
        let meta = fs::metadata(&p).expect("meta");
        assert_eq!(meta.len(), 4 << 20);
        assert!(meta.blocks() * 512 >= 4 << 20, "not sparse: {} blocks", meta.blocks());
        assert!(!create(&p, 4 << 20).expect("again"), "ours already: kept");
        assert!(create(&p, 8 << 20).expect("resize"), "another size: rewritten");
        assert!(create(&p, 4096).is_err(), "too small");
    }

    #[test]
    fn no_size_means_no_swap_with_the_reason() {
        let mut m = Manager::new("/nonexistent/x.swap".into(), 0, false);
        m.prepare();
        assert_eq!(m.on(), Err("no swapfile configured (memory.swap_file_mb = 0)".into()));
        assert_eq!(m.off(), Ok(()));
        assert!(!m.report().on);
    }

    #[test]
    fn proc_escapes_are_undone() {
        assert_eq!(unescape("/data/my\\040swap"), "/data/my swap");
    }
}
