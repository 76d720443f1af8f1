//! The swap manager on this machine's real kernel and file system (as root,
//! which `swapon` needs; scripts/test runs as root): the file it writes is a
//! swap area the system's own tools recognise, `swapon(2)` takes it (listed
//! in /proc/swaps with its priority) and `swapoff(2)` removes it.

use std::path::Path;
use std::process::Command;

use oxinvr::governor::swap;

fn listed(file: &Path) -> Option<String> {
    let swaps = std::fs::read_to_string("/proc/swaps").expect("/proc/swaps");
    swaps.lines().find(|l| l.split_whitespace().next() == file.to_str()).map(str::to_string)
}

#[test]
fn the_swapfile_is_made_turned_on_and_off_by_system_calls() {
    if !is_root() {
        eprintln!("SKIPPED: swapon needs root (scripts/test runs as root)");
        return;
    }
    // A tempdir on the disk (ext4 here), not tmpfs, which refuses swap.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let file = std::fs::canonicalize(dir.path()).expect("canonical").join("oxinvr.swap");
    let mut m = swap::Manager::new(file.clone(), 16 << 20, false);
    m.prepare();
    let r = m.report();
    assert!(r.unusable.is_none(), "{r:?}");
    // util-linux reads it as `mkswap -L oxinvr` would have written it.
    let probe = Command::new("blkid").args(["-p", "-o", "export"]).arg(&file).output().expect("blkid");
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(said.contains("TYPE=swap") && said.contains("LABEL=oxinvr") && said.contains("UUID="), "{said}");

    m.on().expect("swapon");
    let line = listed(&file).expect("listed in /proc/swaps after swapon");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((fields[1], fields.last().copied()), ("file", Some("10")), "{line}");
    assert!(m.report().on);
    m.off().expect("swapoff");
    assert!(listed(&file).is_none(), "still listed after swapoff");
    assert!(!m.report().on);

    // On again, then what a factory reset does first: every swapfile under the data dir off.
    m.on().expect("swapon again");
    assert_eq!(swap::off_under(dir.path()).expect("off_under"), 1);
    assert!(listed(&file).is_none());
    assert_eq!((m.report().ons, m.report().offs), (2, 1));
}

/// True when running as root (`swapon` needs CAP_SYS_ADMIN).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}
