//! OxiNVR: RTSP cameras in, every frame kept in crash-safe fragmented MP4.
//! See docs/ARCHITECTURE.md for the data flow, threads and invariants.

pub mod clock;
pub mod config;
pub mod db;
pub mod ingest;
pub mod media;
pub mod mp4;
pub mod retention;
pub mod ring;
pub mod segment;
pub mod storage;
pub mod web;
