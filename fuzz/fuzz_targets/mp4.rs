#![no_main]
//! Fuzz target `mp4`: see oxinvr::fuzzing::TARGETS and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxinvr::fuzzing::target("mp4")(data));
