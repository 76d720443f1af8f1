//! File-system helpers shared by the layers that write files.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True if `dir` is a mount point: its device differs from its parent's (or it
/// is `/`). An error if it cannot be examined (it does not exist, ...).
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata(dir)?;
    let parent = std::fs::metadata(dir.join(".."))?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}

/// How file data is made durable: `fdatasync` in the recorder, a failing
/// function in tests (a disk that refuses writeback cannot be made on demand).
pub type SyncFn = fn(&File) -> io::Result<()>;

/// `fdatasync(2)`.
pub fn fdatasync(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Makes bytes `from..to` of `file` durable with up to `attempts` syncs.
///
/// Linux reports a failed writeback once and then marks the pages clean, so a
/// plain second fdatasync "succeeds" without writing anything. Before every
/// retry (and before the first attempt if `after_failure`, i.e. an earlier
/// sync of this range failed) the range is written again from the page cache,
/// which makes it dirty so the next sync really writes it.
pub fn sync_range(file: &File, from: u64, to: u64, attempts: u32, after_failure: bool, sync: SyncFn) -> io::Result<()> {
    let mut last = None;
    for attempt in 0..attempts.max(1) {
        if attempt > 0 || after_failure {
            rewrite(file, from, to)?;
        }
        match sync(file) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no sync attempted")))
}

/// Reads `from..to` and writes it back in place, 64 KiB at a time.
fn rewrite(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).unwrap_or(usize::MAX).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        file.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Write;

    thread_local! {
        static FAILS_LEFT: Cell<u32> = const { Cell::new(0) };
        static SYNCS: Cell<u32> = const { Cell::new(0) };
    }

    /// Fails while `FAILS_LEFT` > 0, like a card that refuses writeback.
    fn flaky(f: &File) -> io::Result<()> {
        SYNCS.with(|c| c.set(c.get() + 1));
        if FAILS_LEFT.with(|c| c.replace(c.get().saturating_sub(1))) > 0 {
            return Err(io::Error::from_raw_os_error(5));
        }
        f.sync_data()
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).expect("open");
        f.write_all(bytes).expect("write");
        (dir, f)
    }

    #[test]
    fn a_failed_sync_is_retried_after_writing_the_range_again() {
        let (_d, f) = file_with(&[7u8; 200_000]);
        FAILS_LEFT.with(|c| c.set(2));
        SYNCS.with(|c| c.set(0));
        sync_range(&f, 1000, 200_000, 3, false, flaky).expect("third attempt succeeds");
        assert_eq!(SYNCS.with(Cell::get), 3);
        let mut back = vec![0u8; 200_000];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 0).expect("read");
        assert!(back.iter().all(|&b| b == 7), "the rewrite changed nothing");
    }

    #[test]
    fn a_sync_that_keeps_failing_reports_the_error() {
        let (_d, f) = file_with(b"abc");
        FAILS_LEFT.with(|c| c.set(10));
        SYNCS.with(|c| c.set(0));
        let e = sync_range(&f, 0, 3, 3, true, flaky).expect_err("fails");
        assert_eq!(e.raw_os_error(), Some(5));
        assert_eq!(SYNCS.with(Cell::get), 3);
    }
}
