//! The S3 provider against a real LocalStack (started by scripts/test, whose address is in
//! `STOWAGE_TEST_S3_ENDPOINT`): the conformance suite, the three upload paths around the
//! direct-upload threshold, presigned sessions (LocalStack checks the signatures), the sweep
//! of abandoned uploads, and the errors of a missing bucket and bad credentials. Each test
//! makes a bucket of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use stowage_core::conformance::{run_all, test_bytes};
use stowage_core::{
    BinaryProvider, BinaryProviderExt, ChecksumHasher, Error, ExpectedChecksums, KeyLayout,
    PresignedUploads, PutOptions, UploadPlan,
};
use stowage_s3::{S3Config, S3Provider};
use stowage_tests::s3::endpoint;

const MIB: u64 = 1024 * 1024;
/// `maxFileSizeForDirectUpload` in these tests: small, so the spooled path runs too.
const DIRECT_LIMIT: u64 = 6 * MIB;

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        test_connection: true,
        multipart_part_size: bytesize::ByteSize::b(5 * MIB),
        // Small, so that uploads below DIRECT_LIMIT take both the in-memory and the streamed path.
        max_in_memory_upload_size: bytesize::ByteSize::mib(1),
        ..S3Config::local_emulator(endpoint, bucket)
    }
}

/// A provider on a fresh bucket, and the temp dir its spool lives in.
async fn provider() -> Option<(S3Provider, tempfile::TempDir)> {
    let endpoint = endpoint()?;
    let bucket = format!("stowage-test-{:016x}", rand::random::<u64>());
    let spool = tempfile::tempdir().expect("tempdir");
    let mut c = config(&endpoint, &bucket);
    c.test_connection = false;
    let bootstrap = stowage_s3::connect(c, KeyLayout::default(), DIRECT_LIMIT, spool.path().into())
        .await
        .expect("client");
    bootstrap
        .backend()
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let provider = stowage_s3::connect(
        config(&endpoint, &bucket),
        KeyLayout::default(),
        DIRECT_LIMIT,
        spool.path().into(),
    )
    .await
    .expect("connect (with the connection test)");
    Some((provider, spool))
}

fn stream_of(data: &Bytes, chunk: usize) -> stowage_core::ByteStream {
    let chunks: Vec<stowage_core::Result<Bytes>> = (0..data.len())
        .step_by(chunk)
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

async fn object_keys(p: &S3Provider) -> Vec<String> {
    let out = p
        .backend()
        .client()
        .list_objects_v2()
        .bucket(p.backend().bucket())
        .send()
        .await
        .expect("list");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

async fn multipart_uploads(p: &S3Provider) -> usize {
    p.backend()
        .client()
        .list_multipart_uploads()
        .bucket(p.backend().bucket())
        .send()
        .await
        .expect("list uploads")
        .uploads()
        .len()
}

#[tokio::test]
async fn conformance() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    run_all(Arc::new(p), 11).await;
}

#[tokio::test]
async fn uploads_below_at_and_above_the_threshold_round_trip() {
    let Some((p, spool)) = provider().await else {
        return;
    };
    for (i, len) in [
        MIB,
        DIRECT_LIMIT - 1,
        DIRECT_LIMIT,
        DIRECT_LIMIT + 1,
        17 * MIB,
    ]
    .into_iter()
    .enumerate()
    {
        let data = test_bytes(100 + i as u64, usize::try_from(len).expect("len"));
        let sums = ChecksumHasher::digest(&data);
        for declared in [false, true] {
            let expected = ExpectedChecksums {
                sha256: declared.then_some(sums.sha256),
                ..Default::default()
            };
            let put = p
                .put_opts(
                    stream_of(&data, 256 * 1024),
                    PutOptions {
                        expected,
                        size: Some(len),
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("put of {len} bytes (declared: {declared}): {e}"));
            assert_eq!(put.checksums, sums);
            assert_eq!(put.created, !declared, "the second put deduplicates");
        }
        assert_eq!(p.get_bytes(&sums.sha256, None).await.expect("get"), data);
        let range = p
            .get_bytes(&sums.sha256, Some(len - 10..len))
            .await
            .expect("range");
        assert_eq!(range, data.slice(usize::try_from(len - 10).expect("len")..));
    }
    // Only binaries remain: no staging object, no open multipart upload, no spool file.
    let keys = object_keys(&p).await;
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("filestore/") && !k.contains("_pre"))
    );
    assert_eq!(multipart_uploads(&p).await, 0);
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool").count(), 0);
}

#[tokio::test]
async fn an_unknown_length_body_is_spooled_and_stored() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let data = test_bytes(7, 3 * 1024 * 1024);
    let put = p
        .put_opts(stream_of(&data, 100_000), PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        p.get_bytes(&put.checksums.sha256, None).await.expect("get"),
        data
    );
}

#[tokio::test]
async fn wrong_declared_sha256_is_refused_by_s3_and_stores_nothing() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let data = test_bytes(8, 200_000);
    let other = ChecksumHasher::digest(b"something else");
    for len in [200_000u64, 7 * MIB] {
        let data = if len == 200_000 {
            data.clone()
        } else {
            test_bytes(9, 7 * 1024 * 1024)
        };
        let err = p
            .put_opts(
                stream_of(&data, 64 * 1024),
                PutOptions {
                    expected: ExpectedChecksums {
                        sha256: Some(other.sha256),
                        ..Default::default()
                    },
                    size: Some(len),
                },
            )
            .await
            .expect_err("mismatch");
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err:?}");
    }
    assert!(object_keys(&p).await.is_empty());
    assert_eq!(multipart_uploads(&p).await, 0);
}

#[tokio::test]
async fn put_file_sends_large_files_in_parallel_parts_and_refuses_a_wrong_digest() {
    let Some((p, spool)) = provider().await else {
        return;
    };
    let data = test_bytes(12, 23 * 1024 * 1024);
    let sums = ChecksumHasher::digest(&data);
    let path = spool.path().join("queued");
    std::fs::write(&path, &data).expect("write");
    let wrong = ChecksumHasher::digest(b"not these bytes").sha256;
    let err = p
        .put_file(&path, &wrong, data.len() as u64)
        .await
        .expect_err("a file that does not hash to its name is refused");
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err:?}");
    assert!(
        p.put_file(&path, &sums.sha256, data.len() as u64)
            .await
            .expect("put_file")
    );
    assert!(
        !p.put_file(&path, &sums.sha256, data.len() as u64)
            .await
            .expect("again"),
        "already stored"
    );
    assert_eq!(p.get_bytes(&sums.sha256, None).await.expect("get"), data);
    assert_eq!(multipart_uploads(&p).await, 0);
}

/// Sends the bytes of a plan the way a client would, with plain HTTP.
async fn send_plan(plan: &UploadPlan, data: &Bytes) -> Vec<reqwest::StatusCode> {
    let http = reqwest::Client::new();
    let send = |request: &stowage_core::PresignedRequest, body: Bytes| {
        let mut builder = http.request(
            request.method.parse().expect("method"),
            request.url.as_str(),
        );
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        builder.body(body).send()
    };
    match plan {
        UploadPlan::Single { request } => {
            vec![send(request, data.clone()).await.expect("PUT").status()]
        }
        UploadPlan::Multipart { parts, .. } => {
            let mut statuses = Vec::new();
            for part in parts {
                let start = usize::try_from(part.offset).expect("offset");
                let end = start + usize::try_from(part.size).expect("size");
                statuses.push(
                    send(&part.request, data.slice(start..end))
                        .await
                        .expect("part")
                        .status(),
                );
            }
            statuses
        }
    }
}

#[tokio::test]
async fn presigned_sessions_store_verified_bytes_and_refuse_others() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let expiry = Duration::from_secs(600);
    for (i, len) in [1_000_000usize, 13 * 1024 * 1024].into_iter().enumerate() {
        let data = test_bytes(20 + i as u64, len);
        let sums = ChecksumHasher::digest(&data);
        let id = format!("good-{i}");
        let plan = p
            .backend()
            .start_upload(&id, len as u64, &sums.sha256, expiry)
            .await
            .expect("start");
        assert_eq!(
            matches!(plan, UploadPlan::Multipart { .. }),
            len as u64 >= DIRECT_LIMIT
        );
        assert!(send_plan(&plan, &data).await.iter().all(|s| s.is_success()));
        let put = p
            .backend()
            .complete_upload(&id, plan.multipart_upload_id(), len as u64, &sums.sha256)
            .await
            .expect("complete");
        assert_eq!(put.checksums, sums);
        assert_eq!(p.get_bytes(&sums.sha256, None).await.expect("get"), data);

        // A client that sends other bytes than it announced: S3 refuses the single PUT (its
        // checksum is bound to the URL); multipart parts arrive but complete refuses them.
        let id = format!("bad-{i}");
        let announced = ChecksumHasher::digest(&test_bytes(40 + i as u64, len)).sha256;
        let plan = p
            .backend()
            .start_upload(&id, len as u64, &announced, expiry)
            .await
            .expect("start");
        let statuses = send_plan(&plan, &data).await;
        if let UploadPlan::Single { .. } = plan {
            assert!(statuses[0].is_client_error(), "{statuses:?}");
        }
        let err = p
            .backend()
            .complete_upload(&id, plan.multipart_upload_id(), len as u64, &announced)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, Error::ChecksumMismatch { .. } | Error::Conflict(_)),
            "{err:?}"
        );
        assert!(!p.exists(&announced).await.expect("head"));
    }
    let keys = object_keys(&p).await;
    assert!(keys.iter().all(|k| !k.contains("_pre")), "{keys:?}");
    assert_eq!(multipart_uploads(&p).await, 0);
}

#[tokio::test]
async fn tampered_and_expired_presigned_urls_are_refused_by_localstack() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let data = test_bytes(30, 1000);
    let sums = ChecksumHasher::digest(&data);
    let plan = p
        .backend()
        .start_upload("tamper", 1000, &sums.sha256, Duration::from_secs(600))
        .await
        .expect("start");
    let UploadPlan::Single { mut request } = plan else {
        panic!("a small upload is one PUT");
    };
    request.url = request.url.replace("tamper", "tamperX");
    assert_eq!(
        send_plan(&UploadPlan::Single { request }, &data).await[0],
        reqwest::StatusCode::FORBIDDEN
    );

    let plan = p
        .backend()
        .start_upload("expired", 1000, &sums.sha256, Duration::from_secs(1))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        send_plan(&plan, &data).await[0],
        reqwest::StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn abandoned_staging_objects_and_multipart_uploads_are_swept() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let sums = ChecksumHasher::digest(b"x");
    let plan = p
        .backend()
        .start_upload("left", 20 * MIB, &sums.sha256, Duration::from_secs(600))
        .await
        .expect("start multipart");
    assert!(plan.multipart_upload_id().is_some());
    p.backend()
        .client()
        .put_object()
        .bucket(p.backend().bucket())
        .key("filestore/_pre/0123456789abcdef")
        .body(Bytes::from_static(b"half an upload").into())
        .send()
        .await
        .expect("staging object");
    let kept = p
        .backend()
        .clean_stale_uploads(Duration::from_secs(3600))
        .await
        .expect("sweep");
    assert_eq!(kept, Default::default(), "recent uploads are kept");
    let swept = p
        .backend()
        .clean_stale_uploads(Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!((swept.staging_objects, swept.multipart_uploads), (1, 1));
    assert!(object_keys(&p).await.is_empty());
    assert_eq!(multipart_uploads(&p).await, 0);
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_start_up_error() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let spool = tempfile::tempdir().expect("tempdir");
    let err = stowage_s3::connect(
        config(&endpoint, "stowage-no-such-bucket"),
        KeyLayout::default(),
        DIRECT_LIMIT,
        spool.path().into(),
    )
    .await
    .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("connection test failed") && message.contains("does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn a_bucket_deleted_at_run_time_is_a_backend_refusal() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    p.backend()
        .client()
        .delete_bucket()
        .bucket(p.backend().bucket())
        .send()
        .await
        .expect("delete bucket");
    let err = p
        .put_bytes(test_bytes(50, 1000), ExpectedChecksums::none())
        .await
        .expect_err("no bucket");
    assert!(matches!(err, Error::BackendRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    // A port nothing listens on: connection refused, after the SDK's own retries.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let spool = tempfile::tempdir().expect("tempdir");
    let mut c = config(&format!("http://127.0.0.1:{port}"), "b");
    c.test_connection = false;
    c.max_retry_attempts = 2;
    let p = stowage_s3::connect(c, KeyLayout::default(), DIRECT_LIMIT, spool.path().into())
        .await
        .expect("client");
    let err = p
        .put_bytes(test_bytes(51, 100), ExpectedChecksums::none())
        .await
        .expect_err("unreachable");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_body_that_fails_midway_leaves_no_multipart_upload_or_staging() {
    let Some((p, _spool)) = provider().await else {
        return;
    };
    let data = test_bytes(60, 12 * 1024 * 1024);
    let sums = ChecksumHasher::digest(&data);
    for declared in [false, true] {
        // Eight MiB arrive, then the client goes away.
        let chunks: Vec<stowage_core::Result<Bytes>> = vec![
            Ok(data.slice(..8 * 1024 * 1024)),
            Err(Error::Body {
                source: "client went away".into(),
            }),
        ];
        let err = p
            .put_opts(
                futures::stream::iter(chunks).boxed(),
                PutOptions {
                    expected: ExpectedChecksums {
                        sha256: declared.then_some(sums.sha256),
                        ..Default::default()
                    },
                    size: Some(data.len() as u64),
                },
            )
            .await
            .expect_err("the body failed");
        assert!(matches!(err, Error::Body { .. }), "{err:?}");
    }
    assert!(object_keys(&p).await.is_empty());
    assert_eq!(multipart_uploads(&p).await, 0);
}

#[tokio::test]
async fn encryption_and_storage_class_settings_reach_the_stored_objects() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let bucket = format!("stowage-test-{:016x}", rand::random::<u64>());
    let spool = tempfile::tempdir().expect("tempdir");
    let mut c = config(&endpoint, &bucket);
    c.test_connection = false;
    c.server_side_encryption = Some(stowage_s3::ServerSideEncryption::Aes256);
    c.storage_class = Some("STANDARD_IA".into());
    let p = stowage_s3::connect(c, KeyLayout::default(), DIRECT_LIMIT, spool.path().into())
        .await
        .expect("client");
    p.backend()
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    // One binary per path: in memory, streamed via staging and copy, spooled multipart.
    for (i, len) in [1000usize, 3 * 1024 * 1024, 7 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let data = test_bytes(70 + i as u64, len);
        let put = p
            .put_opts(
                stream_of(&data, 64 * 1024),
                PutOptions {
                    expected: ExpectedChecksums::none(),
                    size: Some(len as u64),
                },
            )
            .await
            .expect("put");
        let head = p
            .backend()
            .client()
            .head_object()
            .bucket(&bucket)
            .key(p.key_of(&put.checksums.sha256))
            .send()
            .await
            .expect("head");
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256),
            "{len} bytes"
        );
        assert_eq!(
            head.storage_class(),
            Some(&aws_sdk_s3::types::StorageClass::StandardIa),
            "{len} bytes"
        );
    }
}
