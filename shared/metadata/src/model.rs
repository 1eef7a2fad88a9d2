//! The records the metadata layer reads and writes. Plain data: no SQL, no I/O.

use stowage_core::{ArtifactPath, Checksums, ExpectedChecksums, Md5, RepoKey, Sha1, Sha256};

/// A repository and its configuration (Artifactory's repository JSON, minus what Stowage
/// interprets itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub key: RepoKey,
    /// `local` for now.
    pub rclass: String,
    pub package_type: String,
    pub description: String,
    /// Every other field of the configuration JSON, kept as given.
    pub config: serde_json::Value,
    pub created_ms: i64,
}

/// A stored binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryRecord {
    pub checksums: Checksums,
    pub size: u64,
    pub created_ms: i64,
}

/// Which checksum to look a binary up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumLookup {
    Sha256(Sha256),
    Sha1(Sha1),
    Md5(Md5),
}

/// An artifact to record after its binary was stored.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub repo: RepoKey,
    pub path: ArtifactPath,
    pub checksums: Checksums,
    pub size: u64,
    pub by: String,
    /// Properties to set (replacing any the path had).
    pub properties: Vec<(String, String)>,
    /// The checksums the client declared (Artifactory's `originalChecksums`).
    pub original: ExpectedChecksums,
}

/// An artifact as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub id: i64,
    pub repo: RepoKey,
    pub path: ArtifactPath,
    pub checksums: Checksums,
    pub size: u64,
    pub created_ms: i64,
    pub created_by: String,
    pub modified_ms: i64,
    pub modified_by: String,
    /// The checksums the client declared when it deployed (or in a checksum file after).
    pub original: ExpectedChecksums,
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderChild {
    pub name: String,
    pub folder: bool,
}

/// A folder: an entry of its own, created explicitly or by a deploy below it, and kept when
/// the files below it go (until it is deleted). The root of a repository is a folder too,
/// with the repository's times and no row of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRecord {
    /// The folder's row; `None` for a repository's root.
    pub id: Option<i64>,
    pub repo: RepoKey,
    pub path: ArtifactPath,
    pub created_ms: i64,
    pub created_by: String,
    pub modified_ms: i64,
    pub modified_by: String,
}

/// A folder and its direct children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderListing {
    pub folder: FolderRecord,
    /// Direct children, sorted by name.
    pub children: Vec<FolderChild>,
}

/// An entry of a file list (`?list`): a file, or a folder when folders are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    pub path: ArtifactPath,
    /// Files only.
    pub file: Option<ListedFile>,
    pub modified_ms: i64,
}

/// What a file list says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedFile {
    pub size: u64,
    pub sha1: Sha1,
    pub sha256: Sha256,
}

/// What a delete took out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakenOut {
    pub files: u64,
    pub folders: u64,
}

impl TakenOut {
    /// Whether there was nothing at the path.
    pub fn is_nothing(&self) -> bool {
        self.files == 0 && self.folders == 0
    }
}

/// How often an artifact was downloaded, and when last (Artifactory's `?stats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DownloadStats {
    pub downloads: u64,
    /// 0 when never.
    pub last_ms: i64,
    pub last_by: String,
}

/// A deleted artifact waiting in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashRecord {
    pub repo: RepoKey,
    pub path: ArtifactPath,
    pub sha256: Sha256,
    pub size: u64,
    pub deleted_ms: i64,
    pub deleted_by: String,
}

/// Counts and sizes for `/api/storageinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageSummary {
    pub binaries_count: u64,
    pub binaries_size: u64,
    pub artifacts_count: u64,
    pub artifacts_size: u64,
    pub trash_count: u64,
    pub folders_count: u64,
    pub repositories: Vec<RepoSummary>,
}

/// One repository's share of the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    pub key: RepoKey,
    pub package_type: String,
    pub files_count: u64,
    pub folders_count: u64,
    pub used_space: u64,
}

/// A registered node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The node's zone (`[cluster] zone`), empty when none is set.
    pub zone: String,
}

/// A presigned upload session: the client sends `size` bytes hashing to `sha256` straight to
/// object storage, then completes the session to deploy them at `repo`/`path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: String,
    pub repo: RepoKey,
    pub path: ArtifactPath,
    pub sha256: Sha256,
    pub size: u64,
    /// The object store's multipart upload, for large files.
    pub multipart_upload_id: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A move or a copy of a file, or of every file below a folder (metadata only).
#[derive(Clone, Copy)]
pub struct Relocation<'a> {
    pub src_repo: &'a RepoKey,
    pub src: &'a ArtifactPath,
    pub dst_repo: &'a RepoKey,
    pub dst: &'a ArtifactPath,
    /// Recorded as the new entries' `createdBy`/`modifiedBy`.
    pub by: &'a str,
    /// Copy (the source stays) rather than move.
    pub copy: bool,
    /// Check and count only; nothing changes.
    pub dry: bool,
    /// Asked of every source file, then of every target, in the transaction (a caller's
    /// permissions): one refusal, and nothing changes.
    pub check_source: PathCheck<'a>,
    pub check_target: PathCheck<'a>,
    /// Asked of a target that holds a file with other bytes (an overwrite).
    pub check_overwrite: PathCheck<'a>,
}

impl std::fmt::Debug for Relocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relocation")
            .field("src", &format_args!("{}/{}", self.src_repo, self.src))
            .field("dst", &format_args!("{}/{}", self.dst_repo, self.dst))
            .field("by", &self.by)
            .field("copy", &self.copy)
            .field("dry", &self.dry)
            .finish_non_exhaustive()
    }
}

/// A check of one file, `(repository, path)`, made inside a write's transaction.
pub type PathCheck<'a> = &'a (dyn Fn(&RepoKey, &str) -> stowage_core::Result<()> + Send + Sync);

/// A user: credentials are an argon2id password hash (none: tokens only) and access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub email: String,
    /// The PHC string of the password's argon2id hash; never the password.
    pub password_hash: Option<String>,
    pub admin: bool,
    pub disabled: bool,
    pub created_ms: i64,
    /// The groups the user is a member of, by name.
    pub groups: Vec<String>,
}

/// A group of users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub name: String,
    pub description: String,
    /// New users join it when they are created.
    pub auto_join: bool,
    pub created_ms: i64,
    pub members: Vec<String>,
}

/// A permission target, as the JSON of Artifactory's v2 permission API (`body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRecord {
    pub name: String,
    pub body: String,
    pub created_ms: i64,
}

/// An access token (its secret is never stored: only its SHA-256, not kept here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    /// What the token may do: `applied-permissions/user`, `applied-permissions/admin`, or
    /// `applied-permissions/groups:a,b`.
    pub scope: String,
    pub description: String,
    pub created_ms: i64,
    /// `None`: never expires.
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    /// Whether a refresh token can replace it.
    pub refreshable: bool,
}

/// Everything access decisions are made from, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecuritySnapshot {
    pub users: Vec<UserRecord>,
    pub groups: Vec<GroupRecord>,
    pub permissions: Vec<PermissionRecord>,
}

/// An event for the audit trail (never a secret in any field).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    pub node: String,
    /// Who: a user name, `admin`, `anonymous`.
    pub actor: String,
    /// From where: the client's address, `-` when unknown, `local` for the CLI.
    pub source: String,
    /// What: `deploy`, `delete`, `move`, `user.put`, `token.create`, `login.failed`, …
    pub action: String,
    /// What it was done to: `repo/path`, a user, a token id.
    pub target: String,
    pub detail: String,
}

/// An entry of the audit trail, chained to the one before by `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The hash this entry must carry: SHA-256 over the previous hash and every field, each
    /// length-prefixed (so no two different entries hash alike by shifting text between
    /// fields).
    pub fn expected_hash(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let seq = self.seq.to_string();
        let at = self.at_ms.to_string();
        for field in [
            self.prev_hash.as_str(),
            &seq,
            &at,
            &self.event.node,
            &self.event.actor,
            &self.event.source,
            &self.event.action,
            &self.event.target,
            &self.event.detail,
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        hex::encode(h.finalize())
    }
}
