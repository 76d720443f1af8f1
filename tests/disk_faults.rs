//! Disk faults on real file systems (issue 10, part 6): the data directory is
//! an ext4 file system on a loop device (mkfs.ext4 on a file, losetup, mount),
//! so the recorder meets the kernel's own ENOSPC, EIO and EROFS. Needs root and loop
//! devices (CI runs as root); without them each test says so and returns.
//! Every mount and loop device is undone by a Drop guard on every exit path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::nvr::Oxinvr;
use common::{ffprobe_json, Camera};

/// An ext4 file system of `mb` MB on a loop device, mounted at `mnt`.
struct LoopFs {
    img: PathBuf,
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopFs {
    /// The file system, or why this machine cannot make one (not root, no loop devices).
    fn new(dir: &Path, mb: u64) -> Result<LoopFs, String> {
        // /proc/self belongs to the process's effective user.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").map_err(|e| e.to_string())?);
        if uid != 0 {
            return Err("not root".into());
        }
        let img = dir.join("disk.img");
        std::fs::File::create(&img).and_then(|f| f.set_len(mb << 20)).map_err(|e| e.to_string())?;
        // -m 0: no blocks reserved for root (the recorder runs as root here; on the box too).
        sh("mkfs.ext4", &["-q", "-F", "-m", "0", &img.to_string_lossy()])?;
        let dev = sh("losetup", &["-f", "--show", &img.to_string_lossy()])?;
        let mnt = dir.join("data");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let mut fs = LoopFs { img, dev, mnt, mounted: false };
        fs.mount()?;
        Ok(fs)
    }

    fn mount(&mut self) -> Result<(), String> {
        sh("mount", &["-o", "errors=remount-ro", &self.dev, &self.mnt.to_string_lossy()])?;
        self.mounted = true;
        Ok(())
    }

    fn umount(&mut self) {
        if self.mounted {
            let _ = sh("umount", &[&self.mnt.to_string_lossy()])
                .or_else(|_| sh("umount", &["-l", &self.mnt.to_string_lossy()]));
            self.mounted = false;
        }
    }

    /// Every write to the file system fails with EIO from now on (ext4's
    /// shutdown ioctl: the disk is gone as far as the kernel is concerned).
    fn shut_down(&self) {
        nix::ioctl_read!(ext4_shutdown, b'X', 125, u32);
        let f = std::fs::File::open(&self.mnt).expect("open mount point");
        let mut flags: u32 = 2; // EXT4_GOING_FLAGS_NOLOGFLUSH
        unsafe { ext4_shutdown(std::os::fd::AsRawFd::as_raw_fd(&f), &mut flags) }.expect("EXT4_IOC_SHUTDOWN");
    }
}

impl LoopFs {
    /// The file system turns read-only as ext4 does on an error with
    /// `errors=remount-ro` (its sysfs test hook raises one).
    fn turn_read_only(&self) {
        let name = Path::new(&self.dev).file_name().expect("loop device name").to_string_lossy().into_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "disk_faults test").expect("trigger_fs_error");
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.umount();
        let _ = sh("losetup", &["-d", &self.dev]);
        let _ = std::fs::remove_file(&self.img);
    }
}

fn loop_fs(dir: &Path, mb: u64) -> Option<LoopFs> {
    match LoopFs::new(dir, mb) {
        Ok(fs) => Some(fs),
        Err(e) => {
            eprintln!("SKIPPED: disk fault tests need root and loop devices: {e}");
            None
        }
    }
}

fn config(data: &Path, cam: &Camera) -> String {
    format!(
        "[storage]\ndata_dir = \"{}\"\nsync_seconds = 1\nsegment_seconds = 2\nmin_free_percent = 10\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 4000\n",
        data.display(),
        cam.url("h264")
    )
}

fn recording_ids(nvr: &Oxinvr) -> Vec<i64> {
    let v = nvr.json("/api/recordings?stream=cam&start=0&end=4102444800000");
    v["recordings"].as_array().map(|a| a.iter().filter_map(|r| r["id"].as_i64()).collect()).unwrap_or_default()
}

/// Writes a foreign file until the file system is full, or until `leave` bytes are free.
fn fill(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("filler");
    let chunk = vec![0x5au8; 256 * 1024];
    loop {
        // The casts are needed where these are 32-bit (the MIPS tests).
        #[allow(clippy::unnecessary_cast)]
        let free = nix::sys::statvfs::statvfs(path).map(|s| s.blocks_available() as u64 * s.fragment_size() as u64);
        if free.is_ok_and(|f| f <= leave + chunk.len() as u64) && leave > 0 {
            break;
        }
        if f.write_all(&chunk).and_then(|()| f.sync_data()).is_err() {
            break; // full
        }
    }
}

/// After the recorder stopped: every file plays and `oxinvr check` agrees with the database.
fn nothing_lost_or_corrupt(cfg: &Path, data: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![data.join("recordings")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let j = ffprobe_json(&p);
                assert!(j["streams"][0]["width"].as_u64().unwrap_or(0) > 0, "{}: {j}", p.display());
                n += 1;
            }
        }
    }
    let out =
        Command::new(common::nvr::oxinvr_bin()).args(["check", "--config"]).arg(cfg).output().expect("oxinvr check");
    assert!(
        out.status.success(),
        "oxinvr check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    n
}

#[test]
fn a_full_disk_is_freed_by_retention_and_foreign_files_pause_recording_until_space_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(fs) = loop_fs(tmp.path(), 32) else { return };
    let cam = Camera::start(&["--fps", "15", "--bitrate", "3000"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&fs.mnt, &cam));
    common::nvr::poll(Duration::from_secs(30), "three recordings", || recording_ids(&nvr).len() >= 3);
    // 1. Foreign files fill the disk to its last block while ours are there to delete:
    //    the released ballast lets the database delete rows, retention deletes the
    //    oldest recordings and recording goes on.
    let filler = fs.mnt.join("foreign-1");
    let first = recording_ids(&nvr)[0];
    fill(&filler, 0);
    let full = Instant::now();
    let at_full = recording_ids(&nvr);
    common::nvr::poll(Duration::from_secs(20), "retention deletes the oldest", || {
        !recording_ids(&nvr).contains(&first)
    });
    common::nvr::poll(Duration::from_secs(20), "a recording started after the disk was full", || {
        recording_ids(&nvr).iter().any(|id| !at_full.contains(id))
    });
    println!("disk full: recording again {:?} after the disk filled up", full.elapsed());
    let f0 = nvr.json("/api/streams/cam")["status"]["frames"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    let st = nvr.json("/api/streams/cam")["status"].clone();
    assert!(st["frames"].as_u64().unwrap_or(0) > f0 + 30, "recording goes on: {st}");
    // 2. Foreign files fill the rest: nothing of ours is left to delete but the
    //    open recording, so recording pauses, and says why. The foreign writer
    //    goes on taking whatever retention frees (a one-shot fill left 2 MB that
    //    retention kept free by deleting each new recording, for minutes).
    let paused = Instant::now();
    let mut d = serde_json::Value::Null;
    common::nvr::poll(Duration::from_secs(60), "recording paused", || {
        fill(&fs.mnt.join("foreign-2"), 0);
        d = nvr.json("/api/system")["disk"].clone();
        d["recording"] == "paused"
    });
    println!("disk full: paused after {:?}: {d}", paused.elapsed());
    assert!(d["problem"].as_str().is_some_and(|p| p.starts_with("disk full: ")), "{d}");
    let st = nvr.json("/api/streams/cam")["status"].clone();
    assert!(st["storage_error"].as_str().is_some_and(|p| p.starts_with("disk full: ")), "{st}");
    assert_eq!(nvr.get("/api/health").map(|r| r.status).unwrap_or(0), 200);
    // 3. Space returns: recording resumes by itself.
    std::fs::remove_file(fs.mnt.join("foreign-2")).expect("rm");
    std::fs::remove_file(&filler).expect("rm");
    let before = recording_ids(&nvr);
    let back = Instant::now();
    nvr.wait_for("/api/system", Duration::from_secs(20), "recording resumes", |v| v["disk"]["recording"] == "ok");
    common::nvr::poll(Duration::from_secs(20), "a new recording", || {
        recording_ids(&nvr).iter().any(|id| !before.contains(id))
    });
    println!("disk full: recording again {:?} after space returned", back.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let (cfg, data, log_path) = (nvr.config.clone(), fs.mnt.clone(), nvr.log_path.clone());
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("WARN") || l.contains("segment") && l.contains("started")) {
        println!("LOG {l}");
    }
    assert!(st.success());
    let files = nothing_lost_or_corrupt(&cfg, &data);
    println!("disk full: {files} files play, oxinvr check agrees");
    drop(cam);
}

#[test]
fn an_io_error_disk_pauses_recording_without_a_crash_and_what_was_written_survives() {
    a_failing_disk_pauses_recording("EIO", LoopFs::shut_down, "os error 5");
}

/// ext4 mounted `errors=remount-ro` (as most systems do) turns read-only under the
/// recorder on an error; `mount -o remount,ro` itself is refused (EBUSY) while files
/// are open for writing, so the kernel's own error path is used (`trigger_fs_error`).
#[test]
fn a_disk_turned_read_only_pauses_recording_without_a_crash_and_what_was_written_survives() {
    a_failing_disk_pauses_recording("read-only", LoopFs::turn_read_only, "os error 30");
}

/// The disk fails under a recording stream: the status turns paused naming the
/// disk's error, the recorder keeps answering, and after the disk is mounted
/// again and the recorder restarted every recording made before is there, plays,
/// and `oxinvr check` agrees; recording goes on.
fn a_failing_disk_pauses_recording(label: &str, fault: fn(&LoopFs), error: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(mut fs) = loop_fs(tmp.path(), 64) else { return };
    let cam = Camera::start(&["--fps", "15"]);
    let nvr = Oxinvr::start(tmp.path(), &config(&fs.mnt, &cam));
    common::nvr::poll(Duration::from_secs(30), "three recordings", || recording_ids(&nvr).len() >= 3);
    // The last one listed may be the open one, cut back to its last synced point.
    let mut made = recording_ids(&nvr);
    made.pop();
    fault(&fs);
    let failed = Instant::now();
    let d = nvr
        .wait_for("/api/system", Duration::from_secs(20), "recording paused", |v| v["disk"]["recording"] == "paused")
        ["disk"]
        .clone();
    println!("{label}: paused {:?} after the disk failed: {d}", failed.elapsed());
    assert!(d["problem"].as_str().is_some_and(|p| p.contains(error)), "{d}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nvr.get("/api/health").map(|r| r.status).unwrap_or(0), 200, "the recorder still answers");
    // The disk returns (here: unmounted and mounted again; the recorder is
    // restarted on it, as the box does after such an error, see docs/ARCHITECTURE.md).
    let (cfg, port) = (nvr.config.clone(), nvr.port);
    let (st, _) = nvr.terminate(Duration::from_secs(20));
    println!("{label}: the recorder stopped ({st})");
    fs.umount();
    fs.mount().expect("mount again");
    let nvr = Oxinvr::restart(&cfg, &fs.mnt, port);
    let before = recording_ids(&nvr);
    let lost: Vec<_> = made.iter().filter(|id| !before.contains(id)).collect();
    assert!(lost.is_empty(), "recordings made before the fault are gone: {lost:?} (listed: {before:?})");
    common::nvr::poll(Duration::from_secs(30), "recording again", || {
        recording_ids(&nvr).iter().any(|id| !before.contains(id))
    });
    nvr.terminate(Duration::from_secs(15));
    let files = nothing_lost_or_corrupt(&cfg, &fs.mnt);
    println!("{label}: {files} files play, oxinvr check agrees");
    drop(cam);
}

/// The appliance's `storage.require_mount`: the data disk is not mounted on the data
/// directory, so nothing records onto the file system under it, and every way a user
/// looks (the page, /api/health, /api/system, the shell's `status`) says why.
#[test]
fn a_missing_data_disk_records_nothing_and_says_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cam = Camera::start(&["--fps", "15"]);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let cfg = config(&data, &cam).replace("[storage]\n", "[storage]\nrequire_mount = true\n");
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    let health = nvr.json("/api/health");
    println!("no disk: {health}");
    assert_eq!(health["recording"], "no_disk", "{health}");
    let why = health["problem"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("not a mount point") && why.contains(&data.display().to_string()), "{why}");
    assert_eq!(nvr.json("/api/system")["disk"]["problem"], why.as_str());
    let page = nvr.get("/").expect("page");
    assert!(page.status == 200 && page.text().contains("not a mount point"), "{}", page.text());
    let streams = nvr.get("/api/streams").expect("streams");
    assert!(streams.status == 503 && streams.text().contains("nothing records"), "{}", streams.text());
    // The UART shell's `status`, as the box's console runs it.
    let text = common::nvr::shell_output(&nvr.config, "status\nexit\n");
    println!("no disk: shell: {text}");
    assert!(text.contains("NOTHING RECORDS") && text.contains("not a mount point"), "{text}");
    // A few seconds with the camera up: not a byte lands under the data directory.
    std::thread::sleep(Duration::from_secs(4));
    let (st, _) = nvr.terminate(Duration::from_secs(10));
    assert!(st.success(), "{st}");
    let left: Vec<_> = std::fs::read_dir(&data).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing is written onto the root file system: {left:?}");
    // The disk mounted on the same directory (a real file system on a loop device), it records.
    let Some(fs) = loop_fs(tmp.path(), 64) else { return };
    assert_eq!(fs.mnt, data);
    let nvr = Oxinvr::start(tmp.path(), &cfg);
    common::nvr::poll(Duration::from_secs(30), "a recording on the mounted disk", || !recording_ids(&nvr).is_empty());
    nvr.terminate(Duration::from_secs(15));
    drop(cam);
}
