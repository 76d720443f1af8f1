//! OxiNVR patch (whole file): rustls 0.23 (ring provider) for
//! `Server::https_limited`.
//!
//! - The handshake runs on the connection's own thread (`handshake`), never on
//!   the accept thread or a worker, and must end before the deadline it is
//!   given (the request-head deadline): a client that connects and sends no
//!   ClientHello, or trickles it, is dropped then.
//! - One `RustlsStream` is shared by the connection's read half (its thread)
//!   and write half (whoever answers) through a mutex. tiny_http reads the
//!   next request only once the previous one is answered, so the two never
//!   wait on each other; socket operations that must not wait for that mutex
//!   (shutdown, timeouts, peer address, the fd) use a duplicate of the socket.
//! - rustls buffers at most 64 KiB of unsent TLS records (its default); socket
//!   writes and reads keep the timeouts of `util::limits`.
use crate::connection::Connection;
use crate::util::refined_tcp_stream::Stream as RefinedStream;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use zeroize::Zeroizing;

type Tls = rustls::StreamOwned<rustls::ServerConnection, Connection>;

/// A TLS connection after its handshake; clones share it.
pub(crate) struct RustlsStream {
    tls: Arc<Mutex<Tls>>,
    /// The same socket, for what must not wait for the TLS stream's mutex.
    sock: Arc<Connection>,
}

impl RustlsStream {
    fn lock(&self) -> MutexGuard<'_, Tls> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn peer_addr(&mut self) -> io::Result<Option<SocketAddr>> {
        match &*self.sock {
            Connection::Tcp(s) => s.peer_addr().map(Some),
            #[cfg(unix)]
            Connection::Unix(_) => Ok(None),
        }
    }

    pub(crate) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }

    /// The socket underneath (timeouts, send queue size).
    pub(crate) fn socket(&self) -> &Connection {
        &self.sock
    }
}

impl Clone for RustlsStream {
    fn clone(&self) -> Self {
        Self { tls: self.tls.clone(), sock: self.sock.clone() }
    }
}

impl Read for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read(buf)
    }
}

impl Write for RustlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

pub(crate) struct RustlsContext(pub(crate) Arc<rustls::ServerConfig>);

impl RustlsContext {
    /// tiny_http's `SslConfig`: one PEM certificate chain and a PKCS#8, PKCS#1
    /// or SEC1 key.
    pub(crate) fn from_pem(
        certificates: Vec<u8>,
        private_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(&certificates).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err("no certificate in the PEM".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&private_key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self(Arc::new(config)))
    }

    /// Runs the handshake on the calling thread, finished by `deadline` (None:
    /// no bound); `sock` keeps its write timeout, its read timeout is set here.
    pub(crate) fn handshake(&self, sock: Connection, deadline: Option<Instant>) -> io::Result<RustlsStream> {
        let dup = Arc::new(sock.try_clone()?);
        let mut conn =
            rustls::ServerConnection::new(self.0.clone()).map_err(|e| io::Error::new(io::ErrorKind::Other, e))?;
        let mut sock = sock;
        // One read per turn, each bounded by what is left of the deadline
        // (rustls' complete_io would read again with the same timeout).
        let slow = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake too slow");
        while conn.is_handshaking() {
            while conn.wants_write() {
                conn.write_tls(&mut sock)?;
            }
            if !conn.is_handshaking() {
                break;
            }
            if let Some(deadline) = deadline {
                match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => sock.set_read_timeout(Some(left))?,
                    _ => return Err(slow()),
                }
            }
            match conn.read_tls(&mut sock) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(slow()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = conn.write_tls(&mut sock); // the alert, if any
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(RustlsStream { tls: Arc::new(Mutex::new(rustls::StreamOwned::new(conn, sock))), sock: dup })
    }
}

impl From<RustlsStream> for RefinedStream {
    fn from(stream: RustlsStream) -> Self {
        Self::Https(stream)
    }
}
