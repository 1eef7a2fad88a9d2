//! What an operator watches (issue 24): the Prometheus metrics after a known sequence of
//! calls, against S3 (LocalStack) with the read cache, and readiness, which turns 503 while
//! the database is away (PostgreSQL behind a proxy that takes it away) and 200 once it is
//! back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use stowage_core::BinaryProviderExt as _;
use stowage_tests::flaky::FlakyProxy;
use stowage_tests::{Options, Server, bytes, files_below, postgres_database, s3, sha256_hex};

/// The samples of a Prometheus text page: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
fn total(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_count_deploys_dedup_redirects_and_cache_hits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let config = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[filestore]\ntemplate = \"s3-storage-v3-direct\"\n\n\
         [filestore.cache]\nenabled = true\n\n{}",
        s3::toml_section(&endpoint, &bucket)
    );
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await;
    let c = s.admin();
    s.create_redirecting_repo("dist").await;
    // Two deploys of new bytes, one of bytes stored already.
    for (path, seed) in [
        ("/dist/a.bin", 1),
        ("/dist/b.bin", 2),
        ("/dist/again.bin", 1),
    ] {
        let r = c
            .put(s.url(path))
            .body(bytes(seed, 10_000))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // A redirect, then the bytes twice (the second from the cache).
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_follow
        .get(s.url("/dist/a.bin"))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    for _ in 0..2 {
        let r = c
            .get(s.url("/dist/b.bin?redirect=false"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("body").len(), 10_000);
    }
    let r = reqwest::get(s.url("/api/v1/metrics"))
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "administrators only");
    let r = c
        .get(s.url("/api/v1/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    let m = samples(&text);
    assert_eq!(
        total(&m, "stowage_deploys_total", &["via=\"stream\""]),
        3.0,
        "{text}"
    );
    assert_eq!(total(&m, "stowage_dedup_total", &[]), 1.0, "{text}");
    assert_eq!(
        total(&m, "stowage_downloads_total", &["answer=\"redirect\""]),
        1.0
    );
    assert_eq!(
        total(&m, "stowage_downloads_total", &["answer=\"bytes\""]),
        2.0
    );
    assert!(total(&m, "stowage_cache_hits_total", &[]) >= 1.0, "{text}");
    assert_eq!(
        total(
            &m,
            "stowage_http_requests_total",
            &[
                "route=\"/{repo}/{*path}\"",
                "method=\"PUT\"",
                "status=\"201\""
            ]
        ),
        3.0,
        "{text}"
    );
    assert!(
        total(
            &m,
            "stowage_http_request_bytes_total",
            &["route=\"/{repo}/{*path}\""]
        ) >= 30_000.0
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("stowage_http_request_duration_seconds_bucket")),
        "latency histograms: {text}"
    );
    // No label carries a path.
    assert!(!text.contains("a.bin"), "{text}");

    // The scrape listener (`[metrics] listen`, for a sidecar in the node's task) serves the
    // same figures without credentials, and nothing else.
    let scrape = s
        .banner
        .lines()
        .find_map(|l| l.strip_prefix("metrics listening on "))
        .unwrap_or_else(|| panic!("no metrics listener announced: {}", s.banner))
        .trim()
        .to_string();
    let r = reqwest::get(format!("{scrape}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let scraped = samples(&r.text().await.expect("text"));
    assert_eq!(total(&scraped, "stowage_dedup_total", &[]), 1.0);
    let r = reqwest::get(format!("{scrape}/api/storageinfo"))
        .await
        .expect("other path");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the listener serves metrics only"
    );
}

/// A node whose queue disk goes away with it (an ECS task's EBS volume) uploads its queue
/// between SIGTERM and its exit (`drainOnShutdownSecs`), also when the object store is away
/// at the moment the signal comes and returns only later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_uploads_its_queue_before_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let proxy = FlakyProxy::start(endpoint.trim_start_matches("http://")).await;
    let proxied = format!("http://127.0.0.1:{}", proxy.port);
    let config = format!(
        "[filestore]\ntemplate = \"s3-storage-v3\"\n\n\
         [filestore.eventual]\ndrainOnShutdownSecs = 60\nmaxRetryBackoffSecs = 1\n\n{}",
        s3::toml_section(&proxied, &bucket)
    );
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    proxy.go_down();
    let c = s.admin();
    let mut digests = Vec::new();
    for seed in 0..3 {
        let data = bytes(100 + seed, 50_000);
        let r = c
            .put(s.url(&format!("/libs/queued-{seed}.bin")))
            .body(data.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED, "queued while S3 is away");
        digests.push(sha256_hex(&data));
    }
    assert_eq!(s.queue_depth().await, 3);
    // The queue's attempts meanwhile count as transient backend errors.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = c
            .get(s.url("/api/v1/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let errors = total(
            &samples(&text),
            "stowage_backend_errors_total",
            &["kind=\"transient\""],
        );
        if errors >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no transient backend error counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queue_dir = s.data_dir.join("eventual");
    s.terminate();
    // S3 is still away: the node waits rather than leave with its queue.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !files_below(&queue_dir).is_empty(),
        "the queue is still on the disk while S3 is away"
    );
    proxy.come_back();
    let status = s.wait().await;
    assert!(status.success(), "{status}");
    let left = files_below(&queue_dir);
    assert!(
        left.is_empty(),
        "the queue was uploaded before the exit: {left:?}"
    );
    let store = s3::client(&endpoint, &bucket, dir.path()).await;
    for digest in digests {
        let digest = digest.parse().expect("digest");
        assert!(
            store.exists(&digest).await.expect("head"),
            "{digest} is in S3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = postgres_database(dir.path()).await else {
        return;
    };
    // The server reaches PostgreSQL through a proxy that can take it away.
    let (scheme_user, rest) = url.split_once('@').expect("a URL with a user");
    let (host_port, database) = rest.split_once('/').expect("a URL with a database");
    let proxy = FlakyProxy::start(host_port).await;
    let proxied = format!("{scheme_user}@127.0.0.1:{}/{database}", proxy.port);
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some("[database]\nacquire_timeout_secs = 3\n".into()),
            database_url: Some(proxied),
            ..Options::default()
        },
    )
    .await;
    let ready = || async {
        let r = reqwest::get(s.url("/api/v1/system/readiness"))
            .await
            .expect("readiness");
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.expect("json"))
    };
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "OK");
    // The container's health check is readiness.
    let healthy = || async {
        tokio::process::Command::new(stowage_tests::stowage_bin())
            .args(["healthcheck", "--listen", &s.addr()])
            .output()
            .await
            .expect("run healthcheck")
            .status
            .success()
    };
    assert!(healthy().await, "healthy while the database answers");
    // Liveness stays what it was; readiness turns 503 and names the database.
    proxy.go_down();
    // The cut reaches the open connections as the proxy's tasks run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"], "UNAVAILABLE");
    assert_eq!(body["checks"]["backend"], "OK");
    let ping = reqwest::get(s.url("/api/system/ping")).await.expect("ping");
    assert_eq!(ping.status(), StatusCode::OK);
    assert!(!healthy().await, "unhealthy while the database is away");
    proxy.come_back();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ready().await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
