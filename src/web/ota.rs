//! `POST /api/system/ota`: a bundle uploaded as the request body is streamed
//! through `ota::install` (the same code as `oxinvr ota install` and the
//! shell) into the inactive slot; `GET /api/system/ota` shows the progress of
//! the running install and the result of the last one.
//!
//! Invariants: one install at a time (a second upload gets 409); the body is
//! never buffered (bundles are far larger than `web.max_body_bytes`, which
//! this route alone is exempt from); nothing is written before the signature
//! and board are checked (`ota::install`).

use std::sync::Mutex;

use serde_json::{json, Value};

use super::reply::{ApiError, Reply};
use super::{Ctx, Query};
use crate::appliance::ota;
use crate::base::error::Error;

static STATE: Mutex<Option<Value>> = Mutex::new(None);
static BUSY: Mutex<bool> = Mutex::new(false);

fn set_state(v: Value) {
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
}

/// The route's path, for the body-size exemption in `serve`.
pub const PATH: &str = "/api/system/ota";

pub fn status(q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    let state = STATE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Reply::json(200, &state.unwrap_or_else(|| json!({ "state": "idle" }))))
}

/// Installs the uploaded bundle; `?reboot=true` reboots a second after success.
pub fn upload(ctx: &Ctx, q: &Query, rq: &mut tiny_http::Request) -> Result<Reply, ApiError> {
    q.only(&["reboot"]).map_err(ApiError::bad_request)?;
    let reboot = match q.get("reboot") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("reboot must be true or false, not {other:?}"))),
    };
    let len = rq.body_length().ok_or_else(|| ApiError::new(411, "the bundle upload needs a Content-Length"))?;
    {
        let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        if *busy {
            return Err(Error::conflict("an update is already being installed; see GET /api/system/ota").into());
        }
        *busy = true;
    }
    set_state(json!({ "state": "installing", "percent": 0 }));
    let mut reader = rq.as_reader();
    let result = ota::install(&ctx.nvr.config.system, &mut reader, Some(len as u64), &mut |p: ota::Progress| {
        set_state(json!({ "state": "installing", "phase": format!("{:?}", p.phase).to_lowercase(),
                          "done": p.done, "total": p.total, "percent": p.percent() }));
    });
    *BUSY.lock().unwrap_or_else(|p| p.into_inner()) = false;
    match result {
        Ok(done) => {
            let v = json!({
                "state": "installed",
                "version": done.manifest.version,
                "board": done.manifest.board,
                "slot": format!("{:?}", done.slot),
                "running": format!("{:?}", done.running),
                "reboot": if reboot { "rebooting" } else { "reboot to activate the new slot" },
            });
            set_state(v.clone());
            if reboot {
                std::thread::spawn(|| {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if let Err(e) = crate::appliance::reboot() {
                        log::error!("reboot after update failed: {e}");
                    }
                });
            }
            Ok(Reply::json(200, &v))
        }
        Err(e) => {
            set_state(json!({ "state": "failed", "error": e.to_string() }));
            Err(Error::from(e).context("update refused").into())
        }
    }
}
