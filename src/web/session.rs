//! Authentication of API requests and the auth, user and key routes. STUB.

use super::reply::{ApiError, Reply};
use super::request::RequestInfo;
use super::router::Matched;
use super::{Call, Ctx};
use crate::auth::Principal;
use crate::db::Db;
use crate::nvr::Nvr;

pub fn admit(_nvr: &Nvr, _db: &Db, _req: &RequestInfo, _m: &Matched) -> Result<Option<Principal>, ApiError> {
    Ok(None)
}

pub fn dispatch(_ctx: &Ctx, _c: &Call) -> Result<Reply, ApiError> {
    Err(ApiError::new(501, "not implemented yet"))
}
