//! The error of the glue code (CLI, shell, appliance, user admin, handlers):
//! a [`Kind`] saying what sort of failure it is, a message saying what was
//! being done, and the underlying error when there is one.
//!
//! Areas with their own typed error (`DbError`, `Mp4Error`, `OpenError`,
//! `HttpError`, `OtaError`, `ConfigError`) keep it; each converts into this
//! type where glue code meets it (the `From` impls live next to those types,
//! as a lower layer cannot name a higher one). The kind is then mapped once:
//! to an HTTP status in `web::reply::status_of`, to the shell's error line in
//! `appliance::shell::error_line`, to an exit code in `cli::exit_code`.
//!
//! Display is "message: source" (either part alone when the other is empty),
//! so `context` reads like a path: "cannot install: reading the bundle: ...".

use std::fmt;

/// What sort of failure, as far as the caller (a user, a client) can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request or an argument is malformed or out of range (the caller's fault).
    InvalidInput,
    /// No credential, or a wrong one.
    Unauthorized,
    /// Known caller, not allowed.
    Forbidden,
    /// The thing named does not exist.
    NotFound,
    /// Refused in the current state: a taken name, a stream with recordings,
    /// an install already running, not a booted appliance.
    Conflict,
    /// Well-formed but refused on its content: a bundle with a bad signature
    /// or for another board.
    Rejected,
    /// A service we relay to answered badly or not at all (go2rtc, a camera).
    Upstream,
    /// Temporarily unable: the recorder is not running, the limit of
    /// concurrent probes is reached, the database cannot be opened.
    Unavailable,
    /// Something we waited on did not answer in time (the storage thread).
    Timeout,
    /// A file, disk, database or socket operation failed.
    Io,
    /// A bug or an impossible state.
    Internal,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 11] = [
        Kind::InvalidInput,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::Conflict,
        Kind::Rejected,
        Kind::Upstream,
        Kind::Unavailable,
        Kind::Timeout,
        Kind::Io,
        Kind::Internal,
    ];

    /// A missing file is `NotFound` and a timed-out socket `Timeout`; anything
    /// else (permissions, bad data read back) is `Io`: on our own files that
    /// is the server's trouble, not the caller's.
    pub fn of_io(e: &std::io::Error) -> Kind {
        match e.kind() {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            std::io::ErrorKind::TimedOut => Kind::Timeout,
            _ => Kind::Io,
        }
    }

    /// The kind an HTTP error status stands for, for clients of our API (the
    /// inverse of `web::reply::status_of`, which its tests check).
    pub fn from_status(status: u16) -> Kind {
        match status {
            400 | 405 | 411 | 413 | 415 | 416 => Kind::InvalidInput,
            401 => Kind::Unauthorized,
            403 => Kind::Forbidden,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            422 => Kind::Rejected,
            429 | 503 => Kind::Unavailable,
            502 => Kind::Upstream,
            504 => Kind::Timeout,
            _ => Kind::Internal,
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of glue code: kind, what was being done, why.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub source: Option<BoxError>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }
    /// `kind` with `source` as the whole story (the message comes from `context`).
    pub fn wrap(kind: Kind, source: impl Into<BoxError>) -> Error {
        Error { kind, message: String::new(), source: Some(source.into()) }
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Kind::InvalidInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(Kind::Forbidden, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, message)
    }
    pub fn upstream(message: impl Into<String>) -> Error {
        Error::new(Kind::Upstream, message)
    }
    pub fn io(message: impl Into<String>) -> Error {
        Error::new(Kind::Io, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, message)
    }

    /// Puts what was being done in front: "what: <previous message>".
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = if self.message.is_empty() { what.to_string() } else { format!("{what}: {}", self.message) };
        self
    }

    /// The same error with another kind (when the caller knows better, e.g.
    /// a missing file that is the user's argument, not our data).
    pub fn with_kind(mut self, kind: Kind) -> Error {
        self.kind = kind;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (m, Some(s)) if m.is_empty() => write!(f, "{s}"),
            (m, Some(s)) => write!(f, "{m}: {s}"),
            (m, None) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// See [`Kind::of_io`].
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::wrap(Kind::of_io(&e), e)
    }
}

/// `result.context("reading x")?` on any error that converts into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_is_what_then_why() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Error::from(io).context("cannot read /etc/x");
        assert_eq!(e.kind, Kind::NotFound);
        assert_eq!(e.to_string(), "cannot read /etc/x: No such file or directory");
        assert!(e.source().is_some());
        let e = e.context("loading the config");
        assert_eq!(e.to_string(), "loading the config: cannot read /etc/x: No such file or directory");
        assert_eq!(Error::invalid("name is empty").to_string(), "name is empty");
        assert!(Error::invalid("x").source().is_none());
    }

    #[test]
    fn io_kinds() {
        use std::io::ErrorKind as K;
        let k = |ek| Error::from(std::io::Error::from(ek)).kind;
        assert_eq!(k(K::NotFound), Kind::NotFound);
        assert_eq!(k(K::TimedOut), Kind::Timeout);
        assert_eq!(k(K::PermissionDenied), Kind::Io);
        assert_eq!(k(K::InvalidData), Kind::Io);
        assert_eq!(k(K::WriteZero), Kind::Io);
    }

    #[test]
    fn context_on_results() {
        let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
        let e = r.context("writing /data/x").unwrap_err();
        assert_eq!((e.kind, e.to_string()), (Kind::Io, "writing /data/x: disk on fire".to_string()));
        let r: Result<()> = Err(Error::invalid("odd"));
        let e = r.with_context(|| format!("step {}", 2)).unwrap_err();
        assert_eq!((e.kind, e.to_string()), (Kind::InvalidInput, "step 2: odd".to_string()));
    }
}
