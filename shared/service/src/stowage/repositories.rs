//! Repositories: created or updated from Artifactory's repository JSON, listed, removed with
//! everything in them. A repository's writes are ordered by its lock.

use serde_json::{Map, Value};
use stowage_core::{Error, RepoKey, Result};
use stowage_metadata::{ImmutablePaths, Repository, now_ms};

use super::Stowage;
use crate::locks::LockName;
use crate::security::Caller;

impl Stowage {
    /// Every repository, by key.
    /// Those the caller may use at all are listed.
    pub async fn repositories(&self, caller: &Caller) -> Result<Vec<Repository>> {
        let mut shown = Vec::new();
        for repository in self.metadata.repositories().await? {
            if self
                .security
                .may_use_repository(caller, repository.key.as_str())
                .await?
            {
                shown.push(repository);
            }
        }
        Ok(shown)
    }

    /// One repository; `NotFound` when there is none by that key (or the caller may not use
    /// it: a repository it cannot see is one it cannot tell exists).
    pub async fn repository(&self, caller: &Caller, key: &RepoKey) -> Result<Repository> {
        if !self
            .security
            .may_use_repository(caller, key.as_str())
            .await?
        {
            return Err(Error::RepositoryNotFound {
                key: key.to_string(),
            });
        }
        self.existing_repository(key).await
    }

    /// Creates or updates `key` from Artifactory's repository JSON (`rclass`, `packageType`,
    /// `description`; every other field is kept as given, `downloadRedirect`,
    /// `downloadRedirectMinSize` and `immutablePaths` checked). Returns whether it was created.
    pub async fn put_repository(
        &self,
        caller: &Caller,
        key: &RepoKey,
        mut config: Map<String, Value>,
    ) -> Result<bool> {
        self.security
            .require_admin(caller, &format!("create or change repository {key}"))?;
        let mut take = |name: &str| match config.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::InvalidInput(format!("{name} must be a string"))),
        };
        if let Some(body_key) = take("key")?
            && body_key != key.as_str()
        {
            return Err(Error::InvalidInput(format!(
                "the body's key {body_key:?} differs from the URL's {key:?}"
            )));
        }
        let rclass = take("rclass")?.unwrap_or_else(|| "local".into());
        if rclass != "local" {
            return Err(Error::InvalidInput(format!(
                "rclass {rclass:?} is not supported; Stowage stores local repositories"
            )));
        }
        let package_type = take("packageType")?.unwrap_or_else(|| "generic".into());
        let description = take("description")?.unwrap_or_default();
        if config
            .get("downloadRedirect")
            .is_some_and(|v| !v.is_boolean() && !v.is_null())
        {
            return Err(Error::InvalidInput(
                "downloadRedirect must be true or false".into(),
            ));
        }
        if config
            .get("downloadRedirectMinSize")
            .is_some_and(|v| v.as_u64().is_none() && !v.is_null())
        {
            return Err(Error::InvalidInput(
                "downloadRedirectMinSize must be a number of bytes (0 or more)".into(),
            ));
        }
        // Refused here, with what is wrong, rather than on the first write it would govern.
        let config = Value::Object(config);
        ImmutablePaths::from_config(&config)?;
        let repository = Repository {
            key: key.clone(),
            rclass,
            package_type,
            description,
            config,
            created_ms: now_ms(),
        };
        let created = self
            .locked_write(vec![LockName::Repository(key.clone())], || {
                self.metadata.put_repository(&repository)
            })
            .await;
        self.repository_changed(key).await;
        if created.is_ok() {
            let detail = repository.config.to_string();
            self.security
                .audit(caller, "repository.put", key.as_str(), &detail)
                .await;
        }
        created
    }

    /// Changes the fields `changes` names of the existing repository `key`, keeping the others
    /// (Artifactory's `POST /api/repositories/{key}`); `RepositoryNotFound` when there is none.
    pub async fn update_repository(
        &self,
        caller: &Caller,
        key: &RepoKey,
        changes: Map<String, Value>,
    ) -> Result<()> {
        self.security
            .require_admin(caller, &format!("change repository {key}"))?;
        let current = self.existing_repository(key).await?;
        let mut merged = match current.config {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        merged.insert("rclass".into(), Value::String(current.rclass));
        merged.insert("packageType".into(), Value::String(current.package_type));
        merged.insert("description".into(), Value::String(current.description));
        merged.extend(changes);
        self.put_repository(caller, key, merged).await.map(|_| ())
    }

    /// Removes `key` and everything in it; `NotFound` when there is no such repository.
    pub async fn delete_repository(&self, caller: &Caller, key: &RepoKey) -> Result<()> {
        self.security
            .require_admin(caller, &format!("delete repository {key}"))?;
        let deleted = self
            .locked_write(vec![LockName::Repository(key.clone())], || {
                self.metadata.delete_repository(key)
            })
            .await;
        self.repository_changed(key).await;
        if !deleted? {
            return Err(Error::RepositoryNotFound {
                key: key.to_string(),
            });
        }
        self.security
            .audit(caller, "repository.delete", key.as_str(), "")
            .await;
        Ok(())
    }

    /// The repository `key`, or `NotFound`.
    pub(super) async fn existing_repository(&self, key: &RepoKey) -> Result<Repository> {
        self.metadata
            .repository(key)
            .await?
            .ok_or_else(|| Error::RepositoryNotFound {
                key: key.to_string(),
            })
    }
}
