//! `Range` and `If-None-Match` as RFC 9110 defines them, for single byte ranges. A syntax we do
//! not serve (several ranges, other units) is ignored and the whole body is sent, which the RFC
//! allows.

use std::ops::Range;

/// What to send for a request's `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// Resolves a `Range` header against a body of `size` bytes.
pub(crate) fn resolve(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match parse(last) {
            Some(0) | None => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(size - n.min(size)..size),
        },
        // bytes=A-
        (false, true) => match parse(first) {
            Some(a) if a < size => RangeRequest::Partial(a..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=A-B
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(a..b.min(size - 1) + 1)
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, `*` matches anything).
pub(crate) fn none_match(header: Option<&str>, etag: &str) -> bool {
    header.is_some_and(|h| {
        h.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve(None, 10), Full);
        assert_eq!(resolve(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(resolve(Some("bytes=2-5"), 10), Partial(2..6));
        assert_eq!(resolve(Some("bytes=5-"), 10), Partial(5..10));
        assert_eq!(resolve(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(resolve(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(resolve(Some("bytes=8-100"), 10), Partial(8..10));
        assert_eq!(resolve(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=5-2"), 10), Full);
        assert_eq!(resolve(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(resolve(Some("items=0-1"), 10), Full);
        assert_eq!(resolve(Some("bytes=x-1"), 10), Full);
    }

    #[test]
    fn etags() {
        assert!(none_match(Some("\"abc\""), "\"abc\""));
        assert!(none_match(Some("W/\"abc\", \"def\""), "\"abc\""));
        assert!(none_match(Some("*"), "\"abc\""));
        assert!(!none_match(Some("\"abd\""), "\"abc\""));
        assert!(!none_match(None, "\"abc\""));
    }
}
