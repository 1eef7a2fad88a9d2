//! `stowage serve` in front of Google Cloud Storage (fake-gcs-server) and Azure Blob (Azurite):
//! the GCS and Azure templates with download redirects to V4 signed URLs and service SAS, and
//! a sharded store over one S3 bucket, one GCS bucket and one Azure container with redundancy 2
//! that keeps serving every binary while any one of the three emulators is stopped, and whose
//! balancing restores the redundancy when it returns.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_DISPOSITION, LOCATION};
use stowage_core::{BinaryProvider, BinaryProviderExt, KeyLayout, Sha256};
use stowage_tests::s3::{self, LocalStack};
use stowage_tests::{Options, Server, azure, bytes, free_port, gcs, sha256_hex};

const MIB: usize = 1024 * 1024;

async fn start(dir: &Path, config: String) -> Server {
    let server = Server::start_with(
        dir,
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await;
    server.create_redirecting_repo("dist").await;
    server
}

async fn deploy(server: &Server, path: &str, data: &[u8]) {
    let r = server
        .admin()
        .put(server.url(path))
        .body(data.to_vec())
        .send()
        .await
        .expect("deploy");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{path}: {:?}",
        r.text().await
    );
}

async fn assert_served(server: &Server, path: &str, data: &[u8]) {
    let r = server
        .admin()
        .get(server.url(&format!("{path}?redirect=false")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    assert!(
        r.bytes().await.expect("body") == data,
        "{path} served other bytes"
    );
}

/// How the object store answers with the file's name.
enum NameCheck {
    /// It sends the signed `Content-Disposition` (Azurite, like Azure and GCS).
    Served,
    /// It ignores `response-content-disposition` (fake-gcs-server): the URL must carry it.
    InUrl,
}

/// Follows a download redirect by hand: the 302 must point at the object store, and the
/// object store must serve the bytes under the file's name.
async fn assert_redirected(
    server: &Server,
    path: &str,
    data: &[u8],
    store: &str,
    name_check: NameCheck,
) {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Bearer {}", server.token).parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("client");
    let r = client.get(server.url(path)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::FOUND, "{path}");
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(location.starts_with(store), "{location} is not on {store}");
    let got = reqwest::get(&location).await.expect("follow");
    assert_eq!(got.status(), StatusCode::OK, "{location}");
    let name = path.rsplit('/').next().expect("name");
    let disposition = match name_check {
        NameCheck::Served => got.headers()[CONTENT_DISPOSITION]
            .to_str()
            .expect("cd")
            .to_string(),
        NameCheck::InUrl => reqwest::Url::parse(&location)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "response-content-disposition")
            .map(|(_, v)| v.into_owned())
            .expect("the URL names the file"),
    };
    assert!(disposition.contains(name), "{disposition}");
    assert!(got.bytes().await.expect("body") == data);
}

#[tokio::test]
async fn gcs_template_behind_the_eventual_queue_redirects_to_v4_signed_urls() {
    let Some(endpoint) = gcs::endpoint() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = gcs::bucket_name();
    gcs::create_bucket(&endpoint, &bucket).await;
    let key_file = gcs::service_account_key(dir.path());
    let config = format!(
        "[filestore]\ntemplate = \"google-storage\"\n\n[filestore.google-storage]\n{}\
         credentialsFile = \"{}\"\n",
        gcs::toml_fields(&endpoint, &bucket),
        key_file.display()
    );
    let server = start(dir.path(), config).await;
    let data = bytes(500, 3 * MIB);
    deploy(&server, "/dist/app/app-1.0.jar", &data).await;
    assert_served(&server, "/dist/app/app-1.0.jar", &data).await;
    // The queue hands the binary to GCS; then the redirect serves it from there.
    let provider = stowage_gcs::connect(&gcs::config(&endpoint, &bucket), KeyLayout::default())
        .await
        .expect("connect");
    let digest: Sha256 = sha256_hex(&data).parse().expect("digest");
    wait_until_stored(&provider, &digest).await;
    let store = format!("{endpoint}/{bucket}/");
    assert_redirected(
        &server,
        "/dist/app/app-1.0.jar",
        &data,
        &store,
        NameCheck::InUrl,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn azure_direct_template_redirects_to_a_service_sas_azurite_accepts() {
    let Some(endpoint) = azure::endpoint() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let container = azure::container_name();
    azure::create_container(&endpoint, &container).await;
    let config = format!(
        "[filestore]\ntemplate = \"azure-blob-storage-direct\"\n\n\
         [filestore.azure-blob-storage]\n{}blockSize = \"1MiB\"\nmaxInMemoryUploadSize = \"1MiB\"\n",
        azure::toml_fields(&endpoint, &container)
    );
    let server = start(dir.path(), config).await;
    for (name, size) in [("small.jar", 300_000), ("large.jar", 5 * MIB + 3)] {
        let data = bytes(size as u64, size);
        let path = format!("/dist/app/{name}");
        deploy(&server, &path, &data).await;
        assert_served(&server, &path, &data).await;
        let store = format!("{endpoint}/{container}/");
        assert_redirected(&server, &path, &data, &store, NameCheck::Served).await;
    }
    server.stop().await;
}

async fn wait_until_stored(provider: &dyn BinaryProvider, digest: &Sha256) {
    for _ in 0..200 {
        if provider.exists(digest).await.expect("exists") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the eventual queue did not hand {digest} to {provider} within 10 s");
}

/// One store of the sharded set, as the test sees it (to count copies).
struct Store {
    name: &'static str,
    provider: Box<dyn BinaryProvider>,
}

async fn copies(stores: &[Store], data: &[u8]) -> Vec<&'static str> {
    let digest: Sha256 = sha256_hex(data).parse().expect("digest");
    let mut on = Vec::new();
    for store in stores {
        match store.provider.get_bytes(&digest, None).await {
            Ok(stored) => {
                assert!(stored == data, "the copy on {} is intact", store.name);
                on.push(store.name);
            }
            Err(stowage_core::Error::NotFound { .. }) => {}
            Err(e) => panic!("reading {}: {e}", store.name),
        }
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_store_over_s3_gcs_and_azure_survives_any_one_stopped_and_balances_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s3_port, gcs_port, az_port) = (free_port(), free_port(), free_port());
    let Some(localstack) = LocalStack::start_on(dir.path(), s3_port).await else {
        return;
    };
    let Some(fake_gcs) = gcs::start_private(dir.path(), gcs_port).await else {
        return;
    };
    let Some(azurite) = azure::start_private(dir.path(), az_port).await else {
        return;
    };
    let (s3_endpoint, gcs_endpoint, az_endpoint) = (
        localstack.endpoint(),
        format!("http://127.0.0.1:{gcs_port}"),
        format!("http://127.0.0.1:{az_port}/{}", azure::ACCOUNT),
    );
    let (bucket, container) = (gcs::bucket_name(), azure::container_name());
    s3::create_bucket(&s3_endpoint, &bucket, dir.path()).await;
    gcs::create_bucket(&gcs_endpoint, &bucket).await;
    azure::create_container(&az_endpoint, &container).await;

    let mounts = [
        format!("  {{ id = \"s3\", s3 = {{ bucketName = \"{bucket}\" }} }}"),
        format!(
            "  {{ id = \"gcs\", gcs = {{ {} }} }}",
            gcs::toml_fields(&gcs_endpoint, &bucket)
                .trim()
                .replace('\n', ", ")
        ),
        format!(
            "  {{ id = \"azure\", azure = {{ {} }} }}",
            azure::toml_fields(&az_endpoint, &container)
                .trim()
                .replace('\n', ", ")
        ),
    ];
    let config = format!(
        "[filestore]\ntemplate = \"redundant-shards\"\n\n[filestore.sharding]\nredundancy = 2\n\
         lenientLimit = 1\ncheckPeriod = 200\nbalancingInterval = 0\n\
         concurrentStreamWaitTimeout = 10000\nmounts = [\n{}\n]\n\n{}",
        mounts.join(",\n"),
        s3::toml_section(&s3_endpoint, &bucket)
    );
    let server = start(dir.path(), config).await;
    let stores = [
        Store {
            name: "s3",
            provider: Box::new(s3::client(&s3_endpoint, &bucket, dir.path()).await),
        },
        Store {
            name: "gcs",
            provider: Box::new(
                stowage_gcs::connect(&gcs::config(&gcs_endpoint, &bucket), KeyLayout::default())
                    .await
                    .expect("gcs"),
            ),
        },
        Store {
            name: "azure",
            provider: Box::new(
                stowage_azure::connect(
                    &azure::config(&az_endpoint, &container),
                    KeyLayout::default(),
                )
                .await
                .expect("azure"),
            ),
        },
    ];

    // Small, medium and larger than one in-memory upload (streamed in chunks and blocks).
    let mut binaries: Vec<(String, Vec<u8>)> = [100_000, 2 * MIB, 9 * MIB + 1, 40_000, 700_000]
        .iter()
        .enumerate()
        .map(|(i, &size)| (format!("/dist/multi/b{i}.bin"), bytes(600 + i as u64, size)))
        .collect();
    for (path, data) in &binaries {
        deploy(&server, path, data).await;
        assert_eq!(copies(&stores, data).await.len(), 2, "{path}: two copies");
    }

    let (mut localstack, mut fake_gcs, mut azurite) =
        (Some(localstack), Some(fake_gcs), Some(azurite));
    for (round, stopped) in ["s3", "gcs", "azure"].into_iter().enumerate() {
        match stopped {
            "s3" => localstack.take().expect("running").kill().await,
            "gcs" => fake_gcs.take().expect("running").kill().await,
            _ => azurite.take().expect("running").kill().await,
        }
        for (path, data) in &binaries {
            assert_served(&server, path, data).await;
        }
        // Uploads go on, to the two stores left.
        let path = format!("/dist/multi/while-{stopped}-down.bin");
        let data = bytes(700 + round as u64, 1_500_000);
        deploy(&server, &path, &data).await;
        assert_served(&server, &path, &data).await;
        binaries.push((path, data));

        match stopped {
            "s3" => {
                // LocalStack keeps nothing across a restart: its bucket comes back empty.
                localstack = LocalStack::start_on(dir.path(), s3_port).await;
                s3::create_bucket(&s3_endpoint, &bucket, dir.path()).await;
            }
            "gcs" => fake_gcs = gcs::start_private(dir.path(), gcs_port).await,
            _ => azurite = azure::start_private(dir.path(), az_port).await,
        }
        let report = server.balance().await;
        for (path, data) in &binaries {
            let on = copies(&stores, data).await;
            assert!(
                on.len() >= 2,
                "{path} has copies on {on:?} after {stopped} returned: {report}"
            );
        }
    }
    server.stop().await;
    for emulator in [fake_gcs, azurite].into_iter().flatten() {
        emulator.kill().await;
    }
    if let Some(localstack) = localstack {
        localstack.kill().await;
    }
}

/// Each cloud backend through a proxy that drops the next two connections: every call still
/// succeeds, retried by the provider (GCS, Azure) or the SDK (S3), and the proxy did drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_connection_failures_are_retried_on_every_cloud_backend() {
    use stowage_core::ExpectedChecksums;
    use stowage_tests::flaky::FlakyProxy;
    let dir = tempfile::tempdir().expect("tempdir");
    let (Some(s3_endpoint), Some(gcs_endpoint), Some(az_endpoint)) =
        (s3::endpoint(), gcs::endpoint(), azure::endpoint())
    else {
        return;
    };
    let host = |endpoint: &str| {
        let url = reqwest::Url::parse(endpoint).expect("endpoint");
        format!("127.0.0.1:{}", url.port().expect("port"))
    };
    let (bucket, container) = (gcs::bucket_name(), azure::container_name());
    s3::create_bucket(&s3_endpoint, &bucket, dir.path()).await;
    gcs::create_bucket(&gcs_endpoint, &bucket).await;
    azure::create_container(&az_endpoint, &container).await;
    let (s3_proxy, gcs_proxy, az_proxy) = (
        FlakyProxy::start(&host(&s3_endpoint)).await,
        FlakyProxy::start(&host(&gcs_endpoint)).await,
        FlakyProxy::start(&host(&az_endpoint)).await,
    );
    let through = |proxy: &FlakyProxy, endpoint: &str| {
        let url = reqwest::Url::parse(endpoint).expect("endpoint");
        format!(
            "http://127.0.0.1:{}{}",
            proxy.port,
            url.path().trim_end_matches('/')
        )
    };
    // A fresh client per call: pooled connections would not meet the proxy's failures.
    let data = bytes(900, 300_000);
    let digest: Sha256 = sha256_hex(&data).parse().expect("digest");
    for round in 0..2 {
        for (name, proxy) in [("s3", &s3_proxy), ("gcs", &gcs_proxy), ("azure", &az_proxy)] {
            let provider: Box<dyn BinaryProvider> = match name {
                "s3" => {
                    Box::new(s3::client(&through(proxy, &s3_endpoint), &bucket, dir.path()).await)
                }
                "gcs" => {
                    let mut config = gcs::config(&through(proxy, &gcs_endpoint), &bucket);
                    config.test_connection = false;
                    Box::new(
                        stowage_gcs::connect(&config, KeyLayout::default())
                            .await
                            .expect("gcs"),
                    )
                }
                _ => {
                    let config = azure::config(&through(proxy, &az_endpoint), &container);
                    Box::new(stowage_azure::build(&config, KeyLayout::default()).expect("azure"))
                }
            };
            proxy.fail_next(2);
            if round == 0 {
                provider
                    .put_bytes(data.clone().into(), ExpectedChecksums::none())
                    .await
                    .unwrap_or_else(|e| panic!("{name}: put through a flaky network: {e}"));
            } else {
                let got = provider
                    .get_bytes(&digest, None)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: get through a flaky network: {e}"));
                assert!(got == data, "{name}: read back other bytes");
            }
            assert_eq!(
                proxy.failed(),
                2 * (round + 1),
                "{name}: the proxy dropped connections"
            );
        }
    }
}

/// Two nodes of a `cluster-` template on one PostgreSQL: each upload reaches the other node's
/// queue too, is served by both, and drains to the store, leaving both queue disks empty.
async fn cluster_template_drains_to_its_store(
    dir: &Path,
    section: String,
    store: &dyn BinaryProvider,
) {
    let Some(database) = stowage_tests::postgres_database(dir).await else {
        return;
    };
    let config = format!(
        "{section}\n[filestore.eventual]\nredundancy = 2\nlenientLimit = 2\n\
         dispatcherInterval = 200\nmaxRetryBackoffSecs = 1\n\n\
         [cluster]\nheartbeat_secs = 1\nsecret = \"multicloud-cluster-secret-0123\"\n"
    );
    let mut nodes: Vec<Server> = Vec::new();
    for i in 0..2 {
        let options = Options {
            config: Some(config.clone()),
            database_url: Some(database.clone()),
            token: nodes.first().map(|n| n.token.clone()),
            env: Vec::new(),
        };
        nodes.push(Server::start_with(&dir.join(format!("node-{i}")), options).await);
    }
    nodes[0].create_repo("dist").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // both alive in the nodes table
    let mut digests = Vec::new();
    for i in 0..3u64 {
        let data = bytes(700 + i, 200_000 + i as usize);
        let path = format!("/dist/c/{i}.bin");
        deploy(&nodes[0], &path, &data).await;
        assert_served(&nodes[1], &path, &data).await;
        digests.push(sha256_hex(&data).parse::<Sha256>().expect("digest"));
    }
    for digest in &digests {
        wait_until_stored(store, digest).await;
    }
    for node in &nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !stowage_tests::stored_binaries_in(&node.data_dir.join("eventual")).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a queue disk stays full"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let info = nodes[0].storage_info().await;
    assert_eq!(info["clusterQueue"]["binaries"], 0, "{info}");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gcs_and_azure_cluster_templates_spread_the_queue_and_drain_to_their_stores() {
    let (Some(gcs_endpoint), Some(azure_endpoint)) = (gcs::endpoint(), azure::endpoint()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = gcs::bucket_name();
    gcs::create_bucket(&gcs_endpoint, &bucket).await;
    let gcs_store =
        stowage_gcs::connect(&gcs::config(&gcs_endpoint, &bucket), KeyLayout::default())
            .await
            .expect("connect");
    let section = format!(
        "[filestore]\ntemplate = \"cluster-google-storage\"\n\n[filestore.google-storage]\n{}",
        gcs::toml_fields(&gcs_endpoint, &bucket)
    );
    cluster_template_drains_to_its_store(&dir.path().join("gcs"), section, &gcs_store).await;

    let container = azure::container_name();
    azure::create_container(&azure_endpoint, &container).await;
    let azure_store = stowage_azure::connect(
        &azure::config(&azure_endpoint, &container),
        KeyLayout::default(),
    )
    .await
    .expect("connect");
    let section = format!(
        "[filestore]\ntemplate = \"cluster-azure-blob-storage\"\n\n\
         [filestore.azure-blob-storage]\n{}",
        azure::toml_fields(&azure_endpoint, &container)
    );
    cluster_template_drains_to_its_store(&dir.path().join("azure"), section, &azure_store).await;
}
