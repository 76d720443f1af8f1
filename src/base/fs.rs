//! File-system helpers shared by the layers that write files.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
