//! Repository keys and artifact paths: the only way a client-supplied name becomes a path.
//! Everything that could reach outside a repository (`..`, encoded slashes, absolute paths, NUL,
//! backslashes, control characters) is refused here, before any I/O. Binaries themselves are
//! stored by digest, so an artifact path never becomes a filesystem path.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::Error;

/// Longest repository key accepted.
const MAX_REPO_KEY_LEN: usize = 64;
/// Longest artifact path accepted, in bytes.
const MAX_PATH_LEN: usize = 1024;
/// Longest single path segment, in bytes (a common filesystem limit).
const MAX_SEGMENT_LEN: usize = 255;
/// Repository keys that would shadow API routes.
const RESERVED_REPO_KEYS: &[&str] = &["api", "ui", "webapp", "artifactory", crate::STAGING];

/// Characters escaped when a path segment is put back into a URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b';');

/// A repository key: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
/// Its `Debug` is the quoted key (`"libs"`), as messages show it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RepoKey(String);

impl RepoKey {
    /// Validates a repository key.
    pub fn parse(key: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidPath {
            path: key.to_string(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("a repository key is required"));
        }
        if key.len() > MAX_REPO_KEY_LEN {
            return Err(invalid("a repository key has at most 64 characters"));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "a repository key may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        if key.starts_with(['.', '-']) {
            return Err(invalid("a repository key may not start with '.' or '-'"));
        }
        if RESERVED_REPO_KEYS.contains(&key) {
            return Err(invalid("this repository key is reserved"));
        }
        Ok(Self(key.to_string()))
    }

    /// Validates a repository key as it appears, percent-encoded, in a URL.
    pub fn from_url_segment(raw: &str) -> Result<Self, Error> {
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Error::InvalidPath {
                path: raw.to_string(),
                reason: "the repository key is not valid UTF-8",
            })?;
        Self::parse(&decoded)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised path inside a repository: segments joined by `/`, no leading or trailing slash.
/// The empty path is the repository's root folder. Its `Debug` is the quoted path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ArtifactPath(String);

impl ArtifactPath {
    /// The repository root.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a path taken raw (still percent-encoded) from a request URL. Each segment is
    /// decoded on its own, so an encoded slash (`%2F`) can never create a new segment.
    /// One trailing slash is allowed (a folder request).
    pub fn from_url_path(raw: &str) -> Result<Self, Error> {
        Self::build(raw, |segment| {
            percent_decode_str(segment)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| "the path is not valid UTF-8 once decoded")
        })
    }

    /// Parses an already-decoded path (from JSON or a query string). One leading slash is
    /// allowed, as in Artifactory's JSON paths.
    pub fn parse(path: &str) -> Result<Self, Error> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        Self::build(trimmed, |segment| Ok(segment.to_string())).map_err(|e| match e {
            Error::InvalidPath { reason, .. } => Error::InvalidPath {
                path: path.to_string(),
                reason,
            },
            other => other,
        })
    }

    fn build(
        raw: &str,
        decode: impl Fn(&str) -> Result<String, &'static str>,
    ) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidPath {
            path: raw.to_string(),
            reason,
        };
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let mut out = String::with_capacity(trimmed.len());
        for raw_segment in trimmed.split('/') {
            let segment = decode(raw_segment).map_err(invalid)?;
            check_segment(&segment).map_err(invalid)?;
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&segment);
        }
        if out.len() > MAX_PATH_LEN {
            return Err(invalid("a path has at most 1024 bytes"));
        }
        Ok(Self(out))
    }

    /// Whether this is the repository root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path without a leading slash (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (`""` for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// Every proper ancestor folder, nearest the root first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> Vec<&str> {
        self.0
            .match_indices('/')
            .map(|(i, _)| &self.0[..i])
            .collect()
    }

    /// `/name` with the name percent-encoded, as a folder listing shows a child.
    pub fn root_child_url(name: &str) -> String {
        format!("/{}", utf8_percent_encode(name, SEGMENT))
    }

    /// The path with each segment percent-encoded for a URL, with a leading slash
    /// (`""` for the root).
    pub fn to_url(&self) -> String {
        self.0
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| format!("/{}", utf8_percent_encode(s, SEGMENT)))
            .collect()
    }
}

fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("empty path segment: '//' and absolute paths are not allowed");
    }
    if segment == "." || segment == ".." {
        return Err("'.' and '..' segments are not allowed");
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err("a path segment has at most 255 bytes");
    }
    if segment.contains('/') {
        return Err("an encoded '/' inside a path segment is not allowed");
    }
    if segment.contains('\\') {
        return Err("backslashes are not allowed in paths");
    }
    if segment.contains('\0') {
        return Err("NUL characters are not allowed in paths");
    }
    if segment.chars().any(char::is_control) {
        return Err("control characters are not allowed in paths");
    }
    Ok(())
}

impl fmt::Debug for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_keys_and_paths_quoted() {
        let key = RepoKey::parse("libs").expect("key");
        let path = ArtifactPath::parse("a/b c.jar").expect("path");
        assert_eq!(
            format!("repository {key:?}, path {path:?}"),
            r#"repository "libs", path "a/b c.jar""#
        );
    }

    #[test]
    fn accepts_ordinary_paths() {
        let p = ArtifactPath::from_url_path("org/acme/lib%20x/1.0/lib-1.0.jar").expect("valid");
        assert_eq!(p.as_str(), "org/acme/lib x/1.0/lib-1.0.jar");
        assert_eq!(p.name(), "lib-1.0.jar");
        assert_eq!(
            p.ancestors(),
            vec!["org", "org/acme", "org/acme/lib x", "org/acme/lib x/1.0"]
        );
        assert_eq!(p.to_url(), "/org/acme/lib%20x/1.0/lib-1.0.jar");
        assert!(
            ArtifactPath::from_url_path("folder/")
                .expect("folder")
                .as_str()
                == "folder"
        );
        assert!(ArtifactPath::from_url_path("").expect("root").is_root());
    }

    #[test]
    fn refuses_every_form_of_traversal() {
        for raw in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E/x",
            ".%2e/x",
            "a/%2e/b",
            "a%2f..%2fb",
            "a%2Fb",
            "..%5cwindows",
            "a\\b",
            "/etc/passwd",
            "a//b",
            "a/b%00.jar",
            "a/%0a",
            "%ff%fe",
        ] {
            let err = ArtifactPath::from_url_path(raw).expect_err(raw);
            assert!(matches!(err, Error::InvalidPath { .. }), "{raw}: {err}");
        }
        assert!(ArtifactPath::parse("/a/b").is_ok());
        assert!(ArtifactPath::parse("a/../b").is_err());
    }

    #[test]
    fn repo_keys() {
        assert!(RepoKey::parse("libs-release_local.1").is_ok());
        for bad in [
            "",
            "api",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "..",
            &"x".repeat(65),
        ] {
            assert!(RepoKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoKey::from_url_segment("%2e%2e").is_err());
    }
}
