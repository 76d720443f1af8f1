//! MQTT with Home Assistant discovery against a real broker: Debian's
//! mosquitto, started here on a loopback port with a password file, watched
//! with mosquitto_sub and commanded with mosquitto_pub; a real oxinvr records
//! the real test camera. Nothing is simulated.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nvr::{free_port, poll, Oxinvr};
use common::Camera;
use serde_json::Value;

const USER: &str = "nvr";
const PASSWORD: &str = "s3cret-broker";

/// A mosquitto on 127.0.0.1:`port` that takes only `USER`/`PASSWORD`.
struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
        Self::start_with(dir, port, "")
    }

    /// With `extra` lines in its listener (TLS).
    fn start_with(dir: &Path, port: u16, extra: &str) -> Broker {
        let passwd = dir.join("passwd");
        if !passwd.exists() {
            let st = Command::new("mosquitto_passwd")
                .args(["-b", "-c"])
                .arg(&passwd)
                .args([USER, PASSWORD])
                .status()
                .expect("mosquitto_passwd (Debian's mosquitto package; scripts/lib/deps.sh installs it)");
            assert!(st.success(), "mosquitto_passwd failed");
        }
        let conf = dir.join("mosquitto.conf");
        // `user root`: as root mosquitto would switch to its own user, who cannot read our temp dir.
        let text = format!(
            "listener {port} 127.0.0.1\n{extra}allow_anonymous false\npassword_file {}\npersistence false\nuser root\n",
            passwd.display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut b = Broker { child: None, port, conf };
        b.restart();
        b
    }

    fn restart(&mut self) {
        let log = std::fs::File::create(self.conf.with_file_name("mosquitto.log")).expect("broker log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (Debian's mosquitto package)");
        self.child = Some(child);
        let port = self.port;
        poll(Duration::from_secs(10), "mosquitto listening", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    /// SIGKILL: the broker vanishes without a goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn publish(&self, topic: &str, payload: &str) {
        let port = self.port.to_string();
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-u", USER, "-P", PASSWORD, "-q", "1", "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub");
        assert!(st.success(), "mosquitto_pub {topic} {payload}");
    }

    /// A `mosquitto_sub` on every topic from now on (retained ones included).
    fn subscribe(&self) -> Sub {
        self.subscribe_with(&[])
    }

    /// [`Broker::subscribe`] over TLS, trusting `ca`.
    fn subscribe_tls(&self, ca: &Path) -> Sub {
        self.subscribe_with(&["--cafile", ca.to_str().expect("utf-8 path")])
    }

    fn subscribe_with(&self, extra: &[&str]) -> Sub {
        let port = self.port.to_string();
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-u", USER, "-P", PASSWORD, "-t", "#", "-F", "%r %t %p"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto_sub");
        let out = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, ' ');
                let (r, t, p) = (parts.next(), parts.next(), parts.next());
                if let (Some(r), Some(t)) = (r, t) {
                    let msg = Msg { retained: r == "1", topic: t.to_string(), payload: p.unwrap_or("").to_string() };
                    lines.lock().expect("lock").push(msg);
                }
            }
        });
        Sub { child, seen }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Debug)]
struct Msg {
    retained: bool,
    topic: String,
    payload: String,
}

struct Sub {
    child: Child,
    seen: Arc<Mutex<Vec<Msg>>>,
}

impl Sub {
    fn all(&self) -> Vec<Msg> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits for a message on `topic` whose payload satisfies `f`.
    fn wait(&self, limit: Duration, topic: &str, f: impl Fn(&str) -> bool) -> Msg {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = self.all().into_iter().find(|m| m.topic == topic && f(&m.payload)) {
                return m;
            }
            let last: Vec<String> =
                self.all().iter().rev().take(10).map(|m| format!("{} {}", m.topic, m.payload)).collect();
            assert!(Instant::now() < deadline, "no message on {topic} within {limit:?}; last seen: {last:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(broker_port: u16, password: &str, streams: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         pbkdf2_iterations = 1000\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nuser = \"{USER}\"\n\
         password = \"{password}\"\nname = \"testbox\"\n{streams}"
    )
}

/// The stream's entry in `/api/streams`.
fn stream(nvr: &Oxinvr, name: &str) -> Value {
    let v = nvr.json("/api/streams");
    let list = v.as_array().cloned().or_else(|| v["streams"].as_array().cloned()).expect("a list of streams");
    list.into_iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no stream {name} in {v}"))
}

fn frames(nvr: &Oxinvr) -> u64 {
    stream(nvr, "cam")["status"]["frames"].as_u64().unwrap_or(0)
}

/// The recording files of stream `cam`.
fn files(nvr: &Oxinvr) -> Vec<PathBuf> {
    common::mp4_files(&nvr.data_dir.join("recordings/cam"))
}

/// What the broker keeps (retained): a new subscriber's first second. (A live
/// subscriber gets messages without the retain flag: MQTT sets it only for the
/// retained copy sent at subscription.)
fn retained(broker: &Broker) -> Sub {
    let sub = broker.subscribe();
    std::thread::sleep(Duration::from_secs(1));
    sub.seen.lock().expect("lock").retain(|m| m.retained);
    sub
}

fn retained_payload(sub: &Sub, topic: &str) -> Option<String> {
    sub.all().into_iter().rev().find(|m| m.topic == topic).map(|m| m.payload)
}

/// The discovery configs seen (how many topics): each parses, and has what Home Assistant needs.
fn check_discovery(sub: &Sub) -> usize {
    let configs: Vec<Msg> = sub
        .all()
        .into_iter()
        .filter(|m| m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config") && !m.payload.is_empty())
        .collect();
    for m in &configs {
        let c: Value =
            serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", m.topic, m.payload));
        for key in ["unique_id", "device", "state_topic", "availability_topic"] {
            assert!(!c[key].is_null(), "{}: no {key}: {c}", m.topic);
        }
        assert!(c["state_topic"].as_str().is_some_and(|t| t.starts_with("oxinvr/testbox/")), "{c}");
    }
    configs.iter().map(|m| m.topic.as_str()).collect::<std::collections::BTreeSet<_>>().len()
}

#[test]
fn home_assistant_sees_the_box_commands_work_and_a_broker_restart_changes_nothing_for_recording() {
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), free_port());
    let cam = Camera::start(&[]);
    let streams = format!("[[streams]]\nname = \"cam\"\nurl = \"{}\"\n", cam.url("h264"));
    let nvr = Oxinvr::start(dir.path(), &config(broker.port, PASSWORD, &streams));
    let sub = broker.subscribe();

    // Discovery, availability and the stream's state, as Home Assistant would see them.
    sub.wait(Duration::from_secs(15), "oxinvr/testbox/availability", |p| p == "online");
    sub.wait(Duration::from_secs(15), "oxinvr/testbox/cam/status", |p| p.contains("\"recording\":true"));
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/motion", |p| p == "OFF");
    let box_status = sub.wait(Duration::from_secs(5), "oxinvr/testbox/status", |p| p.contains("disk_free_bytes"));
    let figures: Value = serde_json::from_str(&box_status.payload).expect("box status JSON");
    assert!(figures["disk_free_bytes"].as_u64().is_some() && figures["rss_bytes"].as_u64().is_some(), "{figures}");
    assert_eq!(check_discovery(&sub), 6, "a disk sensor and 5 entities for the stream");
    let kept = retained(&broker);
    assert_eq!(check_discovery(&kept), 6, "discovery configs are retained");
    assert_eq!(retained_payload(&kept, "oxinvr/testbox/availability").as_deref(), Some("online"));
    drop(kept);
    let mqtt = nvr.json("/api/system")["mqtt"].clone();
    assert_eq!(mqtt["state"], "connected", "{mqtt}");
    eprintln!("connected and discovered in {:?}", began.elapsed());

    // Recording off through MQTT: the row says so, and no new file starts.
    poll(Duration::from_secs(15), "a first recording file", || !files(&nvr).is_empty());
    broker.publish("oxinvr/testbox/cam/record/set", "OFF");
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/record", |p| p == "OFF");
    assert_eq!(stream(&nvr, "cam")["record"], "off", "the database row changed like an API edit");
    std::thread::sleep(Duration::from_secs(1));
    let stopped = files(&nvr);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(files(&nvr), stopped, "no new segment while recording is off (segments are 2 s)");
    assert!(nvr.log().contains("mqtt: command oxinvr/testbox/cam/record/set \"OFF\": recording OFF"), "logged");
    broker.publish("oxinvr/testbox/cam/record/set", "ON");
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/record", |p| p == "ON");
    poll(Duration::from_secs(15), "recording again after ON", || files(&nvr).len() > stopped.len());

    // The broker dies and comes back: recording never pauses, the box reconnects and
    // sends discovery again (this broker keeps nothing: persistence is off).
    let f0 = frames(&nvr);
    let files0 = files(&nvr).len();
    broker.kill();
    drop(sub);
    let down = Instant::now();
    let mut during = Vec::new();
    while down.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(500));
        during.push(frames(&nvr));
    }
    assert!(during.windows(2).all(|w| w[1] > w[0]) && during[0] > f0, "frames kept coming: {f0} then {during:?}");
    let m = nvr.json("/api/system")["mqtt"].clone();
    assert_eq!(m["state"], "disconnected", "{m}");
    assert!(m["last_error"].as_str().is_some_and(|e| e.contains("127.0.0.1")), "{m}");
    broker.restart();
    let back = Instant::now();
    let sub = broker.subscribe();
    sub.wait(Duration::from_secs(20), "oxinvr/testbox/availability", |p| p == "online");
    sub.wait(Duration::from_secs(5), "homeassistant/switch/testbox/cam_record/config", |p| p.contains("unique_id"));
    eprintln!("reconnected {:?} after the broker came back", back.elapsed());
    assert_eq!(check_discovery(&sub), 6);
    assert!(files(&nvr).len() > files0, "segments kept being written");
    let m = nvr.json("/api/system")["mqtt"].clone();
    assert!(m["connects"].as_u64() >= Some(2) && m["state"] == "connected", "{m}");

    // Home Assistant restarting (its birth message) gets discovery again.
    let before = sub.all().len();
    broker.publish("homeassistant/status", "online");
    poll(Duration::from_secs(5), "discovery sent again on Home Assistant's birth", || {
        sub.all()[before..].iter().any(|m| m.topic == "homeassistant/binary_sensor/testbox/cam_motion/config")
    });

    let heap = nvr.json("/api/system")["memory"]["heap_by_subsystem"]["mqtt"].as_u64();
    eprintln!("heap held by the mqtt thread: {heap:?} bytes");
    assert!(heap.is_some(), "the client's memory is accounted as its own subsystem");

    // Killed without a goodbye: the broker says offline for it (the last will).
    nvr.kill9();
    sub.wait(Duration::from_secs(10), "oxinvr/testbox/availability", |p| p == "offline");
    let kept = retained(&broker);
    assert_eq!(
        retained_payload(&kept, "oxinvr/testbox/availability").as_deref(),
        Some("offline"),
        "the will is retained"
    );
    eprintln!("whole test {:?}", began.elapsed());
}

#[test]
fn a_wrong_password_is_a_clear_error_in_api_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), free_port());
    let nvr = Oxinvr::start(dir.path(), &config(broker.port, "not-the-password", ""));
    let v =
        nvr.wait_for("/api/system", Duration::from_secs(10), "an MQTT error", |v| !v["mqtt"]["last_error"].is_null());
    let m = &v["mqtt"];
    assert_eq!(m["state"], "disconnected", "{m}");
    let e = m["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("refused the login") && e.contains("mqtt.password"), "{e}");
    assert_eq!(m["broker"], format!("mqtt://127.0.0.1:{}", broker.port));
    assert!(!v.to_string().contains("not-the-password"), "the password is never shown");
}

#[test]
fn motion_and_manual_events_reach_home_assistant_with_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), free_port());
    let cam = Camera::start(&["--pattern", "ball", "--fps", "5", "--gop", "10"]);
    let streams = format!("[[streams]]\nname = \"cam\"\nurl = \"{}\"\ndetect = [\"motion\"]\n", cam.url("h264"));
    // The snapshot is binary: its own subscriber keeps the raw bytes of the first one.
    let port = broker.port.to_string();
    let snap_topic = "oxinvr/testbox/cam/snapshot";
    let snapshot = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            USER,
            "-P",
            PASSWORD,
            "-t",
            snap_topic,
            "-C",
            "1",
            "-W",
            "60",
            "-N",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let sub = broker.subscribe_with(&["-T", snap_topic]);
    let nvr = Oxinvr::start(dir.path(), &config(broker.port, PASSWORD, &streams));

    sub.wait(Duration::from_secs(40), "oxinvr/testbox/cam/motion", |p| p == "ON");
    let got = Instant::now();
    let msg = sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/event", |p| p.contains("\"kind\":\"motion\""));
    let event: Value = serde_json::from_str(&msg.payload).expect("event JSON");
    assert_eq!((event["change"].as_str(), event["stream"].as_str()), (Some("began"), Some("cam")), "{event}");
    assert!(event["snapshot_url"].as_str().is_some(), "{event}");
    let out = snapshot.wait_with_output().expect("snapshot subscriber");
    let jpeg = dir.path().join("snapshot.jpg");
    std::fs::write(&jpeg, &out.stdout).expect("write snapshot");
    let probe = common::ffprobe_json(&jpeg);
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg", "the camera entity gets a JPEG: {probe}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let lag = now_ms - event["start_ms"].as_i64().unwrap_or(now_ms) - got.elapsed().as_millis() as i64;
    eprintln!("motion start -> event on the broker: {lag} ms (frame time to receipt)");

    // A manual trigger from Home Assistant becomes an event in the API and on the broker.
    broker.publish("oxinvr/testbox/cam/trigger", r#"{"label":"doorbell","duration_s":5}"#);
    let msg = sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/event", |p| p.contains("doorbell"));
    let manual: Value = serde_json::from_str(&msg.payload).expect("event JSON");
    assert_eq!(manual["kind"], "manual", "{manual}");
    let listed = nvr.json("/api/events?stream=cam&kind=manual");
    let e = &listed["events"][0];
    assert_eq!((e["label"].as_str(), e["id"].as_i64()), (Some("doorbell"), manual["id"].as_i64()), "{listed}");
    assert_eq!(e["end_ms"].as_i64().zip(e["start_ms"].as_i64()).map(|(b, a)| b - a), Some(5_000), "{e}");
    broker.publish("oxinvr/testbox/cam/trigger", r#"{"label":"doorbell","score":7}"#);
    poll(Duration::from_secs(5), "a bad trigger refused in the log", || nvr.log().contains("trigger on cam refused"));
    assert!(nvr.log().contains("field score"), "the refusal names the field");

    // The page's switch and MQTT's are one: off through the API shows OFF on the broker, ON
    // from Home Assistant shows in the API.
    let r = nvr.request("PUT", "/api/streams/cam/detection", &[], br#"{"enabled":false}"#).expect("PUT detection");
    assert_eq!((r.status, r.json()["enabled"].as_bool()), (200, Some(false)), "{}", r.text());
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/detection", |p| p == "OFF");
    broker.publish("oxinvr/testbox/cam/detection/set", "ON");
    poll(Duration::from_secs(5), "MQTT's ON in the API", || stream(&nvr, "cam")["detection"]["enabled"] == true);
}

#[test]
fn a_clean_stop_says_offline_before_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), free_port());
    let nvr = Oxinvr::start(dir.path(), &config(broker.port, PASSWORD, ""));
    let sub = broker.subscribe();
    sub.wait(Duration::from_secs(15), "oxinvr/testbox/availability", |p| p == "online");
    let (status, took) = nvr.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    sub.wait(Duration::from_secs(1), "oxinvr/testbox/availability", |p| p == "offline");
    eprintln!("stopped in {took:?}, offline said");
}

/// `openssl` with `args` in `dir` (it comes with Debian's ca-certificates).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`NAME-ca.pem`) and, when `server`, a certificate it signs for 127.0.0.1.
fn make_ca(dir: &Path, name: &str, server: bool) {
    let (key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let subj = format!("/CN={name} test CA");
    openssl(dir, &[&["req", "-x509"][..], &ec, &["-keyout", &key, "-out", &ca, "-days", "2", "-subj", &subj]].concat());
    if server {
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
        openssl(
            dir,
            &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
        );
        openssl(
            dir,
            &["x509", "-req", "-in", "server.csr", "-CA", &ca, "-CAkey", &key, "-CAcreateserial", "-out", "server.pem"]
                .into_iter()
                .chain(["-days", "2", "-extfile", "san.ext"])
                .collect::<Vec<_>>(),
        );
    }
}

#[test]
fn mqtts_trusts_the_configured_ca_and_names_a_tls_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_ca(d, "broker", true);
    make_ca(d, "stranger", false);
    let tls = format!("cafile {0}/broker-ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n", d.display());
    let broker = Broker::start_with(d, free_port(), &tls);
    let start = |sub: &str, ca: &str| {
        let box_dir = d.join(sub);
        std::fs::create_dir_all(&box_dir).expect("box dir");
        let text = config(broker.port, PASSWORD, "")
            .replace("mqtt://", "mqtts://")
            .replace("[mqtt]\n", &format!("[mqtt]\nca_file = \"{}/{ca}\"\n", d.display()));
        Oxinvr::start(&box_dir, &text)
    };
    let good = start("good", "broker-ca.pem");
    good.wait_for("/api/system", Duration::from_secs(15), "connected over TLS", |v| v["mqtt"]["state"] == "connected");
    let sub = broker.subscribe_tls(&d.join("broker-ca.pem"));
    sub.wait(Duration::from_secs(10), "homeassistant/sensor/testbox/disk_free/config", |p| p.contains("unique_id"));
    let bad = start("bad", "stranger-ca.pem");
    let v = bad.wait_for("/api/system", Duration::from_secs(15), "a TLS error", |v| !v["mqtt"]["last_error"].is_null());
    let e = v["mqtt"]["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("TLS") && e.to_lowercase().contains("certificate"), "{e}");
}

fn post_json(nvr: &Oxinvr, path: &str, body: &Value) -> Value {
    let r = nvr
        .request("POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert!(r.status == 200 || r.status == 201, "POST {path}: {} {}", r.status, r.text());
    r.json()
}

#[test]
fn object_counts_per_stream_and_label_follow_open_object_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), free_port());
    let cam = Camera::start(&[]);
    let streams = format!("[[streams]]\nname = \"cam\"\nurl = \"{}\"\n", cam.url("h264"));
    let sub = broker.subscribe();
    let nvr = Oxinvr::start(dir.path(), &config(broker.port, PASSWORD, &streams));
    let person = "oxinvr/testbox/cam/objects/person";
    let count_is = |n: &'static str| move |p: &str| p == n;

    // Two people and a car, as another detector posts them (kind object).
    let object = |label: &str| serde_json::json!({"stream": "cam", "kind": "object", "label": label});
    let first = post_json(&nvr, "/api/events", &object("person"));
    sub.wait(Duration::from_secs(20), person, count_is("1"));
    let second = post_json(&nvr, "/api/events", &object("person"));
    sub.wait(Duration::from_secs(5), person, count_is("2"));
    let car = post_json(&nvr, "/api/events", &object("car"));
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/objects/car", count_is("1"));
    // A manual event is no object: no count for it.
    post_json(&nvr, "/api/events", &serde_json::json!({"stream": "cam", "label": "doorbell", "duration_s": 1}));

    // Home Assistant gets one sensor per label seen, on the count's topic.
    let config_topic = "homeassistant/sensor/testbox/cam_person_count/config";
    let c = sub.wait(Duration::from_secs(5), config_topic, |p| !p.is_empty());
    let c: Value = serde_json::from_str(&c.payload).expect("config JSON");
    assert_eq!(c["state_topic"], person, "{c}");
    assert!(c["unique_id"].as_str().is_some_and(|u| !u.is_empty()) && c["device"].is_object(), "{c}");
    assert!(check_discovery(&sub) >= 8, "the stream's, the box's and two label sensors");

    // Ends lower the counts, to 0.
    post_json(&nvr, &format!("/api/events/{}/end", first["id"]), &serde_json::json!({}));
    sub.wait(Duration::from_secs(5), person, count_is("1"));
    post_json(&nvr, &format!("/api/events/{}/end", second["id"]), &serde_json::json!({}));
    post_json(&nvr, &format!("/api/events/{}/end", car["id"]), &serde_json::json!({}));
    sub.wait(Duration::from_secs(5), person, count_is("0"));
    sub.wait(Duration::from_secs(5), "oxinvr/testbox/cam/objects/car", count_is("0"));
    assert!(!sub.all().iter().any(|m| m.topic.ends_with("/objects/doorbell")), "manual events are not counted");
    // The counts are retained: a new subscriber (Home Assistant restarting) sees 0.
    let kept = retained(&broker);
    assert_eq!(retained_payload(&kept, person).as_deref(), Some("0"));
}
