//! What a handler answers: a status, headers and a body that is either bytes
//! or a reader of known length; and the API error type.
//!
//! Invariant: every error reaches the client as a 4xx/5xx with the JSON body
//! `{"error": "<message>"}`, the message naming the parameter or stream at
//! fault; 5xx messages are also logged.
//!
//! `status_of` is the one place a `base::error::Kind` becomes an HTTP status:
//! handlers return a `base::error::Error` from glue code (or a typed error
//! that converts into one, like `DbError`) and `?` turns it into an
//! `ApiError`. Statuses that are HTTP's own business (405, 411, 413, 415,
//! 416, 429, and 401 with its `WWW-Authenticate`) are still built here directly.

use std::io::Read;

use serde::Serialize;

use crate::base::error::{Error, Kind};

/// The HTTP status of each kind of error.
pub fn status_of(kind: Kind) -> u16 {
    match kind {
        Kind::InvalidInput => 400,
        Kind::Unauthorized => 401,
        Kind::Forbidden => 403,
        Kind::NotFound => 404,
        Kind::Conflict => 409,
        Kind::Rejected => 422,
        Kind::Upstream => 502,
        Kind::Unavailable => 503,
        Kind::Timeout => 504,
        Kind::Io | Kind::Internal => 500,
    }
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Extra headers (`Allow` for 405, `Content-Range` for 416).
    pub headers: Vec<(&'static str, String)>,
    /// Extra fields of the JSON body besides `error` (e.g. `totp_required`).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), headers: Vec::new(), extra: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The status of its kind; the body's message is the whole "what: why".
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::new(status_of(e.kind), e.to_string())
    }
}

/// Through [`Error`]: a missing row is 404, a broken rule 409, bad input
/// 400, SQLite's own failure 500.
impl From<crate::index::db::DbError> for ApiError {
    fn from(e: crate::index::db::DbError) -> Self {
        Error::from(e).into()
    }
}

pub enum Body {
    Bytes(Vec<u8>),
    /// A reader that yields exactly this many bytes.
    Reader(Box<dyn Read + Send>, u64),
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Reply { status, headers: vec![("Content-Type", "application/json".into())], body: Body::Bytes(body) }
            }
            Err(e) => Reply::from(ApiError::internal(format!("cannot encode the answer: {e}"))),
        }
    }

    /// A text answer of the given content type.
    pub fn text(status: u16, content_type: &str, text: String) -> Reply {
        Reply { status, headers: vec![("Content-Type", content_type.into())], body: Body::Bytes(text.into_bytes()) }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// Bytes the body will have.
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Reader(_, n) => *n,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        if e.status >= 500 {
            log::warn!("HTTP {}: {}", e.status, e.message);
        }
        let mut body = serde_json::json!({ "error": e.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (e.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut r = Reply::json(e.status, &body);
        r.headers.extend(e.headers);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_extra_headers() {
        let r = Reply::from(ApiError::new(405, "no").with_header("Allow", "GET".into()));
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET".into())));
        assert!(r.headers.contains(&("Content-Type", "application/json".into())));
        let Body::Bytes(b) = r.body else { panic!("bytes expected") };
        assert_eq!(b, b"{\"error\":\"no\"}\n");
    }

    #[test]
    fn each_kind_has_its_status() {
        let table = [
            (Kind::InvalidInput, 400),
            (Kind::Unauthorized, 401),
            (Kind::Forbidden, 403),
            (Kind::NotFound, 404),
            (Kind::Conflict, 409),
            (Kind::Rejected, 422),
            (Kind::Upstream, 502),
            (Kind::Unavailable, 503),
            (Kind::Timeout, 504),
            (Kind::Io, 500),
            (Kind::Internal, 500),
        ];
        assert_eq!(table.len(), Kind::ALL.len());
        for (kind, status) in table {
            assert_eq!(status_of(kind), status, "{kind:?}");
            // Clients of the API (the shell) read the kind back from the status.
            if status != 500 {
                assert_eq!(Kind::from_status(status), kind, "{status}");
            }
        }
    }

    #[test]
    fn an_error_answers_what_then_why_in_the_same_body() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Error::from(io).context("recording 7: /data/x.mp4");
        let r = Reply::from(ApiError::from(e));
        assert_eq!(r.status, 404);
        let Body::Bytes(b) = r.body else { panic!("bytes expected") };
        assert_eq!(b, b"{\"error\":\"recording 7: /data/x.mp4: No such file or directory\"}\n");
        let db = crate::index::db::DbError::NotFound { what: "user \"x\"".into() };
        assert_eq!(ApiError::from(db).status, 404);
        let db = crate::index::db::DbError::Conflict { what: "name taken".into() };
        assert_eq!(ApiError::from(db), ApiError::new(409, "name taken"));
    }
}
