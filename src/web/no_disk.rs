//! The web server of a recorder without its data disk (`storage.require_mount`
//! and the data directory is not a mount point): nothing records, and every
//! way a user looks says why. The page (`/`), `/api/health` and `/api/system`
//! carry the reason; every other path is 503 with it.
//!
//! Invariants:
//! - It touches no file: no database, no log file, no console token (the data
//!   directory is the root file system's, and the disk may appear under it).
//! - It answers without a login: there is no user table to check one against,
//!   and it tells nothing but the version, the data directory and the reason.
//! - One thread; every answer is a few hundred bytes (fits a socket buffer),
//!   under the same connection limits as the full server.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::json;

use crate::config::Config;

pub struct NoDisk {
    server: Arc<tiny_http::Server>,
    thread: JoinHandle<()>,
}

impl NoDisk {
    pub fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

/// Listens on `web.listen` and answers with `why` until stopped.
pub fn spawn(cfg: &Config, why: String) -> io::Result<NoDisk> {
    let listen = &cfg.web.listen;
    let server = tiny_http::Server::http_limited(listen, super::limits(&cfg.web))
        .map_err(|e| io::Error::other(format!("cannot listen on {listen}: {e}")))?;
    let server = Arc::new(server);
    let data_dir = cfg.storage.data_dir.display().to_string();
    let srv = server.clone();
    let thread = std::thread::Builder::new().name("http-no-disk".into()).spawn(move || {
        for rq in srv.incoming_requests() {
            let (status, ctype, body) = answer(rq.url(), &data_dir, &why);
            let header = tiny_http::Header::from_bytes("Content-Type", ctype).ok();
            let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
            if let Some(h) = header {
                resp = resp.with_header(h);
            }
            let _ = rq.respond(resp);
        }
    })?;
    Ok(NoDisk { server, thread })
}

/// Status, content type and body for a request path.
fn answer(url: &str, data_dir: &str, why: &str) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    let version = env!("CARGO_PKG_VERSION");
    let disk = json!({ "data_dir": data_dir, "recording": "no_disk", "problem": why });
    match url.split('?').next().unwrap_or("") {
        // 200: the firmware runs (an OTA install may be marked good); `recording` says the rest.
        "/api/health" => {
            (200, JSON, json!({ "ok": true, "version": version, "recording": "no_disk", "problem": why }).to_string())
        }
        "/api/system" => (200, JSON, json!({ "version": version, "disk": disk }).to_string()),
        "/" | "/index.html" => (200, "text/html; charset=utf-8", page(why)),
        _ => (503, JSON, json!({ "error": format!("nothing records: {why}") }).to_string()),
    }
}

fn page(why: &str) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>OxiNVR: not recording</title>\
         <h1>OxiNVR is not recording</h1><p>{}</p>\
         <p>Nothing records until the data disk is back: connect it, then restart the recorder \
         (or the box).</p>",
        escape(why)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_says_why_nothing_records() {
        let why = "the data disk is not mounted at /d <x>";
        let (st, _, body) = answer("/api/health", "/d", why);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!((st, v["recording"].as_str(), v["problem"].as_str()), (200, Some("no_disk"), Some(why)));
        let (_, _, body) = answer("/api/system?x=1", "/d", why);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["disk"]["problem"], why);
        let (st, _, body) = answer("/api/streams", "/d", why);
        assert_eq!(st, 503);
        assert!(body.contains("nothing records"));
        let (_, ctype, body) = answer("/", "/d", why);
        assert!(ctype.starts_with("text/html") && body.contains("&lt;x&gt;"), "{body}");
    }
}
