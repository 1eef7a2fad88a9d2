//! The eventual provider (templates `s3-storage-v3`, `google-storage`, `azure-blob-storage`; with
//! copies on other nodes, the `cluster-` ones and `cluster-file-system`: see `cluster.rs`): a
//! durable write-behind queue in front of a slow or remote backend. An upload is acknowledged
//! once its bytes are fsynced in `lenientLimit` of the queue directories; workers then hand each queued
//! binary to the backend, with retries and backoff, and remove it from the queue only after the
//! backend confirmed. Reads are served from the queue while an upload is pending. The queue is
//! plain directories in the filesystem provider's layout, so a restart recovers it by listing.
//!
//! It must never drop a queued binary because the backend failed: a binary leaves the queue
//! only when the backend holds it (or when it is deleted).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Notify, Semaphore};

mod cluster;

use cluster::{Attempt, ClusterPart};
pub use cluster::{
    ClusterQueueSettings, ClusterQueueStats, NodeQueueStats, NodesOnly, PeerLink, QueueLedger,
    QueueNode, QueuedCopy, StagedCopy,
};

use crate::BinaryProviderExt as _;
use crate::fanout::FanOutSettings;
use crate::fs::FileSystemProvider;
use crate::quorum::{Refused, TakeBack, put_quorum};
use crate::signing::{DownloadSigner, DownloadUrlRequest, SignedUrl};
use crate::{
    BinaryProvider, ByteStream, Error, GetOptions, GetResult, Health, KeyLayout, ObjectMeta,
    PresignedUploads, PutOptions, PutResult, Result, Sha256, StagingAge,
};

/// How one upload is written to several queue directories at once: each may fall 4 MiB behind,
/// and one that takes nothing for 30 s is given up (the others may still reach lenientLimit).
const FAN_OUT: FanOutSettings = FanOutSettings {
    buffer_bytes: 4 << 20,
    wait_timeout: Duration::from_secs(30),
};
/// Folder, in a queue directory, where copies the backend refused as corrupt are kept.
const QUARANTINE_DIR: &str = "_corrupt";

/// How the queue is laid out and drained. Names follow Artifactory's eventual provider.
#[derive(Debug, Clone)]
pub struct EventualSettings {
    /// Queue directories; each upload is written to all of them (each can be a small disk).
    pub dirs: Vec<PathBuf>,
    /// Copies that must be durable before an upload is acknowledged; 0 means every directory.
    pub lenient_limit: usize,
    /// Uploads to the backend in flight at once (`numberOfThreads`).
    pub number_of_threads: usize,
    /// How often the queue is scanned when nothing wakes the dispatcher (`dispatcherInterval`).
    pub dispatcher_interval: Duration,
    /// Longest wait between two attempts at one binary; attempts back off exponentially from
    /// one second up to this.
    pub max_retry_backoff: Duration,
    /// For the cluster templates: copies on other nodes' queue disks. Then `dirs` is this
    /// node's one queue directory, and the limit that counts is the cluster's
    /// ([`ClusterQueueSettings::lenient_limit`]); `lenient_limit` here is not read.
    pub cluster: Option<ClusterQueueSettings>,
}

/// Queue figures for `/api/storageinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Binaries waiting for the backend.
    pub depth: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest waiting binary, in seconds.
    pub oldest_age_secs: Option<u64>,
    /// Uploads to the backend running now.
    pub uploading: u64,
    /// Binaries whose last attempt failed and that wait for their next try.
    pub retrying: u64,
    /// Cluster queue: binaries this node holds with fewer than `redundancy` live copies (as
    /// of its last scan).
    pub under_replicated: u64,
    /// Binaries handed to the backend since start.
    pub uploaded: u64,
    /// The most recent failure, for a person to act on.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Failure {
    attempts: u32,
    next_try: Instant,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Binaries queued (or deferred for want of a worker) since the last full scan: handed to
    /// the workers without listing the queue directories again.
    fresh: VecDeque<ObjectMeta>,
    in_flight: HashSet<Sha256>,
    failures: HashMap<Sha256, Failure>,
    uploaded: u64,
    last_error: Option<String>,
    under_replicated: u64,
}

#[derive(Debug)]
struct Inner {
    queues: Vec<FileSystemProvider>,
    backend: Arc<dyn BinaryProvider>,
    lenient_limit: usize,
    settings: EventualSettings,
    wake: Notify,
    workers: Arc<Semaphore>,
    state: Mutex<QueueState>,
    /// How a refused upload's queue copies are taken back (the service's guard).
    take_back: std::sync::OnceLock<Arc<dyn TakeBack>>,
    /// The cluster templates' copies on other nodes.
    cluster: Option<ClusterPart>,
}

/// A durable write-behind queue in front of `backend`.
#[derive(Debug, Clone)]
pub struct EventualProvider {
    inner: Arc<Inner>,
}

impl fmt::Display for EventualProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eventual({})", self.inner.backend)
    }
}

impl EventualProvider {
    /// Has a refused upload's queue copies taken back through `guard` (once; later calls are
    /// ignored), so that the removal cannot race a concurrent upload of the same bytes.
    pub fn guard_take_back(&self, guard: Arc<dyn TakeBack>) {
        let _ = self.inner.take_back.set(guard);
    }

    /// Opens (creating them if needed) the queue directories in front of `backend`.
    pub fn new(
        backend: Arc<dyn BinaryProvider>,
        layout: KeyLayout,
        settings: EventualSettings,
    ) -> Result<Self> {
        if settings.dirs.is_empty() {
            return Err(Error::InvalidInput(
                "the eventual queue needs at least one directory".into(),
            ));
        }
        let lenient_limit = match settings.lenient_limit {
            // A cluster queue's limit counts nodes' copies (checked by its own part).
            _ if settings.cluster.is_some() => 1,
            0 => settings.dirs.len(),
            n if n <= settings.dirs.len() => n,
            n => {
                return Err(Error::InvalidInput(format!(
                    "eventual lenientLimit is {n} but only {} queue directories are configured; \
                     it must be between 0 (all) and the number of directories",
                    settings.dirs.len()
                )));
            }
        };
        let cluster = match settings.cluster.clone() {
            Some(_) if settings.dirs.len() != 1 => {
                return Err(Error::InvalidInput(format!(
                    "a cluster queue keeps one queue directory per node (its copies are on other \
                     nodes), but {} are configured",
                    settings.dirs.len()
                )));
            }
            Some(c) => Some(ClusterPart::new(c)?),
            None => None,
        };
        if settings.number_of_threads == 0 {
            return Err(Error::InvalidInput(
                "eventual numberOfThreads must be at least 1".into(),
            ));
        }
        let queues = settings
            .dirs
            .iter()
            .map(|dir| FileSystemProvider::new(dir, layout))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                take_back: std::sync::OnceLock::new(),
                cluster,
                queues,
                backend,
                lenient_limit,
                workers: Arc::new(Semaphore::new(settings.number_of_threads)),
                settings,
                wake: Notify::new(),
                state: Mutex::new(QueueState::default()),
            }),
        })
    }

    /// The backend the queue drains into.
    pub fn backend(&self) -> &Arc<dyn BinaryProvider> {
        &self.inner.backend
    }

    /// Starts the dispatcher. It lists the queue directories at start (recovering what an
    /// earlier run left) and every `dispatcherInterval` (retries, copies made by other
    /// processes); in between it hands each newly queued binary to a worker as soon as one is
    /// free, without listing anything. Abort the handle to stop it; an upload cut short stays
    /// queued and is retried by the next start.
    pub fn spawn_dispatcher(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut next_scan = Instant::now();
            loop {
                let candidates = if Instant::now() >= next_scan {
                    next_scan = Instant::now() + this.inner.settings.dispatcher_interval;
                    this.lock_state().fresh.clear(); // the scan sees them too
                    match this.queued().await {
                        Ok(all) => {
                            // What left the queue needs no retry.
                            this.lock_state()
                                .failures
                                .retain(|d, _| all.contains_key(d));
                            match this.tend_cluster(&all).await {
                                Ok(under) => this.lock_state().under_replicated = under,
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not tend the cluster queue")
                                }
                            }
                            all.into_values().collect()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not scan the eventual queue");
                            VecDeque::new()
                        }
                    }
                } else {
                    std::mem::take(&mut this.lock_state().fresh)
                };
                if !this.keeps_copies() {
                    this.dispatch(candidates);
                }
                tokio::select! {
                    () = this.inner.wake.notified() => {}
                    () = tokio::time::sleep_until(next_scan.into()) => {}
                }
            }
        })
    }

    /// Starts an upload for each candidate that is neither in flight nor backing off, as
    /// worker slots allow; the rest wait in `fresh` for a worker to finish.
    fn dispatch(&self, mut candidates: VecDeque<ObjectMeta>) {
        while let Some(meta) = candidates.pop_front() {
            let ready = {
                let state = self.lock_state();
                let backing_off = state
                    .failures
                    .get(&meta.digest)
                    .is_some_and(|f| f.next_try > Instant::now());
                !backing_off && !state.in_flight.contains(&meta.digest)
            };
            if !ready {
                continue;
            }
            let Ok(permit) = self.inner.workers.clone().try_acquire_owned() else {
                // Every worker is busy; a finishing one wakes the dispatcher.
                candidates.push_front(meta);
                let mut state = self.lock_state();
                for deferred in candidates.into_iter().rev() {
                    state.fresh.push_front(deferred);
                }
                return;
            };
            self.lock_state().in_flight.insert(meta.digest);
            let this = self.clone();
            tokio::spawn(async move {
                let outcome = match this.ledger() {
                    Some((_, ledger)) => this.attempt_claimed(ledger, &meta).await,
                    None => this.upload(&meta).await.map(|()| Attempt::Done),
                };
                this.finish(&meta, outcome);
                drop(permit);
                this.inner.wake.notify_one();
            });
        }
    }

    /// Hands one binary to the backend from the first intact queue copy.
    async fn upload(&self, meta: &ObjectMeta) -> Result<()> {
        let mut last = None;
        for queue in &self.inner.queues {
            let path = queue.path_of(&meta.digest);
            if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                continue;
            }
            match self
                .inner
                .backend
                .put_file(&path, &meta.digest, meta.size)
                .await
            {
                Ok(_) => {
                    for queue in &self.inner.queues {
                        queue.delete(&meta.digest).await?;
                    }
                    return Ok(());
                }
                // The backend says the bytes are not what their name says. Only our own hash
                // of the queued copy proves it: a refusal can also be damage on the way (or a
                // backend that misreports), and quarantining an intact copy would make an
                // acknowledged binary unreadable.
                Err(e @ Error::ChecksumMismatch { .. }) => {
                    let actual = crate::sha256_of_file(&path).await?;
                    if actual == meta.digest {
                        return Err(Error::Storage {
                            backend: self.inner.backend.to_string(),
                            key: meta.digest.to_string(),
                            source: format!(
                                "the backend refused the queued copy as damaged, but it hashes \
                                 to its name (damaged on the way?); it stays queued: {e}"
                            )
                            .into(),
                            retryable: true,
                        });
                    }
                    tracing::error!(digest = %meta.digest, %actual, path = %path.display(), error = %e,
                        "a queued copy is corrupt (it hashes to another digest); it is \
                         quarantined and another copy is tried");
                    quarantine(queue, &path).await;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(()), // deleted meanwhile: nothing left to upload
        }
    }

    fn finish(&self, meta: &ObjectMeta, outcome: Result<Attempt>) {
        let mut state = self.lock_state();
        state.in_flight.remove(&meta.digest);
        match outcome {
            // Another node uploads it now; looked at again at a later scan.
            Ok(Attempt::ClaimedElsewhere) => {
                let attempts = state.failures.get(&meta.digest).map_or(0, |f| f.attempts);
                state.failures.insert(
                    meta.digest,
                    Failure {
                        attempts,
                        next_try: Instant::now() + self.inner.settings.dispatcher_interval,
                    },
                );
            }
            Ok(Attempt::Done) => {
                state.failures.remove(&meta.digest);
                state.uploaded += 1;
                tracing::debug!(digest = %meta.digest, size = meta.size, "queued binary uploaded");
            }
            Err(e) => {
                let attempts = state.failures.get(&meta.digest).map_or(0, |f| f.attempts) + 1;
                let backoff = Duration::from_secs(1u64 << attempts.min(20))
                    .min(self.inner.settings.max_retry_backoff);
                tracing::warn!(digest = %meta.digest, attempts, retry_in = ?backoff,
                    retryable = e.is_retryable(), error = %e,
                    "uploading a queued binary failed; it stays queued");
                state.last_error = Some(format!("{}: {e}", meta.digest));
                state.failures.insert(
                    meta.digest,
                    Failure {
                        attempts,
                        next_try: Instant::now() + backoff,
                    },
                );
            }
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves only counters behind; keep going.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every queued binary, once, with its oldest time across the queue directories.
    async fn queued(&self) -> Result<HashMap<Sha256, ObjectMeta>> {
        let mut all: HashMap<Sha256, ObjectMeta> = HashMap::new();
        let mut failed = None;
        for queue in &self.inner.queues {
            let mut list = queue.list();
            loop {
                match list.try_next().await {
                    Ok(Some(meta)) => {
                        all.entry(meta.digest)
                            .and_modify(|m| {
                                m.last_modified = m.last_modified.min(meta.last_modified);
                            })
                            .or_insert(meta);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // One unreadable queue disk must not hide what the others hold.
                        tracing::warn!(queue = %queue, error = %e, "cannot list a queue directory");
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        match failed {
            Some(e) if all.is_empty() && self.inner.queues.len() == 1 => Err(e),
            _ => Ok(all),
        }
    }

    /// Depth, bytes and age of the queue, and what the workers are doing.
    pub async fn stats(&self) -> Result<QueueStats> {
        let queued = self.queued().await?;
        let now = SystemTime::now();
        let oldest = queued.values().map(|m| m.last_modified).min();
        let state = self.lock_state();
        Ok(QueueStats {
            depth: queued.len() as u64,
            bytes: queued.values().map(|m| m.size).sum(),
            oldest_age_secs: oldest.map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
            uploading: state.in_flight.len() as u64,
            retrying: state.failures.values().filter(|f| f.attempts > 0).count() as u64,
            under_replicated: state.under_replicated,
            uploaded: state.uploaded,
            last_error: state.last_error.clone(),
        })
    }

    /// Waits, with the dispatcher running, until the queue is empty or `within` has passed
    /// (a stopping node uploads what it holds before its disk goes away); returns what is
    /// still queued then. The queue is looked at every quarter second.
    pub async fn drain(&self, within: Duration) -> Result<QueueStats> {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats().await?;
            if stats.depth == 0 || Instant::now() >= deadline {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Removes staged uploads older than `older_than` from every queue directory.
    pub async fn clean_temp(&self, older_than: Duration) -> Result<usize> {
        let mut removed = 0;
        for queue in &self.inner.queues {
            removed += queue.clean_temp(older_than).await?;
        }
        Ok(removed)
    }
}

/// The backend's signer, for binaries the backend holds. A binary still in the queue may not be
/// at the backend yet (it leaves the queue only after the backend confirmed, so a queued one is
/// asked of the backend): when it is not, no URL can serve it, so signing answers `NotFound`
/// and the caller serves the bytes from the queue instead.
#[async_trait]
impl DownloadSigner for EventualProvider {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        let mut queued = false;
        for queue in &self.inner.queues {
            queued = queued || queue.exists(digest).await?;
        }
        queued = queued || self.queued_in_cluster(digest).await?;
        // A backend that cannot be asked now cannot serve a URL either: the queue serves.
        if queued && !self.inner.backend.exists(digest).await.unwrap_or(false) {
            return Err(Error::NotFound {
                what: format!("binary {digest} at the store (it is still queued for upload)"),
            });
        }
        let signer = self.inner.backend.download_signer().ok_or_else(|| {
            Error::Unsupported(format!("{} cannot sign download URLs", self.inner.backend))
        })?;
        signer.download_url(digest, request).await
    }
}

async fn quarantine(queue: &FileSystemProvider, path: &std::path::Path) {
    let dir = queue.root().join(QUARANTINE_DIR);
    let Some(name) = path.file_name() else { return };
    let moved = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(path, dir.join(name)).await
    };
    if let Err(e) = moved.await {
        tracing::error!(path = %path.display(), error = %e, "could not quarantine a corrupt queued copy");
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BinaryProvider for EventualProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        if self.inner.cluster.is_some() {
            return self.put_clustered(body, opts).await;
        }
        let queues = &self.inner.queues;
        let targets: Vec<&dyn BinaryProvider> =
            queues.iter().map(|q| q as &dyn BinaryProvider).collect();
        let guard = self
            .inner
            .take_back
            .get()
            .map(|g| g.as_ref() as &dyn TakeBack);
        let mut quorum = put_quorum(
            &targets,
            body,
            &opts,
            self.inner.lenient_limit,
            FAN_OUT,
            guard,
        )
        .await;
        match quorum.outcome {
            Ok(result) => {
                self.lock_state().fresh.push_back(ObjectMeta {
                    digest: result.checksums.sha256,
                    size: result.size,
                    last_modified: SystemTime::now(),
                });
                self.inner.wake.notify_one();
                Ok(result)
            }
            Err(Refused::Request(e)) => Err(e),
            // One queue directory: its own failure says it all.
            Err(Refused::TooFewCopies) if queues.len() == 1 && !quorum.failures.is_empty() => {
                Err(quorum.failures.swap_remove(0).1)
            }
            Err(Refused::TooFewCopies) => {
                let first = quorum
                    .failures
                    .first()
                    .map_or_else(|| "no copy was written".to_string(), |(_, e)| e.to_string());
                Err(Error::Storage {
                    backend: self.to_string(),
                    key: "-".into(),
                    source: format!(
                        "only {} of {} queue directories stored the upload and lenientLimit is \
                         {}: {first}",
                        quorum.stored,
                        queues.len(),
                        self.inner.lenient_limit
                    )
                    .into(),
                    retryable: true,
                })
            }
        }
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        for queue in &self.inner.queues {
            match queue.get_opts(digest, opts.clone()).await {
                Ok(found) => return Ok(found),
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::RangeNotSatisfiable { .. }) => return Err(e),
                Err(e) => tracing::warn!(%digest, error = %e, "reading a queued copy failed"),
            }
        }
        // Queued on another node: its copy, while the store may not have it yet.
        let range = opts.range.clone();
        if let Some(found) = self
            .read_from_peers(digest, |peer| {
                let range = range.clone();
                async move { peer.get_opts(digest, GetOptions { range }).await }
            })
            .await
        {
            return Ok(found);
        }
        self.inner.backend.get_opts(digest, opts).await
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        for queue in &self.inner.queues {
            if let Ok(meta) = queue.head(digest).await {
                return Ok(meta);
            }
        }
        if let Some(meta) = self
            .read_from_peers(digest, |peer| async move { peer.head(digest).await })
            .await
        {
            return Ok(meta);
        }
        self.inner.backend.head(digest).await
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        for queue in &self.inner.queues {
            queue.delete(digest).await?;
        }
        self.delete_in_cluster(digest).await?;
        self.lock_state().failures.remove(digest);
        self.inner.backend.delete(digest).await
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        // Other nodes' copies too (a cluster's): what a collection must see to find orphans.
        let queued = futures::stream::once(async move {
            let mut all = this.queued().await?;
            for meta in this.cluster_listing().await? {
                all.entry(meta.digest).or_insert(meta);
            }
            Ok(all)
        });
        let backend = self.inner.backend.clone();
        queued
            .map_ok(move |queued| {
                let seen: HashSet<Sha256> = queued.keys().copied().collect();
                let from_backend = backend
                    .list()
                    .try_filter(move |m| futures::future::ready(!seen.contains(&m.digest)));
                futures::stream::iter(queued.into_values().map(Ok)).chain(from_backend)
            })
            .try_flatten()
            .boxed()
    }

    async fn health(&self) -> Result<Health> {
        // The queue is what takes writes; a backend outage only delays the upload.
        self.inner.queues[0].health().await
    }

    async fn put_file(&self, path: &std::path::Path, sha256: &Sha256, size: u64) -> Result<bool> {
        // Into the queue like any upload; the workers send it on.
        crate::provider::put_file_as_stream(self, path, sha256, size).await
    }

    fn as_stager(&self) -> Option<&dyn crate::Stager> {
        None // acknowledging means queueing: the queue names what it holds by digest
    }

    fn download_signer(&self) -> Option<&dyn DownloadSigner> {
        // URLs point at the backend, where a binary still queued is not yet: the queue signs
        // only for binaries it no longer holds (see its `DownloadSigner`).
        self.inner
            .backend
            .download_signer()
            .map(|_| self as &dyn DownloadSigner)
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        // Session uploads go to the backend directly, past the queue.
        self.inner.backend.presigned_uploads()
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        let mut removed = self.clean_temp(age.local).await? as u64;
        removed += self.inner.backend.clean_staging(age).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::BinaryProviderExt;
    use crate::memory::InMemoryProvider;

    fn settings(dirs: Vec<PathBuf>, lenient_limit: usize) -> EventualSettings {
        EventualSettings {
            dirs,
            lenient_limit,
            number_of_threads: 2,
            dispatcher_interval: Duration::from_millis(20),
            max_retry_backoff: Duration::from_millis(50),
            cluster: None,
        }
    }

    #[tokio::test]
    async fn conformance_over_two_queue_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn BinaryProvider> = Arc::new(InMemoryProvider::new());
        let eventual = EventualProvider::new(
            backend,
            KeyLayout::default(),
            settings(vec![dir.path().join("q1"), dir.path().join("q2")], 0),
        )
        .expect("eventual");
        crate::conformance::run_all(Arc::new(eventual), 7).await;
    }

    #[tokio::test]
    async fn queued_binaries_drain_to_the_backend_and_leave_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = Arc::new(InMemoryProvider::new());
        let eventual = EventualProvider::new(
            memory.clone(),
            KeyLayout::default(),
            settings(vec![dir.path().join("q1"), dir.path().join("q2")], 2),
        )
        .expect("eventual");
        let data = crate::conformance::test_bytes(3, 100_000);
        let stored = eventual
            .put_bytes(data.clone(), Default::default())
            .await
            .expect("queued");
        let digest = stored.checksums.sha256;
        assert!(!memory.exists(&digest).await.expect("head"));
        assert_eq!(eventual.stats().await.expect("stats").depth, 1);
        // Served from the queue before the upload.
        assert_eq!(eventual.get_bytes(&digest, None).await.expect("get"), data);

        crate::testing::drain_queue(&eventual).await;
        assert_eq!(eventual.stats().await.expect("stats").depth, 0);
        assert_eq!(
            memory.get_bytes(&digest, None).await.expect("uploaded"),
            data
        );
        assert_eq!(eventual.get_bytes(&digest, None).await.expect("get"), data);
    }

    #[tokio::test]
    async fn no_url_is_signed_for_a_binary_still_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = Arc::new(InMemoryProvider::new());
        let backend: Arc<dyn BinaryProvider> = Arc::new(crate::signing::SignedProvider::new(
            memory.clone(),
            Arc::new(crate::testing::FixedSigner),
        ));
        let eventual = EventualProvider::new(
            backend,
            KeyLayout::default(),
            settings(vec![dir.path().join("q")], 1),
        )
        .expect("eventual");
        let data = crate::conformance::test_bytes(9, 10_000);
        let digest = eventual
            .put_bytes(data, Default::default())
            .await
            .expect("queued")
            .checksums
            .sha256;
        let request = DownloadUrlRequest {
            file_name: "x".into(),
            content_type: "application/octet-stream".into(),
            size: 10_000,
            extra_validity: Duration::ZERO,
        };
        let signer = eventual.download_signer().expect("the backend signs");
        assert!(
            matches!(
                signer.download_url(&digest, &request).await,
                Err(Error::NotFound { .. })
            ),
            "a queued binary is not at the store yet"
        );
        crate::testing::drain_queue(&eventual).await;
        let url = signer
            .download_url(&digest, &request)
            .await
            .expect("uploaded: signed");
        assert!(url.url.ends_with(&digest.to_hex()));
    }

    #[tokio::test]
    async fn lenient_limit_above_dirs_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn BinaryProvider> = Arc::new(InMemoryProvider::new());
        let err = EventualProvider::new(
            backend,
            KeyLayout::default(),
            settings(vec![dir.path().join("q1")], 2),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("lenientLimit is 2"), "{err}");
    }

    /// A queue over two directories, the second of which has been removed since.
    fn second_dir_lost(lenient_limit: usize) -> (tempfile::TempDir, EventualProvider) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn BinaryProvider> = Arc::new(InMemoryProvider::new());
        let (q1, q2) = (dir.path().join("q1"), dir.path().join("q2"));
        let eventual = EventualProvider::new(
            backend,
            KeyLayout::default(),
            settings(vec![q1, q2.clone()], lenient_limit),
        )
        .expect("eventual");
        std::fs::remove_dir_all(&q2).expect("remove q2");
        (dir, eventual)
    }

    #[tokio::test]
    async fn a_missing_queue_dir_below_lenient_limit_still_acknowledges() {
        let (_dir, eventual) = second_dir_lost(1);
        let data = crate::conformance::test_bytes(4, 10_000);
        let stored = eventual
            .put_bytes(data.clone(), Default::default())
            .await
            .expect("one copy is enough");
        assert_eq!(
            eventual
                .get_bytes(&stored.checksums.sha256, None)
                .await
                .expect("get"),
            data
        );
    }

    #[tokio::test]
    async fn too_few_copies_fail_and_leave_nothing_queued() {
        let (_dir, eventual) = second_dir_lost(2);
        let err = eventual
            .put_bytes(
                crate::conformance::test_bytes(5, 10_000),
                Default::default(),
            )
            .await
            .expect_err("two copies are required");
        assert!(err.to_string().contains("only 1 of 2"), "{err}");
        assert_eq!(eventual.stats().await.expect("stats").depth, 0);
    }

    /// A backend that refuses the next `refusals` queued files as damaged, whatever they hold
    /// (a proxy that breaks a response, a backend that misreports).
    #[derive(Debug)]
    struct Refusing {
        inner: InMemoryProvider,
        refusals: std::sync::atomic::AtomicU32,
    }

    impl std::fmt::Display for Refusing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refusing memory")
        }
    }

    #[async_trait]
    impl BinaryProvider for Refusing {
        async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(body, opts).await
        }
        async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
            self.inner.get_opts(digest, opts).await
        }
        async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
            self.inner.head(digest).await
        }
        async fn delete(&self, digest: &Sha256) -> Result<()> {
            self.inner.delete(digest).await
        }
        fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list()
        }
        async fn health(&self) -> Result<Health> {
            self.inner.health().await
        }
        async fn put_file(&self, path: &Path, sha256: &Sha256, size: u64) -> Result<bool> {
            let refuse = self
                .refusals
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if refuse {
                return Err(Error::ChecksumMismatch {
                    algorithm: crate::ChecksumAlgorithm::Sha256,
                    expected: sha256.to_string(),
                    actual: "something else (the backend says)".into(),
                });
            }
            self.inner.put_file(path, sha256, size).await
        }
    }

    fn quarantined(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(QUARANTINE_DIR)).map_or(0, Iterator::count)
    }

    #[tokio::test]
    async fn a_refusal_quarantines_only_a_copy_that_really_is_corrupt() {
        // One spurious refusal of an intact copy: it stays queued and uploads on retry.
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(Refusing {
            inner: InMemoryProvider::new(),
            refusals: 1.into(),
        });
        let q1 = dir.path().join("q1");
        let eventual = EventualProvider::new(
            backend.clone(),
            KeyLayout::default(),
            settings(vec![q1.clone()], 1),
        )
        .expect("eventual");
        let data = crate::conformance::test_bytes(11, 50_000);
        let digest = eventual
            .put_bytes(data.clone(), Default::default())
            .await
            .expect("queued")
            .checksums
            .sha256;
        crate::testing::drain_queue(&eventual).await;
        assert_eq!(quarantined(&q1), 0, "an intact copy is never quarantined");
        assert_eq!(
            backend
                .inner
                .get_bytes(&digest, None)
                .await
                .expect("uploaded"),
            data
        );
        assert_eq!(
            backend.refusals.load(std::sync::atomic::Ordering::SeqCst),
            0
        );

        // A copy damaged on disk (same size, other bytes) is quarantined; the other queue
        // directory's intact copy is uploaded instead.
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(Refusing {
            inner: InMemoryProvider::new(),
            refusals: 0.into(),
        });
        let (q1, q2) = (dir.path().join("q1"), dir.path().join("q2"));
        let eventual = EventualProvider::new(
            backend.clone(),
            KeyLayout::default(),
            settings(vec![q1.clone(), q2.clone()], 2),
        )
        .expect("eventual");
        let data = crate::conformance::test_bytes(12, 50_000);
        let digest = eventual
            .put_bytes(data.clone(), Default::default())
            .await
            .expect("queued")
            .checksums
            .sha256;
        let copy = eventual.inner.queues[0].path_of(&digest);
        let mut damaged = data.to_vec();
        damaged[100] ^= 0xff;
        std::fs::write(&copy, &damaged).expect("damage the first copy");
        crate::testing::drain_queue(&eventual).await;
        assert_eq!(quarantined(&q1), 1, "the damaged copy is set aside");
        assert_eq!(quarantined(&q2), 0);
        assert_eq!(
            backend
                .inner
                .get_bytes(&digest, None)
                .await
                .expect("uploaded"),
            data,
            "from the intact copy"
        );
    }
}
