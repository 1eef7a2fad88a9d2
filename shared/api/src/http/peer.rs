//! The internal peer endpoint of the cluster queue ([`stowage_peer::QUEUE_PATH`]): another
//! node stores, reads and drops copies in this node's queue disk. It answers only a caller
//! that presents the cluster's secret ([`stowage_peer::KEY_HEADER`]), checked by the service's
//! [`Stowage::peer_queue`](stowage_service::Stowage::peer_queue); users and their tokens
//! never open it.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stowage_core::{Error, GetOptions, PutOptions, Sha256};
use stowage_peer::{CommittedAnswer, KEY_HEADER, StagedAnswer, StoredCopy};

use super::artifacts::declared_checksums;
use super::error::ApiError;
use super::{AppState, byte_stream, created_or_ok, range};

fn key(headers: &HeaderMap) -> Option<&str> {
    headers.get(KEY_HEADER).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn digest(text: &str) -> Result<Sha256, ApiError> {
    text.parse().map_err(|_| {
        ApiError::from(Error::InvalidInput(format!(
            "{:?} is not a SHA-256 (64 hex characters)",
            text.chars().take(80).collect::<String>()
        )))
    })
}

/// `PUT /_stowage/peer/queue`: stores the body as a queued copy; 201 (or 200 when held
/// already) with its checksums.
pub(crate) async fn store(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let door = state.stowage.peer_queue(key(&headers))?;
    let opts = PutOptions {
        expected: declared_checksums(&headers)?,
        size: content_length(&headers),
    };
    let stored = door.store(byte_stream(body), opts).await?;
    let status = created_or_ok(stored.created);
    let answer = StoredCopy {
        checksums: stored.checksums,
        size: stored.size,
        created: stored.created,
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// `PUT /_stowage/peer/queue/staged`: stages the body (a quorum write's copy); 201 with
/// `{id, crc32c, size}`.
pub(crate) async fn stage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let door = state.stowage.peer_queue(key(&headers))?;
    let staged = door
        .stage(byte_stream(body), content_length(&headers))
        .await?;
    let answer = StagedAnswer {
        id: staged.id,
        crc32c: staged.crc32c,
        size: staged.size,
    };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// The digest a commit names, and the CRC-32C of what the sender sent.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CommitQuery {
    sha256: String,
    crc32c: u32,
}

/// `POST /_stowage/peer/queue/staged/{id}?sha256=…&crc32c=…`: names a staged copy; 201 (new)
/// or 200.
pub(crate) async fn commit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<CommitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let door = state.stowage.peer_queue(key(&headers))?;
    let created = door
        .commit(&id, &digest(&query.sha256)?, query.crc32c)
        .await?;
    let status = created_or_ok(created);
    Ok((status, axum::Json(CommittedAnswer { created })).into_response())
}

/// `GET|HEAD /_stowage/peer/queue/{sha256}`: this node's copy (a `Range` is honoured).
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let door = state.stowage.peer_queue(key(&headers))?;
    let digest = digest(&sha256)?;
    let meta = door.head(&digest).await?;
    let wanted = range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()));
    let span = wanted.map(|r| r.resolve(meta.size)).transpose()?;
    let mut response = Response::builder();
    let length = span.as_ref().map_or(meta.size, |r| r.end - r.start);
    response = response.header(header::CONTENT_LENGTH, length);
    if let Some(r) = &span {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                r.start,
                r.end.saturating_sub(1),
                meta.size
            ),
        );
    }
    let body = if method == axum::http::Method::HEAD {
        Body::empty()
    } else {
        let found = door.read(&digest, GetOptions { range: span }).await?;
        Body::from_stream(found.stream)
    };
    response
        .body(body)
        .map_err(|e| ApiError::from(Error::Unavailable(format!("cannot answer: {e}"))))
}

/// `DELETE /_stowage/peer/queue/{sha256}`: drops this node's copy (never the store's).
pub(crate) async fn drop_copy(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let door = state.stowage.peer_queue(key(&headers))?;
    door.drop_copy(&digest(&sha256)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
