//! SOAP 1.2 over HTTP for ONVIF: the envelope, the WS-Security UsernameToken
//! with a password digest, one call with a deadline, and reading the answer
//! (or its fault) with a real XML parser.
//!
//! Invariants:
//! - Every call has a deadline (connect and each read/write, `httpclient::post`).
//! - The password is sent only as its digest `Base64(SHA1(nonce + created +
//!   password))` with a fresh random nonce; it never appears in an error.
//! - Elements are found by local name: cameras differ in their prefixes and
//!   sometimes in their namespaces' versions.
//! - Text put into a request is XML-escaped.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use crate::base::error::{Error, Kind};
use crate::base::httpclient;

/// A camera's user name and password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The password is never printed.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// `PasswordDigest = Base64(SHA1(nonce + created + password))` (WS-Security
/// UsernameToken Profile 1.0, section 3.1).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(nonce);
    ctx.update(created.as_bytes());
    ctx.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// Escapes text for an XML element or attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The `wsse:Security` header for `creds` at `created` (RFC 3339 UTC).
fn security_header(creds: &Credentials, created: &str, nonce: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        concat!(
            r#"<wsse:Security s:mustUnderstand="1" "#,
            r#"xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" "#,
            r#"xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">"#,
            "<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>",
            r#"<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password>"#,
            r#"<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{nonce}</wsse:Nonce>"#,
            "<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
        ),
        user = esc(&creds.username),
        digest = password_digest(nonce, created, &creds.password),
        nonce = b64.encode(nonce),
        created = created,
    )
}

/// Namespace declarations every request body may use.
const NAMESPACES: &str = concat!(
    r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:tds="http://www.onvif.org/ver10/device/wsdl" "#,
    r#"xmlns:trt="http://www.onvif.org/ver10/media/wsdl" "#,
    r#"xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" "#,
    r#"xmlns:tev="http://www.onvif.org/ver10/events/wsdl" "#,
    r#"xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" "#,
    r#"xmlns:wsa="http://www.w3.org/2005/08/addressing" "#,
    r#"xmlns:tt="http://www.onvif.org/ver10/schema""#
);

/// A whole SOAP envelope around `body` (one request element).
pub fn envelope(body: &str, creds: Option<&Credentials>, now_ms: i64) -> Result<String, Error> {
    envelope_with(body, creds, now_ms, None)
}

/// WS-Addressing headers: the operation's `Action` URI and the endpoint
/// (`To`). The Events service's subscription managers are told apart by
/// `To` on cameras that serve them all at one URL.
#[derive(Debug, Clone, Copy)]
pub struct Addressing<'a> {
    pub action: &'a str,
    pub to: &'a str,
}

fn addressing_header(a: Addressing<'_>) -> String {
    format!(
        r#"<wsa:Action s:mustUnderstand="1">{}</wsa:Action><wsa:To s:mustUnderstand="1">{}</wsa:To>"#,
        esc(a.action),
        esc(a.to)
    )
}

/// [`envelope`] with WS-Addressing headers when `addressing` is given.
pub fn envelope_with(
    body: &str,
    creds: Option<&Credentials>,
    now_ms: i64,
    addressing: Option<Addressing<'_>>,
) -> Result<String, Error> {
    let wsa = addressing.map(addressing_header).unwrap_or_default();
    let header = match creds.filter(|c| !c.username.is_empty()) {
        None => String::new(),
        Some(c) => {
            let mut nonce = [0u8; 16];
            SystemRandom::new().fill(&mut nonce).map_err(|_| Error::internal("the random number generator failed"))?;
            // Seconds precision, as cameras' clocks parse it.
            let created = crate::base::clock::rfc3339(now_ms - now_ms.rem_euclid(1000));
            security_header(c, &created, &nonce)
        }
    };
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope {NAMESPACES}><s:Header>{wsa}{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    ))
}

/// One SOAP call: posts `body` to `url` and returns the answer's XML text.
/// A fault is an error: `Rejected` for ter:NotAuthorized (or HTTP 401),
/// `Upstream` otherwise, naming the operation and the camera's reason.
pub fn call(
    url: &str,
    op: &str,
    body: &str,
    creds: Option<&Credentials>,
    now_ms: i64,
    deadline: Duration,
) -> Result<String, Error> {
    call_addressed(url, op, body, creds, now_ms, deadline, None)
}

/// [`call`] with WS-Addressing headers (the Events service wants them).
pub fn call_addressed(
    url: &str,
    op: &str,
    body: &str,
    creds: Option<&Credentials>,
    now_ms: i64,
    deadline: Duration,
    addressing: Option<Addressing<'_>>,
) -> Result<String, Error> {
    let doc = envelope_with(body, creds, now_ms, addressing)?;
    let ct = "application/soap+xml; charset=utf-8";
    let r =
        httpclient::post_buffered(url, ct, doc.as_bytes(), deadline).map_err(|e| e.context(format!("ONVIF {op}")))?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    if let Some(f) = fault(&text) {
        return Err(fault_error(op, url, &f, r.status));
    }
    if r.status == 401 {
        return Err(not_authorized(op, url, "HTTP 401"));
    }
    if r.status != 200 {
        return Err(Error::upstream(format!("ONVIF {op} at {url}: the camera answered HTTP {}", r.status)));
    }
    roxmltree::Document::parse(&text)
        .map_err(|e| Error::upstream(format!("ONVIF {op} at {url}: the answer is not XML: {e}")))?;
    Ok(text)
}

fn not_authorized(op: &str, url: &str, why: &str) -> Error {
    Error::new(Kind::Rejected, format!("ONVIF {op} at {url}: the camera refused the user name or password ({why})"))
}

fn fault_error(op: &str, url: &str, f: &Fault, status: u16) -> Error {
    let codes = f.codes.join("/");
    if f.codes.iter().any(|c| local(c) == "NotAuthorized" || local(c) == "FailedAuthentication") {
        return not_authorized(op, url, &format!("fault {codes}"));
    }
    if status == 401 {
        return not_authorized(op, url, "HTTP 401");
    }
    Error::upstream(format!("ONVIF {op} at {url}: the camera answered a fault {codes}: {}", f.reason))
}

/// A SOAP fault: its code and subcodes (outermost first) and reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub codes: Vec<String>,
    pub reason: String,
}

/// The fault in a SOAP answer, if it is one (None for a non-XML answer too).
pub fn fault(xml: &str) -> Option<Fault> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let f = doc.descendants().find(|n| n.is_element() && n.tag_name().name() == "Fault")?;
    let mut codes = Vec::new();
    let mut code = child(f, "Code");
    while let Some(c) = code {
        if let Some(v) = child_text(c, "Value") {
            codes.push(v.to_string());
        }
        code = child(c, "Subcode");
    }
    let reason = child(f, "Reason").and_then(|r| child_text(r, "Text")).unwrap_or_default().to_string();
    Some(Fault { codes, reason })
}

/// The part of a qualified name after its prefix.
pub fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// The first child element named `name` (local name).
pub fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The trimmed text of the first child element named `name`.
pub fn child_text<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text()).map(str::trim)
}

/// The first element named `name` anywhere below `n`.
pub fn find<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.descendants().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Follows a path of child names from `n`.
pub fn path<'a, 'i>(n: roxmltree::Node<'a, 'i>, names: &[&str]) -> Option<roxmltree::Node<'a, 'i>> {
    names.iter().try_fold(n, |at, name| child(at, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_the_ws_security_example() {
        // Worked example of the ONVIF Application Programmer's Guide (section 6.1.1.3):
        // nonce LKqI6G/AikKCQrN0zqZFlg==, created 2010-09-16T07:50:45Z, password userpassword.
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64.decode("LKqI6G/AikKCQrN0zqZFlg==").expect("nonce");
        assert_eq!(password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"), "tuOSpGlFlIXsozq4HFNeeGeFLEI=");
    }

    #[test]
    fn envelopes_carry_a_token_and_never_the_password() {
        let c = Credentials { username: "ad<min".into(), password: "s3cret".into() };
        let e = envelope("<tds:GetDeviceInformation/>", Some(&c), 1_764_000_000_123).expect("envelope");
        let doc = roxmltree::Document::parse(&e).expect("xml");
        let tok = find(doc.root(), "UsernameToken").expect("token");
        assert_eq!(child_text(tok, "Username"), Some("ad<min"));
        assert_eq!(child_text(tok, "Created"), Some("2025-11-24T16:00:00Z"));
        assert!(!e.contains("s3cret"));
        assert!(find(doc.root(), "GetDeviceInformation").is_some());
        let anonymous = envelope("<x/>", None, 0).expect("envelope");
        assert!(!anonymous.contains("Security"));
    }

    #[test]
    fn faults_are_read() {
        let xml = r#"<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
            xmlns:ter="http://www.onvif.org/ver10/error"><env:Body><env:Fault>
            <env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value>
            </env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason>
            </env:Fault></env:Body></env:Envelope>"#;
        let f = fault(xml).expect("fault");
        assert_eq!(f.codes, ["env:Sender", "ter:NotAuthorized"]);
        assert_eq!(f.reason, "Sender not Authorized");
        let e = fault_error("GetProfiles", "http://cam/onvif/media", &f, 400);
        assert_eq!(e.kind, Kind::Rejected);
        assert!(e.message.contains("refused the user name or password"), "{e}");
        assert!(fault("<a/>").is_none() && fault("not xml").is_none());
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
