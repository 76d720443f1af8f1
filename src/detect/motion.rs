//! Motion detection on small luma frames, integer arithmetic only (the
//! appliance's MIPS core has no FPU in the soft-float build).
//!
//! Pipeline per frame: background model -> changed pixels -> changed cells ->
//! "this frame moves" -> hysteresis -> motion start / end.
//!
//! Invariants:
//! - Pure and deterministic: the only inputs are the frames and the times the
//!   caller gives (a frame's wall time, or the clock on a quiet tick); no I/O,
//!   no clock of its own, no floats after [`Mask::rasterize`].
//! - The background is a running average in 8.8 fixed point
//!   (`bg += (px * 256 - bg) >> background_shift`), seeded from the first
//!   frame (and again after the frame size changes), so a scene that stays
//!   still never moves.
//! - Masked pixels (centres inside a mask polygon) never count as changed,
//!   and cells that are mostly masked are not counted at all.
//! - Hysteresis: motion starts after `start_frames` consecutive moving frames
//!   and ends `end_ms` after the last moving frame, so one walk past the
//!   camera is one start/end pair. Every start is followed by exactly one end
//!   (at the latest on [`MotionDetector::reset`]).

/// Tunables of the detector (the `[detect]` table, see `config::DetectConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MotionParams {
    /// A pixel changed when it differs from the background by more than this (0..255).
    pub pixel_threshold: u8,
    /// Cell edge in pixels of the downscaled frame.
    pub cell: u16,
    /// A cell changed when at least this percentage of its unmasked pixels changed.
    pub cell_percent: u8,
    /// A frame moves when at least this many cells changed.
    pub min_cells: u16,
    /// Background learning rate: 1 / 2^shift per frame.
    pub background_shift: u8,
    /// Consecutive moving frames before motion starts.
    pub start_frames: u16,
    /// Quiet milliseconds after the last moving frame before motion ends.
    pub end_ms: i64,
}

impl Default for MotionParams {
    /// The `[detect]` table's defaults: one source for both.
    fn default() -> Self {
        crate::detect::worker::motion_params(&crate::config::DetectConfig::default())
    }
}

/// One downscaled luma picture (row-major, `width * height` bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Luma {
    pub width: u16,
    pub height: u16,
    pub data: Vec<u8>,
}

/// A motion change the detector reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MotionChange {
    /// Motion started at this wall time (ms); `cells` changed in the frame that started it.
    Start { at_ms: i64, cells: u16 },
    /// Motion ended: `at_ms` is the last moving frame's time; `peak_cells` the most changed cells seen.
    End { at_ms: i64, peak_cells: u16 },
}

/// Polygons in normalised coordinates (0.0..=1.0, x right, y down) to ignore.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mask {
    pub polygons: Vec<Vec<[f64; 2]>>,
}

impl Mask {
    /// Per-pixel flags (1 = ignored) for a `width x height` frame: a pixel is
    /// masked when its centre is inside any polygon (even-odd rule).
    pub fn rasterize(&self, width: u16, height: u16) -> Vec<u8> {
        let (w, h) = (usize::from(width), usize::from(height));
        let mut out = vec![0u8; w * h];
        for poly in self.polygons.iter().filter(|p| p.len() >= 3) {
            for y in 0..h {
                let py = (y as f64 + 0.5) / h as f64;
                for x in 0..w {
                    let px = (x as f64 + 0.5) / w as f64;
                    if inside(poly, px, py) {
                        out[y * w + x] = 1;
                    }
                }
            }
        }
        out
    }
}

fn inside(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    let mut hit = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            hit = !hit;
        }
        j = i;
    }
    hit
}

/// What one frame showed (for tests, the API and tuning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameVerdict {
    pub changed_cells: u16,
    pub moving: bool,
    /// Bounds of the changed cells in pixels of the small picture: x0, y0, x1, y1 (exclusive).
    pub area: Option<[u16; 4]>,
}

/// The detector of one stream.
pub struct MotionDetector {
    params: MotionParams,
    mask: Mask,
    width: u16,
    height: u16,
    /// Background in 8.8 fixed point, one per pixel.
    background: Vec<u16>,
    /// Rasterized mask for the current size.
    masked: Vec<u8>,
    /// Moving frames in a row (saturating).
    streak: u16,
    /// Set while in motion: the last moving frame's time and the peak.
    active: Option<(i64, u16)>,
}

impl MotionDetector {
    pub fn new(params: MotionParams, mask: Mask) -> Self {
        MotionDetector {
            params,
            mask,
            width: 0,
            height: 0,
            background: Vec::new(),
            masked: Vec::new(),
            streak: 0,
            active: None,
        }
    }

    /// A new mask from the next frame on; the background is kept (the scene did not change).
    pub fn set_mask(&mut self, mask: Mask) {
        self.mask = mask;
        if self.width > 0 {
            self.masked = self.mask.rasterize(self.width, self.height);
        }
    }

    /// Bytes this detector holds (background and mask).
    pub fn heap_bytes(&self) -> usize {
        self.background.capacity() * 2 + self.masked.capacity()
    }

    /// Whether motion is in progress.
    pub fn in_motion(&self) -> bool {
        self.active.is_some()
    }

    /// Feeds one frame taken at `at_ms`. Returns what the frame showed and the
    /// change it caused, if any. A frame of a new size re-seeds the background.
    pub fn feed(&mut self, frame: &Luma, at_ms: i64) -> (FrameVerdict, Option<MotionChange>) {
        let pixels = usize::from(frame.width) * usize::from(frame.height);
        if frame.data.len() != pixels || pixels == 0 {
            return (FrameVerdict::default(), None);
        }
        if (frame.width, frame.height) != (self.width, self.height) || self.background.len() != pixels {
            self.seed(frame);
            return (FrameVerdict::default(), None);
        }
        let (changed_cells, area) = self.changed_cells(frame);
        self.learn(frame);
        let moving = changed_cells >= self.params.min_cells;
        (FrameVerdict { changed_cells, moving, area }, self.hysteresis(moving, changed_cells, at_ms))
    }

    /// Ends motion that has been quiet for `end_ms` by `now_ms` (called when
    /// frames stop coming, e.g. the camera went away).
    pub fn tick(&mut self, now_ms: i64) -> Option<MotionChange> {
        let (last, peak) = self.active?;
        if now_ms - last < self.params.end_ms {
            return None;
        }
        self.active = None;
        Some(MotionChange::End { at_ms: last, peak_cells: peak })
    }

    /// Forgets the background (a new run, a gap); ends motion in progress.
    pub fn reset(&mut self) -> Option<MotionChange> {
        self.background.clear();
        self.streak = 0;
        self.active.take().map(|(last, peak)| MotionChange::End { at_ms: last, peak_cells: peak })
    }

    fn seed(&mut self, frame: &Luma) {
        self.width = frame.width;
        self.height = frame.height;
        self.background = frame.data.iter().map(|&p| u16::from(p) << 8).collect();
        self.masked = self.mask.rasterize(frame.width, frame.height);
        self.streak = 0;
    }

    /// Cells where enough unmasked pixels left the background, and their bounds.
    fn changed_cells(&self, frame: &Luma) -> (u16, Option<[u16; 4]>) {
        let (w, h) = (usize::from(self.width), usize::from(self.height));
        let cell = usize::from(self.params.cell.max(1));
        let threshold = i32::from(self.params.pixel_threshold);
        let mut changed = 0u16;
        let mut bounds: Option<[usize; 4]> = None;
        for cy in (0..h).step_by(cell) {
            for cx in (0..w).step_by(cell) {
                let (mut open, mut moved) = (0u32, 0u32);
                for y in cy..(cy + cell).min(h) {
                    let row = y * w;
                    for x in cx..(cx + cell).min(w) {
                        let i = row + x;
                        if self.masked[i] != 0 {
                            continue;
                        }
                        open += 1;
                        let bg = i32::from(self.background[i] >> 8);
                        moved += u32::from((i32::from(frame.data[i]) - bg).abs() > threshold);
                    }
                }
                // A mostly masked cell is ignored (its few open pixels would be noise).
                let area = ((cy + cell).min(h) - cy) * ((cx + cell).min(w) - cx);
                if open * 2 >= area as u32 && moved * 100 >= open * u32::from(self.params.cell_percent) && moved > 0 {
                    changed = changed.saturating_add(1);
                    let (x1, y1) = ((cx + cell).min(w), (cy + cell).min(h));
                    bounds = Some(
                        bounds.map_or([cx, cy, x1, y1], |[a, b, c, d]| [a.min(cx), b.min(cy), c.max(x1), d.max(y1)]),
                    );
                }
            }
        }
        // Sides fit u16: the picture's are u16.
        (changed, bounds.map(|a| a.map(|v| v as u16)))
    }

    fn learn(&mut self, frame: &Luma) {
        let shift = u32::from(self.params.background_shift.min(8));
        for (bg, &p) in self.background.iter_mut().zip(&frame.data) {
            let target = i32::from(p) << 8;
            let cur = i32::from(*bg);
            // Round towards the target so the model converges exactly.
            let step = (target - cur) >> shift;
            let step = if step == 0 { (target - cur).signum() } else { step };
            *bg = (cur + step).clamp(0, 0xffff) as u16;
        }
    }

    fn hysteresis(&mut self, moving: bool, cells: u16, at_ms: i64) -> Option<MotionChange> {
        if !moving {
            self.streak = 0;
            return self.tick(at_ms);
        }
        self.streak = self.streak.saturating_add(1);
        match &mut self.active {
            Some((last, peak)) => {
                *last = at_ms;
                *peak = (*peak).max(cells);
                None
            }
            None if self.streak >= self.params.start_frames.max(1) => {
                self.active = Some((at_ms, cells));
                Some(MotionChange::Start { at_ms, cells })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u16 = 160;
    const H: u16 = 90;

    /// A flat grey frame with a bright `size`-pixel square at (x, y).
    fn frame(x: usize, y: usize, size: usize) -> Luma {
        let mut data = vec![60u8; usize::from(W) * usize::from(H)];
        for yy in y..(y + size).min(usize::from(H)) {
            for xx in x..(x + size).min(usize::from(W)) {
                data[yy * usize::from(W) + xx] = 220;
            }
        }
        Luma { width: W, height: H, data }
    }

    fn run(det: &mut MotionDetector, frames: impl IntoIterator<Item = (Luma, i64)>) -> Vec<MotionChange> {
        frames.into_iter().filter_map(|(f, t)| det.feed(&f, t).1).collect()
    }

    #[test]
    fn a_still_scene_never_moves() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        let out = run(&mut det, (0..100).map(|i| (frame(10, 10, 20), i * 200)));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn one_walk_past_is_one_start_and_one_end() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        // Still, then a square crosses the frame in 6 s at 5 fps, then still for 10 s.
        let mut frames: Vec<(Luma, i64)> = (0..10).map(|i| (frame(0, 30, 0), i * 200)).collect();
        frames.extend((0..30).map(|i| (frame(i * 5, 30, 24), 2000 + i as i64 * 200)));
        frames.extend((0..50).map(|i| (frame(0, 30, 0), 8000 + i * 200)));
        let out = run(&mut det, frames);
        assert_eq!(out.len(), 2, "{out:?}");
        let MotionChange::Start { at_ms: start, .. } = out[0] else { panic!("{out:?}") };
        let MotionChange::End { at_ms: last, peak_cells } = out[1] else { panic!("{out:?}") };
        assert!((2000..=2400).contains(&start), "started at {start}");
        assert!(last >= 7400, "last movement at {last}");
        assert!(peak_cells >= 4, "{peak_cells}");
    }

    #[test]
    fn the_changed_area_bounds_what_moved() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        det.feed(&frame(0, 0, 0), 0);
        let (v, _) = det.feed(&frame(80, 40, 24), 200);
        let [x0, y0, x1, y1] = v.area.expect("an area");
        // Whole 8-pixel cells around the 24-pixel square at (80, 40).
        assert!(x0 <= 80 && y0 <= 40 && x1 >= 104 && y1 >= 64, "{:?}", v.area);
        assert!(x0 >= 72 && y0 >= 32 && x1 <= 112 && y1 <= 72, "{:?}", v.area);
        assert!(det.feed(&frame(80, 40, 24), 400).0.area.is_some(), "still moving against the background");
    }

    #[test]
    fn a_single_flicker_is_not_motion() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        let mut frames: Vec<(Luma, i64)> = (0..10).map(|i| (frame(0, 0, 0), i * 200)).collect();
        frames.push((frame(50, 30, 30), 2000));
        frames.extend((0..10).map(|i| (frame(0, 0, 0), 2200 + i * 200)));
        assert!(run(&mut det, frames).is_empty());
    }

    #[test]
    fn small_changes_below_the_minimum_area_are_ignored() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        // A 3-pixel dot wandering about: at most one cell.
        let out = run(&mut det, (0..60).map(|i| (frame(16 + (i as usize % 4), 16, 3), i * 200)));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn motion_inside_a_mask_is_ignored_and_outside_is_not() {
        // Mask the left half; a square moving in the left half, then in the right half.
        let mask = Mask { polygons: vec![vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]] };
        let mut det = MotionDetector::new(MotionParams::default(), mask);
        let left = run(&mut det, (0..40).map(|i| (frame(4 + (i as usize % 8) * 6, 30, 20), i * 200)));
        assert!(left.is_empty(), "{left:?}");
        let right = run(&mut det, (0..40).map(|i| (frame(90 + (i as usize % 8) * 6, 30, 20), 8000 + i * 200)));
        assert!(matches!(right.first(), Some(MotionChange::Start { .. })), "{right:?}");
    }

    #[test]
    fn quiet_time_ends_motion_without_frames() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        let out = run(&mut det, (0..20).map(|i| (frame(i as usize * 6, 30, 20), i * 200)));
        assert!(matches!(out[..], [MotionChange::Start { .. }]), "{out:?}");
        assert_eq!(det.tick(3800 + 4000), None);
        let end = det.tick(3800 + 5000);
        // The square covers 9 to 12 cells; the background's fading trail adds more.
        assert!(matches!(end, Some(MotionChange::End { at_ms: 3800, peak_cells: 9.. })), "{end:?}");
        assert!(!det.in_motion());
    }

    #[test]
    fn a_new_size_reseeds_and_reset_ends_motion() {
        let mut det = MotionDetector::new(MotionParams::default(), Mask::default());
        run(&mut det, (0..5).map(|i| (frame(i as usize * 10, 30, 20), i * 200)));
        assert!(det.in_motion());
        assert!(matches!(det.reset(), Some(MotionChange::End { .. })));
        let small = Luma { width: 8, height: 8, data: vec![0; 64] };
        assert_eq!(det.feed(&small, 0), (FrameVerdict::default(), None));
        let bad = Luma { width: 8, height: 8, data: vec![0; 3] };
        assert_eq!(det.feed(&bad, 0), (FrameVerdict::default(), None));
    }

    #[test]
    fn rasterized_mask_covers_the_polygon_only() {
        let mask = Mask { polygons: vec![vec![[0.0, 0.0], [0.25, 0.0], [0.25, 0.5], [0.0, 0.5]]] };
        let m = mask.rasterize(8, 4);
        assert_eq!(&m[0..8], &[1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&m[8..16], &[1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 4);
    }
}
