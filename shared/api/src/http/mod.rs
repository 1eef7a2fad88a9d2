//! The HTTP API (Artifactory-compatible where Artifactory has the call). `router` builds it
//! once; tests drive it with `tower::ServiceExt::oneshot`, the binaries serve it.

mod artifacts;
mod error;
mod json;
mod range;
mod system;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, Principal};
use crate::cluster::Cluster;
use crate::service::Stowage;

pub use error::ApiError;

/// What every handler shares: built once at start-up.
#[derive(Debug, Clone)]
pub struct AppState {
    pub stowage: Arc<Stowage>,
    pub auth: Arc<Auth>,
    pub cluster: Arc<Cluster>,
    /// Public base URL for links; `None` derives it from the `Host` header.
    pub base_url: Option<String>,
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

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/system/ping", get(system::ping))
        .route("/api/system/version", get(system::version))
        .route("/api/system/storage/gc", post(system::gc))
        .route("/api/system/storage/optimize", post(system::optimize))
        .route("/api/system/cluster", get(system::cluster))
        .route("/api/storageinfo", get(system::storage_info))
        .route("/api/repositories", get(system::list_repositories))
        .route(
            "/api/repositories/{repo}",
            get(system::get_repository)
                .put(system::put_repository)
                .delete(system::delete_repository),
        )
        .route(
            "/api/storage/{*rest}",
            get(artifacts::storage_info)
                .put(artifacts::set_properties)
                .delete(artifacts::delete_properties),
        )
        .route("/api/move/{*rest}", post(artifacts::move_items))
        .route("/api/copy/{*rest}", post(artifacts::copy_items))
        .route("/api/search/prop", get(artifacts::search_properties))
        .route("/api/search/checksum", get(artifacts::search_checksum))
        .route("/api/uploads", post(uploads::open))
        .route("/api/uploads/{id}/complete", post(uploads::complete))
        .route("/api/uploads/{id}", axum::routing::delete(uploads::abort))
        .route("/api/trash", get(system::trash_list))
        .route("/api/trash/empty", post(system::trash_empty))
        .route("/api/trash/restore/{*rest}", post(system::trash_restore))
        .route(
            "/{repo}",
            get(artifacts::download)
                .put(artifacts::deploy)
                .delete(artifacts::remove),
        )
        .route(
            "/{repo}/{*path}",
            get(artifacts::download)
                .put(artifacts::deploy)
                .delete(artifacts::remove),
        )
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Paths that only the admin may read, even with anonymous read on.
fn admin_only(path: &str) -> bool {
    path.starts_with("/api/storageinfo")
        || path.starts_with("/api/trash")
        || path.starts_with("/api/system/")
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/api/system/ping" {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match state.auth.authenticate(authorization) {
        Ok(p) => p,
        Err(reason) => return ApiError::Unauthorized(reason).into_response(),
    };
    let read = matches!(*request.method(), Method::GET | Method::HEAD) && !admin_only(path);
    if principal == Principal::Anonymous && !(read && state.auth.anonymous_read()) {
        return ApiError::Unauthorized(
            "authentication required: send Authorization: Bearer <token> or basic admin:<token>",
        )
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}
