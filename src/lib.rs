//! OxiNVR: RTSP cameras in, every frame kept in crash-safe fragmented MP4.
//! See docs/ARCHITECTURE.md for the data flow, threads and invariants.
//!
//! Layers, lowest first; a layer names only the ones before it
//! (checked by tests/layers.rs): base, index, config, auth, recording,
//! playback, appliance, web, cli.

pub mod appliance;
pub mod auth;
pub mod base;
pub mod cli;
pub mod config;
pub mod index;
pub mod playback;
pub mod recording;
pub mod web;
