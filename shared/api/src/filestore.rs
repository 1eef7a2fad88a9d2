//! Assembles the binary-provider chain from `[filestore]`, in this one place, like
//! Artifactory's `binarystore.xml` templates:
//!
//! | template | chain |
//! |---|---|
//! | `file-system` (default) | local directory |
//! | `s3-storage-v3-direct` | S3, uploads streamed (below `maxFileSizeForDirectUpload`) or multipart |
//! | `s3-storage-v3`, `cluster-s3-storage-v3` | eventual queue → S3 |
//!
//! Beside the chain it keeps the handles the service needs: the eventual queue (its dispatcher
//! and figures) and the store that accepts presigned upload sessions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::eventual::{EventualProvider, EventualSettings};
use stowage_core::fs::FileSystemProvider;
use stowage_core::{BinaryProvider, Error, KeyLayout, PresignedUploads, Result};
use stowage_s3::S3Provider;

use crate::Config;

/// Every template name, for messages.
const TEMPLATES: &str = "file-system, cache-fs, double-shards, redundant-shards, s3-storage-v3, \
                         s3-storage-v3-direct, cluster-s3-storage-v3, s3-sharding, \
                         google-storage, azure-blob-storage";

/// The assembled chain.
#[derive(Clone)]
pub struct Filestore {
    /// What the service stores and reads through.
    pub provider: Arc<dyn BinaryProvider>,
    /// The write-behind queue, for templates that have one.
    pub eventual: Option<EventualProvider>,
    /// The object store that takes presigned upload sessions, for templates that have one.
    pub uploads: Option<Arc<dyn PresignedUploads>>,
    /// Local staging the chain keeps (filesystem `_pre`), cleaned of crash leftovers.
    local: Option<FileSystemProvider>,
}

impl fmt::Debug for Filestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filestore")
            .field("provider", &self.provider.to_string())
            .field("eventual", &self.eventual.is_some())
            .field("uploads", &self.uploads.is_some())
            .finish()
    }
}

impl Filestore {
    /// A chain of one provider (tests, tools).
    pub fn from_provider(provider: Arc<dyn BinaryProvider>) -> Self {
        Self {
            provider,
            eventual: None,
            uploads: None,
            local: None,
        }
    }

    /// Builds the chain `config` names; object stores are connected (and tested) here.
    pub async fn build(config: &Config) -> Result<Self> {
        let layout = KeyLayout::new(config.filestore.root_folders_name_length)?;
        match config.filestore.template.as_str() {
            "file-system" => {
                let fs = FileSystemProvider::new(config.file_store_dir(), layout)?;
                Ok(Self {
                    provider: Arc::new(fs.clone()),
                    eventual: None,
                    uploads: None,
                    local: Some(fs),
                })
            }
            "s3-storage-v3-direct" => {
                let s3 = Arc::new(connect_s3(config, layout).await?);
                Ok(Self {
                    provider: s3.clone(),
                    eventual: None,
                    uploads: Some(s3),
                    local: None,
                })
            }
            "s3-storage-v3" | "cluster-s3-storage-v3" => {
                let s3 = Arc::new(connect_s3(config, layout).await?);
                let e = &config.filestore.eventual;
                let eventual = EventualProvider::new(
                    s3.clone(),
                    layout,
                    EventualSettings {
                        dirs: config.eventual_dirs(),
                        lenient_limit: e.lenient_limit,
                        number_of_threads: e.number_of_threads,
                        dispatcher_interval: Duration::from_millis(e.dispatcher_interval.max(1)),
                        max_retry_backoff: Duration::from_secs(e.max_retry_backoff_secs.max(1)),
                    },
                )
                .map_err(|e| Error::InvalidInput(format!("[filestore.eventual] {e}")))?;
                Ok(Self {
                    provider: Arc::new(eventual.clone()),
                    eventual: Some(eventual),
                    uploads: Some(s3),
                    local: None,
                })
            }
            template @ ("cache-fs" | "double-shards" | "redundant-shards" | "s3-sharding"
            | "google-storage" | "azure-blob-storage") => Err(Error::InvalidInput(format!(
                "filestore template {template:?} is not available in this build yet; use one of \
                 file-system, s3-storage-v3-direct, s3-storage-v3, cluster-s3-storage-v3"
            ))),
            other => Err(Error::InvalidInput(format!(
                "unknown filestore template {other:?}; expected one of {TEMPLATES}"
            ))),
        }
    }

    /// Removes what a crash left in local staging (older than `grace`: another process may
    /// be writing newer files only when directories are shared).
    pub async fn clean_local_staging(&self, grace: Duration) -> Result<usize> {
        let mut removed = 0;
        if let Some(fs) = &self.local {
            removed += fs.clean_temp(grace).await?;
        }
        if let Some(eventual) = &self.eventual {
            removed += eventual.clean_temp(grace).await?;
        }
        Ok(removed)
    }
}

async fn connect_s3(config: &Config, layout: KeyLayout) -> Result<S3Provider> {
    let s3 = config.filestore.s3.clone().ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template {:?} needs a [filestore.s3] section with at least bucketName",
            config.filestore.template
        ))
    })?;
    let spool = config.data_dir.join("s3-spool");
    // This process owns its data directory (the data-dir lock): older spool files are a
    // crash's leftovers.
    if let Ok(mut entries) = tokio::fs::read_dir(&spool).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
    S3Provider::connect(
        s3,
        layout,
        config.filestore.max_file_size_for_direct_upload.as_u64(),
        spool,
    )
    .await
}
