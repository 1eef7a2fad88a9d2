//! Cluster membership and the primary node. Every node registers itself in the database and
//! heart-beats; one node holds the primary lease (a leased lock) and renews it with each beat.
//! A node considers itself primary only while the lease it last wrote is safely unexpired, so
//! two nodes never both believe they are primary; when the primary stops beating, another node
//! takes the lease within `primary_lease_secs` plus one heartbeat. Cluster-wide tasks (garbage
//! collection, balancing) ask [`Cluster::is_primary`] first.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use stowage_core::Result;
use stowage_metadata::{Metadata, NodeRecord, now_ms};

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Time between heartbeats (`[cluster] heartbeat_secs`; 5 s; at least 1 s).
    pub heartbeat: Duration,
    /// How long the primary's lease lasts (`[cluster] primary_lease_secs`; 15 s; at least 2 s).
    pub primary_lease: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            primary_lease: Duration::from_secs(15),
        }
    }
}

/// Name of the primary's lease in the locks table.
const PRIMARY_LOCK: &str = "cluster:primary";
/// Nodes silent for this many heartbeats are dropped from the membership list.
const STALE_HEARTBEATS: i64 = 12;

/// One node's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    metadata: Metadata,
    node: NodeRecord,
    heartbeat: Duration,
    primary_lease: Duration,
    /// Until when (ms) this node may act as primary; 0 when it is not primary.
    primary_until: AtomicI64,
}

/// What `GET /api/system/cluster` shows.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeRecord>,
    pub primary: Option<String>,
    pub this_node: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Cluster {
    /// This node, not yet registered.
    pub fn new(
        metadata: Metadata,
        settings: &ClusterSettings,
        node_id: String,
        address: String,
    ) -> Self {
        let now = now_ms();
        Self {
            metadata,
            node: NodeRecord {
                id: node_id,
                address,
                version: env!("CARGO_PKG_VERSION").into(),
                started_ms: now,
                heartbeat_ms: now,
            },
            heartbeat: settings.heartbeat.max(Duration::from_secs(1)),
            primary_lease: settings.primary_lease.max(Duration::from_secs(2)),
            primary_until: AtomicI64::new(0),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Whether this node may run cluster-wide tasks now.
    pub fn is_primary(&self) -> bool {
        now_ms() < self.primary_until.load(Ordering::SeqCst)
    }

    /// One heartbeat: register, then take or renew the primary lease.
    pub async fn beat(&self) -> Result<()> {
        let now = now_ms();
        let node = NodeRecord {
            heartbeat_ms: now,
            ..self.node.clone()
        };
        self.metadata.heartbeat(&node).await?;
        let expires = now + ms(self.primary_lease);
        let holds = self
            .metadata
            .renew_lock(PRIMARY_LOCK, &self.node.id, expires)
            .await?
            || self
                .metadata
                .try_lock(PRIMARY_LOCK, &self.node.id, expires)
                .await?;
        // Act as primary for at most the lease minus one heartbeat: by then either the next
        // beat renewed it, or this node stops before anyone else can take over.
        let until = if holds {
            expires - ms(self.heartbeat)
        } else {
            0
        };
        let was = self.primary_until.swap(until, Ordering::SeqCst) > now;
        if holds && !was {
            tracing::info!(node = %self.node.id, "this node is now the primary");
        } else if !holds && was {
            tracing::warn!(node = %self.node.id, "this node is no longer the primary");
        }
        let stale = now - ms(self.heartbeat) * STALE_HEARTBEATS;
        self.metadata.remove_nodes("", stale).await
    }

    /// Heart-beats until the process ends; a failed beat (database away) drops the primary
    /// role and is retried at the next beat.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.heartbeat).await;
                if let Err(e) = this.beat().await {
                    this.primary_until.store(0, Ordering::SeqCst);
                    tracing::warn!(error = %e, "heartbeat failed; not acting as primary until it succeeds");
                }
            }
        })
    }

    /// Leaves the cluster on a clean shutdown: gives up the primary lease and deregisters.
    pub async fn leave(&self) {
        self.primary_until.store(0, Ordering::SeqCst);
        let _ = self.metadata.unlock(PRIMARY_LOCK, &self.node.id).await;
        let _ = self.metadata.remove_nodes(&self.node.id, 0).await;
    }

    /// The nodes and the primary.
    pub async fn status(&self) -> Result<ClusterStatus> {
        Ok(ClusterStatus {
            nodes: self.metadata.nodes().await?,
            primary: self.metadata.lock_owner(PRIMARY_LOCK).await?,
            this_node: self.node.id.clone(),
        })
    }
}
