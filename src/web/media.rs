//! Media handlers: a recording's file, `export.mp4` and HLS playlists.
//!
//! Invariants:
//! - File paths come from database rows only (checked with
//!   `db::is_safe_relative_path` and joined to the data dir), never from the URL.
//! - A recording is served up to its row's `bytes` (an open segment's file may
//!   hold more than was synced), with single-range support; with `?shift=`
//!   the same bytes except the tfdt of each indexed fragment (see
//!   `export::shifted_file`), which is what HLS playlists link to.
//! - Export and playback never copy media into memory beyond one moof (and,
//!   from a bucket, one read-ahead window per open object).
//! - Media is read through a `playback::source::MediaStore`: the local disk,
//!   or an archive's bucket (`Nvr::media` set by `oxinvr archive`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::clock::rfc3339;
use crate::index::db::{self, SegmentRow, StreamRow};

use super::api::{span, DAY_MS};
use super::range::{self, RangeRequest};
use super::reply::{ApiError, Body, Reply};
use super::router::Query;
use super::Ctx;
use crate::playback::export::{self, ExportSegment, MoofPatch, Part, PartsReader, Patcher};
use crate::playback::hls;
use crate::playback::source::{LocalFiles, MediaStore};
use crate::recording::mp4;

/// An init segment larger than this is not believed.
const MAX_INIT: u64 = 1 << 20;

/// What a request gets of a representation: status and byte range.
struct Served {
    status: u16,
    start: u64,
    len: u64,
    content_range: Option<String>,
}

/// Resolves the `Range` header against `total` bytes (416 if unsatisfiable).
fn served_range(range_header: Option<&str>, total: u64) -> Result<Served, ApiError> {
    match range::parse(range_header, total) {
        RangeRequest::Full => Ok(Served { status: 200, start: 0, len: total, content_range: None }),
        RangeRequest::Partial(r) => {
            Ok(Served { status: 206, start: r.start, len: r.len, content_range: Some(r.content_range(total)) })
        }
        RangeRequest::Unsatisfiable => Err(ApiError::new(
            416,
            format!("Range {:?} lies outside the {total} bytes", range_header.unwrap_or_default()),
        )
        .with_header("Content-Range", range::unsatisfiable_content_range(total))),
    }
}

/// Where media is read from: the bucket of an archive, else the local disk.
fn store(ctx: &Ctx) -> Arc<dyn MediaStore> {
    ctx.nvr.media.get().cloned().unwrap_or_else(|| Arc::new(LocalFiles))
}

/// Answers with the `served` bytes of a virtual file.
fn parts_reply(
    store: Arc<dyn MediaStore>,
    (files, parts): (Vec<PathBuf>, Vec<Part>),
    patcher: Patcher,
    served: Served,
    content_type: &str,
) -> Reply {
    let reader = PartsReader::with_store(store, files, parts, patcher, served.start, served.len);
    let mut reply = Reply {
        status: served.status,
        headers: vec![("Content-Type", content_type.into()), ("Accept-Ranges", "bytes".into())],
        body: Body::Reader(Box::new(reader), served.len),
    };
    if let Some(cr) = served.content_range {
        reply.headers.push(("Content-Range", cr));
    }
    reply
}

/// Answers with `[range of] total` bytes of a virtual file.
fn serve_parts(
    store: Arc<dyn MediaStore>,
    (files, parts): (Vec<PathBuf>, Vec<Part>),
    patcher: Patcher,
    range_header: Option<&str>,
    content_type: &str,
) -> Result<Reply, ApiError> {
    let total: u64 = parts.iter().map(|p| p.len).sum();
    let served = served_range(range_header, total)?;
    Ok(parts_reply(store, (files, parts), patcher, served, content_type))
}

/// The name of a segment's file in the store, refusing rows whose path is
/// unsafe: the absolute path under the data dir, or an archive's object name.
fn segment_path(ctx: &Ctx, seg: &SegmentRow) -> Result<PathBuf, ApiError> {
    if !db::is_safe_relative_path(&seg.path) {
        return Err(ApiError::internal(format!("recording {} has an unsafe path {:?}", seg.id, seg.path)));
    }
    if ctx.nvr.media.get().is_some() {
        return Ok(PathBuf::from(&seg.path));
    }
    Ok(ctx.nvr.config.storage.data_dir.join(&seg.path))
}

/// `GET /api/recordings/{id}/file[.mp4][?shift=TICKS]`: the stored file up to
/// its row's `bytes`. With `shift` (video ticks, may be negative), every
/// indexed fragment's video tfdt is moved by `shift` and its audio tfdt by the
/// same time in audio ticks; length, offsets and sequence numbers are kept,
/// so HLS byte ranges stay valid. A shift that would move the video tfdt of a
/// fragment the requested bytes touch below 0 is refused with 400 (a range of
/// later fragments of the same file may still be served).
pub fn recording_file(ctx: &Ctx, id: &str, q: &Query, range_header: Option<&str>) -> Result<Reply, ApiError> {
    q.only(&["shift"]).map_err(ApiError::bad_request)?;
    let shift: i64 = match q.get("shift") {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("parameter shift must be an integer number of video ticks, not {v:?}"))
        })?,
    };
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("recording id {id:?} is not an integer")))?;
    let seg = ctx.db.segment(id)?.ok_or_else(|| ApiError::not_found(format!("no recording with id {id}")))?;
    let path = segment_path(ctx, &seg)?;
    let store = store(ctx);
    let on_disk = store
        .stored_len(&path)
        .map_err(|e| ApiError::not_found(format!("the file of recording {id} cannot be read: {e}")))?
        .unwrap_or(seg.bytes);
    if on_disk < seg.bytes {
        return Err(ApiError::internal(format!(
            "the file of recording {id} has {on_disk} bytes, fewer than the {} its index says",
            seg.bytes
        )));
    }
    if shift == 0 {
        let parts = vec![Part { file: 0, offset: 0, len: seg.bytes, patch: None }];
        return serve_parts(store, (vec![path], parts), export::patch_moof, range_header, "video/mp4");
    }
    let init = read_init(store.as_ref(), &path, seg.init_len)
        .map_err(|e| ApiError::internal(format!("the init segment of recording {id} cannot be read: {e}")))?;
    let audio_shift = export::audio_shift(i128::from(shift), seg.video_timescale, mp4::timescale_of(&init, 2));
    let audio_shift = i64::try_from(audio_shift)
        .map_err(|_| ApiError::bad_request(format!("shift {shift} is out of range for the audio track")))?;
    let patch = MoofPatch { sequence: None, video_shift: shift, audio_shift };
    let (parts, patched) = export::shifted_file(&seg.fragments, seg.bytes, patch);
    let served = served_range(range_header, seg.bytes)?;
    if let Some(f) = export::first_negative(&patched, shift, served.start, served.len) {
        return Err(ApiError::bad_request(format!(
            "shift {shift} would move the decode time of the fragment at byte {} of recording {id} ({} ticks) below 0",
            f.offset, f.start_ticks
        )));
    }
    Ok(parts_reply(store, (vec![path], parts), export::patch_moof, served, "video/mp4"))
}

fn stream_param(ctx: &Ctx, q: &Query) -> Result<StreamRow, ApiError> {
    let name = q.get("stream").ok_or_else(|| ApiError::bad_request("parameter stream is required"))?;
    ctx.db.stream_by_name(name)?.ok_or_else(|| ApiError::not_found(format!("no stream named {name:?}")))
}

fn read_init(store: &dyn MediaStore, path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
    if len == 0 || len > MAX_INIT {
        return Err(std::io::Error::other(format!("init length {len} is implausible")));
    }
    store.head(path, len)
}

/// The planner's view of the segments; unreadable ones are skipped (logged).
/// Their init segments are read in one call (concurrently from a bucket).
fn export_segments(ctx: &Ctx, store: &dyn MediaStore, segs: Vec<SegmentRow>) -> Result<Vec<ExportSegment>, ApiError> {
    let segs: Vec<SegmentRow> = segs.into_iter().filter(|s| !s.fragments.is_empty()).collect();
    let files = segs.iter().map(|s| segment_path(ctx, s)).collect::<Result<Vec<_>, _>>()?;
    let wanted: Vec<(&Path, u64)> = files.iter().zip(&segs).map(|(f, s)| (f.as_path(), s.init_len)).collect();
    let plausible = |len: u64| len > 0 && len <= MAX_INIT;
    let asked: Vec<(&Path, u64)> = wanted.iter().copied().filter(|(_, len)| plausible(*len)).collect();
    let mut inits = store.heads(&asked).into_iter();
    let mut out = Vec::with_capacity(segs.len());
    for ((seg, file), (_, len)) in segs.into_iter().zip(files.iter()).zip(wanted.iter()) {
        let init = if plausible(*len) {
            inits.next().unwrap_or_else(|| Err(std::io::Error::other("no init read")))
        } else {
            Err(std::io::Error::other(format!("init length {len} is implausible")))
        };
        let init = match init {
            Ok(i) => i,
            Err(e) => {
                log::warn!("export: recording {} ({}) skipped: {e}", seg.id, file.display());
                continue;
            }
        };
        let audio_timescale = if seg.has_audio { mp4::timescale_of(&init, 2) } else { None };
        out.push(ExportSegment {
            file: file.clone(),
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
    let store = store(ctx);
    let segs = export_segments(ctx, store.as_ref(), ctx.db.segments_overlapping(stream.id, start, end)?)?;
    let plan = export::plan(&segs, start, end).ok_or_else(|| nothing_recorded(name, start, end))?;
    let filename = format!("{name}-{}.mp4", rfc3339(start).replace(':', "-"));
    let mut reply = serve_parts(store, (plan.files, plan.parts), export::patch_moof, range_header, "video/mp4")?
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
    let segs = ctx.db.segments_overlapping(row.id, start, end)?;
    let sources: Vec<hls::HlsSource> = segs
        .iter()
        .map(|s| hls::HlsSource {
            id: s.id,
            start_ms: s.start_ms,
            video_timescale: s.video_timescale,
            init_len: s.init_len,
            fragments: &s.fragments,
            codec: (&s.codec, s.width, s.height, s.has_audio),
        })
        .collect();
    let recordings = hls::recordings(&sources, start, end);
    if recordings.is_empty() {
        return Err(nothing_recorded(stream, start, end));
    }
    Ok(Reply::text(200, "application/vnd.apple.mpegurl", hls::playlist(&recordings)))
}
