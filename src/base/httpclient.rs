//! A tiny HTTP/1.1 client on `std::net::TcpStream`: the UART shell talks to
//! the running recorder's API on loopback with it (so the shell runs the very
//! code the API runs), `ota install http://...` downloads bundles with it, and
//! webhooks are POSTed with it ([`post`], http or https through rustls with
//! the ring provider, the TLS stack the box already has).
//! the ONVIF client posts its SOAP requests with [`post_buffered`], and
//! replication talks S3 with [`call`] (any method, custom headers, a body
//! streamed from a file, status + headers + body back).
//!
//! Downloads are plain `http://` only: bundles carry their own ed25519
//! signature, so the transport needs no integrity of its own; a bundle on an
//! HTTPS server is fetched on another machine and installed from a file (or
//! the file is uploaded to the API).
//!
//! Invariants: one request per connection (`Connection: close`); every name
//! lookup ([`resolve`]), read and write has a timeout (a [`post`] has one deadline for all of it); a
//! response header larger than `MAX_HEAD` and a buffered body larger than
//! `MAX_BODY` are refused, never allocated; the streaming body reader never
//! reads past the declared length.

use crate::base::error::{Error, Kind};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Largest response header accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body `Client::request` buffers.
const MAX_BODY: u64 = 16 << 20;
/// Largest answer [`post`] buffers (a camera's SOAP answer is a few KiB).
const MAX_POST_BODY: u64 = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_REDIRECTS: usize = 5;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Nothing listens at the address (connection refused).
    NotRunning(String),
    /// Network or protocol failure, with what was being done.
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::NotRunning(m) | HttpError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

/// Nobody listening is `Unavailable` (start the recorder); anything else the
/// other side's trouble (`Upstream`).
impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::NotRunning(_) => Error::wrap(Kind::Unavailable, e),
            HttpError::Failed(_) => Error::wrap(Kind::Upstream, e),
        }
    }
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The API's `{"error": "..."}` message, or the body as text.
    pub fn error_message(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(m) => m.to_string(),
            None => {
                let text = String::from_utf8_lossy(&self.body).trim().to_string();
                if text.is_empty() {
                    format!("HTTP {}", self.status)
                } else {
                    format!("HTTP {}: {text}", self.status)
                }
            }
        }
    }

    /// An error answer as an [`Error`]: the kind
    /// its status stands for, the API's message.
    pub fn error(&self) -> Error {
        Error::new(Kind::from_status(self.status), self.error_message())
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The address to reach a server listening on `listen` from this machine:
/// an unspecified address (`0.0.0.0`, `[::]`) becomes loopback.
pub fn loopback_addr(listen: &str) -> Result<SocketAddr, Error> {
    let mut a: SocketAddr =
        listen.parse().map_err(|_| Error::invalid(format!("{listen:?} is not an address like 127.0.0.1:8080")))?;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Ok(a)
}

/// A client of one server (the recorder's API).
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// The recorder's console token file: its token is sent as a Bearer
    /// credential, read afresh per request (a restarted recorder makes a new one).
    pub console_token: Option<std::path::PathBuf>,
    /// The token last read, sent when the file cannot be read (a failing data
    /// disk must not lock the console out of the recorder that reports it).
    last_token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Connect, and each read or write, must finish within this.
    timeout: Timeouts,
}

/// (connect, each read or write).
type Timeouts = (Duration, Duration);

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, console_token: None, last_token: Default::default(), timeout: (CONNECT_TIMEOUT, IO_TIMEOUT) }
    }

    /// The same client with every step (connect, each read and write) bounded
    /// by `d`: for services that must answer quickly (go2rtc's API).
    pub fn with_deadline(mut self, d: Duration) -> Client {
        self.timeout = (d, d);
        self
    }

    /// A client that authenticates with the console token kept in `token_file`.
    pub fn with_console_token(addr: SocketAddr, token_file: &std::path::Path) -> Client {
        Client {
            addr,
            console_token: Some(token_file.to_path_buf()),
            last_token: Default::default(),
            timeout: (CONNECT_TIMEOUT, IO_TIMEOUT),
        }
    }

    /// One request; `body` is sent as JSON. The whole answer is buffered.
    pub fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<Response, HttpError> {
        let payload = body.map(|b| b.to_string().into_bytes());
        let token = self.console_token.as_deref().and_then(|p| self.token(p));
        let body = payload.as_deref().map(|b| ("application/json", b));
        self.exchange((method, path), token.as_deref(), body)
    }

    /// One request with a body of any type and a bearer token (an API key):
    /// the remote object detector's `POST /api/detect` of a JPEG.
    pub fn request_bytes(
        &self,
        (method, path): (&str, &str),
        bearer: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        self.exchange((method, path), bearer, Some((content_type, body)))
    }

    fn exchange(
        &self,
        (method, path): (&str, &str),
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Result<Response, HttpError> {
        let what = format!("{method} http://{}{path}", self.addr);
        let stream = connect(&[self.addr], &what, self.timeout)?;
        let host = self.addr.to_string();
        let authorization = bearer.map(|t| format!("Bearer {t}"));
        let head = send(&stream, (method, &host, path), authorization.as_deref(), body, &what)?;
        let (status, headers, mut reader) = head;
        let len = body_len(&headers, &what)?;
        if len.is_some_and(|n| n > MAX_BODY) {
            return Err(HttpError::Failed(format!("{what}: the answer is larger than {MAX_BODY} bytes")));
        }
        let mut body = Vec::new();
        body_reader(&mut reader, &headers, len)
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| HttpError::Failed(format!("{what}: reading the answer: {e}")))?;
        if body.len() as u64 > MAX_BODY {
            return Err(HttpError::Failed(format!("{what}: the answer is larger than {MAX_BODY} bytes")));
        }
        Ok(Response { status, headers, body })
    }
}

/// A request body: (content type, bytes).
type Body<'a> = (&'a str, &'a [u8]);

impl Client {
    /// The console token from its file, else the last one read.
    fn token(&self, path: &std::path::Path) -> Option<String> {
        let mut last = self.last_token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = read_token(path) {
            *last = Some(t);
        }
        last.clone()
    }
}

fn connect(addrs: &[SocketAddr], what: &str, (connect_in, io): Timeouts) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(a, connect_in) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(io));
                let _ = s.set_write_timeout(Some(io));
                return Ok(s);
            }
            Err(e) => last = Some((a, e)),
        }
    }
    Err(match last {
        Some((a, e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            HttpError::NotRunning(format!("nothing answers on {a} ({e})"))
        }
        Some((a, e)) => HttpError::Failed(format!("{what}: cannot connect to {a}: {e}")),
        None => HttpError::Failed(format!("{what}: the host has no address")),
    })
}

type Head = (u16, Vec<(String, String)>, BufReader<TcpStream>);

/// Sends a request and reads the status line and headers.
fn send(
    stream: &TcpStream,
    (method, host, path): (&str, &str, &str),
    authorization: Option<&str>,
    body: Option<Body>,
    what: &str,
) -> Result<Head, HttpError> {
    let fail = |m: String| HttpError::Failed(format!("{what}: {m}"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: oxinvr/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some((kind, b)) = body {
        req.push_str(&format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut w = stream;
    w.write_all(req.as_bytes())
        .and_then(|()| w.write_all(body.map_or(&[][..], |(_, b)| b)))
        .and_then(|()| w.flush())
        .map_err(|e| fail(format!("sending the request: {e}")))?;
    let clone = stream.try_clone().map_err(|e| fail(format!("socket: {e}")))?;
    let mut reader = BufReader::new(clone);
    let (status, headers) = read_head(&mut reader).map_err(fail)?;
    Ok((status, headers, reader))
}

/// Reads `HTTP/1.x NNN reason` and the header lines.
fn read_head(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), String> {
    let mut total = 0usize;
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> Result<(), String> {
        line.clear();
        let n = r
            .take((MAX_HEAD - total.min(MAX_HEAD)) as u64)
            .read_line(line)
            .map_err(|e| format!("reading the answer: {e}"))?;
        total += n;
        if n == 0 {
            return Err("the server closed the connection before answering".into());
        }
        if total >= MAX_HEAD {
            return Err(format!("the answer's header is larger than {MAX_HEAD} bytes"));
        }
        Ok(())
    };
    read_line(&mut line)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|c| c.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/1.") => s,
        _ => return Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    };
    let mut headers = Vec::new();
    loop {
        read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// The declared body length (None: chunked or until close).
fn body_len(headers: &[(String, String)], what: &str) -> Result<Option<u64>, HttpError> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Ok(None);
    }
    match header(headers, "content-length") {
        None => Ok(None),
        Some(v) => {
            v.parse::<u64>().map(Some).map_err(|_| HttpError::Failed(format!("{what}: bad Content-Length {v:?}")))
        }
    }
}

fn body_reader<'a>(
    r: &'a mut BufReader<TcpStream>,
    headers: &[(String, String)],
    len: Option<u64>,
) -> Box<dyn Read + 'a> {
    let chunked = header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    match (chunked, len) {
        (true, _) => Box::new(Chunked::new(r)),
        (false, Some(n)) => Box::new(r.take(n)),
        (false, None) => Box::new(r),
    }
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked { inner, left: 0, done: false }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        let n = (&mut self.inner).take(4096).read_line(&mut s)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the chunked body ended early"));
        }
        Ok(s.trim_end().to_string())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let size_line = self.line()?;
            let hex = size_line.split(';').next().unwrap_or_default().trim();
            self.left = u64::from_str_radix(hex, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {hex:?}")))?;
            if self.left == 0 {
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the chunked body ended early"));
        }
        self.left -= n as u64;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a chunk is longer than declared"));
        }
        Ok(n)
    }
}

/// A body being downloaded.
pub struct Download {
    pub reader: Box<dyn Read + Send>,
    /// From Content-Length, if the server sent one.
    pub len: Option<u64>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download").field("len", &self.len).finish_non_exhaustive()
    }
}

/// GET `url` (plain http, redirects followed) and stream its body.
pub fn download(url: &str) -> Result<Download, Error> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let u = url::Url::parse(&current).map_err(|e| Error::invalid(format!("{current:?} is not a URL: {e}")))?;
        match u.scheme() {
            "http" => {}
            "https" => {
                return Err(Error::invalid(format!(
                    "{current}: https is not supported (no TLS on the box); serve the bundle over plain http \
                     (its signature protects it) or copy it to the box and install the file"
                )))
            }
            other => return Err(Error::invalid(format!("{current}: scheme {other:?} is not supported (use http://)"))),
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::invalid(format!("{current}: the URL has no host")))?;
        let port = u.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = resolve(bare, port, CONNECT_TIMEOUT).map_err(|e| Error::upstream(format!("{current}: {e}")))?;
        let what = format!("GET {current}");
        let stream = connect(&addrs, &what, (CONNECT_TIMEOUT, IO_TIMEOUT)).map_err(|e| match e {
            HttpError::NotRunning(m) => Error::upstream(format!("{what}: {m}")),
            HttpError::Failed(m) => Error::upstream(m),
        })?;
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let host_header = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let (status, headers, reader) =
            send(&stream, ("GET", &host_header, &path), None, None, &what).map_err(Error::from)?;
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let loc = header(&headers, "location")
                .ok_or_else(|| Error::upstream(format!("{what}: redirect ({status}) without Location")))?;
            current =
                u.join(loc).map_err(|e| Error::upstream(format!("{what}: bad redirect {loc:?}: {e}")))?.to_string();
            continue;
        }
        if status != 200 {
            return Err(Error::upstream(format!("{what}: the server answered HTTP {status}")));
        }
        let len = body_len(&headers, &what)?;
        let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let reader: Box<dyn Read + Send> = match (chunked, len) {
            (true, _) => Box::new(Chunked::new(reader)),
            (false, Some(n)) => Box::new(reader.take(n)),
            (false, None) => Box::new(reader),
        };
        return Ok(Download { reader, len: if chunked { None } else { len } });
    }
    Err(Error::upstream(format!("{url}: more than {MAX_REDIRECTS} redirects")))
}

/// Where Debian and Buildroot keep the system's CA bundle.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client (rustls, ring provider) that trusts `ca_file`, or the
/// system's bundle when it is empty; `key` names the setting in errors.
pub fn tls_client(ca_file: &str, key: &str) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let (key, path) = if ca_file.is_empty() { ("the system CA bundle", SYSTEM_ROOTS) } else { (key, ca_file) };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{key} {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
    if added == 0 {
        return Err(format!("{key} {path}: no certificate in it"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A socket whose every read and write must end by one deadline.
struct Deadline {
    tcp: TcpStream,
    until: std::time::Instant,
    /// The whole time allowed (for the message).
    timeout: Duration,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(left)
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("timed out: no answer within {:?}", self.timeout))
    }

    /// Linux says EAGAIN when a socket timeout expires: say what it means.
    fn check<T>(&self, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                self.timed_out()
            } else {
                e
            }
        })
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        let r = self.tcp.read(buf);
        self.check(r)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        let r = self.tcp.write(buf);
        self.check(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// POSTs `body` to `url` (http or https; https needs `tls`) with `headers`,
/// all of it (look-up aside, connect, TLS, request, the answer's head) within
/// `timeout`, and returns the answer's status. The answer's body is not read.
pub fn post(
    url: &url::Url,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<u16, String> {
    let until = std::time::Instant::now() + timeout;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = resolve(bare, port, timeout)?;
    let left = until.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    let tcp = connect(&addrs, "connect", (left, left)).map_err(|e| match e {
        HttpError::NotRunning(m) => format!("connection refused: {m}"),
        HttpError::Failed(m) => m,
    })?;
    let _ = tcp.set_nodelay(true);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: oxinvr/{}\r\nContent-Length: {}\r\n",
        &url[url::Position::BeforePath..url::Position::AfterQuery],
        &url[url::Position::BeforeHost..url::Position::AfterPort],
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let stream = Deadline { tcp, until, timeout };
    let exchange = |mut s: Box<dyn ReadWrite>| -> Result<u16, String> {
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(body))
            .and_then(|()| s.flush())
            .map_err(|e| format!("sending the request: {e}"))?;
        read_head(&mut BufReader::new(s)).map(|(status, _)| status)
    };
    match (url.scheme(), tls) {
        ("http", _) => exchange(Box::new(stream)),
        ("https", Some(cfg)) => {
            let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| format!("TLS: {e}"))?;
            exchange(Box::new(rustls::StreamOwned::new(conn, stream)))
        }
        (other, _) => Err(format!("scheme {other:?} is not supported here")),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Lookups whose caller stopped waiting (the deadline passed) and that
/// have not ended: a DNS server that does not answer cannot pile up threads.
static ABANDONED: AtomicU32 = AtomicU32::new(0);
const MAX_ABANDONED: u32 = 8;

/// The addresses of `host` (a name, an IP or a `[v6]` literal) and `port`,
/// within `deadline`. getaddrinfo has no timeout of its own (a dead DNS
/// server holds it for tens of seconds), so a name is looked up on a helper
/// thread (`resolve`) left to finish alone when the deadline passes; at
/// most [`MAX_ABANDONED`] lookups nobody waits for may linger.
pub fn resolve(host: &str, port: u16, deadline: Duration) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = bare.to_string();
    lookup_within(move || (name.as_str(), port).to_socket_addrs().map(Iterator::collect), deadline)
        .map_err(|e| format!("cannot resolve {host}: {e}"))
}

/// [`resolve`] of a `host:port` text.
pub fn resolve_addr(addr: &str, deadline: Duration) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port = port.parse().map_err(|_| format!("{addr:?}: the port is not a number"))?;
    resolve(host, port, deadline)
}

/// Runs the blocking `lookup` on a helper thread and waits at most `deadline`.
fn lookup_within<F>(lookup: F, deadline: Duration) -> Result<Vec<SocketAddr>, String>
where
    F: FnOnce() -> io::Result<Vec<SocketAddr>> + Send + 'static,
{
    if ABANDONED.load(Ordering::SeqCst) >= MAX_ABANDONED {
        return Err(format!("{MAX_ABANDONED} earlier lookups never got an answer from the DNS server"));
    }
    // 0: running, 1: ended, 2: abandoned by its caller.
    let state = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let ended = Ended(state.clone());
    let spawned = std::thread::Builder::new().name("resolve".into()).stack_size(512 << 10).spawn(move || {
        let _ended = ended; // also when `lookup` panics
        let _ = tx.send(lookup());
    });
    if let Err(e) = spawned {
        return Err(format!("no thread for the lookup: {e}"));
    }
    match rx.recv_timeout(deadline) {
        Ok(Ok(found)) if found.is_empty() => Err("no address".into()),
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            ABANDONED.fetch_add(1, Ordering::SeqCst);
            if state.compare_exchange(0, 2, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                ABANDONED.fetch_sub(1, Ordering::SeqCst); // it ended just now
            }
            Err(format!("no answer within {} ms", deadline.as_millis()))
        }
    }
}

/// Marks a lookup ended when its thread drops it; one its caller gave up on
/// leaves the count of abandoned lookups.
struct Ended(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl Drop for Ended {
    fn drop(&mut self) {
        if self.0.swap(1, Ordering::SeqCst) == 2 {
            ABANDONED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// POSTs `body` to `url` (plain http, no redirects) and buffers the answer,
/// whatever its status (at most 1 MiB). `deadline` bounds the connect and each read and write.
pub fn post_buffered(url: &str, content_type: &str, body: &[u8], deadline: Duration) -> Result<Response, Error> {
    let u = url::Url::parse(url).map_err(|e| Error::invalid(format!("{url:?} is not a URL: {e}")))?;
    if u.scheme() != "http" {
        return Err(Error::invalid(format!("{url}: only http:// is supported")));
    }
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| Error::invalid(format!("{url}: no host")))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let what = format!("POST {url}");
    let addrs = resolve(bare, port, deadline).map_err(|e| Error::upstream(format!("{what}: {e}")))?;
    let stream = connect(&addrs, &what, (deadline, deadline)).map_err(|e| Error::upstream(e.to_string()))?;
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    let host_header = u.port().map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
    let (status, headers, mut reader) =
        send(&stream, ("POST", &host_header, &path), None, Some((content_type, body)), &what).map_err(Error::from)?;
    let len = body_len(&headers, &what)?;
    let mut out = Vec::new();
    body_reader(&mut reader, &headers, len)
        .take(MAX_POST_BODY + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::upstream(format!("{what}: reading the answer: {e}")))?;
    if out.len() as u64 > MAX_POST_BODY {
        return Err(Error::upstream(format!("{what}: the answer is larger than {MAX_POST_BODY} bytes")));
    }
    Ok(Response { status, headers, body: out })
}

/// GETs `url` (plain http, no redirects; its user and password are not
/// used: give `authorization`) and buffers the answer, whatever its status,
/// refusing one larger than `max` bytes. Everything (resolving aside) must
/// finish within `deadline`: connect, sending, and every read, each given
/// only the time left. `shown` names the request in errors (the URL without
/// its password).
pub fn get_buffered(
    url: &url::Url,
    authorization: Option<&str>,
    max: u64,
    deadline: Duration,
    shown: &str,
) -> Result<Response, Error> {
    let what = format!("GET {shown}");
    let ends = std::time::Instant::now() + deadline;
    let left = || ends.saturating_duration_since(std::time::Instant::now());
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| Error::invalid(format!("{what}: no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = resolve(bare, port, left()).map_err(|e| Error::upstream(format!("{what}: {e}")))?;
    let stream = connect(&addrs, &what, (left(), left())).map_err(|e| Error::upstream(e.to_string()))?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let host_header = url.port().map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
    let (status, headers, mut reader) =
        send(&stream, ("GET", &host_header, &path), authorization, None, &what).map_err(Error::from)?;
    let len = body_len(&headers, &what)?;
    if len.is_some_and(|n| n > max) {
        return Err(Error::upstream(format!("{what}: the answer is larger than {max} bytes")));
    }
    let mut body = body_reader(&mut reader, &headers, len).take(max + 1);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let remaining = left();
        if remaining.is_zero() {
            return Err(Error::new(Kind::Timeout, format!("{what}: no whole answer within {deadline:?}")));
        }
        // The same socket as the reader's: each read waits only for the time left.
        let _ = stream.set_read_timeout(Some(remaining));
        match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::upstream(format!("{what}: reading the answer: {e}"))),
        }
    }
    if out.len() as u64 > max {
        return Err(Error::upstream(format!("{what}: the answer is larger than {max} bytes")));
    }
    Ok(Response { status, headers, body: out })
}

/// What [`call`] sends after the head: nothing, bytes, or `len` bytes of a reader
/// (a file's part streamed without buffering it; a reader that ends early is an error).
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read, u64),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::Reader(_, n) => *n,
        }
    }
}

/// Bytes per write of a streamed body: 8x `io::copy`'s buffer, so a
/// replication upload makes an eighth of the syscalls.
const BODY_CHUNK: usize = 64 << 10;

/// Copies `r` to `w` in [`BODY_CHUNK`] writes; returns the bytes copied.
fn copy_body(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BODY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// One request to `server` (http or https; https needs `tls`), `target` the
/// path and query as sent (already encoded), with `headers` and a body, and the
/// answer buffered whatever its status (at most `max_answer` bytes). Connect and
/// every read and write must each finish within `io_timeout`: an upload of any
/// size goes on as long as it moves. Used by `replicate` for S3 requests.
pub fn call(
    server: &url::Url,
    (method, target): (&str, &str),
    headers: &[(&str, String)],
    mut payload: Payload<'_>,
    io_timeout: Duration,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    max_answer: u64,
) -> Result<Response, String> {
    let host = server.host_str().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = server.port_or_known_default().unwrap_or(80);
    let addrs = resolve(bare, port, io_timeout.min(CONNECT_TIMEOUT))?;
    let tcp = connect(&addrs, "connect", (io_timeout.min(CONNECT_TIMEOUT), io_timeout)).map_err(|e| match e {
        HttpError::NotRunning(m) => format!("connection refused: {m}"),
        HttpError::Failed(m) => m,
    })?;
    let _ = tcp.set_nodelay(true);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: oxinvr/{}\r\nContent-Length: {}\r\n",
        &server[url::Position::BeforeHost..url::Position::AfterPort],
        env!("CARGO_PKG_VERSION"),
        payload.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut exchange = |mut s: Box<dyn ReadWrite + '_>| -> Result<Response, String> {
        let sent = s.write_all(head.as_bytes()).and_then(|()| match &mut payload {
            Payload::Empty => Ok(()),
            Payload::Bytes(b) => s.write_all(b),
            Payload::Reader(r, n) => {
                let copied = copy_body(&mut r.take(*n), &mut s)?;
                if copied < *n {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the body's source ended early"));
                }
                Ok(())
            }
        });
        sent.and_then(|()| s.flush()).map_err(|e| format!("sending the request: {e}"))?;
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader)?;
        let len = body_len(&headers, "answer").map_err(|e| e.to_string())?;
        if len.is_some_and(|n| n > max_answer) {
            return Err(format!("the answer is larger than {max_answer} bytes"));
        }
        let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut body = Vec::new();
        let read = match (chunked, len, method) {
            (_, _, "HEAD") => Ok(0),
            (true, _, _) => Chunked::new(&mut reader).take(max_answer + 1).read_to_end(&mut body),
            (false, Some(n), _) => (&mut reader).take(n).read_to_end(&mut body),
            (false, None, _) => (&mut reader).take(max_answer + 1).read_to_end(&mut body),
        };
        read.map_err(|e| format!("reading the answer: {e}"))?;
        if method != "HEAD" && !chunked && len.is_some_and(|n| (body.len() as u64) < n) {
            return Err(format!("the answer ended after {} of its {} bytes", body.len(), len.unwrap_or(0)));
        }
        if body.len() as u64 > max_answer {
            return Err(format!("the answer is larger than {max_answer} bytes"));
        }
        Ok(Response { status, headers, body })
    };
    match (server.scheme(), tls) {
        ("http", _) => exchange(Box::new(tcp)),
        ("https", Some(cfg)) => {
            let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| format!("TLS: {e}"))?;
            exchange(Box::new(rustls::StreamOwned::new(conn, tcp)))
        }
        (other, _) => Err(format!("scheme {other:?} is not supported here")),
    }
}

/// A token file's content, trimmed; `None` if missing or empty.
fn read_token(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_lookup_that_hangs_fails_at_its_deadline_and_literals_need_none() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A DNS server that never answers: the lookup blocks until the test lets it go.
        let hung = lookup_within(
            move || {
                let _ = rx.recv();
                Ok(Vec::new())
            },
            Duration::from_millis(50),
        );
        let err = hung.expect_err("a hung lookup must not block the caller");
        assert!(err.contains("no answer within 50 ms"), "{err}");
        drop(tx);
        // Once the hung lookup ends, it no longer counts against the limit.
        let t = std::time::Instant::now();
        while ABANDONED.load(Ordering::SeqCst) > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ABANDONED.load(Ordering::SeqCst), 0, "an ended lookup still counted as abandoned");
        let v6 = resolve("[::1]", 8080, Duration::ZERO).expect("a literal needs no lookup");
        assert_eq!(v6, vec!["[::1]:8080".parse().expect("addr")]);
        let v4 = resolve_addr("127.0.0.1:9", Duration::ZERO).expect("host:port");
        assert_eq!(v4, vec!["127.0.0.1:9".parse().expect("addr")]);
        let local = resolve("localhost", 80, Duration::from_secs(5)).expect("localhost");
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 80), "{local:?}");
        assert!(resolve_addr("no-port", Duration::ZERO).unwrap_err().contains("not host:port"));
    }

    /// Serves one connection with `answer` and returns the request it got.
    fn serve_once(answer: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&req).into_owned();
            if let Some(len) = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                let have = req.len() - (text.find("\r\n\r\n").unwrap_or(0) + 4);
                let mut rest = vec![0u8; len.saturating_sub(have)];
                s.read_exact(&mut rest).expect("body");
                req.extend_from_slice(&rest);
            }
            s.write_all(&answer).expect("write");
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, t)
    }

    #[test]
    fn json_request_and_answer() {
        let (addr, t) = serve_once(b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"ok\":true}".to_vec());
        let r = Client::new(addr)
            .request("POST", "/api/streams", Some(&serde_json::json!({"name": "cam"})))
            .expect("request");
        assert_eq!(r.status, 201);
        assert_eq!(r.json()["ok"], true);
        let req = t.join().expect("server");
        assert!(req.starts_with("POST /api/streams HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("{\"name\":\"cam\"}"), "{req}");
    }

    #[test]
    fn chunked_and_error_bodies() {
        let (addr, t) = serve_once(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\n11\r\nor\":\"no stream\"}\r\n0\r\n\r\n"
                .to_vec(),
        );
        let r = Client::new(addr).request("GET", "/api/streams/x", None).expect("request");
        t.join().expect("server");
        assert_eq!(r.status, 404);
        assert_eq!(r.error_message(), "no stream");
    }

    #[test]
    fn not_running_is_told_apart() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let e = Client::new(SocketAddr::from(([127, 0, 0, 1], port))).request("GET", "/api/health", None).unwrap_err();
        assert!(matches!(e, HttpError::NotRunning(_)), "{e:?}");
    }

    #[test]
    fn a_server_that_never_answers_is_given_up_on_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        // Accepts (the kernel does, from the backlog) and never reads or answers.
        let e = Client::new(addr).with_deadline(Duration::from_millis(200)).request("GET", "/api", None).unwrap_err();
        assert!(matches!(e, HttpError::Failed(_)) && e.to_string().contains("reading the answer"), "{e}");
        drop(l);
    }

    #[test]
    fn garbage_answers_are_errors() {
        let (addr, t) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec());
        let e = Client::new(addr).request("GET", "/", None).unwrap_err();
        t.join().expect("server");
        assert!(e.to_string().contains("not an HTTP answer"), "{e}");
    }

    #[test]
    fn download_streams_and_follows_redirects() {
        let (a2, t2) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more".to_vec());
        let (a1, t1) = serve_once(
            format!("HTTP/1.1 302 Found\r\nLocation: http://{a2}/b.oxb\r\nContent-Length: 0\r\n\r\n").into_bytes(),
        );
        let mut d = download(&format!("http://{a1}/a.oxb")).expect("download");
        assert_eq!(d.len, Some(5));
        let mut got = String::new();
        d.reader.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello");
        assert!(t1.join().expect("s1").starts_with("GET /a.oxb "));
        assert!(t2.join().expect("s2").starts_with("GET /b.oxb "));
        let e = download("https://example.invalid/x.oxb").unwrap_err();
        assert!(e.kind == Kind::InvalidInput && e.to_string().contains("https is not supported"), "{e}");
        assert!(download("ftp://h/x").unwrap_err().to_string().contains("not supported"));
    }

    #[test]
    fn call_sends_headers_and_a_reader_body_and_returns_the_answer() {
        let (addr, t) = serve_once(b"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 2\r\n\r\nok".to_vec());
        let server = url::Url::parse(&format!("http://{addr}")).expect("url");
        let mut src = &b"0123456789"[..];
        let r = call(
            &server,
            ("PUT", "/b/k?partNumber=1"),
            &[("x-amz-test", "1".into())],
            Payload::Reader(&mut src, 4),
            Duration::from_secs(5),
            None,
            1024,
        )
        .expect("call");
        assert_eq!((r.status, r.header("etag"), &r.body[..]), (200, Some("\"abc\""), &b"ok"[..]));
        let req = t.join().expect("server");
        assert!(req.starts_with("PUT /b/k?partNumber=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("x-amz-test: 1\r\n") && req.contains("Content-Length: 4\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n0123"), "{req}");
    }

    #[test]
    fn unspecified_listen_becomes_loopback() {
        assert_eq!(loopback_addr("0.0.0.0:8080").expect("v4").to_string(), "127.0.0.1:8080");
        assert_eq!(loopback_addr("[::]:80").expect("v6").to_string(), "[::1]:80");
        assert_eq!(loopback_addr("10.1.2.3:81").expect("kept").to_string(), "10.1.2.3:81");
        assert!(loopback_addr("everywhere").is_err());
    }
}
