//! Assembles the binary-provider chain from `[filestore]`, in this one place, like
//! Artifactory's `binarystore.xml` templates:
//!
//! | template | chain |
//! |---|---|
//! | `file-system` (default) | local directory |
//! | `s3-storage-v3-direct` | S3, uploads streamed (below `maxFileSizeForDirectUpload`) or multipart |
//! | `s3-storage-v3` | eventual queue → S3 |
//! | `cluster-s3-storage-v3`, `cluster-google-storage`, `cluster-azure-blob-storage` | eventual queue with copies on `redundancy` nodes' queue disks → S3, GCS or Azure Blob |
//! | `google-storage-direct`, `azure-blob-storage-direct` | GCS or Azure Blob, uploads streamed |
//! | `google-storage`, `azure-blob-storage` | eventual queue → GCS or Azure Blob |
//! | `double-shards`, `redundant-shards`, `s3-sharding` | sharding → state-aware mounts (directories, S3 buckets, GCS buckets, Azure containers) |
//! | `cache-fs` | read cache → local directory |
//! | `cluster-file-system` | this node's directory, each binary's copies on `redundancy` nodes (the nodes' peer endpoint; no object store) |
//!
//! `[filestore.cache] enabled = true` puts the read cache in front of any of them.
//!
//! Beside the chain it keeps the handles the service needs ([`Filestore`]): the eventual queue
//! (its dispatcher and figures), the store that accepts presigned upload sessions, the signer.

use std::sync::Arc;
use std::time::Duration;

use stowage_azure::{AzureConfig, AzureSasSigner};
use stowage_core::cache::{CacheSettings, CachedProvider};
use stowage_core::eventual::{ClusterQueueSettings, EventualProvider, EventualSettings, NodesOnly};
use stowage_core::fanout::FanOutSettings;
use stowage_core::fs::FileSystemProvider;
use stowage_core::sharding::{MountSettings, Mounts, ShardingProvider, ShardingSettings};
use stowage_core::signing::{DownloadSigner, SignedProvider};
use stowage_core::{BinaryProvider, Error, KeyLayout, Result};
use stowage_gcs::{GcsConfig, GcsSigner};
use stowage_peer::HttpPeerLink;
use stowage_s3::{CloudFrontSigner, S3Backend, S3Provider};
use stowage_service::Filestore;

use crate::config::MountConfig;
use crate::{Backend, Config, Template};

/// Builds the chain `config` names; object stores are connected (and tested) here.
pub async fn build(config: &Config) -> Result<Filestore> {
    let layout = KeyLayout::new(config.filestore.root_folders_name_length)?;
    let template = config.filestore.template;
    let mut built = build_chain(config, layout).await?;
    let c = &config.filestore.cache;
    if c.enabled.unwrap_or(template.caches_by_default()) {
        let settings = CacheSettings {
            dir: c
                .cache_provider_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("cache")),
            max_cache_size: c.max_cache_size.as_u64(),
            max_file_size_limit: c.max_file_size_limit.as_u64(),
            skip_during_upload: c.skip_during_upload,
        };
        let cache = CachedProvider::open(Arc::clone(&built.provider), layout, settings)
            .await
            .map_err(|e| Error::InvalidInput(format!("[filestore.cache] {e}")))?;
        built.provider = Arc::new(cache.clone());
        built.cache = Some(cache);
    }
    Ok(built)
}

/// The chain below the read cache.
async fn build_chain(config: &Config, layout: KeyLayout) -> Result<Filestore> {
    let template = config.filestore.template;
    let eventual = template.has_eventual_queue();
    let cluster = cluster_queue(config)?;
    match template.backend() {
        Backend::FileSystem => match cluster {
            // cluster-file-system: this node's directory, its copies spread over the nodes.
            Some(cluster) => {
                let e = &config.filestore.eventual;
                let store = EventualProvider::new(
                    Arc::new(NodesOnly),
                    layout,
                    EventualSettings {
                        dirs: vec![config.file_store_dir()],
                        lenient_limit: 0,
                        number_of_threads: e.number_of_threads,
                        dispatcher_interval: Duration::from_millis(e.dispatcher_interval.max(1)),
                        max_retry_backoff: Duration::from_secs(e.max_retry_backoff_secs.max(1)),
                        cluster: Some(cluster),
                    },
                )?;
                Ok(Filestore {
                    eventual: Some(store.clone()),
                    ..Filestore::from_provider(Arc::new(store))
                })
            }
            None => {
                let fs = FileSystemProvider::new(config.file_store_dir(), layout)?;
                Ok(Filestore::from_provider(Arc::new(fs)))
            }
        },
        Backend::S3 => {
            let s3 = connect_s3(config, layout).await?;
            let signer = download_signer(s3.backend())?;
            object_chain(
                config,
                layout,
                Arc::new(s3),
                Some(signer),
                eventual,
                cluster,
            )
        }
        Backend::GoogleStorage => {
            let gcs_config = section(&config.filestore.google_storage, "google-storage", template)?;
            let gcs = Arc::new(stowage_gcs::connect(gcs_config, layout).await?);
            let signer = GcsSigner::from_config(gcs_config, &gcs)?
                .map(|s| Arc::new(s) as Arc<dyn DownloadSigner>);
            object_chain(config, layout, gcs, signer, eventual, cluster)
        }
        Backend::AzureBlobStorage => {
            let azure_config = section(
                &config.filestore.azure_blob_storage,
                "azure-blob-storage",
                template,
            )?;
            let azure = Arc::new(stowage_azure::connect(azure_config, layout).await?);
            let signer = AzureSasSigner::from_config(azure_config, &azure)?
                .map(|s| Arc::new(s) as Arc<dyn DownloadSigner>);
            object_chain(config, layout, azure, signer, eventual, cluster)
        }
        Backend::Sharding => {
            if template == Template::S3Sharding && config.filestore.sharding.mounts.is_empty() {
                return Err(Error::InvalidInput(
                    "template \"s3-sharding\" needs [filestore.sharding] mounts, each with \
                     s3 = { bucketName = \"…\" }"
                        .into(),
                ));
            }
            let default_redundancy = if template == Template::RedundantShards {
                2
            } else {
                1
            };
            build_sharding(config, layout, default_redundancy).await
        }
    }
}

/// An object store at the bottom of the chain (with its download signer attached, where it
/// has one): direct, or behind the eventual queue.
fn object_chain(
    config: &Config,
    layout: KeyLayout,
    store: Arc<dyn BinaryProvider>,
    signer: Option<Arc<dyn DownloadSigner>>,
    eventual: bool,
    cluster: Option<ClusterQueueSettings>,
) -> Result<Filestore> {
    let store: Arc<dyn BinaryProvider> = match signer {
        Some(signer) => Arc::new(SignedProvider::new(store, signer)),
        None => store,
    };
    let mut built = Filestore::from_provider(Arc::clone(&store));
    if eventual {
        let e = &config.filestore.eventual;
        let queue = EventualProvider::new(
            store,
            layout,
            EventualSettings {
                dirs: config.eventual_dirs(),
                lenient_limit: e.lenient_limit,
                number_of_threads: e.number_of_threads,
                dispatcher_interval: Duration::from_millis(e.dispatcher_interval.max(1)),
                max_retry_backoff: Duration::from_secs(e.max_retry_backoff_secs.max(1)),
                cluster,
            },
        )
        .map_err(|e| Error::InvalidInput(format!("[filestore.eventual] {e}")))?;
        built.provider = Arc::new(queue.clone());
        built.eventual = Some(queue);
    }
    Ok(built)
}

/// The cluster templates' part of the queue: copies on `redundancy` nodes, reached with the
/// cluster's secret (checked before any store is connected).
fn cluster_queue(config: &Config) -> Result<Option<ClusterQueueSettings>> {
    if !config.filestore.template.is_cluster() {
        return Ok(None);
    }
    let template = config.filestore.template;
    let keeps_copies = template == Template::ClusterFileSystem;
    // The store's copies follow the sharding-cluster's settings (redundancy 2, lenientLimit
    // 1); the queue's, the eventual section's.
    let (redundancy, lenient_limit, section) = if keeps_copies {
        let s = &config.filestore.sharding;
        (
            s.redundancy.unwrap_or(2),
            s.lenient_limit,
            "[filestore.sharding]",
        )
    } else {
        let e = &config.filestore.eventual;
        (e.redundancy, e.lenient_limit, "[filestore.eventual]")
    };
    let secret = config.cluster.secret.as_deref().ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template \"{template}\" spreads copies over the cluster's nodes and needs \
             [cluster] secret (or STOWAGE_CLUSTER_SECRET), the same on every node, to open \
             their peer endpoint"
        ))
    })?;
    if redundancy == 0 || lenient_limit > redundancy {
        return Err(Error::InvalidInput(format!(
            "{section} redundancy is {redundancy} and lenientLimit {lenient_limit}: redundancy \
             must be at least 1, and lenientLimit between 0 (all copies) and redundancy"
        )));
    }
    Ok(Some(ClusterQueueSettings {
        redundancy,
        lenient_limit,
        link: Arc::new(HttpPeerLink::new(secret)?),
        keeps_copies,
    }))
}

/// The `[filestore.<name>]` section a template needs.
fn section<'a, T>(section: &'a Option<T>, name: &str, template: Template) -> Result<&'a T> {
    section.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template \"{template}\" needs a [filestore.{name}] section"
        ))
    })
}

/// A sharded store over the configured mounts (or two directories under the data directory).
async fn build_sharding(
    config: &Config,
    layout: KeyLayout,
    default_redundancy: usize,
) -> Result<Filestore> {
    let c = &config.filestore.sharding;
    let mounts = if c.mounts.is_empty() {
        (1..=2)
            .map(|n| MountConfig {
                id: format!("shard-fs-{n}"),
                dir: Some(config.data_dir.join(format!("shard-fs-{n}"))),
                s3: None,
                gcs: None,
                azure: None,
                zone: None,
                write_enabled: true,
                check_period: None,
            })
            .collect()
    } else {
        c.mounts.clone()
    };
    let mut built: Mounts = Vec::new();
    for mount in mounts {
        let bad = |e: Error| {
            Error::InvalidInput(format!("[filestore.sharding] mount {:?}: {e}", mount.id))
        };
        // Object stores are checked below with the other mounts: one that is away at
        // start-up leaves its mount down, not the whole store.
        let provider: Arc<dyn BinaryProvider> =
            match (&mount.dir, &mount.s3, &mount.gcs, &mount.azure) {
                (Some(dir), None, None, None) => {
                    Arc::new(FileSystemProvider::new(dir, layout).map_err(bad)?)
                }
                (None, Some(table), None, None) => {
                    let s3: stowage_s3::S3Config =
                        shard_config(config.filestore.s3.as_ref(), &mount.id, table, "s3")?;
                    let spool = config.data_dir.join("s3-spool").join(&mount.id);
                    let s3 = stowage_s3::S3Config {
                        test_connection: false,
                        ..s3
                    };
                    Arc::new(connect_s3_with(config, s3, layout, spool).await?)
                }
                (None, None, Some(table), None) => {
                    let gcs: GcsConfig = shard_config(
                        config.filestore.google_storage.as_ref(),
                        &mount.id,
                        table,
                        "gcs",
                    )?;
                    let gcs = GcsConfig {
                        test_connection: false,
                        ..gcs
                    };
                    Arc::new(stowage_gcs::connect(&gcs, layout).await.map_err(bad)?)
                }
                (None, None, None, Some(table)) => {
                    let azure: AzureConfig = shard_config(
                        config.filestore.azure_blob_storage.as_ref(),
                        &mount.id,
                        table,
                        "azure",
                    )?;
                    let azure = AzureConfig {
                        test_connection: false,
                        ..azure
                    };
                    Arc::new(stowage_azure::connect(&azure, layout).await.map_err(bad)?)
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "[filestore.sharding] mount {:?} needs exactly one of dir = \"…\", \
                         s3 = {{ bucketName = \"…\" }}, gcs = {{ bucketName = \"…\" }} or \
                         azure = {{ containerName = \"…\" }}",
                        mount.id
                    )));
                }
            };
        let settings = MountSettings {
            id: mount.id.clone(),
            zone: mount.zone.clone(),
            write_enabled: mount.write_enabled,
            check_period: Duration::from_millis(mount.check_period.unwrap_or(c.check_period)),
        };
        built.push((settings, provider));
    }
    let cross_zone_order = config
        .cluster
        .cross_zone_order
        .split(',')
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .map(String::from)
        .collect();
    let settings = ShardingSettings {
        redundancy: c.redundancy.unwrap_or(default_redundancy),
        lenient_limit: c.lenient_limit,
        write_behavior: c.write_behavior,
        read_behavior: c.read_behavior,
        cross_zone_order,
        fan_out: FanOutSettings {
            buffer_bytes: c.concurrent_stream_buffer_kb.max(1) << 10,
            wait_timeout: Duration::from_millis(c.concurrent_stream_wait_timeout.max(1)),
        },
        free_space_sample_interval: Duration::from_millis(c.free_space_sample_interval),
        max_balancing_run_time: Duration::from_millis(c.max_balancing_run_time.max(1)),
    };
    let sharding = ShardingProvider::new(built, settings)?;
    for (id, e) in sharding.check_mounts().await {
        tracing::warn!(mount = %id, error = %e, "a mount is down at start-up; it is tried again every checkPeriod");
    }
    Ok(Filestore {
        sharding: Some(sharding.clone()),
        ..Filestore::from_provider(Arc::new(sharding))
    })
}

/// CloudFront when `cloudFrontDomainName` is set, else S3 presigned URLs.
fn download_signer(s3: &S3Backend) -> Result<Arc<dyn DownloadSigner>> {
    Ok(match CloudFrontSigner::from_config(s3)? {
        Some(cloudfront) => Arc::new(cloudfront),
        None => Arc::new(s3.clone()),
    })
}

/// A shard's object-store settings: its own table laid over the template's section
/// (`[filestore.s3]`, `[filestore.google-storage]`, `[filestore.azure-blob-storage]`).
fn shard_config<T: serde::Serialize + serde::de::DeserializeOwned>(
    base: Option<&T>,
    id: &str,
    table: &toml::Table,
    what: &str,
) -> Result<T> {
    let bad = |e: String| Error::InvalidInput(format!("[filestore.sharding] mount {id:?}: {e}"));
    let mut merged = match base {
        Some(base) => toml::Table::try_from(base).map_err(|e| bad(e.to_string()))?,
        None => toml::Table::new(),
    };
    for (key, value) in table {
        merged.insert(key.clone(), value.clone());
    }
    merged
        .try_into()
        .map_err(|e: toml::de::Error| bad(format!("{what}: {}", e.message())))
}

async fn connect_s3(config: &Config, layout: KeyLayout) -> Result<S3Provider> {
    let s3 = config.filestore.s3.clone().ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template \"{}\" needs a [filestore.s3] section with at least bucketName",
            config.filestore.template
        ))
    })?;
    connect_s3_with(config, s3, layout, config.data_dir.join("s3-spool")).await
}

async fn connect_s3_with(
    config: &Config,
    s3: stowage_s3::S3Config,
    layout: KeyLayout,
    spool: std::path::PathBuf,
) -> Result<S3Provider> {
    // This process owns its data directory (the data-dir lock): older spool files are a
    // crash's leftovers.
    if let Ok(mut entries) = tokio::fs::read_dir(&spool).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
    stowage_s3::connect(
        s3,
        layout,
        config.filestore.max_file_size_for_direct_upload.as_u64(),
        spool,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_config(extra: &str) -> Config {
        Config::from_toml(&format!(
            "[filestore]\ntemplate = \"cluster-s3-storage-v3\"\n\n[filestore.s3]\n\
             bucketName = \"b\"\n\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn a_cluster_queue_needs_the_cluster_secret_and_a_lenient_limit_within_redundancy() {
        let e = cluster_queue(&cluster_config("")).expect_err("no secret");
        assert!(e.to_string().contains("[cluster] secret"), "{e}");
        let e = cluster_queue(&cluster_config("[cluster]\nsecret = \"short\"\n"))
            .expect_err("short secret");
        assert!(e.to_string().contains("16 characters"), "{e}");
        let e = cluster_queue(&cluster_config(
            "[filestore.eventual]\nredundancy = 2\nlenientLimit = 3\n\n\
             [cluster]\nsecret = \"0123456789abcdef0123\"\n",
        ))
        .expect_err("lenientLimit above redundancy");
        assert!(e.to_string().contains("lenientLimit between"), "{e}");
        let settings = cluster_queue(&cluster_config(
            "[cluster]\nsecret = \"0123456789abcdef0123\"\n",
        ))
        .expect("valid")
        .expect("a cluster template");
        assert_eq!((settings.redundancy, settings.lenient_limit), (2, 0));
        // The secret never shows where the settings are printed.
        assert!(!format!("{settings:?}").contains("0123456789abcdef"));
        // Other templates have no cluster part.
        let plain =
            Config::from_toml("[filestore]\ntemplate = \"s3-storage-v3\"\n").expect("config");
        assert!(cluster_queue(&plain).expect("fine").is_none());
    }
}
