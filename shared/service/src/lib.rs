//! Stowage's domain service, the one door to state: every read and write of metadata and
//! binaries, from every entry point (the HTTP API, the function binaries, the CLI), goes
//! through [`Stowage`]. It takes the path locks, retries conflicting commits, decides downloads
//! (bytes or a signed redirect) and runs the cluster-wide tasks. It knows no HTTP, Lambda or
//! AWS secrets crate: callers hand it parsed, typed requests.

pub mod auth;
pub mod backup;
pub mod cluster;
mod filestore;
pub mod locks;
pub mod security;
mod settings;
mod stowage;
pub mod tasks;

pub use cluster::{Cluster, ClusterSettings, ClusterStatus};
pub use filestore::Filestore;
pub use locks::LockSettings;
pub use settings::Settings;
pub use stowage::backup::{BackupOptions, BackupReport, RestoreReport};
pub use stowage::peer_queue::PeerQueueDoor;
pub use stowage::progress::{CopyProgress, ProgressCell, TaskStart};
pub use stowage::prune::PruneReport;
pub use stowage::scrub::{ScrubReport, Unrepaired};
pub use stowage::standby::StandbyStatus;
pub use stowage::{
    ByteRange, ChecksumDeploy, ChecksumKind, Conditions, DeployRequest, Download, DownloadRequest,
    GcProgress, GcReport, Item, ListPage, ListedPage, MAX_CHECKSUM_FILE, NodeFigures, Properties,
    Readiness, RedirectPolicy, RelocateRequest, SessionStart, ShardsReport, StorageReport, Stowage,
    etag,
};
