//! The hardware watchdog's feeding, with the real binary and a regular file as
//! the device (the one fake the issue allows: it counts the keepalive writes;
//! the real driver is tested in the emulated board, scripts/test-watchdog).
//! A healthy recorder feeds about once a second and a clean SIGTERM writes the
//! magic 'V'; the test-only knob is refused without OXINVR_TEST_KNOBS=1; with
//! it, a stalled storage thread stops the feeding within `stuck_s`, the API and
//! the log name the stuck part, and the exit that follows leaves the watchdog
//! armed (no 'V').

mod common;

use std::path::Path;
use std::time::Duration;

use common::nvr::{poll, Oxinvr};
use serde_json::Value;

const CONFIG: &str = "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n\
                      [watchdog]\ndevice = \"{DEV}\"\ntimeout_s = 10\nstuck_s = 3\n";

fn start(dir: &Path, env: &[(&str, &str)]) -> (Oxinvr, std::path::PathBuf) {
    let dev = dir.join("watchdog");
    std::fs::write(&dev, b"").expect("create the device file");
    let config = CONFIG.replace("{DEV}", &dev.display().to_string());
    (Oxinvr::start_with_env(dir, &config, env), dev)
}

fn written(dev: &Path) -> Vec<u8> {
    std::fs::read(dev).unwrap_or_default()
}

fn watchdog(nvr: &Oxinvr) -> Value {
    nvr.json("/api/system")["watchdog"].clone()
}

fn stall(nvr: &Oxinvr, part: &str) -> common::nvr::Response {
    nvr.request("POST", &format!("/api/system/test-stall?part={part}"), &[], b"").expect("POST test-stall")
}

#[test]
fn a_healthy_recorder_feeds_and_a_clean_stop_writes_the_magic_close() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nvr, dev) = start(tmp.path(), &[]);
    poll(Duration::from_secs(15), "three feeds", || written(&dev).len() >= 3);
    let w = nvr
        .wait_for("/api/system", Duration::from_secs(10), "watchdog feeding", |v| v["watchdog"]["state"] == "feeding")
        ["watchdog"]
        .clone();
    assert_eq!(w["device"], dev.display().to_string(), "{w}");
    assert_eq!(w["stuck"], serde_json::json!([]), "{w}");
    assert!(w["last_feed_age_ms"].as_u64().is_some_and(|a| a < 3000), "{w}");

    let r = stall(&nvr, "storage");
    assert_eq!(r.status, 403, "the knob must be refused without OXINVR_TEST_KNOBS=1: {}", r.text());
    assert!(r.text().contains("OXINVR_TEST_KNOBS=1"), "{}", r.text());

    let (status, _) = nvr.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status}");
    let bytes = written(&dev);
    assert_eq!(
        bytes.last(),
        Some(&b'V'),
        "a clean stop ends with the magic close: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(bytes[..bytes.len() - 1].iter().all(|b| *b == b'k'), "{:?}", String::from_utf8_lossy(&bytes));
}

#[test]
fn a_stalled_storage_thread_stops_the_feeding_and_leaves_the_watchdog_armed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nvr, dev) = start(tmp.path(), &[("OXINVR_TEST_KNOBS", "1")]);
    nvr.wait_for("/api/system", Duration::from_secs(10), "watchdog feeding", |v| v["watchdog"]["state"] == "feeding");

    let r = stall(&nvr, "storage");
    assert_eq!(r.status, 200, "{}", r.text());
    // stuck_s = 3: the feeding stops within it (plus a tick or two).
    let w = nvr.wait_for("/api/system", Duration::from_secs(8), "watchdog not feeding", |v| {
        v["watchdog"]["state"] == "not_feeding"
    })["watchdog"]
        .clone();
    let stuck: Vec<&str> = w["stuck"].as_array().into_iter().flatten().filter_map(|p| p["part"].as_str()).collect();
    assert_eq!(stuck, ["storage"], "only storage is stuck: {w}");
    let feeds = written(&dev).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(written(&dev).len(), feeds, "no keepalive after the stall was seen");
    assert!(watchdog(&nvr)["last_feed_age_ms"].as_u64().is_some_and(|a| a >= 3000));
    let log = nvr.log();
    assert!(log.contains("watchdog: stuck: storage"), "the log names the stuck part:\n{log}");

    // The storage thread cannot finish: the exit is not clean, the watchdog stays armed.
    let (_, _) = nvr.terminate(Duration::from_secs(20));
    let bytes = written(&dev);
    assert_eq!(bytes.len(), feeds, "nothing written after the stall, no magic close");
    assert!(bytes.iter().all(|b| *b == b'k'));
}
