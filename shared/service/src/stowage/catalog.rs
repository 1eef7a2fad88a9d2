//! What is recorded where: file and folder info, properties (read and written under the path
//! lock) and searches by checksum or property.

use std::collections::BTreeMap;

use stowage_core::{ArtifactPath, Error, RepoKey, Result};
use stowage_metadata::{
    ArtifactRecord, ChecksumLookup, FolderListing, FolderRecord, ListKind, ListedEntry,
};

use super::Stowage;
use crate::locks::LockName;
use crate::security::{Action, Caller};

/// What a path in a repository holds.
#[derive(Debug, Clone)]
pub enum Item {
    File(ArtifactRecord),
    Folder(FolderListing),
}

/// A page of a file list asked for.
#[derive(Debug, Clone, Copy)]
pub struct ListPage<'a> {
    pub kind: ListKind,
    /// Everything below the folder, not only its direct children.
    pub deep: bool,
    /// The last path of the page before.
    pub after: Option<&'a str>,
    pub limit: u32,
}

/// A page of a file list: what the caller may see of it, and where the next page starts.
#[derive(Debug, Clone)]
pub struct ListedPage {
    pub entries: Vec<ListedEntry>,
    /// The last path read (seen or not), when there may be more after it.
    pub next: Option<ArtifactPath>,
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

    /// The properties of the file or folder at `repo/path` (empty when it has none);
    /// `NotFound` when there is neither.
    pub async fn properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Properties> {
        let pairs = if let Some(record) = self.metadata.artifact(repo, path).await? {
            self.security
                .require(caller, Action::Read, repo.as_str(), path.as_str())
                .await?;
            self.metadata.properties(record.id).await?
        } else {
            let folder = self.readable_folder(caller, repo, path).await?;
            match folder.id {
                Some(id) => self.metadata.folder_properties(id).await?,
                None => Vec::new(),
            }
        };
        let mut properties = Properties::new();
        for (k, v) in pairs {
            properties.entry(k).or_default().push(v);
        }
        Ok(properties)
    }

    /// The folder at `repo/path`, if `caller` may read something below it; `NotFound` when
    /// there is no folder there.
    async fn readable_folder(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<FolderRecord> {
        if !self
            .security
            .may_below(caller, Action::Read, repo.as_str(), path.as_str())
            .await?
        {
            return Err(caller.refused(&format!("read {repo}/{path}")));
        }
        let repository = self.existing_repository(repo).await?;
        self.metadata
            .folder_record(&repository, path)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("{repo}/{path}"),
            })
    }

    /// Sets properties on a file, or on a folder and (`recursive`) everything below it, under
    /// the path's lock. Returns how many entries; `NotFound` when there is nothing at the path.
    pub async fn set_properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        recursive: bool,
        properties: &[(String, Vec<String>)],
    ) -> Result<u64> {
        for (name, values) in properties {
            check_property_name(name)?;
            values.iter().try_for_each(|v| check_property_value(v))?;
        }
        self.may_annotate(caller, repo, path).await?;
        self.write_properties(repo, path, || {
            self.metadata
                .set_properties(repo, path, recursive, properties)
        })
        .await
    }

    /// Removes the named properties from a file, or from a folder and (`recursive`)
    /// everything below it, under the path's lock. Returns how many entries; `NotFound` when
    /// there is nothing at the path.
    pub async fn delete_properties(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        recursive: bool,
        names: &[String],
    ) -> Result<u64> {
        self.may_annotate(caller, repo, path).await?;
        self.write_properties(repo, path, || {
            self.metadata
                .delete_properties(repo, path, recursive, names)
        })
        .await
    }

    /// Creates the folder `repo/path` and the folders above it (`PUT /repo/path/`). Needs the
    /// deploy permission somewhere below it.
    pub async fn create_folder(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<FolderRecord> {
        if !self
            .security
            .may_below(caller, Action::Deploy, repo.as_str(), path.as_str())
            .await?
        {
            return Err(caller.refused(&format!("create the folder {repo}/{path}")));
        }
        let created = self
            .locked_write(vec![LockName::path(repo, path)], || {
                self.metadata.create_folder(repo, path, &caller.name)
            })
            .await?;
        self.security
            .audit(caller, "folder.create", &format!("{repo}/{path}"), "")
            .await;
        Ok(created)
    }

    /// One page of the file list of the folder `repo/path` (`?list`): its files (or folders),
    /// or with `deep` everything below it, after `after`, that `caller` may read.
    pub async fn list_page(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        page: &ListPage<'_>,
    ) -> Result<ListedPage> {
        let readable = self.security.checker(caller, Action::Read).await?;
        let read = self
            .metadata
            .list_page(page.kind, repo, path, page.deep, page.after, page.limit)
            .await?;
        let next = (read.len() as u64 == u64::from(page.limit))
            .then(|| read.last().map(|e| e.path.clone()))
            .flatten();
        let mut entries = Vec::with_capacity(read.len());
        for entry in read {
            let visible = match entry.file {
                Some(_) => readable(repo, entry.path.as_str()).is_ok(),
                None => {
                    self.security
                        .may_below(caller, Action::Read, repo.as_str(), entry.path.as_str())
                        .await?
                }
            };
            if visible {
                entries.push(entry);
            }
        }
        Ok(ListedPage { entries, next })
    }

    /// The folder a file list is of, `NotFound` when there is none (a file is no folder).
    pub async fn list_root(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<FolderRecord> {
        self.readable_folder(caller, repo, path).await
    }

    /// The file at `repo/path`, or the last modified file below it that `caller` may read,
    /// with its modification time (`?lastModified`).
    pub async fn last_modified(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<(ArtifactPath, i64)> {
        self.existing_repository(repo).await?;
        let found = self.metadata.last_modified(repo, path).await?;
        let readable = self.security.checker(caller, Action::Read).await?;
        match found {
            Some((at, ms)) if readable(repo, at.as_str()).is_ok() => Ok((at, ms)),
            Some(_) => Err(caller.refused(&format!("read {repo}/{path}"))),
            None => Err(Error::NotFound {
                what: format!("{repo}/{path}"),
            }),
        }
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
