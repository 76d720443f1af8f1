//! Object detection: which COCO objects (person, car, ...) a picture shows,
//! with NanoDet-g (`models/nanodet-g.onnx`, models/README.md) run here with
//! tract (`local`), or by another OxiNVR's `POST /api/detect` (`remote`).
//!
//! API for the detection worker:
//! `Detector::from_config(&cfg.detect)?` once, then `detector.detect(&rgb)?`
//! on a picture (`picture::Rgb`, any size) -> `Vec<Detection>` with
//! normalised boxes, filtered by `detect.labels`, `detect.min_score` and
//! `detect.scores`.
//!
//! Invariants:
//! - A model file is loaded once per process (path, input size) and shared by
//!   every detector and the API (`shared_model`); a model that fails to load
//!   is not retried on every call (the error is kept).
//! - At most one inference runs at a time process-wide (`GATE`): the box has
//!   two cores and recording comes first. A caller waits at most the time it
//!   gives (`detect_within`), then gets `ObjectError::Busy`.
//! - The remote call has a deadline on connect and on each read and write.
//! - The model's memory is counted under the `detect` subsystem.
//! - Without the `objects` cargo feature, `local` answers
//!   `ObjectError::NoModel`; `remote` still works.

mod nanodet;
mod remote;
#[cfg(feature = "objects")]
mod tract_model;

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::{DetectConfig, OBJECT_LABELS};
use crate::detect::picture::Rgb;

pub use nanodet::{postprocess, preprocess, Letterbox, Level, STRIDES};

/// One object found in a picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// A COCO label (`config::OBJECT_LABELS`).
    pub label: &'static str,
    /// 0..=1.
    pub score: f32,
    /// `[x0, y0, x1, y1]` as fractions of the picture's width and height, y down.
    pub bbox: [f32; 4],
}

/// Why detection failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectError {
    /// No local model: none configured, or this build has no `objects` feature.
    NoModel(String),
    /// The model file could not be loaded or run (names the path).
    Model(String),
    /// Another inference is running and did not finish within the wait.
    Busy,
    /// The remote detector failed or answered an error (its words).
    Remote(String),
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectError::NoModel(m) | ObjectError::Model(m) | ObjectError::Remote(m) => f.write_str(m),
            ObjectError::Busy => f.write_str("the object detector is busy with another picture; try again"),
        }
    }
}

impl std::error::Error for ObjectError {}

/// Which detections matter: labels and per-label lowest scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Lowest score per class (model order); above 1 means "not wanted".
    pub min_score: [f32; 80],
}

impl Filter {
    /// Everything at or above `min_score`.
    pub fn all(min_score: f32) -> Filter {
        Filter { min_score: [min_score; 80] }
    }

    pub fn from_config(cfg: &DetectConfig) -> Filter {
        let mut f = Filter::all(cfg.min_score);
        for (i, label) in OBJECT_LABELS.iter().enumerate() {
            if let Some(s) = cfg.scores.get(*label) {
                f.min_score[i] = *s;
            }
            if !cfg.labels.is_empty() && !cfg.labels.iter().any(|l| l == label) {
                f.min_score[i] = f32::INFINITY;
            }
        }
        f
    }

    /// The lowest score any wanted label needs (what to ask a remote detector for).
    pub fn floor(&self) -> f32 {
        self.min_score.iter().copied().fold(1.0, f32::min)
    }

    pub fn keeps(&self, d: &Detection) -> bool {
        OBJECT_LABELS.iter().position(|l| *l == d.label).is_some_and(|i| d.score >= self.min_score[i])
    }
}

/// A loaded model: runs one picture (the caller holds the gate).
pub trait Model: Send + Sync {
    /// All detections at or above each class's score in `min_score`.
    fn infer(&self, rgb: &Rgb, min_score: &[f32; 80]) -> Result<Vec<Detection>, ObjectError>;
    /// The model's input size.
    fn input_size(&self) -> u32;
    /// A short name for answers and logs (`nanodet-g.onnx@416`).
    fn name(&self) -> &str;
}

enum Backend {
    Local(Arc<dyn Model>),
    Remote(remote::Remote),
}

/// An object detector as `[detect]` configures it.
pub struct Detector {
    backend: Backend,
    filter: Filter,
}

/// How long `detect` waits for another inference to finish.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

impl Detector {
    /// The local model (loaded once per process) or the remote client.
    pub fn from_config(cfg: &DetectConfig) -> Result<Detector, ObjectError> {
        let backend = if cfg.backend == "local" {
            Backend::Local(shared_model(&cfg.model, cfg.input_size)?)
        } else {
            Backend::Remote(remote::Remote::from_config(cfg)?)
        };
        Ok(Detector { backend, filter: Filter::from_config(cfg) })
    }

    /// A detector on an already loaded model (tests, the API).
    pub fn with_model(model: Arc<dyn Model>, filter: Filter) -> Detector {
        Detector { backend: Backend::Local(model), filter }
    }

    /// The objects in `rgb` that the filter keeps, strongest first.
    pub fn detect(&mut self, rgb: &Rgb) -> Result<Vec<Detection>, ObjectError> {
        self.detect_within(rgb, DEFAULT_WAIT)
    }

    /// `detect`, waiting at most `wait` for another inference to finish.
    pub fn detect_within(&mut self, rgb: &Rgb, wait: Duration) -> Result<Vec<Detection>, ObjectError> {
        let found = match &self.backend {
            Backend::Local(m) => infer(m.as_ref(), rgb, &self.filter.min_score, wait)?,
            Backend::Remote(r) => r.detect(rgb, self.filter.floor())?,
        };
        Ok(found.into_iter().filter(|d| self.filter.keeps(d)).collect())
    }

    /// What does the work: the model's name, or the remote URL.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(m) => m.name().to_string(),
            Backend::Remote(r) => r.url().to_string(),
        }
    }
}

/// One inference on `model` under the process-wide gate; memory counted as `detect`.
pub fn infer(
    model: &dyn Model,
    rgb: &Rgb,
    min_score: &[f32; 80],
    wait: Duration,
) -> Result<Vec<Detection>, ObjectError> {
    exclusive(wait, || model.infer(rgb, min_score))?
}

/// Runs `f` holding the process-wide inference gate (waiting at most `wait`
/// for it), its memory counted as `detect`: the API decodes an uploaded JPEG
/// under it too, so only one large picture is in memory at a time.
pub fn exclusive<R>(wait: Duration, f: impl FnOnce() -> R) -> Result<R, ObjectError> {
    let _turn = GATE.enter(wait).ok_or(ObjectError::Busy)?;
    Ok(with_detect_memory(f))
}

/// Runs `f` with this thread's allocations counted under `detect`.
fn with_detect_memory<R>(f: impl FnOnce() -> R) -> R {
    use crate::base::memory::{current_subsystem, set_subsystem, Subsystem};
    let before = current_subsystem();
    set_subsystem(Subsystem::Detect);
    let r = f();
    set_subsystem(before);
    r
}

/// At most one inference at a time, process-wide; waiting is bounded.
struct Gate {
    busy: Mutex<bool>,
    freed: Condvar,
}

static GATE: Gate = Gate { busy: Mutex::new(false), freed: Condvar::new() };

/// Holding the gate; dropping it lets the next caller in.
struct Turn;

impl Gate {
    fn enter(&'static self, wait: Duration) -> Option<Turn> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            busy = self.freed.wait_timeout(busy, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *busy = true;
        Some(Turn)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *GATE.busy.lock().unwrap_or_else(|p| p.into_inner()) = false;
        GATE.freed.notify_one();
    }
}

type Loaded = Result<Arc<dyn Model>, ObjectError>;

/// Models loaded so far: (path, input size) -> the model or why it failed.
static MODELS: Mutex<Vec<((String, u32), Loaded)>> = Mutex::new(Vec::new());

/// The model at `path` for `size`, loaded on first use and then shared.
pub fn shared_model(path: &str, size: u32) -> Loaded {
    if path.is_empty() {
        return Err(ObjectError::NoModel("no object model on this OxiNVR (set detect.model)".into()));
    }
    let mut models = MODELS.lock().unwrap_or_else(|p| p.into_inner());
    let key = (path.to_string(), size);
    if let Some((_, m)) = models.iter().find(|(k, _)| *k == key) {
        return m.clone();
    }
    let loaded = with_detect_memory(|| load(path, size));
    if let Err(e) = &loaded {
        log::warn!("object detector: {e}");
    }
    models.push((key, loaded.clone()));
    loaded
}

#[cfg(feature = "objects")]
fn load(path: &str, size: u32) -> Loaded {
    let m = tract_model::TractModel::load(std::path::Path::new(path), size)?;
    Ok(Arc::new(m))
}

#[cfg(not(feature = "objects"))]
fn load(path: &str, _size: u32) -> Loaded {
    Err(ObjectError::NoModel(format!(
        "this build has no local object detector (cargo feature \"objects\"); {path} is not used"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_follows_labels_and_per_label_scores() {
        let mut cfg =
            DetectConfig { min_score: 0.4, labels: vec!["person".into(), "car".into()], ..Default::default() };
        cfg.scores.insert("car".into(), 0.7);
        let f = Filter::from_config(&cfg);
        let d = |label, score| Detection { label, score, bbox: [0.0; 4] };
        assert!(f.keeps(&d("person", 0.45)));
        assert!(!f.keeps(&d("person", 0.3)));
        assert!(!f.keeps(&d("car", 0.6)));
        assert!(f.keeps(&d("car", 0.7)));
        assert!(!f.keeps(&d("dog", 0.99)), "not in labels");
        assert_eq!(f.floor(), 0.4);
    }

    #[test]
    fn no_model_is_a_clear_error() {
        let e = shared_model("", 416).err().expect("no model");
        assert!(e.to_string().contains("detect.model"), "{e}");
    }

    #[test]
    fn the_gate_lets_one_in_and_bounds_the_wait() {
        let first = GATE.enter(Duration::from_millis(10)).expect("free");
        assert!(GATE.enter(Duration::from_millis(20)).is_none(), "busy");
        drop(first);
        assert!(GATE.enter(Duration::from_millis(10)).is_some());
    }
}
