//! The GCS provider against fake-gcs-server: the provider conformance suite (one-request and
//! resumable uploads), and V4 signed URLs compared with the official Python client's.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytesize::ByteSize;
use stowage_core::conformance;
use stowage_core::{BinaryProvider, BinaryProviderExt, ExpectedChecksums, KeyLayout};
use stowage_gcs::{GcsConfig, GcsSigner};
use stowage_tests::gcs;

async fn provider(endpoint: &str, tune: impl FnOnce(&mut GcsConfig)) -> stowage_gcs::GcsProvider {
    let bucket = gcs::bucket_name();
    gcs::create_bucket(endpoint, &bucket).await;
    let mut config = gcs::config(endpoint, &bucket);
    tune(&mut config);
    stowage_gcs::connect(&config, KeyLayout::default())
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_one_request_uploads() {
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let p = provider(&endpoint, |_| {}).await;
    conformance::run_all(Arc::new(p), 100).await;
}

/// Known sizes stream as one upload request; unknown ones go in 256 KiB resumable chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_streamed_and_resumable_uploads() {
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let p = provider(&endpoint, |c| {
        c.max_in_memory_upload_size = ByteSize::b(0);
        c.upload_chunk_size = ByteSize::kib(256);
    })
    .await;
    conformance::run_all(Arc::new(p.clone()), 200).await;
    // Nothing is left at staging keys.
    let left = p.clean_stale_staging(Duration::ZERO).await.expect("sweep");
    assert_eq!(left, 0, "staging objects left behind");

    // A body of unknown length, many chunks long, with and without a declared digest.
    let data = conformance::test_bytes(201, 5 * 256 * 1024 + 999);
    let sums = stowage_core::ChecksumHasher::digest(&data);
    for expected in [
        ExpectedChecksums::none(),
        ExpectedChecksums {
            sha256: Some(sums.sha256),
            ..Default::default()
        },
    ] {
        let chunks: Vec<stowage_core::Result<bytes::Bytes>> = data
            .chunks(100_000)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = futures::StreamExt::boxed(futures::stream::iter(chunks));
        let put = p
            .put_opts(
                body,
                stowage_core::PutOptions {
                    expected,
                    size: None,
                },
            )
            .await
            .expect("chunked put");
        assert_eq!(put.checksums, sums);
        assert!(p.get_bytes(&sums.sha256, None).await.expect("get") == data);
        p.delete(&sums.sha256).await.expect("delete");
    }
}

#[tokio::test]
async fn an_unreachable_bucket_is_a_clear_start_up_error() {
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let config = gcs::config(&endpoint, "no-such-bucket-here");
    let err = stowage_gcs::connect(&config, KeyLayout::default())
        .await
        .expect_err("a missing bucket is refused");
    let text = err.to_string();
    assert!(
        text.contains("no-such-bucket-here") && text.contains("google-storage"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_signed_urls_equal_the_official_clients_and_serve_the_binary() {
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let Some(python) = gcs::python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = gcs::service_account_key(dir.path());
    let bucket = gcs::bucket_name();
    gcs::create_bucket(&endpoint, &bucket).await;
    let mut config = gcs::config(&endpoint, &bucket);
    config.credentials_file = Some(key_file.clone());
    let p = stowage_gcs::connect(&config, KeyLayout::default())
        .await
        .expect("connect");
    let signer = GcsSigner::from_config(&config, &p)
        .expect("signer")
        .expect("a key file gives a signer");
    let data = stowage_core::conformance::test_bytes(7, 3000);
    let put = p
        .put_bytes(data.clone(), ExpectedChecksums::none())
        .await
        .expect("put");
    let key = p.key_of(&put.checksums.sha256);

    let start = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("now")
                .as_secs(),
        );
    let disposition = "attachment; filename=\"lib 1.0.jar\"; filename*=UTF-8''lib%201.0.jar";
    let query = vec![
        (
            "response-content-disposition".to_string(),
            disposition.to_string(),
        ),
        (
            "response-content-type".to_string(),
            "application/java-archive".to_string(),
        ),
    ];
    let ours = signer.sign(&key, query, start, Duration::from_secs(900));

    let timestamp = chrono::DateTime::<chrono::Utc>::from(start)
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let script = r#"
import sys, datetime
from google.oauth2 import service_account
from google.cloud.storage import _signing
key_file, endpoint, bucket, key, stamp, disposition = sys.argv[1:7]
creds = service_account.Credentials.from_service_account_file(key_file)
print(_signing.generate_signed_url_v4(
    creds, resource="/%s/%s" % (bucket, key), expiration=datetime.timedelta(seconds=900),
    api_access_endpoint=endpoint, method="GET",
    response_disposition=disposition, response_type="application/java-archive",
    _request_timestamp=stamp))
"#;
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&key_file)
        .arg(&endpoint)
        .arg(&bucket)
        .arg(&key)
        .arg(&timestamp)
        .arg(disposition)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let signature = |url: &str| {
        reqwest::Url::parse(url)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "X-Goog-Signature")
            .map(|(_, v)| v.into_owned())
            .expect("a signature")
    };
    let sorted_query = |url: &str| {
        let mut pairs: Vec<(String, String)> = reqwest::Url::parse(url)
            .expect("url")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.sort();
        pairs
    };
    assert_eq!(
        signature(&ours),
        signature(&theirs),
        "ours: {ours}\ntheirs: {theirs}"
    );
    assert_eq!(sorted_query(&ours), sorted_query(&theirs));
    assert!(ours.starts_with(&format!("{endpoint}/{bucket}/")), "{ours}");

    // The emulator does not check signatures, but it serves the URL's object.
    let got = reqwest::get(&ours).await.expect("GET signed URL");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("body"), data);
}

#[tokio::test]
async fn bytes_that_do_not_match_their_md5_and_crc32c_are_not_kept() {
    use stowage_core::ChecksumHasher;
    use stowage_core::object::ObjectBackend;
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let p = provider(&endpoint, |_| {}).await;
    let data = conformance::test_bytes(11, 2000);
    let key = p.key_of(&ChecksumHasher::digest(&data).sha256);
    let other = ChecksumHasher::digest(b"other bytes");
    p.backend()
        .put_small(&key, data, &other)
        .await
        .expect_err("bytes that do not match their MD5 are refused");
    assert!(matches!(
        p.backend().stat(&key).await,
        Err(stowage_core::Error::NotFound { .. })
    ));
}
