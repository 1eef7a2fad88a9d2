//! Assembles the binary-provider chain from `[filestore]`, in this one place, like
//! Artifactory's `binarystore.xml` templates:
//!
//! | template | chain |
//! |---|---|
//! | `file-system` (default) | local directory |
//! | `s3-storage-v3-direct` | S3, uploads streamed (below `maxFileSizeForDirectUpload`) or multipart |
//! | `s3-storage-v3`, `cluster-s3-storage-v3` | eventual queue → S3 |
//! | `double-shards`, `redundant-shards`, `s3-sharding` | sharding → state-aware mounts (directories, S3 buckets) |
//! | `cache-fs` | read cache → local directory |
//!
//! `[filestore.cache] enabled = true` puts the read cache in front of any of them.
//!
//! Beside the chain it keeps the handles the service needs: the eventual queue (its dispatcher
//! and figures) and the store that accepts presigned upload sessions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::cache::{CacheSettings, CachedProvider};
use stowage_core::eventual::{EventualProvider, EventualSettings};
use stowage_core::fanout::FanOutSettings;
use stowage_core::fs::FileSystemProvider;
use stowage_core::sharding::{MountSettings, Mounts, ShardingProvider, ShardingSettings};
use stowage_core::signing::DownloadSigner;
use stowage_core::{BinaryProvider, Error, KeyLayout, PresignedUploads, Result};
use stowage_s3::{CloudFrontSigner, S3Provider};

use crate::Config;
use crate::config::MountConfig;

/// Every template name, for messages.
const TEMPLATES: &str = "file-system, cache-fs, double-shards, redundant-shards, s3-storage-v3, \
                         s3-storage-v3-direct, cluster-s3-storage-v3, s3-sharding, \
                         google-storage, azure-blob-storage";

/// The assembled chain.
#[derive(Clone)]
pub struct Filestore {
    /// What the service stores and reads through.
    pub provider: Arc<dyn BinaryProvider>,
    /// The write-behind queue, for templates that have one.
    pub eventual: Option<EventualProvider>,
    /// The object store that takes presigned upload sessions, for templates that have one.
    pub uploads: Option<Arc<dyn PresignedUploads>>,
    /// The sharded store (its mounts, balancing), for the sharding templates.
    pub sharding: Option<ShardingProvider>,
    /// The read cache, where there is one.
    pub cache: Option<CachedProvider>,
    /// Signs download redirects (S3 presigned or CloudFront), for object-store templates.
    pub signer: Option<Arc<dyn DownloadSigner>>,
    /// Local staging the chain keeps (filesystem `_pre`), cleaned of crash leftovers.
    local: Option<FileSystemProvider>,
}

impl fmt::Debug for Filestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filestore")
            .field("provider", &self.provider.to_string())
            .field("eventual", &self.eventual.is_some())
            .field("uploads", &self.uploads.is_some())
            .field("sharding", &self.sharding.is_some())
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl Filestore {
    /// A chain of one provider (tests, tools).
    pub fn from_provider(provider: Arc<dyn BinaryProvider>) -> Self {
        Self {
            provider,
            eventual: None,
            uploads: None,
            sharding: None,
            cache: None,
            signer: None,
            local: None,
        }
    }

    /// Builds the chain `config` names; object stores are connected (and tested) here.
    pub async fn build(config: &Config) -> Result<Self> {
        let layout = KeyLayout::new(config.filestore.root_folders_name_length)?;
        let template = config.filestore.template.as_str();
        let mut built = Self::build_chain(config, layout).await?;
        let c = &config.filestore.cache;
        if c.enabled.unwrap_or(template == "cache-fs") {
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
    async fn build_chain(config: &Config, layout: KeyLayout) -> Result<Self> {
        match config.filestore.template.as_str() {
            "file-system" | "cache-fs" => {
                let fs = FileSystemProvider::new(config.file_store_dir(), layout)?;
                Ok(Self {
                    provider: Arc::new(fs.clone()),
                    eventual: None,
                    uploads: None,
                    sharding: None,
                    cache: None,
                    signer: None,
                    local: Some(fs),
                })
            }
            "s3-storage-v3-direct" => {
                let s3 = Arc::new(connect_s3(config, layout).await?);
                Ok(Self {
                    provider: s3.clone(),
                    eventual: None,
                    signer: Some(download_signer(&s3)?),
                    uploads: Some(s3),
                    sharding: None,
                    cache: None,
                    local: None,
                })
            }
            "s3-storage-v3" | "cluster-s3-storage-v3" => {
                let s3 = Arc::new(connect_s3(config, layout).await?);
                let e = &config.filestore.eventual;
                let eventual = EventualProvider::new(
                    s3.clone(),
                    layout,
                    EventualSettings {
                        dirs: config.eventual_dirs(),
                        lenient_limit: e.lenient_limit,
                        number_of_threads: e.number_of_threads,
                        dispatcher_interval: Duration::from_millis(e.dispatcher_interval.max(1)),
                        max_retry_backoff: Duration::from_secs(e.max_retry_backoff_secs.max(1)),
                    },
                )
                .map_err(|e| Error::InvalidInput(format!("[filestore.eventual] {e}")))?;
                Ok(Self {
                    provider: Arc::new(eventual.clone()),
                    eventual: Some(eventual),
                    signer: Some(download_signer(&s3)?),
                    uploads: Some(s3),
                    sharding: None,
                    cache: None,
                    local: None,
                })
            }
            "double-shards" => build_sharding(config, layout, 1).await,
            "redundant-shards" => build_sharding(config, layout, 2).await,
            "s3-sharding" => {
                if config.filestore.sharding.mounts.is_empty() {
                    return Err(Error::InvalidInput(
                        "template \"s3-sharding\" needs [filestore.sharding] mounts, each with \
                         s3 = { bucketName = \"…\" }"
                            .into(),
                    ));
                }
                build_sharding(config, layout, 1).await
            }
            template @ ("google-storage" | "azure-blob-storage") => {
                Err(Error::InvalidInput(format!(
                    "filestore template {template:?} is not available in this build yet; use \
                     one of file-system, cache-fs, s3-storage-v3-direct, s3-storage-v3, \
                     cluster-s3-storage-v3, double-shards, redundant-shards, s3-sharding"
                )))
            }
            other => Err(Error::InvalidInput(format!(
                "unknown filestore template {other:?}; expected one of {TEMPLATES}"
            ))),
        }
    }

    /// Removes what a crash left in local staging (older than `grace`: another process may
    /// be writing newer files only when directories are shared).
    pub async fn clean_local_staging(&self, grace: Duration) -> Result<usize> {
        let mut removed = 0;
        if let Some(fs) = &self.local {
            removed += fs.clean_temp(grace).await?;
        }
        if let Some(eventual) = &self.eventual {
            removed += eventual.clean_temp(grace).await?;
        }
        Ok(removed)
    }
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
        let provider: Arc<dyn BinaryProvider> = match (&mount.dir, &mount.s3) {
            (Some(dir), None) => Arc::new(FileSystemProvider::new(dir, layout).map_err(|e| {
                Error::InvalidInput(format!("[filestore.sharding] mount {:?}: {e}", mount.id))
            })?),
            (None, Some(table)) => {
                let s3 = shard_s3_config(config, &mount.id, table)?;
                let spool = config.data_dir.join("s3-spool").join(&mount.id);
                // Checked below with the other mounts: a bucket that is away at start-up
                // leaves its mount down, not the whole store.
                let s3 = stowage_s3::S3Config {
                    test_connection: false,
                    ..s3
                };
                Arc::new(connect_s3_with(config, s3, layout, spool).await?)
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "[filestore.sharding] mount {:?} needs exactly one of dir = \"…\" or \
                     s3 = {{ bucketName = \"…\" }}",
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
        provider: Arc::new(sharding.clone()),
        eventual: None,
        uploads: None,
        sharding: Some(sharding),
        cache: None,
        signer: None,
        local: None,
    })
}

/// CloudFront when `cloudFrontDomainName` is set, else S3 presigned URLs.
fn download_signer(s3: &Arc<S3Provider>) -> Result<Arc<dyn DownloadSigner>> {
    Ok(match CloudFrontSigner::from_config(s3)? {
        Some(cloudfront) => Arc::new(cloudfront),
        None => s3.clone(),
    })
}

/// A shard's S3 settings: its own table laid over `[filestore.s3]`.
fn shard_s3_config(config: &Config, id: &str, table: &toml::Table) -> Result<stowage_s3::S3Config> {
    let bad = |e: String| Error::InvalidInput(format!("[filestore.sharding] mount {id:?}: {e}"));
    let mut merged = match &config.filestore.s3 {
        Some(base) => toml::Table::try_from(base).map_err(|e| bad(e.to_string()))?,
        None => toml::Table::new(),
    };
    for (key, value) in table {
        merged.insert(key.clone(), value.clone());
    }
    merged
        .try_into()
        .map_err(|e: toml::de::Error| bad(format!("s3: {}", e.message())))
}

async fn connect_s3(config: &Config, layout: KeyLayout) -> Result<S3Provider> {
    let s3 = config.filestore.s3.clone().ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template {:?} needs a [filestore.s3] section with at least bucketName",
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
    S3Provider::connect(
        s3,
        layout,
        config.filestore.max_file_size_for_direct_upload.as_u64(),
        spool,
    )
    .await
}
