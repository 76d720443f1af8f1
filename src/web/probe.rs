//! `POST /api/probe` (operator): tries a camera URL and says what it sends.
//!
//! Body: `{"url": "rtsp://user:pass@host/path", "timeout_ms": 5000}` (timeout
//! optional, 100..=20000, default 5000). The camera is asked with retina like
//! ingest does (DESCRIBE, SETUP of the video track over TCP; PLAY until the
//! first frame only if the SDP carries no codec parameters). Answers 200
//! `{"ok": true, "video": {"codec", "width", "height"}, "audio": {"codec"}|null}`
//! or 200 `{"ok": false, "error": "..."}`; 400 names the body field at fault.
//!
//! Invariants:
//! - The camera is asked on a thread of its own (`probe-N`, with a smol
//!   executor under `async_compat`) bounded by the timeout; the http worker
//!   waits at most the timeout plus one second. At most `MAX_PROBES` run at
//!   once (503 beyond).
//! - The password never appears in an answer or a log line: the URL is logged
//!   masked, retina never sees the credentials in the URL, and any occurrence
//!   of the password in an error message is replaced by `***`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use async_compat::Compat;
use serde_json::{json, Map, Value};

use super::api::mask_url;
use super::permit::Permit;
use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;
use crate::base::error::Error;
use crate::recording::media::{AudioParams, Track, VideoParams};
use crate::recording::rtsp::{self, Described, Source};

const DEFAULT_TIMEOUT_MS: u64 = 5000;
const MIN_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 20_000;
/// Probes running at once; each holds an http worker and a thread.
const MAX_PROBES: usize = 2;

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// A checked request.
#[derive(Debug, PartialEq, Eq)]
struct ProbeRequest {
    url: String,
    timeout: Duration,
}

/// What the camera offers.
struct Found {
    video: VideoParams,
    audio: Option<AudioParams>,
}

pub fn probe(_ctx: &Ctx, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let req = parse_body(body)?;
    let (_, creds) = rtsp::split_credentials(&req.url).map_err(|_| field_error("url", "is not a URL"))?;
    let password = creds.as_ref().map(|c| c.password.clone()).unwrap_or_default();
    let slot = ProbeSlot::take()?;
    let result = run(req.url.clone(), creds.is_some(), req.timeout, slot).map_err(|e| redact(&e, &password));
    match &result {
        Ok(f) => log::info!("probe {}: {} {}x{}", mask_url(&req.url), f.video.codec, f.video.width, f.video.height),
        Err(e) => log::info!("probe {}: {e}", mask_url(&req.url)),
    }
    Ok(Reply::json(200, &answer(&result)))
}

fn field_error(field: &str, what: &str) -> ApiError {
    ApiError::bad_request(format!("body field {field:?} {what}"))
}

/// For the JSON fuzz target (`web::fuzz`): whether `body` is a valid probe request.
pub(super) fn body_ok(body: &[u8]) -> bool {
    parse_body(body).is_ok()
}

/// Parses and checks the body. Messages never quote the values (a URL may hold a password).
fn parse_body(body: &[u8]) -> Result<ProbeRequest, ApiError> {
    let shape = "the body must be a JSON object {\"url\": \"rtsp://...\", \"timeout_ms\": 5000}";
    let obj = super::api::json_object(body).map_err(|_| ApiError::bad_request(shape))?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "url" | "timeout_ms")) {
        return Err(field_error(k, "is unknown (known: url, timeout_ms)"));
    }
    let url = obj.get("url").ok_or_else(|| field_error("url", "is missing"))?;
    let url = url.as_str().ok_or_else(|| field_error("url", "must be a string"))?.to_string();
    check_url(&url)?;
    let timeout_ms = match obj.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(t) => t.as_u64().filter(|t| (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(t)).ok_or_else(|| {
            field_error("timeout_ms", &format!("must be an integer {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}"))
        })?,
    };
    Ok(ProbeRequest { url, timeout: Duration::from_millis(timeout_ms) })
}

fn check_url(raw: &str) -> Result<(), ApiError> {
    if raw.starts_with("rtsps://") {
        return Err(field_error("url", "has scheme \"rtsps\"; only rtsp:// is supported"));
    }
    crate::config::validate_stream_url(raw).map_err(|e| match e.contains(raw) {
        true => field_error("url", "is not a URL"),
        false => field_error("url", &e),
    })?;
    let u = url::Url::parse(raw).map_err(|e| field_error("url", &format!("is not a URL ({e})")))?;
    if u.scheme() != "rtsp" {
        return Err(field_error("url", &format!("has scheme {:?}; only rtsp:// is supported", u.scheme())));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(field_error("url", "has no host"));
    }
    Ok(())
}

/// A running probe's place among `MAX_PROBES`; freed on drop.
struct ProbeSlot(#[allow(dead_code)] Permit); // held for its Drop

impl ProbeSlot {
    fn take() -> Result<ProbeSlot, ApiError> {
        Permit::try_take(&RUNNING, MAX_PROBES).map(ProbeSlot).ok_or_else(|| {
            Error::unavailable(format!("{MAX_PROBES} probes are running; try again when one ends")).into()
        })
    }
}

/// Asks the camera on a thread `probe-N`; waits at most `timeout` + 1 s.
fn run(url: String, has_creds: bool, timeout: Duration, slot: ProbeSlot) -> Result<Found, String> {
    let (tx, rx) = mpsc::channel();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name(format!("probe-{id}")).spawn(move || {
        crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Http);
        let timed_out = async {
            smol::Timer::after(timeout).await;
            Err(format!("timeout: no answer in {} ms", timeout.as_millis()))
        };
        let result = smol::block_on(Compat::new(smol::future::or(ask(&url, timeout), timed_out)));
        let _ = tx.send(result);
        drop(slot);
    });
    spawned.map_err(|e| format!("cannot start thread probe-{id}: {e}"))?;
    match rx.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(r) => r.map_err(|e| explain(e, has_creds)),
        Err(_) => Err(format!("timeout: no answer in {} ms", timeout.as_millis())),
    }
}

/// Adds a hint to an authentication failure.
fn explain(e: String, has_creds: bool) -> String {
    match (e.starts_with("401"), has_creds) {
        (true, false) => format!("{e} (the camera wants a user name and password in the URL)"),
        (true, true) => format!("{e} (wrong user name or password?)"),
        _ => e,
    }
}

/// DESCRIBE, SETUP of the video track, and PLAY until the first frame if the
/// SDP did not carry the codec parameters: the steps ingest takes, through the
/// same `rtsp` module, each within the probe's timeout.
async fn ask(url: &str, limit: Duration) -> Result<Found, String> {
    let mut d = Described::describe(url, limit).await.map_err(|e| e.to_string())?;
    let audio = d.audio_params();
    d.setup(false, limit).await.map_err(|e| e.to_string())?;
    if let Some(video) = d.video_params() {
        return Ok(Found { video, audio });
    }
    let mut src = d.play(limit).await.map_err(|e| e.to_string())?;
    while let Some(item) = src.next().await {
        let frame = item.map_err(|e| format!("receiving video failed: {e}"))?;
        if let (Track::Video, Some(video)) = (frame.track, src.video_params()) {
            return Ok(Found { video, audio });
        }
    }
    Err("the camera ended the stream before sending the video parameters".into())
}

/// `text` with every occurrence of the password replaced.
fn redact(text: &str, password: &str) -> String {
    let mut out = text.to_string();
    for form in [password.to_string(), url::form_urlencoded::byte_serialize(password.as_bytes()).collect()] {
        if !form.is_empty() {
            out = out.replace(&form, "***");
        }
    }
    out
}

fn answer(result: &Result<Found, String>) -> Value {
    match result {
        Ok(f) => {
            let mut video = Map::new();
            video.insert("codec".into(), f.video.codec.clone().into());
            video.insert("width".into(), f.video.width.into());
            video.insert("height".into(), f.video.height.into());
            let audio = f.audio.as_ref().map(|a| json!({ "codec": a.codec }));
            json!({ "ok": true, "video": video, "audio": audio })
        }
        Err(e) => json!({ "ok": false, "error": e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        let e = parse_body(body.as_bytes()).expect_err(body);
        assert_eq!(e.status, 400, "{body}");
        e.message
    }

    #[test]
    fn bodies_are_checked_without_echoing_them() {
        let ok = parse_body(br#"{"url":"rtsp://u:p@cam/s"}"#).expect("valid");
        assert_eq!(ok, ProbeRequest { url: "rtsp://u:p@cam/s".into(), timeout: Duration::from_millis(5000) });
        let ok = parse_body(br#"{"url":"rtsp://cam/s","timeout_ms":20000}"#).expect("valid");
        assert_eq!(ok.timeout, Duration::from_secs(20));
        assert!(err("not json").contains("JSON object"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err("{}").contains("\"url\" is missing"));
        assert!(err(r#"{"url":5}"#).contains("\"url\" must be a string"));
        let m = err(r#"{"url":"http://u:secret@cam/s"}"#);
        assert!(m.contains("\"url\"") && m.contains("rtsp://") && !m.contains("secret"), "{m}");
        assert!(err(r#"{"url":"rtsp://cam/s","timeout_ms":20001}"#).contains("\"timeout_ms\""));
        assert!(err(r#"{"url":"rtsp://cam/s","timeout_ms":"5"}"#).contains("\"timeout_ms\""));
        assert!(err(r#"{"url":"rtsp://cam/s","timeout":5}"#).contains("\"timeout\" is unknown"));
        let m = err(r#"{"url":"rtsp://u:secret@","timeout_ms":5}"#);
        assert!(!m.contains("secret"), "{m}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("bad p@ss and p%40ss", "p@ss"), "bad *** and ***");
        assert_eq!(redact("nothing here", ""), "nothing here");
    }

    #[test]
    fn answers_have_the_documented_shape() {
        let video = VideoParams {
            codec: "avc1.64001f".into(),
            width: 1920,
            height: 1080,
            timescale: 90_000,
            sample_entry: vec![],
        };
        let v = answer(&Ok(Found { video, audio: None }));
        assert_eq!(
            v,
            json!({"ok": true, "video": {"codec": "avc1.64001f", "width": 1920, "height": 1080}, "audio": null})
        );
        assert_eq!(answer(&Err("timeout".into())), json!({"ok": false, "error": "timeout"}));
        assert!(explain("401 unauthorized".into(), false).contains("wants a user name"));
    }

    #[test]
    fn a_closed_port_is_reported_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let url = format!("rtsp://127.0.0.1:{port}/x");
        let slot = ProbeSlot::take().expect("slot");
        let began = std::time::Instant::now();
        let e = run(url, false, Duration::from_secs(5), slot).err().expect("no camera there");
        assert_eq!(e, "connection refused");
        assert!(began.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let url = format!("rtsp://127.0.0.1:{port}/x");
        let slot = ProbeSlot::take().expect("slot");
        let began = std::time::Instant::now();
        let e = run(url, false, Duration::from_millis(300), slot).err().expect("silent");
        assert!(e.starts_with("timeout"), "{e}");
        // Far below the 5 s default: the timeout, not the camera, ended it (even under qemu).
        assert!(began.elapsed() < Duration::from_secs(3), "{:?}", began.elapsed());
        drop(listener);
    }
}
