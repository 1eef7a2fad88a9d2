//! The one mapping from domain errors to HTTP responses, in Artifactory's error shape
//! `{"errors":[{"status":N,"message":"…"}]}`. Internal detail (backend errors, SQL) goes to the
//! log, never to the client.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stowage_core::Error;

/// The longest plain-text error body (an extractor's rejection) carried into the JSON message.
const MAX_PLAIN_ERROR: usize = 4096;

/// An error a handler returns.
#[derive(Debug)]
pub enum ApiError {
    Domain(Error),
    Unauthorized(&'static str),
    /// An answer of its own: what this deployment cannot do (a body over a Lambda payload
    /// limit, a method another function serves), with a message that says where to go
    /// instead, or a 404 in Artifactory's words ([`missing`]).
    Status(StatusCode, String),
}

/// Artifactory's words for "there is nothing there", which its clients look for in a 404's
/// message to tell "missing" from "failed" (`exists()`, property reads): the storage API's,
/// a download's, and a property read's.
pub(crate) const NO_ITEM: &str = "Unable to find item";
pub(crate) const NO_FILE: &str = "File not found.";
pub(crate) const NO_PROPERTIES: &str = "No properties could be found.";

/// Maps a "not found" to a 404 that starts with Artifactory's `words`, then says what was
/// missing; any other error as it is.
pub(crate) fn missing(words: &'static str) -> impl Fn(Error) -> ApiError {
    move |e| match e {
        Error::NotFound { what } => {
            ApiError::Status(StatusCode::NOT_FOUND, format!("{words} ({what})"))
        }
        Error::RepositoryNotFound { key } => ApiError::Status(
            StatusCode::NOT_FOUND,
            format!("{words} (repository {key:?} was not found)"),
        ),
        other => ApiError::Domain(other),
    }
}

/// The longest message an error echoes; longer ones (a 10,000-character path) are cut.
const MAX_MESSAGE: usize = 512;

/// `message`, cut to [`MAX_MESSAGE`] bytes at a character boundary, saying so.
fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut: {} bytes in all)", &message[..end], message.len())
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl ApiError {
    /// A 404 with a message.
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ApiError::Domain(Error::NotFound { what: what.into() })
    }

    /// A 400 with a message.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::Domain(Error::InvalidInput(message.into()))
    }
}

/// The message of a timeout somewhere in `e`'s sources (a body the client stopped sending).
fn timed_out(e: &Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Some(io.to_string());
        }
        source = cause.source();
    }
    None
}

/// The status a domain error maps to.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } | Error::RepositoryNotFound { .. } => StatusCode::NOT_FOUND,
        Error::ChecksumMismatch { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
        Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::Truncated { .. }
        | Error::TooLong { .. }
        | Error::InvalidPath { .. }
        | Error::InvalidInput(_)
        | Error::Body { .. } => StatusCode::BAD_REQUEST,
        Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unsupported(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::BackendRefused { .. } => StatusCode::BAD_GATEWAY,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn error_body(status: StatusCode, message: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "errors": [{ "status": status.as_u16(), "message": bounded(message.to_string()) }]
    }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Status(status, message) => {
                if status.is_server_error() {
                    tracing::error!("{message}");
                }
                (status, error_body(status, &message)).into_response()
            }
            ApiError::Unauthorized(reason) => {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    error_body(StatusCode::UNAUTHORIZED, reason),
                )
                    .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Stowage\""),
                );
                response
            }
            ApiError::Domain(e) => {
                let status = status_of(&e);
                let message = match &e {
                    Error::Storage { .. } | Error::Metadata { .. } | Error::Body { .. } => {
                        if status.is_server_error() {
                            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "request failed");
                        } else {
                            tracing::info!(error = %e, "request body failed");
                        }
                        match (status, &e) {
                            (StatusCode::SERVICE_UNAVAILABLE, Error::Metadata { .. }) => {
                                "the metadata database is temporarily unavailable; retry"
                                    .to_string()
                            }
                            (StatusCode::SERVICE_UNAVAILABLE, _) => {
                                "the storage backend is temporarily unavailable; retry".to_string()
                            }
                            (StatusCode::BAD_REQUEST, e) => match timed_out(e) {
                                // Our own words (the body's idle timeout), safe to show.
                                Some(reason) => format!("{reason}; nothing was stored"),
                                None => "the request body could not be read completely; \
                                         nothing was stored"
                                    .to_string(),
                            },
                            _ => "internal error; the server log has the details".to_string(),
                        }
                    }
                    Error::StorageFull { backend, .. } => {
                        tracing::error!(error = %e, "a store is full");
                        format!(
                            "{backend} has no space left for this upload; nothing was stored \
                             (free space there, or add a mount)"
                        )
                    }
                    Error::BackendRefused { hint, .. } => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "storage backend refused a request");
                        format!("the storage backend refused the request: {hint}")
                    }
                    Error::RepositoryNotFound { key } => {
                        format!("{e} (create it with PUT /api/repositories/{key})")
                    }
                    Error::Unsupported(message) => {
                        tracing::error!("{message}");
                        message.clone()
                    }
                    other => other.to_string(),
                };
                let mut response = (status, error_body(status, &message)).into_response();
                if let Error::RangeNotSatisfiable { size } = e
                    && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
                {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"Stowage\""),
                    );
                }
                response
            }
        }
    }
}

/// Makes every error answer JSON in Artifactory's shape, including the ones axum writes itself
/// (405 with an empty body, an extractor's plain-text 400, 413 or 415): the message is the
/// plain text, or says what was refused. Answers that are JSON already pass untouched.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        _ if !text.is_empty() => text,
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} is not allowed on this path"),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if method == Method::HEAD {
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    let body = error_body(status, &message).into_response().into_body();
    Response::from_parts(parts, body)
}
