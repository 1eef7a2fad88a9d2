//! Prune unreferenced data (Artifactory's `POST /api/system/storage/prune/start`): the stored
//! objects that no binary row names (left by a crash between storing and recording, or by a
//! restore from an older snapshot), older than `binaryOlderThanDays`, removed, or only counted
//! in a dry run. The same removal as garbage collection's orphan phase, with its lock and
//! fencing: a prune and a collection never remove at once, and a deploy that stored bytes just
//! before sees the removal counted, as it does for a collection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use stowage_core::Result;

use super::Stowage;
use crate::security::Caller;

/// What a prune found, and removed unless it was a dry run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Stored objects looked at.
    pub checked: u64,
    /// Objects no binary row names (removed, or to remove), and their bytes.
    pub unreferenced: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

/// The prune of this node, and how the last one ended.
#[derive(Debug, Default)]
pub(crate) struct PruneState {
    running: Mutex<bool>,
    last: Mutex<Option<std::result::Result<PruneReport, String>>>,
}

/// What asking for a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneStart {
    Started,
    AlreadyRunning,
}

impl Stowage {
    /// Prunes now; see the module's documentation. Objects younger than the orphan grace are
    /// never taken, whatever `older_than` says (a deploy may be between storing and recording).
    pub async fn prune(
        &self,
        caller: &Caller,
        dry_run: bool,
        older_than: Duration,
    ) -> Result<PruneReport> {
        self.security
            .require_admin(caller, "prune unreferenced data")?;
        let started = Instant::now();
        let cutoff = SystemTime::now() - older_than.max(self.orphan_grace);
        let mut report = PruneReport {
            dry_run,
            ..PruneReport::default()
        };
        report.checked = self
            .under_lock_with(Self::gc_removals(), async |removal| {
                if !dry_run {
                    self.locks.count_gc_run().await?;
                }
                self.remove_orphans(removal, cutoff, dry_run, |size| {
                    report.unreferenced += 1;
                    report.bytes += size;
                })
                .await
            })
            .await?;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(?report, "prune finished");
        Ok(report)
    }

    /// Starts [`Stowage::prune`] in the background; its outcome in [`Stowage::prune_status`].
    pub fn start_prune(
        self: &Arc<Self>,
        caller: &Caller,
        dry_run: bool,
        older_than: Duration,
    ) -> Result<PruneStart> {
        self.security
            .require_admin(caller, "prune unreferenced data")?;
        {
            let Ok(mut running) = self.prune.running.lock() else {
                return Ok(PruneStart::AlreadyRunning);
            };
            if *running {
                return Ok(PruneStart::AlreadyRunning);
            }
            *running = true;
        }
        let (this, caller) = (Arc::clone(self), caller.clone());
        tokio::spawn(async move {
            let done = this.prune(&caller, dry_run, older_than).await;
            if let Ok(mut last) = this.prune.last.lock() {
                *last = Some(done.map_err(|e| e.to_string()));
            }
            if let Ok(mut running) = this.prune.running.lock() {
                *running = false;
            }
        });
        Ok(PruneStart::Started)
    }

    /// Whether a prune runs on this node, and how the last one ended.
    pub fn prune_status(
        &self,
        caller: &Caller,
    ) -> Result<(bool, Option<std::result::Result<PruneReport, String>>)> {
        self.security
            .require_admin(caller, "read the progress of tasks")?;
        let running = self.prune.running.lock().map(|r| *r).unwrap_or(false);
        let last = self
            .prune
            .last
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        Ok((running, last))
    }
}
