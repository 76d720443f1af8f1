//! `POST /api/detect`: the remote object detector other OxiNVRs (small boxes
//! with `detect.backend = "http://THIS:PORT/api/detect"`) call. The body is a
//! JPEG; the answer lists the COCO objects this box's local model sees.
//!
//! Invariants:
//! - The body may be larger than `web.max_body_bytes` (the route is exempt)
//!   but never larger than `MAX_JPEG_BYTES` (413, before anything is read
//!   when declared); the picture at most `MAX_PIXELS` (413, checked before
//!   decoding).
//! - A box without a local model answers 503 before reading the body.
//! - One picture at a time is decoded and run (the process-wide gate of
//!   `detect::objects`); a second request waits at most `WAIT`, then gets
//!   503 with `Retry-After: 1`.
//!
//! Also `GET /api/streams/{name}/snapshot` (the zone editor's picture): the
//! next frame the stream's detection decodes, as a JPEG. Nothing is decoded
//! for it beyond what detection decodes anyway; it waits at most
//! `SNAPSHOT_WAIT` for that frame, then answers 409 saying why.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;

use super::reply::{ApiError, Body, Reply};
use super::{Ctx, Query};
use crate::detect::objects::{self, Filter, ObjectError};
use crate::detect::picture::{PictureError, Rgb};
use crate::detect::NoPicture;

/// The route's path, for the body-size exemption in `serve`.
pub const PATH: &str = "/api/detect";
/// Largest JPEG accepted.
pub const MAX_JPEG_BYTES: u64 = 4 << 20;
/// Largest picture accepted (3840 x 2160).
const MAX_PIXELS: u64 = 3840 * 2160;
/// How long a request waits for another one's inference.
const WAIT: Duration = Duration::from_secs(2);

/// How long a snapshot waits for detection's next decoded frame (it decodes
/// every keyframe, so a camera's GOP of up to a few seconds fits).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(4);

/// The next frame the stream's detection decodes, as a JPEG.
pub fn snapshot(ctx: &Ctx, name: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    if ctx.db.stream_by_name(name)?.is_none() {
        return Err(ApiError::not_found(format!("no stream named {name:?}")));
    }
    // 409 throughout: what is missing is the stream's state (detection off, not
    // running, no frame from the camera yet), not the server's health.
    let unavailable = |why: String| ApiError::conflict(why).with_header("Retry-After", "5".into());
    let Some(stats) = ctx.nvr.detection.get(name) else {
        return Err(unavailable(format!(
            "detection is not running for stream {name:?} yet (it starts within a second of the stream)"
        )));
    };
    match stats.picture(SNAPSHOT_WAIT) {
        Ok((at_ms, jpeg)) => Ok(Reply {
            status: 200,
            headers: vec![("Content-Type", "image/jpeg".into()), ("X-Frame-Time-Ms", at_ms.to_string())],
            body: Body::Bytes(jpeg.to_vec()),
        }
        .with_header("Cache-Control", "no-store".into())),
        Err(NoPicture::Off) => Err(unavailable(format!(
            "detection is off for stream {name:?}: switch on motion (detect = [\"motion\"]) to get its picture"
        ))),
        Err(NoPicture::NoFrame(why)) => Err(unavailable(format!("stream {name:?}: no picture: {why}"))),
    }
}

pub fn too_large(n: u64) -> ApiError {
    ApiError::new(413, format!("the JPEG ({n} bytes) is larger than the {MAX_JPEG_BYTES} bytes /api/detect takes"))
}

/// Runs the local model on the uploaded JPEG.
pub fn detect(ctx: &Ctx, q: &Query, rq: &mut tiny_http::Request) -> Result<Reply, ApiError> {
    q.only(&["min_score"]).map_err(ApiError::bad_request)?;
    let cfg = &ctx.nvr.config.detect;
    let min_score = match q.get("min_score") {
        None => cfg.min_score,
        Some(v) => v
            .parse::<f32>()
            .ok()
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or_else(|| ApiError::bad_request(format!("min_score must be a number 0..=1, not {v:?}")))?,
    };
    if let Some(n) = rq.body_length().map(|n| n as u64).filter(|n| *n > MAX_JPEG_BYTES) {
        return Err(too_large(n));
    }
    let model = objects::shared_model(&cfg.model, cfg.input_size).map_err(unavailable)?;
    let mut body = Vec::new();
    rq.as_reader()
        .take(MAX_JPEG_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > MAX_JPEG_BYTES {
        return Err(too_large(body.len() as u64));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the body is empty: send a JPEG (Content-Type: image/jpeg)"));
    }
    let filter = Filter::all(min_score);
    let started = Instant::now();
    let run = || -> Result<_, ApiError> {
        let rgb = Rgb::from_jpeg(&body, MAX_PIXELS).map_err(|e| match e {
            PictureError::TooLarge(w, h) => {
                ApiError::new(413, format!("the picture is {w}x{h}; /api/detect takes at most {MAX_PIXELS} pixels"))
            }
            other => ApiError::bad_request(format!("the body is not a JPEG this detector reads: {other}")),
        })?;
        let found = model.infer(&rgb, &filter.min_score).map_err(unavailable)?;
        Ok((rgb.width, rgb.height, found))
    };
    let (width, height, found) = objects::exclusive(WAIT, run).map_err(unavailable)??;
    let detections: Vec<_> =
        found.iter().map(|d| json!({ "label": d.label, "score": d.score, "box": d.bbox })).collect();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Reply::json(
        200,
        &json!({ "detections": detections, "model": model.name(), "width": width, "height": height, "ms": ms }),
    ))
}

fn unavailable(e: ObjectError) -> ApiError {
    let e = match e {
        ObjectError::Busy => return ApiError::new(503, e.to_string()).with_header("Retry-After", "1".into()),
        ObjectError::NoModel(m) => ObjectError::NoModel(format!("{m}: this OxiNVR cannot detect objects")),
        other => other,
    };
    ApiError::new(503, e.to_string())
}
