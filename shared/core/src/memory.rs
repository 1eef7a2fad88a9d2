//! An in-memory provider for unit tests of wrappers and of the service layer. It honours the
//! same contract as the real backends (hash while storing, verify, NotFound) but keeps whole
//! binaries in memory, so it must never be used to serve real traffic.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::provider::check_range;
use crate::{
    BinaryProvider, ByteStream, ChecksumHasher, Error, GetOptions, GetResult, Health, ObjectMeta,
    PutOptions, PutResult, Result, Sha256,
};

/// Binaries in a `HashMap`.
#[derive(Debug, Clone, Default)]
pub struct InMemoryProvider {
    objects: Arc<Mutex<HashMap<Sha256, (Bytes, SystemTime)>>>,
    /// Reported total space, for tests of free-space placement; `None`: unknown, as for an
    /// object store.
    capacity: Option<u64>,
}

impl InMemoryProvider {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that reports `capacity` bytes of total space and what is left of it as
    /// free space.
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            capacity: Some(capacity),
            ..Self::default()
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<Sha256, (Bytes, SystemTime)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Display for InMemoryProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory")
    }
}

fn not_found(digest: &Sha256) -> Error {
    Error::NotFound {
        what: format!("binary {digest}"),
    }
}

#[async_trait]
impl BinaryProvider for InMemoryProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let chunks: Vec<Bytes> = body.try_collect().await?;
        let bytes = Bytes::from(chunks.concat());
        let size = bytes.len() as u64;
        match opts.size {
            Some(expected) if size < expected => {
                return Err(Error::Truncated {
                    expected,
                    received: size,
                });
            }
            Some(expected) if size > expected => return Err(Error::TooLong { expected }),
            _ => {}
        }
        let checksums = ChecksumHasher::digest(&bytes);
        opts.expected.verify(&checksums)?;
        let mut objects = self.objects();
        let created = !objects.contains_key(&checksums.sha256);
        objects
            .entry(checksums.sha256)
            .or_insert((bytes, SystemTime::now()));
        Ok(PutResult {
            checksums,
            size,
            created,
        })
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        let (bytes, last_modified) = self
            .objects()
            .get(digest)
            .cloned()
            .ok_or_else(|| not_found(digest))?;
        let size = bytes.len() as u64;
        let range = check_range(opts.range, size)?;
        // Ranges are checked against the size, which fits in memory, so they fit in usize.
        let slice = bytes.slice(range.start as usize..range.end as usize);
        Ok(GetResult {
            meta: ObjectMeta {
                digest: *digest,
                size,
                last_modified,
            },
            range,
            stream: futures::stream::once(async move { Ok(slice) }).boxed(),
        })
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        let objects = self.objects();
        let (bytes, last_modified) = objects.get(digest).ok_or_else(|| not_found(digest))?;
        Ok(ObjectMeta {
            digest: *digest,
            size: bytes.len() as u64,
            last_modified: *last_modified,
        })
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.objects().remove(digest);
        Ok(())
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let items: Vec<Result<ObjectMeta>> = self
            .objects()
            .iter()
            .map(|(digest, (bytes, t))| {
                Ok(ObjectMeta {
                    digest: *digest,
                    size: bytes.len() as u64,
                    last_modified: *t,
                })
            })
            .collect();
        futures::stream::iter(items).boxed()
    }

    async fn health(&self) -> Result<Health> {
        let Some(total) = self.capacity else {
            return Ok(Health::default());
        };
        let used: u64 = self.objects().values().map(|(b, _)| b.len() as u64).sum();
        Ok(Health {
            free_space: Some(total.saturating_sub(used)),
            total_space: Some(total),
        })
    }
}
