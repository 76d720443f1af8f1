//! Replication against the real engine: a 3-node Garage cluster (replication
//! factor 3, made with its CLI in tests/common/garage.rs), the real test
//! camera, the real binary. Objects are read back through S3, their SHA-256
//! checked against the local file and the sidecar, and decoded by ffmpeg.
//!
//! Skips (loudly) only when no garage binary is installed and OXINVR_GARAGE
//! is unset; scripts/test installs it (scripts/lib/deps.sh `ensure_garage`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::garage::{self, garage_or_skip, now_ms, Garage};
use common::nvr::Oxinvr;
use common::Camera;
use oxinvr::index::db::Db;
use serde_json::Value;

/// A config recording `cam` in 2 s segments and replicating to `endpoint`; `extra` goes into `[replicate]`.
fn config(cam: &Camera, endpoint: &str, extra: &str, stream_extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\nsegment_seconds = 2\nsync_seconds = 1\n\
         [web]\nlisten = \"127.0.0.1:{{PORT}}\"\n\
         [replicate]\nendpoint = \"{endpoint}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key = \"{}\"\n\
         secret_key = \"{}\"\nprefix = \"site1\"\nbox = \"box1\"\n{extra}\n\
         [[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 1000\n{stream_extra}\n",
        garage::BUCKET,
        garage::REGION,
        garage::ACCESS_KEY,
        garage::SECRET_KEY,
        cam.url("h264")
    )
}

fn replicate_status(nvr: &Oxinvr) -> Value {
    nvr.json("/api/system")["replicate"].clone()
}

fn uploaded(nvr: &Oxinvr) -> u64 {
    replicate_status(nvr)["uploaded_segments"].as_u64().unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    oxinvr::replicate::sigv4::sha256_hex(data)
}

/// Every closed segment of the box's index: (path, bytes, id).
fn closed_segments(data_dir: &Path) -> Vec<(String, u64, i64)> {
    let db = Db::open(&data_dir.join("oxinvr.db")).expect("db");
    let mut out = Vec::new();
    for st in db.list_streams().expect("streams") {
        for s in db.segments_overlapping(st.id, i64::MIN, i64::MAX).expect("segments") {
            if s.closed {
                out.push((s.path, s.bytes, s.id));
            }
        }
    }
    out
}

/// Milliseconds of closed segments after `from_ms`.
fn recorded_since(data_dir: &Path, from_ms: i64) -> i64 {
    let db = Db::open(&data_dir.join("oxinvr.db")).expect("db");
    let mut ms = 0;
    for st in db.list_streams().expect("streams") {
        for s in db.segments_overlapping(st.id, from_ms, i64::MAX).expect("segments") {
            if s.closed {
                ms += (s.end_ms - s.start_ms.max(from_ms)).max(0);
            }
        }
    }
    ms
}

/// The object of `path` and its sidecar are in the bucket, agree with each
/// other (and with the local file if it is still there), and the object decodes.
fn check_object(g: &Garage, node: usize, path: &str, local: Option<&Path>, tmp: &Path) {
    let key = format!("site1/box1/{}", path.strip_prefix("recordings/").expect("recordings/"));
    let b = g.bucket(node);
    let side = b.get(&format!("{key}.json"), 1 << 20, now_ms()).unwrap_or_else(|e| panic!("sidecar of {key}: {e}"));
    let side: Value = serde_json::from_slice(&side).expect("sidecar JSON");
    let body = b.get(&key, 256 << 20, now_ms()).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(side["format"], 1);
    assert_eq!((side["box"].as_str(), side["stream"].as_str()), (Some("box1"), Some("cam")), "{side}");
    assert_eq!(side["bytes"].as_u64(), Some(body.len() as u64), "{key}: sidecar bytes vs object");
    assert_eq!(side["sha256"].as_str(), Some(sha256_hex(&body).as_str()), "{key}: sidecar sha256 vs object");
    assert!(side["fragments"].as_array().is_some_and(|f| !f.is_empty()), "{key}: no fragment index");
    assert!(side["end_ms"].as_i64() >= side["start_ms"].as_i64());
    if let Some(local) = local {
        let data = std::fs::read(local).expect("local segment");
        assert_eq!(sha256_hex(&data), sha256_hex(&body), "{key} differs from {}", local.display());
    }
    let file = tmp.join(key.replace('/', "_"));
    std::fs::write(&file, &body).expect("write download");
    common::decode_ok(&file).unwrap_or_else(|e| panic!("{key} as downloaded does not decode: {e}"));
}

/// Waits until every closed segment of the index is replicated (the queue knows
/// each one as done), the camera `stopped` first so the set stops growing.
fn wait_all_replicated(nvr: &Oxinvr, limit: Duration) -> Vec<(String, u64, i64)> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let st = replicate_status(nvr);
        if st["backlog_segments"] == 0 {
            let db = Db::open(&nvr.data_dir.join("oxinvr.db")).expect("db");
            let done = closed_segments(&nvr.data_dir);
            if done.iter().all(|(_, _, id)| db.replicated(*id).unwrap_or(false)) {
                return done;
            }
        }
        if std::time::Instant::now() > deadline {
            let log = nvr.log();
            let tail: Vec<&str> = log.lines().filter(|l| l.contains("replicate")).rev().take(20).collect();
            panic!("not every closed segment replicated within {limit:?}: {st}\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn open_multipart(g: &Garage, node: usize) -> Vec<(String, String)> {
    g.bucket(node).list_multipart("site1/", now_ms()).expect("ListMultipartUploads")
}

#[test]
fn segments_appear_in_the_bucket_with_sidecars_and_decode() {
    let Some(bin) = garage_or_skip("segments_appear_in_the_bucket_with_sidecars_and_decode") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let g = Garage::start(bin, tmp.path());
    let cam = Camera::start(&[]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), "", ""));
    common::nvr::poll(Duration::from_secs(90), "3 segments uploaded", || uploaded(&nvr) >= 3);
    drop(cam);
    let segs = wait_all_replicated(&nvr, Duration::from_secs(60));
    assert!(segs.len() >= 3, "{segs:?}");
    for (path, _, _) in &segs {
        // Read through another node: the cluster holds every object 3 times.
        check_object(&g, 1, path, Some(&nvr.data_dir.join(path)), tmp.path());
    }
    let listed: BTreeMap<String, u64> =
        g.bucket(2).list("site1/box1/cam/", now_ms()).expect("list").into_iter().collect();
    for (path, bytes, _) in &segs {
        let key = format!("site1/box1/{}", path.strip_prefix("recordings/").expect("recordings/"));
        assert_eq!(listed.get(&key), Some(bytes), "{key} listed with its size: {listed:?}");
        assert!(listed.contains_key(&format!("{key}.json")), "{key}.json listed: {listed:?}");
    }
    let st = replicate_status(&nvr);
    assert_eq!(st["state"], "ok", "{st}");
    // Prometheus says the same (the camera is gone: nothing moves now).
    let metrics = nvr.get("/api/metrics").expect("metrics").text();
    let sample = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(sample("oxinvr_replicate_uploaded_segments_total"), st["uploaded_segments"].as_f64(), "{metrics}");
    assert_eq!(sample("oxinvr_replicate_backlog_segments"), Some(0.0));
    assert_eq!(sample("oxinvr_replicate_failing"), Some(0.0));
    assert!(!nvr.get("/api/settings").expect("settings").text().contains(garage::SECRET_KEY), "secret shown");
    assert!(!nvr.log().contains(garage::SECRET_KEY), "secret logged");
}

#[test]
fn a_garage_node_killed_during_uploads_loses_nothing_and_rejoins() {
    let Some(bin) = garage_or_skip("a_garage_node_killed_during_uploads_loses_nothing_and_rejoins") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let mut g = Garage::start(bin, tmp.path());
    let cam = Camera::start(&[]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), "", ""));
    common::nvr::poll(Duration::from_secs(90), "2 segments uploaded", || uploaded(&nvr) >= 2);
    g.kill_node(2);
    let before = uploaded(&nvr);
    common::nvr::poll(Duration::from_secs(90), "uploads go on with a node down", || uploaded(&nvr) >= before + 3);
    g.start_node(2);
    common::nvr::poll(Duration::from_secs(60), "the node rejoins", || {
        g.all_up() && g.bucket(2).list("site1/", now_ms()).is_ok()
    });
    drop(cam);
    let segs = wait_all_replicated(&nvr, Duration::from_secs(90));
    for (path, _, _) in &segs {
        // Node 2 itself serves every object, those written while it was down included.
        check_object(&g, 2, path, Some(&nvr.data_dir.join(path)), tmp.path());
    }
}

#[test]
fn the_whole_cluster_down_for_a_minute_grows_the_backlog_which_drains_after() {
    let Some(bin) = garage_or_skip("the_whole_cluster_down_for_a_minute_grows_the_backlog_which_drains_after") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let mut g = Garage::start(bin, tmp.path());
    let cam = Camera::start(&[]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), "", ""));
    common::nvr::poll(Duration::from_secs(90), "a segment uploaded", || uploaded(&nvr) >= 1);
    for i in 0..3 {
        g.kill_node(i);
    }
    let down_ms = now_ms();
    std::thread::sleep(Duration::from_secs(60));
    let st = replicate_status(&nvr);
    assert!(st["backlog_segments"].as_u64().unwrap_or(0) >= 10, "backlog after a minute down: {st}");
    assert!(st["backlog_bytes"].as_u64().unwrap_or(0) > 0 && st["oldest_pending_ms"].is_i64(), "{st}");
    assert_eq!(st["state"], "failing", "{st}");
    assert!(st["last_error"].is_string(), "{st}");
    // Recording went on: closed segments cover the minute but for the one still open (its
    // length is the camera's GOP, wider than 2 s when the machine is loaded).
    let recorded_ms = recorded_since(&nvr.data_dir, down_ms);
    assert!(recorded_ms >= 45_000, "recording stalled: {recorded_ms} ms recorded in the minute the bucket was down");
    for i in 0..3 {
        g.start_node(i);
    }
    common::nvr::poll(Duration::from_secs(60), "the cluster back", || g.all_up());
    drop(cam);
    let segs = wait_all_replicated(&nvr, Duration::from_secs(180));
    assert_eq!(replicate_status(&nvr)["state"], "ok");
    for (path, _, _) in segs.iter().step_by(5) {
        check_object(&g, 0, path, Some(&nvr.data_dir.join(path)), tmp.path());
    }
}

#[test]
fn sigkill_mid_multipart_resumes_and_leaves_no_incomplete_upload() {
    let Some(bin) = garage_or_skip("sigkill_mid_multipart_resumes_and_leaves_no_incomplete_upload") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let g = Garage::start(bin, tmp.path());
    let cam = Camera::start(&[]);
    // 16 KiB parts at 160 kbit/s: a segment takes seconds, part by part.
    let slow = "multipart_threshold_kb = 16\npart_size_kb = 16\nbandwidth_kbps = 160";
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), slow, ""));
    let db_path = nvr.data_dir.join("oxinvr.db");
    let mut interrupted = None;
    common::nvr::poll(Duration::from_secs(90), "a multipart upload with parts done", || {
        let db = Db::open(&db_path).expect("db");
        let Ok(Some(job)) = db.replicate_next(i64::MAX, &[]) else { return false };
        let mid = job.upload_id.is_some() && !job.parts.is_empty();
        if mid {
            interrupted = Some((job.segment.id, job.segment.path.clone()));
        }
        mid
    });
    let (config, data_dir, port) = (nvr.config.clone(), nvr.data_dir.clone(), nvr.port);
    nvr.kill9();
    let (id, path) = interrupted.expect("interrupted segment");
    assert!(!open_multipart(&g, 0).is_empty(), "the killed upload should still be open in the bucket");
    // Restarted at full speed; the camera stops so the set of segments is final.
    let text = std::fs::read_to_string(&config).expect("config").replace("bandwidth_kbps = 160", "");
    std::fs::write(&config, text).expect("config");
    drop(cam);
    let nvr = Oxinvr::restart(&config, &data_dir, port);
    wait_all_replicated(&nvr, Duration::from_secs(120));
    assert!(Db::open(&db_path).expect("db").replicated(id).expect("q"), "segment {id} not replicated");
    check_object(&g, 1, &path, Some(&data_dir.join(&path)), tmp.path());
    assert_eq!(open_multipart(&g, 0), Vec::<(String, String)>::new(), "incomplete multipart uploads left behind");
}

#[test]
fn keep_until_replicated_holds_segments_until_they_are_in_the_bucket() {
    let Some(bin) = garage_or_skip("keep_until_replicated_holds_segments_until_they_are_in_the_bucket") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let mut g = Garage::start(bin, tmp.path());
    for i in 0..3 {
        g.kill_node(i);
    }
    let cam = Camera::start(&[]);
    let nvr =
        Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), "keep_until_replicated = true", "max_storage_mb = 1"));
    // The bucket is down: the 1 MB quota must not take what is not uploaded.
    let mb = 1u64 << 20;
    common::nvr::poll(Duration::from_secs(240), "well over the quota with nothing uploaded", || {
        closed_segments(&nvr.data_dir).iter().map(|s| s.1).sum::<u64>() > mb + mb / 4
    });
    let held = closed_segments(&nvr.data_dir);
    for (path, _, _) in &held {
        assert!(nvr.data_dir.join(path).is_file(), "{path} deleted before it was replicated");
    }
    for i in 0..3 {
        g.start_node(i);
    }
    // Once uploaded, the quota takes them: the local total falls back near 1 MB,
    // and every segment that was held is in the bucket.
    common::nvr::poll(Duration::from_secs(180), "quota applied after the uploads", || {
        closed_segments(&nvr.data_dir).iter().map(|s| s.1).sum::<u64>() <= mb
    });
    drop(cam);
    assert!(held.iter().any(|(p, _, _)| !nvr.data_dir.join(p).exists()), "the quota deleted none of the held segments");
    for (path, _, _) in &held {
        check_object(&g, 0, path, None, tmp.path());
    }
    assert_eq!(replicate_status(&nvr)["deleted_unreplicated"], 0);
}

#[test]
fn an_ended_events_snapshot_and_sidecar_reach_the_bucket() {
    let Some(bin) = garage_or_skip("an_ended_events_snapshot_and_sidecar_reach_the_bucket") else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let g = Garage::start(bin, tmp.path());
    let cam = Camera::start(&[]);
    let nvr = Oxinvr::start(tmp.path(), &config(&cam, &g.endpoint(0), "", "detect = [\"motion\"]"));
    // The test camera's ball moves all the time: the motion event is ended by hand.
    let events = nvr.wait_for("/api/events?stream=cam", Duration::from_secs(60), "a motion event with pictures", |v| {
        v["events"].as_array().is_some_and(|e| e.iter().any(|e| e["snapshot_url"].is_string()))
    });
    let e = events["events"].as_array().and_then(|e| e.iter().find(|e| e["snapshot_url"].is_string())).expect("event");
    let (id, start) = (e["id"].as_i64().expect("id"), e["start_ms"].as_i64().expect("start"));
    assert_eq!(replicate_status(&nvr)["uploaded_events"], 0, "an ongoing event's snapshot is not sent");
    let body = format!("{{\"end_ms\": {}}}", start + 500);
    let r =
        nvr.request("POST", &format!("/api/events/{id}/end"), &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.expect("POST end").status, 200);
    common::nvr::poll(Duration::from_secs(60), "the event's snapshot uploaded", || {
        replicate_status(&nvr)["uploaded_events"].as_u64() >= Some(1)
    });
    let local = nvr.get(&format!("/api/events/{id}/snapshot")).expect("local snapshot").body;
    let day = &oxinvr::base::clock::rfc3339(start)[..10];
    let key = format!("site1/box1/.events/cam/{day}/{id}.jpg");
    let b = g.bucket(1);
    let jpeg = b.get(&key, 16 << 20, now_ms()).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(sha256_hex(&jpeg), sha256_hex(&local), "{key} differs from the box's snapshot");
    let side: Value = serde_json::from_slice(&b.get(&format!("{key}.json"), 1 << 20, now_ms()).expect("sidecar"))
        .expect("sidecar JSON");
    assert_eq!(
        (side["type"].as_str(), side["kind"].as_str(), side["id"].as_i64()),
        (Some("event"), Some("motion"), Some(id))
    );
    assert_eq!((side["start_ms"].as_i64(), side["end_ms"].as_i64()), (Some(start), Some(start + 500)), "{side}");
    assert_eq!(side["sha256"].as_str(), Some(sha256_hex(&jpeg).as_str()));
    let file = tmp.path().join("snapshot.jpg");
    std::fs::write(&file, &jpeg).expect("write");
    assert_eq!(common::ffprobe_json(&file)["streams"][0]["codec_name"], "mjpeg");
    drop(cam);
}
