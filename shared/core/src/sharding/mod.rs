//! The sharding provider (templates `double-shards`, `redundant-shards`, `s3-sharding`): M
//! state-aware mounts, any providers at all (local directories, S3 buckets, mixed), storing
//! each binary on `redundancy` of them. Parameters keep the names of Artifactory's sharding
//! binary provider.
//!
//! - **Writes** go to R mounts chosen by `writeBehavior`, from one read of the body fanned out
//!   through bounded buffers; the upload succeeds when at least `lenientLimit` copies are
//!   durable. Copies this upload created are taken back when it fails.
//! - **Reads** go to the mounts in `readBehavior` order and fall over to the next copy. A whole
//!   read is checked against the digest: a corrupt copy is removed (when another copy exists)
//!   and never served as a complete body.
//! - **Balancing** ([`ShardingProvider::balance`]) brings every binary back to R copies.

mod balance;
mod mount;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

pub use balance::{BalanceProgress, BalanceReport, Wanted};
use mount::Mount;
pub use mount::MountSettings;

use crate::fanout::FanOutSettings;
use crate::quorum::{Refused, TakeBack, put_quorum};
use crate::signing::DownloadSigner;
use crate::{
    BinaryProvider, ByteStream, Error, GetOptions, GetResult, Health, ObjectMeta, PresignedUploads,
    PutOptions, PutResult, Result, Sha256, StagingAge,
};

/// The mounts of a sharded store: each one's settings and provider.
pub type Mounts = Vec<(MountSettings, Arc<dyn BinaryProvider>)>;

/// The most mounts one sharded store may have (copies are tracked in a 64-bit mask).
pub const MAX_MOUNTS: usize = 64;

/// How mounts are chosen for the copies of a new binary (`writeBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteBehavior {
    /// Each upload starts at the next mount.
    #[default]
    RoundRobin,
    /// The mounts with the most free bytes.
    FreeSpace,
    /// The mounts with the highest share of free space.
    PercentageFreeSpace,
    /// One mount per zone, zones in `crossZoneOrder`; in each, the most free bytes.
    ZoneFreeSpace,
    /// One mount per zone, zones in `crossZoneOrder`; in each, the highest share free.
    ZonePercentageFreeSpace,
}

impl WriteBehavior {
    fn by_zone(self) -> bool {
        matches!(self, Self::ZoneFreeSpace | Self::ZonePercentageFreeSpace)
    }
}

/// In which order the copies of a binary are tried on reads (`readBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadBehavior {
    /// Each read starts at the next mount.
    #[default]
    RoundRobin,
    /// The node's own zone first, then the others in `crossZoneOrder`.
    Zone,
}

/// The sharding provider's parameters.
#[derive(Debug, Clone)]
pub struct ShardingSettings {
    /// Copies of each binary (R ≤ M).
    pub redundancy: usize,
    /// Copies that must be written for an upload to succeed; 0 means R.
    pub lenient_limit: usize,
    pub write_behavior: WriteBehavior,
    pub read_behavior: ReadBehavior,
    /// This node's zones, nearest first (`crossZoneOrder`); zones not named come after, in the
    /// order the mounts name them.
    pub cross_zone_order: Vec<String>,
    /// Buffering and patience of the redundant writes (`concurrentStreamBufferKb`,
    /// `concurrentStreamWaitTimeout`).
    pub fan_out: FanOutSettings,
    /// How long a free-space sample is used (`freeSpaceSampleInterval`).
    pub free_space_sample_interval: Duration,
    /// How long one balancing pass may run (`maxBalancingRunTime`).
    pub max_balancing_run_time: Duration,
}

impl Default for ShardingSettings {
    /// Artifactory's defaults.
    fn default() -> Self {
        Self {
            redundancy: 1,
            lenient_limit: 1,
            write_behavior: WriteBehavior::default(),
            read_behavior: ReadBehavior::default(),
            cross_zone_order: Vec::new(),
            fan_out: FanOutSettings {
                buffer_bytes: 32 << 10,
                wait_timeout: Duration::from_secs(30),
            },
            free_space_sample_interval: Duration::from_secs(3600),
            max_balancing_run_time: Duration::from_secs(3600),
        }
    }
}

/// One mount as `/api/storageinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStatus {
    pub id: String,
    pub provider: String,
    pub zone: Option<String>,
    /// `up` or `down`.
    pub state: &'static str,
    pub write_enabled: bool,
    pub free_space: Option<u64>,
    pub total_space: Option<u64>,
    /// Binaries stored on the mount, as listed at the start of the last balancing pass (listing
    /// a large bucket on every call would be too dear); `None` before the first pass.
    pub binaries_count: Option<u64>,
    /// How long ago that count was taken.
    pub counted_secs_ago: Option<u64>,
    pub down_for_secs: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    mounts: Vec<Mount>,
    redundancy: usize,
    lenient_limit: usize,
    settings: ShardingSettings,
    /// Zone of each mount's position in the zone order (lower is nearer).
    zone_rank: Vec<usize>,
    next_write: AtomicUsize,
    next_read: AtomicUsize,
    /// Set when a binary got fewer than R copies or a bad copy was dropped; cleared by a
    /// complete balancing pass.
    unbalanced: AtomicBool,
    balance: balance::Tracker,
    /// How a refused upload's copies are taken back (the service's guard).
    take_back: std::sync::OnceLock<Arc<dyn TakeBack>>,
}

/// A sharded store over several mounts.
#[derive(Debug, Clone)]
pub struct ShardingProvider {
    inner: Arc<Inner>,
}

impl fmt::Display for ShardingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.inner.mounts.iter().map(Mount::id).collect();
        write!(
            f,
            "sharding(redundancy {}: {})",
            self.inner.redundancy,
            ids.join(", ")
        )
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(format!("[filestore.sharding] {message}"))
}

impl ShardingProvider {
    /// Has a refused upload's copies taken back through `guard` (once; later calls are
    /// ignored), so that the removal cannot race a concurrent upload of the same bytes.
    pub fn guard_take_back(&self, guard: Arc<dyn TakeBack>) {
        let _ = self.inner.take_back.set(guard);
    }

    /// Each mount's id, provider, whether it can be used now and whether it takes writes: for
    /// a scrub, which reads and repairs every copy on every mount.
    pub async fn mounts_for_scrub(&self) -> Vec<(String, Arc<dyn BinaryProvider>, bool, bool)> {
        let mut out = Vec::with_capacity(self.inner.mounts.len());
        for mount in &self.inner.mounts {
            out.push((
                mount.id().to_string(),
                Arc::clone(&mount.provider),
                mount.usable().await,
                mount.settings.write_enabled,
            ));
        }
        out
    }

    /// A sharded store over `mounts`; the settings are checked here, with messages that say
    /// what to change.
    pub fn new(mounts: Mounts, settings: ShardingSettings) -> Result<Self> {
        let m = mounts.len();
        let r = settings.redundancy;
        if m == 0 || m > MAX_MOUNTS {
            return Err(invalid(format!(
                "{m} mounts are configured; a sharded store needs 1 to {MAX_MOUNTS}"
            )));
        }
        if r == 0 || r > m {
            return Err(invalid(format!(
                "redundancy is {r} but {m} mounts are configured; redundancy must be between 1 \
                 and the number of mounts (each copy goes to a different mount)"
            )));
        }
        let lenient_limit = match settings.lenient_limit {
            0 => r,
            n if n <= r => n,
            n => {
                return Err(invalid(format!(
                    "lenientLimit is {n} but redundancy is {r}; lenientLimit must be between 0 \
                     (meaning redundancy) and redundancy"
                )));
            }
        };
        let writable = mounts.iter().filter(|(s, _)| s.write_enabled).count();
        if writable < r {
            return Err(invalid(format!(
                "redundancy is {r} but only {writable} mounts have writeEnabled=true; new \
                 binaries could never get {r} copies"
            )));
        }
        let mut ids = HashSet::new();
        for (s, _) in &mounts {
            if s.id.is_empty() || !ids.insert(s.id.as_str()) {
                return Err(invalid(format!(
                    "mount id {:?} is empty or used twice; give every mount its own id",
                    s.id
                )));
            }
            let zoned =
                settings.write_behavior.by_zone() || settings.read_behavior == ReadBehavior::Zone;
            if zoned && s.zone.is_none() {
                return Err(invalid(format!(
                    "mount {:?} has no zone, but the zone read or write behaviour needs every \
                     mount's zone",
                    s.id
                )));
            }
        }
        // Zones nearest first: those crossZoneOrder names, then the rest as the mounts list them.
        let mut zones: Vec<String> = settings.cross_zone_order.clone();
        for (s, _) in &mounts {
            if let Some(z) = &s.zone
                && !zones.contains(z)
            {
                zones.push(z.clone());
            }
        }
        let zone_rank = mounts
            .iter()
            .map(|(s, _)| {
                s.zone
                    .as_ref()
                    .and_then(|z| zones.iter().position(|x| x == z))
                    .unwrap_or(zones.len())
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                take_back: std::sync::OnceLock::new(),
                mounts: mounts.into_iter().map(|(s, p)| Mount::new(s, p)).collect(),
                redundancy: r,
                lenient_limit,
                settings,
                zone_rank,
                next_write: AtomicUsize::new(0),
                next_read: AtomicUsize::new(0),
                unbalanced: AtomicBool::new(false),
                balance: balance::Tracker::default(),
            }),
        })
    }

    /// Copies each binary should have.
    pub fn redundancy(&self) -> usize {
        self.inner.redundancy
    }

    /// Copies an upload needs to succeed.
    pub fn lenient_limit(&self) -> usize {
        self.inner.lenient_limit
    }

    /// Whether some binary may have fewer or more than R copies (an upload written to fewer
    /// mounts, a corrupt copy dropped) since the last complete balancing pass.
    pub fn needs_balancing(&self) -> bool {
        self.inner.unbalanced.load(Ordering::Relaxed)
    }

    /// Checks every mount now (its `health`, as at start-up); those that fail are marked down
    /// and returned with their errors.
    pub async fn check_mounts(&self) -> Vec<(String, Error)> {
        let checks = self.inner.mounts.iter().map(|mount| async move {
            match mount.provider.health().await {
                Ok(_) => None,
                Err(e) => {
                    mount.failed(&e);
                    Some((mount.id().to_string(), e))
                }
            }
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Every mount's state, free space and binaries count (from the last balancing pass).
    pub async fn mount_status(&self) -> Vec<MountStatus> {
        let interval = self.inner.settings.free_space_sample_interval;
        let counts = self.inner.balance.mount_counts();
        let statuses = self.inner.mounts.iter().enumerate().map(|(i, mount)| {
            let counted = counts
                .as_ref()
                .and_then(|(counts, at)| Some((counts[i]?, *at)));
            async move {
                let health = if mount.usable().await {
                    mount
                        .free_space(interval.min(Duration::from_secs(10)))
                        .await
                } else {
                    Health::default()
                };
                let down = mount.down_report();
                MountStatus {
                    id: mount.id().to_string(),
                    provider: mount.provider.to_string(),
                    zone: mount.settings.zone.clone(),
                    state: if down.is_some() { "down" } else { "up" },
                    write_enabled: mount.settings.write_enabled,
                    free_space: health.free_space,
                    total_space: health.total_space,
                    binaries_count: counted.map(|(n, _)| n),
                    counted_secs_ago: counted.map(|(_, at)| at.elapsed().as_secs()),
                    down_for_secs: down.as_ref().map(|(d, _)| d.as_secs()),
                    last_error: down.map(|(_, e)| e),
                }
            }
        });
        futures::future::join_all(statuses).await
    }

    /// Indices of the mounts usable now (probing those due for a check), in mount order.
    async fn usable(&self, writing: bool) -> Vec<usize> {
        let checks = self
            .inner
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| async move {
                let wanted = !writing || m.settings.write_enabled;
                (wanted && m.usable().await).then_some(i)
            });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// `candidates` rotated to start at the `counter`'s next mount.
    fn rotated(&self, candidates: &[usize], counter: &AtomicUsize) -> Vec<usize> {
        let m = self.inner.mounts.len();
        let start = counter.fetch_add(1, Ordering::Relaxed) % m;
        let mut order = candidates.to_vec();
        order.sort_by_key(|&i| (i + m - start) % m);
        order
    }

    /// `candidates` in the order copies should be written to them.
    async fn write_order(&self, candidates: &[usize]) -> Vec<usize> {
        let behavior = self.inner.settings.write_behavior;
        // Ties (equal free space, object stores that cannot tell) are broken round-robin.
        let rotated = self.rotated(candidates, &self.inner.next_write);
        if behavior == WriteBehavior::RoundRobin {
            return rotated;
        }
        let interval = self.inner.settings.free_space_sample_interval;
        let samples = futures::future::join_all(
            rotated
                .iter()
                .map(|&i| self.inner.mounts[i].free_space(interval)),
        )
        .await;
        // Higher is emptier; an unknown free space counts as empty (an object store).
        let score = |h: &Health| -> f64 {
            let percentage = matches!(
                behavior,
                WriteBehavior::PercentageFreeSpace | WriteBehavior::ZonePercentageFreeSpace
            );
            match (h.free_space, h.total_space) {
                (Some(free), Some(total)) if percentage && total > 0 => free as f64 / total as f64,
                (Some(_), _) if percentage => 1.0,
                (Some(free), _) => free as f64,
                (None, _) => f64::INFINITY,
            }
        };
        let mut scored: Vec<(usize, f64)> =
            rotated.into_iter().zip(samples.iter().map(score)).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1)); // stable: ties keep the rotation
        if !behavior.by_zone() {
            return scored.into_iter().map(|(i, _)| i).collect();
        }
        // One mount per zone in zone order, then the second of each zone, and so on.
        let mut by_zone: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, _) in scored {
            let rank = self.inner.zone_rank[i];
            match by_zone.iter_mut().find(|(r, _)| *r == rank) {
                Some((_, list)) => list.push(i),
                None => by_zone.push((rank, vec![i])),
            }
        }
        by_zone.sort_by_key(|(rank, _)| *rank);
        let mut order = Vec::new();
        for round in 0.. {
            let before = order.len();
            order.extend(by_zone.iter().filter_map(|(_, list)| list.get(round)));
            if order.len() == before {
                break;
            }
        }
        order
    }

    /// All mounts usable for reading, in the order copies should be tried.
    async fn read_order(&self) -> Vec<usize> {
        let usable = self.usable(false).await;
        let mut order = self.rotated(&usable, &self.inner.next_read);
        if self.inner.settings.read_behavior == ReadBehavior::Zone {
            order.sort_by_key(|&i| self.inner.zone_rank[i]); // stable: rotation within a zone
        }
        order
    }

    /// What a read that found no copy on the usable mounts means: missing, or unreachable.
    fn not_on_usable_mounts(&self, digest: &Sha256) -> Error {
        let down: Vec<&str> = self
            .inner
            .mounts
            .iter()
            .filter(|m| !m.is_up())
            .map(Mount::id)
            .collect();
        if down.is_empty() {
            Error::NotFound {
                what: format!("binary {digest}"),
            }
        } else {
            Error::Unavailable(format!(
                "binary {digest} is on none of the mounts that are up, and mounts {} are down; \
                 retry once they are back",
                down.join(", ")
            ))
        }
    }

    /// The binary's copy on `mount` turned out corrupt: drop it if another copy exists (then
    /// balancing restores R), keep it otherwise (it may still be of use to a person).
    async fn drop_corrupt_copy(&self, mount: usize, digest: Sha256) {
        self.inner.unbalanced.store(true, Ordering::Relaxed);
        let mut elsewhere = false;
        for (i, other) in self.inner.mounts.iter().enumerate() {
            if i != mount && other.is_up() && other.provider.head(&digest).await.is_ok() {
                elsewhere = true;
                break;
            }
        }
        let id = self.inner.mounts[mount].id();
        if !elsewhere {
            tracing::error!(mount = id, %digest,
                "the only copy of a binary is corrupt; it is kept for inspection");
            return;
        }
        match self.inner.mounts[mount].provider.delete(&digest).await {
            Ok(()) => tracing::error!(mount = id, %digest,
                "a corrupt copy was removed; balancing restores it from a good copy"),
            Err(e) => tracing::error!(mount = id, %digest, error = %e,
                "a corrupt copy could not be removed"),
        }
    }

    /// Opens the copy on mount `i`. A whole read is checked against the digest: small ones
    /// before serving (`Ok(None)`: corrupt, try another copy), larger ones as they stream.
    async fn open_copy(
        &self,
        i: usize,
        digest: &Sha256,
        opts: &GetOptions,
    ) -> Result<Option<GetResult>> {
        let found = self.inner.mounts[i]
            .provider
            .get_opts(digest, opts.clone())
            .await?;
        if opts.range.is_some() {
            return Ok(Some(found)); // a range cannot be checked without reading it all
        }
        let this = self.clone();
        let digest = *digest;
        let checked = crate::hashing::checked_read(found, move |e| {
            tracing::error!(mount = this.inner.mounts[i].id(), %digest, error = %e,
                "a stored copy does not match its digest; the read is cut short");
            tokio::spawn(async move { this.drop_corrupt_copy(i, digest).await });
            Error::Storage {
                backend: "sharding".into(),
                key: digest.to_string(),
                source: format!(
                    "the copy read was corrupt and has been set aside; a retry reads another \
                     copy ({e})"
                )
                .into(),
                retryable: true,
            }
        })
        .await?;
        if checked.is_none() {
            tracing::error!(mount = self.inner.mounts[i].id(), %digest,
                "a stored copy does not match its digest; reading another copy");
            self.drop_corrupt_copy(i, digest).await;
        }
        Ok(checked)
    }

    fn refused_for_want_of_mounts(&self, usable: usize) -> Error {
        let down: Vec<String> = self
            .inner
            .mounts
            .iter()
            .filter_map(|m| {
                m.down_report()
                    .map(|(_, error)| format!("{} ({error})", m.id()))
            })
            .collect();
        Error::Unavailable(format!(
            "uploads are refused: {usable} mounts can take writes but lenientLimit is {}; \
             mounts down: {}",
            self.inner.lenient_limit,
            if down.is_empty() {
                "none".to_string()
            } else {
                down.join("; ")
            }
        ))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BinaryProvider for ShardingProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let candidates = self.usable(true).await;
        if candidates.len() < self.inner.lenient_limit {
            return Err(self.refused_for_want_of_mounts(candidates.len()));
        }
        let mut order = self.write_order(&candidates).await;
        // Bytes already stored stay where they are: mounts holding the declared digest first.
        if let Some(digest) = opts.expected.sha256 {
            let mounts = &self.inner.mounts;
            let held = futures::future::join_all(
                order
                    .iter()
                    .map(|&i| async move { mounts[i].provider.head(&digest).await.is_ok() }),
            )
            .await;
            let mut keyed: Vec<(bool, usize)> = held.into_iter().zip(order).collect();
            keyed.sort_by_key(|(held, _)| !held);
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        order.truncate(self.inner.redundancy);
        let mounts = &self.inner.mounts;
        let targets: Vec<&dyn BinaryProvider> =
            order.iter().map(|&i| mounts[i].provider.as_ref()).collect();
        let quorum = put_quorum(
            &targets,
            body,
            &opts,
            self.inner.lenient_limit,
            self.inner.settings.fan_out,
            self.inner
                .take_back
                .get()
                .map(|g| g.as_ref() as &dyn TakeBack),
        )
        .await;
        for (j, e) in &quorum.failures {
            mounts[order[*j]].failed(e);
        }
        match quorum.outcome {
            Ok(stored) => {
                if quorum.stored < self.inner.redundancy {
                    self.inner.unbalanced.store(true, Ordering::Relaxed);
                    tracing::debug!(digest = %stored.checksums.sha256, copies = quorum.stored,
                        redundancy = self.inner.redundancy,
                        "a binary was stored with fewer copies than the redundancy; balancing adds the rest");
                }
                Ok(stored)
            }
            Err(Refused::Request(e)) => Err(e),
            Err(Refused::TooFewCopies) => {
                let detail: Vec<String> = quorum
                    .failures
                    .iter()
                    .map(|(j, e)| format!("{}: {e}", mounts[order[*j]].id()))
                    .collect();
                Err(Error::Unavailable(format!(
                    "the upload was stored on {} of {} mounts but lenientLimit is {}; nothing \
                     was kept ({})",
                    quorum.stored,
                    order.len(),
                    self.inner.lenient_limit,
                    detail.join("; ")
                )))
            }
        }
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        for i in self.read_order().await {
            match self.open_copy(i, digest, &opts).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) | Err(Error::NotFound { .. }) => {}
                Err(e @ Error::RangeNotSatisfiable { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(mount = self.inner.mounts[i].id(), %digest, error = %e,
                        "reading a copy failed; trying the next");
                    self.inner.mounts[i].failed(&e);
                }
            }
        }
        Err(self.not_on_usable_mounts(digest))
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        for i in self.read_order().await {
            match self.inner.mounts[i].provider.head(digest).await {
                Ok(meta) => return Ok(meta),
                Err(Error::NotFound { .. }) => {}
                Err(e) => self.inner.mounts[i].failed(&e),
            }
        }
        Err(self.not_on_usable_mounts(digest))
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        // Write-disabled mounts are cleaned too. A mount that is down keeps its copy, which
        // garbage collection finds as an orphan once the mount is back.
        let usable = self.usable(false).await;
        let mounts = &self.inner.mounts;
        let results = futures::future::join_all(
            usable
                .iter()
                .map(|&i| async move { (i, mounts[i].provider.delete(digest).await) }),
        )
        .await;
        let mut last = None;
        let mut deleted = 0;
        for (i, result) in results {
            match result {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::warn!(mount = mounts[i].id(), %digest, error = %e,
                        "a copy could not be deleted; garbage collection retries it as an orphan");
                    mounts[i].failed(&e);
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if deleted == 0 => Err(e),
            _ if usable.is_empty() => Err(self.not_on_usable_mounts(digest)),
            _ => Ok(()),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        let usable = futures::stream::once(async move {
            let usable = this.usable(false).await;
            (this, usable)
        });
        usable
            .flat_map(|(this, usable)| {
                if usable.is_empty() {
                    let err = Error::Unavailable("every mount of the sharded store is down".into());
                    return futures::stream::iter(vec![Err(err)]).boxed();
                }
                let mut seen = HashSet::new();
                let lists =
                    usable.into_iter().map(move |i| {
                        let this = this.clone();
                        this.inner.mounts[i].provider.list().filter_map(move |item| {
                        let item = match item {
                            Ok(meta) => Some(Ok(meta)),
                            Err(e) => {
                                // One failing mount must not hide what the others hold.
                                tracing::warn!(mount = this.inner.mounts[i].id(), error = %e,
                                    "listing a mount failed");
                                this.inner.mounts[i].failed(&e);
                                None
                            }
                        };
                        futures::future::ready(item)
                    })
                    });
                futures::stream::iter(lists)
                    .flatten()
                    .try_filter(move |meta| futures::future::ready(seen.insert(meta.digest)))
                    .boxed()
            })
            .boxed()
    }

    async fn health(&self) -> Result<Health> {
        let usable = self.usable(true).await;
        if usable.len() < self.inner.lenient_limit {
            return Err(self.refused_for_want_of_mounts(usable.len()));
        }
        let interval = self.inner.settings.free_space_sample_interval;
        let samples = futures::future::join_all(
            usable
                .iter()
                .map(|&i| self.inner.mounts[i].free_space(interval)),
        )
        .await;
        let sum = |f: fn(&Health) -> Option<u64>| -> Option<u64> {
            samples
                .iter()
                .map(f)
                .try_fold(0u64, |acc, v| Some(acc.saturating_add(v?)))
        };
        Ok(Health {
            free_space: sum(|h| h.free_space),
            total_space: sum(|h| h.total_space),
        })
    }

    async fn put_file(&self, path: &std::path::Path, sha256: &Sha256, size: u64) -> Result<bool> {
        // Through the quorum like any upload: copies on R mounts from one read of the file.
        crate::provider::put_file_as_stream(self, path, sha256, size).await
    }

    fn as_stager(&self) -> Option<&dyn crate::Stager> {
        None // copies are named by each mount; a staged body would have one place
    }

    fn download_signer(&self) -> Option<&dyn DownloadSigner> {
        None // no one mount's URL is sure to hold a binary
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        None // a session would put the bytes on one mount, below the redundancy
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        let mut removed = 0;
        for mount in self.inner.mounts.iter() {
            // A mount that is down now is swept by a later pass.
            match mount.provider.clean_staging(age).await {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!(mount = mount.id(), error = %e,
                    "could not sweep a mount's staging; a later pass will"),
            }
        }
        Ok(removed)
    }
}

/// Where each binary is: digest → (size, mask of the mounts holding a copy).
type Placement = HashMap<Sha256, (u64, u64)>;

#[cfg(test)]
mod tests;
