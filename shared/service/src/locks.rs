//! Locks shared by every node: leased rows in the metadata database, so that nodes that share
//! a database (and a filestore) order their metadata changes, and a lock held by a node that
//! died frees itself when its lease runs out. A lock not obtained within the configured wait is
//! `Error::Unavailable` (503 with Retry-After), never a hang.
//!
//! On SQLite, the single-node engine, locks live in the process instead: one process owns the
//! database (the data-directory lock), so a mutex per name orders the same operations without
//! the database write (and fsync) each lease row costs there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256 as Sha256Hasher};
use stowage_core::{ArtifactPath, Error, RepoKey, Result, Sha256};
use stowage_metadata::{Engine, Metadata, is_conflict};
use tokio::task::JoinHandle;

/// What can be locked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockName {
    /// An artifact path (a file or a folder); stored hashed, so any length fits.
    Path(String),
    /// A binary, by digest.
    Binary(Sha256),
    /// A repository's configuration.
    Repository(RepoKey),
    /// An upload session, by id, so only one node completes or aborts it.
    UploadSession(String),
    /// Anything else (cluster-wide tasks).
    Named(&'static str),
}

impl LockName {
    /// The lock of `repo/path`.
    pub fn path(repo: &RepoKey, path: &ArtifactPath) -> Self {
        let digest = Sha256Hasher::digest(format!("{repo}/{path}").as_bytes());
        LockName::Path(hex::encode(digest))
    }

    pub(crate) fn key(&self) -> String {
        match self {
            LockName::Path(h) => format!("path:{h}"),
            LockName::Binary(d) => format!("binary:{d}"),
            LockName::Repository(key) => format!("repo:{key}"),
            LockName::UploadSession(id) => format!("upload:{id}"),
            LockName::Named(n) => format!("task:{n}"),
        }
    }
}

/// Lock settings.
#[derive(Debug, Clone)]
pub struct LockSettings {
    /// How long a lease lasts without renewal; a dead node's locks free themselves after it.
    pub lease: Duration,
    /// How long to wait for a lock before giving up with a 503.
    pub wait: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(30),
        }
    }
}

/// Takes and releases leased locks for one node.
#[derive(Debug, Clone)]
pub struct Locks {
    metadata: Metadata,
    node_id: String,
    settings: LockSettings,
    /// Off only in benchmark builds, to measure what locking costs.
    enabled: bool,
    /// In-process locks, for SQLite.
    local: Option<Arc<LocalLocks>>,
}

/// One mutex per lock name, created on demand and dropped when nobody holds or waits for it.
#[derive(Debug, Default)]
struct LocalLocks {
    names: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Garbage collection's removal runs ([`Locks::gc_runs`]), kept in this process with
    /// the locks it is read with.
    gc_runs: std::sync::atomic::AtomicI64,
}

impl LocalLocks {
    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A held in-process lock.
#[derive(Debug)]
struct LocalHeld {
    locks: Arc<LocalLocks>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LocalHeld {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut names = self.locks.names();
        // Only the map refers to it: nobody holds or waits for this name any more.
        if names
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            names.remove(&self.key);
        }
    }
}

/// A held lock: renewed in the background while held; [`LockGuard::release`] frees it at
/// once, and dropping it frees it in the background (or its lease runs out).
#[derive(Debug)]
pub struct LockGuard {
    held: Option<Held>,
    local: Option<LocalHeld>,
}

#[derive(Debug)]
struct Held {
    metadata: Metadata,
    key: String,
    /// This acquisition: the node and a random number, so that a lease lost and taken again
    /// (by another task of the same node, even) is never mistaken for this one.
    owner: String,
    renewer: JoinHandle<()>,
    /// Set by the renewer when it found the lease gone.
    lost: Arc<AtomicBool>,
    /// How much of the lease must be left for [`Locks::fence`] to pass.
    margin: Duration,
}

impl Held {
    /// Stops renewing and deletes the lock row (a lease left behind expires by itself).
    async fn unlock(self) {
        self.renewer.abort();
        if let Err(e) = self.metadata.unlock(&self.key, &self.owner).await {
            tracing::warn!(lock = %self.key, error = %e, "could not release a lock; its lease will expire");
        }
    }
}

impl LockGuard {
    /// Whether this lock was found lost (its lease ran out and may have been taken).
    pub fn is_lost(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.lost.load(Ordering::SeqCst))
    }

    /// Releases the lock and waits until the database has it released.
    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.unlock().await;
        }
        drop(self.local.take());
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        held.renewer.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(held.unlock());
        }
    }
}

/// Releases several locks, in reverse order of taking.
pub async fn release_all(guards: Vec<LockGuard>) {
    for guard in guards.into_iter().rev() {
        guard.release().await;
    }
}

impl Locks {
    /// Locks for the node `node_id`.
    pub fn new(metadata: Metadata, node_id: impl Into<String>, settings: LockSettings) -> Self {
        let local = (metadata.engine() == Engine::Sqlite).then(Arc::default);
        Self {
            metadata,
            node_id: node_id.into(),
            settings,
            enabled: true,
            local,
        }
    }

    /// Locks that lock nothing: benchmark builds only, to measure the cost of locking.
    #[cfg(feature = "bench")]
    pub fn disabled(metadata: Metadata) -> Self {
        Self {
            enabled: false,
            ..Self::new(metadata, "bench", LockSettings::default())
        }
    }

    /// How many garbage collections have begun removing binaries: in this process where the
    /// locks are (one process owns a SQLite database), else in the database. Read with
    /// [`Self::held`] of the removal lock, it tells a deploy whether its bytes may have been
    /// removed (docs/durability.md).
    pub async fn gc_runs(&self) -> Result<i64> {
        match &self.local {
            Some(local) => Ok(local.gc_runs.load(std::sync::atomic::Ordering::SeqCst)),
            None => self.metadata.gc_runs().await,
        }
    }

    /// Counts one more collection that begins removing binaries (under the removal lock,
    /// before it removes any).
    pub async fn count_gc_run(&self) -> Result<()> {
        match &self.local {
            Some(local) => {
                local
                    .gc_runs
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            None => self.metadata.count_gc_run().await,
        }
    }

    /// In one step, what a deploy notes of garbage collection before it stores its bytes:
    /// [`Self::gc_runs`], and whether someone holds `removal` now (in this process, or as a
    /// lock row in the database, live or expired: its holder may have died, or lost its lease
    /// and still be at work). Locking disabled: nobody holds it.
    pub async fn gc_witness(&self, removal: &LockName) -> Result<(i64, bool)> {
        let key = removal.key();
        match &self.local {
            Some(local) => {
                let mutex = local.names().get(&key).cloned();
                let held = self.enabled && mutex.is_some_and(|m| m.try_lock().is_err());
                Ok((
                    local.gc_runs.load(std::sync::atomic::Ordering::SeqCst),
                    held,
                ))
            }
            None => {
                let (runs, held) = self.metadata.gc_witness(&key).await?;
                Ok((runs, self.enabled && held))
            }
        }
    }

    /// Waits (polling with backoff) for `name`, up to the configured wait.
    pub async fn lock(&self, name: &LockName) -> Result<LockGuard> {
        let started = std::time::Instant::now();
        let locked = self.acquire(name).await;
        metrics::histogram!("stowage_lock_wait_seconds").record(started.elapsed().as_secs_f64());
        if locked.is_err() {
            metrics::counter!("stowage_lock_timeouts_total").increment(1);
        }
        locked
    }

    /// [`Self::lock`], untimed.
    async fn acquire(&self, name: &LockName) -> Result<LockGuard> {
        if !self.enabled {
            return Ok(LockGuard {
                held: None,
                local: None,
            });
        }
        let key = name.key();
        if let Some(locks) = &self.local {
            let mutex = Arc::clone(locks.names().entry(key.clone()).or_default());
            let waited = tokio::time::timeout(self.settings.wait, mutex.lock_owned()).await;
            // The held or timed-out lock's drop tidies the map.
            let mut local = LocalHeld {
                locks: Arc::clone(locks),
                key,
                guard: None,
            };
            return match waited {
                Ok(guard) => {
                    local.guard = Some(guard);
                    Ok(LockGuard {
                        held: None,
                        local: Some(local),
                    })
                }
                Err(_) => Err(Error::Unavailable(format!(
                    "{} is locked by another operation (waited {} s); retry",
                    describe(name),
                    self.settings.wait.as_secs()
                ))),
            };
        }
        let owner = format!("{}:{:016x}", self.node_id, rand::random::<u64>());
        let deadline = tokio::time::Instant::now() + self.settings.wait;
        let mut pause = Duration::from_millis(2);
        loop {
            match self
                .metadata
                .try_lock(&key, &owner, self.settings.lease)
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                // A deadlock or serialization failure between two nodes racing for the same row
                // (InnoDB reports them on concurrent inserts): try again like a held lock.
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(lock = %key, error = %e, "lock attempt failed; retrying");
                }
                // The database itself is away (no connection within acquire_timeout_secs):
                // say so now, rather than wait out the lock wait and blame another holder.
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Error::Unavailable(format!(
                    "{} is locked by another operation (waited {} s); retry",
                    describe(name),
                    self.settings.wait.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (metadata, key, owner) = (self.metadata.clone(), key.clone(), owner.clone());
            let (lease, lost) = (self.settings.lease, Arc::clone(&lost));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match metadata.renew_lock(&key, &owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Its holder's fenced acts (garbage collection's removals) stop.
                            lost.store(true, Ordering::SeqCst);
                            tracing::error!(lock = %key, "a held lock's lease was lost; fenced work under it stops");
                            return;
                        }
                        Err(e) => tracing::warn!(lock = %key, error = %e, "could not renew a lock"),
                    }
                }
            })
        };
        Ok(LockGuard {
            held: Some(Held {
                metadata: self.metadata.clone(),
                key,
                owner,
                renewer,
                lost,
                margin: self.settings.lease / 3,
            }),
            local: None,
        })
    }

    /// Passes only while every one of `guards` is still held, with a third of its lease left
    /// by the database's clock: what a holder checks right before an act that must not happen
    /// once a lock may have passed to another holder (a removal while a deploy of the same
    /// bytes holds the binary's lock). A process paused past its lease, or one whose renewals
    /// failed, is refused here with a 503-kind error instead of acting. In-process locks
    /// (SQLite) cannot be lost.
    pub async fn fence(&self, guards: &[&LockGuard]) -> Result<()> {
        let held: Vec<&Held> = guards.iter().filter_map(|g| g.held.as_ref()).collect();
        let Some(first) = held.first() else {
            return Ok(());
        };
        let lost = |key: &str| {
            Error::Unavailable(format!(
                "this node lost its lease on {key} (paused, or the database unreachable, for \
                 longer than lock_lease_secs); it stopped rather than act without it"
            ))
        };
        if let Some(h) = held.iter().find(|h| h.lost.load(Ordering::SeqCst)) {
            return Err(lost(&h.key));
        }
        let pairs: Vec<(&str, &str)> = held
            .iter()
            .map(|h| (h.key.as_str(), h.owner.as_str()))
            .collect();
        if self.metadata.leases_held(&pairs, first.margin).await? {
            Ok(())
        } else {
            for h in &held {
                h.lost.store(true, Ordering::SeqCst);
            }
            let keys: Vec<&str> = held.iter().map(|h| h.key.as_str()).collect();
            Err(lost(&keys.join(", ")))
        }
    }

    /// `name` if it is free now, without waiting (`None`: held, or the database is away).
    pub async fn try_lock(&self, name: &LockName) -> Option<LockGuard> {
        let now = Self {
            settings: LockSettings {
                wait: Duration::ZERO,
                ..self.settings.clone()
            },
            ..self.clone()
        };
        now.lock(name).await.ok()
    }

    /// Takes several locks in one global order (so two callers never wait on each other).
    pub async fn lock_all(&self, mut names: Vec<LockName>) -> Result<Vec<LockGuard>> {
        names.sort();
        names.dedup();
        let mut guards = Vec::with_capacity(names.len());
        for name in &names {
            guards.push(self.lock(name).await?);
        }
        Ok(guards)
    }
}

fn describe(name: &LockName) -> String {
    match name {
        LockName::Path(_) => "the path".into(),
        LockName::Binary(d) => format!("binary {d}"),
        LockName::Repository(key) => format!("repository {key:?}"),
        LockName::UploadSession(id) => format!("upload session {id}"),
        LockName::Named(n) => format!("task {n}"),
    }
}
