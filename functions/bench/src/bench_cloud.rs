//! `stowage bench-cloud`: upload and download throughput through `stowage serve` to Google
//! Cloud Storage (fake-gcs-server) and Azure Blob (Azurite) on the direct templates
//! (`google-storage-direct`, `azure-blob-storage-direct`), against each backend's client used
//! plainly on the same emulator in the same run: `gcloud-storage` (one simple upload per file,
//! one streamed download) and `object_store` (one Put Blob per file, one streamed Get).
//! Downloads through Stowage are proxied (`?redirect` off: the repository does not redirect).
//! Beside the rates it prints the CPU per GiB of the `stowage` process and of the plain
//! client, and the bounds measured in the same run (issue 25): the three digests, a socket →
//! file copy for uploads, a file → socket copy for downloads. It measures and prints the
//! ratios; it does not judge.

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

use crate::bench::{cpu_time, download, fail, mb_per_s, median, random_pattern, start_with_config};
use crate::bench_s3::{FileSet, make_set, parse_sets, stop, stowage_upload};
use crate::cpu::per_gib;

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

/// A wall-clock time and the CPU a process spent in it.
#[derive(Debug, Clone, Copy)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

/// Times `work`, and counts the CPU process `pid` spends meanwhile.
async fn spent<F: std::future::Future<Output = Result<(), Error>>>(
    pid: u32,
    work: F,
) -> Result<Spent, Error> {
    let (start, before) = (Instant::now(), cpu_time(pid).unwrap_or_default());
    work.await?;
    Ok(Spent {
        wall: start.elapsed(),
        cpu: cpu_time(pid).unwrap_or_default().saturating_sub(before),
    })
}

/// Uploads then downloads every file of `set` with the plain client (in this process, which
/// does nothing else meanwhile); returns both.
async fn sdk_round(sdk: &Sdk, set: &FileSet, tag: &str) -> Result<(Spent, Spent), Error> {
    let me = std::process::id();
    let up = spent(me, async {
        for (i, file) in set.files.iter().enumerate() {
            sdk.upload(&format!("sdk/{tag}/{i}"), file.clone()).await?;
        }
        Ok(())
    })
    .await?;
    let down = spent(me, async {
        for i in 0..set.files.len() {
            sdk.download(&format!("sdk/{tag}/{i}")).await?;
        }
        Ok(())
    })
    .await?;
    Ok((up, down))
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
    let mut cpu_rows = Vec::new();
    for (b, backend) in backends.iter().enumerate() {
        let (server, pid) =
            start_with_config(work.path(), &format!("server-{b}"), &backend.filestore).await?;
        for (s, &(size, count)) in sets.iter().enumerate() {
            let total = size * count as u64;
            let (mut sdk_up, mut sdk_down, mut up, mut down) = (vec![], vec![], vec![], vec![]);
            let mut declared_up = vec![];
            // CPU s/GiB: the plain client's up and down, Stowage's up, declared up and down.
            let mut cpu: [Vec<f64>; 5] = Default::default();
            for round in 0..args.rounds.max(1) {
                let seed = (b * 1000 + s * 100 + round * 4) as u64;
                let tag = format!("s{s}r{round}");
                // Alternate who goes first, so neither always meets a warmer emulator.
                let ours = make_set(&pattern, size, count, seed);
                let theirs = make_set(&pattern, size, count, seed + 1);
                let declared = make_set(&pattern, size, count, seed + 2);
                let run_sdk = sdk_round(&backend.sdk, &theirs, &tag);
                let run_ours = async {
                    let u = spent(pid, async {
                        stowage_upload(&client, &server, &ours, &tag, false, 1)
                            .await
                            .map(drop)
                    })
                    .await?;
                    let d = spent(pid, async {
                        for i in 0..count {
                            download(&server, &format!("{tag}/{i}.bin")).await?;
                        }
                        Ok(())
                    })
                    .await?;
                    Ok::<_, Error>((u, d))
                };
                let ((su, sd), (ou, od)) = if round % 2 == 0 {
                    let sdk = run_sdk.await?;
                    (sdk, run_ours.await?)
                } else {
                    let o = run_ours.await?;
                    (run_sdk.await?, o)
                };
                // A client that sends X-Checksum-Sha256: straight to the content key.
                let du = spent(pid, async {
                    stowage_upload(&client, &server, &declared, &format!("{tag}d"), true, 1)
                        .await
                        .map(drop)
                })
                .await?;
                declared_up.push(mb_per_s(total, du.wall));
                sdk_up.push(mb_per_s(total, su.wall));
                sdk_down.push(mb_per_s(total, sd.wall));
                up.push(mb_per_s(total, ou.wall));
                down.push(mb_per_s(total, od.wall));
                for (figures, one) in cpu.iter_mut().zip([su, sd, ou, du, od]) {
                    figures.push(per_gib(one.cpu, total));
                }
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
            let [sdk_up, sdk_down, up, declared, down] = cpu.map(median);
            cpu_rows.push((
                backend.name,
                format!("{}×{count}", bytesize::ByteSize::b(size)),
                size,
                [sdk_up, sdk_down, up, declared, down],
            ));
        }
        stop(server).await;
    }
    println!();
    println!(
        "CPU per GiB (s; /proc/PID/stat; medians of the rounds; bounds in this run): the digest \
         bound (three digests, one thread), the upload's copy bound (socket → file + fsync), the \
         download's (file → socket), the plain client's (this process). Uploads: ratios to \
         digest + copy (goal ≤ 1.3) and to digest + client; downloads (proxied): to the copy \
         (goal ≤ 2) and to the client."
    );
    println!(
        "| backend | files | digest | copy up | copy down | client up | client down | Stowage up (÷ d+c; ÷ d+client) | declared up (÷ d+c; ÷ d+client) | Stowage down (÷ copy; ÷ client) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut bounds = std::collections::HashMap::new();
    for &(size, _) in &sets {
        if let std::collections::hash_map::Entry::Vacant(entry) = bounds.entry(size) {
            entry.insert(cpu_bounds(&pattern, size, work.path()).await?);
        }
    }
    for (name, files, size, [sdk_up, sdk_down, up, declared, down]) in cpu_rows {
        let (digest, copy_up, copy_down) = bounds[&size];
        println!(
            "| {name} | {files} | {digest:.2} | {copy_up:.2} | {copy_down:.2} | {sdk_up:.2} | {sdk_down:.2} | {up:.2} ({:.2}; {:.2}) | {declared:.2} ({:.2}; {:.2}) | {down:.2} ({:.2}; {:.2}) |",
            up / (digest + copy_up),
            up / (digest + sdk_up),
            declared / (digest + copy_up),
            declared / (digest + sdk_up),
            down / copy_down,
            down / sdk_down,
        );
    }
    Ok(())
}

/// The bounds for a file of `size`, in CPU s/GiB: the digests, the upload's copy, the
/// download's copy.
async fn cpu_bounds(
    pattern: &Bytes,
    size: u64,
    dir: &std::path::Path,
) -> Result<(f64, f64, f64), Error> {
    let digest = per_gib(crate::cpu::digest_bound(pattern, size).await?, size);
    let file = dir.join("bound.bin");
    let up = per_gib(
        crate::cpu::socket_to_file(pattern, size, &file).await?,
        size,
    );
    let mut out = std::fs::File::create(&file).map_err(fail("create the bound's file"))?;
    for chunk in crate::bench::body(pattern, size) {
        std::io::Write::write_all(&mut out, &chunk).map_err(fail("write the bound's file"))?;
    }
    drop(out);
    let (cpu, bytes) = crate::cpu::file_to_socket(&file).await?;
    let _ = std::fs::remove_file(&file);
    Ok((digest, up, per_gib(cpu, bytes)))
}
