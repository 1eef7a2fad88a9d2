//! Stowage's metadata: repositories, artifacts (repo + path → binary), binaries (digests and
//! sizes), properties, trash and tokens, kept in SQL through sqlx. SQLite is the embedded
//! default; every query here sticks to SQL that PostgreSQL and MySQL also speak, so that the
//! Aurora engines can follow with their own migrations. It stores no bytes: binaries live in a
//! `BinaryProvider`.

pub mod cache;
pub mod immutable;
mod model;
mod store;

pub use immutable::ImmutablePaths;
pub use model::{
    ArtifactRecord, AuditEvent, AuditRecord, BinaryRecord, ChecksumLookup, DownloadStats,
    FolderChild, FolderListing, FolderRecord, GroupRecord, ListedEntry, ListedFile, NewArtifact,
    NodeRecord, PathCheck, PermissionRecord, Relocation, RepoSummary, Repository, SecuritySnapshot,
    StorageSummary, TakenOut, TokenRecord, TrashRecord, UploadSession, UserRecord,
};
pub use store::{
    Engine, ExportSummary, GENESIS, GroupCommitStats, ListKind, Metadata, NOT_EXPORTED,
    OriginalChecksum, PoolSettings, READ_ONLY, exported_columns, for_each_row, is_conflict,
    retry_conflicts,
};

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
