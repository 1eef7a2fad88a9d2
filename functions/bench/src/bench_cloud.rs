//! `stowage bench-cloud`: upload and download throughput through `stowage serve` to Google
//! Cloud Storage (fake-gcs-server) and Azure Blob (Azurite) on the direct templates
//! (`google-storage-direct`, `azure-blob-storage-direct`), against each backend's client used
//! plainly on the same emulator in the same run: `gcloud-storage` (one simple upload per file,
//! one streamed download) and `object_store` (one Put Blob per file, one streamed Get).
//! Downloads through Stowage are proxied (`?redirect` off: the repository does not redirect).
//! It measures and prints the ratios; it does not judge.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gcloud_storage::client::{Client as GcsClient, ClientConfig};
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt as _, PutPayload};
use stowage_core::Error;

use crate::bench::{download, fail, mb_per_s, median, random_pattern, start_with_config};
use crate::bench_s3::{FileSet, make_set, parse_sets, stop, stowage_upload};

/// Azurite's well-known development account and key.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, clap::Args)]
pub(crate) struct BenchCloudArgs {
    /// fake-gcs-server's address; scripts/lib/gcs.sh's `start_gcs` exports it.
    #[arg(long, env = "STOWAGE_TEST_GCS_ENDPOINT")]
    gcs_endpoint: Option<String>,
    /// Azurite's blob endpoint with the account (`http://127.0.0.1:10000/devstoreaccount1`);
    /// scripts/lib/azurite.sh's `start_azurite` exports it.
    #[arg(long, env = "STOWAGE_TEST_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// File sets as SIZE×COUNT, comma-separated.
    #[arg(long, default_value = "1MiB×40,32MiB×4")]
    sets: String,
    /// Rounds per set (new bytes each round); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the servers' data.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// A backend's plain client, for the baseline.
enum Sdk {
    Gcs {
        client: Box<GcsClient>,
        bucket: String,
    },
    Azure(MicrosoftAzure),
}

impl Sdk {
    async fn upload(&self, key: &str, file: Bytes) -> Result<(), Error> {
        let failed = |e: String| Error::Unavailable(format!("bench-cloud: SDK upload: {e}"));
        match self {
            Sdk::Gcs { client, bucket } => {
                let request = UploadObjectRequest {
                    bucket: bucket.clone(),
                    ..Default::default()
                };
                let media = UploadType::Simple(Media::new(key.to_string()));
                client
                    .upload_object(&request, file, &media)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            Sdk::Azure(store) => {
                store
                    .put(&StorePath::from(key), PutPayload::from(file))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn download(&self, key: &str) -> Result<u64, Error> {
        let failed = |e: String| Error::Unavailable(format!("bench-cloud: SDK download: {e}"));
        let mut read = 0u64;
        match self {
            Sdk::Gcs { client, bucket } => {
                let request = GetObjectRequest {
                    bucket: bucket.clone(),
                    object: key.to_string(),
                    ..Default::default()
                };
                let mut stream = client
                    .download_streamed_object(&request, &Range::default())
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                while let Some(chunk) = stream.next().await {
                    read += chunk.map_err(|e| failed(e.to_string()))?.len() as u64;
                }
            }
            Sdk::Azure(store) => {
                let mut stream = store
                    .get(&StorePath::from(key))
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .into_stream();
                while let Some(chunk) = stream.next().await {
                    read += chunk.map_err(|e| failed(e.to_string()))?.len() as u64;
                }
            }
        }
        Ok(read)
    }
}

/// One backend: its plain client, and the filestore TOML of `stowage serve` in front of it.
struct Backend {
    name: &'static str,
    sdk: Sdk,
    filestore: String,
}

async fn gcs_backend(endpoint: &str) -> Result<Backend, Error> {
    let bucket = format!("stowage-bench-{:08x}", rand::random::<u32>());
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b?project=bench"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-cloud: create bucket: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "bench-cloud: create bucket answered {}",
            r.status()
        )));
    }
    let config = ClientConfig {
        storage_endpoint: endpoint.to_string(),
        ..Default::default()
    }
    .anonymous();
    Ok(Backend {
        name: "GCS (fake-gcs-server)",
        sdk: Sdk::Gcs {
            client: Box::new(GcsClient::new(config)),
            bucket: bucket.clone(),
        },
        filestore: format!(
            "[filestore]\ntemplate = \"google-storage-direct\"\n\n[filestore.google-storage]\n\
             bucketName = \"{bucket}\"\nendpoint = \"{endpoint}\"\nanonymous = true\n"
        ),
    })
}

async fn azure_backend(endpoint: &str) -> Result<Backend, Error> {
    let container = format!("stowage-bench-{:08x}", rand::random::<u32>());
    let config = stowage_azure::AzureConfig {
        account_name: AZURITE_ACCOUNT.into(),
        account_key: Some(AZURITE_KEY.into()),
        container_name: container.clone(),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    };
    stowage_azure::build(&config, stowage_core::KeyLayout::default())?
        .backend()
        .create_container()
        .await?;
    let store = MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name(&container)
        .with_endpoint(endpoint.to_string())
        .with_allow_http(true)
        .build()
        .map_err(|e| Error::InvalidInput(format!("bench-cloud: object_store: {e}")))?;
    Ok(Backend {
        name: "Azure (Azurite)",
        sdk: Sdk::Azure(store),
        filestore: format!(
            "[filestore]\ntemplate = \"azure-blob-storage-direct\"\n\n\
             [filestore.azure-blob-storage]\naccountName = \"{AZURITE_ACCOUNT}\"\n\
             accountKey = \"{AZURITE_KEY}\"\ncontainerName = \"{container}\"\n\
             endpoint = \"{endpoint}\"\n"
        ),
    })
}

/// Uploads then downloads every file of `set` with the plain client; returns both times.
async fn sdk_round(sdk: &Sdk, set: &FileSet, tag: &str) -> Result<(Duration, Duration), Error> {
    let start = Instant::now();
    for (i, file) in set.files.iter().enumerate() {
        sdk.upload(&format!("sdk/{tag}/{i}"), file.clone()).await?;
    }
    let up = start.elapsed();
    let start = Instant::now();
    for i in 0..set.files.len() {
        sdk.download(&format!("sdk/{tag}/{i}")).await?;
    }
    Ok((up, start.elapsed()))
}

pub(crate) async fn run(args: &BenchCloudArgs) -> Result<(), Error> {
    let sets = parse_sets(&args.sets)?;
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-cloud-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let mut backends = Vec::new();
    if let Some(endpoint) = &args.gcs_endpoint {
        backends.push(gcs_backend(endpoint).await?);
    }
    if let Some(endpoint) = &args.azure_endpoint {
        backends.push(azure_backend(endpoint).await?);
    }
    if backends.is_empty() {
        return Err(Error::InvalidInput(
            "bench-cloud: give --gcs-endpoint and/or --azure-endpoint (or run it under \
             scripts/lib's start_gcs / start_azurite)"
                .into(),
        ));
    }
    let pattern = random_pattern();
    let client = reqwest::Client::new();
    println!(
        "| backend | files | SDK up MB/s | Stowage up MB/s | up ratio | Stowage up, SHA-256 declared | ratio | SDK down MB/s | Stowage down MB/s | down ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (b, backend) in backends.iter().enumerate() {
        let (server, _) =
            start_with_config(work.path(), &format!("server-{b}"), &backend.filestore).await?;
        for (s, &(size, count)) in sets.iter().enumerate() {
            let total = size * count as u64;
            let (mut sdk_up, mut sdk_down, mut up, mut down) = (vec![], vec![], vec![], vec![]);
            let mut declared_up = vec![];
            for round in 0..args.rounds.max(1) {
                let seed = (b * 1000 + s * 100 + round * 4) as u64;
                let tag = format!("s{s}r{round}");
                // Alternate who goes first, so neither always meets a warmer emulator.
                let ours = make_set(&pattern, size, count, seed);
                let theirs = make_set(&pattern, size, count, seed + 1);
                let declared = make_set(&pattern, size, count, seed + 2);
                let run_sdk = async {
                    let (u, d) = sdk_round(&backend.sdk, &theirs, &tag).await?;
                    Ok::<_, Error>((mb_per_s(total, u), mb_per_s(total, d)))
                };
                let run_ours = async {
                    let u = stowage_upload(&client, &server, &ours, &tag, false, 1).await?;
                    let start = Instant::now();
                    for i in 0..count {
                        download(&server, &format!("{tag}/{i}.bin")).await?;
                    }
                    Ok::<_, Error>((mb_per_s(total, u), mb_per_s(total, start.elapsed())))
                };
                let ((su, sd), (ou, od)) = if round % 2 == 0 {
                    let sdk = run_sdk.await?;
                    (sdk, run_ours.await?)
                } else {
                    let o = run_ours.await?;
                    (run_sdk.await?, o)
                };
                // A client that sends X-Checksum-Sha256: straight to the content key.
                let t = stowage_upload(&client, &server, &declared, &format!("{tag}d"), true, 1)
                    .await?;
                declared_up.push(mb_per_s(total, t));
                sdk_up.push(su);
                sdk_down.push(sd);
                up.push(ou);
                down.push(od);
            }
            let (su, sd, ou, od) = (median(sdk_up), median(sdk_down), median(up), median(down));
            let du = median(declared_up);
            println!(
                "| {} | {}×{count} | {su:.0} | {ou:.0} | {:.2} | {du:.0} | {:.2} | {sd:.0} | {od:.0} | {:.2} |",
                backend.name,
                bytesize::ByteSize::b(size),
                ou / su,
                du / su,
                od / sd
            );
        }
        stop(server).await;
    }
    Ok(())
}
