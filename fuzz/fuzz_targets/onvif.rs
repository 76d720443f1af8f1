#![no_main]
//! Fuzz target `onvif`: see oxinvr::fuzzing::TARGETS and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxinvr::fuzzing::target("onvif")(data));
