//! The webhooks' API and start: `GET /api/webhooks` (each hook with its last
//! deliveries), `POST /api/webhooks/{name}/test` (a test event), and
//! `start`, which runs `notify::webhook` with the API's JSON of an event.
//!
//! Invariant: nothing here shows a secret (the status has none) or waits for
//! a receiver: a test is queued and answered 202 at once.

use std::sync::Arc;

use serde_json::json;

use super::api::json_object;
use super::reply::{ApiError, Reply};
use super::router::Query;
use super::state::Nvr;
use super::Ctx;
use crate::notify::webhook::{Render, TestError, Webhooks};

/// Starts the webhooks when `[[webhooks]]` has entries; the handle goes in `nvr.webhooks`.
pub fn start(nvr: &Arc<Nvr>) -> Result<(), String> {
    if nvr.config.webhooks.is_empty() {
        return Ok(());
    }
    let render: Render = Arc::new(super::events::event_json);
    let hooks = Webhooks::spawn(&nvr.config.webhooks, nvr.events.hub(), render, nvr.clock.clone())
        .map_err(|e| format!("cannot start the webhook threads: {e}"))?;
    let _ = nvr.webhooks.set(hooks);
    Ok(())
}

/// `GET /api/webhooks`.
pub fn list(ctx: &Ctx, q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let hooks = ctx.nvr.webhooks.get().map(|w| w.status()).unwrap_or_default();
    Ok(Reply::json(200, &json!({ "webhooks": hooks })))
}

/// `POST /api/webhooks/{name}/test`: 202 once the test event is queued.
pub fn test(ctx: &Ctx, name: &str, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        if let Some(k) = json_object(body)?.keys().next() {
            return Err(ApiError::bad_request(format!("unknown field {k:?}: this call takes no fields")));
        }
    }
    let hooks = ctx.nvr.webhooks.get();
    let none = || ApiError::not_found(format!("no webhook named {name:?} (see GET /api/webhooks)"));
    match hooks.ok_or_else(none)?.test(name) {
        Ok(delivery) => Ok(Reply::json(202, &json!({ "queued": true, "delivery": delivery }))),
        Err(TestError::NoSuchHook) => Err(none()),
        Err(TestError::Failed(why)) => Err(ApiError::conflict(format!("webhook {name:?} cannot send: {why}"))),
    }
}
