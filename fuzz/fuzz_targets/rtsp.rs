#![no_main]
//! Fuzz target `rtsp`: see oxinvr::fuzzing::TARGETS and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxinvr::fuzzing::target("rtsp")(data));
