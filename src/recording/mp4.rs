//! Our own small ISO-BMFF (fragmented MP4) writer and the one box reader: for
//! segment files (scan, recovery), export and HLS (moof sizes, sequence numbers,
//! track timescales, tfdt patching) and the live-view tests. Fragments are
//! assembled by `recording::fragmenter`.
//!
//! A segment file (docs/ARCHITECTURE.md, "File format") is:
//!
//! ```text
//! ftyp moov                 <- init_segment(): codec parameters only
//! moof mdat                 <- fragment_header() + the samples, one pair per GOP
//! moof mdat ...
//! ```
//!
//! Invariants:
//! - The init segment is a pure function of the codec parameters: every time and
//!   duration in mvhd/tkhd/mdhd is 0 and the anchor of a [`RunStart`] is not used,
//!   so the same parameters always give the same bytes.
//! - Track 1 is video, track 2 is audio (present only when the run has audio).
//! - Every fragment is one `moof` directly followed by one `mdat`. Each `traf`
//!   has a `tfhd` with default-base-is-moof, a version-1 `tfdt` and one `trun`
//!   with a data offset (from the start of the moof) and per-sample duration,
//!   size and flags. The mdat payload is the samples of the first traf, then
//!   those of the second, in order.
//! - A file is valid up to the end of its last complete moof+mdat pair whose
//!   samples lie inside its mdat. Whatever follows (the torn tail of a crash) is
//!   reported by [`scan_file`] and cut by [`recover_file`]; nothing before it is
//!   ever rewritten.
//! - Reading trusts no size: bad input gives an [`Mp4Error`] (or ends the scan
//!   as a torn tail), never a panic or a huge allocation.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::recording::media::{FragmentEntry, RunStart};

/// Track id of the video track in every file we write.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track, when there is one.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Sample flags of a sync sample: depends_on = 2 (does not depend on others).
const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: depends_on = 1, sample_is_non_sync_sample.
const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// The sample_is_non_sync_sample bit of sample flags.
const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;

const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x00_0004;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_CTO: u32 = 0x00_0800;

/// Larger ftyp/moov boxes are not ours: refuse them rather than allocate.
const MAX_INIT_BOX: u64 = 16 << 20;
/// Larger moof boxes are not ours (a GOP needs a few kB): the scan stops there.
const MAX_MOOF_BOX: u64 = 16 << 20;

/// Identity matrix of mvhd/tkhd.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// What went wrong reading or recovering a file.
#[derive(Debug)]
pub enum Mp4Error {
    /// Opening, reading, truncating or syncing the file failed.
    Io { context: String, source: io::Error },
    /// The ftyp+moov at the start of the file is missing or not one we can read.
    BadInit(String),
    /// Bytes given as a moof box are not a moof we can parse.
    BadMoof(String),
}

impl fmt::Display for Mp4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mp4Error::Io { context, source } => write!(f, "{context}: {source}"),
            Mp4Error::BadInit(msg) => write!(f, "invalid init segment (ftyp+moov): {msg}"),
            Mp4Error::BadMoof(msg) => write!(f, "invalid moof: {msg}"),
        }
    }
}

impl std::error::Error for Mp4Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Mp4Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Mp4Error {
    /// Wraps an I/O error with what we were doing to which file.
    fn io(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Mp4Error {
        let context = format!("{what} {}", path.display());
        move |source| Mp4Error::Io { context, source }
    }
}

// ---------------------------------------------------------------------------
// Writing

/// One sample of a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Ticks of the track's timescale until the next sample.
    pub duration: u32,
    /// Bytes of the sample in the mdat.
    pub size: u32,
    /// Sync sample (keyframe); always true for audio.
    pub key: bool,
}

/// Samples of one track in one fragment. track_id 1 = video, 2 = audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample (the tfdt), in ticks of the track's timescale.
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a box: a size placeholder, `kind`, whatever `body` writes, then patches the size.
fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    put32(out, 0);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a full box: like [`put_box`] with the version and 24-bit flags first.
fn put_full_box(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_box(out, kind, |o| {
        put32(o, u32::from(version) << 24 | flags & 0x00ff_ffff);
        body(o);
    });
}

fn put_matrix(out: &mut Vec<u8>) {
    for v in MATRIX {
        put32(out, v);
    }
}

/// What differs between the video and the audio trak.
struct TrakSpec<'a> {
    id: u32,
    handler: &'a [u8; 4],
    name: &'a str,
    timescale: u32,
    width: u32,
    height: u32,
    sample_entry: &'a [u8],
}

fn put_trak(out: &mut Vec<u8>, t: &TrakSpec) {
    let video = t.handler == b"vide";
    put_box(out, b"trak", |o| {
        // flags: track enabled | in movie
        put_full_box(o, b"tkhd", 0, 3, |o| {
            put32(o, 0); // creation time
            put32(o, 0); // modification time
            put32(o, t.id);
            put32(o, 0); // reserved
            put32(o, 0); // duration
            o.extend_from_slice(&[0; 8]); // reserved
            put16(o, 0); // layer
            put16(o, 0); // alternate group
            put16(o, if video { 0 } else { 0x0100 }); // volume
            put16(o, 0); // reserved
            put_matrix(o);
            put32(o, t.width.min(0xffff) << 16); // 16.16 fixed point
            put32(o, t.height.min(0xffff) << 16);
        });
        put_box(o, b"mdia", |o| {
            put_full_box(o, b"mdhd", 0, 0, |o| {
                put32(o, 0); // creation time
                put32(o, 0); // modification time
                put32(o, t.timescale);
                put32(o, 0); // duration
                put16(o, 0x55c4); // language "und"
                put16(o, 0); // pre_defined
            });
            put_full_box(o, b"hdlr", 0, 0, |o| {
                put32(o, 0); // pre_defined
                o.extend_from_slice(t.handler);
                o.extend_from_slice(&[0; 12]); // reserved
                o.extend_from_slice(t.name.as_bytes());
                o.push(0);
            });
            put_box(o, b"minf", |o| {
                if video {
                    // graphicsmode copy, opcolor 0; flags 1 as the spec requires
                    put_full_box(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                } else {
                    put_full_box(o, b"smhd", 0, 0, |o| put32(o, 0)); // balance, reserved
                }
                put_box(o, b"dinf", |o| {
                    put_full_box(o, b"dref", 0, 0, |o| {
                        put32(o, 1);
                        put_full_box(o, b"url ", 0, 1, |_| {}); // flag 1: data in this file
                    });
                });
                put_box(o, b"stbl", |o| {
                    put_full_box(o, b"stsd", 0, 0, |o| {
                        put32(o, 1);
                        o.extend_from_slice(t.sample_entry);
                    });
                    put_full_box(o, b"stts", 0, 0, |o| put32(o, 0));
                    put_full_box(o, b"stsc", 0, 0, |o| put32(o, 0));
                    put_full_box(o, b"stsz", 0, 0, |o| put64(o, 0)); // sample size, count
                    put_full_box(o, b"stco", 0, 0, |o| put32(o, 0));
                });
            });
        });
    });
}

fn put_trex(out: &mut Vec<u8>, track_id: u32) {
    put_full_box(out, b"trex", 0, 0, |o| {
        put32(o, track_id);
        put32(o, 1); // default sample description index
        put32(o, 0); // default duration
        put32(o, 0); // default size
        put32(o, 0); // default flags
    });
}

/// ftyp + moov for a run. Deterministic: the same codec parameters give
/// byte-identical output (all times are 0; the anchor of `run` is not used).
///
/// The sample entries of `run` (`avc1`/`hvc1`, `mp4a`) go into the stsd verbatim.
pub fn init_segment(run: &RunStart) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    put_box(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6"); // major brand
        put32(o, 0); // minor version
        o.extend_from_slice(b"iso6mp41dash"); // compatible brands
    });
    put_box(&mut out, b"moov", |o| {
        put_full_box(o, b"mvhd", 0, 0, |o| {
            put32(o, 0); // creation time
            put32(o, 0); // modification time
            put32(o, 1000); // timescale
            put32(o, 0); // duration
            put32(o, 0x0001_0000); // rate 1.0
            put16(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]); // reserved
            put_matrix(o);
            o.extend_from_slice(&[0; 24]); // pre_defined
            put32(o, if run.audio.is_some() { 3 } else { 2 }); // next track id
        });
        let v = &run.video;
        put_trak(
            o,
            &TrakSpec {
                id: VIDEO_TRACK_ID,
                handler: b"vide",
                name: "VideoHandler",
                timescale: v.timescale,
                width: v.width,
                height: v.height,
                sample_entry: &v.sample_entry,
            },
        );
        if let Some(a) = &run.audio {
            put_trak(
                o,
                &TrakSpec {
                    id: AUDIO_TRACK_ID,
                    handler: b"soun",
                    name: "SoundHandler",
                    timescale: a.timescale,
                    width: 0,
                    height: 0,
                    sample_entry: &a.sample_entry,
                },
            );
        }
        put_box(o, b"mvex", |o| {
            put_trex(o, VIDEO_TRACK_ID);
            if run.audio.is_some() {
                put_trex(o, AUDIO_TRACK_ID);
            }
        });
    });
    out
}

/// moof + mdat header of a fragment whose mdat payload is all samples of
/// `runs[0]` in order, then all of `runs[1]`, and so on. Write the returned
/// bytes, then the payload.
///
/// The mdat header is 8 bytes (16, with a 64-bit size, only if the payload
/// reached 4 GiB). A fragment is one GOP, far below the 2 GiB the 32-bit trun
/// data offsets can address; past that the offsets saturate.
pub fn fragment_header(sequence: u32, runs: &[TrackRun]) -> Vec<u8> {
    let payload = payload_len(runs);
    let large = payload + 8 > u64::from(u32::MAX);
    fragment_header_with(sequence, runs, large)
}

fn payload_len(runs: &[TrackRun]) -> u64 {
    runs.iter().flat_map(|r| r.samples).map(|s| u64::from(s.size)).sum()
}

/// [`fragment_header`] with the choice of a 16-byte (largesize) mdat header.
fn fragment_header_with(sequence: u32, runs: &[TrackRun], large_mdat: bool) -> Vec<u8> {
    let sample_bytes: usize = runs.iter().map(|r| r.samples.len() * 12).sum();
    let mut out = Vec::with_capacity(64 + runs.len() * 64 + sample_bytes);
    // Position of each trun's data_offset field, patched once the moof size is known.
    let mut offset_fields = Vec::with_capacity(runs.len());
    put_box(&mut out, b"moof", |o| {
        put_full_box(o, b"mfhd", 0, 0, |o| put32(o, sequence));
        for run in runs {
            put_box(o, b"traf", |o| {
                put_full_box(o, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |o| put32(o, run.track_id));
                put_full_box(o, b"tfdt", 1, 0, |o| put64(o, run.base_decode_time));
                let flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;
                put_full_box(o, b"trun", 0, flags, |o| {
                    put32(o, u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
                    offset_fields.push(o.len());
                    put32(o, 0); // data offset, patched below
                    for s in run.samples {
                        put32(o, s.duration);
                        put32(o, s.size);
                        put32(o, if s.key { SAMPLE_FLAGS_SYNC } else { SAMPLE_FLAGS_NON_SYNC });
                    }
                });
            });
        }
    });
    let mdat_header_len: u64 = if large_mdat { 16 } else { 8 };
    // The moof starts at 0 of `out`, so positions in `out` are offsets from the moof.
    let mut data_offset = out.len() as u64 + mdat_header_len;
    for (run, &at) in runs.iter().zip(&offset_fields) {
        let v = i32::try_from(data_offset).unwrap_or(i32::MAX);
        out[at..at + 4].copy_from_slice(&v.to_be_bytes());
        data_offset += payload_len(std::slice::from_ref(run));
    }
    let mdat_size = mdat_header_len + payload_len(runs);
    if large_mdat {
        put32(&mut out, 1);
        out.extend_from_slice(b"mdat");
        put64(&mut out, mdat_size);
    } else {
        put32(&mut out, u32::try_from(mdat_size).unwrap_or(u32::MAX));
        out.extend_from_slice(b"mdat");
    }
    out
}

// ---------------------------------------------------------------------------
// Box headers and walking boxes in memory

/// A box found in a file or buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    /// Where the box starts.
    pub offset: u64,
    /// Bytes of the whole box, header included.
    pub size: u64,
    /// 8, or 16 for a 64-bit largesize.
    pub header_len: u64,
}

impl BoxHeader {
    /// Parses the box header at the start of `bytes` (at most 16 bytes are read),
    /// for a box at `offset` in a space (file or parent box) that ends at `end`.
    /// A size of 0 ("to the end") resolves to `end - offset`.
    ///
    /// `None` if `bytes` is too short for the header, the size is smaller than
    /// the header, or the box would extend past `end`.
    pub fn parse(bytes: &[u8], offset: u64, end: u64) -> Option<BoxHeader> {
        let raw = RawHeader::parse(bytes)?;
        let size = match raw.size {
            Some(size) => size,
            None => end.checked_sub(offset)?,
        };
        (size >= raw.header_len && offset.checked_add(size)? <= end).then_some(BoxHeader {
            kind: raw.kind,
            offset,
            size,
            header_len: raw.header_len,
        })
    }

    /// Offset of the first byte after the box.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// A box header as written: `size` is `None` for size 0 ("extends to the end").
struct RawHeader {
    kind: [u8; 4],
    size: Option<u64>,
    header_len: u64,
}

impl RawHeader {
    /// `None` if `b` is too short or the size is smaller than the header.
    fn parse(b: &[u8]) -> Option<RawHeader> {
        let size32 = be32(b, 0)?;
        let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        let (size, header_len) = match size32 {
            0 => (None, 8),
            1 => (Some(be64(b, 8)?), 16),
            s => (Some(u64::from(s)), 8),
        };
        match size {
            Some(s) if s < header_len => None,
            _ => Some(RawHeader { kind, size, header_len }),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A four-character code for messages, with unprintable bytes as '?'.
fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter().map(|&c| if c.is_ascii_graphic() || c == b' ' { char::from(c) } else { '?' }).collect()
}

/// A box inside a buffer: its type, where it starts and where its payload is.
struct Child {
    kind: [u8; 4],
    start: usize,
    payload: Range<usize>,
}

/// The boxes packed in `buf[range]`, in order. Yields an error (and then ends)
/// at a header that is short or whose size does not fit in the range.
fn children(buf: &[u8], range: Range<usize>) -> impl Iterator<Item = Result<Child, String>> + '_ {
    let mut pos = range.start;
    let end = range.end.min(buf.len());
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= end {
            return None;
        }
        let Some(h) = BoxHeader::parse(&buf[pos..end], pos as u64, end as u64) else {
            failed = true;
            return Some(Err(format!("bad box header at byte {pos}")));
        };
        let start = pos;
        pos += h.size as usize;
        Some(Ok(Child { kind: h.kind, start, payload: start + h.header_len as usize..pos }))
    })
}

/// Payload range of the first child of type `kind` in `buf[range]`, if any.
fn find(buf: &[u8], range: Range<usize>, kind: &[u8; 4]) -> Result<Option<Range<usize>>, String> {
    for child in children(buf, range) {
        let child = child?;
        if &child.kind == kind {
            return Ok(Some(child.payload));
        }
    }
    Ok(None)
}

/// Like [`find`], but a missing child is an error.
fn require(buf: &[u8], range: Range<usize>, kind: &[u8; 4], parent: &str) -> Result<Range<usize>, String> {
    find(buf, range, kind)?.ok_or_else(|| format!("no {} box in {parent}", fourcc(kind)))
}

/// Big-endian field reader over a box payload; running out is an error naming the box.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Reader { b, pos: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self.pos.checked_add(n).and_then(|end| self.b.get(self.pos..end));
        let s = s.ok_or_else(|| format!("{} box too short ({} bytes)", self.what, self.b.len()))?;
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }

    /// Version and flags of a full box.
    fn version_flags(&mut self) -> Result<(u8, u32), String> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }
}

// ---------------------------------------------------------------------------
// moov

/// RFC 6381 codec string of a video sample entry: `avc1.PPCCLL` (profile,
/// compatibility, level from the avcC) for `avc1`/`avc3`, the bare four-character
/// code otherwise (`hvc1`/`hev1` for HEVC). `None` if the entry is not a box or
/// an AVC entry has no readable avcC.
pub fn codec_string(sample_entry: &[u8]) -> Option<String> {
    let h = BoxHeader::parse(sample_entry, 0, sample_entry.len() as u64)?;
    if &h.kind != b"avc1" && &h.kind != b"avc3" {
        return Some(fourcc(&h.kind));
    }
    // A VisualSampleEntry has 78 bytes of fixed fields before its child boxes.
    let children_start = h.header_len as usize + 78;
    let avcc = find(sample_entry, children_start..h.size as usize, b"avcC").ok()??;
    let p = sample_entry.get(avcc)?;
    let (profile, compat, level) = (p.get(1)?, p.get(2)?, p.get(3)?);
    Some(format!("{}.{profile:02x}{compat:02x}{level:02x}", fourcc(&h.kind)))
}

/// What the scan needs to know of one trak.
struct TrackInfo {
    id: u32,
    handler: [u8; 4],
    timescale: u32,
    width: u32,
    height: u32,
    /// The first sample entry of the stsd.
    sample_entry: Range<usize>,
}

/// The video trak (the first with handler `vide`) and audio trak (first `soun`).
struct InitInfo {
    video: TrackInfo,
    codec: String,
    audio: Option<TrackInfo>,
}

/// Parses a whole moov box (`moov` holds exactly its bytes).
fn parse_moov(moov: &[u8]) -> Result<InitInfo, String> {
    let header_len = BoxHeader::parse(moov, 0, moov.len() as u64).ok_or("bad moov header")?.header_len;
    let (mut video, mut audio) = (None, None);
    for child in children(moov, header_len as usize..moov.len()) {
        let child = child?;
        if &child.kind != b"trak" {
            continue;
        }
        let track = parse_trak(moov, child.payload)?;
        match &track.handler {
            b"vide" if video.is_none() => video = Some(track),
            b"soun" if audio.is_none() => audio = Some(track),
            _ => {}
        }
    }
    let video = video.ok_or("no video track (trak with handler vide)")?;
    let entry = moov.get(video.sample_entry.clone()).unwrap_or_default();
    let codec = codec_string(entry).ok_or("video sample entry has no readable codec configuration (avcC)")?;
    Ok(InitInfo { video, codec, audio })
}

fn parse_trak(b: &[u8], trak: Range<usize>) -> Result<TrackInfo, String> {
    let mut tkhd = Reader::new(&b[require(b, trak.clone(), b"tkhd", "trak")?], "tkhd");
    let (version, _) = tkhd.version_flags()?;
    let long = version == 1; // 64-bit times and duration
    tkhd.take(if long { 16 } else { 8 })?; // creation, modification time
    let id = tkhd.u32()?;
    // reserved, duration, reserved[2], layer, alternate group, volume, reserved, matrix
    tkhd.take(4 + if long { 8 } else { 4 } + 8 + 8 + 36)?;
    let width = tkhd.u32()? >> 16;
    let height = tkhd.u32()? >> 16;

    let mdia = require(b, trak, b"mdia", "trak")?;
    let mut mdhd = Reader::new(&b[require(b, mdia.clone(), b"mdhd", "mdia")?], "mdhd");
    let (version, _) = mdhd.version_flags()?;
    mdhd.take(if version == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32()?;

    let mut hdlr = Reader::new(&b[require(b, mdia.clone(), b"hdlr", "mdia")?], "hdlr");
    hdlr.take(8)?; // version+flags, pre_defined
    let handler: [u8; 4] = [hdlr.take(1)?[0], hdlr.take(1)?[0], hdlr.take(1)?[0], hdlr.take(1)?[0]];

    let minf = require(b, mdia, b"minf", "mdia")?;
    let stbl = require(b, minf, b"stbl", "minf")?;
    let stsd = require(b, stbl, b"stsd", "stbl")?;
    // version+flags, entry count, then the first entry
    let entries = stsd.start + 8..stsd.end;
    let entry = children(b, entries).next().ok_or("empty stsd")??;
    let sample_entry = entry.start..entry.payload.end;
    Ok(TrackInfo { id, handler, timescale, width, height, sample_entry })
}

/// (track id, media timescale) of every `trak` of the moov in `init` (the
/// bytes of an init segment, or any buffer of boxes holding a moov). Only
/// tkhd and mdia/mdhd are read; malformed boxes are skipped.
pub fn track_timescales(init: &[u8]) -> Vec<(u32, u32)> {
    let Some(moov) = children(init, 0..init.len()).map_while(Result::ok).find(|c| &c.kind == b"moov") else {
        return Vec::new();
    };
    children(init, moov.payload)
        .map_while(Result::ok)
        .filter(|c| &c.kind == b"trak")
        .filter_map(|trak| trak_timescale(init, trak.payload).ok())
        .collect()
}

/// (track id, timescale) of one trak.
fn trak_timescale(b: &[u8], trak: Range<usize>) -> Result<(u32, u32), String> {
    let mut tkhd = Reader::new(&b[require(b, trak.clone(), b"tkhd", "trak")?], "tkhd");
    let (version, _) = tkhd.version_flags()?;
    tkhd.take(if version == 1 { 16 } else { 8 })?; // creation, modification time
    let id = tkhd.u32()?;
    let mdia = require(b, trak, b"mdia", "trak")?;
    let mut mdhd = Reader::new(&b[require(b, mdia, b"mdhd", "mdia")?], "mdhd");
    let (version, _) = mdhd.version_flags()?;
    mdhd.take(if version == 1 { 16 } else { 8 })?;
    Ok((id, mdhd.u32()?))
}

/// Timescale of `track_id` in an init segment (`None` if absent or 0).
pub fn timescale_of(init: &[u8], track_id: u32) -> Option<u32> {
    track_timescales(init).into_iter().find(|(id, _)| *id == track_id).map(|(_, ts)| ts).filter(|ts| *ts > 0)
}

// ---------------------------------------------------------------------------
// moof

/// One traf of a moof, summed over its truns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafSummary {
    pub track_id: u32,
    /// The tfdt: decode time of the first sample.
    pub base_decode_time: u64,
    /// Sum of the sample durations.
    pub duration: u64,
    pub samples: u32,
    /// The first sample is a sync sample (false if there are no samples).
    pub first_sync: bool,
    /// Offset of the first sample from the start of the moof, when the traf
    /// says so (default-base-is-moof and a trun data offset), else `None`.
    pub data_offset: Option<i64>,
    /// Sum of the sample sizes; the samples are contiguous from `data_offset`.
    pub data_size: u64,
}

/// A parsed moof and where its patchable fields are.
struct MoofLayout {
    /// Position of the mfhd sequence number.
    sequence_at: usize,
    /// Each traf, with the position and version of its tfdt.
    trafs: Vec<(TrafSummary, usize, u8)>,
}

fn moof_layout(moof: &[u8]) -> Result<MoofLayout, String> {
    let h = BoxHeader::parse(moof, 0, moof.len() as u64).ok_or("bad box header")?;
    if &h.kind != b"moof" {
        return Err(format!("box is {}, not moof", fourcc(&h.kind)));
    }
    if h.size != moof.len() as u64 {
        return Err(format!("box size is {} but {} bytes were given", h.size, moof.len()));
    }
    let mut sequence_at = None;
    let mut trafs = Vec::new();
    for child in children(moof, h.header_len as usize..moof.len()) {
        let child = child?;
        match &child.kind {
            // One mfhd (ISO 14496-12 8.8.5): with two, `moof_sequence` would read
            // the first while the patch wrote the other.
            b"mfhd" if sequence_at.is_some() => return Err("more than one mfhd box".into()),
            b"mfhd" if child.payload.len() >= 8 => sequence_at = Some(child.payload.start + 4),
            b"mfhd" => return Err("mfhd box too short".into()),
            b"traf" => trafs.push(parse_traf(moof, child.payload)?),
            _ => {}
        }
    }
    Ok(MoofLayout { sequence_at: sequence_at.ok_or("no mfhd box")?, trafs })
}

fn parse_traf(b: &[u8], traf: Range<usize>) -> Result<(TrafSummary, usize, u8), String> {
    let mut tfhd = Reader::new(&b[require(b, traf.clone(), b"tfhd", "traf")?], "tfhd");
    let (_, tfhd_flags) = tfhd.version_flags()?;
    let track_id = tfhd.u32()?;
    // Optional fields, in this order when their flag is set.
    let mut optional = |flag: u32, len: usize| -> Result<Option<&[u8]>, String> {
        if tfhd_flags & flag == 0 {
            return Ok(None);
        }
        tfhd.take(len).map(Some)
    };
    optional(TFHD_BASE_DATA_OFFSET, 8)?;
    optional(TFHD_SAMPLE_DESCRIPTION_INDEX, 4)?;
    let mut default = |flag| -> Result<u32, String> { Ok(optional(flag, 4)?.and_then(|b| be32(b, 0)).unwrap_or(0)) };
    let default_duration = default(TFHD_DEFAULT_DURATION)?;
    let default_size = default(TFHD_DEFAULT_SIZE)?;
    let default_flags = default(TFHD_DEFAULT_FLAGS)?;
    let base_is_moof = tfhd_flags & TFHD_BASE_DATA_OFFSET == 0 && tfhd_flags & TFHD_DEFAULT_BASE_IS_MOOF != 0;

    let tfdt = find(b, traf.clone(), b"tfdt")?.ok_or_else(|| format!("traf of track {track_id} has no tfdt"))?;
    let mut r = Reader::new(&b[tfdt.clone()], "tfdt");
    let (tfdt_version, _) = r.version_flags()?;
    let base_decode_time = if tfdt_version == 1 { r.u64()? } else { u64::from(r.u32()?) };

    let mut sum = TrafSummary {
        track_id,
        base_decode_time,
        duration: 0,
        samples: 0,
        first_sync: false,
        data_offset: None,
        data_size: 0,
    };
    let mut first_trun = true;
    let mut seen_sample = false;
    for child in children(b, traf) {
        let child = child?;
        if &child.kind != b"trun" {
            continue;
        }
        let mut r = Reader::new(&b[child.payload], "trun");
        let (_, flags) = r.version_flags()?;
        let count = r.u32()?;
        let data_offset = if flags & TRUN_DATA_OFFSET != 0 { Some(i64::from(r.u32()? as i32)) } else { None };
        if first_trun && base_is_moof {
            sum.data_offset = data_offset;
        }
        first_trun = false;
        let first_flags = if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 { Some(r.u32()?) } else { None };
        sum.samples = sum.samples.saturating_add(count);
        let fields = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO];
        let entry_len = 4 * fields.iter().filter(|&&f| flags & f != 0).count();
        if entry_len == 0 {
            // Every sample takes the defaults: no need to loop over them.
            if count > 0 && !seen_sample {
                sum.first_sync = first_flags.unwrap_or(default_flags) & SAMPLE_IS_NON_SYNC == 0;
                seen_sample = true;
            }
            let n = u64::from(count);
            sum.duration = sum.duration.saturating_add(n * u64::from(default_duration));
            sum.data_size = sum.data_size.saturating_add(n * u64::from(default_size));
            continue;
        }
        let len = (count as usize).checked_mul(entry_len).ok_or("trun sample count too large")?;
        for entry in r.take(len)?.chunks_exact(entry_len) {
            let mut e = Reader::new(entry, "trun");
            let mut field = |flag, default| {
                if flags & flag != 0 {
                    e.u32()
                } else {
                    Ok(default)
                }
            };
            let duration = field(TRUN_DURATION, default_duration)?;
            let size = field(TRUN_SIZE, default_size)?;
            let sample_flags = field(TRUN_FLAGS, default_flags)?;
            if !seen_sample {
                // The first sample of this trun: first-sample-flags override its own.
                sum.first_sync = first_flags.unwrap_or(sample_flags) & SAMPLE_IS_NON_SYNC == 0;
                seen_sample = true;
            }
            sum.duration = sum.duration.saturating_add(u64::from(duration));
            sum.data_size = sum.data_size.saturating_add(u64::from(size));
        }
    }
    Ok((sum, tfdt.start + 4, tfdt_version))
}

/// Size of the `moof` box whose header starts `head` (8 bytes, 16 with a
/// 64-bit size); `None` if it is not a moof header with a usable size.
pub fn moof_size(head: &[u8]) -> Option<u64> {
    match RawHeader::parse(head)? {
        RawHeader { kind, size: Some(size), .. } if &kind == b"moof" => Some(size),
        _ => None,
    }
}

/// The `mfhd` sequence number of a whole `moof` box (its trafs are not read).
pub fn moof_sequence(moof: &[u8]) -> Option<u32> {
    let h = BoxHeader::parse(moof, 0, moof.len() as u64).filter(|h| &h.kind == b"moof")?;
    let mfhd = find(moof, h.header_len as usize..h.end() as usize, b"mfhd").ok()??;
    // Full box: version(1) flags(3), then the sequence number.
    be32(moof.get(mfhd)?, 4)
}

/// Parses one moof (the bytes of the moof box only) into a summary per traf.
pub fn parse_moof(moof: &[u8]) -> Result<Vec<TrafSummary>, Mp4Error> {
    let layout = moof_layout(moof).map_err(Mp4Error::BadMoof)?;
    Ok(layout.trafs.into_iter().map(|(t, _, _)| t).collect())
}

/// For export: patches (a copy of) one of our moof boxes in place, setting the
/// mfhd sequence number and each traf's tfdt to `new_tfdt(track_id, old_tfdt)`.
/// Errors, leaving `moof` untouched, if it is not a moof we can parse or a
/// version-0 tfdt cannot hold the new value.
pub fn patch_moof(moof: &mut [u8], sequence: u32, new_tfdt: impl Fn(u32, u64) -> u64) -> Result<(), Mp4Error> {
    let layout = moof_layout(moof).map_err(Mp4Error::BadMoof)?;
    let mut writes = vec![(layout.sequence_at, sequence.to_be_bytes().to_vec())];
    for (traf, at, version) in &layout.trafs {
        let v = new_tfdt(traf.track_id, traf.base_decode_time);
        let bytes = if *version == 1 {
            v.to_be_bytes().to_vec()
        } else {
            let v32 = u32::try_from(v).map_err(|_| {
                Mp4Error::BadMoof(format!("tfdt of track {} is 32-bit and cannot hold {v}", traf.track_id))
            })?;
            v32.to_be_bytes().to_vec()
        };
        writes.push((*at, bytes));
    }
    for (at, bytes) in writes {
        if let Some(dst) = moof.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(&bytes);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Files

/// Result of walking a stored segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedFile {
    /// Bytes of ftyp+moov.
    pub init_len: u64,
    pub video_timescale: u32,
    /// RFC 6381: `avc1.PPCCLL` from the avcC, `hvc1`/`hev1` for HEVC.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub has_audio: bool,
    pub audio_timescale: Option<u32>,
    /// One entry per complete fragment, in file order.
    pub fragments: Vec<FragmentEntry>,
    /// Audio samples in all complete fragments.
    pub audio_frames: u64,
    /// End of the last complete moof+mdat pair (or `init_len`).
    pub valid_len: u64,
    pub file_len: u64,
}

/// The box at `pos` if its header is readable, its size is given (not 0) and
/// possible, and it lies entirely before `file_len`.
fn complete_box(file: &File, pos: u64, file_len: u64) -> io::Result<Option<BoxHeader>> {
    if pos >= file_len {
        return Ok(None);
    }
    let mut buf = [0u8; 16];
    let n = (file_len - pos).min(16) as usize;
    file.read_exact_at(&mut buf[..n], pos)?;
    Ok(match RawHeader::parse(&buf[..n]) {
        Some(RawHeader { kind, size: Some(size), header_len }) if size <= file_len - pos => {
            Some(BoxHeader { kind, offset: pos, size, header_len })
        }
        _ => None,
    })
}

/// The complete, valid moof+mdat pair at `pos` and its count of audio
/// samples, or `None` if the file ends or is torn there.
fn read_fragment(file: &File, pos: u64, file_len: u64, init: &InitInfo) -> io::Result<Option<(FragmentEntry, u64)>> {
    let Some(moof) = complete_box(file, pos, file_len)? else {
        return Ok(None);
    };
    if &moof.kind != b"moof" || moof.size > MAX_MOOF_BOX {
        return Ok(None);
    }
    let Some(mdat) = complete_box(file, moof.end(), file_len)? else {
        return Ok(None);
    };
    if &mdat.kind != b"mdat" {
        return Ok(None);
    }
    let Ok(size) = u32::try_from(moof.size + mdat.size) else {
        return Ok(None);
    };
    let mut bytes = vec![0; moof.size as usize];
    file.read_exact_at(&mut bytes, pos)?;
    let Ok(layout) = moof_layout(&bytes) else {
        return Ok(None);
    };
    let trafs: Vec<TrafSummary> = layout.trafs.into_iter().map(|(t, _, _)| t).collect();
    // Every traf's samples must lie inside this mdat's payload.
    let payload = moof.size + mdat.header_len..moof.size + mdat.size;
    let inside = |t: &TrafSummary| {
        let start = t.data_offset.and_then(|o| u64::try_from(o).ok());
        start.is_some_and(|s| s >= payload.start && s.checked_add(t.data_size).is_some_and(|e| e <= payload.end))
    };
    if !trafs.iter().all(inside) {
        return Ok(None);
    }
    let Some(video) = trafs.iter().find(|t| t.track_id == init.video.id) else {
        return Ok(None);
    };
    let audio_id = init.audio.as_ref().map(|a| a.id);
    let audio_frames = trafs.iter().filter(|t| Some(t.track_id) == audio_id).map(|t| u64::from(t.samples)).sum();
    let entry = FragmentEntry {
        offset: pos,
        size,
        start_ticks: video.base_decode_time,
        duration_ticks: u32::try_from(video.duration).unwrap_or(u32::MAX),
        frames: video.samples,
        key: video.first_sync,
    };
    Ok(Some((entry, audio_frames)))
}

/// Walks ftyp, moov, then moof+mdat pairs. A trailing partial box, a moof
/// without its complete mdat, a box of impossible or unknown ("to the end")
/// size, any other box where a moof should be, a moof that does not parse or
/// whose samples are not inside its mdat, or one without a video traf: the walk
/// stops there and everything from that point is torn (`valid_len` < `file_len`).
///
/// Errors only on I/O errors or if the init (ftyp+moov with a video trak) is
/// missing or invalid.
pub fn scan_file(path: &Path) -> Result<ScannedFile, Mp4Error> {
    let file = File::open(path).map_err(Mp4Error::io("opening", path))?;
    let file_len = file.metadata().map_err(Mp4Error::io("reading metadata of", path))?.len();
    let read_err = || Mp4Error::io("reading", path);

    let ftyp = complete_box(&file, 0, file_len)
        .map_err(read_err())?
        .filter(|h| &h.kind == b"ftyp" && h.size <= MAX_INIT_BOX)
        .ok_or_else(|| Mp4Error::BadInit("the file does not start with a complete ftyp box".into()))?;
    let moov = complete_box(&file, ftyp.end(), file_len)
        .map_err(read_err())?
        .filter(|h| &h.kind == b"moov" && h.size <= MAX_INIT_BOX)
        .ok_or_else(|| Mp4Error::BadInit(format!("no complete moov box at byte {}", ftyp.end())))?;
    let mut moov_bytes = vec![0; moov.size as usize];
    file.read_exact_at(&mut moov_bytes, moov.offset).map_err(read_err())?;
    let init = parse_moov(&moov_bytes).map_err(Mp4Error::BadInit)?;

    let init_len = moov.end();
    let mut pos = init_len;
    let mut fragments = Vec::new();
    let mut audio_frames = 0;
    while let Some((entry, audio)) = read_fragment(&file, pos, file_len, &init).map_err(read_err())? {
        pos += u64::from(entry.size);
        fragments.push(entry);
        audio_frames += audio;
    }
    Ok(ScannedFile {
        init_len,
        video_timescale: init.video.timescale,
        codec: init.codec,
        width: init.video.width,
        height: init.video.height,
        has_audio: init.audio.is_some(),
        audio_timescale: init.audio.as_ref().map(|a| a.timescale),
        fragments,
        audio_frames,
        valid_len: pos,
        file_len,
    })
}

/// [`scan_file`], then, if the file has a torn tail, truncates it to
/// `valid_len` and fdatasyncs it. Returns the scan (with `file_len` the new
/// length) and the number of bytes cut.
pub fn recover_file(path: &Path) -> Result<(ScannedFile, u64), Mp4Error> {
    let mut scan = scan_file(path)?;
    let cut = scan.file_len - scan.valid_len;
    if cut > 0 {
        let file = OpenOptions::new().write(true).open(path).map_err(Mp4Error::io("opening for write", path))?;
        file.set_len(scan.valid_len).map_err(Mp4Error::io("truncating", path))?;
        file.sync_data().map_err(Mp4Error::io("syncing", path))?;
        scan.file_len = scan.valid_len;
    }
    Ok((scan, cut))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::recording::media::{AudioParams, VideoParams};

    /// A box of `kind` around `payload` (for hand-made inputs).
    pub(crate) fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![version, 0, 0, 0];
        v.extend_from_slice(rest);
        v
    }

    /// A trak holding only what `track_timescales` reads (tkhd, mdia/mdhd).
    fn bare_trak(id: u32, ts: u32, v1: bool) -> Vec<u8> {
        let times = if v1 { 16 } else { 8 };
        let tkhd = full(u8::from(v1), &[vec![0u8; times], id.to_be_bytes().to_vec()].concat());
        let mdhd = full(u8::from(v1), &[vec![0u8; times], ts.to_be_bytes().to_vec()].concat());
        let mdia = bx(b"mdia", &[bx(b"hdlr", &[0; 12]), bx(b"mdhd", &mdhd)].concat());
        bx(b"trak", &[bx(b"tkhd", &tkhd), mdia].concat())
    }

    /// A bare init segment with a 90 kHz video track and an optional audio track.
    pub(crate) fn bare_init(audio_ts: Option<u32>) -> Vec<u8> {
        let mut moov = bx(b"mvhd", &[0; 20]);
        moov.extend(bare_trak(1, 90_000, false));
        if let Some(ts) = audio_ts {
            moov.extend(bare_trak(2, ts, true));
        }
        [bx(b"ftyp", b"iso6\0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    #[test]
    fn timescales_are_read_from_mdhd() {
        let i = bare_init(Some(16_000));
        assert_eq!(track_timescales(&i), vec![(1, 90_000), (2, 16_000)]);
        assert_eq!(timescale_of(&i, 2), Some(16_000));
        assert_eq!(timescale_of(&bare_init(None), 2), None);
        // Our own init segments too.
        let ours = init_segment(&run_start(true, 0));
        assert_eq!(track_timescales(&ours), vec![(1, 90_000), (2, 48_000)]);
    }

    #[test]
    fn malformed_init_gives_no_timescales() {
        let i = bare_init(Some(8000));
        for cut in 0..i.len() {
            let _ = track_timescales(&i[..cut]);
        }
        assert!(track_timescales(&[0, 0, 0, 1, b'm', b'o', b'o', b'v', 255, 255]).is_empty());
        assert!(track_timescales(&[0, 0, 0, 3, b'm', b'o', b'o', b'v']).is_empty());
        let mut zero = vec![0, 0, 0, 0];
        zero.extend_from_slice(b"moov");
        assert!(track_timescales(&zero).is_empty());
    }

    #[test]
    fn moof_sizes() {
        assert_eq!(moof_size(&bx(b"moof", &[0; 100])), Some(108));
        assert_eq!(moof_size(&bx(b"mdat", &[0; 100])), None);
        assert_eq!(moof_size(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']), None);
        assert_eq!(moof_size(b"moof"), None);
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"moof");
        large.extend_from_slice(&40u64.to_be_bytes());
        assert_eq!(moof_size(&large), Some(40));
    }

    #[test]
    fn moof_sequences() {
        let mfhd = bx(b"mfhd", &[0, 0, 0, 0, 0, 0, 1, 2]);
        let traf = bx(b"traf", &[0; 8]);
        assert_eq!(moof_sequence(&bx(b"moof", &[traf.clone(), mfhd.clone()].concat())), Some(258));
        assert_eq!(moof_sequence(&bx(b"moof", &traf)), None);
        assert_eq!(moof_sequence(&bx(b"mdat", &mfhd)), None);
        assert_eq!(moof_sequence(&bx(b"moof", &bx(b"mfhd", &[0; 6]))), None);
        let whole = bx(b"moof", &mfhd);
        for cut in 0..whole.len() {
            assert_eq!(moof_sequence(&whole[..cut]), None);
        }
    }

    /// SPS and PPS of a 640x480 High profile, level 3.0 stream from libx264.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xb2, 0x01, 0x40, 0x7b, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x2c, 0x5c, 0x90,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xc3, 0xcb, 0x22, 0xc0];

    /// An `avc1` sample entry with the avcC of SPS/PPS, as retina would build it.
    fn avc1_entry() -> Vec<u8> {
        let mut out = Vec::new();
        put_box(&mut out, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]); // reserved
            put16(o, 1); // data reference index
            o.extend_from_slice(&[0; 16]); // pre_defined, reserved
            put16(o, 640);
            put16(o, 480);
            put32(o, 0x0048_0000); // 72 dpi
            put32(o, 0x0048_0000);
            put32(o, 0); // reserved
            put16(o, 1); // frame count
            o.extend_from_slice(&[0; 32]); // compressor name
            put16(o, 0x0018); // depth
            put16(o, 0xffff); // pre_defined
            put_box(o, b"avcC", |o| {
                // version, profile, compatibility, level, 4-byte lengths, 1 SPS
                o.extend_from_slice(&[1, SPS[1], SPS[2], SPS[3], 0xff, 0xe1]);
                put16(o, SPS.len() as u16);
                o.extend_from_slice(SPS);
                o.push(1);
                put16(o, PPS.len() as u16);
                o.extend_from_slice(PPS);
                o.extend_from_slice(&[0xfd, 0xf8, 0xf8, 0]); // 4:2:0, 8-bit, no SPS extension
            });
        });
        out
    }

    /// An `mp4a` sample entry for AAC-LC, 48 kHz stereo.
    fn mp4a_entry() -> Vec<u8> {
        let mut out = Vec::new();
        put_box(&mut out, b"mp4a", |o| {
            o.extend_from_slice(&[0; 6]);
            put16(o, 1); // data reference index
            o.extend_from_slice(&[0; 8]); // reserved
            put16(o, 2); // channels
            put16(o, 16); // sample size
            put32(o, 0); // pre_defined, reserved
            put32(o, 48_000 << 16);
            put_full_box(o, b"esds", 0, 0, |o| {
                #[rustfmt::skip]
                o.extend_from_slice(&[
                    0x03, 25, 0, 0, 0, // ES_Descriptor, ES_ID 0, no flags
                    0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DecoderConfig: AAC, audio
                    0x05, 2, 0x11, 0x90, // AudioSpecificConfig: LC, 48 kHz, 2 channels
                    0x06, 1, 2, // SLConfig
                ]);
            });
        });
        out
    }

    pub(crate) fn run_start(audio: bool, anchor_wall_ms: i64) -> RunStart {
        RunStart {
            video: VideoParams {
                codec: "avc1.64001e".into(),
                width: 640,
                height: 480,
                timescale: 90_000,
                sample_entry: avc1_entry(),
            },
            audio: audio.then(|| AudioParams {
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                channels: 2,
                frame_ticks: 1024,
                sample_entry: mp4a_entry(),
            }),
            anchor_pts: anchor_wall_ms * 90,
            anchor_wall_ms,
            time_unknown: false,
        }
    }

    /// One fragment to write: video and audio samples and their tfdts.
    struct Frag {
        video_tfdt: u64,
        video: Vec<Sample>,
        audio_tfdt: u64,
        audio: Vec<Sample>,
    }

    /// Three fragments (the last starting without a keyframe); `scale` sizes the samples.
    fn test_frags(scale: u32) -> Vec<Frag> {
        let video = |n: u32, key: bool| -> Vec<Sample> {
            (0..n)
                .map(|i| Sample { duration: 3600 + i % 3 - 1, size: 4 + scale * (1 + i * 7 % 50), key: key && i == 0 })
                .collect()
        };
        let audio = |n: u32| -> Vec<Sample> {
            (0..n).map(|i| Sample { duration: 1024, size: 4 + scale * (i % 13), key: true }).collect()
        };
        let mut frags = Vec::new();
        let (mut vt, mut at) = (0, 0);
        for (nv, key, na) in [(25, true, 47), (30, true, 56), (10, false, 19)] {
            let f = Frag { video_tfdt: vt, video: video(nv, key), audio_tfdt: at, audio: audio(na) };
            vt += f.video.iter().map(|s| u64::from(s.duration)).sum::<u64>();
            at += u64::from(na) * 1024;
            frags.push(f);
        }
        frags
    }

    /// Bytes of one sample: fragment, track, index, then filler.
    fn sample_bytes(frag: usize, track: u32, index: usize, size: u32) -> Vec<u8> {
        let mut b = vec![0xaa; size as usize];
        b[..4].copy_from_slice(&[frag as u8, track as u8, (index >> 8) as u8, index as u8]);
        b
    }

    /// A whole file: init and fragments, with the entries a scan must find and
    /// the audio sample count.
    fn build_file(audio: bool, frags: &[Frag], large_mdat: bool) -> (Vec<u8>, Vec<FragmentEntry>, u64) {
        let mut file = init_segment(&run_start(audio, 1_700_000_000_000));
        let mut entries = Vec::new();
        let mut audio_frames = 0;
        for (n, f) in frags.iter().enumerate() {
            let mut runs =
                vec![TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: f.video_tfdt, samples: &f.video }];
            if audio {
                runs.push(TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: f.audio_tfdt, samples: &f.audio });
                audio_frames += f.audio.len() as u64;
            }
            let offset = file.len() as u64;
            file.extend_from_slice(&fragment_header_with(n as u32 + 1, &runs, large_mdat));
            for run in &runs {
                for (i, s) in run.samples.iter().enumerate() {
                    file.extend_from_slice(&sample_bytes(n, run.track_id, i, s.size));
                }
            }
            entries.push(FragmentEntry {
                offset,
                size: (file.len() as u64 - offset) as u32,
                start_ticks: f.video_tfdt,
                duration_ticks: f.video.iter().map(|s| s.duration).sum(),
                frames: f.video.len() as u32,
                key: f.video[0].key,
            });
        }
        (file, entries, audio_frames)
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("write temp file");
        file
    }

    /// Size of the moof box at the start of `bytes`.
    fn moof_len(bytes: &[u8]) -> usize {
        let h = BoxHeader::parse(bytes, 0, bytes.len() as u64).expect("box header");
        assert_eq!(&h.kind, b"moof");
        h.size as usize
    }

    #[test]
    fn init_segment_is_deterministic_and_scans_back() {
        let with_audio = init_segment(&run_start(true, 1));
        assert_eq!(with_audio, init_segment(&run_start(true, 1_800_000_000_000)));
        assert_ne!(with_audio, init_segment(&run_start(false, 1)));
        assert_eq!(&with_audio[4..8], b"ftyp");
        assert_eq!(&with_audio[8..12], b"iso6");

        for audio in [true, false] {
            let init = init_segment(&run_start(audio, 1));
            let tmp = write_temp(&init);
            let scan = scan_file(tmp.path()).expect("scan");
            assert_eq!(
                scan,
                ScannedFile {
                    init_len: init.len() as u64,
                    video_timescale: 90_000,
                    codec: "avc1.64001e".into(),
                    width: 640,
                    height: 480,
                    has_audio: audio,
                    audio_timescale: audio.then_some(48_000),
                    fragments: vec![],
                    audio_frames: 0,
                    valid_len: init.len() as u64,
                    file_len: init.len() as u64,
                }
            );
        }
    }

    #[test]
    fn codec_strings() {
        assert_eq!(codec_string(&avc1_entry()).as_deref(), Some("avc1.64001e"));
        let mut hvc1 = Vec::new();
        put_box(&mut hvc1, b"hvc1", |o| o.extend_from_slice(&[0; 78]));
        assert_eq!(codec_string(&hvc1).as_deref(), Some("hvc1"));
        // An avc1 without avcC has no codec string.
        let mut bare = Vec::new();
        put_box(&mut bare, b"avc1", |o| o.extend_from_slice(&[0; 78]));
        assert_eq!(codec_string(&bare), None);
        assert_eq!(codec_string(&[0, 0, 0]), None);
    }

    #[test]
    fn fragments_round_trip_through_a_file() {
        for audio in [true, false] {
            let frags = test_frags(10);
            let (bytes, entries, audio_frames) = build_file(audio, &frags, false);
            let tmp = write_temp(&bytes);
            let scan = scan_file(tmp.path()).expect("scan");
            assert_eq!(scan.fragments, entries);
            assert_eq!(scan.fragments[0].start_ticks, 0);
            assert_eq!(scan.fragments[0].duration_ticks, 25 * 3600 - 1); // durations 3599, 3600, 3601, ...
            assert!(!scan.fragments[2].key);
            assert_eq!(scan.audio_frames, audio_frames);
            assert_eq!(scan.has_audio, audio);
            assert_eq!((scan.valid_len, scan.file_len), (bytes.len() as u64, bytes.len() as u64));
            let (_, cut) = recover_file(tmp.path()).expect("recover");
            assert_eq!(cut, 0);

            // Each traf's data offset points at its first sample's bytes inside the mdat.
            for (n, (e, f)) in entries.iter().zip(&frags).enumerate() {
                let frag = &bytes[e.offset as usize..][..e.size as usize];
                let moof = &frag[..moof_len(frag)];
                assert_eq!(&frag[moof.len() + 4..moof.len() + 8], b"mdat");
                let trafs = parse_moof(moof).expect("parse moof");
                assert_eq!(trafs.len(), if audio { 2 } else { 1 });
                for t in &trafs {
                    let (tfdt, samples) =
                        if t.track_id == VIDEO_TRACK_ID { (f.video_tfdt, &f.video) } else { (f.audio_tfdt, &f.audio) };
                    assert_eq!(t.base_decode_time, tfdt);
                    assert_eq!(t.samples as usize, samples.len());
                    assert_eq!(t.duration, samples.iter().map(|s| u64::from(s.duration)).sum::<u64>());
                    assert_eq!(t.data_size, samples.iter().map(|s| u64::from(s.size)).sum::<u64>());
                    assert_eq!(t.first_sync, samples[0].key);
                    let at = t.data_offset.expect("data offset") as usize;
                    assert_eq!(&frag[at..at + 4], &sample_bytes(n, t.track_id, 0, 4)[..]);
                }
            }
        }
    }

    #[test]
    fn empty_fragment_and_largesize_mdat_scan() {
        let frags = test_frags(3);
        let (bytes, entries, audio_frames) = build_file(true, &frags, true);
        assert_eq!(
            &bytes[entries[0].offset as usize..][moof_len(&bytes[entries[0].offset as usize..])..][..8],
            &[0, 0, 0, 1, b'm', b'd', b'a', b't']
        );
        let scan = scan_file(write_temp(&bytes).path()).expect("scan");
        assert_eq!((scan.fragments, scan.audio_frames), (entries, audio_frames));

        let mut file = init_segment(&run_start(false, 0));
        let header = fragment_header(1, &[TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: 0, samples: &[] }]);
        file.extend_from_slice(&header);
        let scan = scan_file(write_temp(&file).path()).expect("scan");
        let empty = FragmentEntry {
            offset: scan.init_len,
            size: header.len() as u32,
            start_ticks: 0,
            duration_ticks: 0,
            frames: 0,
            key: false,
        };
        assert_eq!(scan.fragments, vec![empty]);
        assert_eq!(scan.valid_len, file.len() as u64);
    }

    #[test]
    fn box_header_parsing() {
        let h = |b: &[u8], end| BoxHeader::parse(b, 100, end);
        assert_eq!(
            h(&[0, 0, 0, 16, b'm', b'd', b'a', b't'], 116),
            Some(BoxHeader { kind: *b"mdat", offset: 100, size: 16, header_len: 8 })
        );
        assert_eq!(h(&[0, 0, 0, 16, b'm', b'd', b'a', b't'], 115), None); // past the end
        assert_eq!(h(&[0, 0, 0, 7, b'm', b'd', b'a', b't'], 1000), None); // smaller than its header
        assert_eq!(h(&[0, 0, 0, 16, b'm', b'd', b'a'], 1000), None); // short
        assert_eq!(
            h(&[0, 0, 0, 0, b'm', b'd', b'a', b't'], 150),
            Some(BoxHeader { kind: *b"mdat", offset: 100, size: 50, header_len: 8 })
        );
        let large = [0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 1, 0, 0, 0, 0];
        let hdr = h(&large, u64::MAX).expect("largesize");
        assert_eq!((hdr.size, hdr.header_len, hdr.end()), (1 << 32, 16, 100 + (1 << 32)));
        assert_eq!(h(&large[..12], u64::MAX), None);
        assert_eq!(h(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 15], u64::MAX), None);
    }

    /// Writes `bytes`, recovers it and checks it was cut to `valid` and rescans clean.
    fn check_recovery(case: &str, bytes: &[u8], valid: u64, entries: &[FragmentEntry]) {
        let tmp = write_temp(bytes);
        let (scan, cut) = recover_file(tmp.path()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(scan.valid_len, valid, "{case}");
        assert_eq!(cut, bytes.len() as u64 - valid, "{case}");
        assert_eq!(std::fs::metadata(tmp.path()).expect("metadata").len(), valid, "{case}");
        let rescan = scan_file(tmp.path()).expect("rescan");
        assert_eq!((rescan.valid_len, rescan.file_len), (valid, valid), "{case}");
        let complete: Vec<_> = entries.iter().copied().filter(|e| e.offset + u64::from(e.size) <= valid).collect();
        assert_eq!(rescan.fragments, complete, "{case}");
        assert_eq!(scan.fragments, complete, "{case}");
    }

    #[test]
    fn torn_tails_are_cut_to_the_last_complete_fragment() {
        let (full, entries, _) = build_file(true, &test_frags(5), false);
        let end = |i: usize| entries[i].offset + u64::from(entries[i].size);
        let last = entries[2].offset as usize;
        let last_moof = moof_len(&full[last..]);
        let init_len = entries[0].offset;

        let cut = |len: u64| full[..len as usize].to_vec();
        let appended = |tail: &[u8]| [&full[..], tail].concat();
        let mut cases: Vec<(&str, Vec<u8>, u64)> = vec![
            ("complete file", full.clone(), end(2)),
            ("cut after a complete fragment", cut(end(1)), end(1)),
            ("cut in the middle of a moof", cut(entries[2].offset + 10), end(1)),
            ("cut in the mdat header", cut((last + last_moof + 3) as u64), end(1)),
            ("cut in the middle of an mdat", cut(end(2) - 5), end(1)),
            ("cut in the first moof", cut(init_len + 5), init_len),
            ("garbage appended", appended(&[0x13; 100]), end(2)),
            ("zeros appended", appended(&[0; 8]), end(2)),
            ("moof header with a huge size", appended(&[0x7f, 0xff, 0xff, 0xff, b'm', b'o', b'o', b'f', 0]), end(2)),
            ("moof without its mdat", appended(&full[last..last + last_moof]), end(2)),
        ];

        let mut zero_size_mdat = full.clone();
        zero_size_mdat[last + last_moof..][..4].copy_from_slice(&[0; 4]);
        cases.push(("mdat of size 0 (to the end)", zero_size_mdat, end(1)));

        let mut short_mdat = full[..full.len() - 10].to_vec();
        let mdat_size = u32::from_be_bytes(short_mdat[last + last_moof..][..4].try_into().expect("4 bytes"));
        short_mdat[last + last_moof..][..4].copy_from_slice(&(mdat_size - 10).to_be_bytes());
        cases.push(("samples beyond the end of their mdat", short_mdat, end(1)));

        // The sample count of the first trun of fragment 1 (after trun size, type, flags).
        let mut bad_count = full.clone();
        let frag1 = &full[entries[1].offset as usize..];
        let trun = frag1.windows(4).position(|w| w == b"trun").expect("trun") + entries[1].offset as usize;
        bad_count[trun + 8..][..4].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        cases.push(("moof that does not parse", bad_count, end(0)));

        for (case, bytes, valid) in &cases {
            check_recovery(case, bytes, *valid, &entries);
        }
    }

    #[test]
    fn every_truncation_scans_to_the_last_complete_fragment() {
        let (full, entries, _) = build_file(true, &test_frags(0), false);
        let init_len = entries[0].offset;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cut.mp4");
        for len in 0..=full.len() as u64 {
            std::fs::write(&path, &full[..len as usize]).expect("write");
            match scan_file(&path) {
                Err(Mp4Error::BadInit(_)) => assert!(len < init_len, "len {len}"),
                Err(e) => panic!("len {len}: {e}"),
                Ok(scan) => {
                    let expected = entries.iter().map(|e| e.offset + u64::from(e.size)).filter(|&e| e <= len).max();
                    assert_eq!(scan.valid_len, expected.unwrap_or(init_len), "len {len}");
                    assert_eq!(scan.file_len, len);
                }
            }
        }
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let (full, entries, _) = build_file(true, &test_frags(0), false);
        let init_len = entries[0].offset as usize;
        let moof = &full[init_len..init_len + moof_len(&full[init_len..])];
        let moov_start = BoxHeader::parse(&full, 0, full.len() as u64).expect("ftyp").size as usize;
        let moov = &full[moov_start..init_len];
        for value in [0x00, 0x01, 0x7f, 0xff] {
            for i in 0..moof.len() {
                let mut bad = moof.to_vec();
                bad[i] = value;
                if parse_moof(&bad).is_ok() {
                    assert!(patch_moof(&mut bad, 9, |_, t| t + 1).is_ok());
                }
            }
            for i in 0..moov.len() {
                let mut bad = moov.to_vec();
                bad[i] = value;
                let _ = parse_moov(&bad);
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.mp4");
        for i in (0..full.len()).step_by(3) {
            let mut bad = full.clone();
            bad[i] ^= 0xff;
            std::fs::write(&path, &bad).expect("write");
            if let Ok(scan) = scan_file(&path) {
                assert!(scan.valid_len <= scan.file_len);
                assert!(scan.fragments.iter().all(|e| e.offset + u64::from(e.size) <= scan.valid_len));
            }
        }
    }

    /// Found by the `mp4` fuzz target: with two mfhd boxes, patch_moof wrote the
    /// second while moof_sequence read the first, so an export could carry a
    /// sequence number it never set. A moof has one mfhd; a second is an error.
    #[test]
    fn a_moof_with_two_mfhd_boxes_is_refused_untouched() {
        let f = &test_frags(1)[1];
        let runs = [TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: f.video_tfdt, samples: &f.video }];
        let header = fragment_header(5, &runs);
        let moof = &header[..moof_len(&header)];
        // Insert a second mfhd (sequence 9) right after the first one (bytes 8..24).
        let mut twice = moof[..24].to_vec();
        twice.extend_from_slice(&[0, 0, 0, 16, b'm', b'f', b'h', b'd', 0, 0, 0, 0, 0, 0, 0, 9]);
        twice.extend_from_slice(&moof[24..]);
        let size = u32::try_from(twice.len()).expect("small");
        twice[..4].copy_from_slice(&size.to_be_bytes());
        let err = parse_moof(&twice).expect_err("two mfhd boxes");
        assert!(err.to_string().contains("more than one mfhd"), "{err}");
        let before = twice.clone();
        assert!(patch_moof(&mut twice, 77, |_, t| t).is_err());
        assert_eq!(twice, before, "a refused moof is not written");
        assert_eq!(moof_sequence(moof), Some(5));
    }

    #[test]
    fn patch_moof_changes_sequence_and_tfdt_only() {
        let f = &test_frags(1)[1];
        let runs = |seq_shift: u64| {
            [
                TrackRun {
                    track_id: VIDEO_TRACK_ID,
                    base_decode_time: f.video_tfdt + seq_shift * 90,
                    samples: &f.video,
                },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_decode_time: f.audio_tfdt + seq_shift * 48,
                    samples: &f.audio,
                },
            ]
        };
        let original = fragment_header(2, &runs(0));
        let mut moof = original[..moof_len(&original)].to_vec();
        patch_moof(&mut moof, 77, |track, t| t + if track == VIDEO_TRACK_ID { 90_000 } else { 48_000 }).expect("patch");
        // Byte-identical to the moof written directly with the new values.
        let expected = fragment_header(77, &runs(1000));
        assert_eq!(moof, expected[..moof.len()]);
        let changed = moof.iter().zip(&original).filter(|(a, b)| a != b).count();
        assert!((1..=4 + 8 + 8).contains(&changed), "{changed} bytes changed");
        let trafs = parse_moof(&moof).expect("parse");
        assert_eq!(trafs[0].base_decode_time, f.video_tfdt + 90_000);
        assert_eq!(trafs[1].base_decode_time, f.audio_tfdt + 48_000);

        // Not a moof, or a moof cut short: errors, bytes untouched.
        let mut mdat = original[moof.len()..].to_vec();
        let before = mdat.clone();
        assert!(matches!(patch_moof(&mut mdat, 1, |_, t| t), Err(Mp4Error::BadMoof(_))));
        assert_eq!(mdat, before);
        let mut short = moof[..moof.len() - 1].to_vec();
        assert!(patch_moof(&mut short, 1, |_, t| t).is_err());
        assert!(parse_moof(&[]).is_err());
    }

    #[test]
    fn version_0_tfdt_is_patched_and_checked() {
        let samples = [Sample { duration: 3000, size: 10, key: true }];
        let mut moof = fragment_header(1, &[TrackRun { track_id: 1, base_decode_time: 5, samples: &samples }]);
        moof.truncate(moof_len(&moof));
        // Rewrite the tfdt as version 0 (shrinking it by 4 bytes) and fix up the sizes.
        let tfdt = moof.windows(4).position(|w| w == b"tfdt").expect("tfdt") - 4;
        let v0 = [0, 0, 0, 16, b't', b'f', b'd', b't', 0, 0, 0, 0, 0, 0, 0, 5];
        moof.splice(tfdt..tfdt + 20, v0);
        let traf = moof.windows(4).position(|w| w == b"traf").expect("traf") - 4;
        for at in [0, traf] {
            let size = u32::from_be_bytes(moof[at..at + 4].try_into().expect("4 bytes")) - 4;
            moof[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        assert_eq!(parse_moof(&moof).expect("parse")[0].base_decode_time, 5);
        patch_moof(&mut moof, 2, |_, t| t + 1).expect("patch");
        assert_eq!(parse_moof(&moof).expect("parse")[0].base_decode_time, 6);
        let before = moof.clone();
        assert!(patch_moof(&mut moof, 3, |_, _| 1 << 32).is_err());
        assert_eq!(moof, before);
    }

    #[test]
    fn bad_init_is_an_error() {
        let init = init_segment(&run_start(true, 0));
        let ftyp_len = BoxHeader::parse(&init, 0, init.len() as u64).expect("ftyp").size as usize;
        let no_avcc = init_segment(&RunStart {
            video: VideoParams { sample_entry: codec_free_avc1(), ..run_start(false, 0).video },
            ..run_start(false, 0)
        });
        let audio_only = {
            let mut run = run_start(true, 0);
            // A moov whose only tracks are audio: swap the video entry handler.
            run.video.sample_entry = mp4a_entry();
            let mut bytes = init_segment(&run);
            let vide = bytes.windows(4).position(|w| w == b"vide").expect("vide");
            bytes[vide..vide + 4].copy_from_slice(b"soun");
            bytes
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("garbage", vec![0x42; 300]),
            ("ftyp only", init[..ftyp_len].to_vec()),
            ("truncated moov", init[..init.len() - 1].to_vec()),
            ("truncated ftyp", init[..10].to_vec()),
            ("moov first", init[ftyp_len..].to_vec()),
            ("avc1 without avcC", no_avcc),
            ("no video track", audio_only),
        ];
        for (case, bytes) in cases {
            let tmp = write_temp(&bytes);
            let err = scan_file(tmp.path()).expect_err(case);
            assert!(matches!(err, Mp4Error::BadInit(_)), "{case}: {err}");
            assert!(recover_file(tmp.path()).is_err(), "{case}");
            assert_eq!(std::fs::metadata(tmp.path()).expect("metadata").len(), bytes.len() as u64, "{case}");
        }
        let err = scan_file(Path::new("/nonexistent/oxinvr.mp4")).expect_err("missing file");
        assert!(matches!(err, Mp4Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/oxinvr.mp4"), "{err}");
    }

    #[test]
    fn parse_moof_applies_tfhd_defaults_and_first_sample_flags() {
        // A moof as another muxer might write it: defaults in the tfhd, a trun with
        // first-sample-flags only, then a second trun with per-sample sizes.
        let mut moof = Vec::new();
        put_box(&mut moof, b"moof", |o| {
            put_full_box(o, b"mfhd", 0, 0, |o| put32(o, 7));
            put_box(o, b"traf", |o| {
                let flags = TFHD_DEFAULT_DURATION | TFHD_DEFAULT_SIZE | TFHD_DEFAULT_FLAGS;
                put_full_box(o, b"tfhd", 0, flags, |o| {
                    put32(o, 1); // track id
                    put32(o, 3000); // default duration
                    put32(o, 100); // default size
                    put32(o, SAMPLE_FLAGS_NON_SYNC);
                });
                put_full_box(o, b"tfdt", 0, 0, |o| put32(o, 42));
                put_full_box(o, b"trun", 0, TRUN_FIRST_SAMPLE_FLAGS, |o| {
                    put32(o, 5);
                    put32(o, SAMPLE_FLAGS_SYNC);
                });
                put_full_box(o, b"trun", 0, TRUN_SIZE, |o| {
                    put32(o, 2);
                    put32(o, 10);
                    put32(o, 20);
                });
            });
        });
        let trafs = parse_moof(&moof).expect("parse");
        let expected = TrafSummary {
            track_id: 1,
            base_decode_time: 42,
            duration: 7 * 3000,
            samples: 7,
            first_sync: true,
            data_offset: None, // the base is not the moof
            data_size: 5 * 100 + 10 + 20,
        };
        assert_eq!(trafs, vec![expected]);
    }

    /// An avc1 entry without its avcC.
    fn codec_free_avc1() -> Vec<u8> {
        let mut out = Vec::new();
        put_box(&mut out, b"avc1", |o| o.extend_from_slice(&avc1_entry()[8..8 + 78]));
        out
    }
}
