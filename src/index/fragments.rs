//! The per-segment fragment index: one entry per moof+mdat, stored in SQLite
//! as a compact blob and rebuilt from a file by recovery.

/// One fragment (moof+mdat) of a stored segment, as kept in the database's
/// per-segment index and as recovered by walking the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentEntry {
    /// Byte offset of the `moof` box in the file.
    pub offset: u64,
    /// Bytes of `moof` + `mdat`.
    pub size: u32,
    /// Video decode time of the first sample (the `tfdt`), in video ticks
    /// relative to the segment's start (the first fragment has 0).
    pub start_ticks: u64,
    /// Sum of the video sample durations, in video ticks.
    pub duration_ticks: u32,
    /// Number of video samples.
    pub frames: u32,
    /// The first video sample is a random access point.
    pub key: bool,
}

impl FragmentEntry {
    /// Bytes per entry in the encoded index.
    pub const ENCODED_LEN: usize = 8 + 4 + 8 + 4 + 4 + 1;

    /// Encodes entries into the compact little-endian blob stored in SQLite.
    pub fn encode_all(entries: &[FragmentEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * Self::ENCODED_LEN);
        for e in entries {
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.size.to_le_bytes());
            out.extend_from_slice(&e.start_ticks.to_le_bytes());
            out.extend_from_slice(&e.duration_ticks.to_le_bytes());
            out.extend_from_slice(&e.frames.to_le_bytes());
            out.push(u8::from(e.key));
        }
        out
    }

    /// Decodes a blob written by [`Self::encode_all`]; `None` if its length is wrong.
    pub fn decode_all(blob: &[u8]) -> Option<Vec<FragmentEntry>> {
        if blob.len() % Self::ENCODED_LEN != 0 {
            return None;
        }
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(
            blob.chunks_exact(Self::ENCODED_LEN)
                .map(|c| FragmentEntry {
                    offset: u64_at(c, 0),
                    size: u32_at(c, 8),
                    start_ticks: u64_at(c, 12),
                    duration_ticks: u32_at(c, 20),
                    frames: u32_at(c, 24),
                    key: c[28] != 0,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_index_round_trips_and_rejects_bad_length() {
        let entries = vec![
            FragmentEntry { offset: 1234, size: 99, start_ticks: 0, duration_ticks: 90_000, frames: 30, key: true },
            FragmentEntry { offset: 1333, size: 7, start_ticks: 90_000, duration_ticks: 3000, frames: 1, key: false },
        ];
        let blob = FragmentEntry::encode_all(&entries);
        assert_eq!(blob.len(), 2 * FragmentEntry::ENCODED_LEN);
        assert_eq!(FragmentEntry::decode_all(&blob), Some(entries));
        assert_eq!(FragmentEntry::decode_all(&blob[1..]), None);
    }
}
