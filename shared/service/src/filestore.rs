//! The assembled provider chain with the handles the service needs for figures and
//! cluster-wide work beside it (the eventual queue, the sharded store, the read cache). What
//! the chain can do — sign downloads, take presigned uploads, sweep staging — travels with the
//! chain itself ([`BinaryProvider`]'s capability methods). It is built from configuration by
//! `stowage_config::filestore::build`; this module only holds the result.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::cache::CachedProvider;
use stowage_core::eventual::EventualProvider;
use stowage_core::sharding::ShardingProvider;
use stowage_core::{BinaryProvider, Result, StagingAge};

/// The assembled chain.
#[derive(Clone)]
pub struct Filestore {
    /// What the service stores and reads through.
    pub provider: Arc<dyn BinaryProvider>,
    /// The write-behind queue, for templates that have one.
    pub eventual: Option<EventualProvider>,
    /// The sharded store (its mounts, balancing), for the sharding templates.
    pub sharding: Option<ShardingProvider>,
    /// The read cache, where there is one.
    pub cache: Option<CachedProvider>,
}

impl fmt::Debug for Filestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filestore")
            .field("provider", &self.provider.to_string())
            .field("eventual", &self.eventual.is_some())
            .field("uploads", &self.provider.presigned_uploads().is_some())
            .field("signer", &self.provider.download_signer().is_some())
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
            sharding: None,
            cache: None,
        }
    }

    /// Removes what a crash left in this node's local staging (older than `grace`: another
    /// process may be writing newer files only when directories are shared). Staging in shared
    /// stores is left to garbage collection.
    pub async fn clean_local_staging(&self, grace: Duration) -> Result<u64> {
        let age = StagingAge {
            local: grace,
            shared: None,
        };
        self.provider.clean_staging(age).await
    }
}
