//! The little ISO-BMFF reading the HTTP side needs on top of `crate::recording::mp4`:
//! track timescales out of an init segment (`moov/trak/{tkhd,mdia/mdhd}`),
//! the size of a `moof` box from its header and its `mfhd` sequence number.
//!
//! Invariant: every function is total on arbitrary bytes (bounds-checked
//! reads, sizes validated against the enclosing slice); malformed input gives
//! `None`, never a panic.

/// Iterates the boxes of `buf`: (four-character type, payload).
fn boxes(buf: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let (kind, header, size) = box_header(buf.get(pos..)?)?;
        let payload = buf.get(pos + header..pos + size)?;
        pos += size;
        Some((kind, payload))
    })
}

/// (type, header length, total size) of the box at the start of `b`.
/// A size of 0 ("to the end") takes the rest of `b`.
fn box_header(b: &[u8]) -> Option<([u8; 4], usize, usize)> {
    let size32 = be_u32(b, 0)?;
    let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
    let (header, size) = match size32 {
        0 => (8, b.len()),
        1 => (16, usize::try_from(be_u64(b, 8)?).ok()?),
        n => (8, usize::try_from(n).ok()?),
    };
    (size >= header && size <= b.len()).then_some((kind, header, size))
}

fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(buf).find(|(k, _)| k == kind).map(|(_, p)| p)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// (track id, media timescale) of every `trak` of an init segment.
pub fn track_timescales(init: &[u8]) -> Vec<(u32, u32)> {
    let Some(moov) = child(init, b"moov") else { return Vec::new() };
    boxes(moov).filter(|(k, _)| k == b"trak").filter_map(|(_, trak)| trak_timescale(trak)).collect()
}

fn trak_timescale(trak: &[u8]) -> Option<(u32, u32)> {
    let tkhd = child(trak, b"tkhd")?;
    // Full box: version(1) flags(3), then times of 4 or 8 bytes each.
    let id_at = if *tkhd.first()? == 1 { 4 + 8 + 8 } else { 4 + 4 + 4 };
    let mdhd = child(child(trak, b"mdia")?, b"mdhd")?;
    let ts_at = if *mdhd.first()? == 1 { 4 + 8 + 8 } else { 4 + 4 + 4 };
    Some((be_u32(tkhd, id_at)?, be_u32(mdhd, ts_at)?))
}

/// Timescale of `track_id` in an init segment.
pub fn timescale_of(init: &[u8], track_id: u32) -> Option<u32> {
    track_timescales(init).into_iter().find(|(id, _)| *id == track_id).map(|(_, ts)| ts).filter(|ts| *ts > 0)
}

/// Size of the `moof` box whose header starts `head` (at least 8 bytes, 16
/// for a 64-bit size); `None` if it is not a `moof` header.
pub fn moof_size(head: &[u8]) -> Option<u64> {
    if head.get(4..8)? != b"moof" {
        return None;
    }
    match be_u32(head, 0)? {
        0 => None,
        1 => be_u64(head, 8).filter(|s| *s >= 16),
        n => Some(u64::from(n)).filter(|s| *s >= 8),
    }
}

/// The `mfhd` sequence number of a whole `moof` box.
pub fn moof_sequence(moof: &[u8]) -> Option<u32> {
    let (kind, header, size) = box_header(moof)?;
    if &kind != b"moof" {
        return None;
    }
    let mfhd = child(moof.get(header..size)?, b"mfhd")?;
    // Full box: version(1) flags(3), then the sequence number.
    be_u32(mfhd, 4)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![version, 0, 0, 0];
        v.extend_from_slice(rest);
        v
    }

    fn trak(id: u32, ts: u32, v1: bool) -> Vec<u8> {
        let (tkhd, mdhd) = if v1 {
            let mut t = vec![0u8; 16];
            t.extend_from_slice(&id.to_be_bytes());
            let mut m = vec![0u8; 16];
            m.extend_from_slice(&ts.to_be_bytes());
            (full(1, &t), full(1, &m))
        } else {
            let mut t = vec![0u8; 8];
            t.extend_from_slice(&id.to_be_bytes());
            let mut m = vec![0u8; 8];
            m.extend_from_slice(&ts.to_be_bytes());
            (full(0, &t), full(0, &m))
        };
        let mdia = bx(b"mdia", &[bx(b"hdlr", &[0; 12]), bx(b"mdhd", &mdhd)].concat());
        bx(b"trak", &[bx(b"tkhd", &tkhd), mdia].concat())
    }

    /// An init segment with a 90 kHz video track and an optional audio track.
    pub fn init(audio_ts: Option<u32>) -> Vec<u8> {
        let mut moov = bx(b"mvhd", &[0; 20]);
        moov.extend(trak(1, 90_000, false));
        if let Some(ts) = audio_ts {
            moov.extend(trak(2, ts, true));
        }
        [bx(b"ftyp", b"iso6\0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    #[test]
    fn timescales_are_read_from_mdhd() {
        let i = init(Some(16_000));
        assert_eq!(track_timescales(&i), vec![(1, 90_000), (2, 16_000)]);
        assert_eq!(timescale_of(&i, 2), Some(16_000));
        assert_eq!(timescale_of(&init(None), 2), None);
    }

    #[test]
    fn malformed_input_gives_nothing() {
        let i = init(Some(8000));
        for cut in 0..i.len() {
            let _ = track_timescales(&i[..cut]);
        }
        assert!(track_timescales(&[0, 0, 0, 1, b'm', b'o', b'o', b'v', 255, 255]).is_empty());
        assert!(track_timescales(&[0, 0, 0, 3, b'm', b'o', b'o', b'v']).is_empty());
        let mut zero = vec![0, 0, 0, 0];
        zero.extend_from_slice(b"moov");
        assert!(track_timescales(&zero).is_empty());
    }

    #[test]
    fn moof_sizes() {
        assert_eq!(moof_size(&bx(b"moof", &[0; 100])), Some(108));
        assert_eq!(moof_size(&bx(b"mdat", &[0; 100])), None);
        assert_eq!(moof_size(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']), None);
        assert_eq!(moof_size(b"moof"), None);
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"moof");
        large.extend_from_slice(&40u64.to_be_bytes());
        assert_eq!(moof_size(&large), Some(40));
    }

    #[test]
    fn moof_sequences() {
        let mfhd = bx(b"mfhd", &[0, 0, 0, 0, 0, 0, 1, 2]);
        let traf = bx(b"traf", &[0; 8]);
        assert_eq!(moof_sequence(&bx(b"moof", &[traf.clone(), mfhd.clone()].concat())), Some(258));
        assert_eq!(moof_sequence(&bx(b"moof", &traf)), None);
        assert_eq!(moof_sequence(&bx(b"mdat", &mfhd)), None);
        assert_eq!(moof_sequence(&bx(b"moof", &bx(b"mfhd", &[0; 6]))), None);
        let whole = bx(b"moof", &mfhd);
        for cut in 0..whole.len() {
            assert_eq!(moof_sequence(&whole[..cut]), None);
        }
    }
}
