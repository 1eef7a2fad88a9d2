//! A passive standby's replication of binaries. Its metadata arrives by the database's own
//! replication (it reads a replica); each pass walks the binary rows the replica holds and
//! copies from the active's filestore those this filestore lacks, each checked against its
//! digest by the put. A pass that ends with nothing missing makes a sync point: every artifact
//! the active acknowledged before it (the pass's start, less the replica's replay lag then) is
//! here, rows and bytes. Lag (binaries and bytes missing, the age of the
//! oldest) and the last sync point are in `/api/storageinfo` and the metrics.

use std::time::Instant;

use stowage_core::{BinaryProvider, BinaryProviderExt as _, Result, Sha256};

use super::Stowage;
use super::backup::copy_binary;
use super::progress::ProgressCell;
use super::scrub::Pace;

/// Binary rows read at a time.
const PAGE: u32 = 500;

/// Where a passive's replication stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandbyStatus {
    /// Passes finished since start.
    pub passes: u64,
    /// Binaries the replica names, as of the last pass.
    pub binaries: u64,
    /// What the last pass found missing and could not copy: the lag.
    pub lag_binaries: u64,
    pub lag_bytes: u64,
    /// Age of the oldest binary still missing (by its row's time), in seconds.
    pub oldest_missing_age_secs: Option<u64>,
    /// Copied since start, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// The last sync point (ms since the epoch): the start of the last pass that ended with
    /// nothing missing, less the replica's replay lag at that start.
    pub synced_at_ms: Option<i64>,
    pub last_pass_ms: u64,
    pub last_error: Option<String>,
    /// How far the database replica's replay is behind (PostgreSQL), in ms.
    pub replica_lag_ms: Option<i64>,
}

impl Stowage {
    /// One replication pass from `source` (the active's filestore), paced to `rate` bytes a
    /// second; its figures are kept for [`Stowage::standby_status`].
    pub async fn replicate_pass(
        &self,
        source: &dyn BinaryProvider,
        rate: Option<u64>,
        progress: Option<&ProgressCell>,
    ) -> Result<StandbyStatus> {
        if let Some(p) = progress {
            let summary = self.metadata.storage_summary().await?;
            p.start("binaries", summary.binaries_count, summary.binaries_size);
        }
        let done = self.replicate_once(source, rate, progress).await;
        if let Some(p) = progress {
            p.stop();
        }
        done
    }

    async fn replicate_once(
        &self,
        source: &dyn BinaryProvider,
        rate: Option<u64>,
        progress: Option<&ProgressCell>,
    ) -> Result<StandbyStatus> {
        let started = Instant::now();
        // What the replica had replayed when the pass began: its sync point, if it ends with
        // nothing missing (the replay lag counts against it, so the point is never late).
        let replica_lag_ms = self.metadata.replica_lag_ms().await.unwrap_or(None);
        let started_ms = stowage_metadata::now_ms() - replica_lag_ms.unwrap_or(0).max(0);
        let mut pace = Pace::new(rate);
        let (mut binaries, mut missing, mut missing_bytes) = (0u64, 0u64, 0u64);
        let (mut copied, mut copied_bytes) = (0u64, 0u64);
        let mut oldest_missing: Option<i64> = None;
        let mut last_error = None;
        let mut after: Option<Sha256> = None;
        loop {
            let page = self.metadata.binaries_after(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.checksums.sha256);
            for binary in page {
                binaries += 1;
                if let Some(p) = progress {
                    p.update(|p| {
                        p.binaries_done += 1;
                        p.bytes_done += binary.size;
                    });
                }
                let digest = binary.checksums.sha256;
                if self.provider.exists(&digest).await? {
                    continue;
                }
                match copy_binary(source, &*self.provider, &digest, binary.size).await {
                    Ok(_) => {
                        copied += 1;
                        copied_bytes += binary.size;
                        pace.took(binary.size).await;
                    }
                    Err(e) => {
                        missing += 1;
                        missing_bytes += binary.size;
                        oldest_missing = Some(
                            oldest_missing.map_or(binary.created_ms, |o| o.min(binary.created_ms)),
                        );
                        tracing::warn!(%digest, error = %e, "a binary could not be copied from the active");
                        last_error = Some(format!("{digest}: {e}"));
                    }
                }
            }
        }
        let now = stowage_metadata::now_ms();
        let mut status = self.standby.lock().map(|s| s.clone()).unwrap_or_default();
        status.passes += 1;
        status.binaries = binaries;
        status.lag_binaries = missing;
        status.lag_bytes = missing_bytes;
        status.oldest_missing_age_secs =
            oldest_missing.map(|o| u64::try_from((now - o).max(0) / 1000).unwrap_or(0));
        status.copied += copied;
        status.copied_bytes += copied_bytes;
        if missing == 0 {
            status.synced_at_ms = Some(started_ms);
        }
        status.last_pass_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        status.last_error = last_error;
        status.replica_lag_ms = replica_lag_ms;
        if let Ok(mut kept) = self.standby.lock() {
            *kept = status.clone();
        }
        metrics::gauge!("stowage_standby_lag_binaries").set(missing as f64);
        metrics::gauge!("stowage_standby_lag_bytes").set(missing_bytes as f64);
        metrics::gauge!("stowage_standby_oldest_missing_age_seconds")
            .set(status.oldest_missing_age_secs.unwrap_or(0) as f64);
        tracing::info!(binaries, copied, missing, "replication pass finished");
        Ok(status)
    }

    /// Where replication stands (`None` until a first pass, and on an active node).
    pub fn standby_status(&self) -> Option<StandbyStatus> {
        self.standby
            .lock()
            .ok()
            .filter(|s| s.passes > 0)
            .map(|s| s.clone())
    }
}
