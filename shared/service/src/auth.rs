//! The admin token created on first start (only its SHA-256 is stored; the secret is printed
//! once and written 0600 to `<data_dir>/admin.token`), compared in constant time. Which
//! credentials a request carries and what the caller may do is `crate::security`'s.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stowage_core::Error;
use stowage_metadata::Metadata;
use subtle::ConstantTimeEq;

/// Name of the admin token in the tokens table, and the basic-auth user name.
pub const ADMIN: &str = "admin";
/// File name of the admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token's hash.
#[derive(Clone)]
pub struct Auth {
    admin_token_sha256: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// What the first start created.
#[derive(Debug)]
pub struct NewAdminToken {
    pub token: String,
    pub file: PathBuf,
}

/// Whether `secret` (as a header value may carry it, spaces around) hashes to
/// `sha256_of_secret`, compared in constant time: the admin token's and the cluster secret's
/// check.
pub(crate) fn secret_matches(secret: &str, sha256_of_secret: &[u8; 32]) -> bool {
    bool::from(sha256(secret.trim()).ct_eq(sha256_of_secret))
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Auth {
    /// Loads the admin token's hash, creating the token on first start.
    pub async fn init(
        metadata: &Metadata,
        data_dir: &Path,
    ) -> Result<(Self, Option<NewAdminToken>), Error> {
        let mut created = None;
        let stored = match metadata.token_hash(ADMIN).await? {
            Some(hash) => hash,
            None => {
                let token = format!("stw_{}", hex::encode(rand::random::<[u8; 32]>()));
                let file = data_dir.join(ADMIN_TOKEN_FILE);
                write_secret_file(&file, &token)?;
                let hash = hex::encode(sha256(&token));
                if metadata.create_token_hash(ADMIN, &hash).await? {
                    created = Some(NewAdminToken { token, file });
                    hash
                } else {
                    // Another node created it first; its token stands.
                    let _ = std::fs::remove_file(&file);
                    metadata
                        .token_hash(ADMIN)
                        .await?
                        .ok_or_else(|| Error::Metadata {
                            source: "the admin token vanished while it was being created".into(),
                            retryable: true,
                        })?
                }
            }
        };
        Ok((Self::from_stored(&stored)?, created))
    }

    /// Registers a token chosen by the operator (`STOWAGE_ADMIN_TOKEN`, typically a reference
    /// to a Secrets Manager secret the Terraform module created) as the admin token, if the
    /// database has none yet. An existing different token is an error, never replaced silently.
    /// Returns whether it was registered now.
    pub async fn register(metadata: &Metadata, token: &str) -> Result<bool, Error> {
        if token.trim().len() < 16 {
            return Err(Error::InvalidInput(
                "STOWAGE_ADMIN_TOKEN must have at least 16 characters".into(),
            ));
        }
        let hash = hex::encode(sha256(token));
        if metadata.create_token_hash(ADMIN, &hash).await? {
            return Ok(true);
        }
        let stored = metadata.token_hash(ADMIN).await?.unwrap_or_default();
        if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            Ok(false)
        } else {
            Err(Error::Conflict(
                "the database already has another admin token; STOWAGE_ADMIN_TOKEN does not \
                 replace it (delete the row named 'admin' from the tokens table to rotate it)"
                    .into(),
            ))
        }
    }

    /// Loads the admin token's hash that `stowage migrate` (or a first `stowage serve`)
    /// created; the function binaries use this and never create one.
    pub async fn load(metadata: &Metadata) -> Result<Self, Error> {
        let stored = metadata.token_hash(ADMIN).await?.ok_or_else(|| {
            Error::InvalidInput(
                "the database has no admin token yet: run `stowage migrate` against it first \
                 (it applies the migrations and prints the token once)"
                    .into(),
            )
        })?;
        Self::from_stored(&stored)
    }

    fn from_stored(stored: &str) -> Result<Self, Error> {
        let mut admin_token_sha256 = [0u8; 32];
        hex::decode_to_slice(stored, &mut admin_token_sha256).map_err(|_| Error::Metadata {
            source: "the stored admin token hash is not 64 hex characters".into(),
            retryable: false,
        })?;
        Ok(Self { admin_token_sha256 })
    }

    /// Whether `secret` is the admin token (compared in constant time).
    pub fn is_admin_token(&self, secret: &str) -> bool {
        secret_matches(secret, &self.admin_token_sha256)
    }
}

/// Writes a secret readable by the owner only, replacing any older file.
fn write_secret_file(path: &Path, secret: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::InvalidInput(format!(
            "cannot write the admin token to {}: {e}",
            path.display()
        ))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_token_is_the_admin_token() {
        let a = Auth::from_stored(&hex::encode(sha256("stw_secret"))).expect("hash");
        assert!(a.is_admin_token("stw_secret"));
        assert!(
            a.is_admin_token(" stw_secret "),
            "as a header value may carry it"
        );
        assert!(!a.is_admin_token("wrong"));
        assert!(!a.is_admin_token(""));
    }
}
