//! OxiNVR: RTSP cameras in, every frame kept in crash-safe fragmented MP4.
//! See docs/ARCHITECTURE.md for the data flow, threads and invariants.

pub mod app;
pub mod appliance;
pub mod auth;
pub mod bootenv;
pub mod clock;
pub mod config;
pub mod db;
pub mod httpclient;
pub mod ingest;
pub mod lineedit;
pub mod logging;
pub mod media;
pub mod memory;
pub mod mp4;
pub mod nvr;
pub mod ota;
pub mod retention;
pub mod ring;
pub mod rtsp;
pub mod segment;
pub mod shell;
pub mod storage;
pub mod web;
