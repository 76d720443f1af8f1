//! Media handlers: a recording's file, `export.mp4` and HLS playlists.
//!
//! Invariants:
//! - File paths come from database rows only (checked with
//!   `db::is_safe_relative_path` and joined to the data dir), never from the URL.
//! - A recording is served up to its row's `bytes` (an open segment's file may
//!   hold more than was synced), with single-range support.
//! - Export and playback never copy media into memory beyond one moof.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::clock::rfc3339;
use crate::db::{self, SegmentRow, StreamRow};

use super::api::{span, DAY_MS};
use super::export::{self, ExportSegment, Part, PartsReader, Patcher};
use super::hls;
use super::mp4box;
use super::range::{self, RangeRequest};
use super::reply::{ApiError, Body, Reply};
use super::router::Query;
use super::Ctx;

/// An init segment larger than this is not believed.
const MAX_INIT: u64 = 1 << 20;

/// Answers with `[range of] total` bytes of a virtual file.
fn serve_parts(
    files: Vec<PathBuf>,
    parts: Vec<Part>,
    patcher: Patcher,
    range_header: Option<&str>,
    content_type: &str,
) -> Result<Reply, ApiError> {
    let total: u64 = parts.iter().map(|p| p.len).sum();
    let (status, start, len, content_range) = match range::parse(range_header, total) {
        RangeRequest::Full => (200, 0, total, None),
        RangeRequest::Partial(r) => (206, r.start, r.len, Some(r.content_range(total))),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::new(
                416,
                format!("Range {:?} lies outside the {total} bytes", range_header.unwrap_or_default()),
            )
            .with_header("Content-Range", range::unsatisfiable_content_range(total)));
        }
    };
    let reader = PartsReader::new(files, parts, patcher, start, len);
    let mut reply = Reply {
        status,
        headers: vec![("Content-Type", content_type.into()), ("Accept-Ranges", "bytes".into())],
        body: Body::Reader(Box::new(reader), len),
    };
    if let Some(cr) = content_range {
        reply.headers.push(("Content-Range", cr));
    }
    Ok(reply)
}

/// Absolute path of a segment's file, refusing rows whose path is unsafe.
fn segment_path(ctx: &Ctx, seg: &SegmentRow) -> Result<PathBuf, ApiError> {
    if !db::is_safe_relative_path(&seg.path) {
        return Err(ApiError::internal(format!("recording {} has an unsafe path {:?}", seg.id, seg.path)));
    }
    Ok(ctx.nvr.config.storage.data_dir.join(&seg.path))
}

pub fn recording_file(ctx: &Ctx, id: &str, q: &Query, range_header: Option<&str>) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("recording id {id:?} is not an integer")))?;
    let seg = ctx.db.segment(id)?.ok_or_else(|| ApiError::not_found(format!("no recording with id {id}")))?;
    let path = segment_path(ctx, &seg)?;
    let on_disk = std::fs::metadata(&path)
        .map_err(|e| ApiError::not_found(format!("the file of recording {id} cannot be read: {e}")))?
        .len();
    if on_disk < seg.bytes {
        return Err(ApiError::internal(format!(
            "the file of recording {id} has {on_disk} bytes, fewer than the {} its index says",
            seg.bytes
        )));
    }
    let parts = vec![Part { file: 0, offset: 0, len: seg.bytes, patch: None }];
    serve_parts(vec![path], parts, export::patch_moof, range_header, "video/mp4")
}

fn stream_param(ctx: &Ctx, q: &Query) -> Result<StreamRow, ApiError> {
    let name = q.get("stream").ok_or_else(|| ApiError::bad_request("parameter stream is required"))?;
    ctx.db.stream_by_name(name)?.ok_or_else(|| ApiError::not_found(format!("no stream named {name:?}")))
}

fn read_init(path: &PathBuf, len: u64) -> std::io::Result<Vec<u8>> {
    if len == 0 || len > MAX_INIT {
        return Err(std::io::Error::other(format!("init length {len} is implausible")));
    }
    let mut buf = vec![0u8; len as usize];
    File::open(path)?.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// The planner's view of the segments; unreadable ones are skipped (logged).
fn export_segments(ctx: &Ctx, segs: Vec<SegmentRow>) -> Result<Vec<ExportSegment>, ApiError> {
    let mut out = Vec::with_capacity(segs.len());
    for seg in segs.into_iter().filter(|s| !s.fragments.is_empty()) {
        let file = segment_path(ctx, &seg)?;
        let init = match read_init(&file, seg.init_len) {
            Ok(i) => i,
            Err(e) => {
                log::warn!("export: recording {} ({}) skipped: {e}", seg.id, file.display());
                continue;
            }
        };
        let audio_timescale = if seg.has_audio { mp4box::timescale_of(&init, 2) } else { None };
        out.push(ExportSegment {
            file,
            start_ms: seg.start_ms,
            video_timescale: seg.video_timescale,
            audio_timescale,
            init,
            fragments: seg.fragments,
        });
    }
    Ok(out)
}

fn nothing_recorded(stream: &str, start: i64, end: i64) -> ApiError {
    ApiError::not_found(format!(
        "stream {stream:?} has nothing recorded between {} and {}",
        rfc3339(start),
        rfc3339(end)
    ))
}

pub fn export_mp4(ctx: &Ctx, q: &Query, range_header: Option<&str>) -> Result<Reply, ApiError> {
    q.only(&["stream", "start", "end"]).map_err(ApiError::bad_request)?;
    let stream = stream_param(ctx, q)?;
    let (start, end) = span(q, ctx.nvr.clock.now_ms(), Some(DAY_MS))?;
    let name = &stream.spec.name;
    let segs = export_segments(ctx, ctx.db.segments_overlapping(stream.id, start, end)?)?;
    let plan = export::plan(&segs, start, end).ok_or_else(|| nothing_recorded(name, start, end))?;
    let filename = format!("{name}-{}.mp4", rfc3339(start).replace(':', "-"));
    let mut reply = serve_parts(plan.files, plan.parts, export::patch_moof, range_header, "video/mp4")?
        .with_header("Content-Disposition", format!("attachment; filename=\"{filename}\""));
    if let Some(at) = plan.truncated_at_ms {
        reply = reply.with_header("X-OxiNVR-Export-Truncated", format!("codec change at {}", rfc3339(at)));
    }
    Ok(reply)
}

pub fn playback(ctx: &Ctx, stream: &str, q: &Query) -> Result<Reply, ApiError> {
    q.only(&["start", "end"]).map_err(ApiError::bad_request)?;
    let row =
        ctx.db.stream_by_name(stream)?.ok_or_else(|| ApiError::not_found(format!("no stream named {stream:?}")))?;
    let (start, end) = span(q, ctx.nvr.clock.now_ms(), Some(DAY_MS))?;
    let recordings: Vec<hls::HlsRecording> = ctx
        .db
        .segments_overlapping(row.id, start, end)?
        .iter()
        .filter_map(|s| {
            let url = format!("/api/recordings/{}/file.mp4", s.id);
            hls::recording(url, s.init_len, s.start_ms, s.video_timescale, &s.fragments, start, end)
        })
        .collect();
    if recordings.is_empty() {
        return Err(nothing_recorded(stream, start, end));
    }
    Ok(Reply::text(200, "application/vnd.apple.mpegurl", hls::playlist(&recordings)))
}
