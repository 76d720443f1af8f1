//! The remote object detector: a picture is sent as a JPEG to another
//! OxiNVR's `POST /api/detect` (or anything answering the same JSON) with an
//! API key, and its boxes come back.
//!
//! Invariants: connect, each write and each read are bounded by `DEADLINE`;
//! the address is resolved per call (a DHCP lease may move the detector);
//! labels the model does not know are dropped, scores and boxes are clamped
//! to 0..=1, so a broken or hostile answer cannot make odd detections.

use std::time::Duration;

use super::{Detection, ObjectError};
use crate::base::httpclient::Client;
use crate::config::{DetectConfig, OBJECT_LABELS};
use crate::detect::picture::Rgb;

/// Each step of one call (connect, sending the JPEG, the answer).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// JPEG quality of the pictures sent (detection does not need more).
const QUALITY: u8 = 85;

pub struct Remote {
    url: String,
    /// `host:port` and the path (+ query) of the endpoint.
    addr: String,
    path: String,
    key: String,
}

impl Remote {
    pub fn from_config(cfg: &DetectConfig) -> Result<Remote, ObjectError> {
        let (addr, path) = crate::config::remote_detector(&cfg.backend).map_err(ObjectError::Remote)?;
        let key = if cfg.api_key.is_empty() && !cfg.api_key_file.is_empty() {
            let text = std::fs::read_to_string(&cfg.api_key_file).map_err(|e| {
                ObjectError::Remote(format!("cannot read detect.api_key_file {}: {e}", cfg.api_key_file))
            })?;
            text.lines().next().unwrap_or_default().trim().to_string()
        } else {
            cfg.api_key.clone()
        };
        if key.is_empty() {
            return Err(ObjectError::Remote(format!("the remote detector {} needs an API key", cfg.backend)));
        }
        Ok(Remote { url: cfg.backend.clone(), addr, path, key })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Detections the remote model finds at or above `min_score`.
    pub fn detect(&self, rgb: &Rgb, min_score: f32) -> Result<Vec<Detection>, ObjectError> {
        let fail = |m: String| ObjectError::Remote(format!("remote detector {}: {m}", self.url));
        let jpeg = rgb.to_jpeg(QUALITY).map_err(|e| fail(e.to_string()))?;
        let addr = crate::base::httpclient::resolve_addr(&self.addr, DEADLINE)
            .map_err(fail)?
            .into_iter()
            .next()
            .ok_or_else(|| fail(format!("{} has no address", self.addr)))?;
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let path = format!("{}{sep}min_score={}", self.path, min_score.clamp(0.0, 1.0));
        let client = Client::new(addr).with_deadline(DEADLINE);
        let answer = client
            .request_bytes(("POST", &path), Some(&self.key), "image/jpeg", &jpeg)
            .map_err(|e| fail(e.to_string()))?;
        if answer.status != 200 {
            return Err(fail(format!("HTTP {}: {}", answer.status, answer.error_message())));
        }
        parse(&answer.json()).map_err(fail)
    }
}

/// `{"detections": [{"label", "score", "box": [x0, y0, x1, y1]}]}` -> detections.
pub fn parse(v: &serde_json::Value) -> Result<Vec<Detection>, String> {
    let list = v.get("detections").and_then(|d| d.as_array()).ok_or("the answer has no \"detections\" list")?;
    let mut out = Vec::new();
    for d in list {
        let label = d.get("label").and_then(|l| l.as_str()).unwrap_or_default();
        let Some(label) = OBJECT_LABELS.iter().find(|l| **l == label) else { continue };
        let score = d.get("score").and_then(|s| s.as_f64()).unwrap_or(0.0) as f32;
        let b = d
            .get("box")
            .and_then(|b| b.as_array())
            .filter(|b| b.len() == 4)
            .ok_or("a detection has no 4-number \"box\"")?;
        let mut bbox = [0f32; 4];
        for (o, n) in bbox.iter_mut().zip(b) {
            *o = (n.as_f64().ok_or("a box holds something other than numbers")? as f32).clamp(0.0, 1.0);
        }
        out.push(Detection { label, score: score.clamp(0.0, 1.0), bbox });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_read_and_clamped() {
        let v = json!({"detections": [
            {"label": "person", "score": 0.9, "box": [0.1, 0.2, 1.5, 0.4]},
            {"label": "unicorn", "score": 0.9, "box": [0, 0, 1, 1]},
        ], "model": "x", "ms": 3});
        let d = parse(&v).expect("parsed");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].label, "person");
        assert_eq!(d[0].bbox, [0.1, 0.2, 1.0, 0.4]);
        assert!(parse(&json!({"error": "no"})).is_err());
        assert!(parse(&json!({"detections": [{"label": "car", "score": 1, "box": [0, 0]}]})).is_err());
    }

    #[test]
    fn a_remote_needs_a_key_and_an_http_url() {
        let cfg = |backend: &str, key: &str| DetectConfig {
            backend: backend.into(),
            api_key: key.into(),
            ..Default::default()
        };
        assert!(Remote::from_config(&cfg("http://10.0.0.2:8080/api/detect", "")).is_err());
        let e = Remote::from_config(&cfg("https://10.0.0.2/api/detect", "k")).err().expect("https refused");
        assert!(e.to_string().contains("https"), "{e}");
        let r = Remote::from_config(&cfg("http://10.0.0.2:8080/api/detect", "k")).expect("ok");
        assert_eq!((r.addr.as_str(), r.path.as_str()), ("10.0.0.2:8080", "/api/detect"));
    }
}
