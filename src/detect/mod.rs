//! Detection: what happens in front of a camera, seen from its stream's ring.
//! Decoding is for detection only (recording stays copy-only).
//!
//! Data flow (one `detect-NAME` thread per stream with `detect = ["motion"]`):
//! ring cursor -> `worker::Gate` (keyframes + up to `detect.fps`) ->
//! `decode` (OpenH264, luma only, box-averaged to `detect.width`) ->
//! `motion` (integer background model, cells, mask, hysteresis) ->
//! [`worker::MotionSink`] (motion start / end): in the recorder,
//! [`sink::EventSink`] (a `motion` event with a snapshot, in the events store).
//! On moving frames (at most one a second) `objects` looks for COCO objects;
//! `zones` names the zones each is in (and drops those outside required
//! zones) before the sink opens `object` events.
//!
//! `fleet` keeps one such thread per stream the recorder has (API adds and
//! deletes included).
//!
//! Invariants: ingest never waits for detection (the ring's writer never
//! waits for a reader; a slow detector loses frames, not recording); the
//! motion core is pure and deterministic (times come in with the frames).
//! Layer: above `recording` (it reads rings), below `web`.

pub mod annexb;
pub mod decode;
pub mod fleet;
pub mod motion;
pub mod objects;
pub mod picture;
pub mod sink;
pub mod snapshot;
pub mod switch;
pub mod worker;
pub mod zones;

pub use motion::{Luma, Mask, MotionChange, MotionDetector, MotionParams};
pub use worker::{
    spawn, DetectCounters, DetectHandle, DetectSetup, DetectStats, Motion, MotionSink, NoPicture, Settings,
    SettingsSource, Zoned,
};
