//! go2rtc supervised: OxiNVR writes go2rtc's YAML, starts it as a child,
//! checks its HTTP API every second, registers the streams it should serve,
//! logs its output as its own ("go2rtc: ..."), and kills and restarts it when
//! it exits, stops answering, or grows past its memory reservation.
//!
//! One thread, `go2rtc`, does all of it; two more, `go2rtc-out` and
//! `go2rtc-err`, copy the child's lines into the log while it runs.
//!
//! Invariants:
//! - At most one child at a time, always reaped before the next one starts and
//!   before `Supervisor::stop` returns: OxiNVR stopping leaves no go2rtc behind.
//!   The child also dies if the thread that started it dies
//!   (`PR_SET_PDEATHSIG`), so a SIGKILLed OxiNVR leaves no orphan either. It
//!   runs in its own process group, which is what is signalled (an `ffmpeg` it
//!   started goes with it).
//! - Every call to its API has a deadline (`API_DEADLINE` per step): a hung
//!   go2rtc holds this thread at most that long per call.
//! - The YAML is rewritten before every start: the API and RTSP listen on
//!   127.0.0.1 only (go2rtc trusts local clients without a password).
//! - Restarts back off 1 s, 2 s, 4 s ... 60 s; a run that stayed healthy for
//!   60 s resets the backoff (`Backoff`). Decisions take times as arguments
//!   (`Backoff`, `Health`), so they are tested without waiting.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::base::clock::{rfc3339, Clock};
use crate::base::error::{Context as _, Error, Result};
use crate::base::httpclient::Client;
use crate::base::shutdown::Shutdown;
use crate::config::Config;

const MIB: u64 = 1 << 20;
/// How often the child is checked (exit, RSS, API) once running, and while
/// it starts (so a restart is seen to answer at once).
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_STARTING: Duration = Duration::from_millis(100);
/// Connect, and each read or write, of one API call.
const API_DEADLINE: Duration = Duration::from_secs(2);
/// A started go2rtc must answer its API within this.
const START_LIMIT: Duration = Duration::from_secs(15);
/// A running go2rtc whose API has not answered for this long is hung.
const HANG_AFTER: Duration = Duration::from_secs(5);
/// SIGTERM, then this long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// First wait before a restart; doubled after each failure up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run healthy for this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest line of go2rtc's output logged as one (the rest follows as more lines).
const MAX_LINE: u64 = 4096;

/// What to run, from `[go2rtc]` (`None`: not supervised).
#[derive(Clone, Debug)]
pub struct Settings {
    pub binary: PathBuf,
    /// `<data_dir>/go2rtc/go2rtc.yaml`; its folder is go2rtc's working
    /// directory (not `<data_dir>/go2rtc.yaml`: the appliance's `S60go2rtc`
    /// starts a go2rtc of its own when that file exists).
    pub yaml: PathBuf,
    pub api_port: u16,
    pub rtsp_port: u16,
    pub webrtc_port: u16,
    pub max_rss: u64,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Option<Settings> {
        let g = &cfg.go2rtc;
        (!g.binary.is_empty()).then(|| Settings {
            binary: PathBuf::from(&g.binary),
            yaml: cfg.storage.data_dir.join("go2rtc").join("go2rtc.yaml"),
            api_port: g.api_port,
            rtsp_port: g.rtsp_port,
            webrtc_port: g.webrtc_port,
            max_rss: u64::from(g.max_rss_mb) * MIB,
        })
    }

    fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    /// go2rtc's configuration: API and RTSP on loopback, WebRTC media on every
    /// interface (the browser reaches it directly), the rest off.
    pub fn yaml(&self) -> String {
        format!(
            "# Written by OxiNVR before each start of go2rtc; edits are lost ([go2rtc] in oxinvr.toml).\n\
             api:\n  listen: \"127.0.0.1:{api}\"\n\
             rtsp:\n  listen: \"127.0.0.1:{rtsp}\"\n\
             webrtc:\n  listen: \":{webrtc}\"\n  \
             # No public STUN servers: the box serves its LAN, and go2rtc waits for them\n  \
             # before it answers an offer.\n  ice_servers: []\n\
             rtmp:\n  listen: \"\"\n\
             srtp:\n  listen: \"\"\n\
             log:\n  format: text\n  level: info\n  time: \"\"\n\
             streams: {{}}\n",
            api = self.api_port,
            rtsp = self.rtsp_port,
            webrtc = self.webrtc_port,
        )
    }
}

/// (name, source URL) of every stream go2rtc should serve.
pub type Streams = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started, its API has not answered yet.
    Starting,
    Running,
    /// Waiting before the next start (`backoff_ms`).
    Backoff,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// What `/api/system`, the page and the shell show.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub state: State,
    pub binary: String,
    pub api: String,
    pub pid: Option<u32>,
    pub rss_bytes: Option<u64>,
    pub max_rss_bytes: u64,
    /// Starts after the first one.
    pub restarts: u64,
    /// Why the last run ended (or could not start), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The wait before the next start, while in `backoff`.
    pub backoff_ms: Option<u64>,
    /// Since when the current run answers its API.
    pub running_since: Option<String>,
    /// Streams registered with the current run.
    pub streams: usize,
    /// go2rtc's own `version` from `GET /api`.
    pub version: Option<String>,
}

/// The backoff between restarts (see the module invariants).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_FIRST }
    }
}

impl Backoff {
    /// The wait before the next start, after a run that was healthy for
    /// `healthy_for` (None: never answered).
    pub fn after_run(&mut self, healthy_for: Option<Duration>) -> Duration {
        if healthy_for.is_some_and(|d| d >= STABLE_AFTER) {
            self.next = BACKOFF_FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }
}

/// The health of one run: when it started and when its API last answered.
#[derive(Debug)]
pub struct Health {
    started: Duration,
    first_ok: Option<Duration>,
    last_ok: Option<Duration>,
}

impl Health {
    pub fn new(now: Duration) -> Self {
        Health { started: now, first_ok: None, last_ok: None }
    }

    /// The API answered at `now`; true if for the first time.
    pub fn ok(&mut self, now: Duration) -> bool {
        self.last_ok = Some(now);
        let first = self.first_ok.is_none();
        if first {
            self.first_ok = Some(now);
        }
        first
    }

    /// Why the run must be killed at `now`, if it must.
    pub fn verdict(&self, now: Duration) -> Option<String> {
        match self.last_ok {
            None if now.saturating_sub(self.started) > START_LIMIT => {
                Some(format!("its API did not answer within {} s of starting", START_LIMIT.as_secs()))
            }
            Some(t) if now.saturating_sub(t) > HANG_AFTER => {
                Some(format!("hung: its API did not answer for {} s", now.saturating_sub(t).as_secs()))
            }
            _ => None,
        }
    }

    /// How long the run had been answering at `now`.
    pub fn healthy_for(&self, now: Duration) -> Option<Duration> {
        self.first_ok.map(|t| now.saturating_sub(t))
    }
}

/// The running supervisor.
pub struct Supervisor {
    status: Mutex<Status>,
    stop: Shutdown,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// Starts the `go2rtc` thread, which starts go2rtc.
    pub fn spawn(settings: Settings, streams: Streams, clock: Arc<dyn Clock>) -> Result<Arc<Supervisor>> {
        let status = Status {
            state: State::Starting,
            binary: settings.binary.display().to_string(),
            api: settings.api().to_string(),
            pid: None,
            rss_bytes: None,
            max_rss_bytes: settings.max_rss,
            restarts: 0,
            last_error: None,
            last_error_at: None,
            backoff_ms: None,
            running_since: None,
            streams: 0,
            version: None,
        };
        let sup = Arc::new(Supervisor { status: Mutex::new(status), stop: Shutdown::new(), thread: Mutex::new(None) });
        let me = sup.clone();
        let run = Run { sup: me, settings, streams, clock };
        let handle = std::thread::Builder::new()
            .name("go2rtc".into())
            .spawn(move || run.supervise())
            .context("cannot start the go2rtc thread")?;
        *sup.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(sup)
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Stops go2rtc (SIGTERM, SIGKILL after 2 s) and the thread; returns once
    /// the child is reaped.
    pub fn stop(&self) {
        self.stop.trigger();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// The `go2rtc` thread's state.
struct Run {
    sup: Arc<Supervisor>,
    settings: Settings,
    streams: Streams,
    clock: Arc<dyn Clock>,
}

impl Run {
    fn supervise(self) {
        let mut backoff = Backoff::default();
        let mut first = true;
        while !self.sup.stop.is_triggered() {
            if !first {
                self.sup.update(|s| s.restarts += 1);
            }
            first = false;
            let (why, healthy_for) = self.run_once();
            if self.sup.stop.is_triggered() {
                break;
            }
            let wait = backoff.after_run(healthy_for);
            log::warn!("go2rtc: {why}; starting it again in {} s", wait.as_secs_f32());
            let at = rfc3339(self.clock.now_ms());
            self.sup.update(|s| {
                *s = Status {
                    state: State::Backoff,
                    pid: None,
                    rss_bytes: None,
                    last_error: Some(why),
                    last_error_at: Some(at),
                    backoff_ms: Some(wait.as_millis() as u64),
                    running_since: None,
                    streams: 0,
                    ..s.clone()
                }
            });
            if self.sup.stop.wait_timeout(wait) {
                break;
            }
        }
        self.sup.update(|s| {
            s.state = State::Stopped;
            s.pid = None;
            s.rss_bytes = None;
            s.backoff_ms = None;
            s.running_since = None;
        });
        log::info!("go2rtc: stopped");
    }

    /// One run: start, watch until it must end; returns why it ended and how
    /// long it had been healthy.
    fn run_once(&self) -> (String, Option<Duration>) {
        let mut child = match self.start() {
            Ok(c) => c,
            Err(e) => return (e.to_string(), None),
        };
        let pid = child.id();
        self.sup.update(|s| {
            s.state = State::Starting;
            s.pid = Some(pid);
            s.backoff_ms = None;
        });
        let api = Client::new(self.settings.api()).with_deadline(API_DEADLINE);
        let mut health = Health::new(self.clock.mono());
        let mut registered = BTreeMap::new();
        loop {
            let every = if health.healthy_for(self.clock.mono()).is_some() { CHECK_EVERY } else { CHECK_STARTING };
            if self.sup.stop.wait_timeout(every) {
                terminate(&mut child);
                return ("stopped".into(), None);
            }
            let now = self.clock.mono();
            if let Ok(Some(st)) = child.try_wait() {
                return (format!("exited ({st})"), health.healthy_for(now));
            }
            let rss = rss_of(pid);
            self.sup.update(|s| s.rss_bytes = rss);
            if let Some(rss) = rss.filter(|r| *r > self.settings.max_rss) {
                terminate(&mut child);
                let why = format!(
                    "its RSS {:.1} MiB exceeded its reservation of {} MiB: killed",
                    rss as f64 / MIB as f64,
                    self.settings.max_rss / MIB
                );
                return (why, health.healthy_for(self.clock.mono()));
            }
            match api.request("GET", "/api", None) {
                Ok(r) if r.status == 200 => {
                    let now = self.clock.mono();
                    if health.ok(now) {
                        let version = r.json()["version"].as_str().map(str::to_string);
                        log::info!(
                            "go2rtc: running (pid {pid}, version {}), API on {}",
                            version.as_deref().unwrap_or("?"),
                            self.settings.api()
                        );
                        let since = rfc3339(self.clock.now_ms());
                        self.sup.update(|s| {
                            s.state = State::Running;
                            s.running_since = Some(since);
                            s.version = version;
                        });
                    }
                    self.sync_streams(&api, &mut registered);
                }
                Ok(r) => log::debug!("go2rtc: GET /api answered HTTP {}", r.status),
                Err(e) => log::debug!("go2rtc: GET /api: {e}"),
            }
            let now = self.clock.mono();
            if let Some(why) = health.verdict(now) {
                terminate(&mut child);
                return (format!("{why}: killed"), health.healthy_for(now));
            }
        }
    }

    /// Writes the YAML, checks the API port is free, starts the child and its
    /// log threads.
    fn start(&self) -> Result<Child> {
        let s = &self.settings;
        if let Some(dir) = s.yaml.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_private(&s.yaml, s.yaml().as_bytes())?;
        // Another program on the port would answer our health checks for it.
        TcpListener::bind(s.api())
            .map_err(|e| Error::conflict(format!("cannot start: go2rtc.api_port {} is in use ({e})", s.api_port)))?;
        let mut cmd = Command::new(&s.binary);
        cmd.arg("-config").arg(&s.yaml).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(dir) = s.yaml.parent() {
            cmd.current_dir(dir);
        }
        own_group_dying_with_us(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| Error::io(format!("cannot start {}: {e}", s.binary.display())))?;
        log::info!("go2rtc: started {} -config {} (pid {})", s.binary.display(), s.yaml.display(), child.id());
        if let Some(out) = child.stdout.take() {
            copy_lines("go2rtc-out", out, log::Level::Info);
        }
        if let Some(err) = child.stderr.take() {
            copy_lines("go2rtc-err", err, log::Level::Warn);
        }
        Ok(child)
    }

    /// Registers new or changed streams with go2rtc and removes gone ones.
    /// A failed call is retried at the next check.
    fn sync_streams(&self, api: &Client, registered: &mut BTreeMap<String, String>) {
        let want: BTreeMap<String, String> = (self.streams)().into_iter().collect();
        let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
        for (name, src) in &want {
            if registered.get(name) == Some(src) {
                continue;
            }
            let path = format!("/api/streams?name={}&src={}", enc(name), enc(src));
            match api.request("PUT", &path, None) {
                Ok(r) if r.status < 300 => {
                    log::info!("go2rtc: stream {name:?} registered");
                    registered.insert(name.clone(), src.clone());
                }
                Ok(r) => log::warn!("go2rtc: registering stream {name:?}: HTTP {}", r.status),
                Err(e) => log::warn!("go2rtc: registering stream {name:?}: {e}"),
            }
        }
        let gone: Vec<String> = registered.keys().filter(|n| !want.contains_key(*n)).cloned().collect();
        for name in gone {
            let path = format!("/api/streams?name={0}&src={0}", enc(&name));
            match api.request("DELETE", &path, None) {
                Ok(r) if r.status < 300 => {
                    log::info!("go2rtc: stream {name:?} removed");
                    registered.remove(&name);
                }
                Ok(r) => log::warn!("go2rtc: removing stream {name:?}: HTTP {}", r.status),
                Err(e) => log::warn!("go2rtc: removing stream {name:?}: {e}"),
            }
        }
        let n = registered.len();
        self.sup.update(|s| s.streams = n);
    }
}

/// Writes `path` (mode 0600: go2rtc may add stream URLs with passwords to it)
/// through a temporary file and a rename.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("yaml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The child leads its own process group, gets SIGKILL when the thread that
/// started it dies (this thread lives as long as the supervisor), and starts
/// with no signal blocked and SIGPIPE at its default: it would otherwise
/// inherit OxiNVR's mask, where SIGTERM and SIGINT are blocked for `sigwait`
/// (seen: the stand-in ignored SIGTERM and was SIGKILLed at every stop).
fn own_group_dying_with_us(cmd: &mut Command) {
    use nix::sys::signal::{SigHandler, SigSet, Signal};
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls (prctl, sigprocmask, sigaction), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            SigSet::empty().thread_set_mask()?;
            nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
            Ok(())
        });
    }
}

/// SIGTERM to the child's group, SIGKILL after `KILL_GRACE`; reaps it.
fn terminate(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + KILL_GRACE;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let _ = killpg(group, Signal::SIGKILL); // what it started
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::warn!("go2rtc: pid {} did not exit within {} s of SIGTERM: SIGKILL", child.id(), KILL_GRACE.as_secs());
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

/// The resident set of process `pid` (VmRSS), if it is still there.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// Copies lines of the child's `pipe` into the log on a thread named `name`,
/// at the level go2rtc gave each line (`fallback` for lines without one).
fn copy_lines(name: &str, pipe: impl Read + Send + 'static, fallback: log::Level) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut r).take(MAX_LINE).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end();
                    if !line.is_empty() {
                        log::log!(level_of(line).unwrap_or(fallback), "go2rtc: {line}");
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("go2rtc: cannot start {name} ({e}); its output is not logged");
    }
}

/// The level of a go2rtc console line ("INF [api] listen ..."), possibly
/// after a time ("15:04:05.000 WRN ...").
pub fn level_of(line: &str) -> Option<log::Level> {
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let word = if first.contains(':') { words.next()? } else { first };
    Some(match word {
        "TRC" => log::Level::Trace,
        "DBG" => log::Level::Debug,
        "INF" => log::Level::Info,
        "WRN" => log::Level::Warn,
        "ERR" | "FTL" | "PNC" => log::Level::Error,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn restarts_back_off_doubling_to_a_cap_and_a_stable_run_resets_it() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.after_run(None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.after_run(Some(S(59))), S(60), "a short healthy run does not reset it");
        assert_eq!(b.after_run(Some(S(60))), S(1), "a minute of health does");
        assert_eq!(b.after_run(Some(S(1))), S(2));
    }

    #[test]
    fn a_silent_start_and_a_hang_are_told_apart_from_health() {
        let mut h = Health::new(S(100));
        assert_eq!(h.verdict(S(114)), None, "starting: 15 s to answer");
        assert!(h.verdict(S(116)).is_some_and(|w| w.contains("within 15 s of starting")));
        assert!(h.ok(S(102)), "first answer");
        assert!(!h.ok(S(103)));
        assert_eq!(h.verdict(S(108)), None);
        assert!(h.verdict(S(109)).is_some_and(|w| w.contains("did not answer for 6 s")), "{:?}", h.verdict(S(109)));
        assert_eq!(h.healthy_for(S(109)), Some(S(7)));
        assert_eq!(Health::new(S(0)).healthy_for(S(5)), None);
    }

    #[test]
    fn go2rtc_log_levels_are_kept() {
        assert_eq!(level_of("INF [api] listen addr=127.0.0.1:1984"), Some(log::Level::Info));
        assert_eq!(level_of("12:00:01.000 WRN [rtsp] bad"), Some(log::Level::Warn));
        assert_eq!(level_of("FTL [api] listen error"), Some(log::Level::Error));
        assert_eq!(level_of("panic: runtime error"), None);
        assert_eq!(level_of(""), None);
    }

    #[test]
    fn the_yaml_binds_the_api_and_rtsp_to_loopback() {
        let s = Settings {
            binary: "/usr/bin/go2rtc".into(),
            yaml: "/tmp/go2rtc.yaml".into(),
            api_port: 1990,
            rtsp_port: 8560,
            webrtc_port: 8561,
            max_rss: 40 * MIB,
        };
        let y = s.yaml();
        assert!(y.contains("api:\n  listen: \"127.0.0.1:1990\"\n"), "{y}");
        assert!(y.contains("rtsp:\n  listen: \"127.0.0.1:8560\"\n"), "{y}");
        assert!(y.contains("webrtc:\n  listen: \":8561\"\n"), "{y}");
        assert!(y.contains("srtp:\n  listen: \"\"\n") && y.contains("rtmp:\n  listen: \"\"\n"), "{y}");
    }
}
