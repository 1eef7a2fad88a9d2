//! The generic object-store provider on an in-memory backend with injected faults. The real
//! backends (GCS, Azure) run the same conformance suite against their emulators.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;

use super::*;
use crate::conformance::{self, test_bytes};
use crate::{BinaryProviderExt, ChecksumHasher, ExpectedChecksums};

/// Keys in a map; the next `failures` calls fail with a transient error.
#[derive(Debug, Default)]
struct MemoryObjects {
    objects: Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>,
    failures: AtomicU32,
    calls: AtomicU32,
    /// Whether it takes local files ([`ObjectBackend::put_file`]), like S3.
    takes_files: bool,
    /// How many bodies came in one request, through a writer, and as a file.
    small_puts: AtomicU32,
    writers: AtomicU32,
    file_puts: AtomicU32,
}

impl fmt::Display for MemoryObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory-objects")
    }
}

impl MemoryObjects {
    fn fault(&self, key: &str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::Storage {
                backend: self.to_string(),
                key: key.to_string(),
                source: "connection reset (injected)".into(),
                retryable: true,
            });
        }
        Ok(())
    }

    fn keys(&self) -> Vec<String> {
        self.objects.lock().expect("lock").keys().cloned().collect()
    }

    fn insert_if_absent(&self, key: &str, bytes: Bytes) -> bool {
        let mut objects = self.objects.lock().expect("lock");
        if objects.contains_key(key) {
            return false;
        }
        objects.insert(key.to_string(), (bytes, SystemTime::now()));
        true
    }
}

#[derive(Debug)]
struct MemoryWriter {
    objects: Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>,
    key: String,
    buffer: BytesMut,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>, checksums: &Checksums) -> Result<bool> {
        assert_eq!(ChecksumHasher::digest(&self.buffer).md5, checksums.md5);
        let mut objects = self.objects.lock().expect("lock");
        if objects.contains_key(&self.key) {
            return Ok(false);
        }
        objects.insert(self.key, (self.buffer.freeze(), SystemTime::now()));
        Ok(true)
    }

    async fn abort(self: Box<Self>) {}
}

#[async_trait]
impl ObjectBackend for MemoryObjects {
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool> {
        self.fault(key)?;
        assert_eq!(ChecksumHasher::digest(&body).md5, checksums.md5);
        self.small_puts.fetch_add(1, Ordering::SeqCst);
        Ok(self.insert_if_absent(key, body))
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &Sha256,
        _verified: bool,
    ) -> Result<bool> {
        if !self.takes_files {
            return Err(Error::Unsupported("no files".into()));
        }
        self.fault(key)?;
        let bytes = Bytes::from(std::fs::read(path).expect("the spooled file is readable"));
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(ChecksumHasher::digest(&bytes).sha256, *sha256);
        self.file_puts.fetch_add(1, Ordering::SeqCst);
        Ok(self.insert_if_absent(key, bytes))
    }

    async fn writer(
        &self,
        key: &str,
        _size: Option<u64>,
        _sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryWriter {
            objects: Arc::clone(&self.objects),
            key: key.to_string(),
            buffer: BytesMut::new(),
        }))
    }

    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        _size: u64,
        _sha256: &Sha256,
    ) -> Result<bool> {
        self.fault(from)?;
        let bytes = self.objects.lock().expect("lock").get(from).cloned();
        let Some((bytes, _)) = bytes else {
            return Err(Error::NotFound {
                what: from.to_string(),
            });
        };
        Ok(self.insert_if_absent(to, bytes))
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        self.fault(key)?;
        match self.objects.lock().expect("lock").get(key) {
            Some((bytes, time)) => Ok(ObjectInfo {
                key: key.to_string(),
                size: bytes.len() as u64,
                last_modified: *time,
            }),
            None => Err(Error::NotFound {
                what: key.to_string(),
            }),
        }
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        self.fault(key)?;
        let bytes = self.objects.lock().expect("lock").get(key).cloned();
        match bytes {
            Some((bytes, _)) => {
                let part = bytes.slice(range.start as usize..range.end as usize);
                Ok(futures::stream::iter([Ok(part)]).boxed())
            }
            None => Err(Error::NotFound {
                what: key.to_string(),
            }),
        }
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.fault(key)?;
        self.objects.lock().expect("lock").remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let found: Vec<Result<ObjectInfo>> = self
            .objects
            .lock()
            .expect("lock")
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, (bytes, time))| {
                Ok(ObjectInfo {
                    key: key.clone(),
                    size: bytes.len() as u64,
                    last_modified: *time,
                })
            })
            .collect();
        futures::stream::iter(found).boxed()
    }

    async fn check(&self) -> Result<()> {
        self.fault("-")
    }
}

fn provider(small_upload_limit: u64) -> ObjectStoreProvider<MemoryObjects> {
    ObjectStoreProvider::new(
        MemoryObjects::default(),
        ObjectSettings {
            path: "/filestore/".into(),
            small_upload_limit,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn conformance_with_every_upload_streamed() {
    let p = provider(0);
    conformance::run_all(Arc::new(p.clone()), 10).await;
    assert_only_the_empty_binary_is_left(&p);
}

/// The suite deletes what it stores except the empty binary (shared by every run).
fn assert_only_the_empty_binary_is_left(p: &ObjectStoreProvider<MemoryObjects>) {
    let empty = ChecksumHasher::digest(b"").sha256;
    assert_eq!(
        p.backend().keys(),
        vec![p.key_of(&empty)],
        "nothing else left behind"
    );
}

#[tokio::test]
async fn conformance_with_small_uploads_in_one_request() {
    let p = provider(64 * 1024);
    conformance::run_all(Arc::new(p.clone()), 20).await;
    assert_only_the_empty_binary_is_left(&p);
}

#[tokio::test]
async fn keys_live_under_the_path_in_the_layout() {
    let p = provider(0);
    let data = test_bytes(1, 1000);
    let put = p
        .put_bytes(data, ExpectedChecksums::none())
        .await
        .expect("put");
    let hex = put.checksums.sha256.to_hex();
    assert_eq!(
        p.backend().keys(),
        vec![format!("filestore/{}/{hex}", &hex[..2])]
    );
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let p = provider(1 << 20);
    let data = test_bytes(2, 5000);
    p.backend().failures.store(3, Ordering::SeqCst);
    let put = p
        .put_bytes(data.clone(), ExpectedChecksums::none())
        .await
        .expect("put after three transient failures");
    p.backend().failures.store(3, Ordering::SeqCst);
    assert_eq!(
        p.get_bytes(&put.checksums.sha256, None)
            .await
            .expect("get after three transient failures"),
        data
    );
    p.backend().failures.store(3, Ordering::SeqCst);
    p.delete(&put.checksums.sha256)
        .await
        .expect("delete after three transient failures");

    // A backend that keeps failing gives up after the configured attempts, with an error
    // that still says it is transient.
    p.backend().failures.store(100, Ordering::SeqCst);
    let before = p.backend().calls.load(Ordering::SeqCst);
    let err = p.head(&put.checksums.sha256).await.expect_err("gives up");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(p.backend().calls.load(Ordering::SeqCst) - before, 4);
}

#[tokio::test]
async fn a_failed_streamed_upload_leaves_nothing_behind() {
    let p = provider(0);
    let data = test_bytes(3, 300_000);
    let body = futures::stream::iter([
        Ok(data.slice(..100_000)),
        Err(Error::Unavailable("client went away".into())),
    ])
    .boxed();
    p.put_opts(body, PutOptions::default())
        .await
        .expect_err("a failing body fails the upload");
    assert!(p.backend().keys().is_empty(), "{:?}", p.backend().keys());
}

#[tokio::test]
async fn stale_staging_objects_are_swept() {
    let p = provider(0);
    // What a crashed upload leaves: a staging object named like the provider's own.
    let left = format!("filestore/_pre/{:032x}", 0xdead_u128);
    p.backend()
        .insert_if_absent(&left, Bytes::from_static(b"x"));
    // Deeper keys under staging belong to others (S3's upload sessions): never swept here.
    let session = "filestore/_pre/sessions/an-open-session";
    p.backend()
        .insert_if_absent(session, Bytes::from_static(b"y"));
    assert_eq!(
        p.clean_stale_staging(Duration::from_secs(3600))
            .await
            .expect("sweep"),
        0,
        "a young staging object may belong to an upload in progress"
    );
    assert_eq!(
        p.clean_stale_staging(Duration::ZERO).await.expect("sweep"),
        1
    );
    assert_eq!(p.backend().keys(), vec![session.to_string()]);
}

/// A provider that spools bodies of 1,000 bytes and more (and of unknown length) in `dir`.
fn spooling_provider(takes_files: bool, dir: &Path) -> ObjectStoreProvider<MemoryObjects> {
    ObjectStoreProvider::new(
        MemoryObjects {
            takes_files,
            ..Default::default()
        },
        ObjectSettings {
            path: "filestore".into(),
            small_upload_limit: 500,
            spool: Some(Spool {
                dir: dir.to_path_buf(),
                direct_limit: 1000,
            }),
            ..Default::default()
        },
    )
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("spool dir").count()
}

#[tokio::test]
async fn conformance_with_large_uploads_spooled() {
    for takes_files in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = spooling_provider(takes_files, dir.path());
        conformance::run_all(Arc::new(p.clone()), 30).await;
        assert_only_the_empty_binary_is_left(&p);
        assert_eq!(
            spool_files(dir.path()),
            0,
            "no spool file outlives its upload"
        );
    }
}

#[tokio::test]
async fn each_body_takes_the_path_its_size_and_declaration_call_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = spooling_provider(true, dir.path());
    put_with(&p, test_bytes(10, 400), false, true).await;
    assert_eq!(paths_taken(&p), [1, 0, 0], "small: one request");
    put_with(&p, test_bytes(11, 800), false, true).await;
    assert_eq!(
        paths_taken(&p),
        [1, 1, 0],
        "below the spool limit: streamed"
    );
    put_with(&p, test_bytes(12, 5000), false, true).await;
    assert_eq!(paths_taken(&p), [1, 1, 1], "large: spooled, then a file");
    put_with(&p, test_bytes(13, 300), false, false).await;
    assert_eq!(paths_taken(&p), [1, 1, 2], "unknown length: spooled");
    put_with(&p, test_bytes(14, 5000), true, true).await;
    assert_eq!(
        paths_taken(&p),
        [1, 2, 2],
        "large and declared: streamed to its key"
    );
    assert_eq!(spool_files(dir.path()), 0);

    // With no memory to spare, a small body streams instead of being held.
    let p = ObjectStoreProvider::new(
        MemoryObjects::default(),
        ObjectSettings {
            memory_budget: 0,
            ..ObjectSettings::default()
        },
    );
    put_with(&p, test_bytes(15, 400), false, true).await;
    assert_eq!(
        paths_taken(&p),
        [0, 1, 0],
        "small, no memory budget: streamed"
    );
}

/// How many bodies went in one request, through a writer, and as a file.
fn paths_taken(p: &ObjectStoreProvider<MemoryObjects>) -> [u32; 3] {
    let b = p.backend();
    [&b.small_puts, &b.writers, &b.file_puts].map(|c| c.load(Ordering::SeqCst))
}

async fn put_with(
    p: &ObjectStoreProvider<MemoryObjects>,
    data: Bytes,
    declared: bool,
    announced: bool,
) {
    let expected = if declared {
        ExpectedChecksums {
            sha256: Some(ChecksumHasher::digest(&data).sha256),
            ..Default::default()
        }
    } else {
        ExpectedChecksums::none()
    };
    let opts = PutOptions {
        expected,
        size: announced.then_some(data.len() as u64),
    };
    let body = futures::stream::iter([Ok(data)]).boxed();
    let put = p.put_opts(body, opts).await.expect("put");
    assert!(put.created);
}
