//! OxiNVR: RTSP cameras in, every frame kept in crash-safe fragmented MP4.
//! See docs/ARCHITECTURE.md for the data flow, threads and invariants.
//!
//! Layers, lowest first; a layer names only the ones before it
//! (checked by tests/layers.rs): base, index, config, governor, auth, events, recording,
//! detect, playback, appliance, onvif, notify, replicate, archive, web, cli.

pub mod appliance;
pub mod archive;
pub mod auth;
pub mod base;
pub mod cli;
pub mod config;
pub mod detect;
pub mod events;
pub mod governor;
pub mod index;
pub mod notify;
pub mod onvif;
pub mod playback;
pub mod recording;
pub mod replicate;
pub mod web;

/// The coverage-guided fuzz targets (fuzz/fuzz_targets, one per entry here)
/// and their corpus replay (tests/fuzz_corpus.rs). See docs/FUZZING.md.
/// Not an API: the entry points live in their layers' `fuzz` modules.
#[doc(hidden)]
pub mod fuzzing {
    /// A target's name (fuzz/corpus/NAME, fuzz/fuzz_targets/NAME.rs) and entry point.
    pub type Target = (&'static str, fn(&[u8]));

    pub const TARGETS: &[Target] = &[
        ("mp4", crate::recording::fuzz::mp4),
        ("recover", crate::recording::fuzz::recover),
        ("ota", crate::appliance::fuzz::ota),
        ("config", config),
        ("http", crate::web::fuzz::http),
        ("websocket", crate::web::fuzz::websocket),
        ("json", crate::web::fuzz::json),
        ("rtsp", crate::recording::fuzz::rtsp),
        ("onvif", crate::onvif::fuzz::answers),
    ];

    /// The entry point of target `name`.
    pub fn target(name: &str) -> fn(&[u8]) {
        TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).unwrap_or_else(|| panic!("no fuzz target {name}"))
    }

    /// `data` as the configuration file (and as a stream URL, a go2rtc address).
    fn config(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let _ = crate::config::validate_stream_url(text);
        let _ = crate::config::go2rtc_addr(text);
        let _ = crate::config::Config::parse(text, "fuzz.toml");
    }
}
