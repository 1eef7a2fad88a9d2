//! Where backups go: a directory or an object-store prefix, seen as two parts.
//!
//! ```text
//! <target>/binaries/…                  content-addressed, the filestore layout: shared by every
//!                                      backup, so a backup copies only binaries not there yet
//! <target>/backups/<id>/metadata.jsonl  the logical metadata export (stowage_metadata::export)
//! <target>/backups/<id>/config.toml     the configuration, secrets left out
//! <target>/backups/<id>/manifest.json   written last: a backup without one is incomplete
//! ```
//!
//! The binaries part is a [`BinaryProvider`] (the filesystem provider, or an object store's),
//! so every copy into it or out of it is checked against its digest by the provider's own
//! put. The files part is [`BackupFiles`]: a directory, or keys of an [`ObjectBackend`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use stowage_core::object::ObjectBackend;
use stowage_core::{BinaryProvider, Error, Result, Sha256};
use tokio::io::AsyncWriteExt as _;

/// The named files of backups (manifests, exports, configurations), by `/`-separated names
/// relative to the target.
#[async_trait]
pub trait BackupFiles: Send + Sync + fmt::Debug + fmt::Display {
    /// Stores the local file `local` as `name`, replacing what was there; visible whole or not
    /// at all.
    async fn put(&self, name: &str, local: &Path) -> Result<()>;
    /// Copies `name` into the local file `local`; `NotFound` if there is none.
    async fn get(&self, name: &str, local: &Path) -> Result<()>;
    /// The names below `prefix` (recursively).
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes `name` (nothing if it is not there).
    async fn remove(&self, name: &str) -> Result<()>;
}

/// A backup target.
#[derive(Debug, Clone)]
pub struct BackupTarget {
    pub binaries: Arc<dyn BinaryProvider>,
    pub files: Arc<dyn BackupFiles>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::NotFound {
            what: format!("{what} {}", path.display()),
        };
    }
    Error::Storage {
        backend: "the backup directory".into(),
        key: path.display().to_string(),
        source: format!("{what}: {e}").into(),
        retryable: false,
    }
}

/// Backup files in a local directory.
#[derive(Debug)]
pub struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl fmt::Display for LocalFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root.display())
    }
}

#[async_trait]
impl BackupFiles for LocalFiles {
    async fn put(&self, name: &str, local: &Path) -> Result<()> {
        let to = self.root.join(name);
        let dir = to.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("cannot create", &dir, e))?;
        let part = to.with_extension("part");
        tokio::fs::copy(local, &part)
            .await
            .map_err(|e| io("cannot write", &part, e))?;
        let file = tokio::fs::File::open(&part)
            .await
            .map_err(|e| io("cannot open", &part, e))?;
        file.sync_all()
            .await
            .map_err(|e| io("cannot sync", &part, e))?;
        tokio::fs::rename(&part, &to)
            .await
            .map_err(|e| io("cannot rename", &to, e))?;
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }

    async fn get(&self, name: &str, local: &Path) -> Result<()> {
        let from = self.root.join(name);
        tokio::fs::copy(&from, local)
            .await
            .map(|_| ())
            .map_err(|e| io("cannot read", &from, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.join(prefix)];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("cannot list", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| io("cannot list", &dir, e))?
            {
                let path = entry.path();
                if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path, e)),
        }
        // An emptied backup directory goes too.
        if let Some(dir) = path.parent()
            && dir != self.root
        {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }
}

/// Backup files as objects under `prefix` of an object store.
#[derive(Debug)]
pub struct ObjectFiles<B> {
    backend: B,
    prefix: String,
}

impl<B: ObjectBackend> ObjectFiles<B> {
    /// Files at `<prefix>/<name>` (no prefix: at the bucket's root).
    pub fn new(backend: B, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            backend,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl<B: ObjectBackend> fmt::Display for ObjectFiles<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.prefix)
    }
}

/// The SHA-256 and size of a local file (object stores check a whole file's digest on
/// upload; a backup's manifest names its export's).
pub(crate) fn file_sha256(path: &Path) -> Result<(Sha256, u64)> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((Sha256::from_bytes(hasher.finalize().into()), size))
}

#[async_trait]
impl<B: ObjectBackend> BackupFiles for ObjectFiles<B> {
    async fn put(&self, name: &str, local: &Path) -> Result<()> {
        let key = self.key(name);
        let path = local.to_path_buf();
        let (sha256, size) = tokio::task::spawn_blocking(move || file_sha256(&path))
            .await
            .map_err(|e| Error::Unavailable(format!("hashing a backup file failed: {e}")))??;
        // Uploads are create-only: a file of an earlier, cut run of this backup goes first.
        self.remove(name).await?;
        if self
            .backend
            .put_file(&key, local, size, &sha256, true)
            .await?
        {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "{key} appeared while the backup was writing it: is another backup running?"
            )))
        }
    }

    async fn get(&self, name: &str, local: &Path) -> Result<()> {
        let (_, mut stream) = self.backend.open(&self.key(name)).await?;
        let mut out = tokio::fs::File::create(local)
            .await
            .map_err(|e| io("cannot create", local, e))?;
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)
                .await
                .map_err(|e| io("cannot write", local, e))?;
        }
        out.flush().await.map_err(|e| io("cannot write", local, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .backend
            .list(&self.key(prefix))
            .map_ok(|info| {
                info.key
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&info.key)
                    .to_string()
            })
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    async fn remove(&self, name: &str) -> Result<()> {
        match self.backend.remove(&self.key(name)).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
