//! Live view: `GET /api/streams/{name}/live` as a WebSocket of fMP4 fragments
//! read from the stream's ring. STUB: filled in by the live-view work.

use crate::nvr::Nvr;

/// Answers an authorised live request (the route and credentials are checked).
pub fn serve(_nvr: &Nvr, stream: &str, rq: tiny_http::Request) {
    let body = format!("{{\"error\":\"live view of {stream:?} is not implemented yet\"}}\n");
    let r = tiny_http::Response::from_string(body).with_status_code(501);
    if let Err(e) = rq.respond(r) {
        log::debug!("live: {e}");
    }
}
