//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits,
//! what every authenticator app speaks), their base32 secrets, the
//! `otpauth://` enrolment URI and its QR code as SVG.
//!
//! Invariants: a code is accepted for the current step and one step either
//! side (clock skew), and never for a step at or before the last one used
//! (no replay) unless that one is ahead of now (the clock was set back);
//! verification compares in constant time.

use ring::hmac;

pub const STEP_SECONDS: i64 = 30;
const DIGITS: u32 = 6;
pub const SECRET_LEN: usize = 20;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            out.push(ALPHABET[((v >> (35 - i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// Decodes base32 (case-insensitive; spaces and `=` ignored).
pub fn from_base32(s: &str) -> Option<Vec<u8>> {
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The code of one step.
pub fn code(secret: &[u8], step: i64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let d = mac.as_ref();
    let off = usize::from(d[d.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([d[off] & 0x7f, d[off + 1], d[off + 2], d[off + 3]]);
    bin % 10u32.pow(DIGITS)
}

/// The step a code matched (to remember against replay), if it is valid at
/// `now_ms` and newer than `last_step`.
pub fn verify(secret: &[u8], given: &str, now_ms: i64, last_step: Option<i64>) -> Option<i64> {
    let given = given.trim();
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now_ms.div_euclid(1000 * STEP_SECONDS);
    let mut found = None;
    for step in [now - 1, now, now + 1] {
        let expected = format!("{:0width$}", code(secret, step), width = DIGITS as usize);
        // Constant time: every step is compared in full.
        if super::same(expected.as_bytes(), given.as_bytes()) {
            found = Some(step);
        }
    }
    // A last use ahead of now means the clock was set back since: the code of
    // a step already used is refused, not every code until the clock catches up.
    // (Db::use_totp_step applies the same rule, atomically.)
    found.filter(|s| last_step.is_none_or(|last| *s > last || last > *s + 2))
}

/// `otpauth://totp/OxiNVR:<user>?secret=...&issuer=OxiNVR`
pub fn uri(user: &str, secret: &[u8]) -> String {
    let label: String = url::form_urlencoded::byte_serialize(format!("OxiNVR:{user}").as_bytes()).collect();
    format!(
        "otpauth://totp/{}?secret={}&issuer=OxiNVR&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        label.replace('+', "%20"),
        base32(secret)
    )
}

/// The URI as a QR code: an SVG of dark modules on white with a 4-module margin.
pub fn qr_svg(text: &str) -> Result<String, String> {
    use qrcodegen::{QrCode, QrCodeEcc};
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|e| format!("cannot make a QR code: {e:?}"))?;
    let n = qr.size();
    let mut path = String::new();
    for y in 0..n {
        for x in 0..n {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + 4, y + 4));
            }
        }
    }
    let side = n + 8;
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" shape-rendering=\"crispEdges\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA1 seed "12345678901234567890"; 8-digit codes, we keep 6.
        let secret = b"12345678901234567890";
        for (t, code8) in [(59i64, 94287082u32), (1111111109, 7081804), (1111111111, 14050471), (2000000000, 69279037)]
        {
            assert_eq!(code(secret, t / STEP_SECONDS), code8 % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn verify_window_and_replay() {
        let secret = b"12345678901234567890";
        let now_ms = 1_111_111_111_000;
        let step = now_ms / 1000 / STEP_SECONDS;
        let c = |s: i64| format!("{:06}", code(secret, s));
        assert_eq!(verify(secret, &c(step), now_ms, None), Some(step));
        assert_eq!(verify(secret, &c(step - 1), now_ms, None), Some(step - 1));
        assert_eq!(verify(secret, &c(step + 1), now_ms, None), Some(step + 1));
        assert_eq!(verify(secret, &c(step - 2), now_ms, None), None, "too old");
        assert_eq!(verify(secret, &c(step), now_ms, Some(step)), None, "replayed");
        // The clock was set back an hour after a login: codes work again.
        assert_eq!(verify(secret, &c(step), now_ms, Some(step + 120)), Some(step), "clock set back");
        assert_eq!(verify(secret, "12345", now_ms, None), None);
        assert_eq!(verify(secret, "abcdef", now_ms, None), None);
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(from_base32("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(from_base32("mzxw 6ytb oi======").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(from_base32("1"), None);
        let s: Vec<u8> = (0..20).collect();
        assert_eq!(from_base32(&base32(&s)), Some(s));
    }

    #[test]
    fn enrolment_uri_and_qr() {
        let u = uri("alice smith", b"12345678901234567890");
        assert!(u.starts_with(
            "otpauth://totp/OxiNVR%3Aalice%20smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=OxiNVR"
        ));
        let svg = qr_svg(&u).expect("qr");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("M4,4h1v1h-1z"));
    }
}
