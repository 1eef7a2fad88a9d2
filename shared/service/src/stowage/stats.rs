//! Download statistics (Artifactory's `?stats`), counted in memory and added to the database
//! in batches: never a database write per download. A node writes what it counted at most
//! every [`FLUSH_EVERY`] (on the next download after that, and every second in a server's
//! background task), before it answers a `?stats`, and when it shuts down. A node that dies
//! loses at most that second of counts; counts are statistics, not promises.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_core::{ArtifactPath, RepoKey, Result};
use stowage_metadata::{ArtifactRecord, DownloadStats, now_ms};

use super::Stowage;
use crate::security::{Action, Caller};

/// How long counts wait in memory at most while downloads go on.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Counted {
    downloads: u64,
    last_ms: i64,
    last_by: String,
}

/// What this node counted since its last write.
#[derive(Debug)]
pub(super) struct DownloadCounter {
    pending: Mutex<HashMap<i64, Counted>>,
    last_flush: Mutex<Instant>,
}

impl Default for DownloadCounter {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            last_flush: Mutex::new(Instant::now()),
        }
    }
}

impl DownloadCounter {
    /// Counts one download; whether the counts are due to be written.
    fn count(&self, id: i64, by: &str) -> bool {
        let now = now_ms();
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending.entry(id).or_insert_with(|| Counted {
                downloads: 0,
                last_ms: now,
                last_by: String::new(),
            });
            entry.downloads += 1;
            entry.last_ms = now;
            by.clone_into(&mut entry.last_by);
        }
        self.last_flush
            .lock()
            .is_ok_and(|last| last.elapsed() >= FLUSH_EVERY)
    }

    fn take(&self) -> Vec<(i64, u64, i64, String)> {
        if let Ok(mut last) = self.last_flush.lock() {
            *last = Instant::now();
        }
        self.pending.lock().map_or_else(
            |_| Vec::new(),
            |mut pending| {
                pending
                    .drain()
                    .map(|(id, c)| (id, c.downloads, c.last_ms, c.last_by))
                    .collect()
            },
        )
    }

    /// Puts counts that could not be written back, to be written with the next ones.
    fn restore(&self, counted: Vec<(i64, u64, i64, String)>) {
        if let Ok(mut pending) = self.pending.lock() {
            for (id, downloads, last_ms, last_by) in counted {
                let entry = pending.entry(id).or_insert(Counted {
                    downloads: 0,
                    last_ms,
                    last_by: last_by.clone(),
                });
                entry.downloads += downloads;
                if last_ms > entry.last_ms {
                    entry.last_ms = last_ms;
                    entry.last_by = last_by;
                }
            }
        }
    }
}

impl Stowage {
    /// Counts a download of `record` by `caller` (a GET of the bytes or of a redirect to
    /// them), writing the node's counts in the background when they are due.
    pub(super) fn count_download(&self, record: &ArtifactRecord, caller: &Caller) {
        if self.downloads.count(record.id, &caller.name)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let counted = self.downloads.take();
            let metadata = self.metadata.clone();
            // The counts are given back to the next flush if this one fails: see `restore`.
            let pending = self.downloads_handle();
            runtime.spawn(async move {
                if let Err(e) = metadata.add_downloads(&counted).await {
                    tracing::warn!(error = %e, "download statistics not written yet; retrying with the next ones");
                    pending.restore(counted);
                }
            });
        }
    }

    fn downloads_handle(&self) -> Arc<DownloadCounter> {
        Arc::clone(&self.downloads)
    }

    /// Writes the downloads this node counted and has not written yet.
    pub async fn flush_download_stats(&self) -> Result<()> {
        let counted = self.downloads.take();
        if let Err(e) = self.metadata.add_downloads(&counted).await {
            self.downloads.restore(counted);
            return Err(e);
        }
        Ok(())
    }

    /// Writes this node's counts every [`FLUSH_EVERY`], for a server (whose downloads may stop
    /// with counts still in memory).
    pub fn write_download_stats_in_background(self: &Arc<Self>) {
        let stowage = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            loop {
                every.tick().await;
                let Some(stowage) = stowage.upgrade() else {
                    return;
                };
                if let Err(e) = stowage.flush_download_stats().await {
                    tracing::warn!(error = %e, "download statistics not written yet");
                }
            }
        });
    }

    /// The download statistics of the file at `repo/path` (`?stats`), with what this node
    /// counted written first.
    pub async fn download_stats(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<(ArtifactRecord, DownloadStats)> {
        let record = self.artifact(caller, repo, path).await?;
        self.security
            .require(caller, Action::Read, repo.as_str(), path.as_str())
            .await?;
        self.flush_download_stats().await?;
        let stats = self.metadata.download_stats(record.id).await?;
        Ok((record, stats))
    }
}
