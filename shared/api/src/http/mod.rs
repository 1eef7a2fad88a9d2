//! The HTTP API (Artifactory-compatible where Artifactory has the call). `router` builds it
//! once; tests drive it with `tower::ServiceExt::oneshot`, the binaries serve it.

mod artifacts;
mod dashboard;
mod early_answer;
mod error;
pub mod figures;
mod json;
pub mod metrics;
mod peer;
mod range;
mod security;
mod system;
mod target;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use tower_http::trace::TraceLayer;

use stowage_service::security::Credentials;
use stowage_service::{Cluster, Stowage};

pub use error::ApiError;

/// What every handler shares: built once at start-up.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The service, with the admin token admitted (`Security::admit_admin_token`).
    pub stowage: Arc<Stowage>,
    pub cluster: Arc<Cluster>,
    /// Public base URL for links; `None` derives it from the `Host` header.
    pub base_url: Option<String>,
    /// What this deployment can carry (Lambda's payload limits); none for a server.
    pub limits: Limits,
    /// This process's metrics recorder ([`metrics::install`]); `None`: metrics are off.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// What backups asked for through the API need (`POST /api/system/backup`): the
    /// configuration that resolves a target, and a work directory; `None`: not offered here.
    pub backups: Option<BackupSettings>,
    /// The context path the API also answers under (`/artifactory`, where Artifactory's
    /// clients put every call); `None`: the root only.
    pub context_path: Option<String>,
}

/// See [`AppState::backups`].
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub config: Arc<stowage_config::Config>,
    /// The configuration file's text, secrets left out, kept with each backup.
    pub config_text: Option<String>,
    pub work_dir: std::path::PathBuf,
}

impl AppState {
    /// The base URL links in responses start with, without a trailing slash.
    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(base) = &self.base_url {
            return base.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("localhost");
        format!("http://{host}")
    }
}

/// Which part of the API a binary serves. The all-in-one `stowage serve` serves [`Part::All`];
/// each function binary serves one part, so a load balancer, an API Gateway HTTP API or
/// CloudFront can route by method and path (see `terraform/`):
///
/// | part       | routes                                                                  |
/// |------------|-------------------------------------------------------------------------|
/// | `upload`   | `PUT /{repo}/{path}`, `POST /api/uploads`, `POST /api/uploads/{id}/complete`, `DELETE /api/uploads/{id}` |
/// | `download` | `GET` and `HEAD /{repo}/{path}`                                          |
/// | `metadata` | every other `/api/…` call, `DELETE /{repo}/{path}` and the dashboard (`/ui/…`) |
///
/// Every part answers `GET /api/system/ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    Upload,
    Download,
    Metadata,
}

impl Part {
    /// The function's name (`upload`, `download`, `metadata`), `stowage` for the whole API.
    pub fn name(self) -> &'static str {
        match self {
            Part::All => "stowage",
            Part::Upload => "upload",
            Part::Download => "download",
            Part::Metadata => "metadata",
        }
    }

    /// Where each call goes, for the errors of a function asked for another's call.
    pub const ROUTES: &'static str = "PUT /{repo}/{path} and /api/uploads go to the upload \
        function, GET and HEAD /{repo}/{path} to the download function, everything else to \
        the metadata function";
}

/// What a deployment can carry. A Lambda function's request and response payloads are capped
/// (6 MB each, less once binary bodies are base64-encoded); containers have no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Deploys with larger bodies get a 413 that names the presigned-session endpoint.
    pub max_request_body: Option<u64>,
    /// Downloads of larger binaries are always redirected to a signed URL.
    pub max_response_body: Option<u64>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    router_for(state, Part::All)
}

/// The routes of one part of the API (see [`Part`]).
pub fn router_for(state: AppState, part: Part) -> Router {
    let all = part == Part::All;
    let upload = all || part == Part::Upload;
    let download = all || part == Part::Download;
    let metadata = all || part == Part::Metadata;
    let mut router = Router::new()
        .route("/api/system/ping", get(system::ping))
        .route("/api/v1/system/readiness", get(metrics::readiness));
    if metadata {
        router = router
            .route("/api/system/version", get(system::version))
            .route("/api/v1/metrics", get(metrics::metrics))
            .route("/ui/storage", get(dashboard::page))
            .route("/ui/assets/{file}", get(dashboard::asset))
            .route("/api/system/storage/gc", post(system::gc))
            .route("/api/system/storage/optimize", post(system::optimize))
            .route("/api/system/storage/prune/start", post(system::prune_start))
            .route(
                "/api/system/storage/prune/status",
                get(system::prune_status),
            )
            .route("/api/system/cluster", get(system::cluster))
            .route("/api/system/tasks", get(system::tasks))
            .route("/api/system/backup", post(system::backup))
            .route("/api/storageinfo", get(system::storage_info))
            .route("/api/repositories", get(system::list_repositories))
            .route(
                "/api/repositories/{repo}",
                get(system::get_repository)
                    .put(system::put_repository)
                    .post(system::update_repository)
                    .delete(system::delete_repository),
            )
            .route(
                "/api/storage/{*rest}",
                get(artifacts::storage_info)
                    .put(artifacts::set_properties)
                    .delete(artifacts::delete_properties),
            )
            .route(
                "/api/metadata/{*rest}",
                axum::routing::patch(artifacts::patch_metadata),
            )
            .route("/api/move/{*rest}", post(artifacts::move_items))
            .route("/api/copy/{*rest}", post(artifacts::copy_items))
            .route("/api/search/prop", get(artifacts::search_properties))
            .route("/api/search/checksum", get(artifacts::search_checksum))
            .route("/api/trash", get(system::trash_list))
            .route("/api/trash/empty", post(system::trash_empty))
            .route("/api/trash/restore/{*rest}", post(system::trash_restore))
            .route(
                "/api/trash/clean/{*rest}",
                axum::routing::delete(system::trash_clean),
            )
            .route("/api/audit", get(security::audit))
            .route("/api/security/users", get(security::list_users))
            .route(
                "/api/security/users/{name}",
                get(security::get_user)
                    .put(security::create_user)
                    .post(security::update_user)
                    .delete(security::delete_user),
            )
            .route("/api/security/groups", get(security::list_groups))
            .route(
                "/api/security/groups/{name}",
                get(security::get_group)
                    .put(security::put_group)
                    .post(security::put_group)
                    .delete(security::delete_group),
            )
            .route(
                "/api/v2/security/permissions",
                get(security::list_permissions),
            )
            .route(
                "/api/v2/security/permissions/{name}",
                get(security::get_permission)
                    .put(security::put_permission)
                    .post(security::put_permission)
                    .delete(security::delete_permission),
            )
            .route(
                "/access/api/v1/tokens",
                get(security::list_tokens).post(security::create_token),
            )
            .route(
                "/access/api/v1/tokens/{id}",
                axum::routing::delete(security::revoke_token),
            );
    }
    if all {
        // The cluster queue's internal endpoint; the service opens it to the cluster's
        // secret only.
        router = router
            .route(stowage_peer::QUEUE_PATH, axum::routing::put(peer::store))
            .route(
                &format!("{}/staged", stowage_peer::QUEUE_PATH),
                axum::routing::put(peer::stage),
            )
            .route(
                &format!("{}/staged/{{id}}", stowage_peer::QUEUE_PATH),
                post(peer::commit),
            )
            .route(
                &format!("{}/{{sha256}}", stowage_peer::QUEUE_PATH),
                get(peer::read).delete(peer::drop_copy),
            );
    }
    if upload {
        router = router
            .route("/api/uploads", post(uploads::open))
            .route("/api/uploads/{id}/complete", post(uploads::complete))
            .route("/api/uploads/{id}", axum::routing::delete(uploads::abort));
    }
    // Artifacts: one route per pattern, with the methods of the parts served.
    let mut artifact = MethodRouter::new();
    if download {
        artifact = artifact.get(artifacts::download);
    }
    if upload {
        artifact = artifact.put(artifacts::deploy);
    }
    if metadata {
        artifact = artifact.delete(artifacts::remove);
    }
    if part != Part::All {
        artifact = artifact.fallback(move |method: Method, uri: axum::http::Uri| async move {
            wrong_function(part, Some(&method), uri.path())
        });
    }
    // Unknown API calls are 404s, never taken for a repository named "api".
    let unknown = move |uri: axum::http::Uri| async move { wrong_function(part, None, uri.path()) };
    let context_path = state.context_path.clone();
    let api = router
        .route("/api", any(unknown))
        .route("/api/{*rest}", any(unknown))
        .route("/{repo}", artifact.clone())
        .route("/{repo}/{*path}", artifact)
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(error::json_errors));
    let api = if state.metrics.is_some() {
        api.layer(middleware::from_fn(metrics::record))
    } else {
        api
    };
    let api = api.with_state(state);
    // Routing happens after a router's own layers, so the context path is cut before the
    // request reaches the routes: one set of routes serves both roots.
    let Some(context_path) = context_path else {
        return api
            .layer(middleware::from_fn(early_answer::settle_unread_body))
            .layer(TraceLayer::new_for_http());
    };
    Router::new()
        .fallback_service(
            tower::ServiceBuilder::new()
                .map_request(move |r| without_context_path(&context_path, r))
                .service(api),
        )
        .layer(middleware::from_fn(early_answer::settle_unread_body))
        .layer(TraceLayer::new_for_http())
}

/// A request body as the service takes it; a broken body is `Error::Body`.
pub(crate) fn byte_stream(body: axum::body::Body) -> stowage_core::ByteStream {
    use futures::{StreamExt as _, TryStreamExt as _};
    body.into_data_stream()
        .map_err(|e| stowage_core::Error::Body {
            source: Box::new(e),
        })
        .boxed()
}

/// Runs a write that records an artifact to its end in a task of its own: a client that goes
/// away must not cancel it while its database locks are held and its row is being committed
/// (by another task, in a group commit), which would release the locks before the commit
/// (docs/durability.md, "Group commit"). A body that is cut off still ends it early, with
/// `Error::Body`.
pub(crate) async fn to_the_end<T: Send + 'static>(
    write: impl std::future::Future<Output = stowage_core::Result<T>> + Send + 'static,
) -> stowage_core::Result<T> {
    tokio::spawn(write)
        .await
        .map_err(|e| stowage_core::Error::Unavailable(format!("the write's task failed: {e}")))?
}

/// 201 for what a write created, 200 for what it replaced or found in place.
pub(crate) fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// `request` with `context_path` cut from the front of its path, if it has it there.
fn without_context_path(context_path: &str, mut request: Request) -> Request {
    let uri = request.uri();
    let path = uri.path();
    let Some(rest) = path.strip_prefix(context_path) else {
        return request;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return request;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let rewritten = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    if let Ok(path_and_query) = rewritten.parse::<axum::http::uri::PathAndQuery>() {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The answer for a call this binary does not serve: 404 for an unknown endpoint, 405 for an
/// artifact method another function serves; both say where the call goes.
fn wrong_function(part: Part, method: Option<&Method>, path: &str) -> ApiError {
    if part == Part::All {
        return ApiError::Status(
            StatusCode::NOT_FOUND,
            format!("no such API endpoint: {path}"),
        );
    }
    match method {
        Some(method) if !path.starts_with("/api/") => ApiError::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "the {} function does not serve {method} on artifacts: {}",
                part.name(),
                Part::ROUTES
            ),
        ),
        _ => ApiError::Status(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint in the {} function: {}",
                part.name(),
                Part::ROUTES
            ),
        ),
    }
}

/// Works out who the caller is (anonymous without credentials) and hands it to the handlers,
/// which hand it to the service: what the caller may do is decided there, for every entry
/// point alike. Bad credentials are refused here, with the same words whatever was wrong.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // The peer endpoint takes the cluster's secret only, which the service checks.
    let path = request.uri().path();
    if matches!(path, "/api/system/ping" | "/api/v1/system/readiness")
        || path.starts_with(stowage_peer::QUEUE_PATH)
    {
        return next.run(request).await;
    }
    // Read before any await: the request (its body) is not `Sync`.
    let credentials = {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
        Credentials::from_headers(
            header(header::AUTHORIZATION.as_str()),
            header("x-jfrog-art-api"),
        )
    };
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let source = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.ip().to_string());
    let caller = match state
        .stowage
        .security()
        .authenticate(&credentials, &source)
        .await
    {
        Ok(caller) => caller,
        Err(e) => return ApiError::from(e).into_response(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}
