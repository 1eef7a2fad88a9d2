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
        self.security
            .require_admin(caller, &format!("restore {repo}/{path} from the trash"))?;
        let restored = self
            .locked_write(vec![LockName::path(repo, path)], || {
                self.metadata.restore(repo, path)
            })
            .await?;
        if restored == 0 {
            return Err(Error::NotFound {
                what: format!("{repo}/{path} in the trash"),
            });
        }
        Ok(restored)
    }
}
