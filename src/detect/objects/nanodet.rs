//! NanoDet-g's pre- and post-processing (DESIGN.md §9), pure and
//! model-free so it is tested without the model:
//! - in: an RGB picture letterboxed (scaled to fit, top-left, the rest
//!   padded with the mean colour) into a square of `size`, as planar BGR
//!   `(px - mean) / std`, shape `[1, 3, size, size]`;
//! - out: per stride 8/16/32, class scores `[N, 80]` (already sigmoid) and box
//!   distributions `[N, 44]` (4 sides x 11 bins: softmax, expectation, times
//!   the stride) around the cell centre; the best class per cell, then
//!   per-class non-maximum suppression.
//!
//! Invariants: boxes come back normalised to the source picture (0..=1,
//! clipped); nothing here panics on a short or odd-sized output (it is
//! checked against the grid first).

use super::Detection;
use crate::config::OBJECT_LABELS;
use crate::detect::picture::Rgb;

/// BGR means and standard deviations the model was trained with.
const MEAN: [f32; 3] = [103.53, 116.28, 123.675];
const STD: [f32; 3] = [57.375, 57.12, 58.395];
/// The head's strides, finest first.
pub const STRIDES: [u32; 3] = [8, 16, 32];
/// Bins per box side (reg_max + 1).
const BINS: usize = 11;
/// Overlap above which the weaker of two same-label boxes is dropped.
const NMS_IOU: f32 = 0.5;
/// At most this many detections per picture.
const MAX_DETECTIONS: usize = 100;

/// How a picture was placed in the model's square input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub size: u32,
    /// Input pixels per source pixel.
    pub scale: f32,
    pub src_w: u32,
    pub src_h: u32,
}

/// The model's input tensor data (planar BGR, normalised) for `rgb`.
pub fn preprocess(rgb: &Rgb, size: u32) -> (Vec<f32>, Letterbox) {
    let s = size as usize;
    let (w, h) = (rgb.width.max(1), rgb.height.max(1));
    let scale = (size as f32 / w as f32).min(size as f32 / h as f32);
    let nw = ((w as f32 * scale).round() as usize).clamp(1, s);
    let nh = ((h as f32 * scale).round() as usize).clamp(1, s);
    // Padding is the mean colour: zero after normalisation.
    let mut out = vec![0f32; 3 * s * s];
    let plane = s * s;
    let (sw, sh) = (w as usize, h as usize);
    for y in 0..nh {
        // Nearest source row/column of each input pixel's centre.
        let sy = (((y as f32 + 0.5) / scale) as usize).min(sh - 1);
        for x in 0..nw {
            let sx = (((x as f32 + 0.5) / scale) as usize).min(sw - 1);
            let i = (sy * sw + sx) * 3;
            let Some(px) = rgb.data.get(i..i + 3) else { continue };
            let o = y * s + x;
            // BGR order: channel 0 is blue.
            for (c, v) in [px[2], px[1], px[0]].into_iter().enumerate() {
                out[c * plane + o] = (f32::from(v) - MEAN[c]) / STD[c];
            }
        }
    }
    (out, Letterbox { size, scale, src_w: w, src_h: h })
}

/// One stride's outputs: class scores `[n, 80]` and distributions `[n, 44]`, row-major.
pub struct Level<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
}

/// Detections above each class's threshold (`min_score[class]`), after NMS.
pub fn postprocess(levels: &[Level], lb: &Letterbox, min_score: &[f32; 80]) -> Vec<Detection> {
    let floor = min_score.iter().copied().fold(1.0f32, f32::min);
    let mut found: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for lv in levels {
        let grid = (lb.size / lv.stride) as usize;
        let n = grid * grid;
        if lv.scores.len() < n * 80 || lv.boxes.len() < n * 4 * BINS {
            continue;
        }
        for i in 0..n {
            let row = &lv.scores[i * 80..(i + 1) * 80];
            let (class, score) = best(row);
            if score < floor || score < min_score[class] {
                continue;
            }
            let cx = ((i % grid) as f32 + 0.5) * lv.stride as f32;
            let cy = ((i / grid) as f32 + 0.5) * lv.stride as f32;
            let d = &lv.boxes[i * 4 * BINS..(i + 1) * 4 * BINS];
            let side = |k: usize| expectation(&d[k * BINS..(k + 1) * BINS]) * lv.stride as f32;
            let b = [cx - side(0), cy - side(1), cx + side(2), cy + side(3)];
            found.push((class, score, normalise(b, lb)));
        }
    }
    nms(found)
}

/// The best class of one cell and its score.
fn best(row: &[f32]) -> (usize, f32) {
    row.iter().copied().enumerate().fold((0, f32::MIN), |acc, (i, v)| if v > acc.1 { (i, v) } else { acc })
}

/// Softmax over the bins, then the expected bin index.
fn expectation(bins: &[f32]) -> f32 {
    let max = bins.iter().copied().fold(f32::MIN, f32::max);
    let (mut sum, mut weighted) = (0f32, 0f32);
    for (k, v) in bins.iter().enumerate() {
        let e = (v - max).exp();
        sum += e;
        weighted += e * k as f32;
    }
    if sum > 0.0 {
        weighted / sum
    } else {
        0.0
    }
}

/// An input-pixel box as fractions of the source picture, clipped to it.
fn normalise(b: [f32; 4], lb: &Letterbox) -> [f32; 4] {
    let (w, h) = (lb.src_w as f32 * lb.scale, lb.src_h as f32 * lb.scale);
    let c = |v: f32, m: f32| (v / m).clamp(0.0, 1.0);
    [c(b[0], w), c(b[1], h), c(b[2], w), c(b[3], h)]
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Per-class non-maximum suppression, strongest first.
fn nms(mut found: Vec<(usize, f32, [f32; 4])>) -> Vec<Detection> {
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for f in found {
        if kept.len() >= MAX_DETECTIONS {
            break;
        }
        if kept.iter().all(|k| k.0 != f.0 || iou(&k.2, &f.2) <= NMS_IOU) {
            kept.push(f);
        }
    }
    kept.into_iter().map(|(c, score, bbox)| Detection { label: OBJECT_LABELS[c], score, bbox }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_keeps_the_aspect_ratio_and_pads_with_the_mean() {
        let rgb = Rgb { width: 4, height: 2, data: vec![255; 4 * 2 * 3] };
        let (t, lb) = preprocess(&rgb, 8);
        assert_eq!(lb.scale, 2.0);
        assert_eq!(t.len(), 3 * 64);
        // Rows 0..4 hold the picture (white), rows 4..8 the padding (0).
        assert!((t[0] - (255.0 - MEAN[0]) / STD[0]).abs() < 1e-5);
        assert!((t[3 * 8 + 7] - (255.0 - MEAN[0]) / STD[0]).abs() < 1e-5);
        assert_eq!(t[4 * 8], 0.0);
        assert_eq!(t[64 + 7 * 8 + 7], 0.0);
    }

    #[test]
    fn the_channels_are_bgr() {
        let rgb = Rgb { width: 1, height: 1, data: vec![10, 20, 30] };
        let (t, _) = preprocess(&rgb, 32);
        let plane = 32 * 32;
        assert!((t[0] - (30.0 - MEAN[0]) / STD[0]).abs() < 1e-5, "blue first");
        assert!((t[plane] - (20.0 - MEAN[1]) / STD[1]).abs() < 1e-5);
        assert!((t[2 * plane] - (10.0 - MEAN[2]) / STD[2]).abs() < 1e-5);
    }

    /// A distribution that puts (almost) all weight on `bin`.
    fn peaked(bin: usize) -> Vec<f32> {
        (0..BINS).map(|k| if k == bin { 30.0 } else { 0.0 }).collect()
    }

    #[test]
    fn a_cell_becomes_a_box_around_its_centre_and_nms_keeps_the_best() {
        // size 32, stride 16: a 2x2 grid; cell 3 (bottom right, centre 24,24).
        let lb = Letterbox { size: 32, scale: 1.0, src_w: 32, src_h: 32 };
        let mut scores = vec![0.0f32; 4 * 80];
        scores[3 * 80] = 0.9; // person
        scores[2 * 80] = 0.8; // person again, overlapping: suppressed
        scores[80 + 2] = 0.7; // a car in cell 1
        let mut boxes = Vec::new();
        for _ in 0..4 {
            for side in [1, 1, 0, 0] {
                boxes.extend(peaked(side));
            }
        }
        let lv = Level { stride: 16, scores: &scores, boxes: &boxes };
        let d = postprocess(&[lv], &lb, &[0.5; 80]);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!((d[0].label, d[0].score), ("person", 0.9));
        let want = [(24.0 - 16.0) / 32.0, (24.0 - 16.0) / 32.0, 24.0 / 32.0, 24.0 / 32.0];
        for (g, w) in d[0].bbox.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{:?} vs {want:?}", d[0].bbox);
        }
        // Cell 2's box [-8,8]..[8,24] barely overlaps cell 3's: both stay.
        assert_eq!(d[1].label, "person");
        assert_eq!(d[2].label, "car");
        let strict = {
            let mut m = [0.5; 80];
            m[2] = 0.75;
            m
        };
        let lv = Level { stride: 16, scores: &scores, boxes: &boxes };
        assert!(postprocess(&[lv], &lb, &strict).iter().all(|d| d.label != "car"));
    }

    #[test]
    fn overlapping_boxes_of_one_label_are_merged() {
        let a = (0, 0.9, [0.1, 0.1, 0.5, 0.5]);
        let b = (0, 0.6, [0.12, 0.1, 0.5, 0.52]);
        let c = (1, 0.6, [0.12, 0.1, 0.5, 0.52]);
        let kept = nms(vec![b, a, c]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].label, "bicycle");
    }

    #[test]
    fn short_outputs_are_ignored_not_read_past() {
        let lb = Letterbox { size: 32, scale: 1.0, src_w: 32, src_h: 32 };
        let lv = Level { stride: 8, scores: &[0.9; 10], boxes: &[0.0; 10] };
        assert!(postprocess(&[lv], &lb, &[0.1; 80]).is_empty());
    }
}
