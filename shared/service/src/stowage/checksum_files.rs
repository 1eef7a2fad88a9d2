//! Checksum files (`x.jar.sha1`, `.sha256`, `.md5`), as Maven and Gradle fetch and deploy
//! them. A GET of one that is not stored is answered from the metadata of `x.jar`. A deploy
//! of one just after `x.jar` stores nothing: its checksum is held against `x.jar`'s and
//! recorded as `x.jar`'s original checksum, or refused when it differs, following the
//! repository's checksum policy (Artifactory's `checksumPolicyType`: `client-checksums`, the
//! default, refuses a mismatch; `server-generated-checksums` ignores what clients send).

use stowage_core::{ArtifactPath, Error, RepoKey, Result};
use stowage_metadata::ArtifactRecord;

use super::Stowage;
use crate::locks::LockName;
use crate::security::{Action, Caller};

/// The longest checksum file read as one (a hex digest, perhaps a file name after it).
pub const MAX_CHECKSUM_FILE: u64 = 1024;

/// Which digest a checksum file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    Sha1,
    Sha256,
    Md5,
}

impl ChecksumKind {
    /// The file `path` names the checksum of, and which, if its name ends in `.sha1`,
    /// `.sha256` or `.md5` after a name of its own.
    pub fn of_path(path: &ArtifactPath) -> Option<(ArtifactPath, ChecksumKind)> {
        let name = path.as_str();
        let (kind, suffix) = [
            (ChecksumKind::Sha1, ".sha1"),
            (ChecksumKind::Sha256, ".sha256"),
            (ChecksumKind::Md5, ".md5"),
        ]
        .into_iter()
        .find(|(_, suffix)| name.ends_with(suffix))?;
        let file = ArtifactPath::parse(&name[..name.len() - suffix.len()]).ok()?;
        (!file.is_root() && !file.name().is_empty()).then_some((file, kind))
    }

    fn name(self) -> &'static str {
        match self {
            ChecksumKind::Sha1 => "SHA-1",
            ChecksumKind::Sha256 => "SHA-256",
            ChecksumKind::Md5 => "MD5",
        }
    }

    /// The digest of `record` this kind names, in hex.
    pub fn of_record(self, record: &ArtifactRecord) -> String {
        match self {
            ChecksumKind::Sha1 => record.checksums.sha1.to_hex(),
            ChecksumKind::Sha256 => record.checksums.sha256.to_hex(),
            ChecksumKind::Md5 => record.checksums.md5.to_hex(),
        }
    }
}

/// What a checksum file's deploy did.
#[derive(Debug)]
pub enum ChecksumDeploy {
    /// It was held against the file it names (and recorded as its original checksum when the
    /// policy trusts clients): nothing new is stored.
    Checked(Box<ArtifactRecord>),
    /// No file is recorded at the path it names: it is to be stored as a file of its own.
    NoFile,
}

impl Stowage {
    /// The checksum file `path` answered from the metadata of the file it names, when no such
    /// file is stored (`None`: not a checksum file's name, or no file to answer for).
    pub async fn checksum_file(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Option<String>> {
        let Some((file, kind)) = ChecksumKind::of_path(path) else {
            return Ok(None);
        };
        self.security
            .require(caller, Action::Read, repo.as_str(), file.as_str())
            .await?;
        Ok(self
            .metadata
            .artifact(repo, &file)
            .await?
            .map(|record| kind.of_record(&record)))
    }

    /// Deploys the checksum file `path` whose content is `text`: see the module's words.
    pub async fn deploy_checksum_file(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        text: &[u8],
    ) -> Result<ChecksumDeploy> {
        let Some((file, kind)) = ChecksumKind::of_path(path) else {
            return Ok(ChecksumDeploy::NoFile);
        };
        self.security
            .require(caller, Action::Deploy, repo.as_str(), path.as_str())
            .await?;
        let repository = self.require_repository(repo).await?;
        let Some(record) = self.metadata.artifact(repo, &file).await? else {
            return Ok(ChecksumDeploy::NoFile);
        };
        let trusts_clients = repository
            .config
            .get("checksumPolicyType")
            .and_then(|v| v.as_str())
            .is_none_or(|p| p != "server-generated-checksums");
        if !trusts_clients {
            return Ok(ChecksumDeploy::Checked(Box::new(record)));
        }
        // The digest is the first word (`sha1sum` writes the file name after it).
        let sent = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let actual = kind.of_record(&record);
        if sent != actual {
            let shown: String = sent.chars().take(128).collect();
            return Err(Error::Conflict(format!(
                "checksum mismatch: {repo}/{path} says the {} of {repo}/{file} is {shown:?}, \
                 but it is {actual}; nothing was stored (deploy the file again, or set the \
                 repository's checksumPolicyType to server-generated-checksums)",
                kind.name()
            )));
        }
        let recorded = self
            .locked_write(vec![LockName::path(repo, &file)], || {
                self.metadata
                    .record_original_checksum(repo, &file, kind.column(), &actual)
            })
            .await?;
        Ok(ChecksumDeploy::Checked(Box::new(
            recorded.unwrap_or(record),
        )))
    }
}

impl ChecksumKind {
    fn column(self) -> stowage_metadata::OriginalChecksum {
        match self {
            ChecksumKind::Sha1 => stowage_metadata::OriginalChecksum::Sha1,
            ChecksumKind::Sha256 => stowage_metadata::OriginalChecksum::Sha256,
            ChecksumKind::Md5 => stowage_metadata::OriginalChecksum::Md5,
        }
    }
}
