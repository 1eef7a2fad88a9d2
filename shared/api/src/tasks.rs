//! Cluster-wide tasks: run by the primary node only, one run at a time across the cluster (a
//! named lock in the database), each run recorded in `task_runs` with its node and times.
//! Garbage collection is the first; balancing joins it with sharding.

use std::sync::Arc;
use std::time::Duration;

use stowage_core::{Error, Result};

use crate::cluster::Cluster;
use crate::locks::LockName;
use crate::service::{GcReport, Stowage};

/// Runs garbage collection as a cluster-wide task. `Conflict` on a node that is not primary.
pub async fn run_gc(stowage: &Stowage, cluster: &Cluster) -> Result<GcReport> {
    if !cluster.is_primary() {
        return Err(not_primary(cluster).await);
    }
    let _lock = stowage.locks().lock(&LockName::Named("gc")).await?;
    // The role may have moved while this node waited for the lock.
    if !cluster.is_primary() {
        return Err(not_primary(cluster).await);
    }
    let metadata = stowage.metadata();
    let run = metadata.start_task_run("gc", cluster.node_id()).await?;
    let result = stowage.gc().await;
    let outcome = match &result {
        Ok(report) => format!(
            "ok: {} binaries, {} orphans, {} bytes freed",
            report.binaries_removed, report.orphans_removed, report.bytes_freed
        ),
        Err(e) => format!("failed: {e}"),
    };
    metadata.finish_task_run(run, &outcome).await?;
    result
}

async fn not_primary(cluster: &Cluster) -> Error {
    let primary = match cluster.status().await {
        Ok(status) => status
            .primary
            .and_then(|id| status.nodes.into_iter().find(|n| n.id == id))
            .map_or_else(
                || "none yet".to_string(),
                |n| format!("node {} at {}", n.id, n.address),
            ),
        Err(_) => "unknown: the database is unavailable".to_string(),
    };
    Error::Conflict(format!(
        "garbage collection runs on the primary node ({primary}); send the request there"
    ))
}

/// Runs garbage collection every `interval` on whichever node is primary at the time.
pub fn spawn_scheduled_gc(
    stowage: Arc<Stowage>,
    cluster: Arc<Cluster>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if !cluster.is_primary() {
                continue;
            }
            if let Err(e) = run_gc(&stowage, &cluster).await {
                tracing::warn!(error = %e, "scheduled garbage collection did not run");
            }
        }
    })
}
