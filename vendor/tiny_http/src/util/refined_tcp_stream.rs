use std::io::Result as IoResult;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use crate::connection::Connection;
use crate::util::{timed_read, ConnClock, ConnSlot}; // OxiNVR patch
use std::sync::Arc;
use std::time::Duration;
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use crate::ssl::SslStream;

pub(crate) enum Stream {
    Http(Connection),
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    Https(SslStream),
}

impl Clone for Stream {
    fn clone(&self) -> Self {
        match self {
            Stream::Http(tcp_stream) => Stream::Http(tcp_stream.try_clone().unwrap()),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => Stream::Https(ssl_stream.clone()),
        }
    }
}

impl From<Connection> for Stream {
    fn from(tcp_stream: Connection) -> Self {
        Stream::Http(tcp_stream)
    }
}

impl Stream {
    fn secure(&self) -> bool {
        match self {
            Stream::Http(_) => false,
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => true,
        }
    }

    fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.peer_addr(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.peer_addr(),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.shutdown(how),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.read(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.write(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.write(buf),
        }
    }

    fn flush(&mut self) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.flush(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.flush(),
        }
    }
}

pub struct RefinedTcpStream {
    stream: Stream,
    close_read: bool,
    close_write: bool,
    // OxiNVR patch: the read half's timeouts (None: the socket's own), the
    // timeout last set on the socket, and the write half's connection slot
    // and write timeout (SO_SNDTIMEO, also enforced here: see `write`).
    clock: Option<Arc<ConnClock>>,
    applied: Option<Option<Duration>>,
    #[allow(dead_code)] // held for its Drop
    slot: Option<ConnSlot>,
    write_timeout: Option<Duration>,
}

impl RefinedTcpStream {
    pub(crate) fn new<S>(stream: S) -> (RefinedTcpStream, RefinedTcpStream)
    where
        S: Into<Stream>,
    {
        let stream: Stream = stream.into();

        let (read, write) = (stream.clone(), stream);

        let read = RefinedTcpStream {
            stream: read,
            close_read: true,
            close_write: false,
            clock: None,
            applied: None,
            slot: None,
            write_timeout: None,
        };

        let write = RefinedTcpStream {
            stream: write,
            close_read: false,
            close_write: true,
            clock: None,
            applied: None,
            slot: None,
            write_timeout: None,
        };

        (read, write)
    }

    /// Returns true if this struct wraps around a secure connection.
    #[inline]
    pub(crate) fn secure(&self) -> bool {
        self.stream.secure()
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    /// OxiNVR patch: reads go through `clock` (plain HTTP and rustls).
    pub(crate) fn with_clock(mut self, clock: Arc<ConnClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// OxiNVR patch: the connection's slot, held as long as this half lives,
    /// and the socket's write timeout.
    pub(crate) fn with_slot(mut self, slot: ConnSlot, write_timeout: Option<Duration>) -> Self {
        self.slot = Some(slot);
        self.write_timeout = write_timeout;
        self
    }

    /// OxiNVR patch: the TCP socket's file descriptor (plain HTTP only).
    #[cfg(unix)]
    pub(crate) fn tcp_fd(&self) -> Option<std::os::unix::io::RawFd> {
        match &self.stream {
            Stream::Http(c) => c.tcp_fd(),
            #[cfg(feature = "ssl-openssl")]
            Stream::Https(_) => None,
            // OxiNVR patch: for the send queue size and timeouts; bytes must
            // go through the TLS stream (`Request::secure`).
            #[cfg(feature = "ssl-rustls")]
            Stream::Https(s) => s.socket().tcp_fd(),
        }
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        // OxiNVR patch: the read timeout follows what the connection waits for.
        if let (Some(clock), Stream::Http(conn)) = (&self.clock, &mut self.stream) {
            return timed_read(conn, clock, &mut self.applied, buf);
        }
        #[cfg(feature = "ssl-rustls")]
        if let (Some(clock), Stream::Https(tls)) = (&self.clock, &mut self.stream) {
            crate::util::limits::apply_read_timeout(tls.socket(), clock, &mut self.applied)?;
            return tls.read(buf).map_err(crate::util::limits::timeout_error);
        }
        self.stream.read(buf)
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        // OxiNVR patch: with SO_SNDTIMEO, Linux returns a short count after
        // blocking the whole timeout if it took a few bytes (memory it frees
        // now and then for a peer whose window is closed), so a client that
        // reads nothing could hold a writer for minutes. A write that blocked
        // (nearly) the whole timeout is a timeout, whatever it took.
        let Some(limit) = self.write_timeout else {
            return self.stream.write(buf);
        };
        let began = std::time::Instant::now();
        let n = self.stream.write(buf)?;
        if n < buf.len() && began.elapsed() >= limit.mul_f32(0.9) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took almost nothing for the write timeout",
            ));
        }
        Ok(n)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream.flush()
    }
}
