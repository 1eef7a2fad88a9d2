//! What `/api/storageinfo` shows, gathered in one place: the metadata's counts and sizes, the
//! filestore's health, and the figures of the queue, the shards and the caches.

use stowage_core::cache::CacheStats;
use stowage_core::eventual::QueueStats;
use stowage_core::sharding::{BalanceProgress, MountStatus};
use stowage_core::{Health, Result};
use stowage_metadata::StorageSummary;
use stowage_metadata::cache::ArtifactCacheStats;

use super::Stowage;
use crate::security::Caller;

/// The storage figures of this node's view.
#[derive(Debug, Clone)]
pub struct StorageReport {
    pub summary: StorageSummary,
    /// The filestore chain, as it names itself (`s3:bucket/prefix`, `fs:/dir`, …).
    pub provider: String,
    /// The filestore's space; `Err` with the reason when it cannot be asked now (storage
    /// info must still answer then: that is when it is needed most).
    pub health: std::result::Result<Health, String>,
    pub queue: Option<QueueStats>,
    pub shards: Option<ShardsReport>,
    pub cache: Option<CacheStats>,
    pub artifact_cache: Option<ArtifactCacheStats>,
}

/// The sharded store's figures.
#[derive(Debug, Clone)]
pub struct ShardsReport {
    pub redundancy: usize,
    pub lenient_limit: usize,
    pub mounts: Vec<MountStatus>,
    pub balancing: BalanceProgress,
}

impl Stowage {
    /// The storage figures (`/api/storageinfo`).
    pub async fn storage_report(&self, caller: &Caller) -> Result<StorageReport> {
        self.security
            .require_admin(caller, "read the storage report")?;
        let summary = self.metadata.storage_summary().await?;
        let health = self.provider.health().await.map_err(|e| e.to_string());
        let queue = self.queue_stats().await?;
        let shards = match &self.sharding {
            Some(sharding) => Some(ShardsReport {
                redundancy: sharding.redundancy(),
                lenient_limit: sharding.lenient_limit(),
                mounts: sharding.mount_status().await,
                balancing: sharding.balance_progress(),
            }),
            None => None,
        };
        Ok(StorageReport {
            summary,
            provider: self.provider.to_string(),
            health,
            queue,
            shards,
            cache: self.cache_stats(),
            artifact_cache: self.metadata.artifact_cache_stats(),
        })
    }
}
