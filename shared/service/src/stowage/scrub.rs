//! Scrub (`stowage verify`, and a scheduled task on the primary): every copy of every binary
//! the metadata names is read and its SHA-256 checked; a bad copy (other bytes, another size)
//! is replaced and a missing one made again from a good copy, on a sharded store from another
//! mount. What has no good copy anywhere is listed with the artifacts that hold it.
//!
//! On a sharded store each mount is read on its own, and a binary has the copies its
//! redundancy asks for: fewer good ones than that is a missing copy, made on a writable mount
//! that has none. On any other store the one copy the filestore serves is read (through the
//! queue and the cache where they are); a bad one there cannot be repaired here, only listed.
//! Reads are paced to `rate` bytes a second, so a scrub on the primary leaves the disks to
//! the clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sha2::Digest as _;
use stowage_core::{BinaryProvider, BinaryProviderExt as _, Error, Result, Sha256};
use stowage_metadata::ChecksumLookup;

use super::Stowage;
use super::backup::copy_binary;
use super::progress::{CopyProgress, ProgressCell};
use crate::locks::LockName;
use crate::security::Caller;

/// Binary rows read at a time.
const PAGE: u32 = 500;

/// What a scrub found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Binaries the metadata names, and copies read, with their bytes.
    pub binaries: u64,
    pub copies: u64,
    pub bytes: u64,
    /// Copies that held other bytes, and copies that were missing.
    pub bad: u64,
    pub missing: u64,
    /// Copies replaced or made again from a good one.
    pub repaired: u64,
    /// Binaries with no good copy left: the digest, what was wrong, the artifacts holding it.
    pub unrepaired: Vec<Unrepaired>,
    pub elapsed_ms: u64,
}

/// A binary a scrub could not repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrepaired {
    pub digest: Sha256,
    pub reason: String,
    /// `repo/path` of each artifact that holds it.
    pub artifacts: Vec<String>,
}

/// What reading one copy found.
enum Copy {
    Good,
    Bad(String),
    Missing,
    /// The store could not be asked (a mount that is down): neither good nor bad.
    Unknown(String),
}

/// Paces reads to a rate.
pub(crate) struct Pace {
    rate: Option<u64>,
    started: Instant,
    read: u64,
}

impl Pace {
    /// Reads paced to `rate` bytes a second from now (none: unpaced).
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            started: Instant::now(),
            read: 0,
        }
    }

    pub(crate) async fn took(&mut self, bytes: u64) {
        self.read += bytes;
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.read as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Reads the whole of one copy and checks it.
async fn check(provider: &dyn BinaryProvider, digest: &Sha256, size: u64, pace: &mut Pace) -> Copy {
    let read = match provider.get(digest).await {
        Ok(read) => read,
        Err(Error::NotFound { .. }) => return Copy::Missing,
        Err(e) if e.is_retryable() => return Copy::Unknown(e.to_string()),
        Err(e) => return Copy::Bad(e.to_string()),
    };
    let mut stream = read.stream;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                n += chunk.len() as u64;
                hasher.update(&chunk);
                pace.took(chunk.len() as u64).await;
            }
            Err(e) if e.is_retryable() => return Copy::Unknown(e.to_string()),
            Err(e) => return Copy::Bad(format!("reading it failed: {e}")),
        }
    }
    let actual = Sha256::from_bytes(hasher.finalize().into());
    if actual != *digest {
        Copy::Bad(format!("it holds bytes whose SHA-256 is {actual}"))
    } else if n != size {
        Copy::Bad(format!("it holds {n} bytes, not {size}"))
    } else {
        Copy::Good
    }
}

impl Stowage {
    /// A scrub as the primary's schedule runs it, its progress and outcome kept for
    /// [`Stowage::scrub_status`].
    pub(crate) async fn scheduled_scrub(&self, rate: Option<u64>) -> Result<ScrubReport> {
        let done = self
            .scrub(&Caller::admin(), rate, &self.scrub_state.progress)
            .await;
        self.scrub_state.finished(&done);
        done
    }

    /// The scheduled scrub's progress on this node, and how the last one ended.
    pub fn scrub_status(
        &self,
    ) -> (
        CopyProgress,
        Option<std::result::Result<ScrubReport, String>>,
    ) {
        self.scrub_state.status()
    }

    /// Scrubs every copy of every binary; see the module's documentation. `rate`: bytes a
    /// second at most (none: as fast as the stores go).
    pub async fn scrub(
        &self,
        caller: &Caller,
        rate: Option<u64>,
        progress: &ProgressCell,
    ) -> Result<ScrubReport> {
        self.security.require_admin(caller, "scrub the filestore")?;
        let started = Instant::now();
        let mut report = ScrubReport::default();
        let mut pace = Pace::new(rate);
        let summary = self.metadata.storage_summary().await?;
        progress.start("copies", summary.binaries_count, summary.binaries_size);
        let result = self.scrub_all(&mut report, &mut pace, progress).await;
        progress.stop();
        result?;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            binaries = report.binaries,
            copies = report.copies,
            bad = report.bad,
            missing = report.missing,
            repaired = report.repaired,
            unrepaired = report.unrepaired.len(),
            "scrub finished"
        );
        metrics::counter!("stowage_scrub_copies_total").increment(report.copies);
        metrics::counter!("stowage_scrub_repairs_total").increment(report.repaired);
        Ok(report)
    }

    async fn scrub_all(
        &self,
        report: &mut ScrubReport,
        pace: &mut Pace,
        progress: &ProgressCell,
    ) -> Result<()> {
        let mut after: Option<Sha256> = None;
        loop {
            let page = self.metadata.binaries_after(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.checksums.sha256);
            for binary in page {
                let digest = binary.checksums.sha256;
                report.binaries += 1;
                // Under the binary's lock: no collection removes it meanwhile.
                let unrepaired = self
                    .under_lock(LockName::Binary(digest), || {
                        self.scrub_one(&digest, binary.size, report, pace)
                    })
                    .await?;
                if let Some(reason) = unrepaired {
                    let artifacts = self
                        .metadata
                        .search_checksum(ChecksumLookup::Sha256(digest))
                        .await?
                        .iter()
                        .map(|a| format!("{}/{}", a.repo, a.path))
                        .collect();
                    tracing::error!(%digest, %reason, "a binary has no good copy left");
                    report.unrepaired.push(super::scrub::Unrepaired {
                        digest,
                        reason,
                        artifacts,
                    });
                }
                progress.update(|p| {
                    p.binaries_done += 1;
                    p.bytes_done += binary.size;
                });
            }
        }
    }

    /// Checks and repairs one binary's copies; `Some(reason)` when it has no good copy.
    async fn scrub_one(
        &self,
        digest: &Sha256,
        size: u64,
        report: &mut ScrubReport,
        pace: &mut Pace,
    ) -> Result<Option<String>> {
        let Some(sharding) = &self.sharding else {
            report.copies += 1;
            report.bytes += size;
            return Ok(match check(&*self.provider, digest, size, pace).await {
                Copy::Good | Copy::Unknown(_) => None,
                Copy::Missing => {
                    report.missing += 1;
                    Some("the filestore has no copy".into())
                }
                Copy::Bad(why) => {
                    report.bad += 1;
                    Some(format!("the filestore's copy is bad: {why}"))
                }
            });
        };
        let mounts = sharding.mounts_for_scrub().await;
        let mut good: Vec<Arc<dyn BinaryProvider>> = Vec::new();
        let mut bad = Vec::new();
        let mut without = Vec::new();
        let mut reasons = Vec::new();
        for (id, provider, usable, writable) in &mounts {
            if !usable {
                continue;
            }
            match check(&**provider, digest, size, pace).await {
                Copy::Good => {
                    report.copies += 1;
                    report.bytes += size;
                    good.push(Arc::clone(provider));
                }
                Copy::Bad(why) => {
                    report.copies += 1;
                    report.bad += 1;
                    tracing::warn!(%digest, mount = %id, %why, "a bad copy");
                    reasons.push(format!("{id}: {why}"));
                    bad.push((id.clone(), Arc::clone(provider)));
                }
                Copy::Missing => {
                    if *writable {
                        without.push((id.clone(), Arc::clone(provider)));
                    }
                }
                Copy::Unknown(why) => {
                    tracing::warn!(%digest, mount = %id, %why, "a copy could not be read now");
                }
            }
        }
        let Some(source) = good.first().cloned() else {
            if bad.is_empty() {
                report.missing += 1;
                return Ok(Some("no mount has a copy".into()));
            }
            return Ok(Some(format!("every copy is bad ({})", reasons.join("; "))));
        };
        // A bad copy goes, and is written again from a good one.
        for (id, provider) in bad {
            provider.delete(digest).await?;
            copy_binary(&*source, &*provider, digest, size).await?;
            tracing::info!(%digest, mount = %id, "a bad copy was replaced");
            report.repaired += 1;
            good.push(provider);
        }
        // Fewer good copies than the redundancy: made again where there is none.
        let wanted = sharding.redundancy();
        for (id, provider) in without {
            if good.len() >= wanted {
                break;
            }
            report.missing += 1;
            copy_binary(&*source, &*provider, digest, size).await?;
            tracing::info!(%digest, mount = %id, "a missing copy was made again");
            report.repaired += 1;
            good.push(provider);
        }
        Ok(None)
    }
}
