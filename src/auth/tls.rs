//! The HTTPS certificate and key (`web.tls`): made at first start, replaced by
//! an upload, served through rustls.
//!
//! Files, in `<data_dir>/tls/` (mode 0700): `cert.pem` (the chain, leaf first),
//! `key.pem` (mode 0600, never served, never logged) and `uploaded` (present
//! when the pair came from an admin's upload, so `source` can say so).
//!
//! Invariants:
//! - `Store::current` always holds a certificate and a key that match each
//!   other (rustls compared their public keys); a bad upload changes nothing.
//! - Files are replaced whole (written beside, synced, renamed): a power cut
//!   leaves the old pair or the new one, never half of one.
//! - A new pair takes effect for connections whose handshake starts after it
//!   (the resolver is asked per handshake); open connections keep theirs.
//! - The self-signed certificate is valid from 2000 to 2099: a box without a
//!   battery-backed clock may make it in 1970, and it must not expire when
//!   NTP then steps the clock (browsers pin a self-signed certificate by the
//!   user's exception, not by its dates).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const UPLOADED_FILE: &str = "uploaded";

/// Where a certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SelfSigned,
    Uploaded,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::SelfSigned => "self-signed",
            Source::Uploaded => "uploaded",
        }
    }
}

/// What a user checks about the certificate being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the leaf certificate's DER, upper-case hex pairs joined by
    /// `:` (as `openssl x509 -fingerprint -sha256` prints it).
    pub fingerprint: String,
    /// The leaf's subject, e.g. `CN=OxiNVR nvr`.
    pub subject: String,
    /// The leaf's notAfter, RFC 3339 UTC (`2099-12-31T23:59:59Z`).
    pub not_after: String,
    pub source: Source,
}

/// `<data_dir>/tls`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The certificate being served (or served at the next start) and its key.
pub struct Store {
    dir: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, CertInfo)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls::Store({})", self.dir.display())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Store {
    /// Loads `<data_dir>/tls`, first making a self-signed pair if there is none.
    pub fn open_or_create(data_dir: &Path) -> Result<Store, String> {
        let dir = dir(data_dir);
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if !cert.exists() || !key.exists() {
            let (cert_pem, key_pem) = self_signed()?;
            write_pair(&dir, &cert_pem, &key_pem, Source::SelfSigned)?;
            log::info!("made a self-signed HTTPS certificate in {}", dir.display());
        }
        let read = |p: &Path| fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let (cert_pem, key_pem) = (read(&cert)?, zeroize::Zeroizing::new(read(&key)?));
        let source = if dir.join(UPLOADED_FILE).exists() { Source::Uploaded } else { Source::SelfSigned };
        let loaded = certified(&cert_pem, &key_pem, source).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Store { dir, current: RwLock::new(loaded) })
    }

    pub fn info(&self) -> CertInfo {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Checks an uploaded pair, stores it and serves it to new connections.
    /// The error names what is wrong (for a 400).
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<CertInfo, String> {
        let loaded = certified(cert_pem.as_bytes(), key_pem.as_bytes(), Source::Uploaded)?;
        write_pair(&self.dir, cert_pem, key_pem, Source::Uploaded)?;
        let info = loaded.1.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(info)
    }

    /// A rustls server configuration that serves the current pair.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<Store>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

/// The certificate in `<data_dir>/tls`, if any, for the UART shell.
pub fn read_info(data_dir: &Path) -> Option<Result<CertInfo, String>> {
    let dir = dir(data_dir);
    let pem = fs::read(dir.join(CERT_FILE)).ok()?;
    let source = if dir.join(UPLOADED_FILE).exists() { Source::Uploaded } else { Source::SelfSigned };
    Some(leaf(&pem).and_then(|der| describe(&der, source)))
}

/// A new self-signed ECDSA P-256 pair, as PEM (certificate, PKCS#8 key).
fn self_signed() -> Result<(String, zeroize::Zeroizing<String>), String> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "oxinvr".to_string() } else { host };
    let mut names = vec![host.clone(), "localhost".to_string()];
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| format!("certificate names: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("OxiNVR {host}"));
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("self-signed certificate: {e}"))?;
    Ok((cert.pem(), zeroize::Zeroizing::new(key.serialize_pem())))
}

/// Parses and checks a PEM pair: the key must be the certificate's.
fn certified(cert_pem: &[u8], key_pem: &[u8], source: Source) -> Result<(Arc<CertifiedKey>, CertInfo), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: not valid PEM ({e})"))?;
    let Some(first) = chain.first() else {
        return Err("certificate: no \"-----BEGIN CERTIFICATE-----\" block found".into());
    };
    let info = describe(first, source)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!("private_key: no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key found in the PEM ({e}); encrypted keys are not supported")
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "private_key does not match the certificate (their public keys differ)".to_string()
        }
        e => format!("private_key: not a usable key for the certificate ({e})"),
    })?;
    Ok((Arc::new(ck), info))
}

/// The DER of the first certificate in `pem`.
fn leaf(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "no certificate in the PEM file".to_string())?
        .map_err(|e| format!("certificate: not valid PEM ({e})"))
}

fn describe(der: &[u8], source: Source) -> Result<CertInfo, String> {
    let (subject, not_after) = x509::subject_and_not_after(der)
        .ok_or_else(|| "certificate: not a DER X.509 certificate (cannot read its subject and validity)".to_string())?;
    Ok(CertInfo { fingerprint: fingerprint(der), subject, not_after, source })
}

/// SHA-256 of `der` as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Writes the pair (key 0600) beside the old one, then renames it into place.
fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str, source: Source) -> Result<(), String> {
    let err = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| err(dir, e))?;
    for (name, text, mode) in [(KEY_FILE, key_pem, 0o600), (CERT_FILE, cert_pem, 0o644)] {
        let (tmp, path) = (dir.join(format!("{name}.new")), dir.join(name));
        let _ = fs::remove_file(&tmp);
        let mut f =
            fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    }
    let marker = dir.join(UPLOADED_FILE);
    match source {
        Source::Uploaded => fs::write(&marker, b"").map_err(|e| err(&marker, e))?,
        Source::SelfSigned => {
            let _ = fs::remove_file(&marker);
        }
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(dir, e))
}

/// Just enough DER to read an X.509 certificate's subject and notAfter.
mod x509 {
    /// (tag, contents, rest) of the first TLV in `b`.
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
            b = &b[n..];
            len
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }

    pub fn subject_and_not_after(der: &[u8]) -> Option<(String, String)> {
        let (0x30, cert, _) = tlv(der)? else { return None };
        let (0x30, tbs, _) = tlv(cert)? else { return None };
        let mut rest = tbs;
        let (tag, _, r) = tlv(rest)?;
        if tag == 0xa0 {
            rest = r; // version
        }
        let (_, _, rest) = tlv(rest)?; // serial
        let (_, _, rest) = tlv(rest)?; // signature algorithm
        let (_, _, rest) = tlv(rest)?; // issuer
        let (0x30, validity, rest) = tlv(rest)? else { return None };
        let (_, _, v) = tlv(validity)?;
        let (time_tag, not_after, _) = tlv(v)?;
        let (0x30, subject, _) = tlv(rest)? else { return None };
        Some((name(subject)?, time(time_tag, not_after)?))
    }

    /// `CN=..., O=...` from a Name's RDN sequence.
    fn name(mut b: &[u8]) -> Option<String> {
        let mut parts = Vec::new();
        while !b.is_empty() {
            let (_, set, rest) = tlv(b)?;
            b = rest;
            let mut set = set;
            while !set.is_empty() {
                let (_, atv, r) = tlv(set)?;
                set = r;
                let (_, oid, r) = tlv(atv)?;
                let (_, value, _) = tlv(r)?;
                let key = match oid {
                    [0x55, 0x04, 0x03] => "CN".to_string(),
                    [0x55, 0x04, 0x06] => "C".into(),
                    [0x55, 0x04, 0x07] => "L".into(),
                    [0x55, 0x04, 0x08] => "ST".into(),
                    [0x55, 0x04, 0x0a] => "O".into(),
                    [0x55, 0x04, 0x0b] => "OU".into(),
                    _ => oid.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                };
                parts.push(format!("{key}={}", String::from_utf8_lossy(value)));
            }
        }
        Some(parts.join(", "))
    }

    /// UTCTime (0x17) or GeneralizedTime (0x18) as RFC 3339.
    fn time(tag: u8, b: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(b).ok()?;
        let digits = s.strip_suffix('Z')?;
        let full = match (tag, digits.len()) {
            (0x17, 12) => {
                let yy: u32 = digits[..2].parse().ok()?;
                format!("{}{digits}", if yy < 50 { "20" } else { "19" })
            }
            (0x18, 14) => digits.to_string(),
            _ => return None,
        };
        if !full.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let f = |a: usize, z: usize| &full[a..z];
        Some(format!("{}-{}-{}T{}:{}:{}Z", f(0, 4), f(4, 6), f(6, 8), f(8, 10), f(10, 12), f(12, 14)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_self_signed_pair_is_described_and_its_key_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(tmp.path()).expect("made");
        let info = store.info();
        assert_eq!(info.source, Source::SelfSigned);
        assert!(info.subject.starts_with("CN=OxiNVR "), "{}", info.subject);
        assert_eq!(info.not_after, "2099-12-31T00:00:00Z");
        assert_eq!(info.fingerprint.len(), 32 * 3 - 1);
        let mode = fs::metadata(dir(tmp.path()).join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Opened again: the same pair, not a new one.
        assert_eq!(Store::open_or_create(tmp.path()).unwrap().info(), info);
        assert_eq!(read_info(tmp.path()).unwrap().unwrap(), info);
    }

    #[test]
    fn a_mismatched_upload_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(tmp.path()).unwrap();
        let before = store.info();
        let (cert_a, _) = self_signed().unwrap();
        let (_, key_b) = self_signed().unwrap();
        let e = store.replace(&cert_a, &key_b).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert!(store.replace("junk", &key_b).unwrap_err().contains("certificate"));
        assert!(store.replace(&cert_a, "junk").unwrap_err().contains("private_key"));
        assert_eq!(store.info(), before);
        let (cert_c, key_c) = self_signed().unwrap();
        let info = store.replace(&cert_c, &key_c).expect("a matching pair");
        assert_eq!(info.source, Source::Uploaded);
        assert_eq!(read_info(tmp.path()).unwrap().unwrap(), info);
    }
}
