//! Released paths that cannot change: a repository's `immutablePaths`, Ant-style patterns as
//! Artifactory writes its include and exclude patterns (`releases/**`, `**/*-[0-9]*.jar`; `*`
//! stays within a folder, `**` spans folders). A file whose path matches may be deployed once
//! (and deployed again with the same bytes, which changes nothing), but never overwritten with
//! other bytes, moved away or deleted, so a release pipeline can trust that what it published
//! stays what it published. Enforced in the metadata transaction that would make the change,
//! so no interleaving of writers gets around it.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;
use stowage_core::{ArtifactPath, Error, RepoKey, Result};

/// The repository setting's name.
pub const SETTING: &str = "immutablePaths";

/// A repository's immutable path patterns.
#[derive(Debug, Clone, Default)]
pub struct ImmutablePaths {
    patterns: Vec<String>,
    set: GlobSet,
}

impl ImmutablePaths {
    /// The patterns of a repository's configuration: none when the setting is absent or null;
    /// `InvalidInput` (naming the pattern) when it is not a list of valid patterns.
    pub fn from_config(config: &Value) -> Result<Self> {
        let patterns = match config.get(SETTING) {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    other => Err(Error::InvalidInput(format!(
                        "{SETTING} must be a list of path patterns (like \"releases/**\"); \
                         {other} is not one"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return Err(Error::InvalidInput(format!(
                    "{SETTING} must be a list of path patterns (like [\"releases/**\"]), not \
                     {other}"
                )));
            }
        };
        let mut set = GlobSetBuilder::new();
        for pattern in &patterns {
            let glob = GlobBuilder::new(pattern.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::InvalidInput(format!("{SETTING} pattern {pattern:?} is invalid: {e}"))
                })?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| Error::InvalidInput(format!("{SETTING}: {e}")))?;
        Ok(Self { patterns, set })
    }

    /// The first pattern `path` matches.
    pub fn matching(&self, path: &str) -> Option<&str> {
        self.set
            .matches(path)
            .first()
            .and_then(|&i| self.patterns.get(i))
            .map(String::as_str)
    }

    /// `Conflict` when `path` is immutable: `change` says what was refused ("overwritten").
    pub fn allow(&self, repo: &RepoKey, path: &str, change: &str) -> Result<()> {
        match self.matching(path) {
            None => Ok(()),
            Some(pattern) => Err(Error::Conflict(format!(
                "{repo}/{path} is immutable (the repository's {SETTING} pattern {pattern:?}): \
                 a released file cannot be {change}; deploy it under a new version instead"
            ))),
        }
    }

    /// The same for a typed path.
    pub fn allow_path(&self, repo: &RepoKey, path: &ArtifactPath, change: &str) -> Result<()> {
        self.allow(repo, path.as_str(), change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(patterns: Value) -> ImmutablePaths {
        ImmutablePaths::from_config(&serde_json::json!({ SETTING: patterns })).expect("valid")
    }

    #[test]
    fn ant_style_patterns_match_as_artifactory_writes_them() {
        let p = paths(serde_json::json!([
            "releases/**",
            "**/*-final.jar",
            "top/*.txt"
        ]));
        assert_eq!(p.matching("releases/a/b/c.jar"), Some("releases/**"));
        assert_eq!(p.matching("x/y/lib-final.jar"), Some("**/*-final.jar"));
        assert_eq!(p.matching("lib-final.jar"), Some("**/*-final.jar"));
        assert_eq!(p.matching("top/a.txt"), Some("top/*.txt"));
        assert_eq!(
            p.matching("top/deeper/a.txt"),
            None,
            "* stays within a folder"
        );
        assert_eq!(p.matching("snapshots/a.jar"), None);
        assert_eq!(p.matching("releasesX/a.jar"), None);
        assert!(
            ImmutablePaths::from_config(&serde_json::json!({}))
                .expect("none")
                .matching("a")
                .is_none()
        );
    }

    #[test]
    fn a_bad_setting_is_refused_naming_what_is_wrong() {
        for (bad, says) in [
            (serde_json::json!("releases/**"), "must be a list"),
            (serde_json::json!([1]), "1 is not one"),
            (serde_json::json!([""]), "is not one"),
            (serde_json::json!(["a/[b"]), "\"a/[b\" is invalid"),
        ] {
            let err = ImmutablePaths::from_config(&serde_json::json!({ SETTING: bad }))
                .expect_err("refused");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
