//! Metrics in the Prometheus/OpenMetrics text format (`GET /api/v1/metrics`, administrators
//! only, as Artifactory serves it) and readiness (`GET /api/v1/system/readiness`, for load
//! balancers: no credentials). Counters are recorded through the `metrics` facade wherever the
//! work happens (requests here; deploys, dedup, downloads, locks, GC in the service and the
//! metadata) into one Prometheus recorder per process; figures that live elsewhere (the queue,
//! the caches, the shards, the pools) are read at each scrape. Labels are bounded: a route is
//! its pattern (`/{repo}/{*path}`), never a path.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stowage_service::security::Caller;

use super::{ApiError, AppState};

/// Latency buckets, in seconds: a redirect takes well under a millisecond, a large upload
/// minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder folds what histograms gathered (unscraped, their samples would
/// pile up in memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed the first time with a thread that keeps it
/// (`None` if another recorder was installed before: then nothing is recorded here).
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    let kept = handle.clone();
                    let upkeep = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_EVERY);
                                kept.run_upkeep();
                            }
                        });
                    if let Err(e) = upkeep {
                        tracing::warn!(error = %e, "metrics are off: no upkeep thread");
                        return None;
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: a recorder was installed already");
                    None
                }
            }
        })
        .clone()
}

/// The metrics of one route, method and status, looked up once: a request then costs a
/// map lookup by route, not the recorder's key building and hashing for each metric.
struct RouteMetrics {
    requests: Counter,
    duration: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// A route's metrics by method and status.
type ByOutcome = HashMap<(Method, u16), Arc<RouteMetrics>>;

static ROUTES: LazyLock<RwLock<HashMap<String, ByOutcome>>> = LazyLock::new(RwLock::default);

/// The metrics of `route`, `method` and `status`, registered the first time.
fn route_metrics(route: &str, method: &Method, status: u16) -> Arc<RouteMetrics> {
    let key = (method.clone(), status);
    if let Ok(routes) = ROUTES.read()
        && let Some(found) = routes.get(route).and_then(|m| m.get(&key))
    {
        return Arc::clone(found);
    }
    let labels = [
        ("route", route.to_string()),
        ("method", method.as_str().to_string()),
    ];
    let mut counted = labels.to_vec();
    counted.push(("status", status.to_string()));
    let made = Arc::new(RouteMetrics {
        requests: metrics::counter!("stowage_http_requests_total", &counted),
        duration: metrics::histogram!("stowage_http_request_duration_seconds", &labels),
        bytes_in: metrics::counter!("stowage_http_request_bytes_total", "route" => route.to_string()),
        bytes_out: metrics::counter!("stowage_http_response_bytes_total", "route" => route.to_string()),
    });
    if let Ok(mut routes) = ROUTES.write() {
        routes
            .entry(route.to_string())
            .or_default()
            .insert(key, Arc::clone(&made));
    }
    made
}

/// Counts every request by route pattern, method (any method Stowage does not serve counts
/// as `TRACE`) and status, times it, and adds the bytes its headers announce in and out.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    // Methods a client makes up would be labels without bound: they count as one.
    let method = match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::PUT
        | Method::POST
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS => request.method().clone(),
        _ => Method::TRACE,
    };
    let length = |headers: &axum::http::HeaderMap| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let bytes_in = length(request.headers());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let m = route_metrics(route, &method, response.status().as_u16());
    m.duration.record(started.elapsed().as_secs_f64());
    m.requests.increment(1);
    if bytes_in > 0 {
        m.bytes_in.increment(bytes_in);
    }
    let bytes_out = length(response.headers());
    if bytes_out > 0 {
        m.bytes_out.increment(bytes_out);
    }
    response
}

/// `GET /api/v1/metrics`: every metric of this node, in Prometheus's text format.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    render(&state, &caller).await
}

/// The router of `[metrics] listen`: `GET /metrics` without credentials, for a scraper in
/// the node's own task (the listener is meant for a loopback address).
pub fn scrape_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(state): State<AppState>| async move {
                render(&state, &Caller::admin()).await
            }),
        )
        .with_state(state)
}

/// The metrics text, with the figures read at this moment.
async fn render(state: &AppState, caller: &Caller) -> Result<Response, ApiError> {
    let figures = state.stowage.node_figures(caller).await?;
    let Some(handle) = &state.metrics else {
        return Err(ApiError::Status(
            StatusCode::NOT_FOUND,
            "metrics are off on this node ([metrics] enabled = false)".into(),
        ));
    };
    let gauge = |name: &'static str, value: u64| metrics::gauge!(name).set(value as f64);
    if let Some(q) = &figures.queue {
        gauge("stowage_queue_depth", q.depth);
        gauge("stowage_queue_bytes", q.bytes);
        gauge(
            "stowage_queue_oldest_age_seconds",
            q.oldest_age_secs.unwrap_or(0),
        );
        gauge("stowage_queue_uploading", q.uploading);
        gauge("stowage_queue_retrying", q.retrying);
        metrics::counter!("stowage_queue_uploaded_total").absolute(q.uploaded);
    }
    if let Some(c) = &figures.cache {
        metrics::counter!("stowage_cache_hits_total").absolute(c.hits);
        metrics::counter!("stowage_cache_misses_total").absolute(c.misses);
        metrics::counter!("stowage_cache_evictions_total").absolute(c.evictions);
        gauge("stowage_cache_entries", c.entries);
        gauge("stowage_cache_size_bytes", c.size_bytes);
    }
    if let Some(c) = &figures.artifact_cache {
        metrics::counter!("stowage_artifact_cache_hits_total").absolute(c.hits);
        metrics::counter!("stowage_artifact_cache_misses_total").absolute(c.misses);
    }
    // Long tasks: whether they run, and how far the running one got.
    let gc = state.stowage.gc_progress();
    gauge("stowage_gc_running", u64::from(gc.running));
    gauge(
        "stowage_gc_binaries_removed_so_far",
        gc.current.binaries_removed,
    );
    if let Some(shards) = &figures.shards {
        let b = &shards.balancing;
        gauge("stowage_balancing_running", u64::from(b.running));
        gauge("stowage_balancing_needed", u64::from(b.needs_balancing));
        if let Some(r) = b.current.as_ref().or(b.last.as_ref()) {
            gauge("stowage_balancing_checked", r.checked);
            gauge("stowage_balancing_total", r.total);
            gauge("stowage_balancing_remaining", r.remaining);
        }
        for mount in &shards.mounts {
            let id = mount.id.clone();
            metrics::gauge!("stowage_shard_up", "shard" => id.clone())
                .set(if mount.state == "up" { 1.0 } else { 0.0 });
            if let Some(free) = mount.free_space {
                metrics::gauge!("stowage_shard_free_bytes", "shard" => id).set(free as f64);
            }
        }
    }
    if let Ok(health) = &figures.health
        && let Some(free) = health.free_space
    {
        gauge("stowage_filestore_free_bytes", free);
    }
    for ((open, idle), pool) in figures.pools.iter().zip(["writer", "reader"]) {
        metrics::gauge!("stowage_db_connections", "pool" => pool, "state" => "open")
            .set(f64::from(*open));
        metrics::gauge!("stowage_db_connections", "pool" => pool, "state" => "idle")
            .set(f64::from(*idle));
    }
    handle.run_upkeep();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// `GET /api/v1/system/readiness`: 200 when this node can take traffic, 503 naming the part
/// that cannot answer (the reasons themselves go to the log: the call needs no credentials).
pub(crate) async fn readiness(State(state): State<AppState>) -> Response {
    let ready = state.stowage.readiness().await;
    let part = |r: &Result<(), String>, name: &str| match r {
        Ok(()) => "OK",
        Err(e) => {
            tracing::warn!(part = name, error = %e, "not ready");
            "UNAVAILABLE"
        }
    };
    let mut checks = serde_json::json!({
        "database": part(&ready.database, "database"),
        "backend": part(&ready.backend, "backend"),
        "locks": part(&ready.locks, "locks"),
    });
    if let Some(queue) = &ready.queue {
        checks["queue"] = part(queue, "queue").into();
    }
    let (status, word) = if ready.is_ready() {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    };
    (
        status,
        axum::Json(serde_json::json!({ "code": word, "checks": checks })),
    )
        .into_response()
}
