//! Cluster membership and the primary node. Every node registers itself in the database and
//! heart-beats; one node holds the primary lease (a leased lock) and renews it with each beat.
//! When the primary stops beating, another node takes the lease within `primary_lease_secs`
//! plus one heartbeat. Cluster-wide tasks (garbage collection, balancing) ask
//! [`Cluster::is_primary`] first.
//!
//! No node's wall clock takes part, so a skewed one cannot make two primaries: the lease's
//! expiry and every takeover are judged by the database's clock, and a node counts its own
//! time as primary on its monotonic clock from the moment it *sent* the request that took or
//! renewed the lease, for the lease minus one heartbeat. The database set the expiry no
//! earlier than that moment plus the lease, so the node stops believing it is primary before
//! anyone else can take over, however far its wall clock is off (clocks drift apart in rate
//! by parts per million, which the heartbeat's margin covers many times over).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stowage_core::Result;
use stowage_metadata::{Metadata, NodeRecord, now_ms};
use tokio::time::Instant;

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Time between heartbeats (`[cluster] heartbeat_secs`; 5 s; at least 1 s).
    pub heartbeat: Duration,
    /// How long the primary's lease lasts (`[cluster] primary_lease_secs`; 15 s; at least 2 s).
    pub primary_lease: Duration,
    /// This node's zone (`[cluster] zone`; none): the cluster queue puts copies in other
    /// zones first.
    pub zone: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            primary_lease: Duration::from_secs(15),
            zone: String::new(),
        }
    }
}

/// Name of the primary's lease in the locks table.
const PRIMARY_LOCK: &str = "cluster:primary";
/// Nodes silent for this many heartbeats are dropped from the membership list.
const STALE_HEARTBEATS: u32 = 12;

/// One node's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    metadata: Metadata,
    node: NodeRecord,
    heartbeat: Duration,
    primary_lease: Duration,
    /// Until when, on this node's monotonic clock, it may act as primary; `None` when it is
    /// not primary.
    primary_until: Mutex<Option<Instant>>,
}

/// What `GET /api/system/cluster` shows.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeRecord>,
    pub primary: Option<String>,
    pub this_node: String,
    /// Whether this node believes it is primary now (what its tasks go by).
    pub this_node_primary: bool,
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
                zone: settings.zone.clone(),
            },
            heartbeat: settings.heartbeat.max(Duration::from_secs(1)),
            primary_lease: settings.primary_lease.max(Duration::from_secs(2)),
            primary_until: Mutex::new(None),
        }
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.primary_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Whether this node may run cluster-wide tasks now.
    pub fn is_primary(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    /// One heartbeat: register, then take or renew the primary lease.
    pub async fn beat(&self) -> Result<()> {
        self.metadata.heartbeat(&self.node).await?;
        // Taken before the request: the database's expiry is at least this plus the lease.
        let sent = Instant::now();
        let holds = self
            .metadata
            .hold_lock(PRIMARY_LOCK, &self.node.id, self.primary_lease)
            .await?;
        // Act as primary for at most the lease minus one heartbeat: by then either the next
        // beat renewed it, or this node stops before anyone else can take over.
        let until = holds.then(|| sent + self.primary_lease.saturating_sub(self.heartbeat));
        let was = {
            let mut slot = self.until();
            let was = slot.is_some_and(|u| Instant::now() < u);
            *slot = until;
            was
        };
        if holds && !was {
            tracing::info!(node = %self.node.id, "this node is now the primary");
        } else if !holds && was {
            tracing::warn!(node = %self.node.id, "this node is no longer the primary");
        }
        self.metadata
            .remove_silent_nodes(self.heartbeat * STALE_HEARTBEATS)
            .await
    }

    /// Stops acting as primary until a beat takes the lease again.
    fn step_down(&self) {
        *self.until() = None;
    }

    /// Heart-beats until the process ends; a failed beat (database away) drops the primary
    /// role and is retried at the next beat.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.heartbeat).await;
                if let Err(e) = this.beat().await {
                    this.step_down();
                    tracing::warn!(error = %e, "heartbeat failed; not acting as primary until it succeeds");
                }
            }
        })
    }

    /// Leaves the cluster on a clean shutdown: gives up the primary lease and deregisters.
    pub async fn leave(&self) {
        self.step_down();
        let _ = self.metadata.unlock(PRIMARY_LOCK, &self.node.id).await;
        let _ = self.metadata.remove_node(&self.node.id).await;
    }

    /// The nodes and the primary.
    pub async fn status(&self) -> Result<ClusterStatus> {
        Ok(ClusterStatus {
            nodes: self.metadata.nodes().await?,
            primary: self.metadata.lock_owner(PRIMARY_LOCK).await?,
            this_node: self.node.id.clone(),
            this_node_primary: self.is_primary(),
        })
    }
}
