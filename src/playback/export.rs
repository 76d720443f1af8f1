//! `export.mp4`: one fragmented MP4 made of stored fragments, never copied.
//!
//! The export is a *virtual file*: a list of parts (a byte range of a stored
//! file, optionally a moof to patch). [`plan`] builds it from the segments'
//! fragment indexes without reading media; [`PartsReader`] serves any byte
//! range of it, patching a moof in memory when a part starts with one.
//! [`shifted_file`] reuses both for one stored file served whole with its
//! decode times moved (`/api/recordings/{id}/file?shift=`, what HLS lists).
//!
//! Invariants:
//! - Patching rewrites fields in place (sequence number, tfdt), so the
//!   virtual length is the sum of the part lengths, known before any byte is
//!   read (Content-Length and Range work on it).
//! - Every segment after the first has byte-identical init bytes; the plan
//!   stops at the first one that differs (a codec change) and says where.
//! - Sequence numbers count from 1 across the whole export; video decode
//!   times are continuous across segments (gaps in wall time are cut out);
//!   audio is shifted by the same wall-clock amount as the video of its
//!   segment, so A/V sync within a segment is kept.
//! - A shifted file has the stored file's length and byte offsets; only the
//!   tfdt values of its indexed fragments differ (sequence numbers kept).

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use crate::recording::media::FragmentEntry;

use super::select::{select, ticks_to_ms};
use super::source::{LocalFiles, MediaSource, MediaStore};

/// A moof larger than this is refused rather than loaded into memory.
const MAX_MOOF: u64 = 4 << 20;

/// One stored segment offered to the planner.
#[derive(Clone, Debug)]
pub struct ExportSegment {
    pub file: PathBuf,
    pub start_ms: i64,
    pub video_timescale: u32,
    /// Timescale of track 2, if the segment has audio.
    pub audio_timescale: Option<u32>,
    /// Bytes `[0, init_len)` of the file.
    pub init: Vec<u8>,
    pub fragments: Vec<FragmentEntry>,
}

/// How to rewrite one moof: new sequence number (`None` keeps the stored
/// one), and shifts (in each track's ticks) added to the tfdt of video
/// (track 1) and audio (track 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoofPatch {
    pub sequence: Option<u32>,
    pub video_shift: i64,
    pub audio_shift: i64,
}

impl MoofPatch {
    /// The new decode time of a track's fragment (never below 0).
    pub fn new_tfdt(&self, track_id: u32, old: u64) -> u64 {
        let shift = match track_id {
            1 => self.video_shift,
            2 => self.audio_shift,
            _ => 0,
        };
        let v = i128::from(old) + i128::from(shift);
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }
}

/// A video shift converted to the audio timescale (the same wall-clock
/// amount, truncated toward zero); 0 without audio.
pub fn audio_shift(video_shift: i128, video_timescale: u32, audio_timescale: Option<u32>) -> i128 {
    audio_timescale.map_or(0, |ats| video_shift * i128::from(ats) / i128::from(video_timescale.max(1)))
}

/// `len` bytes of `files[file]` from `offset`; a moof+mdat when `patch` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub file: usize,
    pub offset: u64,
    pub len: u64,
    pub patch: Option<MoofPatch>,
}

/// The virtual file of an export.
#[derive(Clone, Debug)]
pub struct Plan {
    pub files: Vec<PathBuf>,
    pub parts: Vec<Part>,
    pub len: u64,
    /// Wall-clock ms of the first exported fragment.
    pub first_ms: i64,
    /// Set when a codec change stopped the export: where the new codec starts.
    pub truncated_at_ms: Option<i64>,
}

/// Plans the export of `[start_ms, end_ms)` from segments in time order.
/// `None` when no fragment of any segment falls in the span.
pub fn plan(segs: &[ExportSegment], start_ms: i64, end_ms: i64) -> Option<Plan> {
    let mut plan = Plan { files: Vec::new(), parts: Vec::new(), len: 0, first_ms: 0, truncated_at_ms: None };
    let mut first_init: Option<&[u8]> = None;
    let mut video_ticks: u64 = 0;
    let mut sequence: u32 = 1;
    for seg in segs {
        let Some(sel) = select(seg.start_ms, seg.video_timescale, &seg.fragments, start_ms, end_ms) else {
            continue;
        };
        let frags = &seg.fragments[sel];
        let seg_first_ms = ticks_to_ms(seg.start_ms, seg.video_timescale, frags[0].start_ticks);
        match first_init {
            None => {
                first_init = Some(&seg.init);
                plan.first_ms = seg_first_ms;
                plan.files.push(seg.file.clone());
                plan.push(Part { file: 0, offset: 0, len: seg.init.len() as u64, patch: None });
            }
            Some(init) if init != seg.init.as_slice() => {
                plan.truncated_at_ms = Some(seg_first_ms);
                break;
            }
            Some(_) => plan.files.push(seg.file.clone()),
        }
        let video_shift = i128::from(video_ticks) - i128::from(frags[0].start_ticks);
        let audio_shift = audio_shift(video_shift, seg.video_timescale, seg.audio_timescale);
        let file = plan.files.len() - 1;
        for f in frags {
            let patch = MoofPatch {
                sequence: Some(sequence),
                video_shift: clamp(video_shift),
                audio_shift: clamp(audio_shift),
            };
            plan.push(Part { file, offset: f.offset, len: u64::from(f.size), patch: Some(patch) });
            sequence = sequence.wrapping_add(1).max(1);
            video_ticks = video_ticks.saturating_add(u64::from(f.duration_ticks));
        }
    }
    first_init.is_some().then_some(plan)
}

/// One stored file of `file_len` bytes as a virtual file whose indexed
/// fragments get their tfdt moved by `patch` (sequence numbers should be
/// kept: `patch.sequence == None`): the init and any bytes the index does not
/// cover (there should be none) are served unpatched, so the length and every
/// byte offset stay those of the file. Returns the parts (all of file 0) and
/// the fragments that are patched, in offset order; a fragment that overlaps
/// the one before or runs past `file_len` is served unpatched.
pub fn shifted_file(fragments: &[FragmentEntry], file_len: u64, patch: MoofPatch) -> (Vec<Part>, Vec<FragmentEntry>) {
    let mut sorted = fragments.to_vec();
    sorted.sort_by_key(|f| f.offset);
    let mut parts = Vec::with_capacity(sorted.len() + 2);
    let mut patched = Vec::with_capacity(sorted.len());
    let mut pos = 0u64;
    let push = |parts: &mut Vec<Part>, offset: u64, len: u64, patch: Option<MoofPatch>| {
        if len > 0 {
            parts.push(Part { file: 0, offset, len, patch });
        }
    };
    for f in sorted {
        let end = f.offset.saturating_add(u64::from(f.size));
        if f.size == 0 || f.offset < pos || end > file_len {
            continue;
        }
        push(&mut parts, pos, f.offset - pos, None);
        push(&mut parts, f.offset, u64::from(f.size), Some(patch));
        patched.push(f);
        pos = end;
    }
    push(&mut parts, pos, file_len - pos, None);
    (parts, patched)
}

/// The first of `fragments` (as [`shifted_file`] returned them) that overlaps
/// bytes `[start, start + len)` and whose video tfdt `video_shift` would move
/// below 0.
pub fn first_negative(fragments: &[FragmentEntry], video_shift: i64, start: u64, len: u64) -> Option<&FragmentEntry> {
    let end = start.saturating_add(len);
    fragments.iter().find(|f| {
        let overlaps = f.offset < end && f.offset.saturating_add(u64::from(f.size)) > start;
        overlaps && i128::from(f.start_ticks) + i128::from(video_shift) < 0
    })
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl Plan {
    fn push(&mut self, part: Part) {
        if part.len > 0 {
            self.len += part.len;
            self.parts.push(part);
        }
    }
}

/// Rewrites a moof in place as `MoofPatch` says.
pub type Patcher = fn(&mut [u8], &MoofPatch) -> io::Result<()>;

/// The real patcher: `crate::recording::mp4::patch_moof`.
pub fn patch_moof(moof: &mut [u8], p: &MoofPatch) -> io::Result<()> {
    let sequence = match p.sequence {
        Some(s) => s,
        None => crate::recording::mp4::moof_sequence(moof)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cannot patch moof: no mfhd sequence number"))?,
    };
    crate::recording::mp4::patch_moof(moof, sequence, |track, old| p.new_tfdt(track, old))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("cannot patch moof: {e}")))
}

/// Serves `[start, start + len)` of a plan's virtual file.
pub struct PartsReader {
    files: Vec<PathBuf>,
    parts: Vec<Part>,
    /// Virtual offset of each part.
    starts: Vec<u64>,
    pos: u64,
    end: u64,
    store: Arc<dyn MediaStore>,
    open: Option<(usize, Box<dyn MediaSource>)>,
    /// The patched moof of one part.
    moof: Option<(usize, Vec<u8>)>,
    patcher: Patcher,
}

impl PartsReader {
    /// A reader of local files (`LocalFiles`).
    pub fn new(files: Vec<PathBuf>, parts: Vec<Part>, patcher: Patcher, start: u64, len: u64) -> Self {
        Self::with_store(Arc::new(LocalFiles), files, parts, patcher, start, len)
    }

    /// A reader of the files of `store`.
    pub fn with_store(
        store: Arc<dyn MediaStore>,
        files: Vec<PathBuf>,
        parts: Vec<Part>,
        patcher: Patcher,
        start: u64,
        len: u64,
    ) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for p in &parts {
            starts.push(total);
            total += p.len;
        }
        let pos = start.min(total);
        let end = start.saturating_add(len).min(total);
        PartsReader { files, parts, starts, pos, end, store, open: None, moof: None, patcher }
    }

    /// How many bytes of file `index` the parts read: what a source is opened for.
    fn file_len(&self, index: usize) -> u64 {
        self.parts.iter().filter(|p| p.file == index).map(|p| p.offset.saturating_add(p.len)).max().unwrap_or(0)
    }

    fn source(&mut self, index: usize) -> io::Result<&mut Box<dyn MediaSource>> {
        if self.open.as_ref().map(|(i, _)| *i) != Some(index) {
            let path = self.files.get(index).ok_or_else(|| io::Error::other("part names no file"))?;
            let src = self.store.open(path, self.file_len(index))?;
            self.open = Some((index, src));
        }
        match &mut self.open {
            Some((_, f)) => Ok(f),
            None => Err(io::Error::other("file not open")),
        }
    }

    fn read_file(&mut self, index: usize, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source(index)?.read_at(buf, offset)?;
        if n == 0 && !buf.is_empty() {
            let name = self.files.get(index).map(|p| p.display().to_string()).unwrap_or_default();
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name} is shorter than its index")));
        }
        Ok(n)
    }

    fn read_exact_at(&mut self, index: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            done += self.read_file(index, offset + done as u64, &mut buf[done..])?;
        }
        Ok(())
    }

    /// Loads and patches the moof at the start of part `i`.
    fn load_moof(&mut self, i: usize) -> io::Result<Vec<u8>> {
        let part = self.parts[i].clone();
        let mut head = vec![0u8; 16.min(part.len) as usize];
        self.read_exact_at(part.file, part.offset, &mut head)?;
        let size = crate::recording::mp4::moof_size(&head)
            .filter(|s| *s <= part.len && *s <= MAX_MOOF)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no moof at offset {}", part.offset)))?;
        let mut moof = vec![0u8; size as usize];
        self.read_exact_at(part.file, part.offset, &mut moof)?;
        if let Some(p) = &part.patch {
            (self.patcher)(&mut moof, p)?;
        }
        Ok(moof)
    }

    fn read_patched(&mut self, i: usize, within: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.moof.as_ref().map(|(j, _)| *j) != Some(i) {
            let m = self.load_moof(i)?;
            self.moof = Some((i, m));
        }
        let moof_len = self.moof.as_ref().map_or(0, |(_, m)| m.len() as u64);
        if within < moof_len {
            let m = self.moof.as_ref().map(|(_, m)| m.as_slice()).unwrap_or_default();
            let src = &m[within as usize..];
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            return Ok(n);
        }
        let (file, offset) = (self.parts[i].file, self.parts[i].offset);
        self.read_file(file, offset + within, buf)
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let i = self.starts.partition_point(|s| *s <= self.pos).saturating_sub(1);
        let Some(part) = self.parts.get(i) else { return Ok(0) };
        let within = self.pos - self.starts[i];
        let want = (buf.len() as u64).min(self.end - self.pos).min(part.len - within) as usize;
        let (file, offset, patched) = (part.file, part.offset, part.patch.is_some());
        let n = if patched {
            self.read_patched(i, within, &mut buf[..want])?
        } else {
            self.read_file(file, offset + within, &mut buf[..want])?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::playback::select::tests::frags;
    use crate::recording::mp4::tests::{bare_init as init, bx};

    fn seg(file: &str, start_ms: i64, init: Vec<u8>, fragments: Vec<FragmentEntry>) -> ExportSegment {
        ExportSegment {
            file: PathBuf::from(file),
            start_ms,
            video_timescale: 90_000,
            audio_timescale: Some(16_000),
            init,
            fragments,
        }
    }

    #[test]
    fn plan_starts_at_a_keyframe_and_renumbers() {
        let i = init(None);
        let a = seg("a", 0, i.clone(), frags(10, |k| k % 5 == 0, 500, 100));
        let b = seg("b", 20_000, i.clone(), frags(3, |k| k == 0, 500, 50));
        let p = plan(&[a, b], 7_500, 21_500).expect("plan");
        // Init, then fragments 5..10 of a (moved back from 7 to key 5), then 0..2 of b.
        assert_eq!(p.files, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(p.parts[0], Part { file: 0, offset: 0, len: i.len() as u64, patch: None });
        assert_eq!(p.parts.len(), 1 + 5 + 2);
        assert_eq!(p.parts[1].offset, 500 + 5 * 100);
        assert_eq!(p.first_ms, 5000);
        let seqs: Vec<u32> = p.parts[1..].iter().filter_map(|x| x.patch.and_then(|q| q.sequence)).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
        // Video: a's fragment 5 (tfdt 450000) becomes 0; b's first continues at 5 s.
        let pa = p.parts[1].patch.expect("patch");
        assert_eq!(pa.new_tfdt(1, 5 * 90_000), 0);
        assert_eq!(pa.new_tfdt(1, 6 * 90_000), 90_000);
        let pb = p.parts[6].patch.expect("patch");
        assert_eq!(p.parts[6].file, 1);
        assert_eq!(pb.new_tfdt(1, 0), 5 * 90_000);
        // Audio moves by the same wall-clock amount, in its own timescale.
        assert_eq!(pa.new_tfdt(2, 5 * 16_000 + 7), 7);
        assert_eq!(pb.new_tfdt(2, 100), 5 * 16_000 + 100);
        assert_eq!(pa.new_tfdt(2, 3), 0, "clamped at 0");
        assert_eq!(pa.new_tfdt(3, 42), 42, "other tracks untouched");
        assert_eq!(p.len, p.parts.iter().map(|x| x.len).sum::<u64>());
        assert_eq!(p.len, i.len() as u64 + 500 + 100);
        assert_eq!(p.truncated_at_ms, None);
    }

    #[test]
    fn plan_stops_at_a_codec_change() {
        let a = seg("a", 0, init(None), frags(2, |_| true, 100, 10));
        let b = seg("b", 2_000, init(Some(8000)), frags(2, |_| true, 100, 10));
        let c = seg("c", 4_000, init(None), frags(2, |_| true, 100, 10));
        let p = plan(&[a, b, c], 0, 10_000).expect("plan");
        assert_eq!(p.truncated_at_ms, Some(2_000));
        assert_eq!(p.files, vec![PathBuf::from("a")]);
        assert_eq!(p.parts.len(), 3);
    }

    #[test]
    fn plan_skips_segments_outside_and_is_none_when_empty() {
        let a = seg("a", 0, init(None), frags(2, |_| true, 100, 10));
        let b = seg("b", 10_000, init(Some(8000)), frags(2, |_| true, 100, 10));
        assert!(plan(&[a.clone(), b.clone()], 3_000, 9_000).is_none());
        // b's different init does not matter when a contributes nothing.
        let p = plan(&[a, b], 10_500, 11_500).expect("plan");
        assert_eq!(p.files, vec![PathBuf::from("b")]);
        assert_eq!(p.truncated_at_ms, None);
        assert_eq!(p.first_ms, 10_000);
    }

    #[test]
    fn shifted_file_patches_indexed_fragments_only() {
        let f = frags(3, |_| true, 100, 10);
        let patch = MoofPatch { sequence: None, video_shift: -90_000, audio_shift: -16_000 };
        let (parts, patched) = shifted_file(&f, 140, patch);
        let part = |offset, len, patch| Part { file: 0, offset, len, patch };
        assert_eq!(
            parts,
            vec![
                part(0, 100, None),
                part(100, 10, Some(patch)),
                part(110, 10, Some(patch)),
                part(120, 10, Some(patch)),
                part(130, 10, None),
            ],
            "init, the fragments, then the unindexed tail unpatched"
        );
        assert_eq!(patched, f);
        // Fragment 0 would go below 0; only ranges touching it are refused.
        assert_eq!(first_negative(&patched, -90_000, 0, 140), Some(&f[0]));
        assert_eq!(first_negative(&patched, -90_000, 0, 100), None, "the init alone");
        assert_eq!(first_negative(&patched, -90_000, 109, 1), Some(&f[0]));
        assert_eq!(first_negative(&patched, -90_000, 110, 30), None);
        assert_eq!(first_negative(&patched, -90_001, 110, 10), Some(&f[1]));
        // Fragments past the file's length or overlapping are served as they are.
        let mut g = f.clone();
        g[1].offset = 105;
        let (parts, patched) = shifted_file(&g, 125, patch);
        assert_eq!(parts, vec![part(0, 100, None), part(100, 10, Some(patch)), part(110, 15, None)]);
        assert_eq!(patched, vec![f[0]]);
        assert_eq!(audio_shift(-90_000, 90_000, Some(16_000)), -16_000);
        assert_eq!(audio_shift(-90_000, 90_000, None), 0);
    }

    /// Test patcher: writes the sequence number over the moof's last 4 bytes.
    fn stamp(moof: &mut [u8], p: &MoofPatch) -> io::Result<()> {
        let n = moof.len();
        moof[n - 4..].copy_from_slice(&p.sequence.unwrap_or(0).to_be_bytes());
        Ok(())
    }

    fn fragment(moof_payload: usize, mdat_payload: usize, fill: u8) -> Vec<u8> {
        [bx(b"moof", &vec![fill; moof_payload]), bx(b"mdat", &vec![fill.wrapping_add(1); mdat_payload])].concat()
    }

    #[test]
    fn reader_serves_any_range_of_the_virtual_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"));
        let init_bytes = vec![7u8; 30];
        let fa = [init_bytes.clone(), fragment(20, 40, 1), fragment(12, 5, 3)].concat();
        let fb = [init_bytes.clone(), fragment(16, 9, 5), fragment(8, 33, 9)].concat();
        std::fs::write(&pa, &fa).expect("write");
        std::fs::write(&pb, &fb).expect("write");
        let p = |sequence| Some(MoofPatch { sequence: Some(sequence), video_shift: 0, audio_shift: 0 });
        let parts = vec![
            Part { file: 0, offset: 0, len: 30, patch: None },
            Part { file: 0, offset: 30 + 76, len: 33, patch: p(1) },
            Part { file: 1, offset: 30, len: 41, patch: p(2) },
            Part { file: 1, offset: 71, len: 57, patch: p(3) },
        ];
        // The expected whole: the same bytes, each moof's last 4 bytes stamped.
        let mut whole = Vec::new();
        for part in &parts {
            let src = if part.file == 0 { &fa } else { &fb };
            let mut bytes = src[part.offset as usize..(part.offset + part.len) as usize].to_vec();
            if let Some(q) = part.patch {
                let moof_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                bytes[moof_len - 4..moof_len].copy_from_slice(&q.sequence.unwrap_or(0).to_be_bytes());
            }
            whole.extend(bytes);
        }
        let total = whole.len() as u64;
        let files = vec![pa, pb];
        for start in 0..total {
            for len in [1, 2, 3, 7, 13, 40, total] {
                for chunk in [1usize, 5, 64] {
                    let mut r = PartsReader::new(files.clone(), parts.clone(), stamp, start, len);
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; chunk];
                    loop {
                        let n = r.read(&mut buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let end = (start + len).min(total) as usize;
                    assert_eq!(got, &whole[start as usize..end], "start {start} len {len} chunk {chunk}");
                }
            }
        }
    }

    /// Writes a real segment file (crate::recording::mp4) of `n` one-second fragments with
    /// 30 video frames each (keyframes where `key(i)`) and 47 AAC frames whose
    /// tfdt starts 10 ms after the video; returns its fragment index.
    pub(crate) fn write_segment(
        path: &std::path::Path,
        n: usize,
        key: impl Fn(usize) -> bool,
    ) -> (Vec<u8>, Vec<FragmentEntry>) {
        use crate::recording::mp4::{fragment_header, init_segment, Sample, TrackRun};
        let init = init_segment(&crate::recording::mp4::tests::run_start(true, 0));
        let mut file = init.clone();
        let mut index = Vec::new();
        for i in 0..n {
            let video: Vec<Sample> =
                (0..30).map(|j| Sample { duration: 3000, size: 10 + j, key: j == 0 && key(i) }).collect();
            let audio: Vec<Sample> = (0..47).map(|_| Sample { duration: 1024, size: 6, key: true }).collect();
            let runs = [
                TrackRun { track_id: 1, base_decode_time: i as u64 * 90_000, samples: &video },
                TrackRun { track_id: 2, base_decode_time: 480 + i as u64 * 47 * 1024, samples: &audio },
            ];
            let header = fragment_header(i as u32 + 1, &runs);
            let payload: u32 = video.iter().chain(&audio).map(|s| s.size).sum();
            index.push(FragmentEntry {
                offset: file.len() as u64,
                size: header.len() as u32 + payload,
                start_ticks: i as u64 * 90_000,
                duration_ticks: 90_000,
                frames: 30,
                key: key(i),
            });
            file.extend_from_slice(&header);
            file.extend(std::iter::repeat_n(i as u8, payload as usize));
        }
        std::fs::write(path, &file).expect("write segment");
        (init, index)
    }

    #[test]
    fn exported_file_is_one_continuous_fragmented_mp4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb, out) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"), dir.path().join("out.mp4"));
        let (init_a, frags_a) = write_segment(&pa, 4, |i| i % 2 == 0);
        let (init_b, frags_b) = write_segment(&pb, 2, |i| i == 0);
        let audio_timescale = crate::recording::mp4::timescale_of(&init_a, 2);
        assert_eq!(audio_timescale, Some(48_000));
        let seg = |file: &PathBuf, start_ms, init: &Vec<u8>, fragments: &Vec<FragmentEntry>| ExportSegment {
            file: file.clone(),
            start_ms,
            video_timescale: 90_000,
            audio_timescale,
            init: init.clone(),
            fragments: fragments.clone(),
        };
        let segs = [seg(&pa, 1_000_000, &init_a, &frags_a), seg(&pb, 1_010_000, &init_b, &frags_b)];
        let p = plan(&segs, 1_002_500, 1_011_500).expect("plan");
        let mut bytes = Vec::new();
        PartsReader::new(p.files, p.parts, patch_moof, 0, p.len).read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes.len() as u64, p.len);
        std::fs::write(&out, &bytes).expect("write");
        let scan = crate::recording::mp4::scan_file(&out).expect("scan");
        assert_eq!(scan.valid_len, scan.file_len);
        let tfdts: Vec<u64> = scan.fragments.iter().map(|f| f.start_ticks).collect();
        assert_eq!(tfdts, vec![0, 90_000, 180_000, 270_000]);
        assert!(scan.fragments[0].key && scan.fragments[2].key);
        // Sequence numbers from 1, audio moved with its video.
        let mut seqs = Vec::new();
        let mut audio = Vec::new();
        for f in &scan.fragments {
            let at = f.offset as usize;
            let moof_len = crate::recording::mp4::moof_size(&bytes[at..at + 16]).expect("moof") as usize;
            let moof = &bytes[at..at + moof_len];
            seqs.push(u32::from_be_bytes([moof[20], moof[21], moof[22], moof[23]]));
            let trafs = crate::recording::mp4::parse_moof(moof).expect("parse");
            audio.extend(trafs.iter().filter(|t| t.track_id == 2).map(|t| t.base_decode_time));
        }
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(
            audio,
            vec![480 + 2 * 47 * 1024 - 96_000, 480 + 3 * 47 * 1024 - 96_000, 480 + 96_000, 480 + 47 * 1024 + 96_000]
        );
    }

    #[test]
    fn reader_reports_short_files_and_bad_moofs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.mp4");
        std::fs::write(&f, fragment(8, 8, 1)).expect("write");
        let patch = Some(MoofPatch { sequence: Some(1), video_shift: 0, audio_shift: 0 });
        let short = vec![Part { file: 0, offset: 0, len: 100, patch: None }];
        let mut r = PartsReader::new(vec![f.clone()], short, stamp, 0, 100);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let not_moof = vec![Part { file: 0, offset: 16, len: 16, patch }];
        let mut r = PartsReader::new(vec![f.clone()], not_moof, stamp, 0, 16);
        assert_eq!(r.read(&mut [0; 4]).map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
        let missing = vec![Part { file: 0, offset: 0, len: 4, patch: None }];
        let mut r = PartsReader::new(vec![dir.path().join("gone")], missing, stamp, 0, 4);
        assert!(r.read(&mut [0; 4]).is_err());
    }
}
