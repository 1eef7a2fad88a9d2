//! A [`BinaryProvider`] over any object store that offers a handful of key operations
//! ([`ObjectBackend`]): S3, Google Cloud Storage and Azure Blob implement the backend, this
//! module implements everything that makes it a content-addressed binary store, once.
//!
//! Where a body goes is decided here, by its announced size ([`ObjectSettings`]):
//! - Small bodies of announced length (up to [`ObjectSettings::small_upload_limit`], within the
//!   process-wide [`ObjectSettings::memory_budget`]) are held in memory while they are hashed
//!   and sent as one conditional request that carries their digest (S3: SHA-256; GCS: MD5 and
//!   CRC32C; Azure: MD5), so the store itself refuses damaged bytes.
//! - Larger bodies stream through an [`ObjectWriter`] (one S3 PUT or parallel S3 parts, GCS
//!   resumable chunks, Azure blocks) while they are hashed. Nothing is visible until
//!   [`ObjectWriter::finish`], which runs only once every byte arrived and every declared
//!   checksum matched: a bad upload leaves no object. When the client declared the SHA-256,
//!   the writer targets the content key directly; otherwise a staging key
//!   `<path>/_pre/<random>`, then a server-side copy to the content key, because a key must
//!   never hold bytes that do not hash to its name.
//! - With a [`Spool`] (S3's `maxFileSizeForDirectUpload`), bodies at or above its limit, and
//!   bodies of unknown length, are written to a local file while hashed and handed to
//!   [`ObjectBackend::put_file`] (S3: parallel multipart parts read from the file, each one
//!   retried alone). A declared large body still streams straight to its content key when the
//!   memory budget holds the writer's buffers ([`ObjectBackend::write_buffer`]).
//! - Idempotent calls (stat, open, delete, copy, small puts) are retried with backoff when the
//!   backend says the failure is transient, by the [`Retrying`] layer every backend is wrapped
//!   in (S3 sets one attempt: its SDK retries already).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    BinaryProvider, ByteStream, Checksums, Error, ExpectedChecksums, GetOptions, GetResult, Health,
    KeyLayout, ObjectMeta, PresignedUploads, PutOptions, PutResult, Result, STAGING, Sha256,
    StagingAge, already_stored, check_range, hash_stream, read_exactly,
};

/// Write buffer of a spool file.
const SPOOL_BUFFER: usize = 1 << 20;

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
    /// nothing is visible before [`ObjectWriter::finish`]. `sha256` is given when `key` is the
    /// content key of that digest (the client declared it), for stores that check it on
    /// arrival (S3 refuses other bytes).
    async fn writer(
        &self,
        key: &str,
        size: Option<u64>,
        sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>>;

    /// Bytes of memory a streamed write of `size` bytes holds while it runs (S3's parts in
    /// flight), reserved from [`ObjectSettings::memory_budget`] before a large declared body
    /// streams instead of being spooled. Default: nothing worth counting.
    fn write_buffer(&self, size: u64) -> u64 {
        let _ = size;
        0
    }

    /// Writes the local file `path` (`size` bytes that hash to `sha256`) to `key`, the way the
    /// store takes files best (S3: one PUT, or parallel parts each retried alone). `verified`:
    /// the caller hashed the file itself; otherwise a store whose requests do not check the
    /// whole file's digest must hash it first. `Ok(false)`: the key was already there.
    /// Default: [`Error::Unsupported`], and the provider streams the file instead.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &Sha256,
        verified: bool,
    ) -> Result<bool> {
        let _ = (key, path, size, sha256, verified);
        Err(Error::Unsupported(format!("{self} takes no local files")))
    }

    /// Server-side copy of `from` (`size` bytes, whose SHA-256 is `sha256`), only if `to` does
    /// not exist. `Ok(false)`: it existed. A store that can compute the copy's SHA-256 checks
    /// it against `sha256`.
    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<bool>;

    /// Size and time of `key`.
    async fn stat(&self, key: &str) -> Result<ObjectInfo>;

    /// Opens `range` of `key` (already checked against its size) for streaming.
    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream>;

    /// Opens the whole of `key`, with what the store knows of it. Stores whose read answer
    /// carries size and time (S3's GetObject) override it to save the stat. Default: stat,
    /// then read.
    async fn open(&self, key: &str) -> Result<(ObjectInfo, ByteStream)> {
        let info = self.stat(key).await?;
        let stream = if info.size == 0 {
            futures::stream::empty().boxed()
        } else {
            self.read(key, 0..info.size).await?
        };
        Ok((info, stream))
    }

    /// Removes `key`; succeeds if it is already gone.
    async fn remove(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>>;

    /// Whether the bucket or container is reachable and usable now.
    async fn check(&self) -> Result<()>;

    /// Takes presigned upload sessions, where the store can (S3). Default: `None`.
    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        None
    }
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
            let result = call().await;
            if let Err(e) = &result {
                count_backend_error(e);
            }
            match result {
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

/// Counts a failed call to an object store by kind (`stowage_backend_errors_total{kind}`):
/// `transient` (retried or retryable), `failed`, `refused` (access, a missing bucket: an
/// operator's fix), `full`, `damaged` (the store's checksum refused the bytes). A key that is
/// not there is an answer, not an error.
fn count_backend_error(e: &Error) {
    let kind = match e {
        Error::NotFound { .. } => return,
        Error::StorageFull { .. } => "full",
        Error::BackendRefused { .. } => "refused",
        Error::ChecksumMismatch { .. } | Error::Truncated { .. } | Error::TooLong { .. } => {
            "damaged"
        }
        e if e.is_retryable() => "transient",
        _ => "failed",
    };
    metrics::counter!("stowage_backend_errors_total", "kind" => kind).increment(1);
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

    async fn writer(
        &self,
        key: &str,
        size: Option<u64>,
        sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>> {
        self.inner.writer(key, size, sha256).await
    }

    fn write_buffer(&self, size: u64) -> u64 {
        self.inner.write_buffer(size)
    }

    // A file can be sent again: the backend retries its parts, this layer the whole.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &Sha256,
        verified: bool,
    ) -> Result<bool> {
        self.again(|| self.inner.put_file(key, path, size, sha256, verified))
            .await
    }

    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<bool> {
        self.again(|| self.inner.copy_if_absent(from, to, size, sha256))
            .await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        self.again(|| self.inner.stat(key)).await
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        self.again(|| self.inner.read(key, range.clone())).await
    }

    async fn open(&self, key: &str) -> Result<(ObjectInfo, ByteStream)> {
        self.again(|| self.inner.open(key)).await
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

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        self.inner.presigned_uploads()
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
    /// Bytes that bodies held in memory (small ones, and the buffers of large declared ones)
    /// may take together; an upload that does not fit takes the next path (streamed, or
    /// spooled) rather than wait.
    pub memory_budget: u64,
    /// Where bodies too large to stream go first, if anywhere.
    pub spool: Option<Spool>,
    /// Attempts of an idempotent call that fails transiently (1 = no retry).
    pub attempts: u32,
}

impl Default for ObjectSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            layout: KeyLayout::default(),
            small_upload_limit: 8 * 1024 * 1024,
            memory_budget: u64::MAX,
            spool: None,
            attempts: 4,
        }
    }
}

/// Local spooling of large uploads (S3's `maxFileSizeForDirectUpload`).
#[derive(Debug, Clone)]
pub struct Spool {
    /// The directory of the spool files (this node's own; a crash's leftovers are removed when
    /// the process starts).
    pub dir: PathBuf,
    /// Bodies of this size and above, and of unknown length, are spooled.
    pub direct_limit: u64,
}

/// A content-addressed binary store on an [`ObjectBackend`].
#[derive(Debug)]
pub struct ObjectStoreProvider<B> {
    backend: Arc<Retrying<B>>,
    settings: Arc<ObjectSettings>,
    keys: ObjectKeys,
    /// The in-memory upload budget, in KiB.
    memory: Arc<Semaphore>,
}

impl<B> Clone for ObjectStoreProvider<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            settings: Arc::clone(&self.settings),
            keys: self.keys.clone(),
            memory: Arc::clone(&self.memory),
        }
    }
}

impl<B: ObjectBackend> fmt::Display for ObjectStoreProvider<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.backend)
    }
}

/// The keys of one store: `<path>/` then the layout's key of a digest, and the staging keys
/// `<path>/_pre/…`. Backends that name keys themselves (S3's upload sessions and signed URLs)
/// hold a copy.
#[derive(Debug, Clone)]
pub struct ObjectKeys {
    /// `path/` (or empty), the start of every key.
    root: Arc<str>,
    layout: KeyLayout,
}

impl ObjectKeys {
    pub fn new(path: &str, layout: KeyLayout) -> Self {
        let path = path.trim_matches('/');
        let root = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        Self {
            root: root.into(),
            layout,
        }
    }

    /// `path/`, or empty: the prefix of every key of this store.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The key of a binary.
    pub fn of(&self, digest: &Sha256) -> String {
        format!("{}{}", self.root, self.layout.key(digest).as_str())
    }

    /// `<path>/_pre/<name>`: a key under staging, never a binary's.
    pub fn staging(&self, name: &str) -> String {
        format!("{}{STAGING}/{name}", self.root)
    }

    /// The digest whose key `key` is, if it is one.
    pub fn parse(&self, key: &str) -> Option<Sha256> {
        key.strip_prefix(&*self.root)
            .and_then(|rest| self.layout.parse(rest))
    }
}

/// The name of a staging object of the provider's own uploads: 32 hex digits, directly
/// under `_pre/` (deeper keys, such as S3's `_pre/sessions/…`, belong to others).
fn is_own_staging(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<B: ObjectBackend> ObjectStoreProvider<B> {
    pub fn new(backend: B, settings: ObjectSettings) -> Self {
        let kib = usize::try_from(settings.memory_budget / 1024)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            backend: Arc::new(Retrying {
                inner: backend,
                attempts: settings.attempts.max(1),
            }),
            keys: ObjectKeys::new(&settings.path, settings.layout),
            memory: Arc::new(Semaphore::new(kib)),
            settings: Arc::new(settings),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend.inner
    }

    /// The key of a binary, path included.
    pub fn key_of(&self, digest: &Sha256) -> String {
        self.keys.of(digest)
    }

    fn staging_key(&self) -> String {
        self.keys
            .staging(&format!("{:032x}", rand::random::<u128>()))
    }

    /// Reserves `bytes` of the in-memory budget, if it allows now.
    fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        self.memory.clone().try_acquire_many_owned(kib).ok()
    }

    /// Whether a body of `size` bytes is below the spool limit (always, without a spool).
    fn below_spool_limit(&self, size: u64) -> bool {
        self.settings
            .spool
            .as_ref()
            .is_none_or(|spool| size < spool.direct_limit)
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

    /// Small body of announced length: read whole while hashed, checked, sent in one request.
    async fn put_small(&self, body: ByteStream, opts: &PutOptions, size: u64) -> Result<PutResult> {
        let (body, hashing) = hash_stream(body);
        let bytes = read_exactly(body, size).await?;
        let (checksums, size) = hashing.finish().await?;
        opts.expected.verify(&checksums)?;
        let key = self.key_of(&checksums.sha256);
        let created = self.backend.put_small(&key, bytes, &checksums).await?;
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
        let content = opts.expected.sha256.filter(|sha| self.key_of(sha) == key);
        let mut writer = self
            .backend
            .writer(key, opts.size, content.as_ref())
            .await?;
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
            let created = !self.exists(&key).await?
                && self
                    .backend
                    .copy_if_absent(&staging, &key, size, &checksums.sha256)
                    .await?;
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

    /// The spooled path: the body to a local file while hashed, checked, then the file to the
    /// store.
    async fn put_spooled(
        &self,
        body: ByteStream,
        opts: &PutOptions,
        spool: &Spool,
    ) -> Result<PutResult> {
        let (body, hashing) = hash_stream(body);
        let file = spool_body(body, opts.size, &spool.dir).await?;
        let (checksums, size) = hashing.finish().await?;
        opts.expected.verify(&checksums)?;
        let created = self
            .store_file(&file, &checksums.sha256, size, true)
            .await?;
        Ok(PutResult {
            checksums,
            size,
            created,
        })
    }

    /// A body at or above the spool limit, or of unknown length: spooled if the provider
    /// spools, else streamed.
    async fn put_large(&self, body: ByteStream, opts: &PutOptions) -> Result<PutResult> {
        match &self.settings.spool {
            Some(spool) => self.put_spooled(body, opts, spool).await,
            None => self.put_streamed(body, opts).await,
        }
    }

    /// A local file to its content key, unless a binary is already there.
    async fn store_file(
        &self,
        path: &Path,
        sha256: &Sha256,
        size: u64,
        verified: bool,
    ) -> Result<bool> {
        let key = self.key_of(sha256);
        if self.exists(&key).await? {
            return Ok(false);
        }
        match self
            .backend
            .put_file(&key, path, size, sha256, verified)
            .await
        {
            // A store that takes no files gets the file as a stream of declared digest.
            Err(Error::Unsupported(_)) => {
                let opts = PutOptions {
                    expected: ExpectedChecksums {
                        sha256: Some(*sha256),
                        ..Default::default()
                    },
                    size: Some(size),
                };
                let body = crate::provider::read_file_stream(path).await?;
                Ok(self.put_streamed(body, &opts).await?.created)
            }
            stored => stored,
        }
    }

    /// Removes staging objects of this provider's uploads older than `age`, left by a process
    /// that died mid-upload. Returns how many were removed.
    pub async fn clean_stale_staging(&self, age: Duration) -> Result<u64> {
        let prefix = self.keys.staging("");
        let cutoff = SystemTime::now() - age;
        let mut stale = self.backend.list(&prefix);
        let mut removed = 0;
        while let Some(info) = stale.next().await {
            let info = info?;
            let own = info.key.strip_prefix(&prefix).is_some_and(is_own_staging);
            if own && info.last_modified < cutoff {
                self.backend.remove(&info.key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Writes a body to a temporary file in `dir` (removed when dropped), checking its length.
async fn spool_body(
    mut body: ByteStream,
    expected: Option<u64>,
    dir: &Path,
) -> Result<tempfile::TempPath> {
    let io_err = |e: std::io::Error| Error::storage_write("the spool", dir.display(), e);
    let temp = tempfile::Builder::new()
        .prefix("spool-")
        .tempfile_in(dir)
        .map_err(io_err)?;
    let (file, path) = temp.into_parts();
    let mut out =
        tokio::io::BufWriter::with_capacity(SPOOL_BUFFER, tokio::fs::File::from_std(file));
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if let Some(expected) = expected
            && received > expected
        {
            return Err(Error::TooLong { expected });
        }
        out.write_all(&chunk).await.map_err(io_err)?;
    }
    out.flush().await.map_err(io_err)?;
    if let Some(expected) = expected
        && received < expected
    {
        return Err(Error::Truncated { expected, received });
    }
    Ok(path)
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
            Some(size) if self.below_spool_limit(size) => {
                let reserved = (size <= self.settings.small_upload_limit)
                    .then(|| self.reserve(size))
                    .flatten();
                match reserved {
                    Some(_reserved) => self.put_small(body, &opts, size).await,
                    None => self.put_streamed(body, &opts).await,
                }
            }
            // Large with a declared SHA-256: straight to the content key, if the writer's
            // buffers fit in memory.
            Some(size) if opts.expected.sha256.is_some() => {
                match self.reserve(self.backend.write_buffer(size)) {
                    Some(_reserved) => self.put_streamed(body, &opts).await,
                    None => self.put_large(body, &opts).await,
                }
            }
            _ => self.put_large(body, &opts).await,
        }
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        if opts.range.is_none() {
            let (info, stream) = self
                .backend
                .open(&self.key_of(digest))
                .await
                .map_err(|e| not_found(digest, e))?;
            return Ok(GetResult {
                meta: ObjectMeta {
                    digest: *digest,
                    size: info.size,
                    last_modified: info.last_modified,
                },
                range: 0..info.size,
                stream,
            });
        }
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
        let keys = self.keys.clone();
        self.backend
            .list(keys.root())
            .filter_map(move |info| {
                let found = match info {
                    Err(e) => Some(Err(e)),
                    Ok(info) => keys.parse(&info.key).map(|digest| {
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

    async fn put_file(&self, path: &Path, sha256: &Sha256, size: u64) -> Result<bool> {
        self.store_file(path, sha256, size, false).await
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        self.backend.presigned_uploads()
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
