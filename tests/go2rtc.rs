//! go2rtc supervised by OxiNVR (`[go2rtc] binary`): started with the YAML
//! OxiNVR writes, health-checked, restarted with backoff after a crash, killed
//! and restarted when hung or over its memory, stopped with OxiNVR.
//!
//! No go2rtc binary is reachable from this machine, so `tests/go2rtc-standin`
//! (Python) plays it: it reads our YAML, binds where it says, prints go2rtc-style
//! log lines, answers the parts of go2rtc's API OxiNVR uses, and is told through
//! a control file to crash, hang or grow. Everything on OxiNVR's side is the
//! real binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nvr::{free_port, http, poll, shell_output, Oxinvr};
use serde_json::Value;

fn standin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go2rtc-standin")
}

/// An OxiNVR supervising the stand-in, and the stand-in's control directory.
struct Setup {
    nvr: Oxinvr,
    ctl: PathBuf,
    api_port: u16,
    rtsp_port: u16,
    _dir: tempfile::TempDir,
}

fn start(extra_go2rtc: &str, streams: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = dir.path().join("standin");
    std::fs::create_dir_all(&ctl).expect("control dir");
    let (api_port, rtsp_port, webrtc_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\n\
         [go2rtc]\nbinary = \"{}\"\napi_port = {api_port}\nrtsp_port = {rtsp_port}\nwebrtc_port = {webrtc_port}\n\
         {extra_go2rtc}\n{streams}",
        standin().display()
    );
    let env = [("OXINVR_TEST_GO2RTC_DIR", ctl.to_str().expect("utf-8 path"))];
    let nvr = Oxinvr::start_with_env(dir.path(), &config, &env);
    Setup { nvr, ctl, api_port, rtsp_port, _dir: dir }
}

impl Setup {
    fn go2rtc(&self) -> Value {
        self.nvr.json("/api/system")["go2rtc"].clone()
    }

    /// Waits until go2rtc is running with a pid other than `not`; returns it.
    fn running(&self, limit: Duration, not: Option<u64>) -> Value {
        self.nvr.wait_for("/api/system", limit, "go2rtc running", |s| {
            let g = &s["go2rtc"];
            g["state"] == "running" && g["pid"].as_u64().is_some() && g["pid"].as_u64() != not
        })["go2rtc"]
            .clone()
    }

    fn tell(&self, word: &str) {
        std::fs::write(self.ctl.join("control"), word).expect("write control");
    }

    /// One JSON object per start of the stand-in.
    fn starts(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.ctl.join("starts.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("starts.jsonl line")).collect()
    }

    /// The stand-in's own list of streams (its API, as go2rtc's).
    fn standin_streams(&self) -> Value {
        let r = http(self.api_port, "GET", "/api/streams", &[], b"").expect("stand-in API");
        r.json()
    }
}

/// Gone: no such process, or only its zombie.
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn go2rtc_runs_on_our_yaml_serves_our_streams_logs_into_ours_and_stops_with_us() {
    let streams = "[[streams]]\nname = \"cam\"\nurl = \"rtsp://u:pw@127.0.0.1:9/x\"\n\n\
                   [[streams]]\nname = \"off\"\nurl = \"rtsp://127.0.0.1:9/y\"\nenabled = false\n";
    let s = start("", streams);
    let g = s.running(Duration::from_secs(20), None);
    let pid = g["pid"].as_u64().expect("pid");
    assert_eq!(g["restarts"], 0, "{g}");
    assert_eq!(g["max_rss_bytes"], 40 << 20, "the default limit: {g}");

    // Started with the YAML we wrote: API and RTSP on loopback only.
    let starts = s.starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let yaml_path = s.nvr.data_dir.join("go2rtc/go2rtc.yaml");
    assert_eq!(starts[0]["argv"][1], "-config");
    assert_eq!(starts[0]["argv"][2], yaml_path.display().to_string());
    assert_eq!(starts[0]["bound"]["api"], format!("127.0.0.1:{}", s.api_port), "{starts:?}");
    assert_eq!(starts[0]["bound"]["rtsp"], format!("127.0.0.1:{}", s.rtsp_port), "{starts:?}");
    assert_eq!(mode(&yaml_path), 0o600, "go2rtc may write stream passwords into it");

    // The enabled stream is registered (with its camera URL), the disabled one is not.
    poll(Duration::from_secs(10), "cam registered", || s.go2rtc()["streams"] == 1);
    let st = s.standin_streams();
    assert_eq!(st["cam"]["producers"][0]["url"], "rtsp://u:pw@127.0.0.1:9/x", "{st}");
    assert!(st.get("off").is_none(), "{st}");
    // A stream added through the API reaches go2rtc, and a deleted one leaves it.
    let body = br#"{"name":"door","url":"rtsp://127.0.0.1:9/door"}"#;
    let r = s.nvr.request("POST", "/api/streams", &[("Content-Type", "application/json")], body).expect("add");
    assert_eq!(r.status, 201, "{}", r.text());
    poll(Duration::from_secs(10), "door registered", || s.standin_streams().get("door").is_some());
    let r = s.nvr.request("DELETE", "/api/streams/door", &[], b"").expect("delete");
    assert!(r.status < 300, "{}", r.text());
    poll(Duration::from_secs(10), "door removed", || s.standin_streams().get("door").is_none());

    // Its log lines are in OxiNVR's log (the file, the API, the page's log).
    let listen = format!("go2rtc: INF [api] listen addr=127.0.0.1:{}", s.api_port);
    poll(Duration::from_secs(5), "go2rtc's lines in the log", || s.nvr.log().contains(&listen));
    let logs = s.nvr.json("/api/system/logs?lines=2000");
    assert!(logs["lines"].as_array().expect("lines").iter().any(|l| l.as_str().is_some_and(|l| l.contains(&listen))));

    // Its reservation is in the memory budget; WebRTC offers reach it.
    assert_eq!(s.nvr.json("/api/system/memory")["fixed"]["go2rtc"], 40 << 20);
    let r = webrtc_offer(&s.nvr);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["sdp"].as_str().is_some_and(|sdp| sdp.contains("go2rtc-standin")), "{}", r.text());

    // The UART shell's status says so.
    let out = shell_output(&s.nvr.config, "status\nexit\n");
    assert!(out.contains(&format!("go2rtc: running, pid {pid}, RSS ")), "{out}");

    // OxiNVR stopping stops it: no orphan left.
    let Setup { nvr, _dir, .. } = s;
    let (status, took) = nvr.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(gone(pid), "go2rtc (pid {pid}) outlived OxiNVR");
    eprintln!("figure: SIGTERM to exit with go2rtc supervised: {took:?}");
}

#[test]
fn a_crash_is_followed_by_a_restart_and_repeated_crashes_back_off() {
    let s = start("", "[[streams]]\nname = \"cam\"\nurl = \"rtsp://127.0.0.1:9/x\"\n");
    let first = s.running(Duration::from_secs(20), None)["pid"].as_u64().expect("pid");

    // One crash: started again about a second later.
    let crashed = Instant::now();
    s.tell("crash");
    let g = s.running(Duration::from_secs(15), Some(first));
    let took = crashed.elapsed();
    assert_eq!(g["restarts"], 1, "{g}");
    assert!(g["last_error"].as_str().is_some_and(|e| e.contains("exited")), "{g}");
    assert!(g["last_error_at"].is_string(), "{g}");
    assert!(gone(first));
    eprintln!("figure: crash to running again: {took:?}");
    assert!(s.nvr.log().contains("go2rtc: FTL [app] stand-in told to crash"), "its stderr is logged too");

    // Crashing at every start: the waits grow (visible in /api/system), from
    // 2 s: the run after the first crash was too short to reset the backoff ...
    s.tell("crash-always");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        let g = s.go2rtc();
        if let Some(ms) = g["backoff_ms"].as_u64().filter(|ms| seen.last() != Some(ms)) {
            assert_eq!(g["state"], "backoff", "{g}");
            seen.push(ms);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, [2000, 4000, 8000], "each failed start doubles the wait");
    // Meanwhile (8 s of backoff) a WebRTC offer is told why at once, not left waiting.
    let r = webrtc_offer(&s.nvr);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("go2rtc is restarting in 8 s (it stopped: exited"), "{}", r.text());
    // ... and once it can start again it does, with no help.
    let second = s.go2rtc()["pid"].as_u64();
    std::fs::remove_file(s.ctl.join("control")).expect("remove control");
    let g = s.running(Duration::from_secs(20), second.or(Some(first)));
    assert!(g["restarts"].as_u64().expect("restarts") >= 4, "{g}");
}

#[test]
fn a_hung_go2rtc_is_killed_and_started_again() {
    let s = start("", "");
    let first = s.running(Duration::from_secs(20), None)["pid"].as_u64().expect("pid");
    let hung = Instant::now();
    s.tell("hang"); // its API stops answering and it ignores SIGTERM
    let g = s.running(Duration::from_secs(30), Some(first));
    let took = hung.elapsed();
    assert!(g["last_error"].as_str().is_some_and(|e| e.contains("hung")), "{g}");
    assert!(gone(first), "the hung one was killed (SIGKILL after SIGTERM was ignored)");
    eprintln!("figure: hang to running again: {took:?}");
}

#[test]
fn go2rtc_over_its_memory_is_killed_and_started_again_and_never_orphaned() {
    let s = start("max_rss_mb = 40\n", "");
    let g = s.running(Duration::from_secs(20), None);
    let first = g["pid"].as_u64().expect("pid");
    assert!(g["rss_bytes"].as_u64().is_some_and(|r| r < 40 << 20), "{g}");
    s.tell("grow 48");
    let g = s.running(Duration::from_secs(20), Some(first));
    let why = g["last_error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("exceeded its reservation of 40 MiB"), "{g}");
    assert!(gone(first));
    // OxiNVR killed outright cannot stop it: the kernel does (PR_SET_PDEATHSIG).
    let second = g["pid"].as_u64().expect("pid");
    let Setup { nvr, _dir, .. } = s;
    nvr.kill9();
    poll(Duration::from_secs(5), "go2rtc gone after OxiNVR was SIGKILLed", || gone(second));
}

#[test]
fn a_missing_go2rtc_binary_is_said_and_the_recorder_runs_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [go2rtc]\nbinary = \"/nonexistent/go2rtc\"\napi_port = {}\nrtsp_port = {}\nwebrtc_port = {}\n",
        free_port(),
        free_port(),
        free_port()
    );
    let nvr = Oxinvr::start(dir.path(), &config);
    let s =
        nvr.wait_for("/api/system", Duration::from_secs(10), "go2rtc backoff", |s| s["go2rtc"]["state"] == "backoff");
    let why = s["go2rtc"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("cannot start /nonexistent/go2rtc") && why.contains("No such file"), "{s}");
    assert_eq!(nvr.get("/api/health").expect("health").status, 200);
}

/// A WebRTC offer for stream `cam`, as the page sends it.
fn webrtc_offer(nvr: &Oxinvr) -> common::nvr::Response {
    let offer = br#"{"type":"offer","sdp":"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"}"#;
    nvr.request("POST", "/api/streams/cam/webrtc", &[("Content-Type", "application/json")], offer).expect("offer")
}
