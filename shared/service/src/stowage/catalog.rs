//! What is recorded where: file and folder info, properties (read and written under the path
//! lock) and searches by checksum or property.

use std::collections::BTreeMap;

use stowage_core::{ArtifactPath, Error, RepoKey, Result};
use stowage_metadata::{ArtifactRecord, ChecksumLookup, FolderListing};

use super::Stowage;
use crate::locks::LockName;

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
    pub async fn item(&self, repo: &RepoKey, path: &ArtifactPath) -> Result<Item> {
        if let Some(record) = self.metadata.artifact(repo, path).await? {
            return Ok(Item::File(record));
        }
        let repository = self.existing_repository(repo).await?;
        self.metadata
            .folder(&repository, path)
            .await?
            .map(Item::Folder)
            .ok_or_else(|| Error::NotFound {
                what: format!("{repo}/{path}"),
            })
    }

    /// The properties of the file at `repo/path`; `NotFound` when it has none.
    pub async fn properties(&self, repo: &RepoKey, path: &ArtifactPath) -> Result<Properties> {
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
        repo: &RepoKey,
        path: &ArtifactPath,
        properties: &[(String, Vec<String>)],
    ) -> Result<u64> {
        for (name, values) in properties {
            check_property_name(name)?;
            values.iter().try_for_each(|v| check_property_value(v))?;
        }
        self.write_properties(repo, path, || {
            self.metadata.set_properties(repo, path, properties)
        })
        .await
    }

    /// Removes the named properties from a file, or from every file below a folder, under the
    /// path's lock. Returns how many files; `NotFound` when there is nothing at the path.
    pub async fn delete_properties(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        names: &[String],
    ) -> Result<u64> {
        self.write_properties(repo, path, || {
            self.metadata.delete_properties(repo, path, names)
        })
        .await
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
    pub async fn search_checksum(&self, lookup: ChecksumLookup) -> Result<Vec<ArtifactRecord>> {
        self.metadata.search_checksum(lookup).await
    }

    /// Artifacts that have every property given (any of its values), in `repos` (all when
    /// empty); at most 1,000.
    pub async fn search_properties(
        &self,
        criteria: &[(String, Vec<String>)],
        repos: &[RepoKey],
    ) -> Result<Vec<(RepoKey, ArtifactPath)>> {
        for (name, _) in criteria {
            check_property_name(name)?;
        }
        self.metadata
            .search_properties(criteria, repos, SEARCH_LIMIT)
            .await
    }
}
