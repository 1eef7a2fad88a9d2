//! Balancing: brings every binary of a sharded store back to `redundancy` copies after a mount
//! was down, a write was lenient, or a corrupt copy was dropped, and removes copies beyond it.
//! Each new copy is read from a healthy copy and stored with its digest and size declared, so
//! the target verifies it: a corrupt source is caught, dropped and another source used. A pass
//! stops after `maxBalancingRunTime`; the next one goes on from a fresh listing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use super::{Placement, ShardingProvider};
use crate::{BinaryProviderExt, Error, ExpectedChecksums, PutOptions, Result, Sha256};

/// Binaries repaired at once.
const BALANCE_CONCURRENCY: usize = 8;

/// Whether a binary is still wanted (referenced by metadata). Balancing does not restore
/// copies of binaries nothing refers to: garbage collection removes those.
pub type Wanted = Arc<dyn Fn(Sha256) -> BoxFuture<'static, Result<bool>> + Send + Sync>;

/// What a balancing pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceReport {
    /// Binaries found on the mounts that are up.
    pub total: u64,
    /// Binaries examined so far.
    pub checked: u64,
    /// Copies made, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Copies beyond the redundancy removed.
    pub removed: u64,
    /// Binaries left with fewer copies than the redundancy (no mount to take them, a failed
    /// copy, or the run time ran out).
    pub remaining: u64,
    /// Copies that could not be made.
    pub failed: u64,
    /// Whether every binary was examined within `maxBalancingRunTime`.
    pub complete: bool,
    pub elapsed_ms: u64,
}

/// Balancing as `/api/storageinfo` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceProgress {
    pub running: bool,
    /// The pass running now, as far as it got.
    pub current: Option<BalanceReport>,
    /// The last pass that finished.
    pub last: Option<BalanceReport>,
    /// Whether some binary may not have R copies (see [`ShardingProvider::needs_balancing`]).
    pub needs_balancing: bool,
}

#[derive(Debug, Default)]
pub(super) struct Tracker {
    running: AtomicBool,
    progress: Mutex<BalanceProgress>,
    /// Binaries per mount as the last pass listed them (`None`: that mount was not listed),
    /// and when.
    counts: Mutex<Option<(Vec<Option<u64>>, Instant)>>,
}

impl Tracker {
    pub(super) fn mount_counts(&self) -> Option<(Vec<Option<u64>>, Instant)> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, BalanceProgress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Clears the running flag however the pass ends.
struct Running<'a>(&'a Tracker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.progress().running = false;
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// What repairing one binary did.
#[derive(Debug, Default)]
struct Repair {
    copied: u64,
    copied_bytes: u64,
    removed: u64,
    failed: u64,
    remaining: bool,
}

impl ShardingProvider {
    /// Balancing's progress and last result.
    pub fn balance_progress(&self) -> BalanceProgress {
        let mut progress = self.inner.balance.progress().clone();
        progress.needs_balancing = self.needs_balancing();
        progress
    }

    /// One balancing pass. `Conflict` when a pass is already running in this process.
    pub async fn balance(&self, wanted: Option<Wanted>) -> Result<BalanceReport> {
        let tracker = &self.inner.balance;
        if tracker.running.swap(true, Ordering::SeqCst) {
            return Err(Error::Conflict(
                "a balancing pass is already running; its progress is in the storage figures"
                    .into(),
            ));
        }
        let _running = Running(tracker);
        let started = Instant::now();
        let deadline = started + self.inner.settings.max_balancing_run_time;
        // Set again below if this pass does not settle everything; uploads may set it meanwhile.
        self.inner.unbalanced.store(false, Ordering::Relaxed);
        {
            let mut progress = tracker.progress();
            progress.running = true;
            progress.current = Some(BalanceReport::default());
        }

        let placement = self.placement().await?;
        let r = self.inner.redundancy as u32;
        let total = placement.len() as u64;
        let update = |f: &dyn Fn(&mut BalanceReport)| {
            if let Some(current) = &mut tracker.progress().current {
                f(current);
            }
        };
        update(&|c| c.total = total);
        let balanced = total
            - placement
                .values()
                .filter(|(_, mask)| mask.count_ones() != r)
                .count() as u64;
        update(&|c| c.checked = balanced);

        let work = placement
            .into_iter()
            .filter(|(_, (_, mask))| mask.count_ones() != r);
        let mut repairs = futures::stream::iter(work)
            .map(|(digest, (size, mask))| {
                let wanted = wanted.clone();
                async move {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    Some(self.repair(digest, size, mask, wanted).await)
                }
            })
            .buffer_unordered(BALANCE_CONCURRENCY);
        let mut out_of_time = false;
        while let Some(repair) = repairs.next().await {
            let Some(repair) = repair else {
                out_of_time = true;
                update(&|c| c.remaining += 1);
                continue;
            };
            update(&|c| {
                c.checked += 1;
                c.copied += repair.copied;
                c.copied_bytes += repair.copied_bytes;
                c.removed += repair.removed;
                c.failed += repair.failed;
                c.remaining += u64::from(repair.remaining);
            });
        }
        let mut report = tracker.progress().current.take().unwrap_or_default();
        report.complete = !out_of_time;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !report.complete || report.remaining > 0 {
            self.inner.unbalanced.store(true, Ordering::Relaxed);
        }
        tracker.progress().last = Some(report.clone());
        tracing::info!(?report, "balancing pass finished");
        Ok(report)
    }

    /// Which mounts (that are up) hold which binaries.
    async fn placement(&self) -> Result<Placement> {
        let mut placement = Placement::new();
        let mut counts: Vec<Option<u64>> = vec![None; self.inner.mounts.len()];
        let usable = self.usable(false).await;
        if usable.is_empty() {
            return Err(Error::Unavailable(
                "every mount of the sharded store is down; nothing can be balanced".into(),
            ));
        }
        for i in usable {
            let mount = &self.inner.mounts[i];
            let mut list = mount.provider.list();
            let mut listed = 0u64;
            loop {
                match list.try_next().await {
                    Ok(Some(meta)) => {
                        let entry = placement.entry(meta.digest).or_insert((meta.size, 0));
                        entry.1 |= 1 << i;
                        listed += 1;
                    }
                    Ok(None) => {
                        counts[i] = Some(listed);
                        break;
                    }
                    Err(e) => {
                        // Its copies are not counted; removals only ever count copies seen.
                        tracing::warn!(mount = mount.id(), error = %e,
                            "listing a mount for balancing failed");
                        mount.failed(&e);
                        break;
                    }
                }
            }
        }
        *self
            .inner
            .balance
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((counts, Instant::now()));
        Ok(placement)
    }

    /// Brings one binary to R copies: copies to mounts that lack it, or removes extras.
    async fn repair(
        &self,
        digest: Sha256,
        size: u64,
        mut mask: u64,
        wanted: Option<Wanted>,
    ) -> Repair {
        let mut repair = Repair::default();
        let r = self.inner.redundancy;
        let mounts = &self.inner.mounts;
        let holds = |mask: u64, i: usize| mask & (1 << i) != 0;
        let count = mask.count_ones() as usize;
        if count > r {
            // Extras go from the writable mounts the write order likes least; a mount that is
            // not writable keeps its copy.
            let holders: Vec<usize> = (0..mounts.len())
                .filter(|&i| holds(mask, i) && mounts[i].settings.write_enabled)
                .collect();
            let order = self.write_order(&holders).await;
            for &i in order.iter().rev().take(count - r) {
                match mounts[i].provider.delete(&digest).await {
                    Ok(()) => repair.removed += 1,
                    Err(e) => {
                        tracing::warn!(mount = mounts[i].id(), %digest, error = %e,
                            "removing an extra copy failed");
                        mounts[i].failed(&e);
                    }
                }
            }
            return repair;
        }
        if let Some(wanted) = wanted {
            match wanted(digest).await {
                Ok(true) => {}
                Ok(false) => return repair, // garbage: collection removes it
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cannot tell whether a binary is wanted");
                    repair.remaining = true;
                    return repair;
                }
            }
        }
        let candidates: Vec<usize> = self
            .usable(true)
            .await
            .into_iter()
            .filter(|&i| !holds(mask, i))
            .collect();
        let targets = self.write_order(&candidates).await;
        for target in targets.into_iter().take(r - count) {
            let mut copied = false;
            let sources: Vec<usize> = self
                .read_order()
                .await
                .into_iter()
                .filter(|&i| holds(mask, i))
                .collect();
            for source in sources {
                match self.copy(digest, size, source, target).await {
                    Ok(()) => {
                        copied = true;
                        break;
                    }
                    Err(Error::ChecksumMismatch { .. }) => {
                        // The source copy is corrupt: set it aside, try another.
                        self.drop_corrupt_copy(source, digest).await;
                        mask &= !(1 << source);
                    }
                    Err(Error::NotFound { .. }) => mask &= !(1 << source),
                    Err(e) => {
                        tracing::warn!(%digest, from = mounts[source].id(),
                            to = mounts[target].id(), error = %e, "copying a binary failed");
                    }
                }
            }
            if copied {
                mask |= 1 << target;
                repair.copied += 1;
                repair.copied_bytes += size;
            } else {
                repair.failed += 1;
            }
        }
        repair.remaining = (mask.count_ones() as usize) < r;
        repair
    }

    /// One copy from mount `from` to mount `to`, verified by the target against the digest.
    async fn copy(&self, digest: Sha256, size: u64, from: usize, to: usize) -> Result<()> {
        let source = self.inner.mounts[from].provider.get(&digest).await?;
        let opts = PutOptions {
            expected: ExpectedChecksums {
                sha256: Some(digest),
                ..Default::default()
            },
            size: Some(size),
        };
        self.inner.mounts[to]
            .provider
            .put_opts(source.stream, opts)
            .await?;
        Ok(())
    }
}
