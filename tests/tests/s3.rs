//! `stowage serve` on the S3 templates against real LocalStack, over real sockets: direct
//! uploads around `maxFileSizeForDirectUpload` (and that the direct path never writes the body
//! to local disk), the eventual queue surviving kill -9 and a LocalStack outage, presigned
//! upload sessions, and S3 refusals as clear API errors.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage_core::BinaryProviderExt;
use stowage_tests::s3::{self, LocalStack};
use stowage_tests::{Options, Server, bytes, files_below, sha256_hex};

const MIB: usize = 1024 * 1024;
/// The threshold these servers run with: small, so both upload paths are cheap to reach.
const THRESHOLD: usize = 6 * MIB;

fn s3_config(template: &str, endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        "[filestore]\ntemplate = \"{template}\"\nmaxFileSizeForDirectUpload = \"{THRESHOLD}B\"\n\n{}\n{extra}",
        s3::toml_section(endpoint, bucket)
    )
}

async fn start(dir: &Path, config: String) -> Server {
    Server::start_with(
        dir,
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await
}

/// A `stowage serve` on `s3-storage-v3-direct` over a fresh bucket of the shared LocalStack,
/// with a `libs` repository.
struct Direct {
    server: Server,
    s3: stowage_s3::S3Provider,
    bucket: String,
}

/// Starts a [`Direct`] with `extra` configuration; `None` when LocalStack is missing (a loud
/// skip, or a failure under CI).
async fn direct_server(dir: &Path, extra: &str) -> Option<Direct> {
    let endpoint = s3::endpoint()?;
    let bucket = s3::bucket_name();
    let s3 = s3::create_bucket(&endpoint, &bucket, dir).await;
    let server = start(
        dir,
        s3_config("s3-storage-v3-direct", &endpoint, &bucket, extra),
    )
    .await;
    server.create_repo("libs").await;
    Some(Direct { server, s3, bucket })
}

async fn deploy(server: &Server, path: &str, data: &[u8], sha256: bool) -> reqwest::Response {
    let mut request = server.admin().put(server.url(path)).body(data.to_vec());
    if sha256 {
        request = request.header("X-Checksum-Sha256", sha256_hex(data));
    }
    request.send().await.expect("deploy")
}

async fn assert_served(server: &Server, path: &str, data: &[u8]) {
    let r = server
        .admin()
        .get(server.url(path))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let header = r
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(header.as_deref(), Some(sha256_hex(data).as_str()), "{path}");
    let body = r.bytes().await.expect("body");
    assert!(body == data, "{path}: wrong bytes");
}

/// Bytes of every file below `dir`.
fn bytes_below(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn direct_uploads_below_at_and_above_the_threshold_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Direct { server, s3, .. }) = direct_server(dir.path(), "").await else {
        return;
    };
    for (i, len) in [THRESHOLD - 1, THRESHOLD, THRESHOLD + 1]
        .into_iter()
        .enumerate()
    {
        for declared in [false, true] {
            let data = bytes(i as u64 * 2 + u64::from(declared), len);
            let path = format!("/libs/{len}-{declared}.bin");
            let r = deploy(&server, &path, &data, declared).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{path}");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["checksums"]["sha256"], sha256_hex(&data));
            assert_served(&server, &path, &data).await;
            let digest = sha256_hex(&data).parse().expect("digest");
            assert!(s3.exists(&digest).await.expect("head"), "{path} is in S3");
        }
    }
    let keys = s3::keys(&s3).await;
    assert_eq!(keys.len(), 6, "six binaries, no staging left: {keys:?}");
    assert!(keys.iter().all(|k| !k.contains("_pre")));
    server.stop().await;
}

/// Sends `data` in two halves, pausing in between, and returns the bytes found on local disk
/// below the data directory during the pause (beyond what was there before), and the status.
async fn upload_with_pause(
    server: &Server,
    path: &str,
    data: Bytes,
    declare_sha256: bool,
) -> (u64, StatusCode) {
    let before = bytes_below(&server.data_dir);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut request = server
        .admin()
        .put(server.url(path))
        .header("Content-Length", data.len());
    if declare_sha256 {
        request = request.header("X-Checksum-Sha256", sha256_hex(&data));
    }
    let request = request.body(body).send();
    let half = data.len() / 2;
    let feeder = async {
        tx.send(Ok(data.slice(..half))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let during = bytes_below(&server.data_dir).saturating_sub(before);

        tx.send(Ok(data.slice(half..))).await.expect("send");
        drop(tx);
        during
    };
    let (response, during) = tokio::join!(request, feeder);
    (during, response.expect("response").status())
}

#[tokio::test]
async fn a_direct_upload_never_writes_the_body_to_local_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Direct { server, .. }) = direct_server(dir.path(), "").await else {
        return;
    };

    // Below the threshold: half the body is in flight and nothing of it is on disk.
    let small = Bytes::from(bytes(40, THRESHOLD - 1));
    let (during, status) =
        upload_with_pause(&server, "/libs/direct.bin", small.clone(), false).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        during < 64 * 1024,
        "the direct path wrote {during} bytes to local disk while streaming"
    );
    assert_served(&server, "/libs/direct.bin", &small).await;

    // The same measurement sees the spooled path's temp file: the check can fail.
    let large = Bytes::from(bytes(41, THRESHOLD + MIB));
    let (during, status) =
        upload_with_pause(&server, "/libs/spooled.bin", large.clone(), false).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        during >= MIB as u64,
        "the spooled path should hold much of the half sent on disk, saw {during} bytes"
    );
    assert_served(&server, "/libs/spooled.bin", &large).await;

    // Above the threshold with a declared SHA-256: parts go from memory to S3, not to disk.
    let declared = Bytes::from(bytes(42, THRESHOLD + 5 * MIB));
    let (during, status) =
        upload_with_pause(&server, "/libs/declared.bin", declared.clone(), true).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        during < 64 * 1024,
        "the declared multipart path wrote {during} bytes to local disk"
    );
    assert_served(&server, "/libs/declared.bin", &declared).await;
    assert_eq!(files_below(&server.data_dir.join("s3-spool")).len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn eventual_uploads_survive_kill_9_and_a_localstack_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(localstack) = LocalStack::start(dir.path()).await else {
        return;
    };
    let (endpoint, port) = (localstack.endpoint(), localstack.port);
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let config = s3_config(
        "s3-storage-v3",
        &endpoint,
        &bucket,
        "[filestore.eventual]\ndispatcherInterval = 100\nmaxRetryBackoffSecs = 1\n",
    );
    let server = start(dir.path(), config.clone()).await;
    server.create_repo("libs").await;

    // With S3 up, an upload drains to S3 and leaves the queue.
    let first = bytes(60, 300_000);
    assert_eq!(
        deploy(&server, "/libs/first.bin", &first, false)
            .await
            .status(),
        StatusCode::CREATED
    );
    server.wait_for_empty_queue().await;

    // S3 goes away: deploys still succeed and are served from the queue.
    localstack.kill().await;
    let mut deployed = Vec::new();
    for i in 0..5u64 {
        let len = if i == 4 {
            THRESHOLD + MIB
        } else {
            100_000 + i as usize
        };
        let data = bytes(70 + i, len);
        let path = format!("/libs/outage-{i}.bin");
        let r = deploy(&server, &path, &data, i % 2 == 0).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path} during the outage");
        deployed.push((path, data));
    }
    for (path, data) in &deployed {
        assert_served(&server, path, data).await;
    }
    assert_eq!(server.queue_depth().await, 5);

    // Killed with the queue full; nothing was uploaded.
    server.crash().await;

    // S3 is back (empty: LocalStack keeps nothing across a restart), then the server.
    let localstack = LocalStack::start_on(dir.path(), port)
        .await
        .expect("LocalStack again");
    let s3 = s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let server = start(dir.path(), config).await;
    server.wait_for_empty_queue().await;
    for (path, data) in &deployed {
        let digest = sha256_hex(data).parse().expect("digest");
        assert_eq!(
            s3.get_bytes(&digest, None).await.expect("in S3"),
            data.as_slice(),
            "{path} reached S3 intact"
        );
        assert_served(&server, path, data).await;
    }
    assert!(
        files_below(&server.data_dir.join("eventual"))
            .iter()
            .all(|p| p.components().any(|c| c.as_os_str() == "_pre"))
    );
    server.stop().await;
    localstack.kill().await;
}

async fn open_session(server: &Server, path: &str, data: &[u8], sha256: &str) -> Value {
    let r = server
        .admin()
        .post(server.url("/api/uploads"))
        .json(&json!({"repo": "libs", "path": path, "size": data.len(), "sha256": sha256}))
        .send()
        .await
        .expect("open");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

async fn complete(server: &Server, session: &Value) -> reqwest::Response {
    server
        .admin()
        .post(session["completeUri"].as_str().expect("completeUri"))
        .send()
        .await
        .expect("complete")
}

#[tokio::test]
async fn presigned_sessions_deploy_verified_bytes_and_refuse_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Direct { server, s3, .. }) = direct_server(dir.path(), "").await else {
        return;
    };

    for (i, len) in [2 * MIB, THRESHOLD + 5 * MIB].into_iter().enumerate() {
        let data = bytes(80 + i as u64, len);
        let path = format!("big/{i}.bin");
        let session = open_session(&server, &path, &data, &sha256_hex(&data)).await;
        assert_eq!(session["status"], "pending");
        let kind = if len < THRESHOLD {
            "single"
        } else {
            "multipart"
        };
        assert_eq!(session["upload"]["kind"], kind);
        assert!(
            stowage_tests::s3::send_session_bytes(&session, &data)
                .await
                .iter()
                .all(|s| s.is_success())
        );
        let r = complete(&server, &session).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["checksums"]["sha256"], sha256_hex(&data));
        assert_served(&server, &format!("/libs/{path}"), &data).await;

        // Announced one digest, sent other bytes: refused at complete, nothing committed.
        let announced = sha256_hex(&bytes(90 + i as u64, len));
        let bad_path = format!("bad/{i}.bin");
        let session = open_session(&server, &bad_path, &data, &announced).await;
        let statuses = stowage_tests::s3::send_session_bytes(&session, &data).await;
        if kind == "single" {
            assert!(
                statuses[0].is_client_error(),
                "S3 refuses the PUT: {statuses:?}"
            );
        }
        let r = complete(&server, &session).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let message = r.text().await.expect("text");
        assert!(
            message.contains("checksum mismatch") || message.contains("nothing was uploaded"),
            "{message}"
        );
        let r = server
            .admin()
            .get(server.url(&format!("/libs/{bad_path}")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing committed");
        // The session can be aborted (single: S3 refused the bytes, it is still open) or is gone.
        let r = server
            .admin()
            .delete(server.url(&format!(
                "/api/uploads/{}",
                session["id"].as_str().expect("id")
            )))
            .send()
            .await
            .expect("abort");
        assert!(matches!(
            r.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND
        ));
    }

    // Opening a session for bytes already stored records the artifact at once.
    let data = bytes(80, 2 * MIB);
    let session = open_session(&server, "again.bin", &data, &sha256_hex(&data)).await;
    assert_eq!(session["status"], "deployed");
    assert_served(&server, "/libs/again.bin", &data).await;

    // Aborting an open session removes it; completing it afterwards is a 404.
    let data = bytes(99, 1000);
    let session = open_session(&server, "aborted.bin", &data, &sha256_hex(&data)).await;
    let id = session["id"].as_str().expect("id");
    let r = server
        .admin()
        .delete(server.url(&format!("/api/uploads/{id}")))
        .send()
        .await
        .expect("abort");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        complete(&server, &session).await.status(),
        StatusCode::NOT_FOUND
    );

    let keys = s3::keys(&s3).await;
    assert!(keys.iter().all(|k| !k.contains("_pre")), "{keys:?}");
    server.stop().await;
}

#[tokio::test]
async fn sessions_need_an_object_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    server.create_repo("libs").await;
    let r = server
        .admin()
        .post(server.url("/api/uploads"))
        .json(&json!({"repo": "libs", "path": "a.bin", "size": 3, "sha256": sha256_hex(b"abc")}))
        .send()
        .await
        .expect("open");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("object-store filestore")
    );
    let r = server
        .admin()
        .post(server.url("/api/uploads"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("open");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn s3_refusals_are_clear_api_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Direct { server, s3, bucket }) = direct_server(dir.path(), "").await else {
        return;
    };
    s3.backend()
        .client()
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("delete bucket");
    let r = deploy(&server, "/libs/x.bin", b"bytes", false).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let message = r.text().await.expect("text");
    assert!(message.contains("does not exist"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn serve_refuses_to_start_on_a_missing_bucket() {
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = s3_config(
        "s3-storage-v3-direct",
        &endpoint,
        "stowage-no-such-bucket",
        "",
    );
    let stderr = stowage_tests::serve_refused(dir.path(), &config).await;
    assert!(
        stderr.contains("S3 connection test failed") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[tokio::test]
async fn expired_sessions_are_aborted_by_garbage_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Direct { server, s3, bucket }) =
        direct_server(dir.path(), "[uploads]\nsession_expiry_secs = 4\n").await
    else {
        return;
    };
    // Two sessions whose clients send their bytes but never complete in time.
    let data = bytes(120, THRESHOLD + MIB);
    let late = open_session(&server, "late.bin", &data, &sha256_hex(&data)).await;
    assert_eq!(late["upload"]["kind"], "multipart");
    // The plan's keys are the README's: partSize, and partNumber/offset/size on each part.
    let plan = &late["upload"];
    let part_size = plan["partSize"].as_u64().expect("partSize");
    let parts = plan["parts"].as_array().expect("parts");
    assert_eq!(parts[0]["partNumber"], 1, "{plan}");
    assert_eq!(parts[0]["size"].as_u64(), Some(part_size), "{plan}");
    assert_eq!(
        parts
            .iter()
            .map(|p| p["size"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        data.len() as u64
    );
    let small = &data[..1000];
    let later = open_session(&server, "later.bin", small, &sha256_hex(small)).await;
    let opened = Instant::now(); // both sessions expire within 4 s of this
    assert!(
        stowage_tests::s3::send_session_bytes(&late, &data)
            .await
            .iter()
            .all(|s| s.is_success())
    );
    assert_eq!(
        stowage_tests::s3::send_session_bytes(&later, small).await[0],
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(opened.elapsed())).await;

    // Too late to complete: that ends the session. Garbage collection ends the other.
    assert_eq!(
        complete(&server, &late).await.status(),
        StatusCode::CONFLICT
    );
    let r = server
        .admin()
        .post(server.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["uploadSessionsExpired"], 1, "{report}");
    assert_eq!(
        complete(&server, &later).await.status(),
        StatusCode::NOT_FOUND
    );
    let keys = s3::keys(&s3).await;
    assert!(keys.is_empty(), "{keys:?}");
    let uploads = s3
        .backend()
        .client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .expect("uploads");
    assert!(uploads.uploads().is_empty());
    server.stop().await;
}

/// One upload of a queued binary damaged on the way to S3 (a proxy flips a byte of its body;
/// LocalStack refuses it as it should): the queue hashes its own copy, finds it intact, keeps
/// it queued rather than quarantine it, and the retry uploads it. Nothing goes to `_corrupt/`,
/// and the artifact is served with its bytes, from S3 once the queue is empty.
#[tokio::test]
async fn a_queued_upload_damaged_once_on_the_way_stays_queued_and_uploads_on_retry() {
    use stowage_tests::corrupting::CorruptingProxy;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    let s3 = s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let port = reqwest::Url::parse(&endpoint)
        .expect("endpoint")
        .port()
        .expect("port");
    let proxy = CorruptingProxy::start(&format!("127.0.0.1:{port}")).await;
    let config = s3_config(
        "s3-storage-v3",
        &format!("http://127.0.0.1:{}", proxy.port),
        &bucket,
        "[filestore.eventual]\ndispatcherInterval = 100\nmaxRetryBackoffSecs = 1\n",
    );
    let server = start(dir.path(), config).await;
    server.create_repo("libs").await;

    proxy.corrupt_next_upload();
    let data = bytes(19, 300_000);
    assert_eq!(
        deploy(&server, "/libs/damaged-once.bin", &data, false)
            .await
            .status(),
        StatusCode::CREATED
    );
    server.wait_for_empty_queue().await;
    assert_eq!(proxy.corrupted(), 1, "one upload was damaged on the way");
    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    assert!(
        log.contains("hashes to its name"),
        "the refusal was taken for damage on the way, not for a corrupt copy:\n{log}"
    );
    let quarantined: Vec<_> = files_below(&server.data_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("_corrupt"))
        .collect();
    assert!(
        quarantined.is_empty(),
        "nothing quarantined: {quarantined:?}"
    );
    let digest = stowage_core::ChecksumHasher::digest(&data).sha256;
    let stored = s3.get_bytes(&digest, None).await.expect("in S3");
    assert_eq!(stored.as_ref(), &data[..], "S3 holds the intact bytes");
    assert_served(&server, "/libs/damaged-once.bin", &data).await;
    server.stop().await;
}
