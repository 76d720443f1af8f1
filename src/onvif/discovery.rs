//! WS-Discovery (the 2005/04 version ONVIF uses): one Probe for
//! `dn:NetworkVideoTransmitter` sent over UDP, the ProbeMatches collected
//! until a deadline.
//!
//! Invariants:
//! - The probe waits at most `wait`; nothing outlives the call (the socket
//!   is closed on return).
//! - Only answers that relate to our Probe's MessageID count; devices are
//!   deduplicated by their endpoint reference (a camera answering on two
//!   interfaces, or twice, is one device); at most `MAX_DEVICES` are kept.
//! - A malformed datagram is skipped, never an error of the whole probe.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::soap::{child, child_text, find};
use crate::base::error::Error;

/// WS-Discovery's multicast group and port.
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
/// Devices kept from one probe.
pub const MAX_DEVICES: usize = 256;
/// Largest datagram read (a ProbeMatch is 1-3 KiB).
const MAX_DATAGRAM: usize = 16 * 1024;

/// A device that answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// The endpoint reference (`urn:uuid:...`): the device's identity.
    pub endpoint: String,
    /// Its device service URLs.
    pub xaddrs: Vec<String>,
    pub scopes: Vec<String>,
    /// From the `onvif://www.onvif.org/name/...` scope, if any.
    pub name: Option<String>,
    /// From the `onvif://www.onvif.org/hardware/...` scope, if any.
    pub hardware: Option<String>,
    /// Where the answer came from.
    pub from: String,
}

/// Where and how to probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The multicast group (or one device's address, unicast).
    pub target: SocketAddrV4,
    /// The local address to send from: picks the interface (0.0.0.0: the route's).
    pub interface: Ipv4Addr,
    pub wait: Duration,
}

/// Sends one Probe and collects the devices that answer within `p.wait`.
pub fn probe(p: &Probe) -> Result<Vec<Found>, Error> {
    let sock = UdpSocket::bind(SocketAddrV4::new(p.interface, 0))
        .map_err(|e| Error::io(format!("WS-Discovery: cannot bind a UDP socket on {}: {e}", p.interface)))?;
    if p.target.ip().is_multicast() {
        // Loop on: a device on this very box (or a test's simulator) hears us too.
        let _ = sock.set_multicast_loop_v4(true);
        let _ = sock.set_multicast_ttl_v4(1);
    }
    let id = message_id()?;
    sock.send_to(probe_message(&id).as_bytes(), p.target)
        .map_err(|e| Error::io(format!("WS-Discovery: cannot send the probe to {}: {e}", p.target)))?;
    let end = Instant::now() + p.wait;
    let mut found: Vec<Found> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        let _ = sock.set_read_timeout(Some(left));
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(Error::io(format!("WS-Discovery: receiving: {e}"))),
        };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
        for f in matches(text, &id, from) {
            if found.len() < MAX_DEVICES && !found.iter().any(|g| g.endpoint == f.endpoint) {
                found.push(f);
            }
        }
    }
    Ok(found)
}

fn message_id() -> Result<String, Error> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| Error::internal("the random number generator failed"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("urn:uuid:{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// The Probe datagram (WS-Discovery 2005/04, SOAP 1.2).
pub fn probe_message(message_id: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
            r#"xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" "#,
            r#"xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>"#,
            "<a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>",
            "<a:MessageID>{}</a:MessageID>",
            "<a:To s:mustUnderstand=\"1\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>",
            "</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"
        ),
        message_id
    )
}

/// The devices of a ProbeMatches answer to our probe `id` (none if it answers another).
pub fn matches(xml: &str, id: &str, from: SocketAddr) -> Vec<Found> {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return Vec::new() };
    let relates = find(doc.root(), "RelatesTo").and_then(|r| r.text()).map(str::trim);
    if relates != Some(id) {
        return Vec::new();
    }
    let Some(pm) = find(doc.root(), "ProbeMatches") else { return Vec::new() };
    let each = pm.children().filter(|c| c.is_element() && c.tag_name().name() == "ProbeMatch");
    each.filter_map(|m| {
        let endpoint = child(m, "EndpointReference").and_then(|e| child_text(e, "Address"))?.to_string();
        let words = |name: &str| -> Vec<String> {
            child_text(m, name).unwrap_or_default().split_whitespace().map(str::to_string).collect()
        };
        let (xaddrs, scopes) = (words("XAddrs"), words("Scopes"));
        if endpoint.is_empty() || xaddrs.is_empty() {
            return None;
        }
        let scope = |kind: &str| {
            let prefix = format!("onvif://www.onvif.org/{kind}/");
            scopes.iter().find_map(|s| s.strip_prefix(&prefix)).map(percent_decode)
        };
        Some(Found {
            name: scope("name"),
            hardware: scope("hardware"),
            endpoint,
            xaddrs,
            scopes,
            from: from.to_string(),
        })
    })
    .collect()
}

/// Scope values are URI segments: `%20` and the like are decoded.
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
    <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"
      xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"
      xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
    <SOAP-ENV:Header><wsa:MessageID>urn:uuid:1</wsa:MessageID><wsa:RelatesTo>urn:uuid:ours</wsa:RelatesTo>
    <wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header>
    <SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>
      <wsa:EndpointReference><wsa:Address>urn:uuid:cam-1</wsa:Address></wsa:EndpointReference>
      <d:Types>dn:NetworkVideoTransmitter</d:Types>
      <d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/Front%20Door
        onvif://www.onvif.org/hardware/IPC-1</d:Scopes>
      <d:XAddrs>http://10.0.0.5/onvif/device_service http://[fe80::1]/onvif/device_service</d:XAddrs>
      <d:MetadataVersion>1</d:MetadataVersion>
    </d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn probe_matches_are_read() {
        let from: SocketAddr = "10.0.0.5:3702".parse().expect("addr");
        let f = matches(ANSWER, "urn:uuid:ours", from);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].endpoint, "urn:uuid:cam-1");
        assert_eq!(f[0].xaddrs.len(), 2);
        assert_eq!(f[0].name.as_deref(), Some("Front Door"));
        assert_eq!(f[0].hardware.as_deref(), Some("IPC-1"));
        assert!(matches(ANSWER, "urn:uuid:another", from).is_empty(), "an answer to another probe");
        assert!(matches("garbage", "urn:uuid:ours", from).is_empty());
    }

    #[test]
    fn probes_are_well_formed() {
        let id = message_id().expect("id");
        assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
        let doc_text = probe_message(&id);
        let doc = roxmltree::Document::parse(&doc_text).expect("xml");
        assert_eq!(find(doc.root(), "MessageID").and_then(|n| n.text()), Some(id.as_str()));
        assert_eq!(find(doc.root(), "Types").and_then(|n| n.text()), Some("dn:NetworkVideoTransmitter"));
    }
}
