//! OTA end to end with the real binary: keygen -> make-bundle -> install into
//! temporary slot files (from a file and over HTTP) -> boot env flipped ->
//! mark-good; bad signatures and other boards refused with nothing written.
//! The running slot comes from `OXINVR_CURRENT_SLOT` (the test override).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::nvr::oxinvr_bin;

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn oxinvr(args: &[&str], slot: Option<&str>) -> Run {
    let mut c = Command::new(oxinvr_bin());
    c.args(args);
    match slot {
        Some(s) => c.env(oxinvr::appliance::ota::SLOT_ENV, s),
        None => c.env_remove(oxinvr::appliance::ota::SLOT_ENV),
    };
    let o = c.output().expect("run oxinvr");
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into(),
        err: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    slot_a: PathBuf,
    slot_b: PathBuf,
    env: PathBuf,
    key: PathBuf,
}

const ENV_AB: &str = "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n";

fn setup() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = d.join("keys");
    let r = oxinvr(&["ota", "keygen", "--out-dir", p(&keys)], None);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("ota.key") && r.out.contains("ota.pub"), "{}", r.out);
    let (slot_a, slot_b, env) = (d.join("slot-a.img"), d.join("slot-b.img"), d.join("boot/boot.env"));
    std::fs::create_dir_all(d.join("boot")).expect("mkdir");
    std::fs::write(&slot_a, b"the running system in A").expect("slot a");
    std::fs::write(&slot_b, vec![0u8; 4 << 20]).expect("slot b");
    std::fs::write(&env, ENV_AB).expect("env");
    let config = d.join("oxinvr.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[web]\nlisten = \"127.0.0.1:{}\"\n[system]\nboard = \"qemu-malta\"\n\
             slot_a = \"{}\"\nslot_b = \"{}\"\nboot_env = \"{}\"\nota_public_key = \"{}\"\nboot_limit = 3\n",
            d.join("data").display(),
            common::free_port(),
            slot_a.display(),
            slot_b.display(),
            env.display(),
            keys.join("ota.pub").display()
        ),
    )
    .expect("config");
    Rig { config, slot_a, slot_b, env, key: keys.join("ota.key"), dir }
}

impl Rig {
    /// A rootfs image of `len` bytes (content from `seed`) bundled for `board`.
    fn bundle(&self, name: &str, board: &str, version: &str, key: &Path, seed: u8) -> (PathBuf, Vec<u8>) {
        let image: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(31) as u8) ^ seed).collect();
        let img = self.dir.path().join(format!("{name}.squashfs"));
        std::fs::write(&img, &image).expect("image");
        let out = self.dir.path().join(format!("{name}.oxb"));
        let r = oxinvr(
            &[
                "ota",
                "make-bundle",
                "--key",
                p(key),
                "--board",
                board,
                "--version",
                version,
                "--image",
                p(&img),
                "--out",
                p(&out),
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.err);
        assert!(r.out.contains(&format!("version {version} for board {board}")), "{}", r.out);
        (out, image)
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read")
    }

    fn env_text(&self) -> String {
        std::fs::read_to_string(&self.env).expect("env")
    }
}

#[test]
fn keygen_bundle_install_flip_mark_good_and_refusals() {
    let b = setup();
    let cfg = p(&b.config);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&b.key).expect("key").permissions().mode() & 0o777, 0o600);
    let public = std::fs::read_to_string(b.key.with_file_name("ota.pub")).expect("pub");
    assert!(public.trim().len() == 64 && public.trim().chars().all(|c| c.is_ascii_hexdigit()), "{public:?}");

    let (good, image) = b.bundle("v2", "qemu-malta", "2.0.0", &b.key, 0);
    let r = oxinvr(&["ota", "verify", "--config", cfg, p(&good)], None);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("ok: version 2.0.0"), "{}", r.out);

    // Without a known running slot nothing is done.
    let r = oxinvr(&["ota", "install", "--config", cfg, p(&good)], None);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("cannot tell which slot is running"), "{}", r.err);
    assert_eq!(b.env_text(), ENV_AB);

    // Refusals: another key, another board. Nothing is written anywhere.
    let other_keys = b.dir.path().join("other-keys");
    assert_eq!(oxinvr(&["ota", "keygen", "--out-dir", p(&other_keys)], None).code, 0);
    let (forged, _) = b.bundle("forged", "qemu-malta", "6.6.6", &other_keys.join("ota.key"), 1);
    let (foreign, _) = b.bundle("foreign", "a1", "2.0.0", &b.key, 2);
    let slot_b_before = b.read(&b.slot_b);
    for (bundle, expect) in
        [(&forged, vec!["bad signature"]), (&foreign, vec!["wrong board", "\"a1\"", "\"qemu-malta\""])]
    {
        let r = oxinvr(&["ota", "install", "--config", cfg, p(bundle)], Some("A"));
        assert_eq!(r.code, 2, "{}", r.out);
        for e in expect {
            assert!(r.err.contains(e), "{} lacks {e}", r.err);
        }
        assert!(
            r.err.contains("boot selector: BOOT_ORDER=\"A B\"") && r.err.contains("next boot: slot A"),
            "{}",
            r.err
        );
        assert_eq!(b.read(&b.slot_b), slot_b_before, "slot B was written");
        assert_eq!(b.read(&b.slot_a), b"the running system in A");
        assert_eq!(b.env_text(), ENV_AB, "the boot env was changed");
    }
    // A truncated copy, from a file.
    let cut = b.dir.path().join("cut.oxb");
    let full = b.read(&good);
    std::fs::write(&cut, &full[..full.len() - 1000]).expect("cut");
    let r = oxinvr(&["ota", "install", "--config", cfg, p(&cut)], Some("A"));
    assert!(r.code == 2 && r.err.contains("truncated"), "{}", r.err);
    assert_eq!(b.read(&b.slot_b), slot_b_before);
    assert_eq!(b.env_text(), ENV_AB);

    // The real thing: running A, so B receives the image.
    let r = oxinvr(&["ota", "install", "--config", cfg, p(&good)], Some("A"));
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    assert!(r.out.contains("writing 100%") && r.out.contains("reading back 100%"), "{}", r.out);
    assert!(r.out.contains("installed version 2.0.0 into slot B"), "{}", r.out);
    assert!(r.out.contains("reboot to start it"), "{}", r.out);
    assert_eq!(&b.read(&b.slot_b)[..image.len()], &image[..]);
    assert_eq!(b.read(&b.slot_a), b"the running system in A", "the running slot was written");
    assert_eq!(b.env_text(), "BOOT_ORDER=\"B A\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nOXINVR_B_VERSION=2.0.0\n");
    let r = oxinvr(&["ota", "status", "--config", cfg], Some("A"));
    assert!(r.out.contains("update pending") && r.out.contains("version 2.0.0"), "{}", r.out);

    // The boot selector boots B (and counts the try); B comes up healthy.
    std::fs::write(&b.env, "BOOT_ORDER=\"B A\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\nOXINVR_B_VERSION=2.0.0\n").expect("boot");
    let r = oxinvr(&["ota", "mark-good", "--config", cfg], Some("B"));
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(b.env_text(), "BOOT_ORDER=\"B A\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nOXINVR_B_VERSION=2.0.0\n");
    // Waiting for a recorder that does not answer does not mark anything.
    std::fs::write(&b.env, "BOOT_ORDER=\"B A\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\nOXINVR_B_VERSION=2.0.0\n").expect("boot");
    let r = oxinvr(&["ota", "mark-good", "--config", cfg, "--wait-healthy", "1"], Some("B"));
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.err.contains("not marked good") && r.err.contains("/api/health"), "{}", r.err);
    assert!(b.env_text().contains("BOOT_B_LEFT=2"));

    // Next update over HTTP while running B: A receives it.
    let (v3, image3) = b.bundle("v3", "qemu-malta", "3.0.0", &b.key, 3);
    let body = b.read(&v3);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut req = [0u8; 2048];
        let n = s.read(&mut req).expect("request");
        assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /updates/v3.oxb HTTP/1.1"));
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body);
    });
    let url = format!("http://{addr}/updates/v3.oxb");
    let r = oxinvr(&["ota", "install", "--config", cfg, &url], Some("B"));
    server.join().expect("server");
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    assert!(r.out.contains("installed version 3.0.0 into slot A"), "{}", r.out);
    assert_eq!(&b.read(&b.slot_a)[..image3.len()], &image3[..]);
    assert_eq!(&b.read(&b.slot_b)[..image.len()], &image[..], "the running slot B was written");
    assert_eq!(
        b.env_text(),
        "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\nOXINVR_A_VERSION=3.0.0\nOXINVR_B_VERSION=2.0.0\n"
    );

    // A download that is cut short never activates the half-written slot.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let full3 = b.read(&v3);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut req = [0u8; 2048];
        let _ = s.read(&mut req);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", full3.len());
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&full3[..full3.len() / 2]);
    });
    let r = oxinvr(&["ota", "install", "--config", cfg, &format!("http://{addr}/v3.oxb")], Some("A"));
    server.join().expect("server");
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(r.err.contains("update refused"), "{}", r.err);
    // B (being overwritten) is disarmed; A, the running slot, boots.
    assert_eq!(b.env_text(), "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\nOXINVR_A_VERSION=3.0.0\n");
    let r = oxinvr(&["ota", "status", "--config", cfg], Some("A"));
    assert!(r.out.contains("slot A") && r.out.contains("version 3.0.0 [running]"), "{}", r.out);
    assert!(r.out.contains("version unknown"), "{}", r.out);
}

#[test]
fn cli_mistakes_are_named() {
    let r = oxinvr(&["ota"], None);
    assert!(r.code == 2 && r.err.contains("ota needs a subcommand"), "{}", r.err);
    let r = oxinvr(&["ota", "fly"], None);
    assert!(r.code == 2 && r.err.contains("unknown ota subcommand"), "{}", r.err);
    let r = oxinvr(&["ota", "make-bundle", "--key", "k"], None);
    assert!(r.code == 2 && r.err.contains("needs --board, --version, --image, --out"), "{}", r.err);
    let r = oxinvr(&["ota", "install"], None);
    assert!(r.code == 2 && r.err.contains("needs a bundle"), "{}", r.err);
    let r = oxinvr(&["ota", "install", "a.oxb", "b.oxb"], None);
    assert!(r.code == 2 && r.err.contains("unexpected argument \"b.oxb\""), "{}", r.err);
    let r = oxinvr(&["ota", "install", "https://example.invalid/a.oxb"], Some("A"));
    assert!(r.code == 2 && r.err.contains("https is not supported"), "{}", r.err);
    let r = oxinvr(&["ota", "install", "--reboot", "x.oxb"], None);
    assert!(r.code == 2 && r.err.contains("not a booted OxiNVR appliance"), "{}", r.err);
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(oxinvr(&["ota", "keygen", "--out-dir", p(dir.path())], None).code, 0);
    let r = oxinvr(&["ota", "keygen", "--out-dir", p(dir.path())], None);
    assert!(r.code == 2 && r.err.contains("exists"), "{}", r.err);
}

/// `POST /api/system/ota` runs the same install as the CLI, on the running recorder.
#[test]
fn upload_through_the_http_api() {
    let rig = setup();
    let text = std::fs::read_to_string(&rig.config).expect("config");
    let port: u16 = text
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("port in config");
    let mut child = Command::new(oxinvr_bin())
        .args(["run", "--config", p(&rig.config)])
        .env(oxinvr::appliance::ota::SLOT_ENV, "A")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::nvr::http(port, "GET", "/api/health", &[], b"").map(|r| r.status).ok() != Some(200) {
        assert!(std::time::Instant::now() < deadline, "no /api/health");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let token =
        std::fs::read_to_string(rig.config.with_file_name("data").join("console.token")).expect("console token");
    let bearer = format!("Bearer {}", token.trim());
    let auth = [("Authorization", bearer.as_str())];
    let slot_a_before = rig.read(&rig.slot_a);
    // Another board's bundle is refused and nothing is written.
    let (other, _) = rig.bundle("other", "ingenic-a1", "9.9.9", &rig.key, 7);
    let r = common::nvr::http(port, "POST", "/api/system/ota", &auth, &rig.read(&other)).expect("post");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("ingenic-a1") && r.text().contains("qemu-malta"), "{}", r.text());
    assert_eq!(rig.env_text(), ENV_AB);
    // A good one lands in the inactive slot B and flips the boot order.
    let (good, image) = rig.bundle("good", "qemu-malta", "1.2.3", &rig.key, 3);
    let r = common::nvr::http(port, "POST", "/api/system/ota", &auth, &rig.read(&good)).expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], "1.2.3");
    assert_eq!(&rig.read(&rig.slot_b)[..image.len()], &image[..]);
    assert_eq!(rig.read(&rig.slot_a), slot_a_before, "the running slot was touched");
    assert!(rig.env_text().contains("BOOT_ORDER=\"B A\""), "{}", rig.env_text());
    let st = common::nvr::http(port, "GET", "/api/system/ota", &auth, b"").expect("get").json();
    assert_eq!(st["state"], "installed", "{st}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}
