//! Presigned upload sessions (`/api/uploads`): for clients whose bytes cannot pass through
//! Stowage (a Lambda request body is capped near 6 MB). Open a session, send the bytes to the
//! URLs it gives, then complete it; Stowage verifies the bytes before recording the artifact.
//!
//! ```text
//! POST   /api/uploads                {"repo","path","size","sha256"} → 201 pending | deployed
//! POST   /api/uploads/{id}/complete  → 201 with the deploy body
//! DELETE /api/uploads/{id}           → 204
//! ```

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stowage_core::{ArtifactPath, RepoKey, Sha256};

use super::{ApiError, AppState, figures, json as shapes};
use stowage_service::SessionStart;
use stowage_service::security::Caller;

/// The body of `POST /api/uploads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenSession {
    repo: String,
    path: String,
    size: u64,
    sha256: String,
}

/// `POST /api/uploads`.
pub(crate) async fn open(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<OpenSession>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(open) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; send JSON {{\"repo\": \"…\", \"path\": \"…\", \"size\": N, \"sha256\": \"…\"}}",
            e.body_text()
        ))
    })?;
    let repo = RepoKey::parse(&open.repo)?;
    let path = ArtifactPath::parse(&open.path)?;
    let sha256: Sha256 = open.sha256.trim().parse()?;
    let base = state.base_url(&headers);
    let started = state
        .stowage
        .start_upload_session(&caller, &repo, &path, open.size, sha256)
        .await?;
    let body = match started {
        SessionStart::Deployed(record) => json!({
            "status": "deployed",
            "artifact": shapes::deployed(&base, &record),
        }),
        SessionStart::Pending { session, plan } => json!({
            "status": "pending",
            "id": session.id,
            "repo": session.repo.as_str(),
            "path": session.path.as_str(),
            "size": session.size,
            "sha256": session.sha256.to_hex(),
            "expiresAt": shapes::iso(session.expires_ms),
            "upload": figures::upload_plan(&plan),
            "completeUri": format!("{base}/api/uploads/{}/complete", session.id),
        }),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /api/uploads/{id}/complete`.
pub(crate) async fn complete(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stowage = std::sync::Arc::clone(&state.stowage);
    let record =
        super::to_the_end(async move { stowage.complete_upload_session(&caller, &id).await })
            .await?;
    let base = state.base_url(&headers);
    Ok((StatusCode::CREATED, Json(shapes::deployed(&base, &record))).into_response())
}

/// `DELETE /api/uploads/{id}`.
pub(crate) async fn abort(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.stowage.abort_upload_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
