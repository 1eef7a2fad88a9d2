//! `[filestore.google-storage]`: the GCS provider's settings. Names follow Artifactory's
//! `google-storage` binary provider where it has one (`bucketName`, `path`, `endpoint`,
//! `signedUrlExpirySeconds`); the rest is marked as Stowage's own. Loading never panics;
//! `validate` names the setting that is wrong.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use stowage_core::Error;

/// Resumable-upload chunks must be a multiple of this (all but the last).
pub const CHUNK_GRANULARITY: u64 = 256 * 1024;

/// `[filestore.google-storage]`. (Serialize lets a shard's settings be laid over these.)
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GcsConfig {
    /// The bucket. Required.
    pub bucket_name: String,
    /// Folder inside the bucket; binaries live at `<path>/ab/abcdef…`. Default `filestore`.
    pub path: String,
    /// JSON API endpoint for emulators (`http://127.0.0.1:4443`). Default: Google's.
    pub endpoint: Option<String>,
    /// A service-account key file (JSON). It authenticates requests and signs download URLs.
    /// Default: none, the default credentials are used (`GOOGLE_APPLICATION_CREDENTIALS`, the
    /// metadata server); download URLs then cannot be signed.
    pub credentials_file: Option<PathBuf>,
    /// Sends requests without credentials (emulators). `credentialsFile` still signs URLs.
    /// Default `false`. (Stowage's own.)
    pub anonymous: bool,
    /// Checks at start-up that the bucket exists and is reachable. Default `true`.
    pub test_connection: bool,
    /// Uploads of announced length up to this size are held in memory and sent as one request
    /// carrying their MD5 and CRC32C, which GCS checks. Default 8 MiB. (Stowage's own.)
    pub max_in_memory_upload_size: ByteSize,
    /// Chunk size of resumable uploads (larger bodies), a multiple of 256 KiB. Default 16 MiB.
    /// (Stowage's own.)
    pub upload_chunk_size: ByteSize,
    /// Attempts of an idempotent request that fails transiently. Default 4. (Stowage's own.)
    pub max_retry_attempts: u32,
    /// Least validity of download redirect URLs. Default 600.
    pub signed_url_expiry_seconds: u64,
    /// A slow client's rate, by which the validity of large binaries' URLs grows. Default 1 MB
    /// (per second). (Stowage's own.)
    pub signed_url_slow_client_rate: ByteSize,
}

impl Default for GcsConfig {
    fn default() -> Self {
        Self {
            bucket_name: String::new(),
            path: "filestore".into(),
            endpoint: None,
            credentials_file: None,
            anonymous: false,
            test_connection: true,
            max_in_memory_upload_size: ByteSize::mib(8),
            upload_chunk_size: ByteSize::mib(16),
            max_retry_attempts: 4,
            signed_url_expiry_seconds: 600,
            signed_url_slow_client_rate: ByteSize::mb(1),
        }
    }
}

impl GcsConfig {
    /// Checks the settings, naming the first wrong one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| {
            Err(Error::InvalidInput(format!(
                "[filestore.google-storage] {msg}"
            )))
        };
        if self.bucket_name.trim().is_empty() {
            return bad("bucketName is required".into());
        }
        let chunk = self.upload_chunk_size.as_u64();
        if chunk == 0 || !chunk.is_multiple_of(CHUNK_GRANULARITY) {
            return bad(format!(
                "uploadChunkSize is {} bytes; it must be a positive multiple of 256 KiB",
                chunk
            ));
        }
        if self.max_retry_attempts == 0 {
            return bad("maxRetryAttempts must be at least 1".into());
        }
        if self.signed_url_expiry_seconds == 0 || self.signed_url_expiry_seconds > 7 * 24 * 3600 {
            return bad(format!(
                "signedUrlExpirySeconds is {}; V4 signed URLs last 1 s to 7 days",
                self.signed_url_expiry_seconds
            ));
        }
        Ok(())
    }
}
