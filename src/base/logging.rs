//! Logging: lines to stderr with time, level and thread, plus the last
//! `KEEP` lines in memory so the API and the UART shell can show them.
//! `OXINVR_LOG` sets the level (error, warn, info, debug, trace; default info);
//! other crates log at warn and above only.
//!
//! `log_to_file` adds a file sink (`oxinvr run` uses `<data_dir>/oxinvr.log`,
//! which the UART shell's `logs` reads): appended line by line, never
//! fsynced; past `FILE_LIMIT` bytes it is renamed to `<file>.1` (replacing the
//! previous one) and a new file is started, so the two never exceed twice
//! the limit. A failing file never stops stderr logging.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KEEP: usize = 500;
/// Size at which the log file is rotated.
pub const FILE_LIMIT: u64 = 1 << 20;

struct Logger {
    level: log::LevelFilter,
    recent: Mutex<VecDeque<String>>,
    file: Mutex<Option<FileSink>>,
}

struct FileSink {
    path: PathBuf,
    file: File,
    len: u64,
}

impl FileSink {
    fn open(path: &Path) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSink { path: path.to_path_buf(), file, len })
    }

    fn write(&mut self, line: &str) {
        if self.len >= FILE_LIMIT {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let reopened = std::fs::rename(&self.path, &old).and_then(|()| FileSink::open(&self.path));
            if let Ok(fresh) = reopened {
                *self = fresh;
            }
        }
        if writeln!(self.file, "{line}").is_ok() {
            self.len += line.len() as u64 + 1;
        }
    }
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        let ours = m.target().starts_with("oxinvr");
        m.level() <= if ours { self.level } else { self.level.min(log::LevelFilter::Warn) }
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = crate::base::clock::rfc3339(crate::base::clock::Clock::now_ms(&crate::base::clock::RealClock));
        let thread = std::thread::current();
        let line = format!("{now} {:<5} [{}] {}", r.level(), thread.name().unwrap_or("?"), r.args());
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = file.as_mut() {
            f.write(&line);
        }
        recent.push_back(line);
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = std::env::var("OXINVR_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(log::LevelFilter::Info);
    let logger = LOGGER.get_or_init(|| Logger { level, recent: Mutex::new(VecDeque::new()), file: Mutex::new(None) });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Also writes every line to `path` (see the module documentation). Call
/// after `init`.
pub fn log_to_file(path: &Path) -> std::io::Result<()> {
    let sink = FileSink::open(path)?;
    if let Some(l) = LOGGER.get() {
        *l.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }
    Ok(())
}

/// The last `n` lines of a log file written by `log_to_file` (and of its
/// rotated `.1` when the current file has fewer), oldest first.
pub fn tail_file(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut lines = last_lines(path, n)?;
    if lines.len() < n {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        if let Ok(mut earlier) = last_lines(Path::new(&old), n - lines.len()) {
            earlier.append(&mut lines);
            lines = earlier;
        }
    }
    Ok(lines)
}

/// The last `n` lines of a file, reading only its end.
fn last_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    // Lines are short; 512 bytes a line is plenty, capped at the rotation size.
    let want = (n as u64).saturating_mul(512).min(len).min(2 * FILE_LIMIT);
    f.seek(SeekFrom::Start(len - want))?;
    let mut buf = Vec::new();
    f.take(want).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if want < len && !lines.is_empty() {
        lines.remove(0); // probably cut
    }
    Ok(lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect())
}

/// The most recent log lines, oldest first.
pub fn recent(n: usize) -> Vec<String> {
    let Some(l) = LOGGER.get() else { return Vec::new() };
    let recent = l.recent.lock().unwrap_or_else(|p| p.into_inner());
    recent.iter().skip(recent.len().saturating_sub(n)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_rotates_and_tail_reads_across() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oxinvr.log");
        let mut sink = FileSink::open(&path).expect("open");
        let line = "x".repeat(99);
        let per_file = FILE_LIMIT / 100;
        for i in 0..per_file + 5 {
            sink.write(&format!("{i:09} {}", &line[..89]));
        }
        let old = dir.path().join("oxinvr.log.1");
        let old_len = std::fs::metadata(&old).expect("rotated").len();
        assert!((FILE_LIMIT..FILE_LIMIT + 100).contains(&old_len), "{old_len}");
        let t = tail_file(&path, 3).expect("tail");
        assert_eq!(t.len(), 3);
        assert!(t[2].starts_with(&format!("{:09}", per_file + 4)), "{t:?}");
        let all = tail_file(&path, 10).expect("tail across");
        assert_eq!(all.len(), 10);
        assert!(all[9].starts_with(&format!("{:09}", per_file + 4)), "{all:?}");
        let nums: Vec<u64> = all.iter().map(|l| l[..9].parse().expect("num")).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(tail_file(&dir.path().join("none.log"), 5).is_err());
    }
}
