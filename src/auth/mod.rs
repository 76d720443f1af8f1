//! Who may use OxiNVR: users with roles, password hashes, login sessions, API
//! keys, TOTP and login lockout. The HTTP side (cookies, CSRF, routes) is in
//! `web::session`; the tables are in `db::users`.
//!
//! Invariants:
//! - No secret is stored: session tokens and API keys are 32 random bytes
//!   shown once and kept as their SHA-256 (they are high-entropy, so a fast
//!   hash is enough); passwords as PBKDF2 ([`password`]).
//! - There is no default account: until a user exists only first-run setup
//!   (or `oxinvr user add` on the console) can create the first admin.
//! - The console token (`<data_dir>/console.token`, mode 0600, new at every
//!   start) is an admin credential for the UART shell and local scripts; whoever
//!   can read the data directory owns the box anyway.
//! - Failed logins are counted per user name and per client address; past
//!   `web.login_attempts` within `web.lockout_seconds` the key is locked for
//!   `web.lockout_seconds`, even for the right password.

pub mod admin;
pub mod password;
pub mod tls;
pub mod totp;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

pub use crate::index::db::Role;

/// How a caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A login session (cookie); state-changing requests must carry `csrf`.
    Session {
        id: i64,
        csrf: String,
    },
    ApiKey {
        id: i64,
    },
    /// The console token (UART shell, local scripts).
    Console,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// 0 for the console.
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub via: Via,
}

/// Prefix of API keys (so they are recognisable in scripts and leaks).
pub const KEY_PREFIX: &str = "oxk_";

/// Cryptographically random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| "the system random number generator failed".to_string())?;
    Ok(b)
}

/// A new random token (session, CSRF, key secret): 32 bytes, base64url.
pub fn new_token() -> Result<String, String> {
    Ok(B64URL.encode(random_bytes::<32>()?))
}

/// A new API key: the secret shown once, the prefix kept to recognise it, and
/// the hash that is stored (the web page and `oxinvr user key` share this).
pub fn new_api_key() -> Result<(String, String, Vec<u8>), String> {
    let key = format!("{KEY_PREFIX}{}", new_token()?);
    let prefix: String = key.chars().take(KEY_PREFIX.len() + 6).collect();
    let hash = token_hash(&key);
    Ok((key, prefix, hash))
}

/// What is stored for a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

/// Compares secrets without an early exit (time depends on the length only).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// User names: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(format!("{name:?} is not a user name (1-64 letters, digits, '.', '_', '-', '@')"));
    }
    Ok(())
}

/// Login failure bookkeeping, shared by the HTTP workers.
#[derive(Debug, Default)]
pub struct Lockout {
    // key ("user:<name>" or "addr:<ip>") -> (failures in the window, window start ms, locked until ms)
    entries: Mutex<HashMap<String, (u32, i64, i64)>>,
}

/// Most keys tracked at once; beyond it the stale ones are dropped first.
const LOCKOUT_KEYS: usize = 10_000;

impl Lockout {
    /// Milliseconds until `key` may try again, if it is locked now.
    pub fn locked(&self, key: &str, now_ms: i64) -> Option<i64> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|e| e.2 - now_ms).filter(|left| *left > 0)
    }

    /// Counts a failure; true if it locked the key.
    pub fn fail(&self, key: &str, now_ms: i64, attempts: u32, window_ms: i64) -> bool {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= LOCKOUT_KEYS && !map.contains_key(key) {
            map.retain(|_, e| e.2 > now_ms || now_ms - e.1 < window_ms);
        }
        if map.len() >= LOCKOUT_KEYS && !map.contains_key(key) {
            // Still full of live entries: forget the one that matters least (the
            // lock ending soonest, else the oldest window), never stop counting.
            let victim = map.iter().min_by_key(|(_, e)| (e.2, e.1)).map(|(k, _)| k.clone());
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        let e = map.entry(key.to_string()).or_insert((0, now_ms, 0));
        if now_ms - e.1 >= window_ms {
            *e = (0, now_ms, e.2);
        }
        e.0 += 1;
        if e.0 >= attempts {
            *e = (0, now_ms, now_ms + window_ms);
            return true;
        }
        false
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn clear(&self, key: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The recorder's authentication state that is not in the database.
#[derive(Debug, Default)]
pub struct Auth {
    pub lockout: Lockout,
    console: Mutex<Option<Vec<u8>>>,
}

/// Where the console token lives.
pub fn console_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("console.token")
}

impl Auth {
    /// Makes a new console token and writes it (mode 0600) for the shell.
    pub fn issue_console_token(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let token = new_token().map_err(std::io::Error::other)?;
        let path = console_token_path(data_dir);
        let tmp = path.with_extension("token.tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        *self.console.lock().unwrap_or_else(|p| p.into_inner()) = Some(token_hash(&token));
        Ok(())
    }

    /// True if `token` is this run's console token.
    pub fn is_console(&self, token: &str) -> bool {
        let guard = self.console.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().is_some_and(|h| same(h, &token_hash(token)))
    }
}

/// Reads the console token for a client (shell, scripts).
pub fn read_console_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(console_token_path(data_dir)).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_after_attempts_and_expiry() {
        let l = Lockout::default();
        let w = 300_000;
        for i in 0..4 {
            assert!(!l.fail("user:bob", 1000 + i, 5, w));
            assert_eq!(l.locked("user:bob", 1000 + i), None);
        }
        assert!(l.fail("user:bob", 2000, 5, w), "5th failure locks");
        assert_eq!(l.locked("user:bob", 2000), Some(w));
        assert_eq!(l.locked("user:bob", 2000 + w), None, "lock ends");
        assert_eq!(l.locked("user:eve", 2000), None, "other keys unaffected");
        // Failures spread wider than the window never lock.
        for i in 0..10 {
            assert!(!l.fail("addr:x", i * w, 5, w));
        }
        l.fail("user:c", 0, 2, w);
        l.clear("user:c");
        assert!(!l.fail("user:c", 1, 2, w), "cleared");
    }

    #[test]
    fn a_full_table_keeps_counting() {
        let l = Lockout::default();
        let w = 300_000;
        for i in 0..LOCKOUT_KEYS {
            l.fail(&format!("addr:{i}"), 1000, 5, w);
        }
        for t in 0..4 {
            assert!(!l.fail("user:victim", 2000 + t, 5, w));
        }
        assert!(l.fail("user:victim", 3000, 5, w), "the 5th failure still locks when the table is full");
        assert!(l.entries.lock().expect("lock").len() <= LOCKOUT_KEYS);
    }

    #[test]
    fn console_token_is_written_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let auth = Auth::default();
        assert!(!auth.is_console("x"));
        auth.issue_console_token(dir.path()).expect("issue");
        let t = read_console_token(dir.path()).expect("token");
        assert!(auth.is_console(&t));
        assert!(!auth.is_console(&format!("{t}x")));
        let mode = std::fs::metadata(console_token_path(dir.path())).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn names_and_roles() {
        assert!(check_username("alice.b-c_d@x").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::Admin.as_str(), "admin");
    }
}
