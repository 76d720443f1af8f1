//! Fuzz entry point (`fuzz/fuzz_targets/onvif.rs`, docs/FUZZING.md): `data` as
//! what a camera or a device on the LAN sends back — a SOAP answer (fault,
//! device information, profiles, presets, PullPoint subscriptions and
//! notifications) or a WS-Discovery ProbeMatches.
//! Invariant checked: nothing panics, and a parsed ProbeMatch always has an
//! endpoint and at least one address.

use std::net::SocketAddr;

/// Every parser of camera answers over `data`.
pub fn answers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = super::soap::fault(text);
    super::device::parse_all(text);
    let _ = super::pullpoint::parse_subscription(text);
    let _ = super::pullpoint::parse_pulled(text);
    // The RelatesTo of the answer itself, so the fuzzer can reach the matches.
    let id = roxmltree::Document::parse(text)
        .ok()
        .and_then(|d| super::soap::find(d.root(), "RelatesTo").and_then(|n| n.text()).map(|t| t.trim().to_string()));
    let from = SocketAddr::from(([127, 0, 0, 1], 3702));
    for f in super::discovery::matches(text, id.as_deref().unwrap_or("urn:uuid:x"), from) {
        assert!(!f.endpoint.is_empty() && !f.xaddrs.is_empty(), "a ProbeMatch without endpoint or address: {f:?}");
    }
}
