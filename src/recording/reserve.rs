//! The ballast: a file of `SIZE` bytes (`<data_dir>/.reserve`) held on the
//! data disk so that a disk filled to its last block can still be freed.
//!
//! On a 100 % full file system SQLite cannot even delete rows ("database or
//! disk is full": the WAL must grow by a few pages to record the deletion), so
//! retention, which deletes rows before files, would free nothing, ever. The
//! storage thread releases the ballast when the disk is full, which gives the
//! database the room to delete rows and retention the room to unlink files;
//! it is made again once the disk has room for it and more.
//!
//! Invariants:
//! - Only the storage thread touches it (after start-up).
//! - Its blocks are really allocated (fallocate; where that is not supported,
//!   incompressible bytes, since UBIFS would store zeros in almost nothing).
//! - A file of the wrong size (a crash while it was made) is made again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// 4 MiB: thousands of WAL pages, far more than deleting a retention batch needs.
pub const SIZE: u64 = 4 << 20;
const NAME: &str = ".reserve";

pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    pub fn new(data_dir: &Path) -> Reserve {
        Reserve { path: data_dir.join(NAME), size: SIZE }
    }

    /// The ballast exists at its full size.
    pub fn held(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| m.len() == self.size)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the ballast (durably) unless it is there; a failure leaves no partial file.
    pub fn make(&self) -> io::Result<()> {
        if self.held() {
            return Ok(());
        }
        let made = self.write();
        if made.is_err() {
            let _ = fs::remove_file(&self.path);
        }
        made
    }

    fn write(&self) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&self.path)?;
        if !allocate(&f, self.size)? {
            fill_incompressible(&mut f, self.size)?;
        }
        f.sync_all()?;
        crate::base::fs::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Gives the ballast's blocks back to the file system; true if there was one.
    pub fn release(&self) -> bool {
        match fs::remove_file(&self.path) {
            Ok(()) => {
                let _ = crate::base::fs::sync_dir(self.path.parent().unwrap_or(Path::new(".")));
                true
            }
            Err(_) => false,
        }
    }
}

/// fallocate(2); false where the file system does not support it.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{fallocate, FallocateFlags};
    let len = nix::libc::off_t::try_from(len).map_err(io::Error::other)?;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(true),
        Err(Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// Writes `len` bytes of xorshift output (no compressing file system shrinks them).
fn fill_incompressible(f: &mut File, len: u64) -> io::Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// True if an error message is the disk's "full": the kernel's ENOSPC or SQLite's SQLITE_FULL.
pub fn is_disk_full(msg: &str) -> bool {
    msg.contains("os error 28") || msg.contains("database or disk is full")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ballast_is_made_released_and_made_again_at_its_full_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Reserve::new(dir.path());
        assert!(!r.held());
        r.make().expect("make");
        assert!(r.held());
        assert_eq!(fs::metadata(dir.path().join(NAME)).expect("stat").len(), SIZE);
        assert!(r.release());
        assert!(!r.release(), "nothing left to release");
        // A torn one (a crash while it was made) is made again at full size.
        fs::write(dir.path().join(NAME), b"torn").expect("write");
        assert!(!r.held());
        r.make().expect("make");
        assert!(r.held());
    }

    #[test]
    fn disk_full_is_told_apart_from_other_errors() {
        assert!(is_disk_full("write failed: No space left on device (os error 28)"));
        assert!(is_disk_full("database: insert_segment: database or disk is full"));
        assert!(!is_disk_full("write failed: Input/output error (os error 5)"));
    }
}
