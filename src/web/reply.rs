//! What a handler answers: a status, headers and a body that is either bytes
//! or a reader of known length; and the API error type.
//!
//! Invariant: every error reaches the client as a 4xx/5xx with the JSON body
//! `{"error": "<message>"}`, the message naming the parameter or stream at
//! fault; 5xx messages are also logged.

use std::io::Read;

use serde::Serialize;

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

/// Database failures are server errors.
impl From<crate::index::db::DbError> for ApiError {
    fn from(e: crate::index::db::DbError) -> Self {
        ApiError::internal(e.to_string())
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
}
