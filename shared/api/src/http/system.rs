//! Handlers for the system, repository and trash APIs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stowage_core::{ArtifactPath, RepoKey};

use stowage_service::TaskStart;
use stowage_service::security::Caller;

use super::target::Target;
use super::{ApiError, AppState, figures, json as shapes};

/// `GET /api/system/ping`.
pub(crate) async fn ping() -> &'static str {
    "OK"
}

/// `GET /api/system/version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "product": "stowage" }))
}

/// `POST /api/system/storage/gc`: runs on the primary node only.
pub(crate) async fn gc(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let report = stowage_service::tasks::run_gc(&state.stowage, &state.cluster, &caller).await?;
    Ok(Json(figures::gc_report(&report)).into_response())
}

/// `GET /api/system/tasks`: how far this node's long tasks got (garbage collection, and
/// balancing on a sharded store).
pub(crate) async fn tasks(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let (gc, balancing) = state.stowage.task_progress(&caller)?;
    let (backup, last) = state.stowage.background_backup_status(&caller)?;
    Ok(Json(json!({
        "gc": figures::gc_progress(&gc),
        "balancing": balancing.as_ref().map(figures::balance_progress),
        "backup": {
            "progress": figures::copy_progress(&backup),
            "last": figures::outcome(last, figures::backup_report),
        },
    }))
    .into_response())
}

/// `POST /api/system/backup?to=DIR|s3://bucket/prefix&keep=N`: starts a backup on this node
/// and answers at once (202); its progress and outcome are in `GET /api/system/tasks`.
pub(crate) async fn backup(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Query(query): axum::extract::Query<BackupQuery>,
) -> Result<Response, ApiError> {
    // Before the target is resolved (which creates its directory).
    state
        .stowage
        .security()
        .require_admin(&caller, "back up Stowage")?;
    let Some(settings) = &state.backups else {
        return Err(ApiError::Status(
            StatusCode::NOT_FOUND,
            "backups are run by `stowage serve` or the `stowage backup` command, not by a \
             function"
                .into(),
        ));
    };
    let Some(to) = query.to.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::Status(
            StatusCode::BAD_REQUEST,
            "name the target: ?to=/a/directory or ?to=s3://bucket/prefix".into(),
        ));
    };
    let target = stowage_config::backup::target(to, &settings.config).await?;
    let options = stowage_service::BackupOptions {
        keep: query.keep.unwrap_or(7).max(1),
        config_text: settings.config_text.clone(),
        work_dir: settings.work_dir.clone(),
    };
    let status = match state.stowage.start_backup(&caller, target, options).await? {
        TaskStart::Started => "backup started",
        TaskStart::AlreadyRunning => "a backup is already running",
    };
    let body = json!({ "status": status, "progress": "/api/system/tasks" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct BackupQuery {
    to: Option<String>,
    keep: Option<usize>,
}

/// `POST /api/system/storage/optimize` (Optimize System Storage): starts a balancing pass of
/// the sharded store on the primary node and answers at once (202); its progress is in
/// `/api/storageinfo` under `shards.balancing`.
pub(crate) async fn optimize(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let status =
        match stowage_service::tasks::start_balance(&state.stowage, &state.cluster, &caller).await?
        {
            TaskStart::AlreadyRunning => "balancing is already running",
            TaskStart::Started => "balancing started",
        };
    let body = json!({ "status": status, "progress": "/api/storageinfo" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/system/cluster`: the nodes and which one is primary.
pub(crate) async fn cluster(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    state
        .stowage
        .security()
        .require_admin(&caller, "read the cluster's state")?;
    let status = state.cluster.status().await?;
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "address": n.address,
                "version": n.version,
                "started": shapes::iso(n.started_ms),
                "heartbeat": shapes::iso(n.heartbeat_ms),
                "primary": status.primary.as_deref() == Some(n.id.as_str()),
            })
        })
        .collect();
    Ok(Json(json!({
        "thisNode": status.this_node,
        "thisNodeIsPrimary": status.this_node_primary,
        "primary": status.primary,
        "nodes": nodes,
    }))
    .into_response())
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().si().to_string()
}

/// `GET /api/storageinfo`: Artifactory's summary (strings, as it prints them) plus exact
/// numbers and the deduplication ratio.
pub(crate) async fn storage_info(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let report = state.stowage.storage_report(&caller).await?;
    let scrub = state.stowage.scrub_status();
    let s = &report.summary;
    let (health, health_error) = match report.health {
        Ok(health) => (health, None),
        Err(e) => (Default::default(), Some(e)),
    };
    // Artifactory's "optimization": stored bytes as a share of logical bytes (lower is better).
    let optimization = if s.artifacts_size == 0 {
        0.0
    } else {
        s.binaries_size as f64 * 100.0 / s.artifacts_size as f64
    };
    let dedup_ratio = if s.binaries_size == 0 {
        1.0
    } else {
        s.artifacts_size as f64 / s.binaries_size as f64
    };
    let repos: Vec<Value> = s
        .repositories
        .iter()
        .map(|r| {
            let pct = if s.artifacts_size == 0 {
                0.0
            } else {
                r.used_space as f64 * 100.0 / s.artifacts_size as f64
            };
            json!({
                "repoKey": r.key.as_str(),
                "repoType": "LOCAL",
                "packageType": r.package_type,
                "filesCount": r.files_count,
                "foldersCount": r.folders_count,
                "itemsCount": r.files_count + r.folders_count,
                "usedSpace": human(r.used_space),
                "usedSpaceInBytes": r.used_space,
                "percentage": format!("{pct:.2}%"),
            })
        })
        .collect();
    let used_space = health
        .total_space
        .zip(health.free_space)
        .map(|(total, free)| total.saturating_sub(free));
    let provider = &report.provider;
    let shards = report.shards.as_ref().map(figures::shards);
    Ok(Json(json!({
        "binariesSummary": {
            "binariesCount": grouped(s.binaries_count),
            "binariesSize": human(s.binaries_size),
            "artifactsSize": human(s.artifacts_size),
            "optimization": format!("{optimization:.2}%"),
            "itemsCount": grouped(s.artifacts_count + s.folders_count),
            "foldersCount": s.folders_count,
            "artifactsCount": grouped(s.artifacts_count),
            "binariesCountExact": s.binaries_count,
            "binariesSizeInBytes": s.binaries_size,
            "artifactsCountExact": s.artifacts_count,
            "artifactsSizeInBytes": s.artifacts_size,
            "trashCount": s.trash_count,
            "dedupRatio": (dedup_ratio * 1000.0).round() / 1000.0,
        },
        "fileStoreSummary": {
            "storageType": provider.split(':').next().unwrap_or("unknown"),
            "storageDirectory": provider,
            // Artifactory's fields, as it prints them, then the exact figures.
            "totalSpace": health.total_space.map(human),
            "usedSpace": used_space.map(human),
            "freeSpace": health.free_space.map(human),
            "totalSpaceInBytes": health.total_space,
            "usedSpaceInBytes": used_space,
            "freeSpaceInBytes": health.free_space,
            "error": health_error,
        },
        "repositoriesSummaryList": repos,
        "eventualQueue": report.queue.as_ref().map(figures::queue),
        // The cluster templates' copies per node: the queue's, or cluster-file-system's store.
        (if report.queue.is_some() { "clusterQueue" } else { "clusterFileSystem" }):
            report.cluster_queue.as_ref().map(figures::cluster_queue),
        "shards": shards,
        "cache": report.cache.as_ref().map(figures::cache),
        "artifactCache": report.artifact_cache.as_ref().map(figures::artifact_cache),
        "standby": state.stowage.standby_status().as_ref().map(figures::standby),
        "scrub": {
            "progress": figures::copy_progress(&scrub.0),
            "last": figures::outcome(scrub.1, figures::scrub_report),
        },
    }))
    .into_response())
}

fn repo_key(raw: &str) -> Result<RepoKey, ApiError> {
    Ok(RepoKey::parse(raw)?)
}

/// `GET /api/repositories`.
pub(crate) async fn list_repositories(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let list: Vec<Value> = state
        .stowage
        .repositories(&caller)
        .await?
        .iter()
        .map(|r| {
            json!({
                "key": r.key.as_str(),
                "type": r.rclass.to_uppercase(),
                "packageType": r.package_type,
                "description": r.description,
                "url": format!("{base}/{}", r.key),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/repositories/{repo}`: the configuration.
pub(crate) async fn get_repository(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let repo = state.stowage.repository(&caller, &key).await?;
    let mut config = match repo.config {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    config.insert("key".into(), repo.key.as_str().into());
    config.insert("rclass".into(), repo.rclass.into());
    config.insert("packageType".into(), repo.package_type.into());
    config.insert("description".into(), repo.description.into());
    Ok(Json(Value::Object(config)).into_response())
}

/// `PUT /api/repositories/{repo}` with Artifactory's repository JSON (an empty body makes a
/// generic local repository).
pub(crate) async fn put_repository(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let config = repository_json(&body)?;
    let created = state.stowage.put_repository(&caller, &key, config).await?;
    let (status, verb) = if created {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "updated")
    };
    Ok((status, format!("Successfully {verb} repository '{key}'\n")).into_response())
}

/// `POST /api/repositories/{repo}`: changes the fields given, keeps the others (200); 404 when
/// there is no such repository.
pub(crate) async fn update_repository(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let changes = repository_json(&body)?;
    state
        .stowage
        .update_repository(&caller, &key, changes)
        .await?;
    Ok(format!("Successfully updated repository '{key}'\n").into_response())
}

/// A repository's JSON body (empty: no fields).
fn repository_json(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the repository configuration must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid repository JSON: {e}"
        ))),
    }
}

/// `DELETE /api/repositories/{repo}`: the repository and everything in it.
pub(crate) async fn delete_repository(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    state.stowage.delete_repository(&caller, &key).await?;
    Ok(
        format!("Repository '{key}' and all its content have been removed successfully.\n")
            .into_response(),
    )
}

/// `GET /api/trash`: what is in the trash.
pub(crate) async fn trash_list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = state
        .stowage
        .trash_list(&caller)
        .await?
        .iter()
        .map(|t| {
            json!({
                "repo": t.repo.as_str(),
                "path": format!("/{}", t.path),
                "size": t.size.to_string(),
                "sha256": t.sha256.to_hex(),
                "deleted": shapes::iso(t.deleted_ms),
                "deletedBy": t.deleted_by,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// `POST /api/trash/empty`.
pub(crate) async fn trash_empty(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let purged = state.stowage.empty_trash(&caller).await?;
    Ok(Json(json!({ "purged": purged })).into_response())
}

/// `POST /api/trash/restore/{repo}/{path}[?to={repo}/{path}]`: back to where it was, or to
/// another place.
pub(crate) async fn trash_restore(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    axum::extract::Query(query): axum::extract::Query<RestoreQuery>,
) -> Result<Response, ApiError> {
    let to = query.to.filter(|t| !t.trim_matches('/').is_empty());
    let to = match &to {
        Some(to) => {
            let to = to.trim_matches('/');
            let (r, p) = to.split_once('/').unwrap_or((to, ""));
            Some((repo_key(r)?, ArtifactPath::parse(p)?))
        }
        None => None,
    };
    let restored = state
        .stowage
        .restore_to(&caller, &repo, &path, to.as_ref().map(|(r, p)| (r, p)))
        .await?;
    let (to_repo, to_path) = to.as_ref().map_or((&repo, &path), |(r, p)| (r, p));
    Ok(
        format!("Successfully restored {restored} item(s) to {to_repo}/{to_path}\n")
            .into_response(),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct RestoreQuery {
    /// `repo/path` to restore to (default: where it was).
    to: Option<String>,
}

/// `DELETE /api/trash/clean/{repo}/{path}`: a file, or a folder's files, out of the trash for
/// good.
pub(crate) async fn trash_clean(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
) -> Result<Response, ApiError> {
    state.stowage.clean_trash(&caller, &repo, &path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PruneQuery {
    dry_run: Option<String>,
    binary_older_than_days: Option<String>,
}

/// `POST /api/system/storage/prune/start?dryRun=true&binaryOlderThanDays=N`: removes (or in a
/// dry run only counts) the stored objects no binary names, in the background (202); the
/// outcome in `GET /api/system/storage/prune/status`.
pub(crate) async fn prune_start(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Query(query): axum::extract::Query<PruneQuery>,
) -> Result<Response, ApiError> {
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun={other:?} must be true or false"
            )));
        }
    };
    let days: u64 = match query.binary_older_than_days.as_deref() {
        None | Some("") => 0,
        Some(d) => d.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "binaryOlderThanDays={d:?} must be a whole number of days"
            ))
        })?,
    };
    let older_than = std::time::Duration::from_secs(days.saturating_mul(86_400));
    let status = match state.stowage.start_prune(&caller, dry_run, older_than)? {
        TaskStart::Started => "prune started",
        TaskStart::AlreadyRunning => "a prune is already running",
    };
    let body = json!({
        "status": status,
        "dryRun": dry_run,
        "binaryOlderThanDays": days,
        "progress": "/api/system/storage/prune/status",
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/system/storage/prune/status`.
pub(crate) async fn prune_status(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let (running, last) = state.stowage.prune_status(&caller)?;
    let last = figures::outcome(last, figures::prune_report);
    Ok(Json(json!({ "running": running, "last": last })).into_response())
}
