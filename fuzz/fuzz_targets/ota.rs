#![no_main]
//! Fuzz target `ota`: see oxinvr::fuzzing::TARGETS and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxinvr::fuzzing::target("ota")(data));
