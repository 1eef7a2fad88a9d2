//! The assembled provider chain with the handles the service needs beside it (the eventual
//! queue, the sharded store, the read cache, the download signer, presigned uploads, staging
//! sweeps). It is built from configuration by `stowage_config::filestore::build`; this module
//! only holds the result.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::cache::CachedProvider;
use stowage_core::eventual::EventualProvider;
use stowage_core::fs::FileSystemProvider;
use stowage_core::object::StagingSweeper;
use stowage_core::sharding::ShardingProvider;
use stowage_core::signing::DownloadSigner;
use stowage_core::{BinaryProvider, PresignedUploads, Result};

/// The assembled chain.
#[derive(Clone)]
pub struct Filestore {
    /// What the service stores and reads through.
    pub provider: Arc<dyn BinaryProvider>,
    /// The write-behind queue, for templates that have one.
    pub eventual: Option<EventualProvider>,
    /// The object store that takes presigned upload sessions, for templates that have one.
    pub uploads: Option<Arc<dyn PresignedUploads>>,
    /// The sharded store (its mounts, balancing), for the sharding templates.
    pub sharding: Option<ShardingProvider>,
    /// The read cache, where there is one.
    pub cache: Option<CachedProvider>,
    /// Signs download redirects (S3 presigned or CloudFront), for object-store templates.
    pub signer: Option<Arc<dyn DownloadSigner>>,
    /// Local staging the chain keeps (filesystem `_pre`), cleaned of crash leftovers.
    pub local: Option<FileSystemProvider>,
    /// Object stores whose staging objects (`<path>/_pre/`) garbage collection sweeps (GCS,
    /// Azure; S3's are swept with its upload sessions).
    pub staging: Vec<Arc<dyn StagingSweeper>>,
}

impl fmt::Debug for Filestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filestore")
            .field("provider", &self.provider.to_string())
            .field("eventual", &self.eventual.is_some())
            .field("uploads", &self.uploads.is_some())
            .field("sharding", &self.sharding.is_some())
            .field("cache", &self.cache.is_some())
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
            sharding: None,
            cache: None,
            signer: None,
            local: None,
            staging: Vec::new(),
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
