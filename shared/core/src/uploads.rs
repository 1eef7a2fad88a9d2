//! Presigned upload sessions: object stores that let a client send bytes straight to them
//! (S3 presigned PUT and multipart part URLs), so the bytes never pass through Stowage, whose
//! Lambda request bodies are capped near 6 MB. The store stages what the client sends and only
//! makes it a binary after verifying size and SHA-256 itself. It must not know about
//! repositories, paths or the database: the service layer keeps the sessions.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::{PutResult, Result, Sha256};

/// One HTTP request the client makes against the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    pub method: String,
    pub url: String,
    /// Headers the client must send exactly as given (they are part of the signature).
    pub headers: BTreeMap<String, String>,
}

/// One part of a multipart upload: bytes `offset .. offset + size` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPart {
    pub part_number: u32,
    pub offset: u64,
    pub size: u64,
    pub request: PresignedRequest,
}

/// How the client is to send its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadPlan {
    /// One PUT of the whole body, bound to its SHA-256 (the store refuses other bytes).
    Single { request: PresignedRequest },
    /// Parts sent in any order and in parallel; `complete` assembles them.
    Multipart {
        upload_id: String,
        part_size: u64,
        parts: Vec<PresignedPart>,
    },
}

impl UploadPlan {
    /// The store's multipart upload id, which `complete` and `abort` need back.
    pub fn multipart_upload_id(&self) -> Option<&str> {
        match self {
            UploadPlan::Single { .. } => None,
            UploadPlan::Multipart { upload_id, .. } => Some(upload_id),
        }
    }
}

/// What a sweep of abandoned uploads removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleUploads {
    /// Staging objects deleted.
    pub staging_objects: u64,
    /// Incomplete multipart uploads aborted.
    pub multipart_uploads: u64,
}

/// A store that accepts presigned uploads. `id` names the session; the store derives its
/// staging key from it, so a session can be completed or aborted by any node.
#[async_trait]
pub trait PresignedUploads: Send + Sync + Debug + 'static {
    /// Prepares an upload of `size` bytes with this SHA-256, with URLs valid for `expires_in`.
    async fn start_upload(
        &self,
        id: &str,
        size: u64,
        sha256: &Sha256,
        expires_in: Duration,
    ) -> Result<UploadPlan>;

    /// Checks what the client sent (size and SHA-256, read back by the store) and stores it
    /// under its digest. Wrong bytes give [`crate::Error::ChecksumMismatch`] (or
    /// `Truncated`/`TooLong`) and nothing is stored; the staged bytes are removed either way.
    async fn complete_upload(
        &self,
        id: &str,
        multipart_upload_id: Option<&str>,
        size: u64,
        sha256: &Sha256,
    ) -> Result<PutResult>;

    /// Drops whatever the client has sent so far. Succeeds if there is nothing.
    async fn abort_upload(&self, id: &str, multipart_upload_id: Option<&str>) -> Result<()>;

    /// Removes staging objects and aborts incomplete multipart uploads older than
    /// `older_than`: what crashed uploads and expired sessions left behind.
    async fn clean_stale_uploads(&self, older_than: Duration) -> Result<StaleUploads>;
}
