//! What is recorded where: file and folder info, properties (read and written under the path
//! lock) and searches by checksum or property.

use std::collections::BTreeMap;

use stowage_core::{ArtifactPath, Error, RepoKey, Result};
use stowage_metadata::{ArtifactRecord, ChecksumLookup, FolderListing};

use super::Stowage;
use crate::locks::LockName;
use crate::security::{Action, Caller};

/// What a path in a repository holds.
#[derive(Debug, Clone)]
pub enum Item {
    File(ArtifactRecord),
    Folder(FolderListing),
}

/// A file's properties, each name with its values.
pub type Properties = BTreeMap<String, Vec<String>>;

/// Results of a search are capped at this many artifacts.
const SEARCH_LIMIT: u32 = 1000;

/// Longest property name or value, in characters (a limit every engine can index).
const MAX_PROPERTY_LEN: usize = 255;

/// A property name: not empty, otherwise as a value.
pub(super) fn check_property_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidInput(
            "a property name may not be empty".into(),
        ));
    }
    check_property_value(name)
}

/// A property value: at most 255 characters, no control characters.
pub(super) fn check_property_value(text: &str) -> Result<()> {
    if text.chars().count() > MAX_PROPERTY_LEN || text.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "invalid property {text:?}: at most {MAX_PROPERTY_LEN} characters, no control characters"
        )));
    }
    Ok(())
}

impl Stowage {
    /// The file or the folder at `repo/path`; `NotFound` when there is neither.
    pub async fn item(&self, caller: &Caller, repo: &RepoKey, path: &ArtifactPath) -> Result<Item> {
        if let Some(record) = self.metadata.artifact(repo, path).await? {
            self.security
                .require(caller, Action::Read, repo.as_str(), path.as_str())
                .await?;
            return Ok(Item::File(record));
        }
        if !self
            .security
            .may_below(caller, Action::Read, repo.as_str(), path.as_str())
            .await?
        {
            return Err(caller.refused(&format!("read {repo}/{path}")));
        }
        let repository = self.existing_repository(repo).await?;
        let mut listing = self
            .metadata
            .folder(&repository, path)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("{repo}/{path}"),
            })?;
        // Children the caller cannot read are not listed.
        let readable = self.security.checker(caller, Action::Read).await?;
        let mut shown = Vec::with_capacity(listing.children.len());
        for child in listing.children {
            let below = if path.is_root() {
                child.name.clone()
            } else {
                format!("{path}/{}", child.name)
            };
            let visible = if child.folder {
                self.security
                    .may_below(caller, Action::Read, repo.as_str(), &below)
                    .await?
            } else {
                readable(repo, &below).is_ok()
            };
            if visible {
                shown.push(child);
            }
        }
        listing.children = shown;
        Ok(Item::Folder(listing))
    }

    /// The properties of the file at `repo/path`; `NotFound` when it has none.
    pub async fn properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Properties> {
        self.security
            .require(caller, Action::Read, repo.as_str(), path.as_str())
            .await?;
        let record = self
            .metadata
            .artifact(repo, path)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("{repo}/{path}"),
            })?;
        let mut properties = Properties::new();
        for (k, v) in self.metadata.properties(record.id).await? {
            properties.entry(k).or_default().push(v);
        }
        if properties.is_empty() {
            return Err(Error::NotFound {
                what: format!("properties of {repo}/{path}"),
            });
        }
        Ok(properties)
    }

    /// Sets properties on a file, or on every file below a folder, under the path's lock.
    /// Returns how many files; `NotFound` when there is nothing at the path.
    pub async fn set_properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        properties: &[(String, Vec<String>)],
    ) -> Result<u64> {
        for (name, values) in properties {
            check_property_name(name)?;
            values.iter().try_for_each(|v| check_property_value(v))?;
        }
        self.may_annotate(caller, repo, path).await?;
        self.write_properties(repo, path, || {
            self.metadata.set_properties(repo, path, properties)
        })
        .await
    }

    /// Removes the named properties from a file, or from every file below a folder, under the
    /// path's lock. Returns how many files; `NotFound` when there is nothing at the path.
    pub async fn delete_properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        names: &[String],
    ) -> Result<u64> {
        self.may_annotate(caller, repo, path).await?;
        self.write_properties(repo, path, || {
            self.metadata.delete_properties(repo, path, names)
        })
        .await
    }

    /// `Forbidden` unless `caller` may annotate the file at `repo/path`, or (a folder) some
    /// file below it.
    async fn may_annotate(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<()> {
        let allowed = if self.metadata.artifact(repo, path).await?.is_some() {
            self.security
                .require(caller, Action::Annotate, repo.as_str(), path.as_str())
                .await
                .is_ok()
        } else {
            self.security
                .may_below(caller, Action::Annotate, repo.as_str(), path.as_str())
                .await?
        };
        if allowed {
            Ok(())
        } else {
            Err(caller.refused(&format!("annotate {repo}/{path}")))
        }
    }

    /// A property write of `repo/path` under its lock; `NotFound` when it changed no file.
    async fn write_properties<F, Fut>(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        write: F,
    ) -> Result<u64>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        let changed = self
            .locked_write(vec![LockName::path(repo, path)], write)
            .await?;
        if changed == 0 {
            return Err(Error::NotFound {
                what: format!("{repo}/{path}"),
            });
        }
        Ok(changed)
    }

    /// Every artifact whose binary has the given checksum.
    pub async fn search_checksum(
        &self,
        caller: &Caller,
        lookup: ChecksumLookup,
    ) -> Result<Vec<ArtifactRecord>> {
        // Only what the caller may read is found.
        let readable = self.security.checker(caller, Action::Read).await?;
        let mut found = self.metadata.search_checksum(lookup).await?;
        found.retain(|a| readable(&a.repo, a.path.as_str()).is_ok());
        Ok(found)
    }

    /// Artifacts that have every property given (any of its values), in `repos` (all when
    /// empty); at most 1,000.
    pub async fn search_properties(
        &self,
        caller: &Caller,
        criteria: &[(String, Vec<String>)],
        repos: &[RepoKey],
    ) -> Result<Vec<(RepoKey, ArtifactPath)>> {
        for (name, _) in criteria {
            check_property_name(name)?;
        }
        let readable = self.security.checker(caller, Action::Read).await?;
        let mut found = self
            .metadata
            .search_properties(criteria, repos, SEARCH_LIMIT)
            .await?;
        found.retain(|(repo, path)| readable(repo, path.as_str()).is_ok());
        Ok(found)
    }
}
