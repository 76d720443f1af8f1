//! Colour pictures for event snapshots, thumbnails and object detection:
//! a decoded 4:2:0 frame scaled down to RGB, and JPEG in and out (pure Rust:
//! `jpeg-encoder`, `jpeg-decoder`).
//!
//! Invariants:
//! - Integer arithmetic only (BT.601 limited range, box averages): cheap on
//!   the soft-float MIPS box.
//! - Nothing here panics on input: plane sizes are checked before reading,
//!   JPEG errors and oversized pictures come back as [`PictureError`].
//! - A picture is only made when someone needs it (an event starts, a
//!   detector asks): recording never decodes and detection keeps luma only.

use std::fmt;

/// An 8-bit RGB picture, rows top to bottom, `width * height * 3` bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Why a picture could not be made, read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PictureError {
    /// The planes are smaller than the size they claim.
    Planes,
    /// Not a JPEG this decoder reads (the decoder's words).
    Jpeg(String),
    /// More pixels than allowed (`width x height`).
    TooLarge(u32, u32),
    /// The encoder refused (the encoder's words).
    Encode(String),
}

impl fmt::Display for PictureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PictureError::Planes => write!(f, "the picture's planes are shorter than its size"),
            PictureError::Jpeg(e) => write!(f, "not a readable JPEG: {e}"),
            PictureError::TooLarge(w, h) => write!(f, "the picture is too large ({w}x{h})"),
            PictureError::Encode(e) => write!(f, "JPEG encoding failed: {e}"),
        }
    }
}

impl std::error::Error for PictureError {}

/// One 4:2:0 picture as the decoder hands it out (planes with their strides).
pub struct Yuv420<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    /// Row strides of Y, U and V.
    pub strides: (usize, usize, usize),
    pub width: usize,
    pub height: usize,
}

/// Output size for a `w x h` source at most `max_w` wide (never upscaled, even sides).
fn fit(w: usize, h: usize, max_w: u32) -> (usize, usize) {
    let ow = w.min(max_w.max(2) as usize).max(2) & !1;
    let oh = ((h * ow).div_ceil(w.max(1))).max(2) & !1;
    (ow, oh)
}

/// Source range `[a, b)` (never empty) of output index `i` of `n` over `len`.
fn span(i: usize, n: usize, len: usize) -> (usize, usize) {
    let a = (i * len / n).min(len.saturating_sub(1));
    let b = ((i + 1) * len / n).max(a + 1).min(len);
    (a, b)
}

fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited-range YCbCr to RGB, integers only.
fn to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
    [clamp8((c + 409 * e + 128) >> 8), clamp8((c - 100 * d - 208 * e + 128) >> 8), clamp8((c + 516 * d + 128) >> 8)]
}

impl Yuv420<'_> {
    fn fits(&self) -> bool {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (sy, su, sv) = self.strides;
        w > 0
            && h > 0
            && sy >= w
            && su >= cw
            && sv >= cw
            && self.y.len() >= sy * (h - 1) + w
            && self.u.len() >= su * (ch - 1) + cw
            && self.v.len() >= sv * (ch - 1) + cw
    }

    /// The picture at most `max_w` wide in RGB: luma box-averaged, chroma
    /// sampled at each output pixel's centre.
    pub fn to_rgb(&self, max_w: u32) -> Result<Rgb, PictureError> {
        if !self.fits() {
            return Err(PictureError::Planes);
        }
        let (w, h) = (self.width, self.height);
        let (ow, oh) = fit(w, h, max_w);
        let (sy, su, sv) = self.strides;
        let cols: Vec<(usize, usize)> = (0..ow).map(|x| span(x, ow, w)).collect();
        let mut data = Vec::with_capacity(ow * oh * 3);
        for oy in 0..oh {
            let (y0, y1) = span(oy, oh, h);
            let cy = (y0 + y1) / 4;
            for &(x0, x1) in &cols {
                let mut sum = 0u32;
                for row in y0..y1 {
                    sum += self.y[row * sy + x0..row * sy + x1].iter().map(|&p| u32::from(p)).sum::<u32>();
                }
                let luma = (sum / ((y1 - y0) * (x1 - x0)) as u32) as u8;
                let cx = (x0 + x1) / 4;
                data.extend_from_slice(&to_rgb(luma, self.u[cy * su + cx], self.v[cy * sv + cx]));
            }
        }
        Ok(Rgb { width: ow as u32, height: oh as u32, data })
    }
}

impl Rgb {
    /// This picture at most `max_w` wide (box averages; a copy if it is narrower).
    pub fn scaled(&self, max_w: u32) -> Rgb {
        let (w, h) = (self.width as usize, self.height as usize);
        if w <= max_w as usize || h == 0 || self.data.len() < w * h * 3 {
            return self.clone();
        }
        let (ow, oh) = fit(w, h, max_w);
        let cols: Vec<(usize, usize)> = (0..ow).map(|x| span(x, ow, w)).collect();
        let mut data = Vec::with_capacity(ow * oh * 3);
        for oy in 0..oh {
            let (y0, y1) = span(oy, oh, h);
            for &(x0, x1) in &cols {
                let mut sum = [0u32; 3];
                for row in y0..y1 {
                    for px in self.data[(row * w + x0) * 3..(row * w + x1) * 3].chunks_exact(3) {
                        (0..3).for_each(|c| sum[c] += u32::from(px[c]));
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                data.extend(sum.iter().map(|s| (s / n) as u8));
            }
        }
        Rgb { width: ow as u32, height: oh as u32, data }
    }

    /// Baseline JPEG at `quality` (1..=100).
    pub fn to_jpeg(&self, quality: u8) -> Result<Vec<u8>, PictureError> {
        let (w, h) = (u16::try_from(self.width), u16::try_from(self.height));
        let (Ok(w), Ok(h)) = (w, h) else { return Err(PictureError::TooLarge(self.width, self.height)) };
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
            .encode(&self.data, w, h, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| PictureError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Reads a JPEG of at most `max_pixels` pixels (checked before decoding).
    pub fn from_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Rgb, PictureError> {
        Rgb::from_jpeg_scaled(bytes, max_pixels, None)
    }

    /// Like [`Rgb::from_jpeg`], but decoded straight at 1/2, 1/4 or 1/8 of
    /// its size when that is still at least `min_width` wide (the IDCT
    /// scales: a 1080p camera snapshot costs a quarter of the memory or less).
    pub fn from_jpeg_scaled(bytes: &[u8], max_pixels: u64, min_width: Option<u16>) -> Result<Rgb, PictureError> {
        let mut d = jpeg_decoder::Decoder::new(bytes);
        d.read_info().map_err(|e| PictureError::Jpeg(e.to_string()))?;
        let info = d.info().ok_or_else(|| PictureError::Jpeg("no frame header".into()))?;
        let (w, h) = (u32::from(info.width), u32::from(info.height));
        if u64::from(w) * u64::from(h) > max_pixels || w == 0 || h == 0 {
            return Err(PictureError::TooLarge(w, h));
        }
        let (w, h) = match min_width {
            Some(min) if u32::from(min) < w => {
                // At least `min` wide keeps the height at least in proportion.
                let min_h = u16::try_from(u32::from(min) * h / w).unwrap_or(u16::MAX).max(1);
                let (sw, sh) = d.scale(min, min_h).map_err(|e| PictureError::Jpeg(e.to_string()))?;
                (u32::from(sw), u32::from(sh))
            }
            _ => (w, h),
        };
        let pixels = d.decode().map_err(|e| PictureError::Jpeg(e.to_string()))?;
        let data = match info.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => pixels,
            jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
            jpeg_decoder::PixelFormat::L16 => pixels.chunks_exact(2).flat_map(|l| [l[0], l[0], l[0]]).collect(),
            jpeg_decoder::PixelFormat::CMYK32 => pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u32::from(p[3]);
                    [p[0], p[1], p[2]].map(|c| (u32::from(c) * k / 255) as u8)
                })
                .collect(),
        };
        if data.len() < (w * h * 3) as usize {
            return Err(PictureError::Jpeg("fewer pixels than its header says".into()));
        }
        Ok(Rgb { width: w, height: h, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey_yuv(w: usize, h: usize, y: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (vec![y; w * h], vec![128; w.div_ceil(2) * h.div_ceil(2)], vec![128; w.div_ceil(2) * h.div_ceil(2)])
    }

    #[test]
    fn a_frame_scales_down_to_rgb_in_its_aspect() {
        let (y, u, v) = grey_yuv(1920, 1080, 235);
        let p = Yuv420 { y: &y, u: &u, v: &v, strides: (1920, 960, 960), width: 1920, height: 1080 };
        let rgb = p.to_rgb(640).expect("rgb");
        assert_eq!((rgb.width, rgb.height, rgb.data.len()), (640, 360, 640 * 360 * 3));
        assert_eq!(&rgb.data[..3], &[255, 255, 255], "limited-range white is white");
        // Red in BT.601: Y 81, Cb 90, Cr 240.
        assert_eq!(to_rgb(81, 90, 240), [255, 0, 0]);
    }

    #[test]
    fn short_planes_are_an_error_not_a_panic() {
        let (y, u, v) = grey_yuv(64, 64, 16);
        let p = Yuv420 { y: &y[..100], u: &u, v: &v, strides: (64, 32, 32), width: 64, height: 64 };
        assert_eq!(p.to_rgb(32), Err(PictureError::Planes));
    }

    #[test]
    fn jpeg_round_trips_and_refuses_garbage_and_giants() {
        let rgb = Rgb { width: 64, height: 48, data: [200u8, 30, 30].repeat(64 * 48) };
        let jpeg = rgb.to_jpeg(85).expect("jpeg");
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        let back = Rgb::from_jpeg(&jpeg, 1 << 20).expect("decode");
        assert_eq!((back.width, back.height), (64, 48));
        assert!(back.data[0].abs_diff(200) < 8 && back.data[1].abs_diff(30) < 8, "{:?}", &back.data[..3]);
        assert_eq!(Rgb::from_jpeg(&jpeg, 1000), Err(PictureError::TooLarge(64, 48)));
        assert!(matches!(Rgb::from_jpeg(b"not a jpeg", 1 << 20), Err(PictureError::Jpeg(_))));
        let half = Rgb::from_jpeg_scaled(&jpeg, 1 << 20, Some(32)).expect("scaled");
        assert_eq!((half.width, half.height, half.data.len()), (32, 24, 32 * 24 * 3), "decoded at 1/2");
        let thumb = back.scaled(16);
        assert_eq!((thumb.width, thumb.height, thumb.data.len()), (16, 12, 16 * 12 * 3));
    }
}
