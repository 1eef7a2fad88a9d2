//! The service layer: what a deploy, a download, a delete and a garbage collection do, in terms
//! of a `BinaryProvider` and the metadata store. It knows no HTTP; the handlers in `http` and
//! the command-line tools call it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use stowage_core::cache::{CacheStats, CachedProvider};
use stowage_core::eventual::{EventualProvider, QueueStats};
use stowage_core::quorum::TakeBack;
use stowage_core::sharding::{BalanceReport, ShardingProvider, Wanted};
use stowage_core::{
    ArtifactPath, BinaryProvider, BinaryProviderExt, ByteStream, Error, ExpectedChecksums,
    PutOptions, RepoKey, Result, Sha256, StagingAge, StaleUploads, UploadPlan,
};
use stowage_metadata::{
    ArtifactRecord, ChecksumLookup, ImmutablePaths, Metadata, NewArtifact, Relocation, Repository,
    UploadSession, now_ms, retry_conflicts,
};

use crate::Settings;
use crate::filestore::Filestore;
use crate::locks::{LockGuard, LockName, Locks, release_all};
use crate::security::{Action, Caller, Security};

pub(crate) mod backup;
mod catalog;
mod checksum_files;
mod conditions;
mod download;
pub(crate) mod peer_queue;
pub(crate) mod progress;
pub(crate) mod prune;
mod repositories;
pub(crate) mod scrub;
mod sessions;
pub(crate) mod standby;
mod stats;
mod storage;
mod trash;

pub use catalog::{Item, ListPage, ListedPage, Properties};
pub use checksum_files::{ChecksumDeploy, ChecksumKind, MAX_CHECKSUM_FILE};
pub use conditions::Conditions;
use conditions::Verdict;
pub use download::{ByteRange, Download, DownloadRequest, RedirectPolicy, etag};
pub use storage::{NodeFigures, Readiness, ShardsReport, StorageReport};

/// How long a repository's redirect settings are kept in memory: a change to them reaches
/// every node within this.
const REDIRECT_SETTINGS_TTL: Duration = Duration::from_secs(5);

/// Binaries examined per garbage-collection batch.
const GC_BATCH: u32 = 1000;

/// What a deploy carries besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub expected: ExpectedChecksums,
    /// The announced length, if any.
    pub size: Option<u64>,
    /// Who deploys (recorded as created/modified by).
    pub by: String,
    pub properties: Vec<(String, String)>,
    /// What the deploy is conditional on (`If-None-Match: *`: create only; `If-Match`: replace
    /// only this version). Held against the artifact there before any byte is stored, and
    /// again under the path's lock before the record.
    pub conditions: Conditions,
}

/// The properties a deploy sets, checked before any byte is stored.
fn check_deploy_properties(request: &DeployRequest) -> Result<()> {
    for (name, value) in &request.properties {
        catalog::check_property_name(name)?;
        catalog::check_property_value(value)?;
    }
    Ok(())
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub trash_purged: u64,
    pub binaries_removed: u64,
    /// Unreferenced binaries left for a later collection because their store could not be
    /// asked (a mount that is down).
    pub binaries_skipped: u64,
    pub bytes_freed: u64,
    pub orphans_removed: u64,
    /// Upload sessions that expired and were aborted.
    pub upload_sessions_expired: u64,
    /// Staging objects and multipart uploads abandoned by crashes, removed.
    pub stale_uploads: StaleUploads,
    /// The balancing pass that follows collection on a sharded store.
    pub balancing: Option<BalanceReport>,
}

/// How far a garbage collection got: the one running now on this node, and the last one
/// that finished here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcProgress {
    pub running: bool,
    /// What the running collection is doing: `trash`, `binaries`, `orphans`, `uploads`,
    /// `staging`, `balancing`.
    pub phase: &'static str,
    /// When it started (ms since the epoch, this node's clock).
    pub started_ms: i64,
    /// Its figures so far.
    pub current: GcReport,
    /// The last collection that finished on this node.
    pub last: Option<GcReport>,
}

/// What opening an upload session gave.
#[derive(Debug)]
pub enum SessionStart {
    /// The binary was already stored: the artifact is recorded, nothing needs uploading.
    Deployed(ArtifactRecord),
    /// The client is to send its bytes as `plan` says, then complete the session.
    Pending {
        session: UploadSession,
        plan: UploadPlan,
    },
}

/// A move or a copy asked for: of the file or folder `src_repo/src` to `dst_repo/dst`.
#[derive(Debug, Clone, Copy)]
pub struct RelocateRequest<'a> {
    pub src_repo: &'a RepoKey,
    pub src: &'a ArtifactPath,
    pub dst_repo: &'a RepoKey,
    pub dst: &'a ArtifactPath,
    /// Copy (the source stays) rather than move.
    pub copy: bool,
    /// Check and count only; nothing changes.
    pub dry: bool,
}

/// Takes back the copies a refused sharded or queued upload created the way garbage
/// collection removes bytes: under the removal lock, counted as a removal run (so that a
/// concurrent deploy of the same bytes, which may have found those copies, looks again before
/// it records), and under the binary's lock, only when no row records the binary. When a
/// collection is removing now, the copies are left to it.
#[derive(Debug)]
struct GuardedTakeBack {
    locks: Locks,
    metadata: Metadata,
}

#[async_trait::async_trait]
impl TakeBack for GuardedTakeBack {
    async fn take_back(&self, digest: Sha256, remove: futures::future::BoxFuture<'_, ()>) {
        let Some(removal) = self.locks.try_lock(&Stowage::gc_removals()).await else {
            return;
        };
        if self.locks.count_gc_run().await.is_ok()
            && let Ok(binary) = self.locks.lock(&LockName::Binary(digest)).await
        {
            if matches!(self.metadata.binary_recorded(&digest).await, Ok(false))
                && self.locks.fence(&[&removal, &binary]).await.is_ok()
            {
                remove.await;
            }
            binary.release().await;
        }
        removal.release().await;
    }
}

/// What a deploy notes of garbage collection before it stores its bytes
/// ([`Stowage::gc_witness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GcWitness {
    /// Collections that had begun removing binaries.
    runs: i64,
    /// Whether one held the removal lock then (or had died holding it).
    running: bool,
}

/// What a deploy notes before it stores its bytes, and holds them to when it records them.
#[derive(Debug, Clone)]
struct Admission {
    /// Garbage collection's state then.
    witness: GcWitness,
    /// Why the caller may not overwrite another file at the path, if it may not.
    overwrite_refusal: Option<String>,
    /// Who deploys, for the audit trail.
    caller: Caller,
    /// How the bytes came (`stream`: the request's body, through the filestore chain, or
    /// `eventual` when a queue takes them; `checksum`: a deploy by checksum; `presigned`: an
    /// upload session), for `stowage_deploys_total{via}`.
    via: &'static str,
}

/// Stowage's operations over one provider chain and one metadata store.
#[derive(Debug)]
pub struct Stowage {
    provider: Arc<dyn BinaryProvider>,
    eventual: Option<EventualProvider>,
    sharding: Option<ShardingProvider>,
    cache: Option<CachedProvider>,
    /// Lower-cased `[downloads] proxy_user_agents`.
    proxy_user_agents: Vec<String>,
    /// Each repository's redirect settings (`downloadRedirect`, `downloadRedirectMinSize`),
    /// kept for a few seconds so a redirect costs one metadata query, not two.
    redirect_settings: moka::future::Cache<RepoKey, Option<u64>>,
    session_expiry: Duration,
    metadata: Metadata,
    /// Order metadata changes across nodes: a path's changes one at a time, and "store bytes,
    /// then record them" against "delete unreferenced bytes".
    locks: Locks,
    trash_enabled: bool,
    trash_retention: Duration,
    orphan_grace: Duration,
    /// Who callers are and what they may do: asked before every operation.
    security: Arc<Security>,
    /// Downloads counted since the statistics were last written.
    downloads: Arc<stats::DownloadCounter>,
    /// How far garbage collection got on this node.
    gc_progress: std::sync::Mutex<GcProgress>,
    /// The backup this node runs or ran last for the API (`POST /api/system/backup`).
    background_backup: Arc<progress::Background<backup::BackupReport>>,
    /// The prune this node runs or ran last (`POST /api/system/storage/prune/start`).
    prune: Arc<progress::Background<prune::PruneReport>>,
    /// The scheduled scrub's progress and last outcome.
    scrub_state: Arc<progress::Background<scrub::ScrubReport>>,
    /// A passive standby's replication figures.
    standby: std::sync::Mutex<standby::StandbyStatus>,
    /// The SHA-256 of the cluster's secret, which opens the peer endpoint.
    cluster_key_sha256: Option<[u8; 32]>,
}

impl Stowage {
    /// Wires a provider chain and a metadata store for the node `node_id`.
    pub fn new(
        filestore: Filestore,
        metadata: Metadata,
        settings: &Settings,
        node_id: &str,
    ) -> Self {
        let stowage = Self {
            security: Arc::new(Security::new(
                metadata.clone(),
                node_id,
                settings.anonymous_read,
                settings.tokens.clone(),
            )),
            locks: Locks::new(metadata.clone(), node_id, settings.locks.clone()),
            provider: filestore.provider,
            eventual: filestore.eventual,
            sharding: filestore.sharding,
            cache: filestore.cache,
            proxy_user_agents: settings
                .proxy_user_agents
                .iter()
                .map(|p| p.to_lowercase())
                .collect(),
            redirect_settings: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REDIRECT_SETTINGS_TTL)
                .build(),
            session_expiry: settings.session_expiry.max(Duration::from_secs(1)),
            metadata,
            trash_enabled: settings.trash_enabled,
            trash_retention: settings.trash_retention,
            orphan_grace: settings.orphan_grace,
            downloads: Arc::default(),
            gc_progress: std::sync::Mutex::default(),
            background_backup: Arc::default(),
            prune: Arc::default(),
            scrub_state: Arc::default(),
            standby: std::sync::Mutex::default(),
            cluster_key_sha256: settings.cluster_key_sha256,
        };
        let guard: Arc<dyn TakeBack> = Arc::new(GuardedTakeBack {
            locks: stowage.locks.clone(),
            metadata: stowage.metadata.clone(),
        });
        if let Some(sharding) = &stowage.sharding {
            sharding.guard_take_back(Arc::clone(&guard));
        }
        if let Some(eventual) = &stowage.eventual {
            eventual.guard_take_back(guard);
            peer_queue::join(
                eventual,
                &stowage.metadata,
                node_id,
                settings.peer_liveness,
                settings.locks.lease,
            );
        }
        stowage
    }

    /// Authentication and authorization, for the entry points and the security API.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The metadata store, for the cluster-wide tasks' records.
    pub(crate) fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Runs `work` under the lock `name`, released (and the release waited for) however `work`
    /// ended: a guard merely dropped is released in the background, which a process that
    /// exits right after (`stowage gc`) may never run, leaving the lock to its lease.
    pub(crate) async fn under_lock<T, F, Fut>(&self, name: LockName, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.under_lock_with(name, async |_| work().await).await
    }

    /// [`Self::under_lock`], with the held lock given to `work` (to fence its acts with).
    pub(crate) async fn under_lock_with<T>(
        &self,
        name: LockName,
        work: impl AsyncFnOnce(&LockGuard) -> Result<T>,
    ) -> Result<T> {
        let lock = self.locks.lock(&name).await?;
        let done = work(&lock).await;
        lock.release().await;
        done
    }

    /// The lock garbage collection holds while it removes binaries (and, after a crash,
    /// leaves behind until the next collection takes it over).
    pub(crate) fn gc_removals() -> LockName {
        LockName::Named("gc-removals")
    }

    /// What to compare with, after storing bytes, to know whether a collection may have
    /// removed them meanwhile. Taken before the bytes are stored or looked up.
    async fn gc_witness(&self) -> Result<GcWitness> {
        let (runs, running) = self.locks.gc_witness(&Self::gc_removals()).await?;
        Ok(GcWitness { runs, running })
    }

    /// Whether a collection was removing binaries when `witness` was taken, or has begun
    /// since: only then may bytes stored after it be gone.
    async fn may_have_collected_since(&self, witness: GcWitness) -> Result<bool> {
        Ok(witness.running || self.gc_witness().await?.runs != witness.runs)
    }

    /// Runs a metadata write under the locks of `names`, running it again when the database
    /// reports a conflict: the one way a write of a path (or a repository) is made.
    async fn locked_write<T, F, Fut>(&self, names: Vec<LockName>, write: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let locks = self.locks.lock_all(names).await?;
        let done = retry_conflicts(write).await;
        release_all(locks).await;
        done
    }

    /// Figures of the eventual upload queue, for templates that have one.
    pub(crate) async fn queue_stats(&self) -> Result<Option<QueueStats>> {
        match &self.eventual {
            // cluster-file-system's copies are the store, not a queue.
            Some(eventual) if !eventual.keeps_copies() => Ok(Some(eventual.stats().await?)),
            _ => Ok(None),
        }
    }

    async fn require_repository(&self, repo: &RepoKey) -> Result<Repository> {
        self.metadata
            .repository(repo)
            .await?
            .ok_or_else(|| Error::RepositoryNotFound {
                key: repo.to_string(),
            })
    }

    /// Refuses, before any byte is sent, a deploy that declares other bytes than the released
    /// file at an immutable path holds (the deploy's transaction refuses it anyway; without a
    /// declared SHA-256 only it can tell a retried release from an overwrite).
    async fn check_immutable(
        &self,
        repository: &Repository,
        path: &ArtifactPath,
        request: &DeployRequest,
    ) -> Result<()> {
        let immutable = ImmutablePaths::from_config(&repository.config)?;
        if immutable.matching(path.as_str()).is_none() {
            return Ok(());
        }
        let Some(declared) = request.expected.sha256 else {
            return Ok(());
        };
        match self.metadata.artifact(&repository.key, path).await? {
            Some(current) if current.checksums.sha256 != declared => {
                immutable.allow_path(&repository.key, path, "overwritten")
            }
            _ => Ok(()),
        }
    }

    /// Stores a body and records it at `repo/path`. The bytes are hashed as they stream to the
    /// provider; nothing is recorded unless they were stored and matched every declared
    /// checksum.
    pub async fn deploy(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        body: ByteStream,
        request: DeployRequest,
    ) -> Result<ArtifactRecord> {
        check_deploy_properties(&request)?;
        self.security
            .require(caller, Action::Deploy, repo.as_str(), path.as_str())
            .await?;
        let repository = self.require_repository(repo).await?;
        self.check_conditions(repo, path, &request.conditions, false)
            .await?;
        self.check_immutable(&repository, path, &request).await?;
        if path.is_root() {
            return Err(Error::InvalidInput(
                "a file path is required after the repository key".into(),
            ));
        }
        let via = if self.eventual.is_some() {
            "eventual"
        } else {
            "stream"
        };
        let admission = self.admission(caller, repo, path, via).await?;
        let stored = self
            .provider
            .put_opts(
                body,
                PutOptions {
                    expected: request.expected,
                    size: request.size,
                },
            )
            .await?;
        self.record(
            repo,
            path,
            stored.checksums,
            stored.size,
            request,
            admission,
        )
        .await
    }

    /// Whether `caller` may read some artifact whose binary `lookup` names.
    async fn may_read_any(&self, caller: &Caller, lookup: ChecksumLookup) -> Result<bool> {
        let readable = self.security.checker(caller, Action::Read).await?;
        Ok(self
            .metadata
            .search_checksum(lookup)
            .await?
            .iter()
            .any(|a| readable(&a.repo, a.path.as_str()).is_ok()))
    }

    /// What a deploy by `caller` notes before it stores (or looks up) its bytes.
    async fn admission(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        via: &'static str,
    ) -> Result<Admission> {
        Ok(Admission {
            overwrite_refusal: self.overwrite_refusal(caller, repo, path).await?,
            witness: self.gc_witness().await?,
            caller: caller.clone(),
            via,
        })
    }

    /// Why `caller` may not replace the file at `repo/path` with other bytes, if it may not:
    /// overwriting needs the delete permission, as in Artifactory.
    async fn overwrite_refusal(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Option<String>> {
        Ok(self
            .security
            .require(caller, Action::Delete, repo.as_str(), path.as_str())
            .await
            .err()
            .map(|e| format!("{e} (overwriting a file with other bytes needs delete)")))
    }

    /// Holds a write's conditions against the artifact at `repo/path`: early (possibly from
    /// a cache, to refuse before any byte is sent), or `fresh` from the primary under the
    /// path's lock, where the answer cannot change before the write.
    async fn check_conditions(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        conditions: &Conditions,
        fresh: bool,
    ) -> Result<()> {
        if conditions.is_empty() {
            return Ok(());
        }
        let current = if fresh {
            self.metadata.artifact_on_primary(repo, path).await?
        } else {
            self.metadata.artifact(repo, path).await?
        };
        match conditions.evaluate(current.as_ref(), false) {
            Verdict::Failed(reason) => Err(Error::PreconditionFailed(format!(
                "{repo}/{path} was not written: {reason}"
            ))),
            Verdict::Proceed | Verdict::NotModified => Ok(()),
        }
    }

    /// Records `repo/path` for a binary that is already stored (`X-Checksum-Deploy`).
    pub async fn deploy_by_checksum(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        request: DeployRequest,
    ) -> Result<ArtifactRecord> {
        check_deploy_properties(&request)?;
        self.security
            .require(caller, Action::Deploy, repo.as_str(), path.as_str())
            .await?;
        self.require_repository(repo).await?;
        self.check_conditions(repo, path, &request.conditions, false)
            .await?;
        let lookup = match (
            request.expected.sha256,
            request.expected.sha1,
            request.expected.md5,
        ) {
            (Some(d), _, _) => ChecksumLookup::Sha256(d),
            (None, Some(d), _) => ChecksumLookup::Sha1(d),
            _ => {
                return Err(Error::InvalidInput(
                    "X-Checksum-Deploy needs X-Checksum-Sha256 or X-Checksum-Sha1".into(),
                ));
            }
        };
        let admission = self.admission(caller, repo, path, "checksum").await?;
        let unknown = || Error::NotFound {
            what: "a stored binary with the given checksum (deploy the bytes instead)".into(),
        };
        let binary = self
            .metadata
            .find_binary(lookup)
            .await?
            .ok_or_else(unknown)?;
        // As in Artifactory: only a caller who can read an artifact holding the binary may
        // deploy it by checksum (anyone else could probe for, and copy, bytes by digest).
        if !self
            .may_read_any(caller, ChecksumLookup::Sha256(binary.checksums.sha256))
            .await?
        {
            return Err(unknown());
        }
        request.expected.verify(&binary.checksums)?;
        self.record(
            repo,
            path,
            binary.checksums,
            binary.size,
            request,
            admission,
        )
        .await
    }

    async fn record(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        checksums: stowage_core::Checksums,
        size: u64,
        request: DeployRequest,
        admission: Admission,
    ) -> Result<ArtifactRecord> {
        let Admission {
            witness,
            overwrite_refusal,
            caller,
            via,
        } = admission;
        let conditions = request.conditions;
        let new = NewArtifact {
            repo: repo.clone(),
            path: path.clone(),
            checksums,
            size,
            by: request.by,
            properties: request.properties,
            original: request.expected,
        };
        let names = vec![
            LockName::path(repo, path),
            LockName::Binary(checksums.sha256),
        ];
        let record = self
            .locked_write(names, || async {
                self.check_conditions(repo, path, &conditions, true).await?;
                if let Some(refusal) = &overwrite_refusal
                    && self
                        .metadata
                        .artifact_on_primary(repo, path)
                        .await?
                        .is_some_and(|current| current.checksums.sha256 != checksums.sha256)
                {
                    return Err(Error::Forbidden(refusal.clone()));
                }
                // Garbage collection removes a binary only under its lock, after finding no row
                // that refers to it. Between this deploy's store and this lock it may have done
                // so (whatever the orphan grace: at 0, even bytes this deploy just created), so
                // unless no collection can have removed anything since `witness` was taken, the
                // bytes are looked for again here, where none can remove them before the row
                // below is committed (docs/durability.md).
                if self.may_have_collected_since(witness).await?
                    && !self.provider.exists(&checksums.sha256).await?
                {
                    return Err(Error::Unavailable(
                    "the binary was removed by garbage collection while it was being deployed; \
                     deploy it again"
                        .into(),
                ));
                }
                self.metadata.commit_artifact(&new).await
            })
            .await?;
        metrics::counter!("stowage_deploys_total", "via" => via).increment(1);
        // An overwrite keeps the file's creation time (also when the bytes were the same).
        let action = if record.created_ms == record.modified_ms {
            "deploy"
        } else {
            "overwrite"
        };
        let detail = format!("sha256={} size={}", record.checksums.sha256, record.size);
        self.security
            .audit(&caller, action, &format!("{repo}/{path}"), &detail)
            .await;
        Ok(record)
    }

    /// The record of a file, or `NotFound` (saying so when the path is a folder).
    pub async fn artifact(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<ArtifactRecord> {
        self.security
            .require(caller, Action::Read, repo.as_str(), path.as_str())
            .await?;
        if let Some(record) = self.metadata.artifact(repo, path).await? {
            return Ok(record);
        }
        let repository =
            self.metadata
                .repository(repo)
                .await?
                .ok_or_else(|| Error::RepositoryNotFound {
                    key: repo.to_string(),
                })?;
        if self
            .metadata
            .folder_record(&repository, path)
            .await?
            .is_some()
        {
            return Err(Error::NotFound {
                what: format!("a file at {repo}/{path} (it is a folder: list its storage info)"),
            });
        }
        Err(Error::NotFound {
            what: format!("{repo}/{path}"),
        })
    }

    /// Forgets what this node keeps of a repository's settings (after it changed here; other
    /// nodes see the change within a few seconds).
    async fn repository_changed(&self, repo: &RepoKey) {
        self.redirect_settings.invalidate(repo).await;
    }

    /// Moves a file, or a folder's files, to the trash (or removes them when the trash is
    /// disabled). `NotFound` when there is nothing at the path.
    pub async fn delete(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<u64> {
        self.require_repository(repo).await?;
        // Every file that would go is checked in the delete's own transaction; a folder's
        // own entries go with them, so a folder needs delete somewhere below it (an empty
        // one has no file to check).
        if self.metadata.artifact(repo, path).await?.is_none()
            && !self
                .security
                .may_below(caller, Action::Delete, repo.as_str(), path.as_str())
                .await?
        {
            return Err(caller.refused(&format!("delete {repo}/{path}")));
        }
        let check = self.security.checker(caller, Action::Delete).await?;
        // With the trash off, the files go for good; what the trash already holds stays
        // there for its retention (before, this emptied the whole trash).
        let into_trash = self.trash_enabled.then_some(caller.name.as_str());
        let moved = self
            .locked_write(vec![LockName::path(repo, path)], || {
                self.metadata.take_out(repo, path, into_trash, &check)
            })
            .await?;
        if moved.is_nothing() {
            return Err(Error::NotFound {
                what: format!("{repo}/{path}"),
            });
        }
        let detail = format!(
            "{} files, {} folders{}",
            moved.files,
            moved.folders,
            if self.trash_enabled {
                ", to the trash"
            } else {
                ""
            }
        );
        self.security
            .audit(caller, "delete", &format!("{repo}/{path}"), &detail)
            .await;
        Ok(moved.files)
    }

    /// Moves or copies a file or a folder's files (metadata only), under the locks of both
    /// paths. Returns how many files.
    pub async fn relocate(&self, caller: &Caller, request: &RelocateRequest<'_>) -> Result<u64> {
        // A copy reads its sources, a move deletes them; both deploy their targets. Each file
        // is checked in the relocation's own transaction.
        let source = if request.copy {
            Action::Read
        } else {
            Action::Delete
        };
        let check_source = self.security.checker(caller, source).await?;
        let check_target = self.security.checker(caller, Action::Deploy).await?;
        // Replacing a file with other bytes needs delete there, as a deploy's overwrite does.
        let check_overwrite = self.security.checker(caller, Action::Delete).await?;
        let relocation = Relocation {
            src_repo: request.src_repo,
            src: request.src,
            dst_repo: request.dst_repo,
            dst: request.dst,
            by: &caller.name,
            copy: request.copy,
            dry: request.dry,
            check_source: &check_source,
            check_target: &check_target,
            check_overwrite: &check_overwrite,
        };
        let names = vec![
            LockName::path(request.src_repo, request.src),
            LockName::path(request.dst_repo, request.dst),
        ];
        let n = self
            .locked_write(names, || self.metadata.relocate(&relocation))
            .await?;
        if !request.dry {
            let target = format!(
                "{}/{} -> {}/{}",
                request.src_repo, request.src, request.dst_repo, request.dst
            );
            let action = if request.copy { "copy" } else { "move" };
            self.security
                .audit(caller, action, &target, &format!("{n} files"))
                .await;
        }
        Ok(n)
    }

    /// Figures of the read cache, where there is one.
    pub(crate) fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(CachedProvider::stats)
    }

    /// The sharded store, for templates that shard.
    pub(crate) fn sharding(&self) -> Option<&ShardingProvider> {
        self.sharding.as_ref()
    }

    /// One balancing pass over the sharded store (`None` when the store is not sharded).
    /// Binaries no metadata refers to are left to garbage collection.
    pub async fn balance(&self) -> Result<Option<BalanceReport>> {
        let Some(sharding) = &self.sharding else {
            return Ok(None);
        };
        let metadata = self.metadata.clone();
        let wanted: Wanted = Arc::new(move |digest| {
            let metadata = metadata.clone();
            Box::pin(async move {
                let lookup = ChecksumLookup::Sha256(digest);
                Ok(metadata.find_binary(lookup).await?.is_some())
            })
        });
        sharding.balance(Some(wanted)).await.map(Some)
    }

    /// This service with other locks (benchmark builds: measuring the cost of locking).
    #[cfg(feature = "bench")]
    pub fn with_locks(mut self, locks: Locks) -> Self {
        self.locks = locks;
        self
    }

    /// Garbage collection's removals, under the removal lock `removal`: binary rows nothing
    /// refers to, then stored objects without a row; each one under the binary's lock,
    /// checked again there, and removed only past the fence of both locks (a collection that
    /// lost either lease stops rather than remove bytes a deploy may hold by now).
    async fn remove_unreferenced(&self, removal: &LockGuard, report: &mut GcReport) -> Result<()> {
        // Bytes written or deployed again within the grace period are left alone: a deploy
        // of identical bytes may be between storing them and recording them.
        let cutoff = SystemTime::now() - self.orphan_grace;
        loop {
            let batch = self.metadata.unreferenced_binaries(GC_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            let mut removed_any = false;
            for binary in batch {
                let digest = binary.checksums.sha256;
                let collected = self
                    .under_lock_with(LockName::Binary(digest), async |binary| {
                        match self.provider.head(&digest).await {
                            Ok(object) if object.last_modified > cutoff => return Ok(Some(false)),
                            Ok(_) | Err(Error::NotFound { .. }) => {}
                            // Its store cannot be asked now (a mount that is down): leave it
                            // for a later collection rather than stop this one.
                            Err(e) if e.is_retryable() => {
                                tracing::warn!(%digest, error = %e, "garbage collection skips a binary it cannot check now");
                                return Ok(None);
                            }
                            Err(e) => return Err(e),
                        }
                        if !self.metadata.delete_binary_if_unreferenced(&digest).await? {
                            return Ok(Some(false));
                        }
                        self.locks.fence(&[removal, binary]).await?;
                        self.provider.delete(&digest).await?;
                        Ok(Some(true))
                    })
                    .await?;
                match collected {
                    Some(true) => {
                        report.binaries_removed += 1;
                        report.bytes_freed += binary.size;
                        removed_any = true;
                    }
                    Some(false) => {}
                    None => report.binaries_skipped += 1,
                }
                self.gc_reached("binaries", report);
            }
            if !removed_any {
                break;
            }
        }
        self.gc_reached("orphans", report);
        self.remove_orphans(removal, cutoff, false, |size| {
            report.orphans_removed += 1;
            report.bytes_freed += size;
            self.gc_reached("orphans", report);
        })
        .await?;
        Ok(())
    }

    /// Removes (or, in a dry run, only counts) the stored objects older than `cutoff` that no
    /// binary row names, each under its binary's lock and fenced by `removal`; `found` is told
    /// each one's size. Returns how many objects were looked at.
    pub(crate) async fn remove_orphans(
        &self,
        removal: &LockGuard,
        cutoff: SystemTime,
        dry_run: bool,
        mut found: impl FnMut(u64),
    ) -> Result<u64> {
        let mut objects = self.provider.list();
        let mut checked = 0;
        while let Some(object) = objects.try_next().await? {
            checked += 1;
            if object.last_modified > cutoff {
                continue;
            }
            let lookup = ChecksumLookup::Sha256(object.digest);
            if self.metadata.find_binary(lookup).await?.is_some() {
                continue;
            }
            if dry_run {
                found(object.size);
                continue;
            }
            let removed = self
                .under_lock_with(LockName::Binary(object.digest), async |binary| {
                    // Asked of the primary: a replica may not have the latest deploy yet.
                    if self.metadata.binary_recorded(&object.digest).await? {
                        return Ok(false);
                    }
                    self.locks.fence(&[removal, binary]).await?;
                    self.provider.delete(&object.digest).await?;
                    Ok(true)
                })
                .await?;
            if removed {
                found(object.size);
            }
        }
        Ok(checked)
    }

    /// How far garbage collection got on this node (the running one, and the last one; for
    /// the CLI, which runs it, and [`Self::task_progress`]).
    pub fn gc_progress(&self) -> GcProgress {
        self.gc_progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// The progress of this node's long tasks (administrators only): garbage collection and,
    /// on a sharded store, balancing.
    pub fn task_progress(
        &self,
        caller: &Caller,
    ) -> Result<(GcProgress, Option<stowage_core::sharding::BalanceProgress>)> {
        self.security
            .require_admin(caller, "read the progress of tasks")?;
        Ok((self.gc_progress(), self.balance_progress()))
    }

    /// How far balancing got on this node, on a sharded store (for the CLI, which runs it).
    pub fn balance_progress(&self) -> Option<stowage_core::sharding::BalanceProgress> {
        self.sharding
            .as_ref()
            .map(ShardingProvider::balance_progress)
    }

    /// Notes how far the running collection got.
    fn gc_reached(&self, phase: &'static str, report: &GcReport) {
        if let Ok(mut progress) = self.gc_progress.lock() {
            progress.phase = phase;
            progress.current = report.clone();
        }
    }

    /// Removes what nothing refers to: trash older than its retention, binaries without
    /// artifacts or trash entries, and stored objects without a metadata row older than the
    /// orphan grace period. Its progress is in [`Self::gc_progress`] meanwhile.
    pub async fn gc(&self) -> Result<GcReport> {
        if let Ok(mut progress) = self.gc_progress.lock() {
            progress.running = true;
            progress.phase = "trash";
            progress.started_ms = now_ms();
            progress.current = GcReport::default();
        }
        let done = self.collect().await;
        if let Ok(mut progress) = self.gc_progress.lock() {
            progress.running = false;
            progress.phase = "";
            if let Ok(report) = &done {
                progress.last = Some(report.clone());
            }
        }
        done
    }

    async fn collect(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        // Also with the trash disabled: what it held before drains at its retention.
        let retention = i64::try_from(self.trash_retention.as_millis()).unwrap_or(i64::MAX);
        report.trash_purged = self
            .metadata
            .empty_trash(Some(now_ms().saturating_sub(retention)))
            .await?;
        self.gc_reached("binaries", &report);
        // One collection removes at a time (serve's task and `stowage gc` alike), counted
        // before it removes anything: what a deploy compares its witness with.
        self.under_lock_with(Self::gc_removals(), async |removal| {
            self.locks.count_gc_run().await?;
            self.remove_unreferenced(removal, &mut report).await
        })
        .await?;
        self.gc_reached("uploads", &report);
        (report.upload_sessions_expired, report.stale_uploads) = self.clean_uploads().await?;
        self.gc_reached("staging", &report);
        // Staging older than any upload can take (temporary files on this node's disks,
        // staging objects of GCS and Azure) was left by a crash. A store that is away now is
        // swept by a later collection.
        let stale_age = self.session_expiry + self.orphan_grace.max(Duration::from_secs(3600));
        let age = StagingAge {
            local: stale_age,
            shared: Some(stale_age),
        };
        match self.provider.clean_staging(age).await {
            Ok(n) => report.stale_uploads.staging_objects += n,
            Err(e) => tracing::warn!(error = %e, "could not sweep staging"),
        }
        // As in Artifactory, balancing follows collection (which removed the copies that
        // need no balancing). A pass already running is left to finish.
        self.gc_reached("balancing", &report);
        report.balancing = match self.balance().await {
            Err(Error::Conflict(reason)) => {
                tracing::info!(%reason, "balancing after garbage collection skipped");
                None
            }
            other => other?,
        };
        tracing::info!(?report, "garbage collection finished");
        metrics::counter!("stowage_gc_runs_total").increment(1);
        metrics::counter!("stowage_gc_binaries_removed_total").increment(report.binaries_removed);
        metrics::counter!("stowage_gc_bytes_freed_total").increment(report.bytes_freed);
        metrics::counter!("stowage_gc_trash_purged_total").increment(report.trash_purged);
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
