//! A camera's JPEG snapshot as detection's source, for a stream with no
//! H.264 to decode (an H.265 camera): the `detect-NAME` thread GETs the
//! stream's `snapshot_url` at `detect.fps`, decodes the JPEG (pure Rust,
//! scaled down in the IDCT) and turns it into the small luma motion wants.
//!
//! Invariants:
//! - Every request has one deadline for all of it ([`DEADLINE`]: connect,
//!   send, every read) and a size cap ([`MAX_JPEG_BYTES`]): a camera that
//!   hangs or floods costs one late sample, never a stuck thread.
//! - The credentials come from the URL (like the RTSP URL's) and go out
//!   only in an `Authorization` header (Basic or Digest, as the camera's
//!   401 asks); they never appear in logs, errors or the API (the URL is
//!   shown with its password masked).
//! - Memory: one JPEG (at most 4 MiB, a camera's is ~100-500 KB) and one
//!   picture decoded at least `SNAPSHOT_WIDTH` wide, both freed after the
//!   sample; nothing is kept between samples but the luma motion holds.

use std::time::Duration;

use super::motion::Luma;
use super::picture::Rgb;

/// Longest one snapshot request may take, all of it.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// Largest JPEG taken from a camera.
pub const MAX_JPEG_BYTES: u64 = 4 << 20;
/// Largest picture decoded (4K).
const MAX_PIXELS: u64 = 3840 * 2160;

/// A camera's snapshot endpoint, with what its last 401 asked for.
pub struct SnapshotClient {
    /// The URL without its user and password.
    target: url::Url,
    /// The URL as logs and the API show it (password masked).
    shown: String,
    creds: Option<(String, String)>,
    /// The scheme the camera asked for (kept: Digest counts its nonces).
    auth: Option<http_auth::PasswordClient>,
}

impl SnapshotClient {
    /// A client of `url` (`http://[user:password@]host[:port]/path`).
    pub fn new(url: &str) -> Result<SnapshotClient, String> {
        let mut target = url::Url::parse(url).map_err(|e| format!("the snapshot URL is not a URL: {e}"))?;
        if target.scheme() != "http" {
            return Err(format!("the snapshot URL's scheme {:?} is not supported (use http://)", target.scheme()));
        }
        let creds = (!target.username().is_empty() || target.password().is_some())
            .then(|| (percent_decode(target.username()), percent_decode(target.password().unwrap_or(""))));
        let mut shown = target.clone();
        if creds.is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let _ = target.set_username("");
        let _ = target.set_password(None);
        let shown = shown.to_string();
        Ok(SnapshotClient { target, shown, creds, auth: None })
    }

    /// The URL as it may be shown (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One snapshot's JPEG bytes, within [`DEADLINE`] per request (a camera
    /// asking for credentials costs a second request, the first time only).
    pub fn fetch(&mut self) -> Result<Vec<u8>, String> {
        for _ in 0..2 {
            let authorization = self.authorization()?;
            let r = crate::base::httpclient::get_buffered(
                &self.target,
                authorization.as_deref(),
                MAX_JPEG_BYTES,
                DEADLINE,
                &self.shown,
            )
            .map_err(|e| e.to_string())?;
            match r.status {
                200 => return jpeg_only(r.body, &self.shown),
                401 if self.creds.is_none() => {
                    return Err(format!(
                        "GET {}: the camera wants a user and password (put them in snapshot_url)",
                        self.shown
                    ))
                }
                401 => {
                    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
                    let again = self.auth.is_none();
                    self.auth = Some(
                        http_auth::PasswordClient::try_from(challenge)
                            .map_err(|e| format!("GET {}: cannot answer the camera's login ({e})", self.shown))?,
                    );
                    if !again {
                        // A fresh challenge after an answer: once more, then give up.
                        self.auth = None;
                        return Err(format!("GET {}: the camera refused the user and password (HTTP 401)", self.shown));
                    }
                }
                other => return Err(format!("GET {}: the camera answered HTTP {other}", self.shown)),
            }
        }
        Err(format!("GET {}: the camera refused the user and password (HTTP 401)", self.shown))
    }

    /// The `Authorization` value for the next request, once the camera asked.
    fn authorization(&mut self) -> Result<Option<String>, String> {
        let (Some(auth), Some((user, pass))) = (self.auth.as_mut(), self.creds.as_ref()) else { return Ok(None) };
        let mut uri = self.target.path().to_string();
        if let Some(q) = self.target.query() {
            uri.push('?');
            uri.push_str(q);
        }
        let params = http_auth::PasswordParams { username: user, password: pass, uri: &uri, method: "GET", body: None };
        auth.respond(&params)
            .map(Some)
            .map_err(|e| format!("GET {}: cannot answer the camera's login: {e}", self.shown))
    }
}

/// `%XX` escapes of a URL's user or password, decoded (invalid ones kept).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body, if it is a JPEG (a login page or an error text is not).
fn jpeg_only(body: Vec<u8>, shown: &str) -> Result<Vec<u8>, String> {
    if body.starts_with(&[0xff, 0xd8]) {
        Ok(body)
    } else {
        Err(format!("GET {shown}: the answer is not a JPEG ({} bytes)", body.len()))
    }
}

/// The snapshot decoded at least `min_width` wide (for the event picture).
pub fn decode(jpeg: &[u8], min_width: u16) -> Result<Rgb, String> {
    Rgb::from_jpeg_scaled(jpeg, MAX_PIXELS, Some(min_width)).map_err(|e| format!("snapshot: {e}"))
}

/// The picture's luma (BT.601, limited range, integers) box-averaged to `width` columns.
pub fn luma(rgb: &Rgb, width: u16) -> Luma {
    let (w, h) = (rgb.width as usize, rgb.height as usize);
    let plane: Vec<u8> = rgb
        .data
        .chunks_exact(3)
        .map(|p| {
            let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
            ((66 * r + 129 * g + 25 * b + 128) >> 8) as u8 + 16
        })
        .collect();
    super::decode::downscale(&plane, w, w, h, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let c = SnapshotClient::new("http://admin:s%40cret@cam.local:8080/snap.jpg?ch=1").expect("client");
        assert_eq!(c.target.as_str(), "http://cam.local:8080/snap.jpg?ch=1");
        assert_eq!(c.creds, Some(("admin".into(), "s@cret".into())));
        assert!(!c.shown().contains("cret") && c.shown().contains("admin:***@cam.local"), "{}", c.shown());
        let plain = SnapshotClient::new("http://cam.local/snap.jpg").expect("client");
        assert_eq!((&plain.creds, plain.shown()), (&None, "http://cam.local/snap.jpg"));
        assert!(SnapshotClient::new("https://cam.local/snap.jpg").is_err());
    }

    #[test]
    fn luma_of_a_picture_is_small_and_in_range() {
        let white = Rgb { width: 640, height: 360, data: vec![255; 640 * 360 * 3] };
        let l = luma(&white, 160);
        assert_eq!((l.width, l.height), (160, 90));
        assert!(l.data.iter().all(|&y| y == 235), "limited-range white");
        let black = Rgb { width: 64, height: 36, data: vec![0; 64 * 36 * 3] };
        assert!(luma(&black, 32).data.iter().all(|&y| y == 16));
    }

    #[test]
    fn only_jpegs_are_taken() {
        assert!(jpeg_only(b"<html>login</html>".to_vec(), "x").is_err());
        assert!(jpeg_only(vec![0xff, 0xd8, 0xff, 0xe0], "x").is_ok());
    }
}
