//! The embedded single-page UI (web-static/). STUB: filled in by the UI work.

use super::reply::{ApiError, Reply};
use super::request::RequestInfo;

pub fn serve(file: &str, _req: &RequestInfo) -> Reply {
    Reply::from(ApiError::not_found(format!("no such file: /{file}")))
}
