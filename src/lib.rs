//! OxiNVR: RTSP cameras in, every frame kept in crash-safe fragmented MP4.
//! See docs/ARCHITECTURE.md for the data flow, threads and invariants.

pub mod media;
