//! The appliance's boot-time check of the data partition (`fsck_data` in
//! overlay/usr/libexec/oxinvr/lib.sh, called by S10data) on real ext4 images
//! made and damaged with the host's e2fsprogs: what a power cut can leave.
//! When `e2fsck -p` gives up, the box must repair with `e2fsck -fy` by itself
//! (else it would record on a damaged file system until someone came), keep
//! the files that were intact, and say on the console what it did.

use std::path::Path;
use std::process::Command;

const LIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/overlay/usr/libexec/oxinvr/lib.sh");
const E2FSCK: &str = "/sbin/e2fsck";

fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd} (e2fsprogs): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A 32 MiB ext4 image holding a file `/clip` (known bytes) and a directory `/rec`.
fn image(dir: &Path, content: &Path) -> String {
    let img = dir.join("data.img");
    std::fs::File::create(&img).and_then(|f| f.set_len(32 << 20)).expect("image file");
    let img = img.to_str().expect("utf-8 path").to_owned();
    let (rc, out) = run("mke2fs", &["-q", "-F", "-t", "ext4", "-L", "oxinvr-data", &img]);
    assert_eq!(rc, 0, "mke2fs: {out}");
    debugfs(&img, &format!("write {} clip", content.display()));
    debugfs(&img, "mkdir rec");
    img
}

fn debugfs(img: &str, request: &str) -> String {
    let (rc, out) = run("debugfs", &["-w", "-R", request, img]);
    assert_eq!(rc, 0, "debugfs -R {request:?}: {out}");
    out
}

/// Marks the file system as not cleanly unmounted, as a power cut leaves it.
fn cut_power(img: &str) {
    debugfs(img, "ssv state 0");
}

/// Runs fsck_data from the image's lib.sh; returns what it printed on the console.
fn fsck_data(img: &str) -> String {
    let script = format!(". '{LIB}'; say() {{ echo \"oxinvr: $*\"; }}; fsck_data '{img}'");
    let (rc, out) = run("sh", &["-c", &script]);
    assert_eq!(rc, 0, "fsck_data failed: {out}");
    out
}

fn assert_clean_with_clip(img: &str, content: &Path) {
    let (rc, out) = run(E2FSCK, &["-fn", img]);
    assert_eq!(rc, 0, "after fsck_data the file system must be clean: e2fsck -fn: {out}");
    let dumped = Path::new(img).with_extension("clip");
    debugfs(img, &format!("dump clip {}", dumped.display()));
    assert_eq!(
        std::fs::read(&dumped).expect("dumped clip"),
        std::fs::read(content).expect("clip"),
        "the intact file must keep its bytes"
    );
}

fn clip(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("clip.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&p, bytes).expect("clip");
    p
}

#[test]
fn damage_preen_refuses_is_repaired_by_fy_and_said_on_the_console() {
    let dir = tempfile::tempdir().expect("tmp");
    let content = clip(dir.path());
    let img = image(dir.path(), &content);
    // A directory inode with no type: `e2fsck -p` stops ("UNEXPECTED
    // INCONSISTENCY; RUN fsck MANUALLY", exit 4).
    debugfs(&img, "sif rec mode 0");
    cut_power(&img);
    let (rc, out) = run(E2FSCK, &["-n", &img]);
    assert_ne!(rc, 0, "the damage must be visible to e2fsck: {out}");
    let console = fsck_data(&img);
    assert!(
        console.contains("data: e2fsck -p could not fix the file system (4): running e2fsck -fy"),
        "the console must say that preen gave up: {console:?}"
    );
    assert!(console.contains("data: e2fsck -fy repaired the file system"), "and that -fy repaired it: {console:?}");
    assert_clean_with_clip(&img, &content);
}

#[test]
fn damage_preen_can_fix_is_fixed_without_fy() {
    let dir = tempfile::tempdir().expect("tmp");
    let content = clip(dir.path());
    let img = image(dir.path(), &content);
    debugfs(&img, "clri rec"); // a directory entry pointing at a cleared inode
    cut_power(&img);
    let console = fsck_data(&img);
    assert!(console.contains("data: e2fsck -p fixed the file system"), "{console:?}");
    assert!(!console.contains("-fy"), "no full repair needed: {console:?}");
    assert_clean_with_clip(&img, &content);
}

#[test]
fn a_clean_file_system_is_left_alone_silently() {
    let dir = tempfile::tempdir().expect("tmp");
    let content = clip(dir.path());
    let img = image(dir.path(), &content);
    assert_eq!(fsck_data(&img), "", "nothing to say about a clean file system");
    assert_clean_with_clip(&img, &content);
}
