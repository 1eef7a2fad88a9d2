//! The storage dashboard: one page for administrators at `GET /ui/storage` (under the
//! context path too), with its script, its style and uPlot (`vendor/`, compiled in) under
//! `/ui/assets/`. The page holds no figures of its own: its script reads `/api/storageinfo`
//! and `/api/v1/metrics` with the browser's credentials, and keeps the last hour of samples
//! while it is open, so the server keeps no history for it.
//!
//! Asking for the page is authorized like any other call (administrators only; a browser
//! without credentials is challenged for them, and its later calls carry them). The assets
//! are the same for everyone and carry no data. Every answer forbids framing and sniffing, and
//! the page's Content-Security-Policy lets it load only its own files.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stowage_service::security::Caller;

use super::{ApiError, AppState};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");
/// uPlot 1.6.32 (MIT), unchanged from its npm package: see `vendor/README.md`.
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");

/// Scripts and styles from this server only; no inline script, no other origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn answer(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    response
}

/// `GET /ui/storage`: the page, for administrators.
pub(crate) async fn page(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    state
        .stowage
        .security()
        .require_admin(&caller, "open the storage dashboard")?;
    Ok(answer("text/html; charset=utf-8", PAGE, "no-store"))
}

/// `GET /ui/assets/{file}`: the page's script and style, and uPlot's.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    // The files change with the binary: a browser checks again after an hour.
    let cache = "public, max-age=3600";
    let (content_type, body) = match file.as_str() {
        "dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "dashboard.css" => ("text/css; charset=utf-8", STYLE),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => {
            return Err(ApiError::Status(
                StatusCode::NOT_FOUND,
                format!("no such dashboard file: {file}"),
            ));
        }
    };
    Ok(answer(content_type, body, cache))
}
