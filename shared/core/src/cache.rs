//! The `cache-fs` provider: a bounded LRU read cache on local disk in front of any provider
//! (`maxCacheSize`, `maxFileSizeLimit`, `skipDuringUpload`, `cacheProviderDir` of Artifactory's
//! cache-fs). moka keeps the bookkeeping (sizes, recency, eviction); the bytes are files in the
//! filesystem provider's layout, deleted when evicted. A restart re-indexes what is on disk.
//!
//! **Single-flight:** when many requests want the same uncached binary, one fetch from the
//! backend writes it to a cache file while every request (the first included) streams that
//! file as it grows, without waiting for the end. The fetch is checked against the digest; a
//! reader is never handed the last bytes before the check passed, so a bad fetch never gives a
//! complete body. A cache file that fails its check on a later read is dropped and fetched again.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use moka::notification::RemovalCause;
use sha2::Digest as _;
use tokio::sync::watch;

use crate::BinaryProviderExt as _;
use crate::fanout::{FanOutSettings, fan_out_with_cuts, unless_cut};
use crate::fs::FileSystemProvider;
use crate::signing::DownloadSigner;
use crate::{
    BinaryProvider, ByteStream, Error, GetOptions, GetResult, Health, KeyLayout, ObjectMeta,
    PresignedUploads, PutOptions, PutResult, READ_CHUNK, Result, Sha256, Stager, StagingAge,
};

/// How an upload is written to the backend and the cache at once: the cache copy may fall
/// 4 MiB behind and is given up (not the upload) if it stalls.
const UPLOAD_FAN_OUT: FanOutSettings = FanOutSettings {
    buffer_bytes: 4 << 20,
    wait_timeout: Duration::from_secs(30),
};

/// The cache's parameters.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Where the cache files live (`cacheProviderDir`).
    pub dir: PathBuf,
    /// Bytes the cache files may take (`maxCacheSize`).
    pub max_cache_size: u64,
    /// Larger binaries are never cached (`maxFileSizeLimit`).
    pub max_file_size_limit: u64,
    /// Uploads go to the backend only, not into the cache (`skipDuringUpload`).
    pub skip_during_upload: bool,
}

/// Cache figures for `/api/storageinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Whole or ranged reads served from a cache file.
    pub hits: u64,
    /// Reads that were not (a fetch started, joined, or a read passed through).
    pub misses: u64,
    /// Reads of the backend on behalf of readers (one per single-flight fetch).
    pub backend_reads: u64,
    /// Bytes read from cache files, and bytes fetched from the backend into them.
    pub bytes_from_cache: u64,
    pub bytes_fetched: u64,
    /// Files evicted to stay within `maxCacheSize`.
    pub evictions: u64,
    /// Cache files dropped because they did not match their digest.
    pub corrupt_dropped: u64,
    pub entries: u64,
    pub size_bytes: u64,
    pub max_cache_size: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    backend_reads: AtomicU64,
    bytes_from_cache: AtomicU64,
    bytes_fetched: AtomicU64,
    evictions: AtomicU64,
    corrupt_dropped: AtomicU64,
    size_bytes: AtomicU64,
}

/// A cache entry: the binary's size, and whether its file is complete (`false`: space
/// reserved for a fetch in progress).
#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    ready: bool,
}

/// A fetch in progress, as its readers see it.
#[derive(Debug, Clone, Default)]
struct FetchState {
    meta: Option<ObjectMeta>,
    file: Option<Arc<File>>,
    written: u64,
    /// `Some(Ok)`: complete and checked; `Some(Err)`: failed.
    end: Option<std::result::Result<(), Failure>>,
    /// The binary is larger than the cache takes: the first reader gets the fetch's own read,
    /// the others read the backend themselves.
    bypass: Option<Arc<Mutex<Option<GetResult>>>>,
}

/// Why a fetch failed, for every reader that joined it.
#[derive(Debug, Clone)]
enum Failure {
    NotFound(String),
    Other(String),
}

impl Failure {
    fn of(e: &Error) -> Self {
        match e {
            Error::NotFound { what } => Failure::NotFound(what.clone()),
            other => Failure::Other(other.to_string()),
        }
    }

    fn error(&self, digest: &Sha256) -> Error {
        match self {
            Failure::NotFound(what) => Error::NotFound { what: what.clone() },
            Failure::Other(why) => Error::Unavailable(format!("fetching {digest} failed: {why}")),
        }
    }
}

type Fetches = Mutex<HashMap<Sha256, watch::Receiver<FetchState>>>;

struct Inner {
    backend: Arc<dyn BinaryProvider>,
    files: FileSystemProvider,
    index: moka::future::Cache<Sha256, Entry>,
    fetches: Fetches,
    counters: Arc<Counters>,
    settings: CacheSettings,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedProvider")
            .field("backend", &self.backend.to_string())
            .field("files", &self.files.to_string())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A read cache on local disk in front of `backend`.
#[derive(Debug, Clone)]
pub struct CachedProvider {
    inner: Arc<Inner>,
}

impl fmt::Display for CachedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache-fs({})", self.inner.backend)
    }
}

/// Cache weights are KiB (moka weighs in `u32`).
fn weight(size: u64) -> u32 {
    u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl CachedProvider {
    /// Opens the cache directory (dropping partial files a crash left) and indexes what it
    /// holds, oldest first, evicting down to `maxCacheSize`.
    pub async fn open(
        backend: Arc<dyn BinaryProvider>,
        layout: KeyLayout,
        settings: CacheSettings,
    ) -> Result<Self> {
        let files = FileSystemProvider::new(&settings.dir, layout)?;
        files.clean_temp(Duration::ZERO).await?;
        let counters = Arc::new(Counters::default());
        let listener_files = files.clone();
        let listener_counters = Arc::clone(&counters);
        let index = moka::future::Cache::builder()
            .max_capacity(settings.max_cache_size.div_ceil(1024))
            .weigher(|_: &Sha256, e: &Entry| weight(e.size))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |digest: Arc<Sha256>, entry: Entry, cause| {
                if entry.ready {
                    listener_counters
                        .size_bytes
                        .fetch_sub(entry.size, Ordering::Relaxed);
                }
                if cause == RemovalCause::Replaced {
                    return;
                }
                if cause == RemovalCause::Size {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                let path = listener_files.path_of(&digest);
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete an evicted cache file");
                }
            })
            .build();
        let this = Self {
            inner: Arc::new(Inner {
                backend,
                files,
                index,
                fetches: Mutex::new(HashMap::new()),
                counters,
                settings,
            }),
        };
        let mut found: Vec<ObjectMeta> = this.inner.files.list().try_collect().await?;
        found.sort_by_key(|m| m.last_modified);
        for meta in found {
            this.admit(meta.digest, meta.size).await;
        }
        Ok(this)
    }

    /// The provider behind the cache.
    pub fn backend(&self) -> &Arc<dyn BinaryProvider> {
        &self.inner.backend
    }

    /// Hits, misses, bytes and evictions.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            backend_reads: c.backend_reads.load(Ordering::Relaxed),
            bytes_from_cache: c.bytes_from_cache.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt_dropped: c.corrupt_dropped.load(Ordering::Relaxed),
            entries: self.inner.index.entry_count(),
            size_bytes: c.size_bytes.load(Ordering::Relaxed),
            max_cache_size: self.inner.settings.max_cache_size,
        }
    }

    /// Largest binary the cache takes.
    fn cacheable(&self, size: u64) -> bool {
        let s = &self.inner.settings;
        size <= s.max_file_size_limit && size <= s.max_cache_size
    }

    /// Records a complete cache file, evicting least-recently-used ones to make room.
    async fn admit(&self, digest: Sha256, size: u64) {
        let index = &self.inner.index;
        index.insert(digest, Entry { size, ready: true }).await;
        self.inner
            .counters
            .size_bytes
            .fetch_add(size, Ordering::Relaxed);
        index.run_pending_tasks().await;
        if !index.contains_key(&digest) {
            // Evicted at once (larger than what is left): make sure its file is gone.
            let _ = tokio::fs::remove_file(self.inner.files.path_of(&digest)).await;
        }
    }

    /// Drops a cache file that did not match its digest.
    async fn drop_corrupt(&self, digest: &Sha256) {
        tracing::error!(%digest, "a cache file does not match its digest; it is dropped and fetched again");
        self.inner
            .counters
            .corrupt_dropped
            .fetch_add(1, Ordering::Relaxed);
        // The eviction listener deletes the file.
        self.inner.index.invalidate(digest).await;
    }

    /// Opens a cached binary, checking whole reads. `Ok(None)`: not cached (or corrupt and
    /// dropped), fetch it.
    async fn open_cached(&self, digest: &Sha256, opts: &GetOptions) -> Result<Option<GetResult>> {
        match self.inner.index.get(digest).await {
            Some(Entry { ready: true, .. }) => {}
            _ => return Ok(None),
        }
        let found = match self.inner.files.get_opts(digest, opts.clone()).await {
            Ok(found) => found,
            Err(Error::NotFound { .. }) => {
                self.inner.index.invalidate(digest).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let counters = Arc::clone(&self.inner.counters);
        counters.hits.fetch_add(1, Ordering::Relaxed);
        let served = found.range.end - found.range.start;
        counters
            .bytes_from_cache
            .fetch_add(served, Ordering::Relaxed);
        if opts.range.is_some() {
            return Ok(Some(found));
        }
        let this = self.clone();
        let digest = *digest;
        let checked = crate::hashing::checked_read(found, move |e| {
            tokio::spawn(async move { this.drop_corrupt(&digest).await });
            Error::Storage {
                backend: "cache-fs".into(),
                key: digest.to_string(),
                source: format!(
                    "the cache file was corrupt and has been dropped; a retry fetches the \
                     binary again ({e})"
                )
                .into(),
                retryable: true,
            }
        })
        .await?;
        if checked.is_none() {
            self.drop_corrupt(&digest).await;
        }
        Ok(checked)
    }

    /// Joins the fetch of `digest` in progress, or starts one.
    async fn fetch(&self, digest: &Sha256) -> Result<GetResult> {
        let (rx, leader) = {
            let mut fetches = self
                .inner
                .fetches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match fetches.get(digest) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(FetchState::default());
                    fetches.insert(*digest, rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = leader {
            let this = self.clone();
            let digest = *digest;
            tokio::spawn(async move {
                let outcome = this.run_fetch(&digest, &tx).await;
                if let Err(e) = outcome {
                    if !matches!(e, Error::NotFound { .. }) {
                        tracing::warn!(%digest, error = %e, "fetching a binary into the cache failed");
                    }
                    tx.send_modify(|s| s.end = Some(Err(Failure::of(&e))));
                }
                this.inner
                    .fetches
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&digest);
            });
        }
        self.follow(*digest, rx).await
    }

    /// The fetch itself: backend → cache file, announcing progress; checked, then admitted.
    async fn run_fetch(&self, digest: &Sha256, tx: &watch::Sender<FetchState>) -> Result<()> {
        let counters = &self.inner.counters;
        counters.backend_reads.fetch_add(1, Ordering::Relaxed);
        let found = self.inner.backend.get(digest).await?;
        let size = found.meta.size;
        if !self.cacheable(size) {
            tx.send_modify(|s| s.bypass = Some(Arc::new(Mutex::new(Some(found)))));
            return Ok(());
        }
        // Reserve the room first, so the files on disk stay within maxCacheSize.
        self.inner
            .index
            .insert(*digest, Entry { size, ready: false })
            .await;
        self.inner.index.run_pending_tasks().await;
        let temp = self
            .inner
            .files
            .temp_dir()
            .join(format!("{:032x}.fetch", rand::random::<u128>()));
        let io = |e: std::io::Error| Error::storage_io("cache-fs", temp.display(), e);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io)?;
        let file = Arc::new(file);
        tx.send_modify(|s| {
            s.meta = Some(found.meta.clone());
            s.file = Some(Arc::clone(&file));
        });
        let filled = async {
            let mut stream = found.stream;
            let mut hasher = sha2::Sha256::new();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                let (f, at) = (Arc::clone(&file), written);
                let len = chunk.len() as u64;
                tokio::task::spawn_blocking(move || f.write_all_at(&chunk, at))
                    .await
                    .map_err(|e| Error::Unavailable(format!("cache writer stopped: {e}")))?
                    .map_err(io)?;
                written += len;
                counters.bytes_fetched.fetch_add(len, Ordering::Relaxed);
                tx.send_modify(|s| s.written = written);
            }
            let actual = Sha256::from_bytes(hasher.finalize().into());
            if actual != *digest || written != size {
                return Err(Error::Storage {
                    backend: self.inner.backend.to_string(),
                    key: digest.to_string(),
                    source: format!(
                        "the backend returned {written} bytes with SHA-256 {actual} for a binary \
                         of {size} bytes stored as {digest}"
                    )
                    .into(),
                    retryable: true,
                });
            }
            let (f, target) = (Arc::clone(&file), self.inner.files.path_of(digest));
            let from = temp.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                f.sync_all()?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(from, target)
            })
            .await
            .map_err(|e| Error::Unavailable(format!("cache writer stopped: {e}")))?
            .map_err(io)?;
            Ok(())
        };
        let result = filled.await;
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
            self.inner.index.invalidate(digest).await;
            return result;
        }
        self.admit(*digest, size).await;
        tx.send_modify(|s| s.end = Some(Ok(())));
        Ok(())
    }

    /// Streams a fetch's file as it grows; the last byte only once the fetch was checked.
    async fn follow(
        &self,
        digest: Sha256,
        mut rx: watch::Receiver<FetchState>,
    ) -> Result<GetResult> {
        // Wait until the fetch knows what it is fetching.
        let state = loop {
            let state = rx.borrow_and_update().clone();
            if let Some(Err(failure)) = &state.end {
                return Err(failure.error(&digest));
            }
            if let Some(slot) = &state.bypass {
                let own = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(found) = own {
                    return Ok(found);
                }
                self.inner
                    .counters
                    .backend_reads
                    .fetch_add(1, Ordering::Relaxed);
                return self.inner.backend.get(&digest).await;
            }
            if state.meta.is_some() && state.file.is_some() {
                break state;
            }
            if rx.changed().await.is_err() {
                // The fetch ended without a word (its task was dropped): read the backend.
                return self.inner.backend.get(&digest).await;
            }
        };
        let (Some(meta), Some(file)) = (state.meta, state.file) else {
            return Err(Error::Unavailable("a cache fetch lost its state".into()));
        };
        let size = meta.size;
        let counters = Arc::clone(&self.inner.counters);
        let stream = futures::stream::unfold((rx, 0u64), move |(mut rx, pos)| {
            let file = Arc::clone(&file);
            let counters = Arc::clone(&counters);
            async move {
                if pos >= size {
                    return None;
                }
                loop {
                    let (written, end) = {
                        let s = rx.borrow_and_update();
                        (s.written, s.end.clone())
                    };
                    if let Some(Err(failure)) = end {
                        return Some((Err(failure.error(&digest)), (rx, size)));
                    }
                    // Hold back the last byte until the fetch is checked.
                    let readable = if end.is_some() {
                        written
                    } else {
                        written.min(size - 1)
                    };
                    if readable > pos {
                        let want = (readable - pos).min(READ_CHUNK as u64) as usize;
                        let read = tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0u8; want];
                            file.read_exact_at(&mut buf, pos).map(|()| buf)
                        })
                        .await;
                        let item = match read {
                            Ok(Ok(buf)) => {
                                counters
                                    .bytes_from_cache
                                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                                Ok(Bytes::from(buf))
                            }
                            Ok(Err(e)) => Err(Error::storage_io("cache-fs", digest, e)),
                            Err(e) => Err(Error::Unavailable(format!("cache reader stopped: {e}"))),
                        };
                        let next = if item.is_ok() {
                            pos + want as u64
                        } else {
                            size
                        };
                        return Some((item, (rx, next)));
                    }
                    if rx.changed().await.is_err() {
                        let e = Error::Unavailable(format!("the fetch of {digest} stopped"));
                        return Some((Err(e), (rx, size)));
                    }
                }
            }
        })
        .boxed();
        Ok(GetResult {
            meta,
            range: 0..size,
            stream,
        })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BinaryProvider for CachedProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let too_big = opts.size.is_some_and(|s| !self.cacheable(s));
        if self.inner.settings.skip_during_upload || too_big {
            return self.inner.backend.put_opts(body, opts).await;
        }
        // The upload goes to the backend; a copy is staged in the cache on the side. A cache
        // copy that fails or falls behind is given up, never the upload.
        let mut branches = fan_out_with_cuts(body, 2, UPLOAD_FAN_OUT);
        let (Some((cache_branch, cache_cut)), Some((backend_branch, backend_cut))) =
            (branches.pop(), branches.pop())
        else {
            return Err(Error::Unavailable("the upload could not be split".into()));
        };
        let size = opts.size;
        let (stored, staged) = tokio::join!(
            unless_cut(
                self.inner.backend.put_opts(backend_branch, opts),
                backend_cut
            ),
            unless_cut(self.inner.files.stage(cache_branch, size), cache_cut)
        );
        let stored = stored?;
        if let Ok(staged) = staged
            && self.cacheable(stored.size)
            && staged.size() == stored.size
        {
            match staged.commit(&stored.checksums.sha256).await {
                Ok(_) => self.admit(stored.checksums.sha256, stored.size).await,
                Err(e) => tracing::warn!(error = %e, "an upload could not be kept in the cache"),
            }
        }
        Ok(stored)
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        if let Some(found) = self.open_cached(digest, &opts).await? {
            return Ok(found);
        }
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        if opts.range.is_some() {
            // A range of an uncached binary is read from the backend as it is.
            self.inner
                .counters
                .backend_reads
                .fetch_add(1, Ordering::Relaxed);
            return self.inner.backend.get_opts(digest, opts).await;
        }
        self.fetch(digest).await
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        if let Some(Entry { ready: true, .. }) = self.inner.index.get(digest).await
            && let Ok(meta) = self.inner.files.head(digest).await
        {
            return Ok(meta);
        }
        self.inner.backend.head(digest).await
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.inner.index.invalidate(digest).await;
        self.inner.files.delete(digest).await?;
        self.inner.backend.delete(digest).await
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.backend.list()
    }

    async fn health(&self) -> Result<Health> {
        self.inner.backend.health().await
    }

    async fn put_file(&self, path: &std::path::Path, sha256: &Sha256, size: u64) -> Result<bool> {
        // A file handed on (by a queue below the cache's caller) goes to the store only; it is
        // cached when it is first read.
        self.inner.backend.put_file(path, sha256, size).await
    }

    fn as_stager(&self) -> Option<&dyn crate::Stager> {
        None // staging here would bypass the store below, which must hold every binary
    }

    fn download_signer(&self) -> Option<&dyn DownloadSigner> {
        // A redirect goes past the cache to the store, which holds every binary the cache has.
        self.inner.backend.download_signer()
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        self.inner.backend.presigned_uploads()
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        let mut removed = self.inner.files.clean_temp(age.local).await? as u64;
        removed += self.inner.backend.clean_staging(age).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
