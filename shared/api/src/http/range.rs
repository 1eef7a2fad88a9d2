//! The `Range` header as RFC 9110 defines it, for single byte ranges, parsed into the service's
//! [`ByteRange`] (which the service holds against the binary's size). A syntax we do not serve
//! (several ranges, other units, garbage) is ignored and the whole body is sent, which the RFC
//! allows.

use stowage_service::ByteRange;

/// The one byte range a `Range` header asks for, `None` for the whole body.
pub(crate) fn parse(header: Option<&str>) -> Option<ByteRange> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes (an unreadable N is satisfiable by nothing)
        (true, false) => Some(ByteRange::Suffix(number(last).unwrap_or(0))),
        // bytes=A-
        (false, true) => number(first).map(ByteRange::From),
        // bytes=A-B
        (false, false) => match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => Some(ByteRange::Bounded { first, last }),
            _ => None,
        },
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is sent for a header against a body of `size` bytes: `Some(range)`, `None` for
    /// everything, `Err` for a 416.
    fn sent(header: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
        parse(header)
            .map(|r| r.resolve(size).map_err(|_| ()))
            .transpose()
    }

    #[test]
    fn ranges() {
        assert_eq!(sent(None, 10), Ok(None));
        assert_eq!(sent(Some("bytes=0-0"), 10), Ok(Some(0..1)));
        assert_eq!(sent(Some("bytes=2-5"), 10), Ok(Some(2..6)));
        assert_eq!(sent(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(sent(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(sent(Some("bytes=-30"), 10), Ok(Some(0..10)));
        assert_eq!(sent(Some("bytes=8-100"), 10), Ok(Some(8..10)));
        assert_eq!(sent(Some("bytes=10-"), 10), Err(()));
        assert_eq!(sent(Some("bytes=10-20"), 10), Err(()));
        assert_eq!(sent(Some("bytes=-0"), 10), Err(()));
        assert_eq!(sent(Some("bytes=0-"), 0), Err(()));
        assert_eq!(sent(Some("bytes=5-2"), 10), Ok(None));
        assert_eq!(sent(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(sent(Some("items=0-1"), 10), Ok(None));
        assert_eq!(sent(Some("bytes=x-1"), 10), Ok(None));
    }
}
