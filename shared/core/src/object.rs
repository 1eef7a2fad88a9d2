//! A [`BinaryProvider`] over any object store that offers a handful of key operations
//! ([`ObjectBackend`]): Google Cloud Storage and Azure Blob implement the backend, this module
//! implements everything that makes it a content-addressed binary store, once.
//!
//! - Small bodies of announced length (up to [`ObjectSettings::small_upload_limit`]) are held in
//!   memory until hashed and sent as one conditional request that carries their MD5 (and, for
//!   GCS, CRC32C), so the service itself refuses damaged bytes.
//! - Larger bodies stream through a [`ObjectWriter`] (GCS resumable chunks, Azure blocks) while
//!   they are hashed. Nothing is visible until [`ObjectWriter::finish`], which runs only once
//!   every byte arrived and every declared checksum matched: a bad upload leaves no object.
//!   When the client declared the SHA-256, the writer targets the content key directly;
//!   otherwise a staging key `<path>/_pre/<random>`, then a server-side copy to the content
//!   key, because a key must never hold bytes that do not hash to its name.
//! - Idempotent calls (stat, open, delete, copy, small puts) are retried with backoff when the
//!   backend says the failure is transient, by the [`Retrying`] layer every backend is wrapped
//!   in.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{
    BinaryProvider, ByteStream, ChecksumHasher, Checksums, Error, GetOptions, GetResult, Health,
    KeyLayout, ObjectMeta, PutOptions, PutResult, Result, STAGING, Sha256, StagingAge,
    already_stored, check_range, hash_stream, read_exactly,
};

/// What a backend knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// The key operations of an object store (a bucket or container), in the backend's own
/// client. Every error is already a domain [`Error`]: a missing key is [`Error::NotFound`], a
/// transient failure a retryable [`Error::Storage`].
#[async_trait]
pub trait ObjectBackend: Send + Sync + fmt::Debug + fmt::Display + 'static {
    /// Writes `body` to `key` in one request that carries the body's MD5 (and whatever else
    /// the service checks), only if no object has that key. `Ok(false)`: one already had it.
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool>;

    /// Starts a streamed write of `key` of `size` bytes when the client announced it;
    /// nothing is visible before [`ObjectWriter::finish`].
    async fn writer(&self, key: &str, size: Option<u64>) -> Result<Box<dyn ObjectWriter>>;

    /// Server-side copy, only if `to` does not exist. `Ok(false)`: it existed.
    async fn copy_if_absent(&self, from: &str, to: &str) -> Result<bool>;

    /// Size and time of `key`.
    async fn stat(&self, key: &str) -> Result<ObjectInfo>;

    /// Opens `range` of `key` (already checked against its size) for streaming.
    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream>;

    /// Removes `key`; succeeds if it is already gone.
    async fn remove(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>>;

    /// Whether the bucket or container is reachable and usable now.
    async fn check(&self) -> Result<()>;
}

/// A streamed write in progress. Dropping it without `finish` leaves nothing visible (what was
/// sent is discarded by the service, or by `abort` at once).
#[async_trait]
pub trait ObjectWriter: Send + fmt::Debug {
    /// Sends (or buffers) the next bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes the object visible, if no object has its key yet (`Ok(false)`: one had). The
    /// checksums are those of every byte written, for the service to check against.
    async fn finish(self: Box<Self>, checksums: &Checksums) -> Result<bool>;
    /// Discards what was sent.
    async fn abort(self: Box<Self>);
}

/// The retry layer over a backend: each idempotent call (stat, read, remove, copy, small
/// put) is made again after a pause while it fails transiently (`Error::is_retryable`), up to
/// `attempts` times with pauses of 50 ms, 200 ms, 800 ms…; a streamed write, a listing and a
/// health check are passed on as they are (the first cannot be replayed, the others are
/// asked again by their callers).
#[derive(Debug)]
pub struct Retrying<B> {
    inner: B,
    attempts: u32,
}

impl<B: ObjectBackend> Retrying<B> {
    async fn again<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    tracing::debug!(backend = %self.inner, attempt, error = %e, "retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl<B: fmt::Display> fmt::Display for Retrying<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: ObjectBackend> ObjectBackend for Retrying<B> {
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool> {
        self.again(|| self.inner.put_small(key, body.clone(), checksums))
            .await
    }

    async fn writer(&self, key: &str, size: Option<u64>) -> Result<Box<dyn ObjectWriter>> {
        self.inner.writer(key, size).await
    }

    async fn copy_if_absent(&self, from: &str, to: &str) -> Result<bool> {
        self.again(|| self.inner.copy_if_absent(from, to)).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        self.again(|| self.inner.stat(key)).await
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        self.again(|| self.inner.read(key, range.clone())).await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.again(|| self.inner.remove(key)).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        self.inner.list(prefix)
    }

    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
}

/// Tuning of an [`ObjectStoreProvider`].
#[derive(Debug, Clone)]
pub struct ObjectSettings {
    /// The folder inside the bucket or container (`path`); empty for its root.
    pub path: String,
    pub layout: KeyLayout,
    /// Bodies of announced length up to this size are held in memory and sent in one request.
    pub small_upload_limit: u64,
    /// Attempts of an idempotent call that fails transiently (1 = no retry).
    pub attempts: u32,
}

impl Default for ObjectSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            layout: KeyLayout::default(),
            small_upload_limit: 8 * 1024 * 1024,
            attempts: 4,
        }
    }
}

/// A content-addressed binary store on an [`ObjectBackend`].
#[derive(Debug)]
pub struct ObjectStoreProvider<B> {
    backend: Arc<Retrying<B>>,
    settings: Arc<ObjectSettings>,
    /// `path/` (or empty), the start of every key.
    root: Arc<str>,
}

impl<B> Clone for ObjectStoreProvider<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            settings: Arc::clone(&self.settings),
            root: Arc::clone(&self.root),
        }
    }
}

impl<B: ObjectBackend> fmt::Display for ObjectStoreProvider<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.backend)
    }
}

impl<B: ObjectBackend> ObjectStoreProvider<B> {
    pub fn new(backend: B, settings: ObjectSettings) -> Self {
        let path = settings.path.trim_matches('/');
        let root = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        Self {
            backend: Arc::new(Retrying {
                inner: backend,
                attempts: settings.attempts.max(1),
            }),
            settings: Arc::new(settings),
            root: root.into(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend.inner
    }

    /// The key of a binary, path included.
    pub fn key_of(&self, digest: &Sha256) -> String {
        format!("{}{}", self.root, self.settings.layout.key(digest).as_str())
    }

    fn staging_key(&self) -> String {
        format!("{}{STAGING}/{:032x}", self.root, rand::random::<u128>())
    }

    /// The key of a stored binary and what the backend knows of it; `NotFound` naming the
    /// binary.
    async fn stat_binary(&self, digest: &Sha256) -> Result<(String, ObjectMeta)> {
        let key = self.key_of(digest);
        let info = self
            .backend
            .stat(&key)
            .await
            .map_err(|e| not_found(digest, e))?;
        let meta = ObjectMeta {
            digest: *digest,
            size: info.size,
            last_modified: info.last_modified,
        };
        Ok((key, meta))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.backend.stat(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Small body of announced length: read whole, hashed, sent in one checked request.
    async fn put_small(&self, body: ByteStream, opts: &PutOptions, size: u64) -> Result<PutResult> {
        let bytes = read_exactly(body, size).await?;
        let hashed = bytes.clone();
        let checksums = tokio::task::spawn_blocking(move || ChecksumHasher::digest(&hashed))
            .await
            .map_err(|e| Error::Storage {
                backend: "hashing".into(),
                key: "-".into(),
                source: Box::new(e),
                retryable: false,
            })?;
        opts.expected.verify(&checksums)?;
        let key = self.key_of(&checksums.sha256);
        let created = self
            .backend
            .put_small(&key, bytes.clone(), &checksums)
            .await?;
        Ok(PutResult {
            checksums,
            size,
            created,
        })
    }

    /// Streams the body to `key` while it is hashed; finishes only if it is complete and
    /// matches what the client declared.
    async fn write_streamed(
        &self,
        key: &str,
        body: ByteStream,
        opts: &PutOptions,
    ) -> Result<(Checksums, u64, bool)> {
        let (mut body, hashing) = hash_stream(body);
        let mut writer = self.backend.writer(key, opts.size).await?;
        let mut received = 0u64;
        let sent: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                received += chunk.len() as u64;
                if let Some(size) = opts.size
                    && received > size
                {
                    return Err(Error::TooLong { expected: size });
                }
                writer.write(chunk).await?;
            }
            if let Some(size) = opts.size
                && received < size
            {
                return Err(Error::Truncated {
                    expected: size,
                    received,
                });
            }
            Ok(())
        }
        .await;
        drop(body);
        if let Err(e) = sent {
            writer.abort().await;
            return Err(e);
        }
        let (checksums, size) = match hashing.finish().await {
            Ok(done) => done,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        if let Err(e) = opts.expected.verify(&checksums) {
            writer.abort().await;
            return Err(e);
        }
        let created = writer.finish(&checksums).await?;
        Ok((checksums, size, created))
    }

    async fn put_streamed(&self, body: ByteStream, opts: &PutOptions) -> Result<PutResult> {
        if let Some(sha256) = opts.expected.sha256 {
            let key = self.key_of(&sha256);
            if self.exists(&key).await? {
                let (body, hashing) = hash_stream(body);
                return already_stored(body, hashing, opts).await;
            }
            let (checksums, size, created) = self.write_streamed(&key, body, opts).await?;
            return Ok(PutResult {
                checksums,
                size,
                created,
            });
        }
        let staging = self.staging_key();
        let stored = async {
            let (checksums, size, _) = self.write_streamed(&staging, body, opts).await?;
            let key = self.key_of(&checksums.sha256);
            let created =
                !self.exists(&key).await? && self.backend.copy_if_absent(&staging, &key).await?;
            Ok(PutResult {
                checksums,
                size,
                created,
            })
        }
        .await;
        if let Err(e) = self.backend.remove(&staging).await {
            tracing::warn!(backend = %self, key = %staging, error = %e,
                "could not remove a staging object; the stale-staging sweep will");
        }
        stored
    }

    /// Removes staging objects older than `age`, left by a process that died mid-upload.
    /// Returns how many were removed.
    pub async fn clean_stale_staging(&self, age: Duration) -> Result<u64> {
        let prefix = format!("{}{STAGING}/", self.root);
        let cutoff = SystemTime::now() - age;
        let mut stale = self.backend.list(&prefix);
        let mut removed = 0;
        while let Some(info) = stale.next().await {
            let info = info?;
            if info.last_modified < cutoff {
                self.backend.remove(&info.key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn not_found(digest: &Sha256, e: Error) -> Error {
    match e {
        Error::NotFound { .. } => Error::NotFound {
            what: format!("binary {digest}"),
        },
        other => other,
    }
}

#[async_trait]
impl<B: ObjectBackend> BinaryProvider for ObjectStoreProvider<B> {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        match opts.size {
            Some(size) if size <= self.settings.small_upload_limit => {
                self.put_small(body, &opts, size).await
            }
            _ => self.put_streamed(body, &opts).await,
        }
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        let (key, meta) = self.stat_binary(digest).await?;
        let range = check_range(opts.range, meta.size)?;
        let stream = if range.is_empty() {
            futures::stream::empty().boxed()
        } else {
            self.backend
                .read(&key, range.clone())
                .await
                .map_err(|e| not_found(digest, e))?
        };
        Ok(GetResult {
            meta,
            range,
            stream,
        })
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        Ok(self.stat_binary(digest).await?.1)
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        let key = self.key_of(digest);
        self.backend.remove(&key).await
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Arc::clone(&self.root);
        let layout = self.settings.layout;
        self.backend
            .list(&root)
            .filter_map(move |info| {
                let found = match info {
                    Err(e) => Some(Err(e)),
                    Ok(info) => info
                        .key
                        .strip_prefix(&*root)
                        .and_then(|rest| layout.parse(rest))
                        .map(|digest| {
                            Ok(ObjectMeta {
                                digest,
                                size: info.size,
                                last_modified: info.last_modified,
                            })
                        }),
                };
                futures::future::ready(found)
            })
            .boxed()
    }

    async fn health(&self) -> Result<Health> {
        self.backend.check().await?;
        Ok(Health::default())
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        match age.shared {
            Some(age) => self.clean_stale_staging(age).await,
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests;
