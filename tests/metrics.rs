//! `GET /api/metrics` as Prometheus reads it: the real binary recording a real
//! test camera, the text parsed by Prometheus's own Python client
//! (`prometheus_client.parser`, installed by scripts/lib/deps.sh,
//! `ensure_prometheus_client`), the figures checked against `/api/streams`,
//! the credentials it takes, and the unauthenticated listener of
//! `metrics.listen` (off unless configured).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::nvr::{free_port, http, poll, Oxinvr, Response};
use common::Camera;
use serde_json::{json, Value};

/// Reads the exposition on stdin with Prometheus's parser; prints the families as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;

/// The python of the virtualenv that has prometheus_client.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OXINVR_PROMETHEUS_PYTHON") {
        return PathBuf::from(p);
    }
    common::tool_cache().join("prometheus-client/bin/python")
}

/// The families of an exposition, as `prometheus_client` parses it (a parse error fails).
fn parse(text: &str) -> Vec<Value> {
    let py = python();
    assert!(
        py.exists(),
        "{} is missing: scripts/test installs it (source scripts/lib/deps.sh; ensure_prometheus_client)",
        py.display()
    );
    let mut child = Command::new(&py)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the metrics");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("the parser's JSON")
}

/// Parsed families with lookups by sample name and labels.
struct Metrics(Vec<Value>);

impl Metrics {
    fn samples(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().flat_map(|f| f["samples"].as_array().into_iter().flatten())
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples().find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v)).and_then(|s| s[2].as_f64())
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#}", json!(self.0)))
    }

    fn family(&self, name: &str) -> &Value {
        self.0.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no family {name}"))
    }
}

fn stream_toml(url: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\nsync_seconds = 1\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [[streams]]\nname = \"cam\"\nurl = \"{url}\"\nbitrate_kbps = 1000\n"
    )
}

/// A viewer's session cookie and an API key of theirs.
fn viewer(nvr: &Oxinvr) -> (String, String) {
    let body = json!({ "username": "watcher", "password": "watcher-password", "role": "viewer" }).to_string();
    let r = nvr.request("POST", "/api/users", &[("Content-Type", "application/json")], body.as_bytes()).expect("user");
    assert_eq!(r.status, 201, "create the viewer: {}", r.text());
    let login = json!({ "username": "watcher", "password": "watcher-password" }).to_string();
    let r = http(nvr.port, "POST", "/api/auth/login", &[("Content-Type", "application/json")], login.as_bytes())
        .expect("login");
    assert_eq!(r.status, 200, "login: {}", r.text());
    let cookie = r.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("cookie").to_string();
    let csrf = r.json()["csrf"].as_str().expect("csrf").to_string();
    let headers = [("Content-Type", "application/json"), ("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let r = http(nvr.port, "POST", "/api/keys", &headers, br#"{"name":"prometheus"}"#).expect("key");
    assert_eq!(r.status, 201, "key: {}", r.text());
    (cookie, r.json()["key"].as_str().expect("key").to_string())
}

/// The TCP ports the process listens on (its sockets in /proc/PID/fd that
/// /proc/PID/net/tcp lists in state LISTEN).
fn listening_ports(nvr: &Oxinvr) -> BTreeSet<u16> {
    let pid = nvr.pid();
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

fn get(nvr: &Oxinvr, path: &str, headers: &[(&str, &str)]) -> Response {
    http(nvr.port, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn metrics_parse_with_prometheus_and_agree_with_the_api() {
    let cam = Camera::start(&["--fps", "15"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let nvr = Oxinvr::start(tmp.path(), &stream_toml(&cam.url("h264")));
    let stream = |nvr: &Oxinvr| nvr.json("/api/streams/cam");
    poll(Duration::from_secs(30), "cam records two segments", || {
        let s = stream(&nvr);
        s["storage"]["segments"].as_u64().unwrap_or(0) >= 2 && s["status"]["fps"].as_f64().unwrap_or(0.0) > 0.0
    });
    let (cookie, key) = viewer(&nvr);
    let bearer = format!("Bearer {key}");

    // Credentials: none is 401; a viewer's API key and a viewer's session are enough.
    let r = get(&nvr, "/api/metrics", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(get(&nvr, "/api/metrics", &[("Cookie", &cookie)]).status, 200);
    assert_eq!(get(&nvr, "/api/metrics?x=1", &[("Authorization", &bearer)]).status, 400);
    let before = stream(&nvr);
    let r = get(&nvr, "/api/metrics", &[("Authorization", &bearer)]);
    let after = stream(&nvr);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    let m = Metrics(parse(&text));

    // Every family is documented and typed; names follow the conventions.
    for f in &m.0 {
        let name = f["name"].as_str().unwrap_or_default();
        assert!(name.starts_with("oxinvr_"), "{name}");
        assert!(!f["help"].as_str().unwrap_or_default().is_empty(), "{name} has no HELP");
        assert!(["counter", "gauge", "histogram"].contains(&f["type"].as_str().unwrap_or_default()), "{f}");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE") && l.ends_with(" counter")) {
        assert!(line.contains("_total "), "a counter without _total: {line}");
    }

    // Per stream, against /api/streams read just before and just after the scrape.
    let cam = [("stream", "cam")];
    let between = |metric: &str, field: &str| {
        let (lo, hi) =
            (before["status"][field].as_f64().unwrap_or(-1.0), after["status"][field].as_f64().unwrap_or(-1.0));
        let v = m.value(metric, &cam);
        assert!(lo <= v && v <= hi, "{metric} = {v}, /api/streams said {lo} then {hi}");
        v
    };
    assert!(between("oxinvr_stream_frames_total", "frames") > 0.0);
    between("oxinvr_stream_bytes_total", "bytes");
    assert_eq!(m.value("oxinvr_stream_connects_total", &cam), before["status"]["connects"].as_f64().unwrap_or(-1.0));
    assert_eq!(m.value("oxinvr_stream_gaps_total", &cam), before["status"]["gaps"].as_f64().unwrap_or(-1.0));
    let fps = m.value("oxinvr_stream_fps", &cam);
    assert!((fps - 15.0).abs() < 3.0, "fps {fps} of a 15 fps camera");
    let bps = m.value("oxinvr_stream_bitrate_bits_per_second", &cam);
    let kbps = before["status"]["bitrate_kbps"].as_f64().unwrap_or(0.0);
    assert!(bps > 0.0 && (bps / 1000.0 - kbps).abs() <= kbps, "bitrate {bps} b/s, the API said {kbps} kbit/s");
    assert_eq!(m.value("oxinvr_stream_ring_size_bytes", &cam), before["ring"]["capacity"].as_f64().unwrap_or(-1.0));
    let used = m.value("oxinvr_stream_ring_used_bytes", &cam);
    assert!(used > 0.0 && used <= m.value("oxinvr_stream_ring_size_bytes", &cam), "ring used {used}");
    m.value("oxinvr_stream_ring_evictions_total", &cam);
    let age = m.value("oxinvr_stream_last_frame_age_seconds", &cam);
    assert!((0.0..5.0).contains(&age), "last frame {age} s ago while the camera streams");
    assert_eq!(m.value("oxinvr_stream_state", &[("stream", "cam"), ("state", "streaming")]), 1.0);
    assert_eq!(m.value("oxinvr_stream_state", &[("stream", "cam"), ("state", "backoff")]), 0.0);
    assert_eq!(m.value("oxinvr_stream_recording", &cam), 1.0);
    let (seg_lo, seg_hi) = (before["storage"]["segments"].as_f64(), after["storage"]["segments"].as_f64());
    let segs = m.value("oxinvr_stream_segments", &cam);
    assert!(seg_lo <= Some(segs) && Some(segs) <= seg_hi, "segments {segs}: the API said {seg_lo:?} then {seg_hi:?}");
    assert_eq!(m.value("oxinvr_storage_segments", &[]), segs, "one stream: the total is its count");
    assert!(m.value("oxinvr_stream_storage_bytes", &cam) > 0.0);

    // Storage: the disk, retention, and the fsyncs the writer made (sync_seconds = 1).
    let system = nvr.json("/api/system");
    let total = m.value("oxinvr_storage_disk_size_bytes", &[]);
    assert_eq!(Some(total), system["disk"]["total_bytes"].as_f64());
    assert!(m.value("oxinvr_storage_disk_free_bytes", &[]) <= total);
    assert_eq!(m.value("oxinvr_storage_recording_paused", &[]), 0.0);
    assert_eq!(m.value("oxinvr_retention_deleted_segments_total", &[]), 0.0);
    assert_eq!(m.family("oxinvr_storage_fsync_duration_seconds")["type"], "histogram");
    let syncs = m.value("oxinvr_storage_fsync_duration_seconds_count", &[]);
    assert!(syncs >= 2.0, "{syncs} fsyncs after two segments");
    assert_eq!(m.value("oxinvr_storage_fsync_duration_seconds_bucket", &[("le", "+Inf")]), syncs);

    // HTTP: by route pattern, never the raw path; the 401 above is counted.
    assert!(m.value("oxinvr_http_requests_total", &[("route", "/api/metrics"), ("status", "401")]) >= 1.0);
    let by_name = [("route", "/api/streams/{name}"), ("method", "GET"), ("status", "200")];
    assert!(m.value("oxinvr_http_requests_total", &by_name) >= 2.0);
    let routes: BTreeSet<&str> =
        m.samples().filter(|s| s[0] == "oxinvr_http_requests_total").filter_map(|s| s[1]["route"].as_str()).collect();
    assert!(!routes.contains("/api/streams/cam"), "a raw path became a label: {routes:?}");
    assert_eq!(m.value("oxinvr_http_live_clients", &[]), 0.0);

    // The process, as /api/system reports it.
    for sub in ["other", "ingest", "storage", "http"] {
        m.value("oxinvr_memory_heap_bytes", &[("subsystem", sub)]);
    }
    assert_eq!(m.value("oxinvr_memory_rings_bytes", &[]), system["memory"]["rings_bytes"].as_f64().unwrap_or(-1.0));
    assert!(m.value("oxinvr_process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.value("oxinvr_process_threads", &[]) >= 4.0);
    assert!(m.value("oxinvr_uptime_seconds", &[]) >= 1.0);
    assert_eq!(m.value("oxinvr_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // No unauthenticated listener unless metrics.listen is set: the web port is the only one.
    assert_eq!(listening_ports(&nvr), BTreeSet::from([nvr.port]), "listening ports");
}

#[test]
fn metrics_listen_serves_metrics_without_a_credential_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port, closed) = (free_port(), free_port());
    // Replication to a port nobody listens on: its families appear, failing.
    let config = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [replicate]\nendpoint = \"http://127.0.0.1:{closed}\"\nbucket = \"nvr\"\naccess_key = \"k\"\nsecret_key = \"s\"\n"
    );
    let nvr = Oxinvr::start(tmp.path(), &config);
    assert_eq!(listening_ports(&nvr), BTreeSet::from([nvr.port, port]));
    let r = http(port, "GET", "/metrics", &[], b"").expect("scrape");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let m = Metrics(parse(&r.text()));
    assert!(m.value("oxinvr_uptime_seconds", &[]) >= 0.0);
    poll(Duration::from_secs(30), "replication failing in the metrics", || {
        let m = Metrics(parse(&http(port, "GET", "/metrics", &[], b"").expect("scrape").text()));
        m.get("oxinvr_replicate_failing", &[]) == Some(1.0)
    });
    let m = Metrics(parse(&http(port, "GET", "/metrics", &[], b"").expect("scrape").text()));
    assert_eq!(m.value("oxinvr_replicate_backlog_segments", &[]), 0.0, "nothing recorded, nothing waits");
    assert_eq!(m.value("oxinvr_replicate_uploaded_segments_total", &[]), 0.0);
    assert_eq!(m.value("oxinvr_replicate_uploaded_bytes_total", &[]), 0.0);
    // Its own scrapes are counted under its own route.
    let r = http(port, "GET", "/metrics", &[], b"").expect("scrape");
    let m = Metrics(parse(&r.text()));
    assert!(m.value("oxinvr_http_requests_total", &[("route", "/metrics"), ("status", "200")]) >= 1.0);
    // Nothing of the API there, and the API's own route still wants a credential.
    for path in ["/api/streams", "/api/metrics", "/"] {
        assert_eq!(http(port, "GET", path, &[], b"").expect(path).status, 404, "{path} on the metrics listener");
    }
    assert_eq!(http(port, "POST", "/metrics", &[], b"").expect("post").status, 405);
    assert_eq!(get(&nvr, "/api/metrics", &[]).status, 401);
}

#[test]
fn a_bad_metrics_listen_address_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("oxinvr.toml");
    std::fs::write(&config, "[metrics]\nlisten = \"9100\"\n").expect("config");
    let out = Command::new(common::nvr::oxinvr_bin()).args(["run", "--config"]).arg(&config).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metrics.listen"), "{err}");
}
