//! `POST /api/streams/{name}/webrtc`: WebRTC signalling relayed to go2rtc.
//!
//! The browser sends its SDP offer here (with its login, like every route);
//! OxiNVR checks the stream exists, registers it with go2rtc
//! (`PUT /api/streams?name=&src=`, idempotent) and forwards the offer to go2rtc's
//! `POST /api/webrtc?src=<name>` on loopback (go2rtc serves local clients
//! without a password, so it is never exposed itself), and answers with
//! go2rtc's SDP answer. The media then flows browser <-> go2rtc directly.
//!
//! Invariant: only a stream OxiNVR knows is ever asked for, by its name, so a
//! caller cannot make go2rtc open an arbitrary source.

use serde::Deserialize;
use serde_json::json;

use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;
use crate::base::error::Error;
use crate::base::httpclient::Client;
use crate::governor::go2rtc::State;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offer {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// Each step (connect, read, write) of a call to go2rtc.
const OFFER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest SDP offer relayed (browsers send a few KiB).
const MAX_SDP: usize = 32 << 10;

pub fn offer(ctx: &Ctx, stream: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let api = &ctx.nvr.config.web.go2rtc_api;
    if api.is_empty() {
        return Err(ApiError::conflict("WebRTC needs go2rtc (web.go2rtc_api is empty); use the WebSocket live view"));
    }
    let offer: Offer =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    if offer.kind != "offer" || !offer.sdp.starts_with("v=0") || offer.sdp.len() > MAX_SDP {
        return Err(ApiError::bad_request("type must be \"offer\" and sdp an SDP offer (v=0 ..., at most 32 KiB)"));
    }
    let row =
        ctx.db.stream_by_name(stream)?.ok_or_else(|| ApiError::not_found(format!("no stream named {stream:?}")))?;
    if !row.spec.enabled {
        return Err(ApiError::conflict(format!("stream {stream:?} is disabled; enable it to watch it live")));
    }
    if let Some(st) = ctx.nvr.go2rtc.get().map(|g| g.status()).filter(|s| s.state != State::Running) {
        let now = match (st.state, st.backoff_ms) {
            (State::Backoff, Some(ms)) => format!("restarting in {} s", ms.div_ceil(1000)),
            (state, _) => state.as_str().to_string(),
        };
        let why = st.last_error.map(|e| format!(" (it stopped: {e})")).unwrap_or_default();
        return Err(Error::unavailable(format!("go2rtc is {now}{why}; try again shortly")).into());
    }
    let addr = crate::config::go2rtc_addr(api).map_err(ApiError::internal)?;
    // go2rtc is local and quick; a hung one must not hold an HTTP worker.
    let client = Client::new(addr).with_deadline(OFFER_DEADLINE);
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    // Tell go2rtc where the camera is (idempotent): it needs no config of its own.
    let register = format!("/api/streams?name={}&src={}", enc(stream), enc(&row.spec.url));
    match client.request("PUT", &register, None) {
        Ok(r) if r.status < 300 => {}
        Ok(r) => return Err(Error::upstream(format!("go2rtc refused stream {stream:?}: HTTP {}", r.status)).into()),
        Err(e) => return Err(Error::upstream(format!("go2rtc at {api} did not answer: {e}")).into()),
    }
    let path = format!("/api/webrtc?src={}", enc(stream));
    let sent = json!({ "type": "offer", "sdp": offer.sdp });
    let r = client
        .request("POST", &path, Some(&sent))
        .map_err(|e| Error::upstream(format!("go2rtc at {api} did not answer: {e}")))?;
    if r.status != 200 {
        return Err(Error::upstream(format!("go2rtc refused the offer for {stream:?}: HTTP {}", r.status)).into());
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|_| Error::upstream("go2rtc answered something that is not JSON"))?;
    match (answer["type"].as_str(), answer["sdp"].as_str()) {
        (Some("answer"), Some(sdp)) => Ok(Reply::json(200, &json!({ "type": "answer", "sdp": sdp }))),
        _ => Err(Error::upstream("go2rtc's answer has no SDP answer in it").into()),
    }
}
