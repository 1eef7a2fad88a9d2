use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::*;
use crate::conformance::test_bytes;
use crate::memory::InMemoryProvider;
use crate::{BinaryProviderExt, ChecksumHasher};

/// A backend that counts reads and hands out bodies slowly, in 64 KiB chunks.
#[derive(Debug, Clone, Default)]
struct SlowBackend {
    memory: InMemoryProvider,
    reads: Arc<AtomicUsize>,
    /// When the last body handed out ended.
    ended: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Display for SlowBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("slow")
    }
}

#[async_trait]
impl BinaryProvider for SlowBackend {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        self.memory.put_opts(body, opts).await
    }
    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut found = self.memory.get_opts(digest, opts).await?;
        let whole: Vec<Bytes> = found.stream.try_collect().await?;
        let whole = Bytes::from(whole.concat());
        let ended = Arc::clone(&self.ended);
        let chunks: Vec<Bytes> = (0..whole.len())
            .step_by(64 << 10)
            .map(|at| whole.slice(at..(at + (64 << 10)).min(whole.len())))
            .collect();
        let n = chunks.len();
        found.stream = futures::stream::iter(chunks.into_iter().enumerate())
            .then(move |(i, chunk)| {
                let ended = Arc::clone(&ended);
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if i + 1 == n {
                        *ended.lock().expect("lock") = Some(Instant::now());
                    }
                    Ok(chunk)
                }
            })
            .boxed();
        Ok(found)
    }
    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        self.memory.head(digest).await
    }
    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.memory.delete(digest).await
    }
    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.memory.list()
    }
    async fn health(&self) -> Result<Health> {
        self.memory.health().await
    }
}

fn settings(dir: &std::path::Path, max_cache_size: u64) -> CacheSettings {
    CacheSettings {
        dir: dir.join("cache"),
        max_cache_size,
        max_file_size_limit: u64::MAX,
        skip_during_upload: true,
    }
}

async fn cache(dir: &std::path::Path, backend: &SlowBackend, max: u64) -> CachedProvider {
    CachedProvider::open(
        Arc::new(backend.clone()),
        KeyLayout::default(),
        settings(dir, max),
    )
    .await
    .expect("cache")
}

/// Bytes of the cache files on disk (staging included).
fn disk_usage(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
    }
    walk(&dir.join("cache"))
}

#[tokio::test]
async fn conformance_through_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path(), 64 << 20);
    s.skip_during_upload = false;
    let cache = CachedProvider::open(Arc::new(InMemoryProvider::new()), KeyLayout::default(), s)
        .await
        .expect("cache");
    crate::conformance::run_all(Arc::new(cache), 21).await;
}

#[tokio::test]
async fn many_readers_of_one_uncached_binary_share_one_backend_read_and_stream_as_it_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SlowBackend::default();
    let data = test_bytes(1, 8 << 20);
    let digest = backend
        .memory
        .put_bytes(data.clone(), Default::default())
        .await
        .expect("put")
        .checksums
        .sha256;
    let cache = cache(dir.path(), &backend, 64 << 20).await;
    let readers = (0..64).map(|_| {
        let cache = cache.clone();
        async move {
            let found = cache.get(&digest).await.expect("get");
            let mut stream = found.stream;
            let mut first = None;
            let mut hasher = sha2::Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.expect("chunk");
                first.get_or_insert_with(Instant::now);
                hasher.update(&chunk);
            }
            (Sha256::from_bytes(hasher.finalize().into()), first)
        }
    });
    let results = futures::future::join_all(readers).await;
    assert_eq!(
        backend.reads.load(Ordering::SeqCst),
        1,
        "one backend read for 64 readers"
    );
    let ended = backend.ended.lock().expect("lock").expect("the body ended");
    for (got, _) in &results {
        assert_eq!(*got, digest, "every reader gets the right bytes");
    }
    let early = results
        .iter()
        .filter(|(_, first)| first.is_some_and(|t| t < ended))
        .count();
    assert!(
        early >= 60,
        "readers stream while the fetch runs ({early} of 64 started early)"
    );
    let stats = cache.stats();
    assert_eq!(stats.backend_reads, 1);
    assert_eq!(stats.misses, 64);
    // Now cached: the next read is a hit and costs the backend nothing.
    assert_eq!(cache.get_bytes(&digest, None).await.expect("hit"), data);
    assert_eq!(backend.reads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().hits, 1);
}

#[tokio::test]
async fn the_cache_stays_within_its_size_evicts_the_least_recently_used_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SlowBackend::default();
    let max = 3 * 1000 * 1024;
    let mut digests = Vec::new();
    for seed in 0..4 {
        let d = backend
            .memory
            .put_bytes(test_bytes(10 + seed, 1000 * 1024), Default::default())
            .await
            .expect("put");
        digests.push(d.checksums.sha256);
    }
    let cache = cache(dir.path(), &backend, max).await;
    let [a, b, c, d] = [digests[0], digests[1], digests[2], digests[3]];
    for x in [a, b, c] {
        cache.get_bytes(&x, None).await.expect("fetch");
        assert!(disk_usage(dir.path()) <= max);
    }
    cache.get_bytes(&a, None).await.expect("hit"); // a is now the most recently used
    cache.get_bytes(&d, None).await.expect("fetch");
    assert!(
        disk_usage(dir.path()) <= max,
        "{} > {max}",
        disk_usage(dir.path())
    );
    let files =
        FileSystemProvider::new(dir.path().join("cache"), KeyLayout::default()).expect("files");
    assert!(
        !files.exists(&b).await.expect("head"),
        "b, least recently used, was evicted"
    );
    for x in [a, c, d] {
        assert!(files.exists(&x).await.expect("head"));
    }
    assert_eq!(cache.stats().evictions, 1);
    let reads = backend.reads.load(Ordering::SeqCst);

    // A restart finds what is on disk (and drops a partial file).
    std::fs::write(dir.path().join("cache/_pre/partial.fetch"), b"half").expect("partial");
    drop(cache);
    let cache = CachedProvider::open(
        Arc::new(backend.clone()),
        KeyLayout::default(),
        settings(dir.path(), max),
    )
    .await
    .expect("reopen");
    assert_eq!(cache.stats().entries, 3);
    for x in [a, c, d] {
        cache.get_bytes(&x, None).await.expect("hit");
    }
    assert_eq!(
        backend.reads.load(Ordering::SeqCst),
        reads,
        "served from the re-indexed files"
    );
    assert!(!dir.path().join("cache/_pre/partial.fetch").exists());
}

#[tokio::test]
async fn a_corrupt_cache_file_is_dropped_and_fetched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SlowBackend::default();
    let small = test_bytes(30, 100_000);
    let large = test_bytes(31, 3 << 20);
    let cache = cache(dir.path(), &backend, 64 << 20).await;
    let files =
        FileSystemProvider::new(dir.path().join("cache"), KeyLayout::default()).expect("files");
    for data in [&small, &large] {
        let digest = backend
            .memory
            .put_bytes(data.clone(), Default::default())
            .await
            .expect("put")
            .checksums
            .sha256;
        assert_eq!(&cache.get_bytes(&digest, None).await.expect("fetch"), data);
        let path = files.path_of(&digest);
        let mut bytes = std::fs::read(&path).expect("cached");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).expect("corrupt");
    }
    // Small: re-fetched within the request.
    let digest = ChecksumHasher::digest(&small).sha256;
    assert_eq!(
        cache.get_bytes(&digest, None).await.expect("re-fetched"),
        small
    );
    // Large: the read breaks; the next one is fetched again and right.
    let digest = ChecksumHasher::digest(&large).sha256;
    assert!(
        cache.get_bytes(&digest, None).await.is_err(),
        "never a complete wrong body"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        cache.get_bytes(&digest, None).await.expect("re-fetched"),
        large
    );
    assert_eq!(cache.stats().corrupt_dropped, 2);
    assert_eq!(backend.reads.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn uploads_fill_the_cache_unless_skipped_and_large_binaries_bypass_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SlowBackend::default();
    let mut s = settings(dir.path(), 64 << 20);
    s.skip_during_upload = false;
    s.max_file_size_limit = 1 << 20;
    let cache = CachedProvider::open(Arc::new(backend.clone()), KeyLayout::default(), s)
        .await
        .expect("cache");
    let small = test_bytes(40, 500_000);
    let digest = cache
        .put_bytes(small.clone(), Default::default())
        .await
        .expect("put")
        .checksums
        .sha256;
    assert_eq!(cache.get_bytes(&digest, None).await.expect("hit"), small);
    assert_eq!(
        backend.reads.load(Ordering::SeqCst),
        0,
        "served from what the upload cached"
    );

    let large = test_bytes(41, 2 << 20);
    let digest = cache
        .put_bytes(large.clone(), Default::default())
        .await
        .expect("put")
        .checksums
        .sha256;
    for _ in 0..2 {
        assert_eq!(cache.get_bytes(&digest, None).await.expect("read"), large);
    }
    assert_eq!(
        backend.reads.load(Ordering::SeqCst),
        2,
        "above maxFileSizeLimit every read goes to the backend"
    );
    let files =
        FileSystemProvider::new(dir.path().join("cache"), KeyLayout::default()).expect("files");
    assert!(!files.exists(&digest).await.expect("head"));
}
