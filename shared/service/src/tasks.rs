//! Cluster-wide tasks: run by the primary node only, one run at a time across the cluster (a
//! named lock in the database), each run recorded in `task_runs` with its node and times.
//! Garbage collection (followed by balancing on a sharded store), and balancing on its own:
//! on a schedule, or raised by `POST /api/system/storage/optimize`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::sharding::BalanceReport;
use stowage_core::{Error, Result};

use crate::TaskStart;
use crate::cluster::Cluster;
use crate::locks::LockName;
use crate::security::Caller;
use crate::stowage::{GcReport, Stowage};

/// Where a cluster-wide task may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunsOn {
    /// The primary node only (its schedule, a request to the API).
    Primary,
    /// Wherever a scheduler outside the cluster started it (a Lambda function invoked by a
    /// schedule, never primary). The named lock still keeps it to one run at a time.
    Anywhere,
}

/// Runs `task` as the cluster-wide task `name`. `Conflict` on a node that is not primary
/// when the task runs on the primary.
async fn run_exclusive<T, F, Fut>(
    stowage: &Stowage,
    cluster: &Cluster,
    runs_on: RunsOn,
    name: &'static str,
    task: F,
    outcome: impl Fn(&T) -> String,
) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let allowed = || runs_on == RunsOn::Anywhere || cluster.is_primary();
    if !allowed() {
        return Err(not_primary(cluster, name).await);
    }
    stowage
        .under_lock(LockName::Named(name), || async {
            // The role may have moved while this node waited for the lock.
            if !allowed() {
                return Err(not_primary(cluster, name).await);
            }
            let metadata = stowage.metadata();
            let run = metadata.start_task_run(name, cluster.node_id()).await?;
            let result = task().await;
            let text = match &result {
                Ok(report) => format!("ok: {}", outcome(report)),
                Err(e) => format!("failed: {e}"),
            };
            metadata.finish_task_run(run, &text).await?;
            result
        })
        .await
}

/// Runs garbage collection (and the balancing that follows it) as a cluster-wide task.
pub async fn run_gc(stowage: &Stowage, cluster: &Cluster, caller: &Caller) -> Result<GcReport> {
    stowage
        .security()
        .require_admin(caller, "run garbage collection")?;
    gc_on(stowage, cluster, RunsOn::Primary).await
}

async fn gc_on(stowage: &Stowage, cluster: &Cluster, runs_on: RunsOn) -> Result<GcReport> {
    run_exclusive(
        stowage,
        cluster,
        runs_on,
        "gc",
        || stowage.gc(),
        |r| {
            format!(
                "{} binaries, {} orphans, {} bytes freed",
                r.binaries_removed, r.orphans_removed, r.bytes_freed
            )
        },
    )
    .await
}

/// Runs one balancing pass as a cluster-wide task; `None` when the store is not sharded.
pub async fn run_balance(stowage: &Stowage, cluster: &Cluster) -> Result<Option<BalanceReport>> {
    balance_on(stowage, cluster, RunsOn::Primary).await
}

/// The maintenance a scheduler outside the cluster asks for (the Terraform module's
/// EventBridge schedules invoke the maintenance function with `{"stowage_maintenance": "gc"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Garbage collection: the trash past its retention, unreferenced binaries, orphans,
    /// then balancing on a sharded store.
    Gc,
    /// One balancing pass.
    Balance,
}

impl std::str::FromStr for Maintenance {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gc" => Ok(Self::Gc),
            "balance" => Ok(Self::Balance),
            other => Err(Error::InvalidInput(format!(
                "unknown maintenance task {other:?}: the tasks are \"gc\" (garbage collection, \
                 trash retention, then balancing) and \"balance\""
            ))),
        }
    }
}

/// What a maintenance run did.
#[derive(Debug, Clone)]
pub enum MaintenanceReport {
    Gc(GcReport),
    /// `None`: the store is not sharded.
    Balance(Option<BalanceReport>),
}

/// Runs `task` for a scheduler outside the cluster, on this process whether or not it is
/// primary (a Lambda function never is): the named lock of the task keeps it to one run at a
/// time across the cluster, and the run is recorded in `task_runs` like the primary's.
pub async fn run_maintenance(
    stowage: &Stowage,
    cluster: &Cluster,
    task: Maintenance,
) -> Result<MaintenanceReport> {
    match task {
        Maintenance::Gc => gc_on(stowage, cluster, RunsOn::Anywhere)
            .await
            .map(MaintenanceReport::Gc),
        Maintenance::Balance => balance_on(stowage, cluster, RunsOn::Anywhere)
            .await
            .map(MaintenanceReport::Balance),
    }
}

async fn balance_on(
    stowage: &Stowage,
    cluster: &Cluster,
    runs_on: RunsOn,
) -> Result<Option<BalanceReport>> {
    run_exclusive(
        stowage,
        cluster,
        runs_on,
        "balance",
        || stowage.balance(),
        |r| match r {
            Some(r) => format!(
                "{} checked, {} copied, {} removed, {} remaining",
                r.checked, r.copied, r.removed, r.remaining
            ),
            None => "not sharded".into(),
        },
    )
    .await
}

/// Starts a balancing pass in the background (Optimize System Storage) and returns at once;
/// its progress is in the sharded store's figures. `InvalidInput` when the store is not
/// sharded, `Conflict` (naming the primary) on a node that is not primary.
pub async fn start_balance(
    stowage: &Arc<Stowage>,
    cluster: &Arc<Cluster>,
    caller: &Caller,
) -> Result<TaskStart> {
    stowage
        .security()
        .require_admin(caller, "optimize system storage")?;
    let Some(sharding) = stowage.sharding() else {
        return Err(Error::InvalidInput(
            "the filestore is not sharded: there is nothing to balance".into(),
        ));
    };
    if sharding.balance_progress().running {
        return Ok(TaskStart::AlreadyRunning);
    }
    if !cluster.is_primary() {
        return Err(not_primary(cluster, "balance").await);
    }
    let (stowage, cluster) = (Arc::clone(stowage), Arc::clone(cluster));
    tokio::spawn(async move {
        if let Err(e) = run_balance(&stowage, &cluster).await {
            tracing::warn!(error = %e, "balancing raised by optimize did not run");
        }
    });
    Ok(TaskStart::Started)
}

/// The answer to a cluster-wide task asked of a node that is not primary: where to send it.
async fn not_primary(cluster: &Cluster, task: &str) -> Error {
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
    let task = match task {
        "gc" => "garbage collection",
        "balance" => "balancing",
        other => other,
    };
    Error::Conflict(format!(
        "{task} runs on the primary node ({primary}); send the request there"
    ))
}

/// Runs `task` every `interval` on whichever node is primary at the time.
fn spawn_scheduled<F, Fut, T>(
    cluster: Arc<Cluster>,
    interval: Duration,
    what: &'static str,
    task: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if !cluster.is_primary() {
                continue;
            }
            if let Err(e) = task().await {
                tracing::warn!(error = %e, "scheduled {what} did not run");
            }
        }
    })
}

/// Runs garbage collection every `interval` on the primary node.
pub fn spawn_scheduled_gc(
    stowage: Arc<Stowage>,
    cluster: Arc<Cluster>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let c = Arc::clone(&cluster);
    spawn_scheduled(cluster, interval, "garbage collection", move || {
        let (stowage, cluster) = (Arc::clone(&stowage), Arc::clone(&c));
        async move { run_gc(&stowage, &cluster, &Caller::admin()).await }
    })
}

/// Runs balancing every `interval` on the primary node (besides the pass after each garbage
/// collection).
pub fn spawn_scheduled_balancing(
    stowage: Arc<Stowage>,
    cluster: Arc<Cluster>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let c = Arc::clone(&cluster);
    spawn_scheduled(cluster, interval, "balancing", move || {
        let (stowage, cluster) = (Arc::clone(&stowage), Arc::clone(&c));
        async move { run_balance(&stowage, &cluster).await }
    })
}

/// Runs a scrub, paced to `rate` bytes a second, as a cluster-wide task on the primary; its
/// progress and outcome are in [`Stowage::scrub_status`].
pub async fn run_scrub(
    stowage: &Stowage,
    cluster: &Cluster,
    rate: Option<u64>,
) -> Result<crate::ScrubReport> {
    run_exclusive(
        stowage,
        cluster,
        RunsOn::Primary,
        "scrub",
        || stowage.scheduled_scrub(rate),
        |r| {
            format!(
                "{} copies, {} bad, {} missing, {} repaired, {} unrepaired",
                r.copies,
                r.bad,
                r.missing,
                r.repaired,
                r.unrepaired.len()
            )
        },
    )
    .await
}

/// Runs a scrub every `interval` on the primary node.
pub fn spawn_scheduled_scrub(
    stowage: Arc<Stowage>,
    cluster: Arc<Cluster>,
    interval: Duration,
    rate: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    let c = Arc::clone(&cluster);
    spawn_scheduled(cluster, interval, "scrub", move || {
        let (stowage, cluster) = (Arc::clone(&stowage), Arc::clone(&c));
        async move { run_scrub(&stowage, &cluster, rate).await }
    })
}
