//! Where playback reads media bytes: a [`MediaStore`] opens a stored file by
//! the name its index row gives, and the [`MediaSource`] it returns reads any
//! byte range of it. [`LocalFiles`] is the box's disk; the archive's store
//! (`archive`) reads objects of a bucket with Range requests.
//!
//! Invariants:
//! - A source is opened with the number of bytes that will ever be read from
//!   it (`len`: what the index says, or less), and never reads past it: a
//!   store that fetches ahead (the bucket) bounds its requests with it.
//! - Reads are positional (`read_at`): the export and HLS readers jump
//!   between files and offsets without seeking state of their own.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A readable stored file.
pub trait MediaSource: Send {
    /// Reads up to `buf.len()` bytes at `offset`; 0 only at the end.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// Opens stored files by name.
pub trait MediaStore: Send + Sync {
    /// Opens `name`, of which at most bytes `[0, len)` will be read.
    fn open(&self, name: &Path, len: u64) -> io::Result<Box<dyn MediaSource>>;

    /// The stored length of `name` if the store knows it cheaply; `None`:
    /// the caller trusts its index (an archived object is complete by
    /// construction: its sidecar is written after it).
    fn stored_len(&self, name: &Path) -> io::Result<Option<u64>>;

    /// The first `len` bytes of `name` (an init segment).
    fn head(&self, name: &Path, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        read_exact_at(self.open(name, len)?.as_mut(), &mut buf, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", name.display())))?;
        Ok(buf)
    }

    /// [`MediaStore::head`] of each of `names` (name, len), in order; a
    /// store with slow reads (the bucket) does them concurrently.
    fn heads(&self, names: &[(&Path, u64)]) -> Vec<io::Result<Vec<u8>>> {
        names.iter().map(|(n, len)| self.head(n, *len)).collect()
    }
}

/// Fills `buf` from `offset`, or fails with `UnexpectedEof`.
pub fn read_exact_at(src: &mut dyn MediaSource, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = src.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "shorter than its index"));
        }
        done += n;
    }
    Ok(())
}

/// Files on the local disk, named by their path.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFiles;

struct LocalFile(File);

impl MediaSource for LocalFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
}

impl MediaStore for LocalFiles {
    fn open(&self, name: &Path, _len: u64) -> io::Result<Box<dyn MediaSource>> {
        let f = File::open(name).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", name.display())))?;
        Ok(Box::new(LocalFile(f)))
    }

    fn stored_len(&self, name: &Path) -> io::Result<Option<u64>> {
        Ok(Some(std::fs::metadata(name)?.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_files_read_ranges_and_heads() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").expect("write");
        let store = LocalFiles;
        assert_eq!(store.stored_len(&p).expect("len"), Some(10));
        assert_eq!(store.head(&p, 4).expect("head"), b"0123");
        let mut src = store.open(&p, 10).expect("open");
        let mut buf = [0u8; 3];
        read_exact_at(src.as_mut(), &mut buf, 7).expect("read");
        assert_eq!(&buf, b"789");
        assert!(read_exact_at(src.as_mut(), &mut [0u8; 4], 8).is_err(), "past the end");
        assert!(store.open(&dir.path().join("gone"), 1).is_err());
    }
}
