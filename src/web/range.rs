//! HTTP `Range` request headers (RFC 9110 section 14), single range only.
//!
//! Invariants: a `ByteRange` returned by [`parse`] lies inside `0..len` and is
//! never empty; a header that is not a valid single byte range is ignored
//! (the whole representation is served), as RFC 9110 allows.

/// A satisfiable byte range: `len` bytes from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

impl ByteRange {
    /// Value of the `Content-Range` header of a 206 answer.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.start + self.len - 1, total)
    }
}

/// What to serve for a request against a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: serve everything with 200.
    Full,
    /// Serve this part with 206.
    Partial(ByteRange),
    /// The range lies outside the representation: 416.
    Unsatisfiable,
}

/// Value of the `Content-Range` header of a 416 answer.
pub fn unsatisfiable_content_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// Interprets an optional `Range` header value against a length of `len` bytes.
/// Multi-range requests and malformed values are ignored (`Full`).
pub fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(value) = header else { return RangeRequest::Full };
    let Some(spec) = strip_unit(value.trim()) else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else { return RangeRequest::Full };
    match (number(first), number(last)) {
        (Some(a), Some(b)) if b >= a => from_bounds(a, Some(b), len),
        (Some(_), Some(_)) => RangeRequest::Full,
        (Some(a), None) if last.trim().is_empty() => from_bounds(a, None, len),
        (None, Some(n)) if first.trim().is_empty() => suffix(n, len),
        _ => RangeRequest::Full,
    }
}

/// `bytes=...` with the unit matched case-insensitively.
fn strip_unit(value: &str) -> Option<&str> {
    let (unit, spec) = value.split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(spec.trim())
}

/// A non-empty run of ASCII digits that fits in u64.
fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `a-b` or `a-`: the last position is clamped to the end.
fn from_bounds(first: u64, last: Option<u64>, len: u64) -> RangeRequest {
    if first >= len {
        return RangeRequest::Unsatisfiable;
    }
    let last = last.map_or(len - 1, |l| l.min(len - 1));
    RangeRequest::Partial(ByteRange { start: first, len: last - first + 1 })
}

/// `-n`: the last n bytes.
fn suffix(n: u64, len: u64) -> RangeRequest {
    if n == 0 || len == 0 {
        return RangeRequest::Unsatisfiable;
    }
    let n = n.min(len);
    RangeRequest::Partial(ByteRange { start: len - n, len: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, len: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, len })
    }

    #[test]
    fn absent_header_serves_everything() {
        assert_eq!(parse(None, 100), RangeRequest::Full);
    }

    #[test]
    fn closed_open_and_suffix_ranges() {
        assert_eq!(parse(Some("bytes=0-9"), 100), part(0, 10));
        assert_eq!(parse(Some("bytes=10-"), 100), part(10, 90));
        assert_eq!(parse(Some("bytes=-10"), 100), part(90, 10));
        assert_eq!(parse(Some("bytes=5-5"), 100), part(5, 1));
        assert_eq!(parse(Some(" Bytes = 1-2 "), 100), part(1, 2));
    }

    #[test]
    fn ranges_past_the_end_are_clamped() {
        assert_eq!(parse(Some("bytes=90-1000"), 100), part(90, 10));
        assert_eq!(parse(Some("bytes=-1000"), 100), part(0, 100));
        assert_eq!(parse(Some("bytes=0-18446744073709551615"), 100), part(0, 100));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse(Some("bytes=100-"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn malformed_and_multi_ranges_are_ignored() {
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=1-2-3",
            "items=0-1",
            "0-1",
            "bytes=0-1,4-5",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(parse(Some(bad), 100), RangeRequest::Full, "{bad:?}");
        }
    }

    #[test]
    fn content_range_values() {
        assert_eq!(ByteRange { start: 0, len: 10 }.content_range(100), "bytes 0-9/100");
        assert_eq!(unsatisfiable_content_range(100), "bytes */100");
    }
}
