//! NanoDet-g run by tract (pure Rust ONNX inference, cargo feature `objects`).
//!
//! Invariants: the model is optimised once for a fixed input `[1, 3, S, S]`;
//! the six outputs are matched to strides by their shapes (`[1, N, 80]`
//! scores and `[1, N, 44]` distributions with `N = (S / stride)^2`), never by
//! their order or names, and a model whose outputs do not fit is refused at
//! load time with the path in the message.

use std::path::Path;

use tract_onnx::prelude::*;

use super::nanodet::{self, Level};
use super::{Detection, Model, ObjectError};
use crate::detect::picture::Rgb;

type Plan = TypedRunnableModel<TypedModel>;

pub struct TractModel {
    plan: Plan,
    size: u32,
    name: String,
}

impl TractModel {
    /// Loads and optimises `path` for an input of `size` x `size`.
    pub fn load(path: &Path, size: u32) -> Result<TractModel, ObjectError> {
        let shown = path.display().to_string();
        crate::config::check_model_file(path).map_err(ObjectError::Model)?;
        let fail = |what: &str, e: TractError| {
            ObjectError::Model(format!("{what} the model {shown} at input size {size}: {e:#}"))
        };
        let s = size as usize;
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| fail("cannot read", e))?
            .with_input_fact(0, f32::fact([1, 3, s, s]).into())
            .and_then(|m| m.into_optimized())
            .map_err(|e| fail("cannot prepare", e))?
            .into_runnable()
            .map_err(|e| fail("cannot plan", e))?;
        let file = path.file_name().map_or(shown.clone(), |f| f.to_string_lossy().into_owned());
        let m = TractModel { plan, size, name: format!("{file}@{size}") };
        // A blank picture proves the outputs fit the grid (and warms tract up).
        let blank = Rgb { width: size, height: size, data: vec![0; s * s * 3] };
        m.run(&blank, &[2.0; 80]).map_err(|e| ObjectError::Model(format!("{shown}: {e}")))?;
        Ok(m)
    }

    fn run(&self, rgb: &Rgb, min_score: &[f32; 80]) -> Result<Vec<Detection>, String> {
        let s = self.size as usize;
        let (data, lb) = nanodet::preprocess(rgb, self.size);
        let input = Tensor::from_shape(&[1, 3, s, s], &data).map_err(|e| format!("input tensor: {e}"))?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(|e| format!("inference failed: {e:#}"))?;
        let mut views = Vec::new();
        for o in &outputs {
            let shape = o.shape();
            let slice = o.as_slice::<f32>().map_err(|e| format!("output is not f32: {e}"))?;
            match shape {
                [1, n, c] => views.push((*n, *c, slice)),
                _ => return Err(format!("unexpected output shape {shape:?}")),
            }
        }
        let mut levels = Vec::new();
        for stride in nanodet::STRIDES {
            let n = (s / stride as usize).pow(2);
            let find = |c: usize| views.iter().find(|v| v.0 == n && v.1 == c).map(|v| v.2);
            match (find(80), find(44)) {
                (Some(scores), Some(boxes)) => levels.push(Level { stride, scores, boxes }),
                _ => {
                    return Err(format!("no [1, {n}, 80] and [1, {n}, 44] outputs for stride {stride}: not NanoDet-g?"))
                }
            }
        }
        Ok(nanodet::postprocess(&levels, &lb, min_score))
    }
}

impl Model for TractModel {
    fn infer(&self, rgb: &Rgb, min_score: &[f32; 80]) -> Result<Vec<Detection>, ObjectError> {
        self.run(rgb, min_score).map_err(|e| ObjectError::Model(format!("{}: {e}", self.name)))
    }

    fn input_size(&self) -> u32 {
        self.size
    }

    fn name(&self) -> &str {
        &self.name
    }
}
