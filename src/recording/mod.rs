//! The recording pipeline: RTSP source -> ingest -> ring -> storage thread ->
//! segment files, with recovery and retention, and the `Recorder` that owns
//! the stream registry.

pub mod fragmenter;
#[doc(hidden)]
pub mod fuzz;
pub mod ingest;
pub mod media;
pub mod mp4;
pub mod recorder;
pub mod reserve;
pub mod retention;
pub mod ring;
pub mod rtsp;
pub mod segment;
pub mod storage;
pub mod stream;
pub mod trigger;
