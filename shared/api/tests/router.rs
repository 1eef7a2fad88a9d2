//! The router driven in-process with `tower::ServiceExt::oneshot`, over the in-memory provider
//! and a fresh SQLite file: quick checks of routing, auth and error shapes. The same behaviours
//! are proven over real sockets against the real binary in `tests/`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use stowage_api::http::{AppState, Limits, Part, router, router_for};
use stowage_core::memory::InMemoryProvider;
use stowage_metadata::{Metadata, PoolSettings};
use stowage_service::auth::Auth;
use stowage_service::{Cluster, ClusterSettings, Filestore, Settings, Stowage};
use tower::ServiceExt;

async fn app() -> (tempfile::TempDir, axum::Router, String) {
    let (dir, state, token) = state().await;
    (dir, router(state), token)
}

async fn state() -> (tempfile::TempDir, AppState, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let metadata = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("db");
    metadata.migrate().await.expect("migrate");
    let (auth, created) = Auth::init(&metadata, dir.path()).await.expect("auth");
    let token = created.expect("first start creates a token").token;
    let cluster = Cluster::new(
        metadata.clone(),
        &ClusterSettings::default(),
        "n1".into(),
        "test".into(),
    );
    cluster.beat().await.expect("heartbeat");
    let stowage = Stowage::new(
        Filestore::from_provider(Arc::new(InMemoryProvider::new())),
        metadata,
        &Settings::default(),
        "n1",
    );
    stowage.security().admit_admin_token(auth);
    let state = AppState {
        stowage: Arc::new(stowage),
        cluster: Arc::new(cluster),
        base_url: Some("https://artifacts.example.com/".into()),
        limits: Limits::default(),
        backups: None,
        context_path: Some("/artifactory".into()),
        metrics: stowage_api::http::metrics::install(),
    };
    (dir, state, token)
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn deploy_and_info_through_the_router() {
    let (_dir, app, token) = app().await;
    let bearer = format!("Bearer {token}");
    let req = |method: &str, uri: &str, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &bearer)
            .body(Body::from(body))
            .expect("request")
    };
    let (status, _) = send(
        &app,
        req(
            "PUT",
            "/api/repositories/libs",
            "{\"packageType\":\"maven\"}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(&app, req("PUT", "/libs/a/b.txt;build=7", "hello")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["downloadUri"],
        "https://artifacts.example.com/libs/a/b.txt"
    );
    assert_eq!(body["mimeType"], "text/plain");
    let (status, body) = send(&app, req("GET", "/api/storage/libs/a/b.txt?properties", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["properties"]["build"][0], "7");
    let (status, body) = send(&app, req("GET", "/api/repositories", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["packageType"], "maven");
    let (status, body) = send(&app, req("GET", "/api/system/cluster", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["primary"], "n1");
    assert_eq!(body["nodes"][0]["primary"], true);
    let (status, body) = send(
        &app,
        req("PUT", "/api/repositories/x", "{\"rclass\":\"remote\"}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("rclass")
    );
}

#[tokio::test]
async fn errors_have_artifactorys_shape() {
    let (_dir, app, _token) = app().await;
    let anonymous = Request::builder()
        .uri("/libs/x")
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&app, anonymous).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["status"], 401);
    let ping = Request::builder()
        .uri("/api/system/ping")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(ping).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_refusal_is_json_and_unknown_api_calls_are_404s() {
    let (_dir, app, token) = app().await;
    let bearer = format!("Bearer {token}");
    let req = |method: &str, uri: &str, body: Body| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &bearer)
            .body(body)
            .expect("request")
    };
    let (status, _) = send(&app, req("PUT", "/api/repositories/libs", Body::empty())).await;
    assert_eq!(status, StatusCode::CREATED);

    // A method no route has: axum's 405, in Artifactory's shape.
    let (status, body) = send(&app, req("POST", "/libs/a.txt", Body::empty())).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["errors"][0]["status"], 405, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST")),
        "{body}"
    );

    // An unknown API call is a 404, not a repository named "api".
    for uri in ["/api/nonsense", "/api/nonsense/deeper", "/api"] {
        let (status, body) = send(&app, req("GET", uri, Body::empty())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(body["errors"][0]["status"], 404, "{uri}: {body}");
    }

    // A repository configuration larger than the body limit: 413, in the same shape.
    let big = Body::from(vec![b' '; 3 * 1024 * 1024]);
    let (status, body) = send(&app, req("PUT", "/api/repositories/big", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["status"], 413, "{body}");

    // An extractor's plain-text refusal (a malformed query) is carried into the message.
    let (status, body) = send(
        &app,
        req(
            "GET",
            "/api/search/checksum?sha256=a&sha256=b",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status.as_u16() / 100, 4);
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn each_function_serves_its_part_and_tells_where_the_rest_goes() {
    let (_dir, state, token) = state().await;
    let bearer = format!("Bearer {token}");
    let req = |method: &str, uri: &str, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &bearer)
            .body(Body::from(body))
            .expect("request")
    };
    let limits = Limits {
        max_request_body: Some(8),
        max_response_body: Some(8),
    };
    let part = |part: Part| {
        router_for(
            AppState {
                limits,
                ..state.clone()
            },
            part,
        )
    };
    let (upload, download, metadata) = (
        part(Part::Upload),
        part(Part::Download),
        part(Part::Metadata),
    );

    for app in [&upload, &download, &metadata] {
        let ping = Request::builder()
            .uri("/api/system/ping")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(ping).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let (status, _) = send(&metadata, req("PUT", "/api/repositories/libs", "{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(&upload, req("PUT", "/libs/small.txt", "12345678")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(&upload, req("PUT", "/libs/big.txt", "123456789")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("up to 8 bytes") && message.contains("POST /api/uploads"),
        "{message}"
    );
    let (status, _) = send(&metadata, req("GET", "/api/storage/libs/big.txt", "")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused upload stores nothing"
    );

    let response = download
        .clone()
        .oneshot(req("GET", "/libs/small.txt", ""))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = send(&download, req("PUT", "/libs/other.txt", "x")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("download function does not serve PUT")
            && message.contains("upload function"),
        "{message}"
    );
    let (status, body) = send(&upload, req("GET", "/api/storage/libs/small.txt", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("metadata function")
    );
    let (status, body) = send(&metadata, req("GET", "/api/storage/libs/small.txt", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["size"], "8");

    // A binary above the response limit with a filestore that cannot sign: told, not truncated.
    let wide = router_for(
        AppState {
            limits: Limits::default(),
            ..state.clone()
        },
        Part::Upload,
    );
    let (status, _) = send(&wide, req("PUT", "/libs/big.txt", "123456789")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(&download, req("GET", "/libs/big.txt", "")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("cannot sign a redirect"), "{message}");
    let response = download
        .clone()
        .oneshot(req("HEAD", "/libs/big.txt", ""))
        .await
        .expect("response");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "HEAD carries no body: answered"
    );
}

#[tokio::test]
async fn the_context_path_is_served_beside_the_root_or_not_at_all() {
    let (_dir, state, _) = state().await;
    let ping = |path: &str| {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    };
    let with = router(state.clone());
    for path in ["/api/system/ping", "/artifactory/api/system/ping"] {
        let response = with.clone().oneshot(ping(path)).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // A name that merely starts like the context path is not cut.
    let response = with
        .clone()
        .oneshot(ping("/artifactoryx/api/system/ping"))
        .await
        .expect("answer");
    assert_ne!(response.status(), StatusCode::OK);
    let without = router(AppState {
        backups: None,
        context_path: None,
        ..state
    });
    let response = without
        .oneshot(ping("/artifactory/api/system/ping"))
        .await
        .expect("answer");
    assert_ne!(response.status(), StatusCode::OK);
}
