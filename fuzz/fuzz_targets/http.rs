#![no_main]
//! Fuzz target `http`: see oxinvr::fuzzing::TARGETS and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxinvr::fuzzing::target("http")(data));
