//! The `oxinvr` command: `run`, `check`, `--version`, `config`.

use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: oxinvr::memory::CountingAlloc = oxinvr::memory::CountingAlloc;

const USAGE: &str = "\
usage: oxinvr <command> [options]

commands:
  run   [--config FILE]            record the configured cameras and serve the API
  check [--config FILE] [--repair] compare the database with the files on disk
  config                           print the embedded default configuration
  --version                        print the version

Without --config the embedded defaults are used (data in ./oxinvr-data,
web on 127.0.0.1:8080).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oxinvr: {e}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode, String> {
    let Some(cmd) = args.first() else { return Err(format!("no command given\n\n{USAGE}")) };
    let rest = &args[1..];
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
            print!("{}", oxinvr::config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let opts = Opts::parse(rest, &[])?;
            oxinvr::logging::init();
            oxinvr::app::run(opts.config.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        "check" => {
            let opts = Opts::parse(rest, &["--repair"])?;
            oxinvr::logging::init();
            let problems = oxinvr::app::check(opts.config.as_deref(), opts.flags.contains(&"--repair".to_string()))?;
            Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}

struct Opts {
    config: Option<PathBuf>,
    flags: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], allowed_flags: &[&str]) -> Result<Opts, String> {
        let mut opts = Opts { config: None, flags: Vec::new() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--config" || a == "-c" {
                let v = it.next().ok_or("--config needs a file name")?;
                opts.config = Some(PathBuf::from(v));
            } else if let Some(v) = a.strip_prefix("--config=") {
                opts.config = Some(PathBuf::from(v));
            } else if allowed_flags.contains(&a.as_str()) {
                opts.flags.push(a.clone());
            } else {
                return Err(format!("unknown option {a:?}\n\n{USAGE}"));
            }
        }
        Ok(opts)
    }
}
