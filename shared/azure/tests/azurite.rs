//! The Azure provider against Azurite: the provider conformance suite (one Put Blob, and
//! blocks sent several at once), service SAS URLs that Azurite accepts and refuses when
//! tampered with or expired, and clear errors for a wrong key.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytesize::ByteSize;
use stowage_azure::{AzureConfig, AzureSasSigner, SasFields};
use stowage_core::conformance::{self, test_bytes};
use stowage_core::signing::{DownloadSigner, DownloadUrlRequest, content_disposition};
use stowage_core::{BinaryProviderExt, Error, ExpectedChecksums, KeyLayout};
use stowage_tests::azure;

async fn provider(
    endpoint: &str,
    tune: impl FnOnce(&mut AzureConfig),
) -> (AzureConfig, stowage_azure::AzureProvider) {
    let container = azure::container_name();
    azure::create_container(endpoint, &container).await;
    let mut config = azure::config(endpoint, &container);
    tune(&mut config);
    let provider = stowage_azure::connect(&config, KeyLayout::default())
        .await
        .expect("connect");
    (config, provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_one_request_uploads() {
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let (_, p) = provider(&endpoint, |_| {}).await;
    conformance::run_all(Arc::new(p), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_block_uploads_sent_several_at_once() {
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let (_, p) = provider(&endpoint, |c| {
        c.max_in_memory_upload_size = ByteSize::b(0);
        c.block_size = ByteSize::kib(64);
        c.upload_concurrency = 3;
    })
    .await;
    conformance::run_all(Arc::new(p.clone()), 400).await;
    let left = p.clean_stale_staging(Duration::ZERO).await.expect("sweep");
    assert_eq!(left, 0, "staging blobs left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_urls_are_accepted_and_tampered_or_expired_ones_refused() {
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let (config, p) = provider(&endpoint, |_| {}).await;
    let signer = AzureSasSigner::from_config(&config, &p)
        .expect("signer")
        .expect("an account key gives a signer");
    let data = test_bytes(9, 4000);
    let put = p
        .put_bytes(data.clone(), ExpectedChecksums::none())
        .await
        .expect("put");
    let signed = signer
        .download_url(
            &put.checksums.sha256,
            &DownloadUrlRequest {
                file_name: "lib 1.0.jar".into(),
                content_type: "application/java-archive".into(),
                size: data.len() as u64,
                extra_validity: Duration::ZERO,
            },
        )
        .await
        .expect("sign");
    let got = reqwest::get(&signed.url).await.expect("GET");
    assert_eq!(got.status(), 200, "{}", signed.url);
    assert_eq!(
        got.headers()["content-disposition"],
        content_disposition("lib 1.0.jar").as_str()
    );
    assert_eq!(got.headers()["content-type"], "application/java-archive");
    assert_eq!(got.bytes().await.expect("body"), data);

    // Another file name than the one signed.
    let tampered = signed.url.replace("lib%201.0.jar", "evil.sh");
    assert_ne!(tampered, signed.url);
    assert_eq!(reqwest::get(&tampered).await.expect("GET").status(), 403);
    // Write permission asked of a read-only signature.
    let widened = signed.url.replace("sp=r", "sp=rw");
    assert_eq!(reqwest::get(&widened).await.expect("GET").status(), 403);
    // Expired a minute ago.
    let expired = signer.sign(
        &p.key_of(&put.checksums.sha256),
        &SasFields {
            permissions: "r",
            expiry: SystemTime::now() - Duration::from_secs(60),
            content_disposition: "",
            content_type: "",
        },
    );
    assert_eq!(reqwest::get(&expired).await.expect("GET").status(), 403);
}

#[tokio::test]
async fn a_wrong_account_key_is_a_clear_start_up_error() {
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let container = azure::container_name();
    azure::create_container(&endpoint, &container).await;
    let mut config = azure::config(&endpoint, &container);
    config.account_key = Some("d3Jvbmcga2V5".into());
    let err = stowage_azure::connect(&config, KeyLayout::default())
        .await
        .expect_err("a wrong key is refused");
    let text = err.to_string();
    assert!(
        text.contains(&container) && text.contains("accountKey"),
        "{text}"
    );

    let missing = azure::config(&endpoint, "no-such-container");
    let err = stowage_azure::connect(&missing, KeyLayout::default())
        .await
        .expect_err("a missing container is refused");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("no-such-container"), "{err}");
}

#[tokio::test]
async fn azure_refuses_bytes_that_do_not_match_their_content_md5() {
    use stowage_core::ChecksumHasher;
    use stowage_core::object::ObjectBackend;
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let (_, p) = provider(&endpoint, |_| {}).await;
    let data = test_bytes(11, 2000);
    let key = p.key_of(&ChecksumHasher::digest(&data).sha256);
    let other = ChecksumHasher::digest(b"other bytes");
    let err = p
        .backend()
        .put_small(&key, data, &other)
        .await
        .expect_err("a wrong Content-MD5 is refused by Azure");
    assert!(err.to_string().contains("MD5"), "{err}");
    assert!(
        err.is_retryable(),
        "damaged bytes are worth another try: {err}"
    );
    assert!(matches!(
        p.backend().stat(&key).await,
        Err(Error::NotFound { .. })
    ));
}

/// A block damaged on the way (a proxy flips one byte of its body) is refused by Azure against
/// the block's `x-ms-content-crc64` (Azurite checks it since 3.37), as an error worth another
/// try that leaves no blob; the same upload sent again is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_refuses_a_block_damaged_on_the_way_by_its_crc64() {
    use stowage_core::ChecksumHasher;
    use stowage_core::object::ObjectBackend;
    use stowage_tests::corrupting::CorruptingProxy;
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let url = reqwest::Url::parse(&endpoint).expect("endpoint");
    let proxy = CorruptingProxy::start(&format!(
        "127.0.0.1:{}",
        url.port().expect("Azurite's port")
    ))
    .await;
    let proxied = format!("http://127.0.0.1:{}{}", proxy.port, url.path());
    let (_, p) = provider(&proxied, |c| {
        c.max_in_memory_upload_size = ByteSize::b(0);
        c.block_size = ByteSize::kib(64);
        c.upload_concurrency = 1;
    })
    .await;
    let data = test_bytes(12, 200_000);
    let checksums = ChecksumHasher::digest(&data);
    let key = p.key_of(&checksums.sha256);
    let size = Some(data.len() as u64);

    proxy.corrupt_next_upload();
    let mut writer = p.backend().writer(&key, size, None).await.expect("writer");
    let outcome = match writer.write(data.clone()).await {
        Ok(()) => writer.finish(&checksums).await,
        Err(e) => Err(e),
    };
    let err = outcome.expect_err("a block that does not match its CRC-64 is refused");
    assert_eq!(proxy.corrupted(), 1, "one block was damaged on the way");
    assert!(err.to_string().contains("Crc64Mismatch"), "{err}");
    assert!(
        err.is_retryable(),
        "damaged bytes are worth another try: {err}"
    );
    assert!(matches!(
        p.backend().stat(&key).await,
        Err(Error::NotFound { .. })
    ));

    let mut writer = p.backend().writer(&key, size, None).await.expect("writer");
    writer.write(data.clone()).await.expect("blocks");
    assert!(writer.finish(&checksums).await.expect("block list"));
    let stored = p.get_bytes(&checksums.sha256, None).await.expect("stored");
    assert_eq!(stored, data, "the blob holds the bytes sent");
}
