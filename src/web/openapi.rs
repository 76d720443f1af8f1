//! `GET /api/openapi.json`. STUB: filled in by the OpenAPI work.

use super::reply::{ApiError, Reply};
use super::router::Query;

pub fn document(_q: &Query) -> Result<Reply, ApiError> {
    Err(ApiError::new(501, "the OpenAPI document is not written yet"))
}
