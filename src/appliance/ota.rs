//! Over-the-air updates: signed bundles, written into the inactive root file
//! system slot, activated by flipping the boot selector (`bootenv`).
//!
//! Bundle (`.oxb`), all integers little-endian:
//!
//! ```text
//! offset     size  what
//! 0          8     magic "OXIBNDL1"
//! 8          4     M = manifest length (u32, 1..=65536)
//! 12         M     manifest, UTF-8 JSON:
//!                  {"format":1,"version":"...","board":"...","created":"RFC 3339",
//!                   "images":[{"name":"rootfs","size":N,"sha256":"64 hex digits"}]}
//! 12+M       64    ed25519 signature over the M manifest bytes
//! 76+M       N     the rootfs image (squashfs)
//! 76+M+N           end of file: anything after it is refused
//! ```
//!
//! Keys: `ota.key` is the PKCS#8 (v2, DER) document `ring` generates, mode
//! 0600; `ota.pub` is the raw 32-byte public key written as 64 lowercase hex
//! digits and a newline (raw 32-byte files are read too).
//!
//! Invariants:
//! - Nothing is written anywhere before the header is complete, the signature
//!   verifies with `system.ota_public_key`, the format is 1 and
//!   `manifest.board == system.board`; and, when the bundle's length is known,
//!   before that length matches the manifest exactly.
//! - `install_file` verifies the whole file (hash, size, no trailing bytes)
//!   before writing anything; `install` (a stream: HTTP download or upload)
//!   cannot, so the image may be partly written when its hash turns out wrong.
//! - Only the inactive slot is ever written: never the slot named by the
//!   kernel command line, never a device that is mounted. Before its first
//!   byte is written the slot is disarmed in the boot env (its counter set to
//!   0, its version forgotten, the running slot first), so an interrupted or
//!   failed write can never be booted; this is the only change made before
//!   the image is verified.
//! - The boot env is flipped (new slot first with `boot_limit` tries, its
//!   `OXINVR_<slot>_VERSION` set) only after the image matched its size and
//!   sha256, the device was fsynced and read back with the same hash.
//! - A UBI volume slot (NAND, `/dev/ubiX_Y`) is written like `ubiupdatevol`:
//!   UBI_IOCVOLUP announces the image size first (untested here: no NAND).
//! - One install or mark-good at a time (flock on `<boot_env>.lock`, or
//!   `/run/oxinvr/ota.lock` with the U-Boot environment).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::appliance::bootenv::{self, BootEnv, Slot, Store};
use crate::base::error::{Context as _, Error, Kind, Result as Res};
use crate::config::SystemConfig;

pub const MAGIC: &[u8; 8] = b"OXIBNDL1";
pub const FORMAT: u32 = 1;
const MAX_MANIFEST: u32 = 64 * 1024;
const SIG_LEN: usize = 64;
const CHUNK: usize = 256 * 1024;
/// Environment override of the running slot, for tests (see docs/APPLIANCE.md).
pub const SLOT_ENV: &str = "OXINVR_CURRENT_SLOT";
const RUN_SLOT_FILE: &str = "/run/oxinvr/slot";

/// Why an update was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtaError {
    /// The data does not start with the bundle magic.
    NotABundle(String),
    /// The bundle ends early (or its declared length says it will).
    Truncated(String),
    /// Unknown format version, malformed manifest, trailing bytes.
    Format(String),
    /// The manifest's signature does not verify with our public key.
    BadSignature(String),
    /// The bundle is for another board.
    WrongBoard { bundle: String, ours: String },
    /// The image does not match the manifest (size or sha256).
    Image(String),
    /// Refused before writing for another reason (slot, device, key, lock).
    Refused(String),
    /// Reading or writing failed.
    Io(String),
}

impl fmt::Display for OtaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtaError::NotABundle(m) => write!(f, "not an OxiNVR bundle: {m}"),
            OtaError::Truncated(m) => write!(f, "truncated bundle: {m}"),
            OtaError::Format(m) => write!(f, "bad bundle: {m}"),
            OtaError::BadSignature(m) => write!(f, "bad signature: {m}"),
            OtaError::WrongBoard { bundle, ours } => {
                write!(f, "wrong board: the bundle is for board {bundle:?}, this box is {ours:?}")
            }
            OtaError::Image(m) => write!(f, "image does not match its manifest: {m}"),
            OtaError::Refused(m) | OtaError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OtaError {}

/// Malformed bundles are the sender's (`InvalidInput`); a well-formed one we
/// will not take (signature, board, an image that does not match its signed
/// manifest) is `Rejected`; a refusal in this state (slot, lock) `Conflict`.
impl From<OtaError> for Error {
    fn from(e: OtaError) -> Error {
        let kind = match e {
            OtaError::NotABundle(_) | OtaError::Truncated(_) | OtaError::Format(_) => Kind::InvalidInput,
            OtaError::BadSignature(_) | OtaError::WrongBoard { .. } | OtaError::Image(_) => Kind::Rejected,
            OtaError::Refused(_) => Kind::Conflict,
            OtaError::Io(_) => Kind::Io,
        };
        Error::wrap(kind, e)
    }
}

/// One image in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What a bundle says it holds (the signed part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    pub board: String,
    pub created: String,
    pub images: Vec<ImageEntry>,
}

/// A verified bundle header.
#[derive(Clone, Debug)]
pub struct Header {
    pub manifest: Manifest,
    /// The manifest's one image (rootfs).
    pub image: ImageEntry,
    /// Bytes before the image.
    pub header_len: u64,
}

impl Header {
    /// The bundle's total length according to its manifest.
    pub fn bundle_len(&self) -> u64 {
        self.header_len.saturating_add(self.image.size)
    }
}

/// What an install is doing, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the whole file once before writing (`install_file` only).
    Verify,
    /// Writing the image into the slot.
    Write,
    /// Reading the slot back after fsync.
    ReadBack,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Verify => "verifying",
            Phase::Write => "writing",
            Phase::ReadBack => "reading back",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

impl Progress {
    pub fn percent(&self) -> u64 {
        if self.total == 0 {
            100
        } else {
            (u128::from(self.done) * 100 / u128::from(self.total)) as u64
        }
    }
}

/// The result of a successful install.
#[derive(Clone, Debug)]
pub struct Installed {
    pub manifest: Manifest,
    pub slot: Slot,
    pub device: PathBuf,
    pub running: Slot,
    pub env: BootEnv,
}

// ---- hex, sha256 ----

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

// ---- keys ----

/// Writes `ota.key` (PKCS#8, 0600) and `ota.pub` (hex) into `dir`; refuses
/// to overwrite an existing key. Returns the two paths.
pub fn keygen(dir: &Path) -> Res<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("ota.key");
    let pub_path = dir.join("ota.pub");
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::internal("cannot generate a key (no randomness?)"))?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| Error::internal("the generated key does not load"))?;
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::conflict(format!(
                "{} exists; remove it first to make a new key (bundles signed with it will no longer install)",
                key_path.display()
            ))
        } else {
            Error::from(e).context(format!("cannot create {}", key_path.display()))
        }
    })?;
    f.write_all(pkcs8.as_ref())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    bootenv::write_atomic(&pub_path, format!("{}\n", hex(pair.public_key().as_ref())).as_bytes())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok((key_path, pub_path))
}

/// Reads a private key: PKCS#8 DER, v2 (ring) or v1 (`openssl genpkey -algorithm ed25519 -outform DER`).
pub fn load_private_key(path: &Path) -> Res<Ed25519KeyPair> {
    let bytes = fs::read(path).with_context(|| format!("cannot read key {}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&bytes)
        .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&bytes))
        .map_err(|e| Error::invalid(format!("{} is not an ed25519 PKCS#8 (DER) private key: {e}", path.display())))
}

/// Reads a public key: 64 hex digits (whitespace around ignored) or 32 raw bytes.
pub fn load_public_key(path: &Path) -> Res<[u8; 32]> {
    let bytes = fs::read(path).with_context(|| format!("cannot read OTA public key {}", path.display()))?;
    parse_public_key(&bytes).ok_or_else(|| {
        Error::invalid(format!("{} is not an ed25519 public key (64 hex digits or 32 raw bytes)", path.display()))
    })
}

fn parse_public_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let from_hex = std::str::from_utf8(bytes).ok().map(str::trim).and_then(unhex);
    let raw = match from_hex {
        Some(v) if v.len() == 32 => v,
        _ if bytes.len() == 32 => bytes.to_vec(),
        _ => return None,
    };
    raw.try_into().ok()
}

// ---- making bundles ----

/// What `make_bundle` needs.
pub struct BundleSpec<'a> {
    pub key: &'a Path,
    pub board: &'a str,
    pub version: &'a str,
    pub image: &'a Path,
    pub out: &'a Path,
}

fn check_label(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {v:?} must be 1-64 letters, digits or - _ . + ~"))
    }
}

/// Writes a signed bundle of `image`; returns its manifest.
pub fn make_bundle(spec: &BundleSpec<'_>) -> Res<Manifest> {
    check_label("board", spec.board).map_err(Error::invalid)?;
    check_label("version", spec.version).map_err(Error::invalid)?;
    let pair = load_private_key(spec.key)?;
    let img = || format!("image {}", spec.image.display());
    let mut image = File::open(spec.image).with_context(img)?;
    let (size, digest) = hash_reader(&mut image, None, &mut |_| {}).with_context(img)?;
    if size == 0 {
        return Err(Error::invalid(format!("image {} is empty", spec.image.display())));
    }
    let manifest = Manifest {
        format: FORMAT,
        version: spec.version.into(),
        board: spec.board.into(),
        created: crate::base::clock::rfc3339(crate::base::clock::Clock::now_ms(&crate::base::clock::RealClock)),
        images: vec![ImageEntry { name: "rootfs".into(), size, sha256: hex(&digest) }],
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| Error::internal(format!("manifest: {e}")))?;
    let sig = pair.sign(&json);
    let out_err = |e: io::Error| Error::from(e).context(format!("cannot write {}", spec.out.display()));
    let tmp = spec.out.with_extension("oxb.tmp");
    let result = (|| {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.write_all(sig.as_ref())?;
        image.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut (&mut image).take(size), &mut out)?;
        if copied != size {
            return Err(io::Error::other(format!("the image shrank while being read ({copied} of {size} bytes)")));
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(out_err(e));
    }
    // What a box will check, checked once here (the image may have changed
    // between hashing and copying).
    let public: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| Error::internal("bad public key"))?;
    let checked = File::open(&tmp).map_err(Error::from).and_then(|mut f| {
        let len = f.metadata().map(|m| m.len()).ok();
        verify_reader(&mut f, len, &public, spec.board, &mut |_| {}).map_err(Error::from)
    });
    if let Err(e) = checked.and_then(|_| fs::rename(&tmp, spec.out).map_err(out_err)) {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("{} not written", spec.out.display())));
    }
    Ok(manifest)
}

// ---- reading bundles ----

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean or partial EOF
/// (how much was read goes to `got`).
fn read_full(r: &mut dyn Read, buf: &mut [u8], got: &mut usize) -> io::Result<bool> {
    *got = 0;
    while *got < buf.len() {
        match r.read(&mut buf[*got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn read_part(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), OtaError> {
    let mut got = 0;
    match read_full(r, buf, &mut got) {
        Ok(true) => Ok(()),
        Ok(false) => Err(OtaError::Truncated(format!("it ends inside the {what} ({got} of {} bytes)", buf.len()))),
        Err(e) => Err(OtaError::Io(format!("reading the bundle ({what}): {e}"))),
    }
}

/// Reads and verifies the header: magic, manifest, signature (with
/// `public_key`), format, board. Reads nothing past the signature.
pub fn read_header(r: &mut dyn Read, public_key: &[u8; 32], board: &str) -> Result<Header, OtaError> {
    let mut magic = [0u8; 8];
    let mut got = 0;
    match read_full(r, &mut magic, &mut got) {
        Ok(true) => {}
        Ok(false) if got == 0 => return Err(OtaError::Truncated("it is empty".into())),
        Ok(false) if MAGIC.starts_with(&magic[..got]) => {
            return Err(OtaError::Truncated(format!("it ends inside the magic ({got} of 8 bytes)")))
        }
        Ok(false) => {
            return Err(OtaError::NotABundle(format!("it starts with {:?}", String::from_utf8_lossy(&magic[..got]))))
        }
        Err(e) => return Err(OtaError::Io(format!("reading the bundle: {e}"))),
    }
    if &magic != MAGIC {
        if magic.starts_with(b"OXIBNDL") {
            return Err(OtaError::Format(format!(
                "bundle format {:?} is not supported by this version (it reads OXIBNDL1)",
                String::from_utf8_lossy(&magic)
            )));
        }
        return Err(OtaError::NotABundle(format!(
            "it starts with {:?}, not \"OXIBNDL1\"",
            String::from_utf8_lossy(&magic)
        )));
    }
    let mut len = [0u8; 4];
    read_part(r, &mut len, "manifest length")?;
    let m_len = u32::from_le_bytes(len);
    if m_len == 0 || m_len > MAX_MANIFEST {
        return Err(OtaError::Format(format!("manifest length {m_len} is not within 1..={MAX_MANIFEST}")));
    }
    let mut manifest_bytes = vec![0u8; m_len as usize];
    read_part(r, &mut manifest_bytes, "manifest")?;
    let mut sig = [0u8; SIG_LEN];
    read_part(r, &mut sig, "signature")?;
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key).verify(&manifest_bytes, &sig).map_err(|_| {
        OtaError::BadSignature(
            "the manifest is not signed by this box's OTA key (another key, or a modified bundle)".into(),
        )
    })?;
    // Signed, so the manifest is ours: now read it.
    let value: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(|e| OtaError::Format(format!("manifest is not JSON: {e}")))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(OtaError::Format(format!(
                "manifest format {f} is not supported by this version (it reads format {FORMAT})"
            )))
        }
        None => return Err(OtaError::Format("manifest has no format number".into())),
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| OtaError::Format(format!("manifest: {e}")))?;
    if manifest.board != board {
        return Err(OtaError::WrongBoard { bundle: manifest.board, ours: board.to_string() });
    }
    check_label("version", &manifest.version).map_err(|e| OtaError::Format(format!("manifest: {e}")))?;
    let image = match manifest.images.as_slice() {
        [img] if img.name == "rootfs" && img.size > 0 && is_sha256_hex(&img.sha256) => img.clone(),
        [img] => {
            return Err(OtaError::Format(format!(
                "manifest image {:?} (size {}, sha256 {:?}) is not a rootfs image with a size and a sha256",
                img.name, img.size, img.sha256
            )))
        }
        imgs => {
            return Err(OtaError::Format(format!("manifest lists {} images; format 1 has one (rootfs)", imgs.len())))
        }
    };
    Ok(Header { manifest, image, header_len: 12 + u64::from(m_len) + SIG_LEN as u64 })
}

/// Hashes up to `limit` bytes (all if None); returns (bytes, sha256).
fn hash_reader(r: &mut dyn Read, limit: Option<u64>, progress: &mut dyn FnMut(u64)) -> io::Result<(u64, [u8; 32])> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let want = match limit {
            Some(l) => usize::try_from((l - done).min(CHUNK as u64)).unwrap_or(CHUNK),
            None => CHUNK,
        };
        if want == 0 {
            break;
        }
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((done, out))
}

/// Fails if anything follows the image.
fn expect_end(r: &mut dyn Read) -> Result<(), OtaError> {
    let mut one = [0u8; 1];
    loop {
        match r.read(&mut one) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(OtaError::Format("there are bytes after the image (trailing garbage)".into())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(OtaError::Io(format!("reading the bundle: {e}"))),
        }
    }
}

/// Checks the declared total length of a bundle against its manifest.
fn check_len(header: &Header, len: Option<u64>) -> Result<(), OtaError> {
    match len {
        Some(n) if n < header.bundle_len() => Err(OtaError::Truncated(format!(
            "it is {n} bytes; its manifest needs {} ({} of image)",
            header.bundle_len(),
            header.image.size
        ))),
        Some(n) if n > header.bundle_len() => Err(OtaError::Format(format!(
            "it is {n} bytes; its manifest accounts for {} ({} bytes of trailing garbage)",
            header.bundle_len(),
            n - header.bundle_len()
        ))),
        _ => Ok(()),
    }
}

fn check_image(img: &ImageEntry, size: u64, digest: &[u8; 32]) -> Result<(), OtaError> {
    if size < img.size {
        return Err(OtaError::Truncated(format!("the image ends after {size} of {} bytes", img.size)));
    }
    if hex(digest) != img.sha256 {
        return Err(OtaError::Image(format!("sha256 is {}, the manifest says {}", hex(digest), img.sha256)));
    }
    Ok(())
}

/// Verifies a whole bundle without writing anything: header, length, image
/// hash, no trailing bytes. Used by `ota verify` and before `install_file`.
pub fn verify_reader(
    r: &mut dyn Read,
    len: Option<u64>,
    public_key: &[u8; 32],
    board: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, OtaError> {
    let header = read_header(r, public_key, board)?;
    check_len(&header, len)?;
    let img = header.image.clone();
    let (size, digest) =
        hash_reader(r, Some(img.size), &mut |done| progress(Progress { phase: Phase::Verify, done, total: img.size }))
            .map_err(|e| OtaError::Io(format!("reading the bundle: {e}")))?;
    check_image(&img, size, &digest)?;
    expect_end(r)?;
    Ok(header.manifest)
}

// ---- the running system ----

/// The running slot and where that was read.
pub fn current_slot() -> Result<(Slot, String), String> {
    if let Ok(v) = std::env::var(SLOT_ENV) {
        let s = Slot::parse(&v).ok_or_else(|| format!("{SLOT_ENV}={v:?} is not A or B"))?;
        return Ok((s, format!("${SLOT_ENV}")));
    }
    appliance_slot()?.ok_or_else(|| {
        format!(
            "cannot tell which slot is running: no oxinvr.slot= in /proc/cmdline and no {RUN_SLOT_FILE} \
             (this is not a booted OxiNVR appliance)"
        )
    })
}

/// The running slot from the appliance's own markers only (not the test
/// override): `oxinvr.slot=` in /proc/cmdline, else /run/oxinvr/slot.
/// `Ok(None)` on a machine that is not an OxiNVR appliance.
pub fn appliance_slot() -> Result<Option<(Slot, String)>, String> {
    if let Ok(cmdline) = fs::read_to_string("/proc/cmdline") {
        if let Some(v) = slot_from_cmdline(&cmdline) {
            let s = Slot::parse(v).ok_or_else(|| format!("/proc/cmdline says oxinvr.slot={v:?}: not A or B"))?;
            return Ok(Some((s, "/proc/cmdline".into())));
        }
    }
    match fs::read_to_string(RUN_SLOT_FILE) {
        Ok(v) => Slot::parse(&v)
            .map(|s| Some((s, RUN_SLOT_FILE.to_string())))
            .ok_or_else(|| format!("{RUN_SLOT_FILE} says {:?}: not A or B", v.trim())),
        Err(_) => Ok(None),
    }
}

fn slot_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().rev().find_map(|w| w.strip_prefix("oxinvr.slot="))
}

/// Holds the OTA lock.
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// `<boot_env>.lock` beside a boot env file; for the U-Boot environment
/// `/run/oxinvr/ota.lock` (or in the temporary directory off the appliance).
fn lock_path(sys: &SystemConfig) -> PathBuf {
    match Store::of(&sys.boot_env) {
        Store::File(p) => {
            let mut path = p.into_os_string();
            path.push(".lock");
            PathBuf::from(path)
        }
        Store::UbootEnv { .. } => {
            let run = Path::new("/run/oxinvr");
            if run.is_dir() {
                run.join("ota.lock")
            } else {
                std::env::temp_dir().join("oxinvr-ota.lock")
            }
        }
    }
}

fn lock(sys: &SystemConfig) -> Result<Lock, OtaError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = lock_path(sys);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OtaError::Refused(format!("cannot open the OTA lock {}: {e}", path.display())))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map(Lock)
        .map_err(|_| OtaError::Refused("another update (or mark-good) is running; wait for it to finish".into()))
}

fn load_env(store: &Store, running: Slot, limit: u32) -> Result<BootEnv, OtaError> {
    Ok(store.load().map_err(|e| OtaError::Io(e.to_string()))?.unwrap_or_else(|| BootEnv::new(running, limit)))
}

/// Whether `dev` (or what it resolves to) is mounted, per /proc/mounts.
fn is_mounted(dev: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else { return false };
    let real = fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf());
    mounts.lines().filter_map(|l| l.split_whitespace().next()).any(|src| {
        let p = Path::new(src);
        p == dev || p == real || fs::canonicalize(p).is_ok_and(|c| c == real)
    })
}

nix::ioctl_write_ptr!(ubi_iocvolup, b'O', 0, i64);

/// UBI_IOCVOLUP: the next `size` bytes written replace the volume's content
/// (what `ubiupdatevol` does). `size` 0 would erase the volume: not called so.
fn ubi_volume_update(f: &File, size: u64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    if size == 0 {
        return Ok(());
    }
    let bytes = i64::try_from(size).map_err(|_| format!("{size} bytes is too large"))?;
    // SAFETY: the fd is open for writing and the pointer is to a live i64.
    unsafe { ubi_iocvolup(f.as_raw_fd(), &bytes) }.map(|_| ()).map_err(|e| e.to_string())
}

/// Opens the inactive slot's device for writing after the safety checks.
fn open_target(sys: &SystemConfig, running: Slot, size: u64) -> Result<(Slot, PathBuf, File), OtaError> {
    let target = running.other();
    let device = slot_path(sys, target).to_path_buf();
    let active = slot_path(sys, running);
    let same =
        device == active || matches!((fs::canonicalize(&device), fs::canonicalize(active)), (Ok(a), Ok(b)) if a == b);
    if same {
        return Err(OtaError::Refused(format!(
            "slot {target} ({}) is the running slot's device; refusing to write it",
            device.display()
        )));
    }
    if is_mounted(&device) {
        return Err(OtaError::Refused(format!(
            "slot {target} ({}) is mounted; refusing to write it",
            device.display()
        )));
    }
    let mut f =
        OpenOptions::new().read(true).write(true).open(&device).map_err(|e| {
            OtaError::Refused(format!("cannot open slot {target} ({}) for writing: {e}", device.display()))
        })?;
    let ftype = f.metadata().map(|m| m.file_type()).ok();
    let is_block = ftype.is_some_and(|t| std::os::unix::fs::FileTypeExt::is_block_device(&t));
    let is_char = ftype.is_some_and(|t| std::os::unix::fs::FileTypeExt::is_char_device(&t));
    if is_char && device.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ubi")) {
        // A UBI volume (NAND) takes writes only after announcing their total size.
        ubi_volume_update(&f, size).map_err(|e| {
            OtaError::Refused(format!("slot {target} ({}): UBI volume update refused: {e}", device.display()))
        })?;
    }
    if is_block {
        let capacity = f.seek(SeekFrom::End(0)).and_then(|c| f.seek(SeekFrom::Start(0)).map(|_| c));
        match capacity {
            Ok(c) if c < size => {
                return Err(OtaError::Refused(format!(
                    "the image is {size} bytes; slot {target} ({}) holds only {c}",
                    device.display()
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(OtaError::Io(format!("slot {target} ({}): {e}", device.display()))),
        }
    }
    Ok((target, device, f))
}

/// Installs a bundle read from a stream (HTTP download, HTTP upload) of
/// `len` bytes if known. See the module invariants; `progress` is called
/// after each chunk.
pub fn install(
    sys: &SystemConfig,
    reader: &mut dyn Read,
    len: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, OtaError> {
    let _lock = lock(sys)?;
    install_locked(sys, reader, len, progress)
}

/// Installs a bundle file: the whole file is verified first (nothing is
/// written if anything is wrong), then installed like `install` (which
/// checks everything again as it writes).
pub fn install_file(
    sys: &SystemConfig,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, OtaError> {
    let _lock = lock(sys)?;
    let (running, _) = current_slot().map_err(OtaError::Refused)?;
    let key = load_public_key(&sys.ota_public_key).map_err(|e| OtaError::Refused(e.to_string()))?;
    let open = || File::open(path).map_err(|e| OtaError::Io(format!("cannot open {}: {e}", path.display())));
    let mut f = open()?;
    let len = f.metadata().map(|m| m.len()).ok();
    verify_reader(&mut f, len, &key, &sys.board, progress)?;
    // The slot checks too, so that an unwritable slot is reported before the long write.
    drop(open_target(sys, running, 0)?);
    let mut f = open()?;
    install_locked(sys, &mut f, len, progress)
}

fn install_locked(
    sys: &SystemConfig,
    reader: &mut dyn Read,
    len: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, OtaError> {
    let (running, _) = current_slot().map_err(OtaError::Refused)?;
    let key = load_public_key(&sys.ota_public_key).map_err(|e| OtaError::Refused(e.to_string()))?;
    let header = read_header(reader, &key, &sys.board)?;
    check_len(&header, len)?;
    let img = header.image.clone();
    let store = Store::of(&sys.boot_env);
    let mut env = load_env(&store, running, sys.boot_limit)?;
    let (target, device, mut dev) = open_target(sys, running, img.size)?;
    let dev_err = |what: &str, e: io::Error| OtaError::Io(format!("{what} slot {target} ({}): {e}", device.display()));

    // From here on the slot's old content is gone: it must not boot.
    if env.disarm(target) {
        store.save(&env).map_err(|e| OtaError::Io(e.to_string()))?;
    }

    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < img.size {
        let want = usize::try_from((img.size - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut got = 0;
        let complete = read_full(reader, &mut buf[..want], &mut got)
            .map_err(|e| OtaError::Io(format!("reading the bundle after {} image bytes: {e}", done)))?;
        ctx.update(&buf[..got]);
        dev.write_all(&buf[..got]).map_err(|e| dev_err("writing", e))?;
        done += got as u64;
        progress(Progress { phase: Phase::Write, done, total: img.size });
        if !complete {
            break;
        }
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    check_image(&img, done, &digest)?;
    expect_end(reader)?;
    dev.sync_all().map_err(|e| dev_err("fsync of", e))?;

    // Read back what the device holds (not the page cache, where possible).
    let _ = nix::fcntl::posix_fadvise(&dev, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    dev.seek(SeekFrom::Start(0)).map_err(|e| dev_err("seeking", e))?;
    let (back, back_digest) = hash_reader(&mut dev, Some(img.size), &mut |d| {
        progress(Progress { phase: Phase::ReadBack, done: d, total: img.size })
    })
    .map_err(|e| dev_err("reading back", e))?;
    if back != img.size || back_digest != digest {
        return Err(OtaError::Io(format!(
            "slot {target} ({}) reads back {back} bytes with sha256 {}, not what was written: the storage may be failing",
            device.display(),
            hex(&back_digest)
        )));
    }
    drop(dev);

    env.set_version(target, Some(&header.manifest.version));
    env.flip(target, running, sys.boot_limit);
    store.save(&env).map_err(|e| OtaError::Io(e.to_string()))?;
    Ok(Installed { manifest: header.manifest, slot: target, device, running, env })
}

/// Prints progress lines: one per phase every 10 %.
pub fn progress_printer(out: &mut dyn Write) -> impl FnMut(Progress) + '_ {
    let mut last: Option<(Phase, u64)> = None;
    move |p: Progress| {
        let step = p.percent() / 10;
        let seen = last.is_some_and(|(ph, s)| ph == p.phase && s == step);
        if seen || (step == 0 && p.done < p.total) {
            return;
        }
        last = Some((p.phase, step));
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let _ = writeln!(out, "{} {:>3}% ({:.1} of {:.1} MiB)", p.phase, p.percent(), mib(p.done), mib(p.total));
        let _ = out.flush();
    }
}

/// `ota install FILE|http://URL`: installs with progress on `out`; returns
/// what was installed (a message has been printed).
pub fn install_from(sys: &SystemConfig, source: &str, out: &mut dyn Write) -> Res<Installed> {
    let is_url = source.contains("://");
    let result = {
        let _ = writeln!(out, "installing {source} (board {}, public key {})", sys.board, sys.ota_public_key.display());
        let mut printer = progress_printer(out);
        if is_url {
            let mut d = crate::base::httpclient::download(source)?;
            install(sys, &mut d.reader, d.len, &mut printer)
        } else {
            install_file(sys, Path::new(source), &mut printer)
        }
    };
    match result {
        Ok(done) => {
            let _ = writeln!(
                out,
                "installed version {} into slot {} ({}); {}",
                done.manifest.version,
                done.slot,
                done.device.display(),
                done.env.summary()
            );
            let _ = writeln!(
                out,
                "reboot to start it: it has {} boot(s) to report healthy, otherwise slot {} comes back",
                sys.boot_limit, done.running
            );
            Ok(done)
        }
        Err(e) => {
            let env = match Store::of(&sys.boot_env).load() {
                Ok(Some(env)) => match env.next_boot() {
                    Some(n) => format!("{} (next boot: slot {n})", env.summary()),
                    None => env.summary(),
                },
                Ok(None) => "no state yet".into(),
                Err(e) => e.to_string(),
            };
            // The boot selector's state goes last, after the reason.
            Err(Error::new(Error::from(e.clone()).kind, format!("update refused: {e}\nboot selector: {env}")))
        }
    }
}

/// `ota verify BUNDLE`: everything `install` checks, nothing written.
pub fn verify_file(path: &Path, public_key: &Path, board: &str, out: &mut dyn Write) -> Res<Manifest> {
    let key = load_public_key(public_key)?;
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).ok();
    let mut printer = progress_printer(out);
    verify_reader(&mut f, len, &key, board, &mut printer).context(path.display())
}

/// `ota mark-good`: the running slot gets `boot_limit` tries again (and goes
/// first unless an update is pending). Returns what was done.
pub fn mark_good(sys: &SystemConfig) -> Result<String, OtaError> {
    let _lock = lock(sys)?;
    let (running, _) = current_slot().map_err(OtaError::Refused)?;
    let store = Store::of(&sys.boot_env);
    let mut env = load_env(&store, running, sys.boot_limit)?;
    let said = env.mark_good(running, sys.boot_limit);
    store.save(&env).map_err(|e| OtaError::Io(e.to_string()))?;
    Ok(format!("{said}; {}", env.summary()))
}

/// `ota status` as lines of text.
pub fn status(sys: &SystemConfig) -> Vec<String> {
    let mut out = Vec::new();
    let running = match current_slot() {
        Ok((s, from)) => {
            out.push(format!("running slot: {s} (from {from}), {}", crate::appliance::version_line()));
            Some(s)
        }
        Err(e) => {
            out.push(format!("running slot: unknown: {e}"));
            None
        }
    };
    let store = Store::of(&sys.boot_env);
    let env = match store.load() {
        Ok(Some(env)) => {
            out.push(format!("boot selector ({}): {}", store.describe(), env.summary()));
            out.push(match (env.next_boot(), running) {
                (None, _) => "next boot: no slot has tries left; the boot loader's last resort decides".into(),
                (Some(n), Some(r)) if n != r => format!(
                    "next boot: slot {n} (update pending, {} tries; slot {r} comes back if it never reports healthy)",
                    env.left(n)
                ),
                (Some(n), Some(r)) if env.left(r) < sys.boot_limit => format!(
                    "next boot: slot {n}; it is not marked good yet ({} of {} tries left)",
                    env.left(r),
                    sys.boot_limit
                ),
                (Some(n), _) => format!("next boot: slot {n}"),
            });
            Some(env)
        }
        Ok(None) => {
            out.push(format!("boot selector ({}): no state yet (the boot loader's defaults apply)", store.describe()));
            None
        }
        Err(e) => {
            out.push(e.to_string());
            None
        }
    };
    for slot in [Slot::A, Slot::B] {
        let what = match env.as_ref().and_then(|e| e.version(slot)) {
            Some(v) => format!("version {v}"),
            None => "version unknown (not installed by oxinvr ota, or being overwritten)".into(),
        };
        let tag = if Some(slot) == running { " [running]" } else { "" };
        out.push(format!("slot {slot} ({}): {what}{tag}", slot_path(sys, slot).display()));
    }
    out
}

/// The device of a slot.
fn slot_path(sys: &SystemConfig, slot: Slot) -> &Path {
    match slot {
        Slot::A => &sys.slot_a,
        Slot::B => &sys.slot_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bench {
        dir: tempfile::TempDir,
        sys: SystemConfig,
        key: PathBuf,
        image: Vec<u8>,
    }

    fn setup(board: &str) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = keygen(&dir.path().join("keys")).expect("keygen");
        let sys = SystemConfig {
            board: board.into(),
            slot_a: dir.path().join("slot-a"),
            slot_b: dir.path().join("slot-b"),
            boot_env: dir.path().join("boot.env"),
            ota_public_key: public,
            boot_limit: 3,
            network_interfaces: dir.path().join("interfaces"),
        };
        fs::write(&sys.slot_a, b"running system A").expect("slot a");
        fs::write(&sys.slot_b, vec![0xEE; 1000]).expect("slot b");
        fs::write(&sys.boot_env, "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n").expect("env");
        let image: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        Bench { dir, sys, key, image }
    }

    impl Bench {
        fn bundle(&self, board: &str, key: &Path) -> Vec<u8> {
            let img = self.dir.path().join("rootfs.squashfs");
            fs::write(&img, &self.image).expect("image");
            let out = self.dir.path().join("b.oxb");
            let spec = BundleSpec { key, board, version: "1.2.3", image: &img, out: &out };
            make_bundle(&spec).expect("make_bundle");
            fs::read(&out).expect("read bundle")
        }

        fn install_bytes(&self, bytes: &[u8], as_file: bool) -> Result<Installed, OtaError> {
            if as_file {
                let p = self.dir.path().join("in.oxb");
                fs::write(&p, bytes).expect("write");
                install_file(&self.sys, &p, &mut |_| {})
            } else {
                install(&self.sys, &mut &bytes[..], None, &mut |_| {})
            }
        }

        fn untouched(&self) {
            assert_eq!(fs::read(&self.sys.slot_a).expect("a"), b"running system A", "the running slot was written");
            assert_eq!(fs::read(&self.sys.slot_b).expect("b"), vec![0xEE; 1000], "the target slot was written");
            assert_eq!(
                fs::read_to_string(&self.sys.boot_env).expect("env"),
                "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n",
                "the boot env was changed"
            );
        }
    }

    // The slot override is process-wide: one test sets it for all.
    fn running_a() {
        std::env::set_var(SLOT_ENV, "A");
    }

    #[test]
    fn round_trip_installs_into_the_inactive_slot() {
        running_a();
        let b = setup("generic");
        let bytes = b.bundle("generic", &b.key);
        assert_eq!(&bytes[..8], MAGIC);
        let m_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4")) as usize;
        let manifest: Manifest = serde_json::from_slice(&bytes[12..12 + m_len]).expect("manifest json");
        assert_eq!(manifest.images[0].size, b.image.len() as u64);
        assert_eq!(bytes.len(), 12 + m_len + 64 + b.image.len());
        let mut seen = Vec::new();
        let done = install(&b.sys, &mut &bytes[..], Some(bytes.len() as u64), &mut |p| seen.push(p)).expect("install");
        assert_eq!((done.slot, done.running), (Slot::B, Slot::A));
        assert_eq!(done.manifest.version, "1.2.3");
        assert_eq!(&fs::read(&b.sys.slot_b).expect("b")[..b.image.len()], &b.image[..]);
        assert_eq!(fs::read(&b.sys.slot_a).expect("a"), b"running system A");
        let env = BootEnv::load(&b.sys.boot_env).expect("env").expect("exists");
        assert_eq!(env.summary(), "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3");
        assert_eq!(env.version(Slot::B), Some("1.2.3"));
        let writes: Vec<_> = seen.iter().filter(|p| p.phase == Phase::Write).collect();
        assert!(writes.len() >= 3 && writes.last().expect("last").percent() == 100, "{seen:?}");
        assert!(seen.iter().any(|p| p.phase == Phase::ReadBack));
        // The same through install_file, which verifies first.
        let b = setup("generic");
        let bytes = b.bundle("generic", &b.key);
        let done = b.install_bytes(&bytes, true).expect("install_file");
        assert_eq!(done.slot, Slot::B);
        assert_eq!(&fs::read(&b.sys.slot_b).expect("b")[..b.image.len()], &b.image[..]);
        let st = status(&b.sys).join("\n");
        assert!(st.contains("update pending") && st.contains("version 1.2.3"), "{st}");
    }

    #[test]
    fn bad_signature_wrong_board_and_truncation_write_nothing() {
        running_a();
        let b = setup("generic");
        let (other_key, _) = keygen(&b.dir.path().join("other")).expect("keygen");
        let good = b.bundle("generic", &b.key);
        for as_file in [true, false] {
            let e = b.install_bytes(&b.bundle("generic", &other_key), as_file).unwrap_err();
            assert!(matches!(e, OtaError::BadSignature(_)), "{e}");
            assert!(e.to_string().starts_with("bad signature"), "{e}");
            b.untouched();
            let e = b.install_bytes(&b.bundle("a1", &b.key), as_file).unwrap_err();
            assert_eq!(e, OtaError::WrongBoard { bundle: "a1".into(), ours: "generic".into() });
            assert!(e.to_string().contains("\"a1\"") && e.to_string().contains("\"generic\""), "{e}");
            b.untouched();
            // A flipped byte inside the manifest: the signature no longer holds.
            let mut tampered = good.clone();
            tampered[20] ^= 1;
            assert!(matches!(b.install_bytes(&tampered, as_file), Err(OtaError::BadSignature(_))));
            b.untouched();
            for cut in [0, 5, 10, 40, 12 + 100] {
                let e = b.install_bytes(&good[..cut], as_file).unwrap_err();
                assert!(matches!(e, OtaError::Truncated(_)), "cut {cut}: {e}");
                b.untouched();
            }
            let e = b.install_bytes(b"PK\x03\x04 a zip file", as_file).unwrap_err();
            assert!(matches!(e, OtaError::NotABundle(_)), "{e}");
            b.untouched();
        }
        // A known length that disagrees with the manifest is refused before writing.
        let e = install(&b.sys, &mut &good[..], Some(good.len() as u64 - 1), &mut |_| {}).unwrap_err();
        assert!(matches!(e, OtaError::Truncated(_)), "{e}");
        b.untouched();
    }

    #[test]
    fn tampered_or_short_image_is_refused_and_never_activated() {
        running_a();
        let b = setup("generic");
        let good = b.bundle("generic", &b.key);
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0xFF;
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"x");
        let short = &good[..good.len() - 10];
        // From a file: verified first, nothing written at all.
        let e = b.install_bytes(&tampered, true).unwrap_err();
        assert!(matches!(e, OtaError::Image(_)), "{e}");
        assert!(e.to_string().contains("sha256"), "{e}");
        b.untouched();
        let e = b.install_bytes(&trailing, true).unwrap_err();
        assert!(matches!(e, OtaError::Format(_)) && e.to_string().contains("trailing"), "{e}");
        b.untouched();
        let e = b.install_bytes(short, true).unwrap_err();
        assert!(matches!(e, OtaError::Truncated(_)), "{e}");
        b.untouched();
        // From a stream of unknown length: the slot was written, but it is
        // disarmed and the env still boots A.
        for bad in [&tampered[..], &trailing[..], short] {
            assert!(b.install_bytes(bad, false).is_err());
            let env = BootEnv::load(&b.sys.boot_env).expect("env").expect("exists");
            assert_eq!(env.summary(), "BOOT_ORDER=\"A B\" BOOT_A_LEFT=3 BOOT_B_LEFT=0");
            assert_eq!(env.next_boot(), Some(Slot::A));
            assert_eq!(fs::read(&b.sys.slot_a).expect("a"), b"running system A");
            assert_eq!(env.version(Slot::B), None);
        }
    }

    #[test]
    fn the_running_slot_is_never_written() {
        running_a();
        let mut b = setup("generic");
        b.sys.slot_b = b.sys.slot_a.clone();
        let bytes = b.bundle("generic", &b.key);
        let e = install(&b.sys, &mut &bytes[..], None, &mut |_| {}).unwrap_err();
        assert!(matches!(e, OtaError::Refused(_)) && e.to_string().contains("running"), "{e}");
        assert_eq!(fs::read(&b.sys.slot_a).expect("a"), b"running system A");
        // A missing slot device is a clear refusal too.
        let mut b = setup("generic");
        b.sys.slot_b = b.dir.path().join("no-such-device");
        let bytes = b.bundle("generic", &b.key);
        let e = install(&b.sys, &mut &bytes[..], None, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("no-such-device"), "{e}");
    }

    #[test]
    fn unknown_format_versions_are_refused() {
        running_a();
        let b = setup("generic");
        let pair = load_private_key(&b.key).expect("key");
        let public = load_public_key(&b.sys.ota_public_key).expect("pub");
        let sha = hex(ring::digest::digest(&ring::digest::SHA256, b"abc").as_ref());
        let make = |magic: &[u8], manifest: String| {
            let mut v = magic.to_vec();
            v.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
            v.extend_from_slice(manifest.as_bytes());
            v.extend_from_slice(pair.sign(manifest.as_bytes()).as_ref());
            v.extend_from_slice(b"abc");
            v
        };
        let body = |format: u32| {
            format!(
                r#"{{"format":{format},"version":"2","board":"generic","created":"x","images":[{{"name":"rootfs","size":3,"sha256":"{sha}"}}]}}"#
            )
        };
        let ok = make(MAGIC, body(1));
        assert!(verify_reader(&mut &ok[..], None, &public, "generic", &mut |_| {}).is_ok());
        let e = verify_reader(&mut &make(MAGIC, body(2))[..], None, &public, "generic", &mut |_| {}).unwrap_err();
        assert!(matches!(e, OtaError::Format(_)) && e.to_string().contains("format 2"), "{e}");
        let e = verify_reader(&mut &make(b"OXIBNDL2", body(1))[..], None, &public, "generic", &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("OXIBNDL2"), "{e}");
        let two = body(1).replace("}]", &format!(r#"}},{{"name":"kernel","size":3,"sha256":"{sha}"}}]"#));
        let e = verify_reader(&mut &make(MAGIC, two)[..], None, &public, "generic", &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("2 images"), "{e}");
        let extra = body(1).replace("\"x\"", "\"x\",\"colour\":1");
        assert!(verify_reader(&mut &make(MAGIC, extra)[..], None, &public, "generic", &mut |_| {}).is_err());
    }

    #[test]
    fn keys_load_in_both_public_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = keygen(dir.path()).expect("keygen");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&public).expect("pub");
        assert_eq!(text.trim().len(), 64);
        let k = load_public_key(&public).expect("hex");
        fs::write(&public, k).expect("raw");
        assert_eq!(load_public_key(&public).expect("raw"), k);
        fs::write(&public, "not a key").expect("junk");
        let kind = |e: OtaError| Error::from(e).kind;
        assert_eq!(kind(OtaError::Truncated("x".into())), Kind::InvalidInput);
        assert_eq!(kind(OtaError::WrongBoard { bundle: "a".into(), ours: "b".into() }), Kind::Rejected);
        assert_eq!(kind(OtaError::Image("x".into())), Kind::Rejected);
        assert_eq!(kind(OtaError::Refused("x".into())), Kind::Conflict);
        assert_eq!(Error::from(OtaError::Truncated("it is empty".into())).to_string(), "truncated bundle: it is empty");
        let e = load_public_key(&public).unwrap_err();
        assert!(e.kind == Kind::InvalidInput && e.to_string().contains("not an ed25519 public key"), "{e}");
        let e = keygen(dir.path()).unwrap_err();
        assert!(e.kind == Kind::Conflict && e.to_string().contains("exists"), "{e}");
        assert!(load_private_key(&public).is_err());
    }

    #[test]
    fn mark_good_after_install_and_cmdline_parsing() {
        running_a();
        let b = setup("generic");
        fs::write(&b.sys.boot_env, "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=1\nBOOT_B_LEFT=0\n").expect("env");
        let said = mark_good(&b.sys).expect("mark good");
        assert!(said.contains("BOOT_A_LEFT=3"), "{said}");
        fs::remove_file(&b.sys.boot_env).expect("rm");
        mark_good(&b.sys).expect("mark good without a file");
        assert_eq!(
            fs::read_to_string(&b.sys.boot_env).expect("env"),
            "BOOT_ORDER=\"A B\"\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n"
        );
        assert_eq!(slot_from_cmdline("console=ttyS0 oxinvr.slot=B root=/dev/vda3"), Some("B"));
        assert_eq!(slot_from_cmdline("console=ttyS0"), None);
    }
}
