//! The cluster eventual queue (`cluster-s3-storage-v3`, `cluster-google-storage`,
//! `cluster-azure-blob-storage`), Artifactory's sharding-cluster over eventual caches: each node
//! keeps its own small queue disk, and an upload is written to the receiving node's disk and
//! streamed to `redundancy − 1` live peers at once (through the one quorum writer). It is
//! acknowledged once `lenientLimit` of those copies are fsynced, each on the node that holds
//! it, and recorded in the database's ledger ([`QueueLedger`]).
//!
//! - **One uploader at a time.** A node uploads a queued binary only under the binary's lease
//!   in the database (`queue:<sha256>`, taken like `FOR UPDATE SKIP LOCKED`: a claimed binary
//!   is skipped, never waited for), renewed while the upload runs. When a node dies its lease
//!   runs out and a peer that holds a copy uploads the binary from its own disk.
//! - **A copy leaves a disk only after the object store confirmed**: the uploader forgets the
//!   copies in the ledger and asks each holder to drop its copy; a holder that missed that
//!   finds, at its next scan, a copy nobody records, and drops it once the store has it.
//! - **Any node serves a queued binary**: its own copy, else a live holder's (streamed through
//!   the peer endpoint), else the object store's.
//! - **A lost queue disk**: a node forgets the copies the ledger records for it that its disk
//!   no longer has (at every scan, so also when it rejoins), and the live holders of a binary
//!   that has fewer than `redundancy` live copies push one to another live node (the holder
//!   first by id does it, so that two holders do not both).
//!
//! Peers are reached through a [`PeerLink`] (the HTTP client of the internal endpoint, which
//! only the cluster's secret opens); the ledger is the service's, over the metadata store.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::EventualProvider;
use crate::{BinaryProvider, BinaryProviderExt as _, Error, ObjectMeta, Result, Sha256};

/// A node of the cluster, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNode {
    pub id: String,
    /// Where its internal endpoint listens (`host:port`).
    pub address: String,
    /// Its zone; empty when none is set.
    pub zone: String,
}

/// One node's copy of a queued binary, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCopy {
    pub sha256: Sha256,
    pub node: String,
    pub size: u64,
    /// When it was recorded, in ms since the epoch (the database's clock).
    pub queued_ms: i64,
}

/// The cluster's record of queued copies, of live nodes and of upload claims: the service's,
/// over the metadata store.
#[async_trait]
pub trait QueueLedger: Send + Sync + fmt::Debug {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The nodes heart-beating now, this one included, by id.
    async fn live_nodes(&self) -> Result<Vec<QueueNode>>;
    /// The live nodes recorded as holding a copy of `digest`, by id.
    async fn holders(&self, digest: &Sha256) -> Result<Vec<QueueNode>>;
    /// Every recorded copy.
    async fn copies(&self) -> Result<Vec<QueuedCopy>>;
    /// Records that `nodes` hold a durable copy of `digest`.
    async fn record(&self, digest: &Sha256, size: u64, nodes: &[&str]) -> Result<()>;
    /// Forgets `node`'s copy of `digest`, or every copy (`None`: the store has it).
    async fn forget(&self, digest: &Sha256, node: Option<&str>) -> Result<()>;
    /// Takes the upload of `digest` for this node, unless a live lease of another's holds it.
    async fn claim(&self, digest: &Sha256) -> Result<bool>;
    /// Extends this node's claim; `false` when it lost it.
    async fn renew(&self, digest: &Sha256) -> Result<bool>;
    /// Gives the claim up.
    async fn release(&self, digest: &Sha256);
    /// How long a claim lasts unrenewed.
    fn claim_lease(&self) -> Duration;
}

/// How this node reaches the queue disks of its peers.
pub trait PeerLink: Send + Sync + fmt::Debug {
    /// `node`'s queue as a provider: a put stores a copy there (acknowledged once fsynced),
    /// reads and deletes touch only that copy.
    fn queue_of(&self, node: &QueueNode) -> Arc<dyn BinaryProvider>;
}

/// The cluster part of `[filestore.eventual]`.
#[derive(Debug, Clone)]
pub struct ClusterQueueSettings {
    /// Copies of each queued binary, on as many nodes (`redundancy`; 2).
    pub redundancy: usize,
    /// Copies that must be durable before an upload is acknowledged (`lenientLimit`; 0 means
    /// `redundancy`).
    pub lenient_limit: usize,
    /// How the peers are reached.
    pub link: Arc<dyn PeerLink>,
    /// The nodes' copies are the store itself (`cluster-file-system`): nothing is uploaded,
    /// the copies stay, and the scans keep `redundancy` of them on live nodes (balancing).
    pub keeps_copies: bool,
}

/// A node's queue figures, from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQueueStats {
    pub node: String,
    /// Copies the node holds.
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_secs: Option<u64>,
    /// Whether it heart-beats now.
    pub live: bool,
}

/// The cluster's queue figures, for `/api/storageinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterQueueStats {
    pub redundancy: usize,
    pub lenient_limit: usize,
    /// Queued binaries (anywhere in the cluster).
    pub binaries: u64,
    /// Queued binaries with fewer than `redundancy` copies on live nodes.
    pub under_replicated: u64,
    /// Per node, by id.
    pub nodes: Vec<NodeQueueStats>,
}

/// A peer's upload staged here (fsynced, hashed with SHA-256) and waiting for the sender's
/// word that its digest checked out.
struct PeerStaged {
    staged: Box<dyn crate::StagedBinary>,
    crc32c: u32,
    since: std::time::Instant,
}

impl fmt::Debug for PeerStaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStaged")
            .field("crc32c", &self.crc32c)
            .finish_non_exhaustive()
    }
}

/// How long a peer's staged copy waits for its commit before it is dropped.
const PEER_STAGED_FOR: Duration = Duration::from_secs(600);

/// What a peer's staged copy is, as this node answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedCopy {
    /// What the commit names.
    pub id: String,
    /// The CRC-32C of the bytes this node received, which the sender matches against its own
    /// before it names the copy.
    pub crc32c: u32,
    pub size: u64,
}

/// The cluster part of an eventual provider.
#[derive(Debug)]
pub(super) struct ClusterPart {
    pub(super) settings: ClusterQueueSettings,
    pub(super) ledger: std::sync::OnceLock<Arc<dyn QueueLedger>>,
    /// Peers' uploads staged here, by id, until their commit.
    peer_staged: std::sync::Mutex<HashMap<String, PeerStaged>>,
    /// Peers are chosen in turn, so that copies spread.
    turn: AtomicUsize,
    /// A repair pass runs (at most one at a time).
    repairing: Arc<AtomicBool>,
}

impl ClusterPart {
    pub(super) fn new(settings: ClusterQueueSettings) -> Result<Self> {
        if settings.redundancy == 0 {
            return Err(Error::InvalidInput(
                "eventual redundancy must be at least 1".into(),
            ));
        }
        let lenient_limit = match settings.lenient_limit {
            0 => settings.redundancy,
            n if n <= settings.redundancy => n,
            n => {
                return Err(Error::InvalidInput(format!(
                    "eventual lenientLimit is {n} but redundancy is {}; it must be between 0 \
                     (all copies) and redundancy",
                    settings.redundancy
                )));
            }
        };
        Ok(Self {
            settings: ClusterQueueSettings {
                lenient_limit,
                ..settings
            },
            ledger: std::sync::OnceLock::new(),
            peer_staged: std::sync::Mutex::default(),
            turn: AtomicUsize::new(0),
            repairing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `want` live peers for a new copy, other zones than this node's first, in turn.
    fn choose(
        &self,
        live: &[QueueNode],
        me: &str,
        exclude: &[String],
        want: usize,
    ) -> Vec<QueueNode> {
        let my_zone = live.iter().find(|n| n.id == me).map(|n| n.zone.as_str());
        let mut candidates: Vec<&QueueNode> = live
            .iter()
            .filter(|n| n.id != me && !exclude.contains(&n.id))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
        candidates.rotate_left(turn);
        // Stable: the turn's order holds within each group.
        candidates.sort_by_key(|n| !n.zone.is_empty() && Some(n.zone.as_str()) == my_zone);
        candidates.into_iter().take(want).cloned().collect()
    }
}

/// What one attempt at a queued binary came to.
#[derive(Debug)]
pub(super) enum Attempt {
    /// The store has it and this node's copy is gone.
    Done,
    /// Another node holds the claim: not this node's turn.
    ClaimedElsewhere,
}

impl EventualProvider {
    /// Joins the cluster queue through `ledger` (once; later calls are ignored). Until then a
    /// cluster queue refuses uploads.
    pub fn join_cluster(&self, ledger: Arc<dyn QueueLedger>) {
        if let Some(cluster) = &self.inner.cluster {
            let _ = cluster.ledger.set(ledger);
        }
    }

    /// Whether the nodes' copies are the store (`cluster-file-system`), not a queue.
    pub fn keeps_copies(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_some_and(|c| c.settings.keeps_copies)
    }

    /// Every binary the ledger records on another node (one entry each), for listings.
    pub(super) async fn cluster_listing(&self) -> Result<Vec<ObjectMeta>> {
        let Some((_, ledger)) = self.ledger() else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        Ok(ledger
            .copies()
            .await?
            .into_iter()
            .filter(|c| c.node != ledger.node_id() && seen.insert(c.sha256))
            .map(|c| ObjectMeta {
                digest: c.sha256,
                size: c.size,
                last_modified: SystemTime::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(c.queued_ms).unwrap_or(0)),
            })
            .collect())
    }

    /// Whether this queue spreads its copies over the cluster's nodes.
    pub fn is_clustered(&self) -> bool {
        self.inner.cluster.is_some()
    }

    pub(super) fn ledger(&self) -> Option<(&ClusterPart, &Arc<dyn QueueLedger>)> {
        let cluster = self.inner.cluster.as_ref()?;
        cluster.ledger.get().map(|ledger| (cluster, ledger))
    }

    /// The peers to write a new upload's other copies to, and their providers.
    pub(super) async fn peers_for_upload(
        &self,
        cluster: &ClusterPart,
        ledger: &Arc<dyn QueueLedger>,
    ) -> Result<Vec<(QueueNode, Arc<dyn BinaryProvider>)>> {
        let live = ledger.live_nodes().await?;
        let want = cluster.settings.redundancy.saturating_sub(1);
        Ok(cluster
            .choose(&live, ledger.node_id(), &[], want)
            .into_iter()
            .map(|node| {
                let queue = cluster.settings.link.queue_of(&node);
                (node, queue)
            })
            .collect())
    }

    /// An upload in a cluster queue: this node's queue directory and `redundancy − 1` live
    /// peers' at once, acknowledged at `lenientLimit` durable copies, which the ledger records
    /// before the answer.
    pub(super) async fn put_clustered(
        &self,
        body: crate::ByteStream,
        opts: crate::PutOptions,
    ) -> Result<crate::PutResult> {
        let Some((cluster, ledger)) = self.ledger() else {
            return Err(Error::Unavailable(
                "this node has not joined the cluster queue yet".into(),
            ));
        };
        let peers = self.peers_for_upload(cluster, ledger).await?;
        let me = ledger.node_id();
        let mut targets: Vec<&dyn BinaryProvider> = vec![&self.inner.queues[0]];
        targets.extend(peers.iter().map(|(_, p)| p.as_ref()));
        let names: Vec<&str> = std::iter::once(me)
            .chain(peers.iter().map(|(n, _)| n.id.as_str()))
            .collect();
        let guard = self
            .inner
            .take_back
            .get()
            .map(|g| g.as_ref() as &dyn crate::quorum::TakeBack);
        let limit = cluster.settings.lenient_limit;
        let quorum =
            crate::quorum::put_quorum(&targets, body, &opts, limit, super::FAN_OUT, guard).await;
        let failed: Vec<String> = quorum
            .failures
            .iter()
            .map(|(i, e)| format!("{}: {e}", names[*i]))
            .collect();
        match quorum.outcome {
            Ok(result) => {
                let holders: Vec<&str> = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !quorum.failures.iter().any(|(f, _)| f == i))
                    .map(|(_, n)| *n)
                    .collect();
                let digest = result.checksums.sha256;
                // Recorded before the answer: from now on any node finds the copies.
                ledger.record(&digest, result.size, &holders).await?;
                if holders.len() < cluster.settings.redundancy {
                    tracing::warn!(%digest, copies = holders.len(),
                        redundancy = cluster.settings.redundancy, failed = ?failed,
                        "an upload was acknowledged under-replicated; the copies are restored when nodes return");
                }
                // cluster-file-system uploads nothing: no dispatcher to hand it to.
                if holders.first() == Some(&me) && !cluster.settings.keeps_copies {
                    self.lock_state().fresh.push_back(ObjectMeta {
                        digest,
                        size: result.size,
                        last_modified: SystemTime::now(),
                    });
                    self.inner.wake.notify_one();
                }
                Ok(result)
            }
            Err(crate::quorum::Refused::Request(e)) => Err(e),
            Err(crate::quorum::Refused::TooFewCopies) => Err(Error::Storage {
                backend: self.to_string(),
                key: "-".into(),
                source: format!(
                    "only {} of {} copies of the upload were stored ({} live peers) and \
                     lenientLimit is {limit}: {}",
                    quorum.stored,
                    cluster.settings.redundancy,
                    peers.len(),
                    if failed.is_empty() {
                        "not enough live nodes".to_string()
                    } else {
                        failed.join("; ")
                    }
                )
                .into(),
                retryable: true,
            }),
        }
    }

    /// A delete in a cluster queue: the holders' copies too (those away now are dropped by
    /// their own scans once the store has the binary, or uploaded again and then collected),
    /// and the ledger's rows.
    pub(super) async fn delete_in_cluster(&self, digest: &Sha256) -> Result<()> {
        let Some((cluster, ledger)) = self.ledger() else {
            return Ok(());
        };
        for holder in ledger.holders(digest).await? {
            if holder.id == ledger.node_id() {
                continue;
            }
            if let Err(e) = cluster.settings.link.queue_of(&holder).delete(digest).await {
                tracing::warn!(%digest, peer = %holder.id, error = %e, "a peer's queued copy was not deleted");
            }
        }
        ledger.forget(digest, None).await
    }

    /// A peer's copy of `digest`, when the ledger knows a live holder other than this node.
    pub(super) async fn read_from_peers<T, F, Fut>(&self, digest: &Sha256, read: F) -> Option<T>
    where
        F: Fn(Arc<dyn BinaryProvider>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (cluster, ledger) = self.ledger()?;
        let holders = match ledger.holders(digest).await {
            Ok(holders) => holders,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot ask the ledger who holds a queued binary");
                return None;
            }
        };
        for node in holders.iter().filter(|n| n.id != ledger.node_id()) {
            match read(cluster.settings.link.queue_of(node)).await {
                Ok(found) => return Some(found),
                Err(Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(%digest, peer = %node.id, error = %e,
                    "reading a queued binary from a peer failed"),
            }
        }
        None
    }

    /// Whether the ledger records a copy of `digest` on any live node.
    pub(super) async fn queued_in_cluster(&self, digest: &Sha256) -> Result<bool> {
        match self.ledger() {
            Some((_, ledger)) => Ok(!ledger.holders(digest).await?.is_empty()),
            None => Ok(false),
        }
    }

    /// One attempt, under the binary's claim, at a binary this node holds.
    pub(super) async fn attempt_claimed(
        &self,
        ledger: &Arc<dyn QueueLedger>,
        meta: &ObjectMeta,
    ) -> Result<Attempt> {
        let digest = meta.digest;
        if !ledger.claim(&digest).await? {
            return Ok(Attempt::ClaimedElsewhere);
        }
        let outcome = self.upload_claimed(ledger, meta).await;
        ledger.release(&digest).await;
        outcome.map(|()| Attempt::Done)
    }

    async fn upload_claimed(&self, ledger: &Arc<dyn QueueLedger>, meta: &ObjectMeta) -> Result<()> {
        let digest = meta.digest;
        let me = ledger.node_id();
        let holders = ledger.holders(&digest).await?;
        // A copy no row records is either one whose binary another node uploaded (and forgot),
        // or one whose upload was never acknowledged: once the store has it, it may go.
        if !holders.iter().any(|h| h.id == me) && self.inner.backend.exists(&digest).await? {
            for queue in &self.inner.queues {
                queue.delete(&digest).await?;
            }
            return Ok(());
        }
        let lease = ledger.claim_lease();
        let renew = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                if !ledger.renew(&digest).await.unwrap_or(false) {
                    tracing::warn!(%digest, "the claim on a queued binary was lost while uploading it");
                }
            }
        };
        tokio::select! {
            uploaded = self.upload(meta) => uploaded?,
            () = renew => {}
        }
        // The store confirmed: no copy is needed any more, anywhere.
        ledger.forget(&digest, None).await?;
        if let Some((cluster, _)) = self.ledger() {
            for holder in holders.iter().filter(|h| h.id != me) {
                if let Err(e) = cluster.settings.link.queue_of(holder).delete(&digest).await {
                    tracing::debug!(%digest, peer = %holder.id, error = %e,
                        "a peer's queued copy was not dropped now; its next scan drops it");
                }
            }
        }
        Ok(())
    }

    /// What a scan does beside uploading: forgets the copies the ledger records for this node
    /// that its disk no longer has, and starts a repair of the binaries this node holds that
    /// have fewer than `redundancy` live copies. Returns the number of those.
    pub(super) async fn tend_cluster(&self, local: &HashMap<Sha256, ObjectMeta>) -> Result<u64> {
        let Some((cluster, ledger)) = self.ledger() else {
            return Ok(0);
        };
        let me = ledger.node_id().to_string();
        let copies = ledger.copies().await?;
        let live = live_ids(ledger.as_ref()).await?;
        let mut holders: HashMap<Sha256, Vec<String>> = HashMap::new();
        for copy in &copies {
            // A copy's file is written before its row, so a row whose file is missing now
            // (not merely missing from the listing made before the rows were read) lost it.
            if copy.node == me
                && !local.contains_key(&copy.sha256)
                && !self.holds_locally(&copy.sha256).await
            {
                tracing::warn!(digest = %copy.sha256,
                    "the ledger records a queued copy this node's queue disk does not have \
                     (the disk was lost or emptied); it is forgotten and the peers restore it");
                ledger.forget(&copy.sha256, Some(&me)).await?;
                continue;
            }
            if live.contains(&copy.node) {
                holders
                    .entry(copy.sha256)
                    .or_default()
                    .push(copy.node.clone());
            }
        }
        if cluster.settings.keeps_copies {
            // The disk is the store: a copy no row records for this node (a node that joins
            // with a filled disk, a record that failed) is adopted, so that it counts.
            let mine: HashSet<Sha256> = copies
                .iter()
                .filter(|c| c.node == me)
                .map(|c| c.sha256)
                .collect();
            for meta in local
                .values()
                .filter(|m| !mine.contains(&m.digest) && settled(m))
            {
                ledger.record(&meta.digest, meta.size, &[&me]).await?;
                holders.entry(meta.digest).or_default().push(me.clone());
            }
        }
        let redundancy = cluster.settings.redundancy;
        let under: Vec<(Sha256, Vec<String>)> = holders
            .into_iter()
            .filter(|(_, nodes)| nodes.len() < redundancy)
            .collect();
        let count = under.len() as u64;
        // Repaired by the live holder first by id, from its own disk.
        let mine: Vec<(ObjectMeta, Vec<String>)> = under
            .into_iter()
            .filter(|(_, nodes)| nodes.iter().min() == Some(&me))
            .filter_map(|(digest, nodes)| local.get(&digest).map(|m| (m.clone(), nodes)))
            // A copy just written may not be recorded by its writer yet: its binary is not
            // under-replicated, only young.
            .filter(|(m, _)| settled(m))
            .collect();
        if !mine.is_empty() && !cluster.repairing.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            let repairing = Arc::clone(&cluster.repairing);
            tokio::spawn(async move {
                this.repair(mine).await;
                repairing.store(false, Ordering::Release);
            });
        }
        Ok(count)
    }

    async fn holds_locally(&self, digest: &Sha256) -> bool {
        tokio::fs::try_exists(self.inner.queues[0].path_of(digest))
            .await
            .unwrap_or(true)
    }

    /// Pushes a copy of each binary to live nodes that do not hold one, until it has
    /// `redundancy` live copies (as far as there are live nodes).
    async fn repair(&self, binaries: Vec<(ObjectMeta, Vec<String>)>) {
        let Some((cluster, ledger)) = self.ledger() else {
            return;
        };
        let Ok(live) = ledger.live_nodes().await else {
            return;
        };
        let me = ledger.node_id();
        for (meta, holders) in binaries {
            let want = cluster.settings.redundancy.saturating_sub(holders.len());
            let path = self.inner.queues[0].path_of(&meta.digest);
            for peer in cluster.choose(&live, me, &holders, want) {
                let pushed = cluster
                    .settings
                    .link
                    .queue_of(&peer)
                    .put_file(&path, &meta.digest, meta.size)
                    .await;
                match pushed {
                    Ok(_) => {
                        if let Err(e) = ledger.record(&meta.digest, meta.size, &[&peer.id]).await {
                            tracing::warn!(digest = %meta.digest, error = %e, "a restored copy was not recorded");
                        } else {
                            tracing::info!(digest = %meta.digest, peer = %peer.id,
                                "a queued binary's redundancy was restored on a peer");
                        }
                    }
                    Err(e) => tracing::warn!(digest = %meta.digest, peer = %peer.id, error = %e,
                        "restoring a queued binary's redundancy on a peer failed; the next scan tries again"),
                }
            }
        }
    }

    /// The cluster's queue figures, from the ledger.
    pub async fn cluster_stats(&self) -> Result<Option<ClusterQueueStats>> {
        let Some((cluster, ledger)) = self.ledger() else {
            return Ok(None);
        };
        let copies = ledger.copies().await?;
        let live = live_ids(ledger.as_ref()).await?;
        let now = system_ms(SystemTime::now());
        let mut nodes: Vec<NodeQueueStats> = live
            .iter()
            .map(|id| NodeQueueStats {
                node: id.clone(),
                live: true,
                ..NodeQueueStats::default()
            })
            .collect();
        let mut live_copies: HashMap<Sha256, usize> = HashMap::new();
        for copy in &copies {
            let entry = match nodes.iter_mut().position(|n| n.node == copy.node) {
                Some(i) => &mut nodes[i],
                None => {
                    nodes.push(NodeQueueStats {
                        node: copy.node.clone(),
                        live: false,
                        ..NodeQueueStats::default()
                    });
                    nodes.last_mut().expect("just pushed")
                }
            };
            entry.depth += 1;
            entry.bytes += copy.size;
            let age = u64::try_from((now - copy.queued_ms).max(0) / 1000).unwrap_or(0);
            entry.oldest_age_secs = Some(entry.oldest_age_secs.map_or(age, |a| a.max(age)));
            let counted = live_copies.entry(copy.sha256).or_default();
            if live.contains(&copy.node) {
                *counted += 1;
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let redundancy = cluster.settings.redundancy;
        Ok(Some(ClusterQueueStats {
            redundancy,
            lenient_limit: cluster.settings.lenient_limit,
            binaries: live_copies.len() as u64,
            under_replicated: live_copies.values().filter(|&&n| n < redundancy).count() as u64,
            nodes,
        }))
    }

    /// Stores a copy a peer sends (the peer endpoint): fsynced in this node's queue, and left
    /// for the sender's node to record and upload (this node's scans upload it when the
    /// sender does not).
    pub async fn accept_peer_copy(
        &self,
        body: crate::ByteStream,
        opts: crate::PutOptions,
    ) -> Result<crate::PutResult> {
        self.inner.queues[0].put_opts(body, opts).await
    }

    /// Stages a peer's upload (the first half of a quorum write's copy on this node): written
    /// and fsynced in this node's queue directory while its CRC-32C is computed, and named only
    /// by [`Self::commit_peer_copy`], once the sender has checked the digests of what it sent
    /// and that this node received the same bytes. No cryptographic digest is computed here:
    /// the sender hashed all three once, for every copy; whether the bytes arrived as sent is
    /// a transfer check, which CRC-32C (what S3 and GCS check transfers by) does at a twentieth
    /// of SHA-256's cost.
    pub async fn stage_peer_copy(
        &self,
        body: crate::ByteStream,
        size: Option<u64>,
    ) -> Result<StagedCopy> {
        use futures::StreamExt as _;
        let Some(cluster) = &self.inner.cluster else {
            return Err(Error::Unsupported("this queue takes no peer copies".into()));
        };
        let hasher = Arc::new(std::sync::Mutex::new((0u32, 0u64)));
        let feed = Arc::clone(&hasher);
        let body = body
            .map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    let mut h = feed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    h.0 = crc32c::crc32c_append(h.0, bytes);
                    h.1 += bytes.len() as u64;
                }
                chunk
            })
            .boxed();
        let queue = &self.inner.queues[0];
        // An upload queue's peer copy is read only if this node's sender dies before the store
        // has the binary: it is written around the page cache. cluster-file-system's copies
        // are the store, read by downloads: cached.
        let staged = if cluster.settings.keeps_copies {
            crate::Stager::stage(queue, body, size).await?
        } else {
            queue.stage_uncached(body, size).await?
        };
        let (crc32c, received) = *hasher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(size) = size
            && received != size
        {
            return Err(Error::Truncated {
                expected: size,
                received,
            });
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let mut waiting = cluster
            .peer_staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Copies whose sender never committed them (it crashed, or the write was refused).
        waiting.retain(|_, s| s.since.elapsed() < PEER_STAGED_FOR);
        waiting.insert(
            id.clone(),
            PeerStaged {
                staged,
                crc32c,
                since: std::time::Instant::now(),
            },
        );
        Ok(StagedCopy {
            id,
            crc32c,
            size: received,
        })
    }

    /// Names a staged peer copy `digest` (the sender's word that the digests checked out);
    /// refused when the bytes received here have another CRC-32C than the `crc32c` the sender
    /// sent. Returns whether the copy is new.
    pub async fn commit_peer_copy(&self, id: &str, digest: &Sha256, crc32c: u32) -> Result<bool> {
        let staged = self.inner.cluster.as_ref().and_then(|c| {
            c.peer_staged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(id)
        });
        let Some(staged) = staged else {
            return Err(Error::NotFound {
                what: format!(
                    "staged peer copy {id:?} (it waited too long, or this node restarted)"
                ),
            });
        };
        if staged.crc32c != crc32c {
            return Err(Error::InvalidInput(format!(
                "the staged copy has CRC-32C {:08x} here, not the {crc32c:08x} that was sent: \
                 it was damaged on the way and is dropped",
                staged.crc32c
            )));
        }
        staged.staged.commit(digest).await
    }

    /// This node's own copy of a queued binary (the peer endpoint).
    pub async fn local_copy(
        &self,
        digest: &Sha256,
        opts: crate::GetOptions,
    ) -> Result<crate::GetResult> {
        self.inner.queues[0].get_opts(digest, opts).await
    }

    /// Drops this node's own copy of a queued binary (the peer endpoint: the uploader says the
    /// store has it, or a refused upload takes its copies back).
    pub async fn drop_local_copy(&self, digest: &Sha256) -> Result<()> {
        for queue in &self.inner.queues {
            queue.delete(digest).await?;
        }
        Ok(())
    }

    /// When this node's copy of `digest` was queued, for the peer endpoint's `HEAD`.
    pub async fn local_copy_meta(&self, digest: &Sha256) -> Result<ObjectMeta> {
        self.inner.queues[0].head(digest).await
    }
}

/// The ids of the live nodes.
async fn live_ids(ledger: &dyn QueueLedger) -> Result<HashSet<String>> {
    Ok(ledger
        .live_nodes()
        .await?
        .into_iter()
        .map(|n| n.id)
        .collect())
}

/// How old a copy must be before a scan takes its rows as the whole story: a quorum write
/// records its copies after they are on the disks, so a younger copy's binary may have
/// copies no row names yet.
const SETTLE: Duration = Duration::from_secs(5);

fn settled(meta: &ObjectMeta) -> bool {
    meta.last_modified.elapsed().is_ok_and(|age| age >= SETTLE)
}

/// Time as ms since the epoch, for the figures' ages (matched against the database's).
pub(super) fn system_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The store beneath `cluster-file-system`: none. The nodes' copies are all there is, so
/// nothing is ever uploaded here and nothing is found here.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodesOnly;

impl fmt::Display for NodesOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the nodes' disks")
    }
}

#[async_trait]
impl BinaryProvider for NodesOnly {
    async fn put_opts(
        &self,
        _body: crate::ByteStream,
        _opts: crate::PutOptions,
    ) -> Result<crate::PutResult> {
        Err(Error::Unsupported(
            "cluster-file-system keeps binaries on the nodes' disks only".into(),
        ))
    }

    async fn get_opts(
        &self,
        digest: &Sha256,
        _opts: crate::GetOptions,
    ) -> Result<crate::GetResult> {
        Err(Error::NotFound {
            what: format!("binary {digest} on any live node"),
        })
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        Err(Error::NotFound {
            what: format!("binary {digest} on any live node"),
        })
    }

    async fn delete(&self, _digest: &Sha256) -> Result<()> {
        Ok(())
    }

    fn list(&self) -> futures::stream::BoxStream<'static, Result<ObjectMeta>> {
        futures::StreamExt::boxed(futures::stream::empty())
    }

    async fn health(&self) -> Result<crate::Health> {
        Ok(crate::Health::default())
    }
}
