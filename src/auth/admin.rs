//! `oxinvr user ...`: user accounts from a console, straight on the database
//! (works whether or not the recorder runs; SQLite serialises the writers).
//! This is how the first admin can be made without the web page, and how a
//! forgotten admin password is reset by whoever holds the console.

use std::io::{BufRead, Write};
use std::time::Instant;

use super::{check_username, password, Role};
use crate::base::clock::{rfc3339, Clock, RealClock};
use crate::base::error::{Context as _, Error, Result};
use crate::config::Config;
use crate::index::db::Db;

fn open(cfg: &Config) -> Result<Db> {
    std::fs::create_dir_all(&cfg.storage.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.storage.data_dir.display()))?;
    Ok(Db::open(&cfg.db_path())?)
}

/// Reads a new password: twice without echo from a terminal, one line otherwise.
pub fn read_new_password(input: &mut dyn BufRead, tty: bool) -> Result<String> {
    let mut read = |prompt: &str| -> Result<String> {
        if tty {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let _echo = tty.then(crate::base::lineedit::EchoOff::new);
        let mut line = String::new();
        input.read_line(&mut line).context("cannot read the password")?;
        if tty {
            eprintln!();
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let pw = read("new password: ")?;
    password::check_new(&pw).map_err(Error::invalid)?;
    if tty && read("again: ")? != pw {
        return Err(Error::invalid("the two passwords differ"));
    }
    Ok(pw)
}

pub fn add(cfg: &Config, name: &str, role: &str, pw: &str) -> Result<String> {
    check_username(name).map_err(Error::invalid)?;
    let role = Role::parse(role)
        .ok_or_else(|| Error::invalid(format!("role {role:?} is not one of viewer, operator, admin")))?;
    password::check_new(pw).map_err(Error::invalid)?;
    let hash = password::hash(pw, cfg.web.pbkdf2_iterations).map_err(Error::internal)?;
    let u = open(cfg)?.create_user(name, role, &hash, RealClock.now_ms())?;
    Ok(format!("user {:?} ({}) created", u.name, u.role.as_str()))
}

pub fn passwd(cfg: &Config, name: &str, pw: &str) -> Result<String> {
    password::check_new(pw).map_err(Error::invalid)?;
    let hash = password::hash(pw, cfg.web.pbkdf2_iterations).map_err(Error::internal)?;
    open(cfg)?.set_password(name, &hash, None)?;
    Ok(format!("password of {name:?} changed; their sessions were ended"))
}

pub fn delete(cfg: &Config, name: &str) -> Result<String> {
    open(cfg)?.delete_user(name)?;
    Ok(format!("user {name:?} deleted"))
}

/// Makes an API key for a user and returns it (shown once; only its hash is kept).
pub fn key(cfg: &Config, name: &str, label: &str) -> Result<String> {
    let label = label.trim();
    if label.is_empty() || label.len() > 64 {
        return Err(Error::invalid("--label: give the key a name of 1-64 characters"));
    }
    let db = open(cfg)?;
    let user = db.user_by_name(name)?.ok_or_else(|| Error::not_found(format!("no user {name:?}")))?;
    let (key, prefix, hash) = super::new_api_key().map_err(Error::internal)?;
    db.create_key(user.id, label, &prefix, &hash, RealClock.now_ms())?;
    Ok(key)
}

pub fn list(cfg: &Config) -> Result<String> {
    let users = open(cfg)?.list_users()?;
    if users.is_empty() {
        return Ok("no users: open the web page for first-run setup, or `oxinvr user add NAME --role admin`".into());
    }
    let mut out = format!("{:<24} {:<9} {:<5} {}\n", "NAME", "ROLE", "TOTP", "LAST LOGIN");
    for u in users {
        let last = u.last_login_ms.map_or_else(|| "never".into(), rfc3339);
        let totp = if u.totp_secret.is_some() { "yes" } else { "no" };
        out.push_str(&format!("{:<24} {:<9} {:<5} {last}\n", u.name, u.role.as_str(), totp));
    }
    Ok(out.trim_end().to_string())
}

/// Times hashing one password with the configured rounds (what a login costs).
pub fn bench(cfg: &Config, runs: u32) -> Result<String> {
    let n = cfg.web.pbkdf2_iterations;
    let stored = password::hash("benchmark password", n).map_err(Error::internal)?;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        if !password::verify(&stored, "benchmark password") {
            return Err(Error::internal("the benchmark hash did not verify"));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(format!("pbkdf2-sha256 {n} rounds: median {median:.1} ms per login ({} runs)", times.len()))
}
