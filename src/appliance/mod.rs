//! Operations on the box itself that the UART shell (and the CLI) offer:
//! reboot, factory reset, network settings.
//!
//! Invariants:
//! - Nothing here changes a machine that is not a booted OxiNVR appliance
//!   (recognised by `oxinvr.slot=` on the kernel command line or
//!   /run/oxinvr/slot; the test override `OXINVR_CURRENT_SLOT` does not
//!   count): reboot, factory reset and network changes refuse with a message
//!   saying so.
//! - Factory reset removes the contents of the file system holding
//!   `storage.data_dir` (after stopping the recorder through the appliance's
//!   init script), never that file system's mount point itself, and refuses
//!   when `data_dir` lives on the root file system or a tmpfs.
//! - The network file is rewritten atomically (through its symlink, if it is
//!   one); only the stanza of the interface named is replaced.

pub mod bootenv;
#[doc(hidden)]
pub mod fuzz;
pub mod ota;
pub mod shell;

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::base::error::{Context as _, Error, Result};

/// Ok if this is a booted appliance; the error says why not and what was refused.
pub fn require_appliance(what: &str) -> Result<()> {
    match ota::appliance_slot().map_err(Error::internal)? {
        Some(_) => Ok(()),
        None => Err(Error::conflict(format!(
            "this is not a booted OxiNVR appliance (no oxinvr.slot= in /proc/cmdline, no /run/oxinvr/slot): \
             refusing to {what} this machine"
        ))),
    }
}

/// Syncs the file systems and reboots through the init system (`reboot`).
pub fn reboot() -> Result<()> {
    require_appliance("reboot")?;
    nix::unistd::sync();
    let out = Command::new("reboot").output().context("cannot run reboot")?;
    if !out.status.success() {
        return Err(Error::io(format!("reboot failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

// ---- factory reset ----

/// The mount point holding `path` (the longest mount point that contains
/// it) and its file system type.
pub fn mount_point_of(path: &Path, mounts: &str) -> Option<(PathBuf, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mp, fstype) = (f.next()?, f.next()?, f.next()?);
            Some((unescape_mount(mp), fstype.to_string()))
        })
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.as_os_str().len())
}

/// /proc/mounts escapes spaces and such as `\040`.
fn unescape_mount(s: &str) -> PathBuf {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

/// Where a factory reset would wipe, or why it will not.
pub fn factory_reset_target(data_dir: &Path) -> Result<PathBuf> {
    require_appliance("factory-reset")?;
    let dir = fs::canonicalize(data_dir).with_context(|| format!("data_dir {}", data_dir.display()))?;
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    let (mp, fstype) =
        mount_point_of(&dir, &mounts).ok_or_else(|| Error::internal(format!("no mount holds {}", dir.display())))?;
    // Wiping the wrong file system is refused in this state, not an input error.
    if mp == Path::new("/") {
        return Err(Error::conflict(format!(
            "data_dir {} is on the root file system, not on a data partition: refusing to wipe it",
            dir.display()
        )));
    }
    if ["tmpfs", "ramfs", "squashfs", "overlay", "proc", "sysfs", "devtmpfs"].contains(&fstype.as_str()) {
        return Err(Error::conflict(format!(
            "data_dir {} is on {} ({fstype}), not on the data partition (is it mounted?): refusing to wipe it",
            dir.display(),
            mp.display()
        )));
    }
    Ok(mp)
}

/// The appliance's init script of the recorder; stopped before a wipe so
/// nothing writes into the data partition while it is emptied.
const RECORDER_INIT: &str = "/etc/init.d/S50oxinvr";

/// Stops the recorder (if the appliance's init script is there), empties the
/// data partition at `target` and reboots. Returns only on failure.
pub fn factory_reset(target: &Path) -> Result<usize> {
    require_appliance("factory-reset")?;
    if Path::new(RECORDER_INIT).exists() {
        let _ = Command::new(RECORDER_INIT).arg("stop").output();
    }
    // An active swapfile (memory pressure) cannot be removed: swap off first.
    crate::governor::swap::off_under(target).context("cannot turn off the swapfile before the wipe")?;
    let n = wipe_contents(target)?;
    reboot()?;
    Ok(n)
}

/// Removes everything inside `dir` (not `dir` itself, and not `lost+found`).
/// Returns the number of entries removed; the first failure ends it.
pub fn wipe_contents(dir: &Path) -> Result<usize> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut n = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        let p = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        r.with_context(|| format!("cannot remove {}", p.display()))?;
        n += 1;
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(n)
}

// ---- network ----

/// How an interface gets its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetConfig {
    Dhcp,
    Static { addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr },
}

/// Interface names as the kernel allows them (and safe on a command line).
pub fn validate_iface(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("{name:?} is not an interface name (like eth0)")))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Parses `ADDR/PREFIX` and `GW` of a static configuration.
pub fn parse_static(cidr: &str, gateway: &str) -> Result<NetConfig> {
    let bad = |m: String| Error::invalid(m);
    let (a, p) =
        cidr.split_once('/').ok_or_else(|| bad(format!("{cidr:?} needs a prefix length, like 192.168.1.50/24")))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad(format!("{a:?} is not an IPv4 address")))?;
    let prefix: u8 =
        p.parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| bad(format!("prefix {p:?} is not 1..32")))?;
    let gw: Ipv4Addr = gateway.parse().map_err(|_| bad(format!("gateway {gateway:?} is not an IPv4 address")))?;
    let m = mask(prefix);
    if u32::from(gw) & m != u32::from(addr) & m {
        let net = Ipv4Addr::from(u32::from(addr) & m);
        return Err(bad(format!("gateway {gw} is not in {net}/{prefix}, the network of {addr}/{prefix}")));
    }
    if gw == addr {
        return Err(bad(format!("the gateway cannot be the box's own address {addr}")));
    }
    Ok(NetConfig::Static { addr, prefix, gateway: gw })
}

const STANZA_KEYWORDS: &[&str] =
    &["iface", "auto", "mapping", "source", "source-directory", "no-auto-down", "no-scripts", "rename"];

fn starts_stanza(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    STANZA_KEYWORDS.contains(&first) || first.starts_with("allow-")
}

/// `text` (an ifupdown `interfaces` file) with the `iface IFACE inet ...`
/// stanza replaced by `cfg` (added if missing) and `auto IFACE` ensured.
pub fn set_iface(text: &str, iface: &str, cfg: &NetConfig) -> String {
    let mut stanza = String::new();
    match cfg {
        NetConfig::Dhcp => {
            let _ = writeln!(stanza, "iface {iface} inet dhcp");
            // -b: keep asking in the background instead of failing ifup.
            let _ = writeln!(stanza, "    udhcpc_opts -b -S");
        }
        NetConfig::Static { addr, prefix, gateway } => {
            let _ = writeln!(stanza, "iface {iface} inet static");
            let _ = writeln!(stanza, "    address {addr}");
            let _ = writeln!(stanza, "    netmask {}", Ipv4Addr::from(mask(*prefix)));
            let _ = writeln!(stanza, "    gateway {gateway}");
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut inserted = false;
    let mut skipping = false;
    let mut has_auto = false;
    for line in text.lines() {
        let t = line.trim();
        if starts_stanza(t) {
            skipping = false;
            let words: Vec<&str> = t.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "iface" && words[1] == iface && words[2] == "inet" {
                skipping = true;
                if !inserted {
                    out.push(stanza.trim_end().to_string());
                    inserted = true;
                }
                continue;
            }
            if (words[0] == "auto" || words[0].starts_with("allow-")) && words[1..].contains(&iface) {
                has_auto = true;
            }
        }
        if !skipping {
            out.push(line.to_string());
        }
    }
    if !inserted {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        if !has_auto {
            out.push(format!("auto {iface}"));
            has_auto = true;
        }
        out.push(stanza.trim_end().to_string());
    }
    if !has_auto {
        let at = out.iter().position(|l| l.trim_start().starts_with(&format!("iface {iface} "))).unwrap_or(0);
        out.insert(at, format!("auto {iface}"));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Writes the new setting for `iface` into `file` and applies it with
/// busybox `ifdown -i FILE IFACE` / `ifup -i FILE IFACE`. Returns what was done (and their output).
pub fn apply_network(file: &Path, iface: &str, cfg: &NetConfig) -> Result<String> {
    require_appliance("change the network of")?;
    validate_iface(iface)?;
    let real = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let old = match fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "auto lo\niface lo inet loopback\n".to_string(),
        Err(e) => return Err(Error::from(e).context(format!("cannot read {}", real.display()))),
    };
    let new = set_iface(&old, iface, cfg);
    bootenv::write_atomic(&real, new.as_bytes()).with_context(|| format!("cannot write {}", real.display()))?;
    let mut said = format!("wrote {}\n", real.display());
    // ifdown may fail when the interface was not up: that is fine.
    let _ = Command::new("ifdown").arg("-i").arg(&real).arg(iface).output();
    let out =
        Command::new("ifup").arg("-i").arg(&real).arg(iface).output().context("settings saved; cannot run ifup")?;
    said.push_str(String::from_utf8_lossy(&out.stdout).trim_end());
    said.push_str(String::from_utf8_lossy(&out.stderr).trim_end());
    if !out.status.success() {
        return Err(Error::io(format!(
            "settings saved in {}, but `ifup {iface}` failed: {}",
            real.display(),
            said.trim()
        )));
    }
    Ok(format!("{}\n{iface} is up", said.trim_end()))
}

/// Addresses, routes and the configured settings, as text.
pub fn network_show(file: &Path) -> String {
    let mut s = String::new();
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match (run(&["addr", "show"]), run(&["route", "show"])) {
        (Some(addrs), Some(routes)) => {
            s.push_str("addresses:\n");
            s.push_str(&indent(&addrs));
            s.push_str("routes:\n");
            s.push_str(&indent(&routes));
        }
        _ => {
            s.push_str("interfaces (`ip` is not available):\n");
            s.push_str(&indent(&sys_interfaces()));
            s.push_str("routes (/proc/net/route):\n");
            s.push_str(&indent(&proc_routes(&fs::read_to_string("/proc/net/route").unwrap_or_default())));
        }
    }
    if let Ok(r) = fs::read_to_string("/etc/resolv.conf") {
        let ns: Vec<&str> = r.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).map(str::trim).collect();
        let _ = writeln!(s, "dns: {}", if ns.is_empty() { "none".to_string() } else { ns.join(" ") });
    }
    match fs::read_to_string(file) {
        Ok(t) => {
            let _ = writeln!(s, "configured ({}):", file.display());
            s.push_str(&indent(&t));
        }
        Err(e) => {
            let _ = writeln!(s, "configured: cannot read {}: {e}", file.display());
        }
    }
    s
}

fn indent(text: &str) -> String {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("  {l}\n")).collect()
}

fn sys_interfaces() -> String {
    let mut out = String::new();
    let Ok(dir) = fs::read_dir("/sys/class/net") else { return "cannot list /sys/class/net\n".into() };
    let mut names: Vec<String> =
        dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names {
        let read = |f: &str| fs::read_to_string(format!("/sys/class/net/{n}/{f}")).map(|s| s.trim().to_string());
        let _ = writeln!(
            out,
            "{n}: {} mac {}",
            read("operstate").unwrap_or_else(|_| "?".into()),
            read("address").unwrap_or_else(|_| "?".into())
        );
    }
    out
}

/// /proc/net/route (hex, little-endian addresses) as `dest/prefix via gw dev X`.
pub fn proc_routes(text: &str) -> String {
    let ip = |h: &str| u32::from_str_radix(h, 16).ok().map(|v| Ipv4Addr::from(u32::from_be(v)));
    let mut out = String::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Some(m)) = (ip(f[1]), ip(f[2]), ip(f[7])) else { continue };
        let prefix = u32::from(m).count_ones();
        let target = if prefix == 0 { "default".to_string() } else { format!("{dest}/{prefix}") };
        if gw.is_unspecified() {
            let _ = writeln!(out, "{target} dev {}", f[0]);
        } else {
            let _ = writeln!(out, "{target} via {gw} dev {}", f[0]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::error::Kind;

    #[test]
    fn interfaces_stanzas_are_replaced_or_added() {
        let text = "auto lo\niface lo inet loopback\n\n# wired\nauto eth0\niface eth0 inet dhcp\n    hostname box\n\niface eth0 inet6 auto\n";
        let st = parse_static("192.168.1.50/24", "192.168.1.1").expect("static");
        let new = set_iface(text, "eth0", &st);
        assert_eq!(
            new,
            "auto lo\niface lo inet loopback\n\n# wired\nauto eth0\niface eth0 inet static\n    address 192.168.1.50\n    \
             netmask 255.255.255.0\n    gateway 192.168.1.1\niface eth0 inet6 auto\n"
        );
        let back = set_iface(&new, "eth0", &NetConfig::Dhcp);
        assert!(back.contains("iface eth0 inet dhcp\n    udhcpc_opts -b -S\niface eth0 inet6 auto"), "{back}");
        assert!(!back.contains("address"), "{back}");
        // A missing interface is added with its auto line.
        let added = set_iface("auto lo\niface lo inet loopback\n", "eth1", &NetConfig::Dhcp);
        assert_eq!(
            added,
            "auto lo\niface lo inet loopback\n\nauto eth1\niface eth1 inet dhcp\n    udhcpc_opts -b -S\n"
        );
        // A stanza without auto gets one.
        let fixed = set_iface("iface eth0 inet static\n  address 10.0.0.2\n", "eth0", &NetConfig::Dhcp);
        assert_eq!(fixed, "auto eth0\niface eth0 inet dhcp\n    udhcpc_opts -b -S\n");
    }

    #[test]
    fn static_settings_are_checked() {
        assert!(parse_static("10.0.0.5", "10.0.0.1").unwrap_err().to_string().contains("prefix"));
        assert!(parse_static("10.0.0.5/33", "10.0.0.1").unwrap_err().to_string().contains("prefix"));
        assert!(parse_static("10.0.0.300/24", "10.0.0.1").unwrap_err().to_string().contains("IPv4"));
        let e = parse_static("10.0.0.5/24", "10.0.1.1").unwrap_err();
        assert!(e.kind == Kind::InvalidInput && e.to_string().contains("not in 10.0.0.0/24"), "{e}");
        assert!(parse_static("10.0.0.5/24", "10.0.0.5").is_err());
        assert_eq!(
            parse_static("10.1.2.3/16", "10.1.0.1").expect("valid"),
            NetConfig::Static { addr: [10, 1, 2, 3].into(), prefix: 16, gateway: [10, 1, 0, 1].into() }
        );
        assert!(validate_iface("eth0").is_ok());
        assert!(validate_iface("eth0; reboot").is_err());
        assert!(validate_iface("-x").is_err());
    }

    #[test]
    fn mounts_and_routes() {
        let mounts = "/dev/root / squashfs ro 0 0\n/dev/vda4 /data ext4 rw 0 0\n/dev/vda1 /boot vfat rw 0 0\n\
                      /dev/sdb1 /media/my\\040disk ext4 rw 0 0\n";
        let mp = |p: &str| mount_point_of(Path::new(p), mounts).map(|(m, t)| (m.display().to_string(), t));
        assert_eq!(mp("/data/oxinvr"), Some(("/data".into(), "ext4".into())));
        assert_eq!(mp("/var/lib/oxinvr"), Some(("/".into(), "squashfs".into())));
        assert_eq!(mp("/media/my disk/x"), Some(("/media/my disk".into(), "ext4".into())));
        assert_eq!(mp("/database"), Some(("/".into(), "squashfs".into())));
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                      eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(proc_routes(routes), "default via 10.0.2.2 dev eth0\n10.0.2.0/24 dev eth0\n");
    }

    #[test]
    fn wipe_keeps_the_mount_point_and_lost_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir_all(d.join("oxinvr/recordings/cam")).expect("mkdir");
        fs::write(d.join("oxinvr/recordings/cam/1.mp4"), b"x").expect("write");
        fs::write(d.join("oxinvr.toml"), b"x").expect("write");
        fs::create_dir(d.join("lost+found")).expect("mkdir");
        assert_eq!(wipe_contents(d).expect("wipe"), 2);
        let left: Vec<_> = fs::read_dir(d).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("lost+found")]);
    }

    #[test]
    fn a_dev_machine_is_not_changed() {
        if ota::appliance_slot().ok().flatten().is_some() {
            return; // running on the appliance itself
        }
        assert!(reboot().unwrap_err().to_string().contains("not a booted OxiNVR appliance"));
        assert!(factory_reset_target(Path::new("/tmp")).unwrap_err().to_string().contains("factory-reset"));
        let e = apply_network(Path::new("/nonexistent"), "eth0", &NetConfig::Dhcp).unwrap_err();
        assert!(e.kind == Kind::Conflict && e.to_string().contains("not a booted OxiNVR appliance"), "{e}");
    }
}

/// Where a firmware image records its version (written by board/common/post-build.sh).
const RELEASE_FILE: &str = "/etc/oxinvr-release";

/// The firmware image's version (`OXINVR_VERSION` of /etc/oxinvr-release),
/// which an OTA changes even when the oxinvr binary inside is the same;
/// `None` off the appliance. Read once.
pub fn firmware_version() -> Option<&'static str> {
    static VERSION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| parse_release(&std::fs::read_to_string(RELEASE_FILE).ok()?)).as_deref()
}

fn parse_release(text: &str) -> Option<String> {
    let v = text.lines().find_map(|l| l.strip_prefix("OXINVR_VERSION="))?.trim().trim_matches('"');
    (!v.is_empty()).then(|| v.to_string())
}

/// "oxinvr 0.1.0" or, on a firmware image, "oxinvr 0.1.0, firmware 0.1.1".
pub fn version_line() -> String {
    match firmware_version() {
        Some(f) => format!("oxinvr {}, firmware {f}", env!("CARGO_PKG_VERSION")),
        None => format!("oxinvr {}", env!("CARGO_PKG_VERSION")),
    }
}

#[cfg(test)]
mod release_tests {
    use super::parse_release;

    #[test]
    fn release_file_version_is_read() {
        assert_eq!(parse_release("OXINVR_VERSION=0.1.1\nOXINVR_BOARD=qemu-malta\n").as_deref(), Some("0.1.1"));
        assert_eq!(parse_release("OXINVR_BOARD=x\n"), None);
        assert_eq!(parse_release("OXINVR_VERSION=\n"), None);
    }
}
