//! `POST /api/probe`: tests a camera URL. STUB: filled in by the live-view work.

use super::reply::{ApiError, Reply};
use super::router::Query;
use super::Ctx;

pub fn probe(_ctx: &Ctx, _q: &Query, _body: &[u8]) -> Result<Reply, ApiError> {
    Err(ApiError::new(501, "probing a camera is not implemented yet"))
}
