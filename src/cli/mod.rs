//! The `oxinvr` command line: `run`, `archive`, `check`, `shell`, `ota`, `user`, `detect-bench`, `--version`, `config`.

pub mod app;
pub mod archive;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::base::error::{Error, Kind, Result};

const USAGE: &str = "\
usage: oxinvr <command> [options]

commands:
  run   [--config FILE]            record the configured cameras and serve the API
  archive --config FILE            index the bucket of [archive] (what boxes replicate)
                                   and serve its recordings: no cameras, no recording
  check [--config FILE] [--repair] compare the database with the files on disk
  config                           print the embedded default configuration
  shell [--config FILE]            the console (UART): status, streams, recordings,
                                   network, logs, ota, reboot, factory-reset
  ota keygen --out-dir DIR         make an OTA signing key: DIR/ota.key (PKCS#8, 0600)
                                   and DIR/ota.pub (hex, goes into the image)
  ota make-bundle --key FILE --board B --version V --image FILE --out FILE
                                   sign a rootfs image into a bundle (.oxb)
  ota verify [--config FILE] [--pub FILE] [--board B] BUNDLE
                                   check a bundle like install does, write nothing
  ota install [--config FILE] [--reboot] BUNDLE|http://URL
                                   write a bundle into the inactive slot, boot it next
  ota status [--config FILE]       running slot, boot selector state, versions
  ota mark-good [--config FILE] [--wait-healthy SECONDS]
                                   the running slot is healthy (after /api/health
                                   answers, when waiting)
  user add NAME --role ROLE [--config FILE]
                                   make a user (viewer, operator or admin); the password
                                   is asked twice on a terminal, else read from stdin
  user passwd NAME [--config FILE] set a new password (ends their sessions)
  user del NAME [--config FILE]    delete a user (never the last admin)
  user list [--config FILE]        list users
  user key NAME [--label L] [--config FILE]
                                   make an API key for NAME and print it (shown once;
                                   use it as 'Authorization: Bearer KEY')
  user bench [--config FILE]       time one login's password hashing
  detect-bench FILE.h264 [--config FILE] [--clip-fps N] [--gate] [--verbose]
                                   decode every frame of an H.264 Annex B file (or
                                   only what the detect.fps gate lets through) for
                                   motion detection; print the time per frame and
                                   the motion found (JSON)
  detect-bench --objects PICTURE.jpg [--config FILE] [--model FILE.onnx] [--size N] [--runs N]
                                   load the object detector ([detect], or the
                                   model FILE) at input size N (default
                                   detect.input_size), run it N times (default 10)
                                   on the picture; print load and inference times,
                                   the model's heap, peak RSS and the objects (JSON)
  --version                        print the version

Without --config the embedded defaults are used (data in ./oxinvr-data,
web on port 8080 of every interface).";

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oxinvr: {e}");
            ExitCode::from(exit_code(e.kind))
        }
    }
}

/// The exit code of a command that failed, by kind: 2 for every kind. Scripts
/// (the OTA and fresh-machine checks, init) read 2 as "not done, the message
/// says why" and 1 as "done, and it found problems" (`check`, `ota mark-good
/// --wait-healthy`); telling kinds apart is the message's job, so no kind
/// gets a code of its own (that would also change what existing scripts see).
pub fn exit_code(kind: Kind) -> u8 {
    match kind {
        Kind::InvalidInput
        | Kind::Unauthorized
        | Kind::Forbidden
        | Kind::NotFound
        | Kind::Conflict
        | Kind::Rejected
        | Kind::Upstream
        | Kind::Unavailable
        | Kind::Timeout
        | Kind::Io
        | Kind::Internal => 2,
    }
}

/// A usage mistake: what is wrong, then the usage.
fn usage_error(what: String) -> Error {
    Error::invalid(format!("{what}\n\n{USAGE}"))
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`oxinvr --help | head -1`)
/// panics, and with panic=abort (the MIPS build) aborts. One-shot commands get the
/// default behaviour back: a closed pipe ends them quietly. `run` keeps ignoring
/// it: a client closing its socket must never kill the recorder.
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code; done before any other thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let Some(cmd) = args.first() else { return Err(usage_error("no command given".into())) };
    let rest = &args[1..];
    if cmd != "run" {
        default_sigpipe();
    }
    match cmd.as_str() {
        "--version" | "-V" | "version" => {
            println!("oxinvr {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        "config" => {
            print!("{}", crate::config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let opts = Opts::parse(rest, &[])?;
            crate::base::logging::init();
            crate::cli::app::run(opts.config.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        "archive" => {
            let opts = Opts::parse(rest, &[])?;
            crate::base::logging::init();
            crate::cli::archive::run(opts.config.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        "check" => {
            let opts = Opts::parse(rest, &["--repair"])?;
            crate::base::logging::init();
            let problems =
                crate::cli::app::check(opts.config.as_deref(), opts.flags.contains(&"--repair".to_string()))?;
            Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        "shell" => {
            let opts = Opts::parse(rest, &[])?;
            crate::appliance::shell::run(opts.config.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        "ota" => ota(rest),
        "user" | "users" => user(rest),
        "detect-bench" => detect_bench(rest),
        other => Err(usage_error(format!("unknown command {other:?}"))),
    }
}

/// CPU time of this thread (a loaded machine inflates wall times, not this).
fn thread_cpu_us() -> u128 {
    let mut ts = nix::libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u128) * 1_000_000 + (ts.tv_nsec as u128) / 1000
}

/// Replays an H.264 file through the decoder and the motion detector, every
/// frame (no rate gate), timing each stage: the per-frame figures of
/// docs/MIPS.md and bench/results.
fn detect_bench(args: &[String]) -> Result<ExitCode> {
    use crate::detect::{annexb, decode::LumaDecoder, worker::motion_params, Mask, MotionDetector};
    let valued = ["--clip-fps", "--objects", "--model", "--size", "--runs"];
    let opts = Opts::parse_full(args, &["--gate", "--verbose"], &valued, 1)?;
    if let Some(picture) = opts.value("--objects") {
        return object_bench(&picture, &opts);
    }
    let clip_fps: i64 = match opts.value("--clip-fps") {
        Some(v) => v
            .parse()
            .ok()
            .filter(|f| (1..=120).contains(f))
            .ok_or_else(|| Error::invalid("--clip-fps must be 1..=120"))?,
        None => 25,
    };

    let [file] = &opts.positional[..] else { return Err(usage_error("detect-bench needs one FILE.h264".into())) };
    let cfg = crate::config::Config::load(opts.config.as_deref())?;
    let mut gate = opts.flags.iter().any(|f| f == "--gate").then(|| crate::detect::worker::Gate::new(cfg.detect.fps));
    let bytes = std::fs::read(file).map_err(|e| Error::io(format!("cannot read {file}: {e}")))?;
    let stream = annexb::parse(&bytes).ok_or_else(|| Error::invalid(format!("{file}: no H.264 SPS/PPS found")))?;
    let mut decoder = LumaDecoder::new(u16::try_from(cfg.detect.width).unwrap_or(160));
    decoder.start_run(&stream.codec, &stream.sample_entry).map_err(|e| Error::invalid(format!("{file}: {e}")))?;
    let mut detector = MotionDetector::new(motion_params(&cfg.detect), Mask::default());
    let (mut decode_us, mut motion_us, mut decoded, mut changes) = (0u128, 0u128, 0u64, Vec::new());
    let cpu_start = thread_cpu_us();
    let verbose = opts.flags.iter().any(|f| f == "--verbose");
    for (i, unit) in stream.units.iter().enumerate() {
        let at_ms = i as i64 * 1000 / clip_fps;
        if let Some(g) = gate.as_mut() {
            if !g.admit(unit.key, !decoder.needs_keyframe(), at_ms) {
                decoder.skipped();
                continue;
            }
        }
        let t = Instant::now();
        let luma = decoder.decode(&unit.data, unit.key).map(|p| p.map(|p| p.luma()));
        decode_us += t.elapsed().as_micros();
        let Ok(Some(luma)) = luma else { continue };
        decoded += 1;
        let t = Instant::now();
        let (verdict, change) = detector.feed(&luma, at_ms);
        motion_us += t.elapsed().as_micros();
        if verbose {
            eprintln!("{at_ms} ms key={} cells={} moving={}", unit.key, verdict.changed_cells, verdict.moving);
        }
        changes.extend(change.map(|c| format!("{c:?}")));
    }
    let cpu_us = thread_cpu_us().saturating_sub(cpu_start);
    let per = |us: u128| us as f64 / 1000.0 / decoded.max(1) as f64;
    let report = serde_json::json!({
        "file": file, "frames": stream.units.len(), "decoded": decoded,
        "decode_ms_per_frame": per(decode_us), "motion_ms_per_frame": per(motion_us),
        "cpu_ms_per_frame": per(cpu_us),
        "native_bytes_estimate": decoder.native_bytes_estimate(), "motion": changes,
    });
    println!("{report:#}");
    Ok(ExitCode::SUCCESS)
}

/// Times the object model on one picture at one input size (one size per
/// run, so peak RSS belongs to that size): docs/MIPS.md and bench/results.
fn object_bench(picture: &str, opts: &Opts) -> Result<ExitCode> {
    use crate::base::memory::{heap_by_subsystem, process_memory};
    use crate::detect::objects::{self, Filter};
    let number = |k: &str, default: u32, lo: u32, hi: u32| -> Result<u32> {
        match opts.value(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| Error::invalid(format!("{k} must be {lo}..={hi}, not {v:?}"))),
        }
    };
    let cfg = crate::config::Config::load(opts.config.as_deref())?;
    let (size, runs) = (number("--size", cfg.detect.input_size, 160, 640)?, number("--runs", 10, 1, 1000)?);
    let bytes = std::fs::read(picture).map_err(|e| Error::io(format!("cannot read {picture}: {e}")))?;
    let rgb = crate::detect::picture::Rgb::from_jpeg(&bytes, 3840 * 2160)
        .map_err(|e| Error::invalid(format!("{picture}: {e}")))?;
    let detect_heap = || heap_by_subsystem().into_iter().find(|(n, _)| *n == "detect").map_or(0, |(_, b)| b);
    let (heap_before, t) = (detect_heap(), Instant::now());
    // --model: that file here; else what [detect] says (local model or a remote OxiNVR).
    let mut detector = match opts.value("--model") {
        Some(path) => {
            let model = objects::shared_model(&path, size).map_err(|e| Error::invalid(e.to_string()))?;
            objects::Detector::with_model(model, Filter::from_config(&cfg.detect))
        }
        None => {
            let d = crate::config::DetectConfig { input_size: size, ..cfg.detect.clone() };
            objects::Detector::from_config(&d).map_err(|e| Error::invalid(e.to_string()))?
        }
    };
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let model_heap = detect_heap().saturating_sub(heap_before);
    // Wall time and this thread's CPU time (the machine may be busy; tract runs on the caller's thread).
    let (mut times, mut cpu, mut found) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu_us());
        found = detector.detect(&rgb).map_err(|e| Error::invalid(e.to_string()))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        cpu.push(thread_cpu_us().saturating_sub(c) as f64 / 1000.0);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let mem = process_memory();
    let objects: Vec<_> =
        found.iter().map(|d| serde_json::json!({ "label": d.label, "score": d.score, "box": d.bbox })).collect();
    let report = serde_json::json!({
        "picture": picture, "width": rgb.width, "height": rgb.height, "detector": detector.describe(),
        "input_size": size, "runs": runs, "load_ms": load_ms,
        "infer_ms_median": times[times.len() / 2], "infer_ms_min": times[0],
        "infer_cpu_ms_median": cpu[cpu.len() / 2], "infer_cpu_ms_min": cpu[0],
        "model_heap_bytes": model_heap, "rss_bytes": mem.rss, "peak_rss_bytes": mem.peak_rss,
        "objects": objects,
    });
    println!("{report:#}");
    Ok(ExitCode::SUCCESS)
}

fn ota(args: &[String]) -> Result<ExitCode> {
    use crate::{appliance::ota, config::Config};
    let Some(sub) = args.first() else { return Err(usage_error("ota needs a subcommand".into())) };
    let rest = &args[1..];
    let load = |opts: &Opts| Config::load(opts.config.as_deref()).map_err(Error::from);
    let mut out = std::io::stdout();
    match sub.as_str() {
        "--help" | "-h" | "help" => println!("{USAGE}"),
        "keygen" => {
            let opts = Opts::parse_full(rest, &[], &["--out-dir"], 0)?;
            let dir = opts.value("--out-dir").ok_or_else(|| Error::invalid("ota keygen needs --out-dir DIR"))?;
            let (key, public) = ota::keygen(&PathBuf::from(dir))?;
            println!("wrote {} (private: keep it off the box, never commit it)", key.display());
            println!("wrote {} (public: goes into the image as system.ota_public_key)", public.display());
        }
        "make-bundle" => {
            const NEEDED: [&str; 5] = ["--key", "--board", "--version", "--image", "--out"];
            let opts = Opts::parse_full(rest, &[], &NEEDED, 0)?;
            let missing: Vec<&str> = NEEDED.into_iter().filter(|k| opts.value(k).is_none()).collect();
            if !missing.is_empty() {
                return Err(usage_error(format!("ota make-bundle needs {}", missing.join(", "))));
            }
            let need = |k: &str| opts.value(k).ok_or_else(|| Error::invalid(format!("ota make-bundle needs {k}")));
            let (key, image, out_path) =
                (PathBuf::from(need("--key")?), PathBuf::from(need("--image")?), PathBuf::from(need("--out")?));
            let spec = ota::BundleSpec {
                key: &key,
                board: &need("--board")?,
                version: &need("--version")?,
                image: &image,
                out: &out_path,
            };
            let m = ota::make_bundle(&spec)?;
            for img in &m.images {
                println!(
                    "wrote {}: version {} for board {}, {} {} bytes, sha256 {}",
                    out_path.display(),
                    m.version,
                    m.board,
                    img.name,
                    img.size,
                    img.sha256
                );
            }
        }
        "verify" => {
            let opts = Opts::parse_full(rest, &[], &["--pub", "--board"], 1)?;
            let bundle = opts.positional.first().ok_or_else(|| Error::invalid("ota verify needs a bundle file"))?;
            let cfg = load(&opts)?;
            let public = opts.value("--pub").map_or(cfg.system.ota_public_key.clone(), PathBuf::from);
            let board = opts.value("--board").unwrap_or(cfg.system.board.clone());
            let m = ota::verify_file(&PathBuf::from(bundle), &public, &board, &mut out)?;
            println!("ok: version {} for board {}, signed by {}", m.version, m.board, public.display());
        }
        "install" => {
            let opts = Opts::parse_full(rest, &["--reboot"], &[], 1)?;
            let source = opts
                .positional
                .first()
                .ok_or_else(|| Error::invalid("ota install needs a bundle file or http:// URL"))?;
            let cfg = load(&opts)?;
            let reboot = opts.flags.iter().any(|f| f == "--reboot");
            if reboot {
                crate::appliance::require_appliance("reboot")?;
            }
            ota::install_from(&cfg.system, source, &mut out)?;
            if reboot {
                println!("rebooting into the new slot");
                crate::appliance::reboot()?;
            }
        }
        "status" => {
            let opts = Opts::parse(rest, &[])?;
            for l in ota::status(&load(&opts)?.system) {
                println!("{l}");
            }
        }
        "mark-good" => {
            let opts = Opts::parse_full(rest, &[], &["--wait-healthy"], 0)?;
            let cfg = load(&opts)?;
            if let Some(secs) = opts.value("--wait-healthy") {
                let secs: u64 = secs
                    .parse()
                    .map_err(|_| Error::invalid(format!("--wait-healthy {secs:?} is not a number of seconds")))?;
                if let Err(e) = wait_healthy(&cfg, secs) {
                    eprintln!("oxinvr: not marked good: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
            println!("{}", ota::mark_good(&cfg.system)?);
        }
        other => return Err(usage_error(format!("unknown ota subcommand {other:?}"))),
    }
    Ok(ExitCode::SUCCESS)
}

fn user(args: &[String]) -> Result<ExitCode> {
    use crate::auth::admin;
    use std::io::IsTerminal;
    let Some(sub) = args.first() else { return Err(usage_error("user needs a subcommand".into())) };
    if matches!(sub.as_str(), "--help" | "-h" | "help") {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = Opts::parse_full(&args[1..], &[], &["--role", "--label"], 1)?;
    let cfg = crate::config::Config::load(opts.config.as_deref())?;
    let name =
        || opts.positional.first().cloned().ok_or_else(|| Error::invalid(format!("user {sub} needs a user name")));
    let new_password = || {
        let stdin = std::io::stdin();
        admin::read_new_password(&mut stdin.lock(), stdin.is_terminal())
    };
    let out = match sub.as_str() {
        "add" => {
            let role =
                opts.value("--role").ok_or_else(|| Error::invalid("user add needs --role viewer|operator|admin"))?;
            let n = name()?;
            admin::add(&cfg, &n, &role, &new_password()?)?
        }
        "passwd" => {
            let n = name()?;
            admin::passwd(&cfg, &n, &new_password()?)?
        }
        "del" | "delete" => admin::delete(&cfg, &name()?)?,
        "list" => admin::list(&cfg)?,
        "key" => admin::key(&cfg, &name()?, &opts.value("--label").unwrap_or_else(|| "console".into()))?,
        "bench" => admin::bench(&cfg, 5)?,
        other => return Err(usage_error(format!("unknown user subcommand {other:?}"))),
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Polls GET /api/health on the configured listen address for up to `secs`.
fn wait_healthy(cfg: &crate::config::Config, secs: u64) -> Result<()> {
    let client = crate::base::httpclient::Client::new(crate::base::httpclient::loopback_addr(&cfg.web.listen)?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let last = match client.request("GET", "/api/health", None) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => r.error_message(),
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() >= deadline {
            return Err(Error::new(
                Kind::Timeout,
                format!("/api/health on {} did not answer 200 in {secs} s: {last}", client.addr),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

struct Opts {
    config: Option<PathBuf>,
    flags: Vec<String>,
    values: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], allowed_flags: &[&str]) -> Result<Opts> {
        Self::parse_full(args, allowed_flags, &[], 0)
    }

    /// `--config`, `allowed_flags`, `valued` options (`--k V` or `--k=V`) and
    /// at most `max_positional` other arguments.
    fn parse_full(args: &[String], allowed_flags: &[&str], valued: &[&str], max_positional: usize) -> Result<Opts> {
        let mut opts = Opts { config: None, flags: Vec::new(), values: Vec::new(), positional: Vec::new() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            if name == "--config" || name == "-c" || valued.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| Error::invalid(format!("{name} needs a value")))?.clone(),
                };
                if name == "--config" || name == "-c" {
                    opts.config = Some(PathBuf::from(v));
                } else {
                    opts.values.push((name.to_string(), v));
                }
            } else if allowed_flags.contains(&a.as_str()) {
                opts.flags.push(a.clone());
            } else if !a.starts_with('-') && opts.positional.len() < max_positional {
                opts.positional.push(a.clone());
            } else if !a.starts_with('-') {
                return Err(usage_error(format!("unexpected argument {a:?}")));
            } else {
                return Err(usage_error(format!("unknown option {a:?}")));
            }
        }
        Ok(opts)
    }

    fn value(&self, name: &str) -> Option<String> {
        self.values.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}
