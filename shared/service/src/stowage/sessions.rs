//! Presigned upload sessions: open (or short-circuit when the binary is already stored),
//! complete (the store verifies the bytes, then the artifact is recorded), abort, and expire.
//! The session row lives in the database so that any node can finish it; a per-session lock
//! keeps two nodes from finishing it at once.

use std::time::Duration;

use stowage_core::{
    ArtifactPath, Error, ExpectedChecksums, PresignedUploads, RepoKey, Result, Sha256,
};
use stowage_metadata::{ArtifactRecord, ChecksumLookup, UploadSession, now_ms};

use super::{DeployRequest, SessionStart, Stowage};
use crate::locks::LockName;
use crate::security::{Action, Caller};

/// Sessions expired per garbage-collection batch.
const EXPIRE_BATCH: u32 = 100;

impl Stowage {
    fn uploads(&self) -> Result<&dyn PresignedUploads> {
        self.provider.presigned_uploads().ok_or_else(|| {
            Error::InvalidInput(format!(
                "presigned upload sessions need an object-store filestore (template \
                 s3-storage-v3-direct, s3-storage-v3 or cluster-s3-storage-v3); this one is {}: \
                 deploy the bytes directly instead",
                self.provider
            ))
        })
    }

    /// Opens a session to upload `size` bytes hashing to `sha256` to `repo/path`. If the
    /// binary is already stored, records the artifact at once (`SessionStart::Deployed`).
    pub async fn start_upload_session(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        size: u64,
        sha256: Sha256,
    ) -> Result<SessionStart> {
        self.security
            .require(caller, Action::Deploy, repo.as_str(), path.as_str())
            .await?;
        self.require_repository(repo).await?;
        if path.is_root() {
            return Err(Error::InvalidInput(
                "a file path is required after the repository key".into(),
            ));
        }
        let by = caller.name.as_str();
        let uploads = self.uploads()?;
        let admission = self.admission(caller, repo, path, "presigned").await?;
        // Recorded without its bytes only for a caller that can read them already (as a
        // deploy by checksum): anyone else sends them.
        let known = match self
            .metadata
            .find_binary(ChecksumLookup::Sha256(sha256))
            .await?
            .filter(|b| b.size == size)
        {
            Some(binary)
                if self
                    .may_read_any(caller, ChecksumLookup::Sha256(sha256))
                    .await? =>
            {
                Some(binary)
            }
            _ => None,
        };
        if let Some(binary) = known {
            // The session declared the SHA-256: the deploy's original checksum.
            let request = DeployRequest {
                by: by.to_owned(),
                expected: ExpectedChecksums {
                    sha256: Some(binary.checksums.sha256),
                    ..ExpectedChecksums::none()
                },
                ..DeployRequest::default()
            };
            match self
                .record(
                    repo,
                    path,
                    binary.checksums,
                    binary.size,
                    request,
                    admission,
                )
                .await
            {
                Ok(record) => return Ok(SessionStart::Deployed(record)),
                // Collected meanwhile: upload it after all.
                Err(Error::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let plan = uploads
            .start_upload(&id, size, &sha256, self.session_expiry)
            .await?;
        let now = now_ms();
        let session = UploadSession {
            id,
            repo: repo.clone(),
            path: path.clone(),
            sha256,
            size,
            multipart_upload_id: plan.multipart_upload_id().map(str::to_owned),
            created_by: by.to_owned(),
            created_ms: now,
            expires_ms: now + i64::try_from(self.session_expiry.as_millis()).unwrap_or(i64::MAX),
        };
        if let Err(e) = self.metadata.create_upload_session(&session).await {
            let _ = uploads
                .abort_upload(&session.id, session.multipart_upload_id.as_deref())
                .await;
            return Err(e);
        }
        Ok(SessionStart::Pending { session, plan })
    }

    async fn session(&self, id: &str) -> Result<UploadSession> {
        self.metadata
            .upload_session(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("upload session {id:?} (it was completed, aborted or has expired)"),
            })
    }

    /// Verifies what the client sent and records the artifact. Wrong bytes end the session
    /// (409, nothing recorded); bytes not yet sent leave it open (409).
    pub async fn complete_upload_session(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ArtifactRecord> {
        let uploads = self.uploads()?;
        let lock = self
            .locks
            .lock(&LockName::UploadSession(id.to_owned()))
            .await?;
        let finished = async {
            let session = self.session(id).await?;
            // Checked again: a permission may have been taken away since the session opened.
            self.security
                .require(
                    caller,
                    Action::Deploy,
                    session.repo.as_str(),
                    session.path.as_str(),
                )
                .await?;
            let admission = self
                .admission(caller, &session.repo, &session.path, "presigned")
                .await?;
            if session.expires_ms < now_ms() {
                self.end_session(uploads, &session).await?;
                return Err(Error::Conflict(format!(
                    "upload session {id} has expired; open a new one"
                )));
            }
            let stored = match uploads
                .complete_upload(
                    id,
                    session.multipart_upload_id.as_deref(),
                    session.size,
                    &session.sha256,
                )
                .await
            {
                Ok(stored) => stored,
                Err(e @ Error::Conflict(_)) => return Err(e),
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    // The staged bytes were wrong and are gone: the session cannot succeed.
                    self.end_session(uploads, &session).await?;
                    return Err(e);
                }
            };
            let request = DeployRequest {
                by: session.created_by.clone(),
                expected: ExpectedChecksums {
                    sha256: Some(session.sha256),
                    ..ExpectedChecksums::none()
                },
                ..DeployRequest::default()
            };
            let record = self
                .record(
                    &session.repo,
                    &session.path,
                    stored.checksums,
                    stored.size,
                    request,
                    admission,
                )
                .await?;
            self.metadata.delete_upload_session(id).await?;
            Ok(record)
        }
        .await;
        lock.release().await;
        finished
    }

    /// Drops a session and whatever its client sent.
    pub async fn abort_upload_session(&self, caller: &Caller, id: &str) -> Result<()> {
        let uploads = self.uploads()?;
        let lock = self
            .locks
            .lock(&LockName::UploadSession(id.to_owned()))
            .await?;
        let aborted = async {
            let session = self.session(id).await?;
            self.security
                .require(
                    caller,
                    Action::Deploy,
                    session.repo.as_str(),
                    session.path.as_str(),
                )
                .await?;
            self.end_session(uploads, &session).await
        }
        .await;
        lock.release().await;
        aborted
    }

    async fn end_session(
        &self,
        uploads: &dyn PresignedUploads,
        session: &UploadSession,
    ) -> Result<()> {
        uploads
            .abort_upload(&session.id, session.multipart_upload_id.as_deref())
            .await?;
        self.metadata.delete_upload_session(&session.id).await?;
        Ok(())
    }

    /// Aborts expired sessions and sweeps staging the object store holds from crashes.
    /// Returns (sessions expired, stale uploads).
    pub(super) async fn clean_uploads(&self) -> Result<(u64, stowage_core::StaleUploads)> {
        let Some(uploads) = self.provider.presigned_uploads() else {
            return Ok((0, Default::default()));
        };
        let mut expired = 0;
        loop {
            let batch = self
                .metadata
                .expired_upload_sessions(now_ms(), EXPIRE_BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            for session in &batch {
                let lock = self
                    .locks
                    .lock(&LockName::UploadSession(session.id.clone()))
                    .await?;
                let ended = self.end_session(uploads, session).await;
                lock.release().await;
                ended?;
                expired += 1;
            }
        }
        // Anything older than a session can live, plus the grace, was left by a crash.
        let stale_age = self.session_expiry + self.orphan_grace.max(Duration::from_secs(3600));
        let stale = uploads.clean_stale_uploads(stale_age).await?;
        Ok((expired, stale))
    }
}
