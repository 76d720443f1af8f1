//! Runs the real `oxinvr` binary for integration tests and talks HTTP to it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A raw HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(port, &bytes)
}

/// Sends `bytes` as they are (a request, well-formed or not) and reads the
/// response until the server closes the connection; an event stream
/// (`text/event-stream`, which never ends) is read up to its head.
pub fn send_raw(port: u16, bytes: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(bytes)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            if head.contains("content-type: text/event-stream") {
                raw.truncate(end + 4);
                break;
            }
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::other(m.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response { status, headers, body })
}

/// A chunked body's data; `None` if it is malformed or ends before its last chunk.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

pub fn oxinvr_bin() -> PathBuf {
    std::env::var_os("OXINVR_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_oxinvr")))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `oxinvr run` with its own data directory and port.
pub struct Oxinvr {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    /// The process's stderr.
    pub log_path: PathBuf,
    token: std::cell::RefCell<String>,
}

impl Oxinvr {
    /// Writes `<dir>/oxinvr.toml` from `body` (which may use {DATA} and {PORT})
    /// unless it exists, starts the binary and waits until /api/health answers.
    pub fn start(dir: &Path, body: &str) -> Oxinvr {
        Self::start_with_env(dir, body, &[])
    }

    /// [`Oxinvr::start`] with extra environment variables (e.g. libfaketime's).
    pub fn start_with_env(dir: &Path, body: &str, env: &[(&str, &str)]) -> Oxinvr {
        let config = dir.join("oxinvr.toml");
        let data_dir = dir.join("data");
        let port = free_port();
        let text = body.replace("{DATA}", &data_dir.display().to_string()).replace("{PORT}", &port.to_string());
        std::fs::write(&config, text).expect("write config");
        Self::start_with(config, data_dir, port, env)
    }

    /// Starts again on an existing config (same data dir and port).
    pub fn restart(config: &Path, data_dir: &Path, port: u16) -> Oxinvr {
        Self::start_with(config.to_path_buf(), data_dir.to_path_buf(), port, &[])
    }

    /// [`Oxinvr::start`] of `oxinvr archive` (the file needs `[archive]`).
    pub fn start_archive(dir: &Path, body: &str) -> Oxinvr {
        let config = dir.join("oxinvr.toml");
        let data_dir = dir.join("data");
        let port = free_port();
        let text = body.replace("{DATA}", &data_dir.display().to_string()).replace("{PORT}", &port.to_string());
        std::fs::write(&config, text).expect("write config");
        Self::start_cmd("archive", config, data_dir, port, &[])
    }

    fn start_with(config: PathBuf, data_dir: PathBuf, port: u16, env: &[(&str, &str)]) -> Oxinvr {
        Self::start_cmd("run", config, data_dir, port, env)
    }

    fn start_cmd(cmd: &str, config: PathBuf, data_dir: PathBuf, port: u16, env: &[(&str, &str)]) -> Oxinvr {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log_path = config.with_file_name(format!("oxinvr-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(oxinvr_bin())
            .args([cmd, "--config"])
            .arg(&config)
            .env("OXINVR_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oxinvr");
        let mut me = Oxinvr { child: Some(child), port, data_dir, config, log_path, token: Default::default() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = me.child.as_mut().map(|c| c.try_wait()) {
                panic!("oxinvr exited ({st}) before answering /api/health:\n{}", me.log());
            }
            if me.get("/api/health").map(|r| r.status == 200).unwrap_or(false) {
                return me;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("oxinvr did not answer /api/health in 30 s:\n{}", me.log());
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `Authorization: Bearer <console token>`: an admin credential that the
    /// recorder writes into its data dir at start (the UART shell uses it).
    pub fn auth_header(&self) -> (String, String) {
        // The last token read if the file cannot be (a failing disk, tests/disk_faults.rs).
        let mut last = self.token.borrow_mut();
        if let Ok(t) = std::fs::read_to_string(self.data_dir.join("console.token")) {
            *last = t.trim().to_string();
        }
        ("Authorization".to_string(), format!("Bearer {last}"))
    }

    /// A request with the console credential.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let (k, v) = self.auth_header();
        let mut all: Vec<(&str, &str)> = vec![(k.as_str(), v.as_str())];
        all.extend_from_slice(headers);
        http(self.port, method, path, &all, body)
    }

    /// An API key of a new user `<prefix>-<role>` with `role` (made, logged in, key made).
    pub fn api_key(&self, prefix: &str, role: &str) -> String {
        let (name, password) = (format!("{prefix}-{role}"), format!("{prefix}-{role}-password"));
        let json = [("Content-Type", "application/json")];
        let body = serde_json::json!({ "username": name, "password": password, "role": role }).to_string();
        let r = self.request("POST", "/api/users", &json, body.as_bytes()).expect("user");
        assert_eq!(r.status, 201, "create {name}: {}", r.text());
        let login = serde_json::json!({ "username": name, "password": password }).to_string();
        let r = http(self.port, "POST", "/api/auth/login", &json, login.as_bytes()).expect("login");
        assert_eq!(r.status, 200, "login {name}: {}", r.text());
        let cookie = r.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("cookie").to_string();
        let csrf = r.json()["csrf"].as_str().expect("csrf").to_string();
        let headers =
            [("Content-Type", "application/json"), ("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
        let r = http(self.port, "POST", "/api/keys", &headers, format!(r#"{{"name":"{prefix} test"}}"#).as_bytes())
            .expect("key");
        assert_eq!(r.status, 201, "key of {name}: {}", r.text());
        r.json()["key"].as_str().expect("key").to_string()
    }

    /// GET with the console credential.
    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The process's resident set (kB, /proc/PID/status VmRSS) and open file descriptors.
    pub fn rss_kb_and_fds(&self) -> (u64, usize) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
        (rss, fds)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0))
    }

    /// SIGTERM, then wait (at most `limit`) for a clean exit.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let began = Instant::now();
        let _ = kill(self.pid(), Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return (st, began.elapsed());
            }
            if began.elapsed() > limit {
                let _ = child.kill();
                panic!("oxinvr did not exit within {limit:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill9(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Waits until `f` is true of the JSON at `path`, or panics after `limit`.
    pub fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        let mut last;
        loop {
            match self.get(path) {
                Ok(r) if r.status == 200 => {
                    let v = r.json();
                    if f(&v) {
                        return v;
                    }
                    last = v.to_string();
                }
                Ok(r) => last = format!("{}: {}", r.status, r.text()),
                Err(e) => last = e.to_string(),
            }
            assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}; last answer: {last}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A running `oxinvr run` that owns its temporary directory. Dropped at the
/// end of a test that passed, it must stop within 15 s of SIGTERM (after a
/// failure, `Oxinvr`'s own drop kills it).
pub struct TempOxinvr {
    oxinvr: Option<Oxinvr>,
    _dir: tempfile::TempDir,
}

impl TempOxinvr {
    /// [`Oxinvr::start`] in `dir`, which is deleted after the process ends.
    pub fn start(dir: tempfile::TempDir, config: &str) -> TempOxinvr {
        let oxinvr = Oxinvr::start(dir.path(), config);
        TempOxinvr { oxinvr: Some(oxinvr), _dir: dir }
    }
}

impl std::ops::Deref for TempOxinvr {
    type Target = Oxinvr;
    fn deref(&self) -> &Oxinvr {
        self.oxinvr.as_ref().expect("running")
    }
}

impl Drop for TempOxinvr {
    fn drop(&mut self) {
        if let Some(oxinvr) = self.oxinvr.take() {
            if !std::thread::panicking() {
                oxinvr.terminate(Duration::from_secs(15));
            }
        }
    }
}

impl Drop for Oxinvr {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// `oxinvr shell --config CONFIG` started as the UART console runs it: a dumb
/// terminal, outside any booted slot, stdin and stdout piped.
pub fn shell_child(config: &Path) -> Child {
    Command::new(oxinvr_bin())
        .args(["shell", "--config"])
        .arg(config)
        .env("TERM", "dumb")
        .env_remove(oxinvr::appliance::ota::SLOT_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start oxinvr shell")
}

/// What `oxinvr shell --config CONFIG` (the UART console, on a dumb terminal,
/// outside any booted slot) prints for the lines of `input`.
pub fn shell_output(config: &Path, input: &str) -> String {
    let mut shell = shell_child(config);
    std::io::Write::write_all(&mut shell.stdin.take().expect("stdin"), input.as_bytes()).expect("type");
    let out = shell.wait_with_output().expect("shell output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls every 50 ms until `f` holds, or panics after `limit`.
pub fn poll(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
