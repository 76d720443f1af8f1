//! The command line as a user meets it: versions, bad configs, `check`.

mod common;

use std::process::Command;

use common::nvr::oxinvr_bin;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(oxinvr_bin()).args(args).output().expect("run oxinvr");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_and_usage() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("oxinvr "), "{out}");
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command") && err.contains("usage:"), "{err}");
    let (code, out, _) = run(&["config"]);
    assert_eq!(code, 0);
    assert!(out.contains("segment_seconds = 300"), "{out}");
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    let cases = [
        ("[storage]\nsegment_seconds = 60\nretention = 3\n", "retention", ":3"),
        ("[storage]\nsync_seconds = 0\n", "storage.sync_seconds", ":2"),
        ("[[streams]]\nname = \"front door\"\nurl = \"rtsp://10.0.0.2/\"\n", "streams[0].name", ":2"),
        ("[[streams]]\nname = \"a\"\nurl = \"http://10.0.0.2/\"\n", "streams[0].url", ":3"),
        ("[web]\nlisten = 8080\n", "listen", ":2"),
    ];
    for (text, key, line) in cases {
        std::fs::write(&cfg, text).expect("write");
        let (code, _, err) = run(&["run", "--config", cfg.to_str().expect("utf-8")]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key) && err.contains(line), "{text:?} gave {err:?}");
    }
    let (code, _, err) = run(&["run", "--config", "/nonexistent/oxinvr.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/oxinvr.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn check_finds_orphans_and_repair_adopts_or_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("oxinvr.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[[streams]]\nname = \"cam\"\nurl = \"rtsp://127.0.0.1:9/x\"\n",
            data.display()
        ),
    )
    .expect("write");
    let c = cfg.to_str().expect("utf-8");
    let (code, out, _) = run(&["check", "--config", c]);
    assert_eq!(code, 0, "{out}");
    // An unplayable stray file in a stream's directory.
    let day = data.join("recordings/cam/2026-11-21");
    std::fs::create_dir_all(&day).expect("mkdir");
    std::fs::write(day.join("1795000000000.mp4"), b"not an mp4 at all").expect("write");
    let (code, out, _) = run(&["check", "--config", c]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"orphans_removed\": 1") && out.contains("--repair"), "{out}");
    assert!(day.join("1795000000000.mp4").exists(), "check without --repair must change nothing");
    let (code, out, _) = run(&["check", "--config", c, "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(!day.join("1795000000000.mp4").exists(), "the unplayable orphan was not removed");
}

#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `oxinvr config | head -0`: the reader is gone before the first write.
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(oxinvr_bin())
        .arg("config")
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.signal(), Some(6), "aborted on a closed pipe");
    assert!(out.status.success() || out.status.signal() == Some(13), "{:?}", out.status);
}

#[test]
fn user_help_prints_the_usage_without_an_error() {
    let (code, out, err) = run(&["user", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("user add NAME") && out.contains("user key NAME"), "{out}");
    assert!(!err.contains("unknown") && !out.contains("unknown"), "{out}{err}");
}

/// `oxinvr user key` is how a console user (and scripts/demo) gets a key for
/// ffplay/curl: the printed key must open the API of a running recorder.
#[test]
fn a_key_made_on_the_console_opens_the_api() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let nvr = common::nvr::Oxinvr::start(
        dir.path(),
        "[storage]\ndata_dir = \"{DATA}\"\n[web]\nlisten = \"127.0.0.1:{PORT}\"\n",
    );
    let c = nvr.config.to_str().expect("utf-8 path");
    let mut child = Command::new(oxinvr_bin())
        .args(["user", "add", "viewer1", "--role", "viewer", "--config", c])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run oxinvr user add");
    child.stdin.take().expect("stdin").write_all(b"a long enough password\n").expect("write the password");
    let add = child.wait_with_output().expect("wait");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let (code, _, err) = run(&["user", "key", "nobody", "--config", c]);
    assert_eq!(code, 2);
    assert!(err.contains("no user \"nobody\""), "{err}");
    let (code, key, err) = run(&["user", "key", "viewer1", "--label", "ffplay", "--config", c]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim();
    assert!(key.starts_with("oxk_"), "{key}");
    let bearer = format!("Bearer {key}");
    let r = common::nvr::http(nvr.port, "GET", "/api/streams", &[("Authorization", &bearer)], b"").expect("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    let r =
        common::nvr::http(nvr.port, "GET", "/api/streams", &[("Authorization", "Bearer oxk_wrong")], b"").expect("GET");
    assert_eq!(r.status, 401);

    // A player's URL credentials: the key as the Basic password, for media reads only
    // (anywhere else a browser's cached Basic credential would bypass CSRF).
    use base64::Engine;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("anyone:{key}")));
    let get =
        |path: &str, headers: &[(&str, &str)]| common::nvr::http(nvr.port, "GET", path, headers, b"").expect("GET");
    let r = get("/api/playback/nocam.m3u8", &[("Authorization", &basic)]);
    assert_eq!(r.status, 404, "the key should be accepted and the stream not found: {}", r.text());
    let r = get("/api/streams", &[("Authorization", &basic)]);
    assert_eq!(r.status, 401, "Basic must not open other routes: {}", r.text());
    // A media URL asked with no credential challenges a player for Basic; a browser
    // (Sec-Fetch-*) and other routes get Bearer, so no password dialog opens.
    let challenge = |r: &common::nvr::Response| r.header("WWW-Authenticate").unwrap_or_default().to_string();
    assert!(challenge(&get("/api/playback/cam.m3u8", &[])).starts_with("Basic "));
    assert!(challenge(&get("/api/playback/cam.m3u8", &[("Sec-Fetch-Site", "same-origin")])).starts_with("Bearer "));
    assert!(challenge(&get("/api/streams", &[])).starts_with("Bearer "));
}
