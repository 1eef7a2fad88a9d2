//! The trash: what deletes moved there, restored in place under the path's lock, or emptied.

use stowage_core::{ArtifactPath, Error, RepoKey, Result};
use stowage_metadata::TrashRecord;

use super::Stowage;
use crate::locks::LockName;
use crate::security::Caller;

impl Stowage {
    /// What is in the trash, newest first.
    pub async fn trash_list(&self, caller: &Caller) -> Result<Vec<TrashRecord>> {
        self.security.require_admin(caller, "list the trash")?;
        self.metadata.trash_list().await
    }

    /// Removes a file, or a folder's files, from the trash for good (Artifactory's
    /// `DELETE /api/trash/clean/{repo}/{path}`). Returns how many; `NotFound` when the trash
    /// holds nothing there.
    pub async fn clean_trash(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<u64> {
        self.security
            .require_admin(caller, &format!("remove {repo}/{path} from the trash"))?;
        let cleaned = self.metadata.clean_trash(repo, path).await?;
        if cleaned == 0 {
            return Err(Error::NotFound {
                what: format!("{repo}/{path} in the trash"),
            });
        }
        Ok(cleaned)
    }

    /// Removes everything in the trash (its binaries go at the next garbage collection).
    /// Returns how many entries.
    pub async fn empty_trash(&self, caller: &Caller) -> Result<u64> {
        self.security.require_admin(caller, "empty the trash")?;
        self.metadata.empty_trash(None).await
    }

    /// Puts a file, or a folder's files, back where they were deleted from, under the path's
    /// lock. Returns how many; `NotFound` when the trash holds nothing at the path.
    pub async fn restore(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<u64> {
        self.restore_to(caller, repo, path, None).await
    }

    /// Like [`Stowage::restore`], to `to` (a file lands there, a folder's files below it),
    /// under the locks of both paths.
    pub async fn restore_to(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        to: Option<(&RepoKey, &ArtifactPath)>,
    ) -> Result<u64> {
        self.security
            .require_admin(caller, &format!("restore {repo}/{path} from the trash"))?;
        let mut locks = vec![LockName::path(repo, path)];
        if let Some((to_repo, to_path)) = to {
            locks.push(LockName::path(to_repo, to_path));
        }
        let restored = self
            .locked_write(locks, || self.metadata.restore_to(repo, path, to))
            .await?;
        if restored == 0 {
            return Err(Error::NotFound {
                what: format!("{repo}/{path} in the trash"),
            });
        }
        Ok(restored)
    }
}
