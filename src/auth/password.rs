//! Password hashes: PBKDF2-HMAC-SHA256 (ring), stored as
//! `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>` so the iteration count
//! can change in the config without invalidating existing hashes.
//!
//! Invariant: verification is constant-time in the hash (ring's
//! `pbkdf2::verify`) and total: a malformed stored string verifies nothing.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::pbkdf2;

const ALG: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
const PREFIX: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// Shortest password accepted for a new one.
pub const MIN_LEN: usize = 8;
/// Longest accepted (PBKDF2 hashes the password once per round: keep it bounded).
pub const MAX_LEN: usize = 256;

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str, iterations: u32) -> Result<String, String> {
    let rounds = NonZeroU32::new(iterations).ok_or("iterations must be at least 1")?;
    let salt: [u8; SALT_LEN] = super::random_bytes()?;
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(ALG, rounds, &salt, password.as_bytes(), &mut out);
    Ok(format!("{PREFIX}${iterations}${}${}", B64.encode(salt), B64.encode(out)))
}

/// True if `password` matches the stored hash.
pub fn verify(stored: &str, password: &str) -> bool {
    let Some((rounds, salt, expected)) = parse(stored) else { return false };
    pbkdf2::verify(ALG, rounds, &salt, password.as_bytes(), &expected).is_ok()
}

/// The iteration count of a stored hash (to rehash on login when the config asks for more).
pub fn iterations(stored: &str) -> Option<u32> {
    parse(stored).map(|(r, _, _)| r.get())
}

fn parse(stored: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    if parts.next()? != PREFIX {
        return None;
    }
    let rounds = NonZeroU32::new(parts.next()?.parse().ok()?)?;
    let salt = B64.decode(parts.next()?).ok()?;
    let hash = B64.decode(parts.next()?).ok()?;
    (parts.next().is_none() && hash.len() == HASH_LEN).then_some((rounds, salt, hash))
}

/// Refuses passwords too short or too long to be a good idea.
pub fn check_new(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!("the password is too short ({n} characters; at least {MIN_LEN})"));
    }
    // Characters, not bytes: the API document's maxLength counts characters.
    if n > MAX_LEN {
        return Err(format!("the password is too long ({n} characters; at most {MAX_LEN})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash("correct horse", 1000).expect("hash");
        let b = hash("correct horse", 1000).expect("hash");
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("pbkdf2-sha256$1000$"));
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct horsE"));
        assert!(!verify(&a, ""));
        assert_eq!(iterations(&a), Some(1000));
    }

    #[test]
    fn known_vector() {
        // RFC 7914 section 11 test vector (PBKDF2-HMAC-SHA256, "passwd"/"salt", 1 round, first 32 bytes).
        let h = hex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
        let stored = format!("{PREFIX}$1${}${}", B64.encode(b"salt"), B64.encode(&h));
        assert!(verify(&stored, "passwd"));
    }

    #[test]
    fn malformed_hashes_verify_nothing() {
        for s in ["", "x", "pbkdf2-sha256$0$AA$AA", "pbkdf2-sha256$1$!!$AA", "md5$1$AA$AA", "pbkdf2-sha256$1$AA$AA"] {
            assert!(!verify(s, ""), "{s}");
            assert!(!verify(s, "x"), "{s}");
        }
    }

    #[test]
    fn new_passwords_are_checked() {
        assert!(check_new("short").unwrap_err().contains("too short"));
        assert!(check_new("long enough").is_ok());
        assert!(check_new(&"x".repeat(300)).unwrap_err().contains("too long"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }
}
