//! The A/B boot selector state: which root file system slot boots next and how
//! many tries each slot has left. Shared with the boot-time selector (the
//! initramfs script on QEMU, the U-Boot script on the A1), which walks
//! `BOOT_ORDER`, picks the first slot whose counter is above 0, decrements it,
//! writes the file back and boots that slot with `oxinvr.slot=X`.
//!
//! The file (`system.boot_env`) holds shell-sourceable `KEY=VALUE` lines:
//!
//! ```text
//! BOOT_ORDER="A B"
//! BOOT_A_LEFT=3
//! BOOT_B_LEFT=3
//! OXINVR_B_VERSION=1.2.0
//! ```
//!
//! `OXINVR_<slot>_VERSION` (optional) is the version of the bundle installed
//! in that slot by `oxinvr ota install`; it is removed when the slot is being
//! overwritten. The selectors ignore it.
//!
//! `boot_env = "uboot-env"` keeps the same keys in the U-Boot environment
//! instead (the A1, whose U-Boot cannot write files): read with `fw_printenv`,
//! written with one `fw_setenv -s SCRIPT` (one environment write, redundant
//! copy per fw_env.config).
//!
//! Invariants:
//! - The file is only ever replaced whole: written to a temporary file in the
//!   same directory, fsynced, renamed over the old one, the directory
//!   fsynced and then the whole file system (`syncfs`: ext2 keeps its bitmaps
//!   outside any fsync). A power cut leaves either the old or the new state.
//! - Lines this module does not know (other keys, comments) are kept, in
//!   order, after the keys it owns (file only: in the U-Boot environment only
//!   its own keys are ever written).
//! - `BOOT_ORDER` always names both slots once; a file naming only one gets
//!   the other appended (as the last resort).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::base::error::{Context as _, Error, Result};

/// One of the two root file system slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn parse(s: &str) -> Option<Slot> {
        match s.trim() {
            "A" | "a" => Some(Slot::A),
            "B" | "b" => Some(Slot::B),
            _ => None,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// Largest counter accepted when reading (a guard against garbage).
const MAX_LEFT: u32 = 1000;

/// The selector state. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEnv {
    /// First = preferred.
    pub order: [Slot; 2],
    left: [u32; 2],
    versions: [Option<String>; 2],
    /// Lines kept verbatim (comments, other keys).
    extra: Vec<String>,
}

impl BootEnv {
    /// A fresh state: `first` preferred with `first_left` tries, the other
    /// slot not bootable.
    pub fn new(first: Slot, first_left: u32) -> BootEnv {
        let mut env =
            BootEnv { order: [first, first.other()], left: [0, 0], versions: [None, None], extra: Vec::new() };
        env.set_left(first, first_left);
        env
    }

    pub fn left(&self, slot: Slot) -> u32 {
        self.left[slot.index()]
    }

    pub fn set_left(&mut self, slot: Slot, n: u32) {
        self.left[slot.index()] = n;
    }

    /// The version installed in `slot`, if recorded.
    pub fn version(&self, slot: Slot) -> Option<&str> {
        self.versions[slot.index()].as_deref()
    }

    /// Records (or forgets) the version in `slot`. Only `[A-Za-z0-9._+~-]`
    /// is kept (the value goes into a shell file unquoted).
    pub fn set_version(&mut self, slot: Slot, v: Option<&str>) {
        self.versions[slot.index()] =
            v.map(|v| v.chars().filter(|c| c.is_ascii_alphanumeric() || "._+~-".contains(*c)).collect());
    }

    /// The slot the boot selector would pick now (first in order with tries
    /// left), if any.
    pub fn next_boot(&self) -> Option<Slot> {
        self.order.iter().copied().find(|s| self.left(*s) > 0)
    }

    /// Parses the file's text; errors name the line.
    pub fn parse(text: &str) -> Result<BootEnv> {
        let mut order: Option<Vec<Slot>> = None;
        let mut left: [Option<u32>; 2] = [None, None];
        let mut versions: [Option<String>; 2] = [None, None];
        let mut extra = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            // A selector we cannot read is broken state on the box, not the caller's input.
            let at = |m: String| Error::io(format!("line {}: {m} (in `{line}`)", n + 1));
            let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) else {
                if !line.is_empty() {
                    extra.push(raw.to_string());
                }
                continue;
            };
            let key = key.trim().strip_prefix("export ").map_or(key.trim(), str::trim);
            let value = unquote(value.trim()).map_err(at)?;
            match key {
                "BOOT_ORDER" => {
                    let mut slots = Vec::new();
                    for word in value.split_whitespace() {
                        let s = Slot::parse(word)
                            .ok_or_else(|| at(format!("BOOT_ORDER names {word:?}; only A and B exist")))?;
                        if slots.contains(&s) {
                            return Err(at(format!("BOOT_ORDER names slot {s} twice")));
                        }
                        slots.push(s);
                    }
                    if slots.is_empty() {
                        return Err(at("BOOT_ORDER is empty".into()));
                    }
                    order = Some(slots);
                }
                "BOOT_A_LEFT" | "BOOT_B_LEFT" => {
                    let v: u32 = value
                        .parse()
                        .ok()
                        .filter(|v| *v <= MAX_LEFT)
                        .ok_or_else(|| at(format!("{key} must be a number 0..={MAX_LEFT}, not {value:?}")))?;
                    left[usize::from(key == "BOOT_B_LEFT")] = Some(v);
                }
                "OXINVR_A_VERSION" | "OXINVR_B_VERSION" => {
                    versions[usize::from(key == "OXINVR_B_VERSION")] = Some(value).filter(|v| !v.is_empty());
                }
                _ => extra.push(raw.to_string()),
            }
        }
        let mut slots = order.unwrap_or_else(|| vec![Slot::A, Slot::B]);
        if slots.len() == 1 {
            slots.push(slots[0].other());
        }
        let mut env = BootEnv {
            order: [slots[0], slots[1]],
            left: [left[0].unwrap_or(0), left[1].unwrap_or(0)],
            versions: [None, None],
            extra,
        };
        for (slot, v) in [Slot::A, Slot::B].into_iter().zip(versions) {
            env.set_version(slot, v.as_deref());
        }
        Ok(env)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "BOOT_ORDER=\"{} {}\"\nBOOT_A_LEFT={}\nBOOT_B_LEFT={}\n",
            self.order[0],
            self.order[1],
            self.left(Slot::A),
            self.left(Slot::B)
        );
        for slot in [Slot::A, Slot::B] {
            if let Some(v) = self.version(slot) {
                s.push_str(&format!("OXINVR_{slot}_VERSION={v}\n"));
            }
        }
        for l in &self.extra {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// One line for people: `BOOT_ORDER="A B" BOOT_A_LEFT=3 BOOT_B_LEFT=0`.
    pub fn summary(&self) -> String {
        format!(
            "BOOT_ORDER=\"{} {}\" BOOT_A_LEFT={} BOOT_B_LEFT={}",
            self.order[0],
            self.order[1],
            self.left(Slot::A),
            self.left(Slot::B)
        )
    }

    /// Reads the file; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<BootEnv>> {
        match fs::read_to_string(path) {
            Ok(text) => BootEnv::parse(&text).map(Some).with_context(|| format!("boot env {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).context(format!("cannot read boot env {}", path.display()))),
        }
    }

    /// Replaces the file atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.render().as_bytes())
            .with_context(|| format!("cannot write boot env {}", path.display()))
    }

    /// Before a slot is overwritten: it must not be booted, not even as a
    /// fallback, and the running slot goes first. Returns whether anything
    /// changed.
    pub fn disarm(&mut self, slot: Slot) -> bool {
        let before = self.clone();
        self.set_left(slot, 0);
        self.set_version(slot, None);
        self.order = [slot.other(), slot];
        *self != before
    }

    /// After `new` holds a verified image: it boots next with `limit` tries;
    /// `running` stays the fallback with at least one try (it booted, so it
    /// works).
    pub fn flip(&mut self, new: Slot, running: Slot, limit: u32) {
        self.order = [new, new.other()];
        self.set_left(new, limit.max(1));
        if running != new && self.left(running) == 0 {
            self.set_left(running, 1);
        }
    }

    /// The running slot is healthy: it gets `limit` tries again. It goes
    /// first unless an install into the other slot is pending (other slot
    /// first with tries left: the selector would have booted it, so that
    /// state was written after this boot). Returns a sentence on what it did.
    pub fn mark_good(&mut self, running: Slot, limit: u32) -> String {
        self.set_left(running, limit.max(1));
        let other = running.other();
        if self.order[0] == other && self.left(other) > 0 {
            return format!(
                "slot {running} marked good ({limit} tries); an update in slot {other} is pending and boots next"
            );
        }
        let fell_back = self.order[0] == other;
        self.order = [running, other];
        if fell_back {
            format!("slot {running} marked good ({limit} tries) and first again: slot {other} had failed to boot")
        } else {
            format!("slot {running} marked good ({limit} tries)")
        }
    }
}

/// Where the selector state lives (`system.boot_env`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// A text file (QEMU: the initramfs selector reads it).
    File(PathBuf),
    /// The U-Boot environment, through these `fw_printenv` / `fw_setenv`.
    UbootEnv { printenv: PathBuf, setenv: PathBuf },
}

/// The `boot_env` value that selects the U-Boot environment.
pub const UBOOT_ENV: &str = "uboot-env";

impl Store {
    /// `boot_env = "uboot-env"` is the U-Boot environment; anything else a file.
    pub fn of(boot_env: &Path) -> Store {
        if boot_env == Path::new(UBOOT_ENV) {
            Store::UbootEnv { printenv: "fw_printenv".into(), setenv: "fw_setenv".into() }
        } else {
            Store::File(boot_env.to_path_buf())
        }
    }

    /// For messages: the file, or "the U-Boot environment".
    pub fn describe(&self) -> String {
        match self {
            Store::File(p) => p.display().to_string(),
            Store::UbootEnv { .. } => "the U-Boot environment".into(),
        }
    }

    /// The state; `Ok(None)` if there is none yet (no file; no BOOT_ORDER in
    /// the U-Boot environment).
    pub fn load(&self) -> Result<Option<BootEnv>> {
        match self {
            Store::File(p) => BootEnv::load(p),
            Store::UbootEnv { printenv, .. } => {
                let out =
                    Command::new(printenv).output().with_context(|| format!("cannot run {}", printenv.display()))?;
                if !out.status.success() {
                    return Err(Error::io(format!(
                        "{} failed: {}",
                        printenv.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                let text = String::from_utf8_lossy(&out.stdout);
                // Only our keys: the rest of the environment is U-Boot's business.
                let ours: String = text
                    .lines()
                    .filter(|l| {
                        ["BOOT_ORDER=", "BOOT_A_LEFT=", "BOOT_B_LEFT=", "OXINVR_A_VERSION=", "OXINVR_B_VERSION="]
                            .iter()
                            .any(|k| l.starts_with(k))
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                if !ours.lines().any(|l| l.starts_with("BOOT_ORDER=")) {
                    return Ok(None);
                }
                BootEnv::parse(&ours).map(Some).context("U-Boot environment")
            }
        }
    }

    /// Writes the state: the file atomically, or one `fw_setenv -s` call.
    pub fn save(&self, env: &BootEnv) -> Result<()> {
        match self {
            Store::File(p) => env.save(p),
            Store::UbootEnv { setenv, .. } => {
                let mut script = format!(
                    "BOOT_ORDER {} {}\nBOOT_A_LEFT {}\nBOOT_B_LEFT {}\n",
                    env.order[0],
                    env.order[1],
                    env.left(Slot::A),
                    env.left(Slot::B)
                );
                for slot in [Slot::A, Slot::B] {
                    // A name without a value deletes the variable.
                    script.push_str(&format!("OXINVR_{slot}_VERSION {}\n", env.version(slot).unwrap_or_default()));
                }
                let tmp = std::env::temp_dir().join(format!("oxinvr-fw_setenv-{}.txt", std::process::id()));
                let result = fs::write(&tmp, script)
                    .with_context(|| format!("cannot write {}", tmp.display()))
                    .and_then(|()| {
                        Command::new(setenv)
                            .arg("-s")
                            .arg(&tmp)
                            .output()
                            .with_context(|| format!("cannot run {}", setenv.display()))
                    })
                    .and_then(|out| {
                        if out.status.success() {
                            Ok(())
                        } else {
                            Err(Error::io(format!(
                                "{} -s failed: {}",
                                setenv.display(),
                                String::from_utf8_lossy(&out.stderr).trim()
                            )))
                        }
                    });
                let _ = fs::remove_file(&tmp);
                result
            }
        }
    }
}

/// Removes one level of shell quoting ("..." or '...').
fn unquote(v: &str) -> std::result::Result<String, String> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            return rest.strip_suffix(q).map(str::to_string).ok_or_else(|| format!("unbalanced {q}"));
        }
    }
    Ok(v.to_string())
}

/// Replaces `path` with `data`: temp file in the same directory, fsync,
/// rename, fsync of the directory, syncfs of its file system.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        let d = File::open(&dir)?;
        d.sync_all()?;
        // The boot partition is ext2 (no journal): the fsyncs above leave its
        // bitmaps and group descriptors in the page cache: power cuts on the
        // emulated board (scripts/power-cuts) damaged the boot partition in 24
        // of 30 cuts until this. syncfs writes them too.
        nix::unistd::syncfs(&d).map_err(io::Error::from)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_selector_writes() {
        let e = BootEnv::parse("BOOT_ORDER=\"B A\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\n").expect("parse");
        assert_eq!(e.order, [Slot::B, Slot::A]);
        assert_eq!((e.left(Slot::A), e.left(Slot::B)), (3, 2));
        assert_eq!(e.next_boot(), Some(Slot::B));
        // Quoting styles, export, comments, unknown keys kept.
        let text = "# state\nexport BOOT_ORDER='A B'\nBOOT_A_LEFT=1\nBOOT_B_LEFT=0\nOTHER=x\n";
        let e = BootEnv::parse(text).expect("parse");
        assert_eq!(e.order, [Slot::A, Slot::B]);
        assert_eq!(e.render(), "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=1\nBOOT_B_LEFT=0\n# state\nOTHER=x\n");
        assert_eq!(BootEnv::parse(&e.render()).expect("round trip"), e);
        // One slot named: the other is appended; missing counters are 0.
        let e = BootEnv::parse("BOOT_ORDER=B\n").expect("parse");
        assert_eq!(e.order, [Slot::B, Slot::A]);
        assert_eq!(e.next_boot(), None);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = BootEnv::parse("BOOT_ORDER=\"A C\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("\"C\""), "{e}");
        let e = BootEnv::parse("BOOT_ORDER=\"A B\"\nBOOT_B_LEFT=many\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("BOOT_B_LEFT"), "{e}");
        assert!(BootEnv::parse("BOOT_ORDER=\"A A\"\n").unwrap_err().to_string().contains("twice"));
        assert!(BootEnv::parse("BOOT_ORDER=\"A B\n").unwrap_err().to_string().contains("unbalanced"));
        assert!(BootEnv::parse("BOOT_A_LEFT=-1\n").is_err());
    }

    #[test]
    fn install_boot_fail_fallback_mark_good() {
        // Running A, healthy.
        let mut e = BootEnv::parse("BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n").expect("parse");
        // Install into B: disarmed first, then flipped.
        assert!(e.disarm(Slot::B));
        assert_eq!((e.order, e.left(Slot::B)), ([Slot::A, Slot::B], 0));
        assert!(!e.disarm(Slot::B), "disarming twice changes nothing");
        e.flip(Slot::B, Slot::A, 3);
        assert_eq!(e.summary(), "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3");
        // mark-good on A before the reboot keeps the pending update.
        let said = e.mark_good(Slot::A, 3);
        assert!(said.contains("pending"), "{said}");
        assert_eq!(e.order, [Slot::B, Slot::A]);
        // The selector tries B three times (B never gets healthy) ...
        for _ in 0..3 {
            assert_eq!(e.next_boot(), Some(Slot::B));
            e.set_left(Slot::B, e.left(Slot::B) - 1);
        }
        // ... then falls back to A, which marks itself good and goes first.
        assert_eq!(e.next_boot(), Some(Slot::A));
        e.set_left(Slot::A, 2);
        let said = e.mark_good(Slot::A, 3);
        assert!(said.contains("failed"), "{said}");
        assert_eq!(e.summary(), "BOOT_ORDER=\"A B\" BOOT_A_LEFT=3 BOOT_B_LEFT=0");
        // A good boot of the new slot.
        e.flip(Slot::B, Slot::A, 3);
        e.set_left(Slot::B, 2);
        e.mark_good(Slot::B, 3);
        assert_eq!(e.summary(), "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3");
    }

    #[test]
    fn versions_are_recorded_and_forgotten() {
        let mut e = BootEnv::parse("BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_LIMIT=3\n").expect("parse");
        e.set_version(Slot::B, Some("2.0.0; rm -rf /"));
        assert_eq!(e.version(Slot::B), Some("2.0.0rm-rf"));
        e.set_version(Slot::B, Some("2.0.0"));
        let text = e.render();
        assert_eq!(text, "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nOXINVR_B_VERSION=2.0.0\nBOOT_LIMIT=3\n");
        assert_eq!(BootEnv::parse(&text).expect("again"), e);
        e.disarm(Slot::B);
        assert_eq!(e.version(Slot::B), None);
        assert!(!e.render().contains("VERSION"));
    }

    #[test]
    fn the_uboot_environment_is_read_and_written_with_the_fw_tools() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let envfile = dir.path().join("uboot.env");
        // Fakes of fw_printenv / fw_setenv -s over a `KEY=VALUE` file.
        let printenv = dir.path().join("fw_printenv");
        let setenv = dir.path().join("fw_setenv");
        fs::write(&printenv, format!("#!/bin/sh\ncat {}\n", envfile.display())).expect("fake");
        fs::write(
            &setenv,
            format!(
                "#!/bin/sh\n[ \"$1\" = -s ] || exit 2\nwhile read -r k v; do\n  grep -v \"^$k=\" {f} > {f}.new; mv {f}.new {f}\n  \
                 [ -n \"$v\" ] && echo \"$k=$v\" >> {f}\ndone < \"$2\"\nexit 0\n",
                f = envfile.display()
            ),
        )
        .expect("fake");
        for f in [&printenv, &setenv] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let store = Store::UbootEnv { printenv, setenv };
        fs::write(&envfile, "bootcmd=run x\nbootdelay=1\n").expect("env");
        assert_eq!(store.load().expect("load"), None, "no BOOT_ORDER yet");
        fs::write(&envfile, "bootcmd=run x\nBOOT_ORDER=A B\nBOOT_A_LEFT=2\nBOOT_B_LEFT=3\nOXINVR_B_VERSION=1.0\n")
            .expect("env");
        let mut e = store.load().expect("load").expect("some");
        assert_eq!(e.summary(), "BOOT_ORDER=\"A B\" BOOT_A_LEFT=2 BOOT_B_LEFT=3");
        assert_eq!(e.version(Slot::B), Some("1.0"));
        e.disarm(Slot::B);
        e.set_version(Slot::B, Some("2.0"));
        e.flip(Slot::B, Slot::A, 3);
        store.save(&e).expect("save");
        let text = fs::read_to_string(&envfile).expect("env");
        assert!(text.contains("bootcmd=run x"), "other variables untouched: {text}");
        assert!(text.contains("BOOT_ORDER=B A") && text.contains("OXINVR_B_VERSION=2.0"), "{text}");
        assert!(!text.contains("OXINVR_A_VERSION"), "{text}");
        assert_eq!(store.load().expect("load").expect("some"), e);
        assert_eq!(Store::of(Path::new("uboot-env")).describe(), "the U-Boot environment");
        assert_eq!(Store::of(Path::new("/boot/boot.env")), Store::File("/boot/boot.env".into()));
    }

    #[test]
    fn flip_keeps_the_running_slot_bootable() {
        let mut e = BootEnv::new(Slot::A, 0);
        e.flip(Slot::B, Slot::A, 3);
        assert_eq!(e.summary(), "BOOT_ORDER=\"B A\" BOOT_A_LEFT=1 BOOT_B_LEFT=3");
    }

    #[test]
    fn save_is_atomic_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("boot.env");
        assert_eq!(BootEnv::load(&path).expect("load"), None);
        let e = BootEnv::new(Slot::B, 3);
        e.save(&path).expect("save");
        assert_eq!(BootEnv::load(&path).expect("load"), Some(e));
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").map(|d| d.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        assert!(BootEnv::load(&dir.path().join("nope/boot.env")).expect("no file is no state").is_none());
        let err = BootEnv::new(Slot::A, 1).save(&dir.path().join("nope/boot.env")).unwrap_err();
        assert!(err.kind == crate::base::error::Kind::NotFound && err.to_string().contains("nope/boot.env"), "{err}");
    }
}
