//! Replays the fuzz corpus (fuzz/corpus/TARGET/*: seeds from real data,
//! minimized inputs the fuzzer found interesting, and every input that once
//! crashed or hung a target) through the same entry points the libFuzzer
//! targets call, on the stable toolchain. So a regression of a fixed crash
//! fails `cargo test` without libFuzzer. docs/FUZZING.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus file of `target`; names each input that panics.
fn replay(target: &str) {
    let run = oxinvr::fuzzing::target(target);
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no seed");
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: these inputs fail again:\n{}", failed.join("\n"));
}

#[test]
fn every_fuzz_target_has_an_entry_point_and_a_corpus() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("entry").path().file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = oxinvr::fuzzing::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fuzz/fuzz_targets and oxinvr::fuzzing::TARGETS disagree");
    for t in &listed {
        assert!(!corpus(t).is_empty(), "fuzz/corpus/{t} is empty");
    }
}

#[test]
fn mp4_corpus() {
    replay("mp4");
}

#[test]
fn recover_corpus() {
    replay("recover");
}

#[test]
fn ota_corpus() {
    replay("ota");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn http_corpus() {
    replay("http");
}

#[test]
fn websocket_corpus() {
    replay("websocket");
}

#[test]
fn json_corpus() {
    replay("json");
}

#[test]
fn rtsp_corpus() {
    replay("rtsp");
}

#[test]
fn onvif_corpus() {
    replay("onvif");
}
