//! What `/api/storageinfo` shows, gathered in one place: the metadata's counts and sizes, the
//! filestore's health, and the figures of the queue, the shards and the caches.

use stowage_core::cache::CacheStats;
use stowage_core::eventual::{ClusterQueueStats, QueueStats};
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
    /// The cluster queue's copies per node, from the ledger (cluster templates).
    pub cluster_queue: Option<ClusterQueueStats>,
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

/// The figures of this node that cost no scan of the metadata: what the metrics endpoint shows
/// on every scrape.
#[derive(Debug, Clone)]
pub struct NodeFigures {
    pub health: std::result::Result<Health, String>,
    pub queue: Option<QueueStats>,
    pub shards: Option<ShardsReport>,
    pub cache: Option<CacheStats>,
    pub artifact_cache: Option<ArtifactCacheStats>,
    /// The writer's and the reader's pool: (open, idle) connections.
    pub pools: [(u32, u32); 2],
}

/// Whether this node can take traffic, part by part (`None`: it has no such part). Each part
/// gets [`READINESS_TIMEOUT`] to answer.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub database: std::result::Result<(), String>,
    pub backend: std::result::Result<(), String>,
    pub queue: Option<std::result::Result<(), String>>,
    pub locks: std::result::Result<(), String>,
}

impl Readiness {
    /// Whether every part answered.
    pub fn is_ready(&self) -> bool {
        self.database.is_ok()
            && self.backend.is_ok()
            && self.locks.is_ok()
            && self.queue.as_ref().is_none_or(|q| q.is_ok())
    }
}

/// How long each part of a readiness check may take (a database that is away would otherwise
/// hold the answer for the pool's whole acquire timeout).
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn within<T>(
    work: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(READINESS_TIMEOUT, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {READINESS_TIMEOUT:?}")),
    }
}

impl Stowage {
    /// Whether this node can take traffic: the database, the backend, the queue's disk and
    /// the lock service each asked, with a time limit.
    pub async fn readiness(&self) -> Readiness {
        let database = within(self.metadata.ping());
        let backend = within(async { self.provider.health().await.map(|_| ()) });
        let locks = within(async {
            self.locks
                .gc_witness(&Self::gc_removals())
                .await
                .map(|_| ())
        });
        let queue = async {
            match &self.eventual {
                Some(eventual) => Some(within(async { eventual.stats().await.map(|_| ()) }).await),
                None => None,
            }
        };
        let (database, backend, locks, queue) = tokio::join!(database, backend, locks, queue);
        Readiness {
            database,
            backend,
            queue,
            locks,
        }
    }

    /// This node's live figures (administrators only): no scan of the metadata.
    pub async fn node_figures(&self, caller: &Caller) -> Result<NodeFigures> {
        self.security.require_admin(caller, "read the metrics")?;
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
        Ok(NodeFigures {
            health,
            queue,
            shards,
            cache: self.cache_stats(),
            artifact_cache: self.metadata.artifact_cache_stats(),
            pools: self.metadata.pool_figures(),
        })
    }

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
            cluster_queue: match &self.eventual {
                Some(eventual) => eventual.cluster_stats().await?,
                None => None,
            },
            shards,
            cache: self.cache_stats(),
            artifact_cache: self.metadata.artifact_cache_stats(),
        })
    }
}
