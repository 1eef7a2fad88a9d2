//! The JSON shapes of the service's figures and reports: storage info's queue, cache, mounts and
//! balancing, the garbage-collection and balancing reports, and the plan of an upload session.
//! The domain types carry no wire format; this module alone decides the keys (camelCase, as
//! Artifactory's JSON) that clients and the CLI's output rely on.

use serde_json::{Value, json};
use stowage_core::cache::CacheStats;
use stowage_core::eventual::{ClusterQueueStats, QueueStats};
use stowage_core::sharding::{BalanceProgress, BalanceReport, MountStatus};
use stowage_core::{PresignedRequest, StaleUploads, UploadPlan};
use stowage_metadata::cache::ArtifactCacheStats;
use stowage_service::{GcProgress, GcReport, ShardsReport};

/// The eventual queue (`eventualQueue`).
pub fn queue(q: &QueueStats) -> Value {
    json!({
        "depth": q.depth,
        "bytes": q.bytes,
        "oldestAgeSecs": q.oldest_age_secs,
        "uploading": q.uploading,
        "retrying": q.retrying,
        "uploaded": q.uploaded,
        "underReplicated": q.under_replicated,
        "lastError": q.last_error,
    })
}

/// The cluster queue across nodes (`clusterQueue`), from the ledger.
pub fn cluster_queue(c: &ClusterQueueStats) -> Value {
    json!({
        "redundancy": c.redundancy,
        "lenientLimit": c.lenient_limit,
        "binaries": c.binaries,
        "underReplicated": c.under_replicated,
        "nodes": c.nodes.iter().map(|n| json!({
            "node": n.node,
            "live": n.live,
            "depth": n.depth,
            "bytes": n.bytes,
            "oldestAgeSecs": n.oldest_age_secs,
        })).collect::<Vec<_>>(),
    })
}

/// The read cache (`cache`).
pub fn cache(c: &CacheStats) -> Value {
    json!({
        "hits": c.hits,
        "misses": c.misses,
        "backendReads": c.backend_reads,
        "bytesFromCache": c.bytes_from_cache,
        "bytesFetched": c.bytes_fetched,
        "evictions": c.evictions,
        "corruptDropped": c.corrupt_dropped,
        "entries": c.entries,
        "sizeBytes": c.size_bytes,
        "maxCacheSize": c.max_cache_size,
    })
}

/// The artifact lookups kept in memory (`artifactCache`).
pub fn artifact_cache(c: &ArtifactCacheStats) -> Value {
    json!({
        "hits": c.hits,
        "misses": c.misses,
        "entries": c.entries,
        "capacity": c.capacity,
        "ttlSecs": c.ttl_secs,
    })
}

/// The sharded store (`shards`).
pub fn shards(s: &ShardsReport) -> Value {
    json!({
        "redundancy": s.redundancy,
        "lenientLimit": s.lenient_limit,
        "mounts": s.mounts.iter().map(mount).collect::<Vec<_>>(),
        "balancing": balance_progress(&s.balancing),
    })
}

fn mount(m: &MountStatus) -> Value {
    json!({
        "id": m.id,
        "provider": m.provider,
        "zone": m.zone,
        "state": m.state,
        "writeEnabled": m.write_enabled,
        "freeSpace": m.free_space,
        "totalSpace": m.total_space,
        "binariesCount": m.binaries_count,
        "countedSecsAgo": m.counted_secs_ago,
        "downForSecs": m.down_for_secs,
        "lastError": m.last_error,
    })
}

pub fn balance_progress(p: &BalanceProgress) -> Value {
    json!({
        "running": p.running,
        "current": p.current.as_ref().map(balance_report),
        "last": p.last.as_ref().map(balance_report),
        "needsBalancing": p.needs_balancing,
    })
}

/// A balancing pass (`POST /api/system/storage/optimize`'s progress, `stowage balance`).
pub fn balance_report(r: &BalanceReport) -> Value {
    json!({
        "total": r.total,
        "checked": r.checked,
        "copied": r.copied,
        "copiedBytes": r.copied_bytes,
        "removed": r.removed,
        "remaining": r.remaining,
        "failed": r.failed,
        "complete": r.complete,
        "elapsedMs": r.elapsed_ms,
    })
}

fn stale_uploads(s: &StaleUploads) -> Value {
    json!({
        "stagingObjects": s.staging_objects,
        "multipartUploads": s.multipart_uploads,
    })
}

/// A garbage collection (`POST /api/system/storage/gc`, `stowage gc`).
pub fn gc_report(r: &GcReport) -> Value {
    json!({
        "trashPurged": r.trash_purged,
        "binariesRemoved": r.binaries_removed,
        "binariesSkipped": r.binaries_skipped,
        "bytesFreed": r.bytes_freed,
        "orphansRemoved": r.orphans_removed,
        "uploadSessionsExpired": r.upload_sessions_expired,
        "staleUploads": stale_uploads(&r.stale_uploads),
        "balancing": r.balancing.as_ref().map(balance_report),
    })
}

/// How an upload session's client is to send its bytes (`upload`).
/// How far garbage collection got on a node.
pub fn gc_progress(p: &GcProgress) -> Value {
    json!({
        "running": p.running,
        "phase": p.phase,
        "startedAt": (p.started_ms > 0).then(|| super::json::iso(p.started_ms)),
        "current": p.running.then(|| gc_report(&p.current)),
        "last": p.last.as_ref().map(gc_report),
    })
}

pub(crate) fn upload_plan(plan: &UploadPlan) -> Value {
    match plan {
        UploadPlan::Single { request } => json!({
            "kind": "single",
            "request": presigned(request),
        }),
        UploadPlan::Multipart {
            part_size, parts, ..
        } => {
            let parts: Vec<Value> = parts
                .iter()
                .map(|p| {
                    let mut part = presigned(&p.request);
                    if let Value::Object(fields) = &mut part {
                        fields.insert("partNumber".into(), p.part_number.into());
                        fields.insert("offset".into(), p.offset.into());
                        fields.insert("size".into(), p.size.into());
                    }
                    part
                })
                .collect();
            json!({ "kind": "multipart", "partSize": part_size, "parts": parts })
        }
    }
}

fn presigned(r: &PresignedRequest) -> Value {
    json!({ "method": r.method, "url": r.url, "headers": r.headers })
}

fn tables(tables: &[(String, u64)]) -> Value {
    Value::Object(tables.iter().map(|(t, n)| (t.clone(), json!(n))).collect())
}

pub fn backup_report(r: &stowage_service::BackupReport) -> Value {
    json!({
        "id": r.id,
        "tables": tables(&r.tables),
        "binaries": r.binaries,
        "bytes": r.bytes,
        "copied": r.copied,
        "copiedBytes": r.copied_bytes,
        "removedBackups": r.removed_backups,
        "removedBinaries": r.removed_binaries,
        "elapsedMs": r.elapsed_ms,
    })
}

pub fn restore_report(r: &stowage_service::RestoreReport) -> Value {
    json!({
        "id": r.id,
        "tables": tables(&r.tables),
        "binaries": r.binaries,
        "bytes": r.bytes,
        "elapsedMs": r.elapsed_ms,
    })
}

pub fn copy_progress(p: &stowage_service::CopyProgress) -> Value {
    json!({
        "running": p.running,
        "phase": p.phase,
        "binariesDone": p.binaries_done,
        "binariesTotal": p.binaries_total,
        "bytesDone": p.bytes_done,
        "bytesTotal": p.bytes_total,
    })
}

pub fn scrub_report(r: &stowage_service::ScrubReport) -> Value {
    json!({
        "binaries": r.binaries,
        "copies": r.copies,
        "bytes": r.bytes,
        "bad": r.bad,
        "missing": r.missing,
        "repaired": r.repaired,
        "unrepaired": r.unrepaired.iter().map(|u| json!({
            "sha256": u.digest.to_hex(),
            "reason": u.reason,
            "artifacts": u.artifacts,
        })).collect::<Vec<_>>(),
        "elapsedMs": r.elapsed_ms,
    })
}

pub fn standby(s: &stowage_service::StandbyStatus) -> Value {
    json!({
        "role": "passive",
        "passes": s.passes,
        "binaries": s.binaries,
        "lag": {
            "binaries": s.lag_binaries,
            "bytes": s.lag_bytes,
            "oldestMissingAgeSecs": s.oldest_missing_age_secs,
        },
        "copied": s.copied,
        "copiedBytes": s.copied_bytes,
        "syncedAtMs": s.synced_at_ms,
        "lastPassMs": s.last_pass_ms,
        "lastError": s.last_error,
        "replicaLagMs": s.replica_lag_ms,
    })
}

pub fn prune_report(r: &stowage_service::PruneReport) -> Value {
    json!({
        "dryRun": r.dry_run,
        "checked": r.checked,
        "unreferenced": r.unreferenced,
        "bytes": r.bytes,
        "elapsedMs": r.elapsed_ms,
    })
}

/// How a background task's last run ended: `{"ok": report}` or `{"failed": "why"}`; null
/// before the first.
pub fn outcome<T>(last: Option<Result<T, String>>, report: fn(&T) -> Value) -> Value {
    match last {
        None => Value::Null,
        Some(Ok(r)) => json!({ "ok": report(&r) }),
        Some(Err(e)) => json!({ "failed": e }),
    }
}
