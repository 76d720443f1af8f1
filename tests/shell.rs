//! The UART shell as an operator meets it: the real `oxinvr run` recording,
//! and `oxinvr shell` driven line by line over its stdin.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::nvr::{oxinvr_bin, Oxinvr};

const PROMPT: &str = "oxinvr> ";

/// A running `oxinvr shell` with its stdout collected by a thread.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl Session {
    fn start(config: &Path) -> (Session, String) {
        let mut child = common::nvr::shell_child(config);
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut s = Session { child, stdin, rx, pending: Vec::new() };
        let banner = s.until_prompt();
        (s, banner)
    }

    /// Output up to (without) the next prompt.
    fn until_prompt(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.pending.windows(PROMPT.len()).position(|w| w == PROMPT.as_bytes()) {
                let out = String::from_utf8_lossy(&self.pending[..i]).into_owned();
                self.pending.drain(..i + PROMPT.len());
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.pending.extend_from_slice(&b),
                Err(_) => panic!("no prompt within 30 s; output so far: {}", String::from_utf8_lossy(&self.pending)),
            }
        }
    }

    /// Types `line` and returns what the shell printed before the next prompt.
    fn run(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("type");
        stdin.flush().expect("flush");
        self.until_prompt()
    }

    /// Closes stdin (Ctrl-D) and returns the exit code.
    fn close(mut self) -> i32 {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the shell did not end at end of input");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n";

#[test]
fn the_shell_drives_the_running_recorder_through_its_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(dir.path(), CONFIG);
    let (mut sh, banner) = Session::start(&nvr.config);
    assert!(banner.contains("OxiNVR") && banner.contains("help"), "{banner}");

    let out = sh.run("status");
    assert!(out.contains("recorder: running") && out.contains("streams: 0"), "{out}");
    assert!(out.contains("disk: "), "{out}");

    let out = sh.run("streams add cam rtsp://127.0.0.1:9/x retention_days=7");
    assert!(out.starts_with("added cam: rtsp://127.0.0.1:9/x enabled"), "{out}");
    let out = sh.run("streams list");
    assert!(out.contains("NAME") && out.contains("cam") && out.contains("rtsp://127.0.0.1:9/x"), "{out}");
    // The very stream the API shows.
    let listed = nvr.json("/api/streams");
    let cam = &listed["streams"][0];
    assert_eq!(cam["name"], "cam");
    assert_eq!(cam["url"], "rtsp://127.0.0.1:9/x");
    assert_eq!(cam["retention_days"], 7);
    assert_eq!(cam["source"], "api");

    // The API's own validation speaks through the shell.
    let out = sh.run("streams add cam rtsp://127.0.0.1:9/y");
    assert!(out.starts_with("error: ") && out.contains("already exists"), "{out}");
    let out = sh.run("streams add cam2 http://127.0.0.1/x");
    assert!(out.starts_with("error: field url"), "{out}");
    let out = sh.run("streams disable nosuch");
    assert!(out.starts_with("error: no stream named \"nosuch\""), "{out}");

    let out = sh.run("streams disable cam");
    assert!(out.starts_with("disabled cam"), "{out}");
    assert_eq!(nvr.json("/api/streams/cam")["enabled"], false);
    let out = sh.run("streams enable cam");
    assert!(out.starts_with("enabled cam"), "{out}");
    assert_eq!(nvr.json("/api/streams/cam")["enabled"], true);

    let out = sh.run("recordings cam");
    assert!(out.starts_with("0 recording(s)"), "{out}");
    let out = sh.run("status");
    assert!(out.contains("streams: 1") && out.contains("cam"), "{out}");

    let out = sh.run("streams remove cam");
    assert!(out.starts_with("removed cam"), "{out}");
    assert_eq!(nvr.get("/api/streams/cam").expect("get").status, 404);

    let out = sh.run("frobnicate now");
    assert_eq!(out.trim(), "error: unknown command \"frobnicate\"; type help for the list");
    let out = sh.run("streams add onlyname");
    assert!(out.starts_with("error: usage: streams"), "{out}");
    let out = sh.run("help");
    for cmd in
        ["status", "streams add", "recordings", "users", "network", "logs", "ota install", "reboot", "factory-reset"]
    {
        assert!(out.contains(cmd), "help lacks {cmd}: {out}");
    }
    assert!(sh.run("help ota").starts_with("usage: ota status"));
    assert!(sh.run("users").starts_with("no users: open the web page for first-run setup"));
    // `oxinvr user add` on the console makes the first admin; the shell lists it.
    let add = std::process::Command::new(oxinvr_bin())
        .args(["user", "add", "root", "--role", "admin", "--config"])
        .arg(&nvr.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"console-password\n")?;
            c.wait_with_output()
        })
        .expect("oxinvr user add");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let out = sh.run("users");
    assert!(out.contains("root") && out.contains("admin") && out.contains("never"), "{out}");
    assert_eq!(nvr.json("/api/auth/status")["setup_required"], serde_json::Value::Bool(false));
    // The recorder's log file, written by `oxinvr run`.
    let out = sh.run("logs 50");
    assert!(out.contains("API on http://127.0.0.1:"), "{out}");
    let out = sh.run("network show");
    assert!(out.contains("configured"), "{out}");
    // Backspaces that reach a plain-mode shell are applied.
    let out = sh.run("usrs\x08\x08ers");
    assert!(out.contains("root") && out.contains("LAST LOGIN"), "{out}");

    if oxinvr::appliance::ota::appliance_slot().ok().flatten().is_none() {
        // A development machine is never reset, rebooted or renetworked.
        let out = sh.run("factory-reset");
        assert!(out.starts_with("error: this is not a booted OxiNVR appliance"), "{out}");
        let out = sh.run("reboot");
        assert!(out.contains("refusing to reboot"), "{out}");
        let out = sh.run("network dhcp eth0");
        assert!(out.contains("not a booted OxiNVR appliance"), "{out}");
        let out = sh.run("ota status");
        assert!(out.contains("running slot: unknown"), "{out}");
    }
    assert_eq!(sh.close(), 0);
}

#[test]
fn without_the_recorder_the_shell_says_so_and_status_reads_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(dir.path(), CONFIG);
    assert_eq!(
        nvr.request("POST", "/api/streams", &[], br#"{"name":"front","url":"rtsp://127.0.0.1:9/f"}"#)
            .expect("post")
            .status,
        201
    );
    let config = nvr.config.clone();
    let (st, _) = nvr.terminate(Duration::from_secs(15));
    assert!(st.success());

    let (mut sh, _) = Session::start(&config);
    let out = sh.run("status");
    assert!(out.contains("recorder: NOT RUNNING"), "{out}");
    assert!(out.contains("streams (from the database): 1") && out.contains("front"), "{out}");
    let out = sh.run("streams list");
    assert!(out.starts_with("error: the recorder is not running"), "{out}");
    // The log of the run that just ended is still there.
    let out = sh.run("logs 3");
    assert!(out.contains("stopped in"), "{out}");
    // `exit` ends the shell even with input left.
    sh.stdin.as_mut().expect("stdin").write_all(b"exit\nstatus\n").expect("type");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(Some(st)) = sh.child.try_wait() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "exit did not end the shell");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}
