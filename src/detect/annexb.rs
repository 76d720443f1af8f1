//! H.264 Annex B byte streams (an encoder's `.h264` file) cut into the form
//! the ring holds: access units with 4-byte NAL lengths, and an `avc1`
//! sample entry with the `avcC` built from the stream's SPS and PPS. Used to
//! replay real footage through detection (tests, `oxinvr detect-bench`).
//!
//! Invariants: single-slice pictures (x264's default, and cameras'): a new
//! access unit starts at an AUD, or at a parameter set or slice that follows
//! a slice. No input panics: bytes that are not Annex B give no frames.

/// One access unit in ring form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit {
    pub key: bool,
    /// NAL units with 4-byte big-endian length prefixes (no SPS/PPS/AUD).
    pub data: Vec<u8>,
}

/// A parsed stream: its sample entry and access units in decode order.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub codec: String,
    pub sample_entry: Vec<u8>,
    pub units: Vec<AccessUnit>,
}

/// The NAL units of an Annex B stream (start codes removed).
pub fn nal_units(b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(b.len(), |&next| next - 3);
        while end > s && b[end - 1] == 0 {
            end -= 1; // trailing zeros belong to the next 4-byte start code
        }
        if end > s {
            out.push(&b[s..end]);
        }
    }
    out
}

/// Cuts an Annex B stream into access units and builds its sample entry.
/// `None` if it has no SPS and PPS.
pub fn parse(b: &[u8]) -> Option<Stream> {
    let (mut sps, mut pps) = (None, None);
    let mut units = Vec::new();
    let mut cur: Option<AccessUnit> = None;
    let mut has_slice = false;
    for nal in nal_units(b) {
        let kind = nal[0] & 0x1f;
        let starts_unit = kind == 9 || (has_slice && matches!(kind, 1 | 5 | 6 | 7 | 8));
        if starts_unit {
            units.extend(cur.take().filter(|u| !u.data.is_empty()));
            has_slice = false;
        }
        let unit = cur.get_or_insert(AccessUnit { key: false, data: Vec::new() });
        match kind {
            7 => sps = sps.or(Some(nal)),
            8 => pps = pps.or(Some(nal)),
            9 => {}
            _ => {
                unit.key |= kind == 5;
                has_slice |= matches!(kind, 1 | 5);
                unit.data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                unit.data.extend_from_slice(nal);
            }
        }
    }
    units.extend(cur.filter(|u| !u.data.is_empty()));
    let (sps, pps) = (sps?, pps?);
    if sps.len() < 4 {
        return None;
    }
    let codec = format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]);
    Some(Stream { codec, sample_entry: sample_entry(sps, pps), units })
}

/// An `avc1` box: 78 bytes of (zeroed) VisualSampleEntry fields and an `avcC`.
fn sample_entry(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let mut entry = Vec::new();
    entry.extend_from_slice(&((8 + 78 + 8 + avcc.len()) as u32).to_be_bytes());
    entry.extend_from_slice(b"avc1");
    entry.extend_from_slice(&[0; 78]);
    entry.extend_from_slice(&((8 + avcc.len()) as u32).to_be_bytes());
    entry.extend_from_slice(b"avcC");
    entry.extend_from_slice(&avcc);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_cut_at_slices_and_parameter_sets() {
        let sps = [0x67, 0x64, 0, 0x1f, 0xac];
        let pps = [0x68, 0xee];
        let mut b = Vec::new();
        for nal in [&sps[..], &pps, &[0x65, 1, 2], &[0x41, 3], &[0x09, 0x10], &[0x41, 4, 0, 0]] {
            b.extend_from_slice(&[0, 0, 0, 1]);
            b.extend_from_slice(nal);
        }
        let s = parse(&b).expect("stream");
        assert_eq!(s.codec, "avc1.64001f");
        assert_eq!(s.units.len(), 3);
        assert_eq!(s.units[0], AccessUnit { key: true, data: vec![0, 0, 0, 3, 0x65, 1, 2] });
        assert_eq!(s.units[2], AccessUnit { key: false, data: vec![0, 0, 0, 2, 0x41, 4] });
        let ps = super::super::decode::param_sets(&s.codec, &s.sample_entry).expect("avcC");
        assert_eq!(ps.nals.len(), 2);
        assert!(parse(b"not h264").is_none());
    }
}
