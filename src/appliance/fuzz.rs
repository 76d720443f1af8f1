//! Entry point of the OTA bundle fuzz target (fuzz/, docs/FUZZING.md).
//!
//! A signature cannot be guessed, so a fuzzer given only the box's key would
//! never get past it. The target therefore reads every input twice: as it is
//! (framing and signature checks), and with its signature replaced by a valid
//! one from a fixed test key, so the manifest, the length checks and the
//! image hash are reached too. This is what a bundle made by someone holding
//! the key could contain (the key holder is trusted to sign, not to be right).

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::appliance::ota;

const BOARD: &str = "fuzz-board";

/// The fixed test key, derived from a constant seed (never a real box's key).
fn key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a 32-byte seed is a key")
}

/// `data` with the signature after its manifest (if the framing holds one)
/// replaced by the test key's signature of that manifest.
fn resigned(data: &[u8], key: &Ed25519KeyPair) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?) as usize;
    let manifest = data.get(12..12usize.checked_add(len)?)?;
    let sig = key.sign(manifest);
    let mut out = data.to_vec();
    out.get_mut(12 + len..12 + len + 64)?.copy_from_slice(sig.as_ref());
    Some(out)
}

/// Verifies `data` as a whole bundle (length known and unknown), then its
/// re-signed copy. A verified bundle's manifest must account for every byte.
pub fn ota(data: &[u8]) {
    let key = key();
    let public: [u8; 32] = key.public_key().as_ref().try_into().expect("ed25519 public keys are 32 bytes");
    let verify = |bytes: &[u8], len: Option<u64>| {
        ota::verify_reader(&mut &bytes[..], len, &public, BOARD, &mut |_| {}).map(|m| (m, bytes.len()))
    };
    let _ = verify(data, Some(data.len() as u64));
    let Some(signed) = resigned(data, &key) else { return };
    for len in [Some(signed.len() as u64), None] {
        if let Ok((manifest, n)) = verify(&signed, len) {
            let image = &manifest.images[0];
            assert_eq!(image.name, "rootfs", "a verified bundle names another image");
            let header = ota::read_header(&mut &signed[..], &public, BOARD).expect("a verified header reads again");
            assert_eq!(header.bundle_len(), n as u64, "a verified bundle has bytes its manifest does not count");
        }
    }
}
