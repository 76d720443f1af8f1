//! WebSocket (RFC 6455) handshake and framing. STUB: filled in by the live-view work.
