#![allow(unused_imports, dead_code)] // OxiNVR: vendored as is; lints are the upstream's.
//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;
pub use util::Limits; // OxiNVR patch

/// OxiNVR patch: called first by every thread tiny_http starts (the accept
/// thread and the connection pool's threads), so that the application can tag
/// them (OxiNVR counts their heap as its HTTP subsystem's).
static THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// OxiNVR patch: sets the function tiny_http's threads call when they start.
/// Once per process: later calls change nothing.
pub fn set_thread_start_hook(hook: fn()) {
    let _ = THREAD_START.set(hook);
}

pub(crate) fn thread_started() {
    if let Some(hook) = THREAD_START.get() {
        hook();
    }
}

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

/// OxiNVR patch: writes time out after `io_timeout`; reads wait for the first
/// request at most `idle_timeout` (then `ConnClock` sets them per phase).
fn set_timeouts(sock: &Connection, limits: &Limits) -> IoResult<()> {
    let opt = |d: Duration| (!d.is_zero()).then_some(d);
    sock.set_write_timeout(opt(limits.io_timeout))?;
    sock.set_read_timeout(opt(limits.idle_timeout))
}

/// OxiNVR patch: accept errors that pass (EMFILE, ENFILE, ENOBUFS, ENOMEM,
/// ECONNABORTED, EINTR).
fn accept_error_passes(e: &IoError) -> bool {
    // Linux errno values; ENOBUFS differs on MIPS (132, not 105), where a
    // wrong value would end the accept loop for good.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOMEM: i32 = 12;
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    const ENOBUFS: i32 = 132;
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
    const ENOBUFS: i32 = 105;
    matches!(e.kind(), IoErrorKind::ConnectionAborted | IoErrorKind::Interrupted | IoErrorKind::OutOfMemory)
        || matches!(e.raw_os_error(), Some(ENFILE | EMFILE | ENOBUFS | ENOMEM))
}

#[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
type SslContext = ();
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
type SslContext = crate::ssl::SslContextImpl;

/// OxiNVR patch: an admitted connection, before its TLS handshake (if any).
struct Accepted {
    sock: Connection,
    slot: util::ConnSlot,
    clock: Arc<util::ConnClock>,
    limits: Limits,
    ssl: Option<Arc<SslContext>>,
}

impl Accepted {
    /// On the connection's own thread: the handshake (rustls: within the head
    /// deadline), then the connection's reader and writer. None: dropped.
    fn connect(self) -> Option<ClientConnection> {
        use util::RefinedTcpStream;
        let Accepted { sock, slot, clock, limits, ssl } = self;
        let (read_closable, write_closable) = match ssl {
            None => RefinedTcpStream::new(sock),
            #[cfg(feature = "ssl-rustls")]
            Some(ssl) => {
                let _ = sock.set_nodelay(true);
                let deadline = (!limits.head_timeout.is_zero())
                    .then(|| std::time::Instant::now() + limits.head_timeout);
                match ssl.handshake(sock, deadline) {
                    Ok(s) => RefinedTcpStream::new(s),
                    Err(e) => {
                        log::debug!("TLS handshake failed: {}", e);
                        return None;
                    }
                }
            }
            #[cfg(feature = "ssl-openssl")]
            Some(ssl) => RefinedTcpStream::new(ssl.accept(sock).ok()?),
            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
            Some(_) => unreachable!(),
        };
        let read_closable = read_closable.with_clock(clock.clone());
        let io = limits.io_timeout;
        let write_closable = write_closable.with_slot(slot, (!io.is_zero()).then_some(io));
        Some(ClientConnection::new(write_closable, read_closable, Some(clock)))
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// OxiNVR patch: a plain HTTP server whose connections are bounded by
    /// `limits` (timeouts, head deadline, idle time, connection counts).
    pub fn http_limited<A>(
        addr: A,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        let listener = ConfigListenAddr::from_socket_addrs(addr)?.bind()?;
        Self::start(listener.into(), None, limits)
    }

    /// OxiNVR patch: an HTTPS server bounded by `limits` like `http_limited`.
    /// Each connection's TLS handshake runs on that connection's own thread
    /// and must end within `limits.head_timeout`; accepted sockets get
    /// TCP_NODELAY (else Nagle and delayed ACKs add ~45 ms to a TLS 1.2
    /// handshake: bench/results/tls-2026-12-02.md).
    /// `config` may resolve its certificate per connection (a new one then
    /// takes effect for new connections).
    #[cfg(feature = "ssl-rustls")]
    pub fn https_limited<A>(
        addr: A,
        limits: Limits,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        let listener = ConfigListenAddr::from_socket_addrs(addr)?.bind()?;
        Self::start_with(listener.into(), Some(crate::ssl::SslContextImpl(config)), limits)
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), ssl_config, Limits::none())
    }

    /// OxiNVR patch: `from_listener` with limits.
    fn start(
        listener: Listener,
        ssl_config: Option<SslConfig>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };
        Self::start_with(listener, ssl, limits)
    }

    /// OxiNVR patch: the accept thread and the connection threads.
    fn start_with(
        listener: Listener,
        ssl: Option<SslContext>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };
        let ssl = ssl.map(Arc::new);

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        thread::spawn(move || {
            thread_started(); // OxiNVR patch
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            // OxiNVR patch: connections are counted, refused past the limits, timed.
            let admission = util::Admission::new(limits);
            let mut refused = util::Refused::new();

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                let new_client = match server.accept() {
                    Ok((sock, peer)) => {
                        // OxiNVR patch: admission, timeouts
                        refused.prune(std::time::Instant::now());
                        let slot = match admission.admit(peer) {
                            Ok(slot) => slot,
                            Err(why) => {
                                refused.refuse(sock, why);
                                continue;
                            }
                        };
                        if let Err(e) = set_timeouts(&sock, admission.limits()) {
                            log::debug!("cannot set the timeouts of a connection: {}", e);
                            continue;
                        }
                        let clock = util::ConnClock::new(admission.limits().clone());
                        Ok(Accepted { sock, slot, clock, limits: admission.limits().clone(), ssl: ssl.clone() })
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok(accepted) => {
                        let messages = inside_messages.clone();
                        let mut accepted = Some(accepted);
                        tasks_pool.spawn(Box::new(move || {
                            // OxiNVR patch: the TLS handshake, if any, runs here.
                            if let Some(client) = accepted.take().and_then(Accepted::connect) {
                                // OxiNVR patch: one request of a connection at a time (as
                                // tiny_http did for HTTPS only): the next head is read once
                                // this one is answered, so a client that pipelines requests
                                // and never reads its answers queues one, not thousands.
                                let (sender, receiver) = mpsc::channel();
                                for rq in client {
                                    messages.push(rq.with_notify_sender(sender.clone()).into());
                                    if receiver.recv().is_err() {
                                        break;
                                    }
                                }
                            }
                        }));
                    }

                    // OxiNVR patch: out of descriptors or memory, or a client
                    // gone before accept: not a reason to stop accepting for good.
                    Err(e) if accept_error_passes(&e) => {
                        log::warn!("Error accepting new client (retrying): {}", e);
                        thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        log::error!("Error accepting new client: {}", e);
                        inside_messages.push(e.into());
                        break;
                    }
                }
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
