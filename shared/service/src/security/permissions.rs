//! Permission targets, as Artifactory's v2 permission API writes them, and the decisions made
//! from them. A target names repositories (by name, by pattern such as `libs-*`, or `ANY` /
//! `ANY LOCAL`), include and exclude path patterns (Ant style: `org/acme/**`; `**` when none is
//! given), and the actions it grants to users and to groups.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use stowage_core::{Error, Result};

/// What a caller may do with an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    /// Set and remove properties.
    Annotate,
    /// Deploy new files (Artifactory's `write`).
    Deploy,
    /// Delete files, and overwrite them with other bytes.
    Delete,
    /// Manage the repository's permissions.
    Manage,
}

impl Action {
    pub(crate) const ALL: [Action; 5] = [
        Action::Read,
        Action::Annotate,
        Action::Deploy,
        Action::Delete,
        Action::Manage,
    ];

    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Annotate => 2,
            Action::Deploy => 4,
            Action::Delete => 8,
            Action::Manage => 16,
        }
    }

    /// The name Artifactory's v2 permission API uses.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Annotate => "annotate",
            Action::Deploy => "write",
            Action::Delete => "delete",
            Action::Manage => "manage",
        }
    }

    /// An action by Artifactory's name (`write`, or `deploy`), or its v1 letter.
    fn parse(name: &str) -> Result<Action> {
        match name.trim().to_ascii_lowercase().as_str() {
            "read" | "r" => Ok(Action::Read),
            "annotate" | "n" => Ok(Action::Annotate),
            "write" | "deploy" | "w" => Ok(Action::Deploy),
            "delete" | "d" => Ok(Action::Delete),
            "manage" | "m" => Ok(Action::Manage),
            other => Err(Error::InvalidInput(format!(
                "unknown action {other:?}: use read, annotate, write (deploy), delete or manage"
            ))),
        }
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// These and `action`.
    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | action.bit())
    }

    fn add(&mut self, other: Actions) {
        self.0 |= other.0;
    }

    fn of(names: &[String]) -> Result<Actions> {
        let mut set = Actions::default();
        for name in names {
            set.0 |= Action::parse(name)?.bit();
        }
        Ok(set)
    }

    fn names(self) -> Vec<String> {
        Action::ALL
            .iter()
            .filter(|a| self.contains(**a))
            .map(|a| a.name().to_string())
            .collect()
    }
}

/// The JSON of a permission target (Artifactory v2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetJson {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub repo: Option<RepoJson>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoJson {
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default, rename = "include-patterns")]
    pub include_patterns: Vec<String>,
    #[serde(default, rename = "exclude-patterns")]
    pub exclude_patterns: Vec<String>,
    #[serde(default)]
    pub actions: ActionsJson,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionsJson {
    #[serde(default)]
    pub users: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// A permission target, ready to decide with.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    any_repository: bool,
    repositories: GlobSet,
    include: GlobSet,
    /// Each include pattern's literal start (up to its first wildcard): what tells whether a
    /// folder can hold anything the target covers.
    include_prefixes: Vec<String>,
    exclude: GlobSet,
    users: BTreeMap<String, Actions>,
    groups: BTreeMap<String, Actions>,
}

fn globs(patterns: &[String], what: &str, separator: bool) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let glob = GlobBuilder::new(pattern.trim_start_matches('/'))
            .literal_separator(separator)
            .build()
            .map_err(|e| Error::InvalidInput(format!("{what} {pattern:?} is invalid: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| Error::InvalidInput(format!("{what}: {e}")))
}

impl Target {
    /// Checks and compiles a target's JSON; `name` is the one in the URL.
    pub fn parse(name: &str, json: &TargetJson) -> Result<Target> {
        if !json.name.is_empty() && json.name != name {
            return Err(Error::InvalidInput(format!(
                "the body's name {:?} differs from the URL's {name:?}",
                json.name
            )));
        }
        let repo = json.repo.clone().unwrap_or_default();
        let any_repository = repo
            .repositories
            .iter()
            .any(|r| matches!(r.trim(), "ANY" | "ANY LOCAL"));
        let named: Vec<String> = repo
            .repositories
            .iter()
            .filter(|r| {
                !matches!(
                    r.trim(),
                    "ANY" | "ANY LOCAL" | "ANY REMOTE" | "ANY DISTRIBUTION"
                )
            })
            .cloned()
            .collect();
        let include_patterns = if repo.include_patterns.iter().all(|p| p.trim().is_empty()) {
            vec!["**".to_string()]
        } else {
            repo.include_patterns.clone()
        };
        let include_prefixes = include_patterns
            .iter()
            .map(|p| {
                let p = p.trim().trim_start_matches('/');
                let end = p.find(['*', '?', '[', '{']).unwrap_or(p.len());
                p[..end].to_string()
            })
            .collect();
        let grants = |map: &BTreeMap<String, Vec<String>>| -> Result<BTreeMap<String, Actions>> {
            map.iter()
                .map(|(who, names)| Ok((who.clone(), Actions::of(names)?)))
                .collect()
        };
        Ok(Target {
            name: name.to_string(),
            any_repository,
            repositories: globs(&named, "repository pattern", false)?,
            include: globs(&include_patterns, "include pattern", true)?,
            include_prefixes,
            exclude: globs(&repo.exclude_patterns, "exclude pattern", true)?,
            users: grants(&repo.actions.users)?,
            groups: grants(&repo.actions.groups)?,
        })
    }

    /// The JSON answered for the target: as stored, with actions spelled out.
    pub fn normalized(json: &TargetJson, target: &Target) -> TargetJson {
        let mut json = json.clone();
        json.name = target.name.clone();
        if let Some(repo) = &mut json.repo {
            repo.actions.users = target
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.names()))
                .collect();
            repo.actions.groups = target
                .groups
                .iter()
                .map(|(k, v)| (k.clone(), v.names()))
                .collect();
        }
        json
    }

    fn covers_repository(&self, repo: &str) -> bool {
        self.any_repository || self.repositories.is_match(repo)
    }

    /// Whether the target covers the file `repo/path`.
    fn covers(&self, repo: &str, path: &str) -> bool {
        self.covers_repository(repo) && self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Whether the folder `repo/folder` ("" for the root) can hold a file the target covers.
    fn covers_below(&self, repo: &str, folder: &str) -> bool {
        if !self.covers_repository(repo) {
            return false;
        }
        let folder = folder.trim_matches('/');
        self.include_prefixes.iter().any(|prefix| {
            folder.is_empty()
                || prefix.is_empty()
                || prefix.starts_with(&format!("{folder}/"))
                || prefix == folder
                || folder.starts_with(prefix.as_str())
        })
    }

    /// Whether the target grants anything on `repo` at all.
    fn mentions_repository(&self, repo: &str) -> bool {
        self.covers_repository(repo)
    }
}

/// Whose grants count for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantees<'a> {
    /// The user's own grants count (not for a token scoped to groups).
    pub user: Option<&'a str>,
    pub groups: &'a [String],
}

/// Every permission target, compiled.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub targets: Vec<Target>,
}

impl Targets {
    fn grants(&self, who: &Grantees<'_>, mut applies: impl FnMut(&Target) -> bool) -> Actions {
        let mut actions = Actions::default();
        for target in &self.targets {
            if !applies(target) {
                continue;
            }
            if let Some(user) = who.user
                && let Some(granted) = target.users.get(user)
            {
                actions.add(*granted);
            }
            for group in who.groups {
                if let Some(granted) = target.groups.get(group) {
                    actions.add(*granted);
                }
            }
        }
        actions
    }

    /// What `who` may do with the file `repo/path`.
    pub fn on_file(&self, who: &Grantees<'_>, repo: &str, path: &str) -> Actions {
        self.grants(who, |t| t.covers(repo, path))
    }

    /// What `who` may do somewhere below the folder `repo/folder`.
    pub fn below(&self, who: &Grantees<'_>, repo: &str, folder: &str) -> Actions {
        self.grants(who, |t| t.covers_below(repo, folder))
    }

    /// What `who` may do somewhere in `repo`.
    pub fn in_repository(&self, who: &Grantees<'_>, repo: &str) -> Actions {
        self.grants(who, |t| t.mentions_repository(repo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Target {
        let json: TargetJson = serde_json::from_value(json).expect("json");
        Target::parse("t", &json).expect("valid")
    }

    #[test]
    fn targets_grant_by_repository_path_user_and_group() {
        let t = target(serde_json::json!({
            "repo": {
                "repositories": ["libs-*", "docs"],
                "include-patterns": ["org/acme/**"],
                "exclude-patterns": ["**/*.secret"],
                "actions": {"users": {"bob": ["read", "write"]}, "groups": {"qa": ["r", "n"]}}
            }
        }));
        let targets = Targets { targets: vec![t] };
        let bob = Grantees {
            user: Some("bob"),
            groups: &[],
        };
        let qa = ["qa".to_string()];
        let tester = Grantees {
            user: Some("tess"),
            groups: &qa,
        };
        let file = |who: &Grantees<'_>, repo: &str, path: &str| targets.on_file(who, repo, path);
        assert!(file(&bob, "libs-release", "org/acme/a.jar").contains(Action::Deploy));
        assert!(!file(&bob, "libs-release", "org/acme/a.jar").contains(Action::Delete));
        assert!(file(&bob, "docs", "org/acme/x/y.txt").contains(Action::Read));
        assert_eq!(file(&bob, "other", "org/acme/a.jar"), Actions::default());
        assert_eq!(
            file(&bob, "libs-release", "org/other/a.jar"),
            Actions::default()
        );
        assert_eq!(
            file(&bob, "libs-release", "org/acme/k.secret"),
            Actions::default()
        );
        assert!(file(&tester, "docs", "org/acme/a").contains(Action::Annotate));
        assert!(!file(&tester, "docs", "org/acme/a").contains(Action::Deploy));
        // Folders that lead to covered files are visible; others are not.
        assert!(targets.below(&bob, "docs", "").contains(Action::Read));
        assert!(targets.below(&bob, "docs", "org").contains(Action::Read));
        assert!(
            targets
                .below(&bob, "docs", "org/acme/deep")
                .contains(Action::Read)
        );
        assert!(!targets.below(&bob, "docs", "com").contains(Action::Read));
    }

    #[test]
    fn any_local_covers_every_repository_and_bad_input_is_refused() {
        let t = target(serde_json::json!({
            "repo": {"repositories": ["ANY LOCAL"], "actions": {"users": {"ci": ["read"]}}}
        }));
        let targets = Targets { targets: vec![t] };
        let ci = Grantees {
            user: Some("ci"),
            groups: &[],
        };
        assert!(
            targets
                .on_file(&ci, "anything", "a/b")
                .contains(Action::Read)
        );
        for (bad, says) in [
            (
                serde_json::json!({"repo": {"actions": {"users": {"x": ["fly"]}}}}),
                "unknown action",
            ),
            (
                serde_json::json!({"repo": {"include-patterns": ["a/[b"]}}),
                "include pattern",
            ),
            (serde_json::json!({"name": "other"}), "differs"),
        ] {
            let json: TargetJson = serde_json::from_value(bad).expect("json");
            let err = Target::parse("t", &json).expect_err("refused");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
