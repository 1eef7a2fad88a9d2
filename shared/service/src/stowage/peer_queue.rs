//! The service's side of the cluster eventual queue: the ledger the queue keeps in the
//! database (copies, live nodes, upload claims), and the one door through which peers reach
//! this node's queue disk, opened by the cluster's secret only.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stowage_core::eventual::{EventualProvider, QueueLedger, QueueNode, QueuedCopy, StagedCopy};
use stowage_core::{
    ByteStream, Error, GetOptions, GetResult, ObjectMeta, PutOptions, PutResult, Result, Sha256,
};
use stowage_metadata::{Metadata, NodeRecord};

use super::Stowage;

/// The queue's ledger over the metadata store, for the node `node_id`.
#[derive(Debug)]
pub(crate) struct ClusterLedger {
    pub(crate) metadata: Metadata,
    pub(crate) node_id: String,
    /// Heartbeats older than this do not count as alive.
    pub(crate) liveness: Duration,
    /// How long an upload claim lasts unrenewed (the lock lease).
    pub(crate) lease: Duration,
}

fn queue_node(n: NodeRecord) -> QueueNode {
    QueueNode {
        id: n.id,
        address: n.address,
        zone: n.zone,
    }
}

fn claim_name(digest: &Sha256) -> String {
    format!("queue:{digest}")
}

#[async_trait]
impl QueueLedger for ClusterLedger {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn live_nodes(&self) -> Result<Vec<QueueNode>> {
        let nodes = self.metadata.live_nodes(self.liveness).await?;
        Ok(nodes.into_iter().map(queue_node).collect())
    }

    async fn holders(&self, digest: &Sha256) -> Result<Vec<QueueNode>> {
        let nodes = self.metadata.queue_holders(digest, self.liveness).await?;
        Ok(nodes.into_iter().map(queue_node).collect())
    }

    async fn copies(&self) -> Result<Vec<QueuedCopy>> {
        self.metadata.queue_copies().await
    }

    async fn record(&self, digest: &Sha256, size: u64, nodes: &[&str]) -> Result<()> {
        self.metadata.record_queue_copies(digest, size, nodes).await
    }

    async fn forget(&self, digest: &Sha256, node: Option<&str>) -> Result<()> {
        self.metadata.forget_queue_copies(digest, node).await
    }

    async fn claim(&self, digest: &Sha256) -> Result<bool> {
        // A claim this node still holds (an attempt cut short) is its own to take again.
        self.metadata
            .hold_lock(&claim_name(digest), &self.node_id, self.lease)
            .await
    }

    async fn renew(&self, digest: &Sha256) -> Result<bool> {
        self.metadata
            .renew_lock(&claim_name(digest), &self.node_id, self.lease)
            .await
    }

    async fn release(&self, digest: &Sha256) {
        if let Err(e) = self
            .metadata
            .unlock(&claim_name(digest), &self.node_id)
            .await
        {
            tracing::warn!(%digest, error = %e, "an upload claim was not given up; its lease ends it");
        }
    }

    fn claim_lease(&self) -> Duration {
        self.lease
    }
}

/// This node's queue disk as a peer reaches it: only through [`Stowage::peer_queue`], which
/// checks the cluster's secret.
#[derive(Debug)]
pub struct PeerQueueDoor<'a> {
    queue: &'a EventualProvider,
}

impl Stowage {
    /// Opens this node's queue to a peer that presents `key`, the cluster's secret (compared
    /// by its SHA-256, in constant time). A user's credentials never open it.
    pub fn peer_queue(&self, key: Option<&str>) -> Result<PeerQueueDoor<'_>> {
        let Some(expected) = &self.cluster_key_sha256 else {
            return Err(Error::Forbidden(
                "this node takes no queue copies from peers (no [cluster] secret, or not a \
                 cluster template)"
                    .into(),
            ));
        };
        let Some(key) = key else {
            return Err(Error::Unauthorized(
                "the peer endpoint needs the cluster's secret".into(),
            ));
        };
        if !crate::auth::secret_matches(key, expected) {
            return Err(Error::Forbidden(
                "the cluster's secret was not presented".into(),
            ));
        }
        match &self.eventual {
            Some(queue) if queue.is_clustered() => Ok(PeerQueueDoor { queue }),
            _ => Err(Error::Forbidden(
                "this node's filestore has no cluster queue".into(),
            )),
        }
    }
}

impl PeerQueueDoor<'_> {
    /// Stores a peer's copy, fsynced, in this node's queue.
    pub async fn store(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        self.queue.accept_peer_copy(body, opts).await
    }

    /// Stages a peer's copy of a quorum write, to be named by [`Self::commit`].
    pub async fn stage(&self, body: ByteStream, size: Option<u64>) -> Result<StagedCopy> {
        self.queue.stage_peer_copy(body, size).await
    }

    /// Names a staged copy `digest`, if its bytes arrived with the sender's `crc32c`; whether
    /// the copy is new.
    pub async fn commit(&self, id: &str, digest: &Sha256, crc32c: u32) -> Result<bool> {
        self.queue.commit_peer_copy(id, digest, crc32c).await
    }

    /// This node's copy of `digest`.
    pub async fn read(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        self.queue.local_copy(digest, opts).await
    }

    /// The size of this node's copy of `digest`.
    pub async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        self.queue.local_copy_meta(digest).await
    }

    /// Drops this node's copy of `digest`.
    pub async fn drop_copy(&self, digest: &Sha256) -> Result<()> {
        self.queue.drop_local_copy(digest).await
    }
}

/// Joins `queue` to the cluster through the ledger of `metadata` for `node_id`.
pub(crate) fn join(
    queue: &EventualProvider,
    metadata: &Metadata,
    node_id: &str,
    liveness: Duration,
    lease: Duration,
) {
    if queue.is_clustered() {
        queue.join_cluster(Arc::new(ClusterLedger {
            metadata: metadata.clone(),
            node_id: node_id.to_string(),
            liveness,
            lease,
        }));
    }
}
