//! The conditional headers of a request (RFC 9110 §13), held against an artifact's current
//! state, in the order the RFC gives: `If-Match`, else `If-Unmodified-Since`; then
//! `If-None-Match`, else (for reads) `If-Modified-Since`. Entity tags are the artifact's
//! quoted SHA-256 ([`super::etag`]); times are compared in whole seconds, as `Last-Modified`
//! carries them.

use stowage_metadata::ArtifactRecord;

use super::etag;

/// What the client made its request conditional on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`: entity tags, or `*` (the artifact must exist).
    pub if_match: Option<String>,
    /// `If-None-Match`: entity tags, or `*` (the artifact must not exist: create only).
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`, in ms since the epoch (reads only).
    pub if_modified_since_ms: Option<i64>,
    /// `If-Unmodified-Since`, in ms since the epoch.
    pub if_unmodified_since_ms: Option<i64>,
}

/// What the conditions say of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Proceed,
    /// A read whose client copy is current: 304.
    NotModified,
    /// A condition fails: 412, with the reason.
    Failed(String),
}

impl Conditions {
    /// Whether any condition was set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Holds the conditions against `current` (the artifact there now, if any); `read` for
    /// GET and HEAD, where a matching `If-None-Match` means "not modified" rather than failed.
    pub fn evaluate(&self, current: Option<&ArtifactRecord>, read: bool) -> Verdict {
        let tag = current.map(etag);
        let secs = |ms: i64| ms.div_euclid(1000);
        if let Some(tags) = &self.if_match {
            if !tag
                .as_deref()
                .is_some_and(|t| matches(tags, t, Strength::Strong))
            {
                return Verdict::Failed(match &tag {
                    None => "If-Match: nothing is there".into(),
                    Some(t) => format!("If-Match: the current entity tag is {t}"),
                });
            }
        } else if let (Some(since), Some(record)) = (self.if_unmodified_since_ms, current)
            && secs(record.modified_ms) > secs(since)
        {
            return Verdict::Failed("If-Unmodified-Since: it was modified since".into());
        }
        if let Some(tags) = &self.if_none_match {
            if tag
                .as_deref()
                .is_some_and(|t| matches(tags, t, Strength::Weak))
            {
                return if read {
                    Verdict::NotModified
                } else if tags.trim() == "*" {
                    Verdict::Failed(
                        "If-None-Match: * and an artifact is already there (it is not \
                         overwritten)"
                            .into(),
                    )
                } else {
                    Verdict::Failed("If-None-Match: the current entity tag is listed".into())
                };
            }
        } else if read
            && let (Some(since), Some(record)) = (self.if_modified_since_ms, current)
            && secs(record.modified_ms) <= secs(since)
        {
            return Verdict::NotModified;
        }
        Verdict::Proceed
    }
}

#[derive(Clone, Copy)]
enum Strength {
    Strong,
    Weak,
}

/// Whether a list of entity tags (or `*`) matches `tag`. Weak comparison ignores `W/`;
/// strong comparison never matches a weak tag.
fn matches(list: &str, tag: &str, strength: Strength) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*"
            || match (strength, candidate.strip_prefix("W/")) {
                (Strength::Weak, Some(weak)) => weak == tag,
                (Strength::Strong, Some(_)) => false,
                (_, None) => candidate == tag,
            }
    })
}

#[cfg(test)]
mod tests {
    use stowage_core::{ArtifactPath, ChecksumHasher, RepoKey};

    use super::*;

    fn record(modified_ms: i64) -> ArtifactRecord {
        ArtifactRecord {
            id: 1,
            repo: RepoKey::parse("r").expect("key"),
            path: ArtifactPath::parse("a").expect("path"),
            checksums: ChecksumHasher::digest(b"abc"),
            size: 3,
            created_ms: modified_ms,
            created_by: "me".into(),
            modified_ms,
            modified_by: "me".into(),
            original: Default::default(),
        }
    }

    #[test]
    fn entity_tags_compare_weakly_for_none_match_and_strongly_for_match() {
        let tag = "\"abc\"";
        assert!(matches("\"abc\"", tag, Strength::Weak));
        assert!(matches("W/\"abc\", \"def\"", tag, Strength::Weak));
        assert!(matches("*", tag, Strength::Weak));
        assert!(!matches("\"abd\"", tag, Strength::Weak));
        assert!(!matches("W/\"abc\"", tag, Strength::Strong));
        assert!(matches("\"x\", \"abc\"", tag, Strength::Strong));
    }

    #[test]
    fn writes_and_reads_follow_rfc_9110_order() {
        let now = record(10_500);
        let tag = etag(&now);
        let c = |f: fn(&mut Conditions, &str)| {
            let mut c = Conditions::default();
            f(&mut c, &tag);
            c
        };
        // Create only.
        let create = c(|c, _| c.if_none_match = Some("*".into()));
        assert_eq!(create.evaluate(None, false), Verdict::Proceed);
        assert!(matches!(
            create.evaluate(Some(&now), false),
            Verdict::Failed(_)
        ));
        // Replace only this version.
        let replace = c(|c, t| c.if_match = Some(t.to_string()));
        assert_eq!(replace.evaluate(Some(&now), false), Verdict::Proceed);
        assert!(matches!(replace.evaluate(None, false), Verdict::Failed(_)));
        let other = c(|c, _| c.if_match = Some("\"other\"".into()));
        assert!(matches!(
            other.evaluate(Some(&now), true),
            Verdict::Failed(_)
        ));
        // Reads: a current copy is not modified.
        let held = c(|c, t| c.if_none_match = Some(t.to_string()));
        assert_eq!(held.evaluate(Some(&now), true), Verdict::NotModified);
        assert!(matches!(
            held.evaluate(Some(&now), false),
            Verdict::Failed(_)
        ));
        let mut since = Conditions {
            if_modified_since_ms: Some(10_000),
            ..Default::default()
        };
        assert_eq!(
            since.evaluate(Some(&now), true),
            Verdict::NotModified,
            "same second"
        );
        since.if_modified_since_ms = Some(9_999);
        assert_eq!(since.evaluate(Some(&now), true), Verdict::Proceed);
        // If-None-Match wins over If-Modified-Since.
        since.if_none_match = Some("\"other\"".into());
        since.if_modified_since_ms = Some(20_000);
        assert_eq!(since.evaluate(Some(&now), true), Verdict::Proceed);
        // If-Unmodified-Since.
        let unmodified = Conditions {
            if_unmodified_since_ms: Some(9_000),
            ..Default::default()
        };
        assert!(matches!(
            unmodified.evaluate(Some(&now), false),
            Verdict::Failed(_)
        ));
        assert_eq!(unmodified.evaluate(None, false), Verdict::Proceed);
    }
}
