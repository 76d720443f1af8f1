//! WebSocket (RFC 6455): the handshake key, a frame writer, and an incremental
//! frame reader usable on either side (the server reads masked client frames;
//! the integration tests read unmasked server frames with the same code).
//!
//! Invariants:
//! - Frames this module writes are final (FIN set), never fragmented, with the
//!   shortest length encoding (7, 16 or 64 bits). Server frames are unmasked;
//!   [`put_masked_frame`] (the client side) masks with the key it is given.
//! - The reader never buffers more than one frame header plus `max_message`
//!   payload bytes plus one read chunk: a frame (or a fragmented message)
//!   declaring more is refused with close code 1009 as soon as its header is
//!   read, before its payload arrives.
//! - A frame that breaks the protocol (a server reading an unmasked frame or a
//!   client reading a masked one, reserved bits, unknown opcodes, a fragmented
//!   or oversized control frame, a stray continuation, a bad close code) is a
//!   [`ProtocolError`] carrying the close code to answer with (1002; 1007 for
//!   text that is not UTF-8; 1009 for too big). No input panics.

use std::fmt;
use std::io::{self, Read};

use base64::Engine as _;

/// The GUID RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest payload of a control frame (ping, pong, close).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest message the server accepts from a client.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Bytes one [`FrameReader::fill`] reads at most.
const READ_CHUNK: usize = 4096;

/// Close codes (RFC 6455 section 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let mut input = Vec::with_capacity(client_key.len() + GUID.len());
    input.extend_from_slice(client_key.trim().as_bytes());
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// True if a `Sec-WebSocket-Key` is what RFC 6455 asks for: base64 of 16 bytes.
pub fn valid_key(client_key: &str) -> bool {
    base64::engine::general_purpose::STANDARD.decode(client_key.trim()).is_ok_and(|k| k.len() == 16)
}

/// A fresh masking key for client frames.
pub fn random_mask() -> [u8; 4] {
    let mut mask = [0u8; 4];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut mask).is_err() {
        // Masking only defeats proxy cache poisoning; any key is valid framing.
        mask = [0x5a, 0xa5, 0x3c, 0xc3];
    }
    mask
}

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A complete message (fragments joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code and reason, if the peer sent them.
    Close(Option<(u16, String)>),
}

/// What is wrong with what the peer sent, and the close code to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: String,
}

impl ProtocolError {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        ProtocolError { code, reason: reason.into() }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}

/// Why a blocking [`FrameReader::read_message`] ended without a message.
#[derive(Debug)]
pub enum WsError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// The connection ended (EOF) before a complete message.
    Eof,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "websocket read failed: {e}"),
            WsError::Protocol(e) => write!(f, "websocket protocol error: {e}"),
            WsError::Eof => f.write_str("websocket connection closed before a complete message"),
        }
    }
}

impl std::error::Error for WsError {}

/// Appends a frame header (FIN set) for a payload of `len` bytes.
pub fn put_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(l16) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&l16.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends an unmasked (server) frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    put_header(out, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends a masked (client) frame.
pub fn put_masked_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    put_header(out, opcode, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The payload of a close frame: the code, then the reason cut to fit 125 bytes.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: usize,
    header_len: usize,
}

/// Reads frames from bytes as they arrive and yields whole messages.
pub struct FrameReader {
    /// True on the server: every frame must be masked; false on the client: none may be.
    expect_masked: bool,
    max_message: usize,
    buf: Vec<u8>,
    /// Opcode and data of a fragmented message being assembled.
    partial: Option<(Opcode, Vec<u8>)>,
}

impl FrameReader {
    /// The server side: reads masked client frames, messages up to `max_message` bytes.
    pub fn server(max_message: usize) -> Self {
        FrameReader { expect_masked: true, max_message, buf: Vec::new(), partial: None }
    }

    /// The client side (tests): reads unmasked server frames.
    pub fn client(max_message: usize) -> Self {
        FrameReader { expect_masked: false, max_message, buf: Vec::new(), partial: None }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One `read` from `src` into the buffer; returns the bytes read (0 at EOF).
    /// A timeout or `WouldBlock` is returned as the error it is.
    pub fn fill(&mut self, src: &mut (impl Read + ?Sized)) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = src.read(&mut chunk)?;
        self.push(&chunk[..n]);
        Ok(n)
    }

    /// Blocks until a whole message has arrived (the client side, tests).
    pub fn read_message(&mut self, src: &mut impl Read) -> Result<Message, WsError> {
        loop {
            if let Some(m) = self.next_message().map_err(WsError::Protocol)? {
                return Ok(m);
            }
            match self.fill(src) {
                Ok(0) => return Err(WsError::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WsError::Io(e)),
            }
        }
    }

    /// The next complete message in the buffer, `None` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(h) = self.header()? else { return Ok(None) };
            let end = h.header_len + h.len;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload: Vec<u8> = self.buf[h.header_len..end].to_vec();
            self.buf.drain(..end);
            if let Some(m) = h.mask {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
            }
            if let Some(msg) = self.assemble(&h, payload)? {
                return Ok(Some(msg));
            }
        }
    }

    /// Parses and checks the header at the front of the buffer, if complete.
    fn header(&self) -> Result<Option<Header>, ProtocolError> {
        let b = &self.buf;
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::new(close::PROTOCOL_ERROR, "reserved bits set (no extension was agreed)"));
        }
        let opcode = Opcode::from_bits(b0 & 0x0F)
            .ok_or_else(|| ProtocolError::new(close::PROTOCOL_ERROR, format!("unknown opcode {:#x}", b0 & 0x0F)))?;
        let masked = b1 & 0x80 != 0;
        if masked != self.expect_masked {
            let what =
                if self.expect_masked { "client frames must be masked" } else { "server frames must not be masked" };
            return Err(ProtocolError::new(close::PROTOCOL_ERROR, what));
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => match b.get(2..4) {
                Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10).and_then(|l| <[u8; 8]>::try_from(l).ok()) {
                Some(l) => (u64::from_be_bytes(l), 10),
                None => return Ok(None),
            },
            l => (u64::from(l), 2),
        };
        let fin = b0 & 0x80 != 0;
        self.check_length(opcode, fin, len)?;
        let mask = match masked {
            true => match b.get(at..at + 4).and_then(|m| <[u8; 4]>::try_from(m).ok()) {
                Some(m) => {
                    at += 4;
                    Some(m)
                }
                None => return Ok(None),
            },
            false => None,
        };
        // check_length bounded len by max_message, which is a usize.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(Some(Header { fin, opcode, mask, len, header_len: at }))
    }

    fn check_length(&self, opcode: Opcode, fin: bool, len: u64) -> Result<(), ProtocolError> {
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, "fragmented control frame"));
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::new(
                    close::PROTOCOL_ERROR,
                    format!("control frame of {len} bytes (max 125)"),
                ));
            }
            return Ok(());
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, d)| d.len() as u64);
        if so_far.saturating_add(len) > self.max_message as u64 {
            let total = so_far.saturating_add(len);
            return Err(ProtocolError::new(
                close::TOO_BIG,
                format!("message of {total} bytes is larger than the {} accepted", self.max_message),
            ));
        }
        Ok(())
    }

    /// Joins fragments; returns a message once one is complete.
    fn assemble(&mut self, h: &Header, payload: Vec<u8>) -> Result<Option<Message>, ProtocolError> {
        let data = match (h.opcode, self.partial.as_mut()) {
            (op, _) if op.is_control() => return control_message(op, payload).map(Some),
            (Opcode::Continuation, None) => {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, "continuation frame without a message"))
            }
            (Opcode::Continuation, Some((_, data))) => {
                data.extend_from_slice(&payload);
                if !h.fin {
                    return Ok(None);
                }
                self.partial.take()
            }
            (_, Some(_)) => {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, "new message before the previous one ended"))
            }
            (op, None) if !h.fin => {
                self.partial = Some((op, payload));
                return Ok(None);
            }
            (op, None) => Some((op, payload)),
        };
        match data {
            Some((Opcode::Text, d)) => String::from_utf8(d)
                .map(|s| Some(Message::Text(s)))
                .map_err(|_| ProtocolError::new(close::INVALID_DATA, "text message is not UTF-8")),
            Some((_, d)) => Ok(Some(Message::Binary(d))),
            None => Ok(None),
        }
    }
}

fn control_message(op: Opcode, payload: Vec<u8>) -> Result<Message, ProtocolError> {
    match op {
        Opcode::Ping => Ok(Message::Ping(payload)),
        Opcode::Pong => Ok(Message::Pong(payload)),
        _ => parse_close(&payload).map(Message::Close),
    }
}

fn parse_close(p: &[u8]) -> Result<Option<(u16, String)>, ProtocolError> {
    match p {
        [] => Ok(None),
        [_] => Err(ProtocolError::new(close::PROTOCOL_ERROR, "close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, format!("invalid close code {code}")));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| ProtocolError::new(close::INVALID_DATA, "close reason is not UTF-8"))?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn server_reads(bytes: &[u8]) -> Result<Option<Message>, ProtocolError> {
        let mut r = FrameReader::server(MAX_CLIENT_MESSAGE);
        r.push(bytes);
        r.next_message()
    }

    #[test]
    fn accept_key_matches_rfc_6455_sample() {
        // RFC 6455 section 1.3 (the value Python's hashlib + base64 also give).
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("c2hvcnQ="));
        assert!(!valid_key("not base64!"));
    }

    #[test]
    fn rfc_6455_examples_decode() {
        // Section 5.7: a single-frame masked text message "Hello".
        let masked = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(server_reads(&masked), Ok(Some(Message::Text("Hello".into()))));
        // An unmasked "Hello" read by the client, and fragmented "Hel" + "lo".
        let mut c = FrameReader::client(1 << 20);
        c.push(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        c.push(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(c.next_message(), Ok(Some(Message::Text("Hello".into()))));
        assert_eq!(c.next_message(), Ok(Some(Message::Text("Hello".into()))));
        assert_eq!(c.next_message(), Ok(None));
    }

    #[test]
    fn lengths_use_7_16_and_64_bits() {
        for (len, header_len) in [(0usize, 2usize), (125, 2), (126, 4), (65_535, 4), (65_536, 10), (200_000, 10)] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            put_frame(&mut out, Opcode::Binary, &payload);
            assert_eq!(out.len(), header_len + len, "{len}");
            let mut c = FrameReader::client(1 << 20);
            // Byte by byte: the reader must wait for the whole frame.
            for (i, b) in out.iter().enumerate() {
                c.push(&[*b]);
                let got = c.next_message().expect("valid");
                if i + 1 < out.len() && len > 0 {
                    assert_eq!(got, None);
                } else if i + 1 == out.len() {
                    assert_eq!(got, Some(Message::Binary(payload.clone())));
                }
            }
        }
    }

    #[test]
    fn masked_frames_round_trip() {
        let mut out = Vec::new();
        put_masked_frame(&mut out, Opcode::Ping, b"abc", MASK);
        put_masked_frame(&mut out, Opcode::Binary, &[7u8; 300], random_mask());
        put_masked_frame(&mut out, Opcode::Close, &close_payload(1000, "bye"), MASK);
        let mut r = FrameReader::server(MAX_CLIENT_MESSAGE);
        r.push(&out);
        assert_eq!(r.next_message(), Ok(Some(Message::Ping(b"abc".to_vec()))));
        assert_eq!(r.next_message(), Ok(Some(Message::Binary(vec![7u8; 300]))));
        assert_eq!(r.next_message(), Ok(Some(Message::Close(Some((1000, "bye".into()))))));
        assert_eq!(r.next_message(), Ok(None));
    }

    #[test]
    fn server_refuses_unmasked_and_client_refuses_masked() {
        let mut plain = Vec::new();
        put_frame(&mut plain, Opcode::Text, b"hi");
        assert_eq!(server_reads(&plain).map_err(|e| e.code), Err(close::PROTOCOL_ERROR));
        let mut masked = Vec::new();
        put_masked_frame(&mut masked, Opcode::Text, b"hi", MASK);
        let mut c = FrameReader::client(100);
        c.push(&masked);
        assert_eq!(c.next_message().map_err(|e| e.code), Err(close::PROTOCOL_ERROR));
    }

    #[test]
    fn oversized_messages_are_refused_from_the_header() {
        // Only the header of a 1 MiB frame: refused before the payload arrives.
        let mut h = Vec::new();
        put_header(&mut h, Opcode::Binary, 1 << 20, Some(MASK));
        assert_eq!(server_reads(&h).map_err(|e| e.code), Err(close::TOO_BIG));
        // A 2^63 length does not overflow anything.
        let huge = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(server_reads(&huge).map_err(|e| e.code), Err(close::TOO_BIG));
        // Fragments count together.
        let mut r = FrameReader::server(100);
        let mut f = Vec::new();
        put_masked_frame(&mut f, Opcode::Binary, &[1; 60], MASK);
        f[0] &= 0x7F; // not final
        put_masked_frame(&mut f, Opcode::Continuation, &[1; 60], MASK);
        r.push(&f);
        assert_eq!(r.next_message().map_err(|e| e.code), Err(close::TOO_BIG));
    }

    #[test]
    fn protocol_violations_name_a_close_code() {
        let frame = |first: u8, payload: &[u8]| {
            let mut f = Vec::new();
            put_masked_frame(&mut f, Opcode::Binary, payload, MASK);
            f[0] = first;
            f
        };
        let code = |b: &[u8]| server_reads(b).map_err(|e| e.code);
        assert_eq!(code(&frame(0xC2, b"x")), Err(close::PROTOCOL_ERROR), "RSV1");
        assert_eq!(code(&frame(0x83, b"x")), Err(close::PROTOCOL_ERROR), "opcode 3");
        assert_eq!(code(&frame(0x09, b"x")), Err(close::PROTOCOL_ERROR), "fragmented ping");
        assert_eq!(code(&frame(0x80, b"x")), Err(close::PROTOCOL_ERROR), "stray continuation");
        assert_eq!(code(&frame(0x89, &[0; 126])), Err(close::PROTOCOL_ERROR), "long ping");
        assert_eq!(code(&frame(0x81, &[0xff, 0xfe])), Err(close::INVALID_DATA), "bad UTF-8");
        assert_eq!(code(&frame(0x88, &[3])), Err(close::PROTOCOL_ERROR), "1-byte close");
        assert_eq!(code(&frame(0x88, &[0x03, 0xe4])), Err(close::PROTOCOL_ERROR), "close code 996");
        assert_eq!(code(&frame(0x88, &[])), Ok(Some(Message::Close(None))));
        let mut two = frame(0x01, b"a");
        two.extend(frame(0x81, b"b"));
        assert_eq!(code(&two), Err(close::PROTOCOL_ERROR), "interleaved messages");
    }

    #[test]
    fn control_frames_may_interleave_fragments() {
        let mut f = Vec::new();
        put_masked_frame(&mut f, Opcode::Text, b"ab", MASK);
        f[0] &= 0x7F;
        put_masked_frame(&mut f, Opcode::Ping, b"p", MASK);
        put_masked_frame(&mut f, Opcode::Continuation, b"cd", MASK);
        let mut r = FrameReader::server(100);
        r.push(&f);
        assert_eq!(r.next_message(), Ok(Some(Message::Ping(b"p".to_vec()))));
        assert_eq!(r.next_message(), Ok(Some(Message::Text("abcd".into()))));
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let p = close_payload(1001, &"é".repeat(100));
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &1001u16.to_be_bytes());
    }

    #[test]
    fn blocking_read_reports_eof() {
        let mut out = Vec::new();
        put_frame(&mut out, Opcode::Text, b"{}");
        let mut src: &[u8] = &out[..3];
        let mut c = FrameReader::client(100);
        assert!(matches!(c.read_message(&mut src), Err(WsError::Eof)));
        let mut src: &[u8] = &out;
        let mut c = FrameReader::client(100);
        assert_eq!(c.read_message(&mut src).expect("message"), Message::Text("{}".into()));
    }
}
