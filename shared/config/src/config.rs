//! Stowage's configuration: one TOML file, `STOWAGE_*` environment variables over it, and a
//! documented default for everything else. Filestore parameters keep the names users of
//! Artifactory's `binarystore.xml` know. Loading never panics: every problem is an error that
//! names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use stowage_core::Error;
use stowage_core::sharding::{ReadBehavior, WriteBehavior};
use stowage_service::security::TokenSettings;
use stowage_service::{ClusterSettings, LockSettings, Settings};

use crate::Template;

/// The whole configuration (`stowage serve --config FILE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8081` (loopback only: expose it deliberately).
    pub listen: SocketAddr,
    /// Where the embedded database, the default filestore and `admin.token` live.
    /// Default `stowage-data`, relative to the working directory.
    pub data_dir: PathBuf,
    /// Public base URL used in `downloadUri` and search results, e.g.
    /// `https://artifacts.example.com`. Default: `http://` + the request's `Host` header.
    pub base_url: Option<String>,
    /// Whether GET/HEAD of artifacts, storage info and search work without a token.
    /// Default `false`.
    pub anonymous_read: bool,
    pub database: DatabaseConfig,
    pub filestore: FilestoreConfig,
    pub trashcan: TrashcanConfig,
    pub gc: GcConfig,
    pub cluster: ClusterConfig,
    pub uploads: UploadsConfig,
    pub downloads: DownloadsConfig,
    pub server: ServerConfig,
    pub security: SecurityConfig,
    pub metrics: MetricsConfig,
    pub scrub: ScrubConfig,
    pub standby: StandbyConfig,
}

/// `[metrics]`: the Prometheus endpoint (`GET /api/v1/metrics`, administrators only).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether this node records metrics and serves them. Default `true`.
    pub enabled: bool,
    /// A second listener that serves the same text at `GET /metrics` without credentials,
    /// for a scraper beside the node (a CloudWatch agent or Prometheus sidecar in the same
    /// task). Keep it on a loopback address: whoever reaches it reads the node's figures.
    /// Default: none.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("stowage-data"),
            base_url: None,
            anonymous_read: false,
            database: DatabaseConfig::default(),
            filestore: FilestoreConfig::default(),
            trashcan: TrashcanConfig::default(),
            gc: GcConfig::default(),
            cluster: ClusterConfig::default(),
            uploads: UploadsConfig::default(),
            downloads: DownloadsConfig::default(),
            server: ServerConfig::default(),
            security: SecurityConfig::default(),
            metrics: MetricsConfig::default(),
            scrub: ScrubConfig::default(),
            standby: StandbyConfig::default(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (default: `sqlite://<data_dir>/stowage.db`) or
    /// `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// A separate URL for read-only queries (an Aurora reader endpoint). PostgreSQL only;
    /// default: none, reads use `url`.
    pub reader_url: Option<String>,
    /// The password, put into `url` and `reader_url` at start-up: the secret itself or a
    /// reference to it (`file:PATH`, `secretsmanager:ID[#field]`, `ssm:NAME`; see
    /// [`crate::secrets`]). Default: none, the URL's own. `STOWAGE_DATABASE_PASSWORD`.
    pub password: Option<String>,
    /// Connections per pool and node. Default 8. In a cluster, this times the number of nodes
    /// (times two with a reader URL) must stay below the database's connection limit.
    pub max_connections: u32,
    /// Seconds a request waits for a free connection, then gets a 503. Default 30.
    pub acquire_timeout_secs: u64,
    /// Seconds an idle connection is kept open. Default 600.
    pub idle_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            reader_url: None,
            password: None,
            max_connections: 8,
            acquire_timeout_secs: 30,
            idle_timeout_secs: 600,
        }
    }
}

/// The environment variables over `[filestore.s3]`, with the setting each one sets.
pub const S3_ENV: &[(&str, &str)] = &[
    ("STOWAGE_S3_BUCKET", "bucketName"),
    ("STOWAGE_S3_PATH", "path"),
    ("STOWAGE_S3_REGION", "region"),
    ("STOWAGE_S3_ENDPOINT", "endpoint"),
    ("STOWAGE_S3_PATH_STYLE", "usePathStyleAccess"),
    ("STOWAGE_CLOUDFRONT_DOMAIN", "cloudFrontDomainName"),
    ("STOWAGE_CLOUDFRONT_KEY_PAIR_ID", "cloudFrontKeyPairId"),
    (
        "STOWAGE_CLOUDFRONT_PRIVATE_KEY",
        "cloudFrontPrivateKey (or a secret reference)",
    ),
];

/// `url` with its password replaced by `password` (percent-encoded as a URL needs).
fn with_password(url: &str, password: &str, what: &str) -> Result<String, Error> {
    let mut parsed = url::Url::parse(url).map_err(|e| {
        Error::InvalidInput(format!(
            "{what} is not a URL like postgres://user@host/db: {e}"
        ))
    })?;
    if parsed.username().is_empty() {
        return Err(Error::InvalidInput(format!(
            "{what} names no user, so a password cannot go with it: postgres://USER@host/db"
        )));
    }
    parsed
        .set_password(Some(password))
        .map_err(|()| Error::InvalidInput(format!("{what} cannot carry a password")))?;
    Ok(parsed.to_string())
}

/// `[filestore]`: which binary-provider chain to build, with the parameters of each part.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilestoreConfig {
    /// The chain template, as in `binarystore.xml`. Default `file-system`.
    pub template: Template,
    /// Uploads at or above this size are spooled and sent as multipart uploads by the cloud
    /// templates. Default 250 MB.
    #[serde(rename = "maxFileSizeForDirectUpload")]
    pub max_file_size_for_direct_upload: ByteSize,
    /// Hex characters of the prefix folder of each binary key. Default 2.
    #[serde(rename = "rootFoldersNameLength")]
    pub root_folders_name_length: usize,
    #[serde(rename = "file-system")]
    pub file_system: FileSystemConfig,
    /// `[filestore.cache]`, the read cache of `cache-fs` (and of any template that enables it).
    pub cache: CacheConfig,
    /// `[filestore.s3]`, for the S3 templates (`s3-storage-v3-direct`, `s3-storage-v3`,
    /// `cluster-s3-storage-v3`).
    pub s3: Option<stowage_s3::S3Config>,
    /// `[filestore.eventual]`, the write-behind queue of the eventual templates
    /// (`s3-storage-v3`, `cluster-s3-storage-v3`, `google-storage`, `azure-blob-storage`, …).
    pub eventual: EventualConfig,
    /// `[filestore.google-storage]`, for the GCS templates (`google-storage`,
    /// `cluster-google-storage`, `google-storage-direct`) and GCS shard mounts.
    #[serde(rename = "google-storage")]
    pub google_storage: Option<stowage_gcs::GcsConfig>,
    /// `[filestore.azure-blob-storage]`, for the Azure templates (`azure-blob-storage`,
    /// `cluster-azure-blob-storage`, `azure-blob-storage-direct`) and Azure shard mounts.
    #[serde(rename = "azure-blob-storage")]
    pub azure_blob_storage: Option<stowage_azure::AzureConfig>,
    /// `[filestore.sharding]`, for `double-shards`, `redundant-shards` and `s3-sharding`.
    pub sharding: ShardingConfig,
}

impl Default for FilestoreConfig {
    fn default() -> Self {
        Self {
            template: Template::default(),
            max_file_size_for_direct_upload: ByteSize::mb(250),
            root_folders_name_length: 2,
            file_system: FileSystemConfig::default(),
            cache: CacheConfig::default(),
            s3: None,
            eventual: EventualConfig::default(),
            google_storage: None,
            azure_blob_storage: None,
            sharding: ShardingConfig::default(),
        }
    }
}

/// `[filestore.eventual]`: the durable upload queue. Names follow Artifactory's eventual
/// provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventualConfig {
    /// Queue directories; every upload is written to each (several small disks make the queue
    /// survive one disk's loss). Default `[<data_dir>/eventual]`.
    pub dirs: Vec<PathBuf>,
    /// Copies that must be fsynced before the upload is acknowledged; 0 means all `dirs`.
    /// Default 0. In the cluster templates it counts the copies across nodes, and 0 means
    /// `redundancy`.
    #[serde(rename = "lenientLimit")]
    pub lenient_limit: usize,
    /// Cluster templates only: copies of each queued binary, on the queue disks of as many
    /// nodes (the receiving node and live peers). Default 2.
    pub redundancy: usize,
    /// Uploads to the backend at once. Default 5.
    #[serde(rename = "numberOfThreads")]
    pub number_of_threads: usize,
    /// Milliseconds between scans of the queue (new uploads also wake it). Default 1000.
    #[serde(rename = "dispatcherInterval")]
    pub dispatcher_interval: u64,
    /// Longest wait, in seconds, between attempts at a binary the backend refused; attempts
    /// back off exponentially from 1 s. Default 300. (Stowage's own.)
    #[serde(rename = "maxRetryBackoffSecs")]
    pub max_retry_backoff_secs: u64,
    /// Seconds a stopping server keeps uploading its queue after its last request, before it
    /// exits (what is left stays queued for the next start). Set it where the queue disk
    /// goes away with the node, as an ECS task's EBS volume does, below the time the
    /// platform waits between SIGTERM and SIGKILL. Default 0: exit at once. (Stowage's own.)
    #[serde(rename = "drainOnShutdownSecs")]
    pub drain_on_shutdown_secs: u64,
}

impl Default for EventualConfig {
    fn default() -> Self {
        Self {
            dirs: Vec::new(),
            lenient_limit: 0,
            redundancy: 2,
            number_of_threads: 5,
            dispatcher_interval: 1000,
            max_retry_backoff_secs: 300,
            drain_on_shutdown_secs: 0,
        }
    }
}

/// `[filestore.sharding]`: the sharding provider and its mounts. Names and defaults follow
/// Artifactory's sharding and state-aware binary providers; times are in milliseconds as there.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ShardingConfig {
    /// Copies of each binary, at most the number of mounts. Default: 1 for `double-shards` and
    /// `s3-sharding`, 2 for `redundant-shards`.
    pub redundancy: Option<usize>,
    /// Copies that must be written for an upload to succeed; 0 means `redundancy`. Default 1.
    pub lenient_limit: usize,
    /// `roundRobin` (default), `freeSpace`, `percentageFreeSpace`, `zoneFreeSpace` or
    /// `zonePercentageFreeSpace`.
    pub write_behavior: WriteBehavior,
    /// `roundRobin` (default) or `zone` (this node's zones first, by `[cluster] crossZoneOrder`).
    pub read_behavior: ReadBehavior,
    /// How long a redundant write waits for a slow copy before cutting it off. Default 30000.
    pub concurrent_stream_wait_timeout: u64,
    /// Buffer, in KiB, each copy of a redundant write may fall behind by. Default 32.
    pub concurrent_stream_buffer_kb: usize,
    /// How long a free-space sample is used by the free-space behaviours. Default 3600000.
    pub free_space_sample_interval: u64,
    /// How long one balancing pass may run. Default 3600000.
    pub max_balancing_run_time: u64,
    /// Time between scheduled balancing passes on the primary node, besides the pass after
    /// each garbage collection; 0 turns the schedule off. Default 3600000. (Stowage's own.)
    pub balancing_interval: u64,
    /// How often a mount that failed is tried again, for mounts that do not set their own.
    /// Default 15000.
    pub check_period: u64,
    /// The mounts. Default for `double-shards` and `redundant-shards`: two directories,
    /// `<data_dir>/shard-fs-1` and `<data_dir>/shard-fs-2`.
    pub mounts: Vec<MountConfig>,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self {
            redundancy: None,
            lenient_limit: 1,
            write_behavior: WriteBehavior::default(),
            read_behavior: ReadBehavior::default(),
            concurrent_stream_wait_timeout: 30_000,
            concurrent_stream_buffer_kb: 32,
            free_space_sample_interval: 3_600_000,
            max_balancing_run_time: 3_600_000,
            balancing_interval: 3_600_000,
            check_period: 15_000,
            mounts: Vec::new(),
        }
    }
}

/// One mount of `[filestore.sharding]`: a directory or an S3 bucket (a state-aware provider).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountConfig {
    /// The mount's name in logs and `/api/storageinfo`.
    pub id: String,
    /// A local directory (a disk's mount point).
    pub dir: Option<PathBuf>,
    /// An S3 bucket: settings laid over `[filestore.s3]` (often just `bucketName`).
    pub s3: Option<toml::Table>,
    /// A GCS bucket: settings laid over `[filestore.google-storage]`.
    pub gcs: Option<toml::Table>,
    /// An Azure container: settings laid over `[filestore.azure-blob-storage]`.
    pub azure: Option<toml::Table>,
    /// The sharding zone.
    pub zone: Option<String>,
    /// `false`: read, balanced from and cleaned by garbage collection, never written.
    /// Default `true`.
    #[serde(default = "yes")]
    pub write_enabled: bool,
    /// Overrides `checkPeriod` for this mount.
    pub check_period: Option<u64>,
}

fn yes() -> bool {
    true
}

/// `[downloads]`: how redirecting repositories (`downloadRedirect` in a repository's JSON)
/// answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadsConfig {
    /// Clients whose `User-Agent` contains one of these (any case) get the bytes proxied
    /// instead of a redirect: tools that do not follow redirects. Default: none. A client can
    /// also ask with `?redirect=false`.
    pub proxy_user_agents: Vec<String>,
}

/// `[server]`: how long the HTTP server waits for a slow client before it closes the
/// connection, so that clients that stall cannot hold connections (or staged uploads) open.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a request's headers may take to arrive, whole. Default 30 (hyper's, and
    /// about nginx's `client_header_timeout`); at least 1.
    pub header_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request fails (and what it
    /// staged is removed). Default 60, nginx's `client_body_timeout`; at least 1.
    pub body_timeout_secs: u64,
    /// The context path the API also answers under, beside the root: `/artifactory` by
    /// default, where Artifactory's clients put every call; `""` for the root only. One
    /// segment; a repository of that name is shadowed (`artifactory` is reserved).
    pub context_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 30,
            body_timeout_secs: 60,
            context_path: "/artifactory".into(),
        }
    }
}

impl ServerConfig {
    /// The context path (`None`: the root only), or why it is not one.
    pub fn context_path(&self) -> Result<Option<String>, Error> {
        let path = self.context_path.trim_end_matches('/');
        if path.is_empty() {
            return Ok(None);
        }
        let name = path.strip_prefix('/').unwrap_or(path);
        if name.is_empty()
            || name == "api"
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::InvalidInput(format!(
                "[server] context_path {:?} must be one path segment of letters, digits, '-', \
                 '_' or '.' (not \"api\"), e.g. \"/artifactory\", or \"\" for none",
                self.context_path
            )));
        }
        Ok(Some(format!("/{name}")))
    }

    /// The timeouts, each at least one second.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.header_timeout_secs.max(1)),
            Duration::from_secs(self.body_timeout_secs.max(1)),
        )
    }
}

/// `[uploads]`: presigned upload sessions (object-store templates only).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Seconds a session, and its presigned URLs, stay valid. Default 3600; at most 7 days
    /// (SigV4's limit). What a session left behind is removed once it has expired.
    pub session_expiry_secs: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            session_expiry_secs: 3600,
        }
    }
}

/// `[filestore.file-system]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSystemConfig {
    /// Where binaries are stored. Default `<data_dir>/filestore`.
    #[serde(rename = "fileStoreDir")]
    pub file_store_dir: Option<PathBuf>,
}

/// `[filestore.cache]`: the `cache-fs` read cache. Names follow Artifactory's cache-fs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// Puts the cache in front of any template. Default: `true` for `cache-fs` (the cache in
    /// front of the filesystem provider), `false` for the others. (Stowage's own: Artifactory's
    /// templates fix it; a Lambda has no disk to cache on.)
    pub enabled: Option<bool>,
    /// Bytes the cache files may take on disk. Default 5 GB.
    pub max_cache_size: ByteSize,
    /// Binaries larger than this are never cached. Default 1 GB.
    pub max_file_size_limit: ByteSize,
    /// Uploads go to the store only, not into the cache. Default `false`.
    pub skip_during_upload: bool,
    /// Where the cache files live. Default `<data_dir>/cache`.
    pub cache_provider_dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            max_cache_size: ByteSize::gb(5),
            max_file_size_limit: ByteSize::gb(1),
            skip_during_upload: false,
            cache_provider_dir: None,
        }
    }
}

/// `[trashcan]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrashcanConfig {
    /// Whether deletes go to the trash (default) or remove at once.
    pub enabled: bool,
    /// Days a deleted artifact stays restorable; garbage collection purges older ones.
    /// Default 14, as in Artifactory.
    #[serde(rename = "retentionPeriodDays")]
    pub retention_period_days: u32,
}

impl Default for TrashcanConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_period_days: 14,
        }
    }
}

/// `[gc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds a stored binary written or deployed again recently is left alone by garbage
    /// collection, whether or not metadata refers to it yet (a deploy stores bytes before it
    /// records them). Default 3600.
    pub orphan_grace_secs: u64,
    /// Seconds between scheduled garbage collections, run by the primary node; 0 turns the
    /// schedule off. Default 14400 (every 4 hours, as Artifactory's default cron).
    pub interval_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            orphan_grace_secs: 3600,
            interval_secs: 14_400,
        }
    }
}

/// `[standby]`: active/passive. A passive Stowage reads a replica of the active's database
/// (PostgreSQL streaming replication, an Aurora global database), serves what it holds, refuses
/// writes (the replica does), and copies the binaries its filestore lacks from the active's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandbyConfig {
    /// `active` (default) or `passive`.
    pub role: Role,
    /// Where a passive reads the active's binaries: its filestore directory, or
    /// `s3://bucket/path` (the active's bucket and key prefix, with `[filestore.s3]`'s
    /// endpoint and credentials).
    pub source: Option<String>,
    /// Seconds between a passive's replication passes. Default 30.
    pub interval_secs: u64,
    /// Bytes a second a passive copies at most. Default 100MB.
    pub rate: ByteSize,
}

/// A node's role in an active/passive pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Active,
    Passive,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        Self {
            role: Role::Active,
            source: None,
            interval_secs: 30,
            rate: ByteSize::mb(100),
        }
    }
}

/// `[scrub]`: the primary's scheduled scrub (what `stowage verify` does).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrubConfig {
    /// Seconds between scrubs of every copy of every binary, run by the primary node; 0 turns
    /// the schedule off. Default 604800 (weekly).
    pub interval_secs: u64,
    /// Bytes a second a scheduled scrub reads at most, so that clients keep the disks.
    /// Default 50MB.
    pub rate: ByteSize,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            interval_secs: 604_800,
            rate: ByteSize::mb(50),
        }
    }
}

/// `[security]`: access tokens' lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Seconds a token lives when its creator does not say. Default 31536000 (a year).
    pub token_default_expiry_secs: u64,
    /// The longest a token may live, in seconds; 0: no limit (and tokens that never expire,
    /// `expires_in = 0`, are allowed). Default 0.
    pub token_max_expiry_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            token_default_expiry_secs: 365 * 86_400,
            token_max_expiry_secs: 0,
        }
    }
}

/// `[cluster]`: how nodes sharing one database find each other and agree.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id. Default: random at each start.
    pub node_id: Option<String>,
    /// The address other nodes and operators see for this node. Default: the listen address.
    pub address: Option<String>,
    /// Seconds between heartbeats. Default 5.
    pub heartbeat_secs: u64,
    /// Seconds the primary's lease lasts; a primary that stops heart-beating is replaced
    /// within this plus one heartbeat. Default 15.
    pub primary_lease_secs: u64,
    /// Seconds a lock's lease lasts (held locks are renewed); a dead node's locks free
    /// themselves after it. Default 30.
    pub lock_lease_secs: u64,
    /// Seconds a request waits for a lock before a 503. Default 30.
    pub lock_wait_secs: u64,
    /// This node's sharding zones, nearest first, comma-separated (`"us-east-1,us-east-2"`),
    /// as Artifactory's `shared.node.crossZoneOrder`. Used by the zone read and write
    /// behaviours. Default: the zones in the order the mounts name them.
    #[serde(rename = "crossZoneOrder")]
    pub cross_zone_order: String,
    /// This node's zone, for the cluster queue: copies of an upload go to nodes of other zones
    /// first. Default: none.
    pub zone: String,
    /// The cluster's secret (at least 16 characters, the same on every node), or a reference
    /// to it (`file:PATH`, `secretsmanager:ID[#field]`, `ssm:NAME`): the only credential the
    /// nodes' internal peer endpoint takes. Required by the cluster templates.
    /// `STOWAGE_CLUSTER_SECRET`.
    pub secret: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            address: None,
            heartbeat_secs: 5,
            primary_lease_secs: 15,
            lock_lease_secs: 30,
            lock_wait_secs: 30,
            cross_zone_order: String::new(),
            zone: String::new(),
            secret: None,
        }
    }
}

impl Config {
    /// Reads `path` (if given; else the TOML text of `STOWAGE_CONFIG_TOML`, if set), then
    /// applies `STOWAGE_*` variables from `env`.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::InvalidInput(format!(
                        "cannot read configuration {}: {e}",
                        path.display()
                    ))
                })?;
                Self::from_toml(&text)
                    .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?
            }
            // A Lambda function has no configuration file: the Terraform module passes the
            // same TOML in a variable.
            None => match env("STOWAGE_CONFIG_TOML") {
                Some(text) => Self::from_toml(&text)
                    .map_err(|e| Error::InvalidInput(format!("STOWAGE_CONFIG_TOML: {e}")))?,
                None => Self::default(),
            },
        };
        config.apply_env(env)?;
        config.server.context_path()?;
        Ok(config)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::InvalidInput(format!("invalid configuration: {e}")))
    }

    /// Applies `STOWAGE_LISTEN`, `STOWAGE_DATA_DIR`, `STOWAGE_DATABASE_URL`,
    /// `STOWAGE_DATABASE_READER_URL`, `STOWAGE_DATABASE_PASSWORD`, `STOWAGE_BASE_URL`,
    /// `STOWAGE_ANONYMOUS_READ`, `STOWAGE_FILESTORE_TEMPLATE` and the `[filestore.s3]` ones of
    /// [`S3_ENV`].
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        if let Some(v) = env("STOWAGE_LISTEN") {
            self.listen = v.parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "STOWAGE_LISTEN={v:?} is not an address like 127.0.0.1:8081"
                ))
            })?;
        }
        if let Some(v) = env("STOWAGE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("STOWAGE_DATABASE_URL") {
            self.database.url = Some(v);
        }
        if let Some(v) = env("STOWAGE_DATABASE_READER_URL") {
            self.database.reader_url = Some(v);
        }
        if let Some(v) = env("STOWAGE_DATABASE_PASSWORD") {
            self.database.password = Some(v);
        }
        self.apply_s3_env(&env)?;
        if let Some(v) = env("STOWAGE_CLUSTER_SECRET") {
            self.cluster.secret = Some(v);
        }
        if let Some(v) = env("STOWAGE_BASE_URL") {
            self.base_url = Some(v);
        }
        if let Some(v) = env("STOWAGE_ANONYMOUS_READ") {
            self.anonymous_read = match v.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "STOWAGE_ANONYMOUS_READ={v:?} must be true or false"
                    )));
                }
            };
        }
        if let Some(v) = env("STOWAGE_FILESTORE_TEMPLATE") {
            self.filestore.template = v
                .parse()
                .map_err(|e| Error::InvalidInput(format!("STOWAGE_FILESTORE_TEMPLATE: {e}")))?;
        }
        Ok(())
    }

    /// `[filestore.s3]` settings from [`S3_ENV`] (what the Terraform module gives a Lambda
    /// function, which has no configuration file); any of them creates the section.
    fn apply_s3_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        for (name, _) in S3_ENV {
            let Some(v) = env(name) else { continue };
            let s3 = self.filestore.s3.get_or_insert_with(Default::default);
            match *name {
                "STOWAGE_S3_BUCKET" => s3.bucket_name = v,
                "STOWAGE_S3_PATH" => s3.path = v,
                "STOWAGE_S3_REGION" => s3.region = Some(v),
                "STOWAGE_S3_ENDPOINT" => s3.endpoint = Some(v),
                "STOWAGE_S3_PATH_STYLE" => {
                    s3.use_path_style_access = match v.as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(Error::InvalidInput(format!(
                                "{name}={v:?} must be true or false"
                            )));
                        }
                    }
                }
                "STOWAGE_CLOUDFRONT_DOMAIN" => s3.cloud_front_domain_name = Some(v),
                "STOWAGE_CLOUDFRONT_KEY_PAIR_ID" => s3.cloud_front_key_pair_id = Some(v),
                "STOWAGE_CLOUDFRONT_PRIVATE_KEY" => s3.cloud_front_private_key = Some(v),
                _ => {}
            }
        }
        Ok(())
    }

    /// Replaces every secret reference (the database password, the CloudFront private key)
    /// with the secret, fetched once (see [`crate::secrets`]), and puts the password into the
    /// database URLs.
    pub async fn resolve_secrets(
        &mut self,
        secrets: &crate::secrets::Secrets,
    ) -> Result<(), Error> {
        if let Some(s3) = &mut self.filestore.s3 {
            s3.cloud_front_private_key = secrets
                .resolve_opt(
                    "filestore.s3.cloudFrontPrivateKey",
                    s3.cloud_front_private_key.as_deref(),
                )
                .await?;
        }
        self.cluster.secret = secrets
            .resolve_opt("cluster.secret", self.cluster.secret.as_deref())
            .await?;
        let Some(reference) = self.database.password.take() else {
            return Ok(());
        };
        let password = secrets.resolve("database.password", &reference).await?;
        let database = &mut self.database;
        let Some(url) = &database.url else {
            return Err(Error::InvalidInput(
                "database.password (STOWAGE_DATABASE_PASSWORD) is set, but the database is the \
                 embedded SQLite file: set database.url to a postgres:// or mysql:// URL"
                    .into(),
            ));
        };
        database.url = Some(with_password(url, &password, "database.url")?);
        if let Some(reader) = &database.reader_url {
            database.reader_url = Some(with_password(reader, &password, "database.reader_url")?);
        }
        Ok(())
    }

    /// The metadata pools' settings.
    pub fn pool_settings(&self) -> stowage_metadata::PoolSettings {
        stowage_metadata::PoolSettings {
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_secs(self.database.acquire_timeout_secs),
            idle_timeout: Duration::from_secs(self.database.idle_timeout_secs),
            reader_url: self.database.reader_url.clone(),
            ..stowage_metadata::PoolSettings::default()
        }
    }

    /// The database URL without its password, for logs.
    pub fn database_url_for_display(&self) -> String {
        let url = self.database_url();
        match url::Url::parse(&url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => url,
        }
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("stowage.db").display()))
    }

    /// The filesystem provider's directory.
    pub fn file_store_dir(&self) -> PathBuf {
        self.filestore
            .file_system
            .file_store_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("filestore"))
    }

    /// The eventual queue's directories.
    pub fn eventual_dirs(&self) -> Vec<PathBuf> {
        if self.filestore.eventual.dirs.is_empty() {
            vec![self.data_dir.join("eventual")]
        } else {
            self.filestore.eventual.dirs.clone()
        }
    }

    /// What the service needs of this configuration.
    pub fn service_settings(&self) -> Settings {
        Settings {
            locks: LockSettings {
                lease: Duration::from_secs(self.cluster.lock_lease_secs),
                wait: Duration::from_secs(self.cluster.lock_wait_secs),
            },
            proxy_user_agents: self.downloads.proxy_user_agents.clone(),
            session_expiry: Duration::from_secs(self.uploads.session_expiry_secs),
            trash_enabled: self.trashcan.enabled,
            trash_retention: Duration::from_secs(
                u64::from(self.trashcan.retention_period_days) * 86_400,
            ),
            orphan_grace: Duration::from_secs(self.gc.orphan_grace_secs),
            anonymous_read: self.anonymous_read,
            tokens: TokenSettings {
                default_expiry: Duration::from_secs(self.security.token_default_expiry_secs),
                max_expiry: (self.security.token_max_expiry_secs > 0)
                    .then(|| Duration::from_secs(self.security.token_max_expiry_secs)),
            },
            cluster_key_sha256: self.cluster.secret.as_deref().map(|secret| {
                <sha2::Sha256 as sha2::Digest>::digest(secret.trim().as_bytes()).into()
            }),
            peer_liveness: Duration::from_secs(self.cluster.heartbeat_secs.max(1) * 3),
        }
    }

    /// How this node takes part in the cluster.
    pub fn cluster_settings(&self) -> ClusterSettings {
        ClusterSettings {
            heartbeat: Duration::from_secs(self.cluster.heartbeat_secs),
            primary_lease: Duration::from_secs(self.cluster.primary_lease_secs),
            zone: self.cluster.zone.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample of DESIGN.md must keep loading as written.
    const DESIGN_SAMPLE: &str = r#"
listen = "127.0.0.1:8081"
data_dir = "stowage-data"

[database]
url = "postgres://stowage@127.0.0.1:5432/stowage"   # sqlite://…, postgres://…, mysql://…
max_connections = 20

[filestore]
template = "s3-storage-v3-direct"
maxFileSizeForDirectUpload = "250MB"

[filestore.s3]
bucketName = "stowage-binaries"
endpoint = "http://127.0.0.1:4566"
region = "us-east-1"
usePathStyleAccess = true
path = "filestore"

[filestore.file-system]
fileStoreDir = "/var/opt/stowage/filestore"

[filestore.google-storage]
bucketName = "stowage-binaries"
endpoint = "http://127.0.0.1:4443"
credentialsFile = "service-account.json"

[filestore.azure-blob-storage]
accountName = "devstoreaccount1"
accountKey = "…"
containerName = "stowage"
endpoint = "http://127.0.0.1:10000/devstoreaccount1"

[filestore.cache]
maxCacheSize = "5GB"

[filestore.sharding]
redundancy = 2
lenientLimit = 1
writeBehavior = "percentageFreeSpace"
mounts = [
  { id = "shard-1", dir = "/mnt/shard1", zone = "a" },
  { id = "shard-2", dir = "/mnt/shard2", zone = "b" },
]
"#;

    #[test]
    fn the_context_path_is_one_segment_or_none() {
        let with = |p: &str| ServerConfig {
            context_path: p.into(),
            ..ServerConfig::default()
        };
        assert_eq!(
            ServerConfig::default().context_path().expect("default"),
            Some("/artifactory".to_string())
        );
        assert_eq!(with("").context_path().expect("none"), None);
        assert_eq!(
            with("/art/").context_path().expect("art"),
            Some("/art".into())
        );
        for bad in ["/a/b", "/api", "/sp ace"] {
            assert!(with(bad).context_path().is_err(), "{bad}");
        }
        assert!(Config::from_toml("[server]\ncontext_path = \"\"\n").is_ok());
    }

    #[test]
    fn design_sample_loads() {
        let c = Config::from_toml(DESIGN_SAMPLE).expect("the DESIGN.md sample must load");
        assert_eq!(c.database.max_connections, 20);
        assert_eq!(c.filestore.template, Template::S3StorageV3Direct);
        assert_eq!(
            c.filestore.max_file_size_for_direct_upload.as_u64(),
            250_000_000
        );
        assert_eq!(c.filestore.cache.max_cache_size.as_u64(), 5_000_000_000);
        assert_eq!(
            c.file_store_dir(),
            PathBuf::from("/var/opt/stowage/filestore")
        );
    }

    #[test]
    fn defaults_and_environment() {
        let c = Config::load(None, |k| match k {
            "STOWAGE_LISTEN" => Some("127.0.0.1:9999".into()),
            "STOWAGE_DATA_DIR" => Some("/tmp/x".into()),
            _ => None,
        })
        .expect("load");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.database_url(), "sqlite:///tmp/x/stowage.db");
        assert_eq!(c.file_store_dir(), PathBuf::from("/tmp/x/filestore"));
        assert!(!c.anonymous_read);
        let bad = Config::load(None, |k| (k == "STOWAGE_LISTEN").then(|| "nope".into()));
        assert!(
            bad.expect_err("bad address")
                .to_string()
                .contains("STOWAGE_LISTEN")
        );
        let typo = Config::from_toml("listn = \"x\"").expect_err("unknown key");
        assert!(typo.to_string().contains("listn"), "{typo}");
    }

    #[tokio::test]
    async fn a_function_is_configured_by_its_environment_with_secrets_by_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("db-password");
        std::fs::write(&password_file, "p@ss/word\n").expect("write");
        let reference = format!("file:{}", password_file.display());
        let mut c = Config::load(None, |k| match k {
            "STOWAGE_DATABASE_URL" => Some("postgres://stowage@db.internal:5432/stowage".into()),
            "STOWAGE_DATABASE_READER_URL" => Some("postgres://stowage@ro.internal/stowage".into()),
            "STOWAGE_DATABASE_PASSWORD" => Some(reference.clone()),
            "STOWAGE_FILESTORE_TEMPLATE" => Some("s3-storage-v3-direct".into()),
            "STOWAGE_S3_BUCKET" => Some("binaries".into()),
            "STOWAGE_S3_PATH_STYLE" => Some("true".into()),
            "STOWAGE_CLOUDFRONT_KEY_PAIR_ID" => Some("K2JCJMDEHXQW5F".into()),
            _ => None,
        })
        .expect("load");
        let s3 = c
            .filestore
            .s3
            .clone()
            .expect("[filestore.s3] from the environment");
        assert_eq!(s3.bucket_name, "binaries");
        assert!(s3.use_path_style_access);
        assert_eq!(
            s3.cloud_front_key_pair_id.as_deref(),
            Some("K2JCJMDEHXQW5F")
        );
        c.resolve_secrets(&crate::secrets::Secrets::default())
            .await
            .expect("resolve");
        assert_eq!(
            c.database_url(),
            "postgres://stowage:p%40ss%2Fword@db.internal:5432/stowage"
        );
        assert_eq!(
            c.database.reader_url.as_deref(),
            Some("postgres://stowage:p%40ss%2Fword@ro.internal/stowage")
        );
        assert_eq!(
            c.database_url_for_display(),
            "postgres://stowage:***@db.internal:5432/stowage"
        );

        let mut sqlite = Config::load(None, |k| {
            (k == "STOWAGE_DATABASE_PASSWORD").then(|| "x".to_string())
        })
        .expect("load");
        let e = sqlite
            .resolve_secrets(&crate::secrets::Secrets::default())
            .await
            .expect_err("a password for SQLite");
        assert!(e.to_string().contains("SQLite"), "{e}");
        let bad = Config::load(None, |k| {
            (k == "STOWAGE_S3_PATH_STYLE").then(|| "maybe".into())
        });
        assert!(
            bad.expect_err("bad bool")
                .to_string()
                .contains("STOWAGE_S3_PATH_STYLE")
        );
    }
}
