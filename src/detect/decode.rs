//! H.264 decoding for detection only (recording never decodes): OpenH264,
//! built from source by the `openh264` crate, fed the ring's AVC frames as
//! Annex B; only the luma plane is kept, box-averaged down to a small size.
//!
//! Invariants:
//! - The decoder is given parameter sets (from the run's `avcC`) before the
//!   first frame of a run, and after any error it decodes nothing until the
//!   next keyframe (a P-frame without its references is garbage).
//! - No input panics: box parsing checks every length; OpenH264's own errors
//!   come back as [`DecodeError`].
//! - Output size: `width` columns, rows from the picture's aspect ratio
//!   (at least 8), so masks in normalised coordinates fit any camera.

use std::fmt;

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use super::motion::Luma;
use super::picture::{PictureError, Rgb, Yuv420};

/// Why a frame was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The run is not H.264 (e.g. H.265): detection needs an H.264 (sub) stream.
    NotH264(String),
    /// The sample entry has no usable `avcC`.
    BadParams(&'static str),
    /// A frame's NAL lengths run past its end.
    BadFrame,
    /// OpenH264 refused the data.
    Decoder(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotH264(c) => write!(
                f,
                "codec {c:?} is not H.264: detection needs an H.264 sub stream (sub_url) \
                 or the camera's JPEG snapshot (snapshot_url)"
            ),
            DecodeError::BadParams(why) => write!(f, "bad H.264 parameters: {why}"),
            DecodeError::BadFrame => write!(f, "a frame's NAL unit lengths run past its end"),
            DecodeError::Decoder(e) => write!(f, "OpenH264: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// SPS and PPS of a run, each as one Annex B NAL unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSets {
    pub nals: Vec<Vec<u8>>,
    /// Bytes of each NAL length prefix in frames (1, 2 or 4).
    pub length_size: usize,
}

/// Parses the `avcC` box inside an `avc1`/`avc3` sample entry.
pub fn param_sets(codec: &str, sample_entry: &[u8]) -> Result<ParamSets, DecodeError> {
    if !(codec.starts_with("avc1") || codec.starts_with("avc3")) {
        return Err(DecodeError::NotH264(codec.to_string()));
    }
    // avc1 box: 8-byte header, 78 bytes of VisualSampleEntry, then child boxes.
    let mut at = 8 + 78;
    while at + 8 <= sample_entry.len() {
        let size = be32(sample_entry, at).ok_or(DecodeError::BadParams("truncated box"))? as usize;
        if size < 8 || at + size > sample_entry.len() {
            return Err(DecodeError::BadParams("box size past the sample entry"));
        }
        if &sample_entry[at + 4..at + 8] == b"avcC" {
            return parse_avcc(&sample_entry[at + 8..at + size]);
        }
        at += size;
    }
    Err(DecodeError::BadParams("no avcC box"))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_avcc(b: &[u8]) -> Result<ParamSets, DecodeError> {
    const SHORT: DecodeError = DecodeError::BadParams("avcC is truncated");
    let length_size = usize::from(b.get(4).ok_or(SHORT)? & 3) + 1;
    if length_size == 3 {
        return Err(DecodeError::BadParams("avcC NAL length size 3"));
    }
    let mut nals = Vec::new();
    let mut at = 5;
    for mask in [0x1f, 0xff] {
        let count = b.get(at).ok_or(SHORT)? & mask;
        at += 1;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*b.get(at).ok_or(SHORT)?, *b.get(at + 1).ok_or(SHORT)?]));
            let nal = b.get(at + 2..at + 2 + len).ok_or(SHORT)?;
            nals.push([&[0, 0, 0, 1][..], nal].concat());
            at += 2 + len;
        }
    }
    if nals.is_empty() {
        return Err(DecodeError::BadParams("avcC has no SPS/PPS"));
    }
    Ok(ParamSets { nals, length_size })
}

/// Appends `frame` (length-prefixed NAL units) to `out` as Annex B.
pub fn to_annex_b(frame: &[u8], length_size: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut at = 0;
    while at < frame.len() {
        let head = frame.get(at..at + length_size).ok_or(DecodeError::BadFrame)?;
        let len = head.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        let nal = frame.get(at + length_size..at + length_size + len).ok_or(DecodeError::BadFrame)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        at += length_size + len;
    }
    Ok(())
}

/// One stream's decoder: AVC frames in, small luma pictures out.
pub struct LumaDecoder {
    decoder: Option<Decoder>,
    params: Option<ParamSets>,
    /// Waiting for a keyframe (start, new run, after an error).
    need_key: bool,
    width: u16,
    annex_b: Vec<u8>,
    /// Size of the last decoded picture (for the memory estimate).
    source: (usize, usize),
}

impl LumaDecoder {
    /// A decoder that scales pictures to `width` columns.
    pub fn new(width: u16) -> Self {
        LumaDecoder { decoder: None, params: None, need_key: true, width, annex_b: Vec::new(), source: (0, 0) }
    }

    /// The width pictures are box-averaged to.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Starts a run with these codec parameters (a new OpenH264 instance).
    pub fn start_run(&mut self, codec: &str, sample_entry: &[u8]) -> Result<(), DecodeError> {
        self.decoder = None;
        self.need_key = true;
        self.params = Some(param_sets(codec, sample_entry)?);
        self.decoder = Some(Decoder::new().map_err(|e| DecodeError::Decoder(e.to_string()))?);
        Ok(())
    }

    /// Whether the next frame must be a keyframe to be decoded.
    pub fn needs_keyframe(&self) -> bool {
        self.need_key || self.decoder.is_none()
    }

    /// Tells the decoder a frame was skipped: nothing decodes until the next keyframe.
    pub fn skipped(&mut self) {
        self.need_key = true;
    }

    /// Rough bytes OpenH264 holds for its pictures (its C++ heap is not
    /// counted by the Rust allocator): padded 4:2:0 frames, references + 2.
    pub fn native_bytes_estimate(&self) -> usize {
        let (w, h) = self.source;
        if self.decoder.is_none() || w == 0 {
            return 0;
        }
        (w + 64) * (h + 64) * 3 / 2 * 4
    }

    /// Decodes one frame; `Ok(None)` when it was skipped (waiting for a
    /// keyframe) or OpenH264 has no picture yet. The picture lives until the
    /// next call: take its luma, and colour only when someone needs it.
    pub fn decode(&mut self, frame: &[u8], key: bool) -> Result<Option<Picture<'_>>, DecodeError> {
        let (Some(decoder), Some(params)) = (self.decoder.as_mut(), self.params.as_ref()) else {
            return Ok(None);
        };
        if self.need_key && !key {
            return Ok(None);
        }
        self.annex_b.clear();
        if key {
            // Parameter sets ahead of every keyframe: cheap, and a decoder
            // that lost them (an error) recovers at once.
            params.nals.iter().for_each(|n| self.annex_b.extend_from_slice(n));
        }
        let converted = to_annex_b(frame, params.length_size, &mut self.annex_b);
        if let Err(e) = converted {
            self.need_key = true;
            return Err(e);
        }
        match decoder.decode(&self.annex_b) {
            Ok(Some(yuv)) => {
                self.need_key = false;
                self.source = yuv.dimensions();
                Ok(Some(Picture { yuv, width: self.width }))
            }
            Ok(None) => {
                self.need_key = false;
                Ok(None)
            }
            Err(e) => {
                self.need_key = true;
                Err(DecodeError::Decoder(e.to_string()))
            }
        }
    }
}

/// A decoded picture, borrowed from the decoder until its next frame.
pub struct Picture<'a> {
    yuv: openh264::decoder::DecodedYUV<'a>,
    width: u16,
}

impl Picture<'_> {
    /// The luma plane box-averaged to the decoder's width.
    pub fn luma(&self) -> Luma {
        let (w, h) = self.yuv.dimensions();
        downscale(self.yuv.y(), self.yuv.strides().0, w, h, self.width)
    }

    /// The picture in colour, at most `max_w` wide (an event's snapshot).
    pub fn rgb(&self, max_w: u32) -> Result<Rgb, PictureError> {
        let (width, height) = self.yuv.dimensions();
        let (y, u, v) = (self.yuv.y(), self.yuv.u(), self.yuv.v());
        Yuv420 { y, u, v, strides: self.yuv.strides(), width, height }.to_rgb(max_w)
    }
}

/// Box-average of a `w x h` plane (row stride `stride`) down to `out_w`
/// columns and the matching number of rows (at least 8), integers only.
pub fn downscale(plane: &[u8], stride: usize, w: usize, h: usize, out_w: u16) -> Luma {
    let ow = usize::from(out_w).clamp(8, w.max(8));
    let oh = (h * ow).div_ceil(w.max(1)).max(8);
    let mut data = vec![0u8; ow * oh];
    if w == 0 || h == 0 || plane.len() < stride * (h - 1) + w {
        return Luma { width: ow as u16, height: oh as u16, data };
    }
    let cols: Vec<(usize, usize)> = (0..ow).map(|x| span(x, ow, w)).collect();
    for oy in 0..oh {
        let (y0, y1) = span(oy, oh, h);
        for (ox, &(x0, x1)) in cols.iter().enumerate() {
            let mut sum = 0u32;
            for y in y0..y1 {
                sum += plane[y * stride + x0..y * stride + x1].iter().map(|&p| u32::from(p)).sum::<u32>();
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            data[oy * ow + ox] = (sum / n.max(1)) as u8;
        }
    }
    Luma { width: ow as u16, height: oh as u16, data }
}

/// Source range `[a, b)` (never empty) of output index `i` of `n` over `len` source pixels.
fn span(i: usize, n: usize, len: usize) -> (usize, usize) {
    let a = i * len / n;
    let b = ((i + 1) * len / n).max(a + 1).min(len);
    (a.min(len - 1), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_averages_boxes() {
        // 4x2 plane, stride 5 (one byte of padding per row).
        let plane = [0, 0, 100, 200, 9, 0, 0, 100, 200, 9];
        let l = downscale(&plane, 5, 4, 2, 2);
        assert_eq!((l.width, l.height), (8, 8)); // clamped to the 8-pixel minimum
        let l = downscale(&[10u8; 640 * 360], 640, 640, 360, 160);
        assert_eq!((l.width, l.height, l.data[0]), (160, 90, 10));
    }

    #[test]
    fn annex_b_conversion_checks_lengths() {
        let mut out = Vec::new();
        to_annex_b(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41], 4, &mut out).expect("ok");
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x41]);
        assert_eq!(to_annex_b(&[0, 0, 0, 9, 0x65], 4, &mut out), Err(DecodeError::BadFrame));
        assert_eq!(to_annex_b(&[0, 0], 4, &mut out), Err(DecodeError::BadFrame));
    }

    #[test]
    fn param_sets_refuse_hevc_and_garbage() {
        assert!(matches!(param_sets("hvc1.1.6.L93.B0", &[]), Err(DecodeError::NotH264(_))));
        assert!(matches!(param_sets("avc1.64001f", &[0; 40]), Err(DecodeError::BadParams(_))));
        let mut entry = vec![0u8; 86];
        entry.extend_from_slice(&[0, 0, 0, 20, b'a', b'v', b'c', b'C', 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 1, 2]);
        entry.extend_from_slice(&[1]); // one PPS, but its length is missing
        assert!(matches!(param_sets("avc1.64001f", &entry), Err(DecodeError::BadParams(_))));
    }
}
