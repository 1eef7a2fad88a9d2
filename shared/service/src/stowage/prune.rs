//! Prune unreferenced data (Artifactory's `POST /api/system/storage/prune/start`): the stored
//! objects that no binary row names (left by a crash between storing and recording, or by a
//! restore from an older snapshot), older than `binaryOlderThanDays`, removed, or only counted
//! in a dry run. The same removal as garbage collection's orphan phase, with its lock and
//! fencing: a prune and a collection never remove at once, and a deploy that stored bytes just
//! before sees the removal counted, as it does for a collection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use stowage_core::Result;

use super::Stowage;
use super::progress::TaskStart;
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
    ) -> Result<TaskStart> {
        self.security
            .require_admin(caller, "prune unreferenced data")?;
        if !self.prune.progress.try_start("orphans") {
            return Ok(TaskStart::AlreadyRunning);
        }
        let (this, caller) = (Arc::clone(self), caller.clone());
        tokio::spawn(async move {
            let done = this.prune(&caller, dry_run, older_than).await;
            this.prune.finished(&done);
        });
        Ok(TaskStart::Started)
    }

    /// Whether a prune runs on this node, and how the last one ended.
    pub fn prune_status(
        &self,
        caller: &Caller,
    ) -> Result<(bool, Option<std::result::Result<PruneReport, String>>)> {
        self.security
            .require_admin(caller, "read the progress of tasks")?;
        let (progress, last) = self.prune.status();
        Ok((progress.running, last))
    }
}
