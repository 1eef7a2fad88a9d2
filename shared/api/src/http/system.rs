//! Handlers for the system, repository and trash APIs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stowage_core::{ArtifactPath, Error, RepoKey};
use stowage_metadata::{Repository, now_ms};

use stowage_service::tasks::BalanceStart;

use super::{ApiError, AppState, json as shapes};

/// `GET /api/system/ping`.
pub(crate) async fn ping() -> &'static str {
    "OK"
}

/// `GET /api/system/version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "product": "stowage" }))
}

/// `POST /api/system/storage/gc`: runs on the primary node only.
pub(crate) async fn gc(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = stowage_service::tasks::run_gc(&state.stowage, &state.cluster).await?;
    Ok(Json(report).into_response())
}

/// `POST /api/system/storage/optimize` (Optimize System Storage): starts a balancing pass of
/// the sharded store on the primary node and answers at once (202); its progress is in
/// `/api/storageinfo` under `shards.balancing`.
pub(crate) async fn optimize(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = match stowage_service::tasks::start_balance(&state.stowage, &state.cluster).await?
    {
        BalanceStart::AlreadyRunning => "balancing is already running",
        BalanceStart::Started => "balancing started",
    };
    let body = json!({ "status": status, "progress": "/api/storageinfo" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/system/cluster`: the nodes and which one is primary.
pub(crate) async fn cluster(State(state): State<AppState>) -> Result<Response, ApiError> {
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
pub(crate) async fn storage_info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = state.stowage.metadata().storage_summary().await?;
    // Storage info must still answer when the store cannot take writes: that is when it is
    // needed most.
    let (health, health_error) = match state.stowage.provider().health().await {
        Ok(health) => (health, None),
        Err(e) => (Default::default(), Some(e.to_string())),
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
                "itemsCount": r.files_count,
                "usedSpace": human(r.used_space),
                "usedSpaceInBytes": r.used_space,
                "percentage": format!("{pct:.2}%"),
            })
        })
        .collect();
    let provider = state.stowage.provider().to_string();
    let queue = state.stowage.queue_stats().await?;
    let shards = match state.stowage.sharding() {
        Some(sharding) => Some(json!({
            "redundancy": sharding.redundancy(),
            "lenientLimit": sharding.lenient_limit(),
            "mounts": sharding.mount_status().await,
            "balancing": sharding.balance_progress(),
        })),
        None => None,
    };
    Ok(Json(json!({
        "binariesSummary": {
            "binariesCount": grouped(s.binaries_count),
            "binariesSize": human(s.binaries_size),
            "artifactsSize": human(s.artifacts_size),
            "optimization": format!("{optimization:.2}%"),
            "itemsCount": grouped(s.artifacts_count),
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
            "totalSpaceInBytes": health.total_space,
            "freeSpaceInBytes": health.free_space,
            "error": health_error,
        },
        "repositoriesSummaryList": repos,
        "eventualQueue": queue,
        "shards": shards,
        "cache": state.stowage.cache_stats(),
        "artifactCache": state.stowage.metadata().artifact_cache_stats(),
    }))
    .into_response())
}

fn repo_key(raw: &str) -> Result<RepoKey, ApiError> {
    Ok(RepoKey::parse(raw)?)
}

/// `GET /api/repositories`.
pub(crate) async fn list_repositories(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let list: Vec<Value> = state
        .stowage
        .metadata()
        .repositories()
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
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let repo = state
        .stowage
        .metadata()
        .repository(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("repository {key:?}")))?;
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
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let mut config = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "the repository configuration must be a JSON object",
                ));
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "invalid repository JSON: {e}"
                )));
            }
        }
    };
    let mut take = |name: &str| match config.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    };
    if let Some(body_key) = take("key")?
        && body_key != key.as_str()
    {
        return Err(ApiError::bad_request(format!(
            "the body's key {body_key:?} differs from the URL's {key:?}"
        )));
    }
    let rclass = take("rclass")?.unwrap_or_else(|| "local".into());
    if rclass != "local" {
        return Err(ApiError::bad_request(format!(
            "rclass {rclass:?} is not supported; Stowage stores local repositories"
        )));
    }
    let package_type = take("packageType")?.unwrap_or_else(|| "generic".into());
    let description = take("description")?.unwrap_or_default();
    if config
        .get("downloadRedirect")
        .is_some_and(|v| !v.is_boolean() && !v.is_null())
    {
        return Err(ApiError::bad_request(
            "downloadRedirect must be true or false",
        ));
    }
    if config
        .get("downloadRedirectMinSize")
        .is_some_and(|v| v.as_u64().is_none() && !v.is_null())
    {
        return Err(ApiError::bad_request(
            "downloadRedirectMinSize must be a number of bytes (0 or more)",
        ));
    }
    let repo = Repository {
        key: key.clone(),
        rclass,
        package_type,
        description,
        config: Value::Object(config),
        created_ms: now_ms(),
    };
    let created = state.stowage.metadata().put_repository(&repo).await?;
    state.stowage.repository_changed(&key).await;
    let (status, verb) = if created {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "updated")
    };
    Ok((status, format!("Successfully {verb} repository '{key}'\n")).into_response())
}

/// `DELETE /api/repositories/{repo}`: the repository and everything in it.
pub(crate) async fn delete_repository(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = repo_key(&key)?;
    let deleted = state.stowage.metadata().delete_repository(&key).await?;
    state.stowage.repository_changed(&key).await;
    if !deleted {
        return Err(ApiError::not_found(format!("repository {key:?}")));
    }
    Ok(
        format!("Repository '{key}' and all its content have been removed successfully.\n")
            .into_response(),
    )
}

/// `GET /api/trash`: what is in the trash.
pub(crate) async fn trash_list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let items: Vec<Value> = state
        .stowage
        .metadata()
        .trash_list()
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
pub(crate) async fn trash_empty(State(state): State<AppState>) -> Result<Response, ApiError> {
    let purged = state.stowage.metadata().empty_trash(None).await?;
    Ok(Json(json!({ "purged": purged })).into_response())
}

/// `POST /api/trash/restore/{repo}/{path}`: back to where it was.
pub(crate) async fn trash_restore(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, ApiError> {
    if uri.query().is_some_and(|q| q.contains("to=")) {
        return Err(ApiError::bad_request(
            "restoring to another path is not supported yet; restore in place, then move",
        ));
    }
    let raw = uri.path().strip_prefix("/api/trash/restore/").unwrap_or("");
    let (repo, path) = raw.split_once('/').unwrap_or((raw, ""));
    let repo = RepoKey::from_url_segment(repo)?;
    let path = ArtifactPath::from_url_path(path)?;
    let restored = state.stowage.metadata().restore(&repo, &path).await?;
    if restored == 0 {
        return Err(Error::NotFound {
            what: format!("{repo}/{path} in the trash"),
        }
        .into());
    }
    Ok(format!("Successfully restored {restored} item(s) to {repo}/{path}\n").into_response())
}
