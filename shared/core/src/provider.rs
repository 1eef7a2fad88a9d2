//! The `BinaryProvider` trait: what every storage backend (filesystem, S3, GCS, Azure) and every
//! wrapper (sharding, cache, eventual queue, retry) offers. Few required methods; conveniences
//! live in [`BinaryProviderExt`]. Providers store bytes by SHA-256 only: they know nothing of
//! repositories, paths or the database.

use std::fmt::{Debug, Display};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::signing::DownloadSigner;
use crate::{Checksums, Error, ExpectedChecksums, PresignedUploads, Result, Sha256};

/// A stream of body bytes, as received from a client or read from a backend.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// How to store a body.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Checksums the client declared; a mismatch stores nothing.
    pub expected: ExpectedChecksums,
    /// The announced length (`Content-Length`); fewer or more bytes store nothing.
    pub size: Option<u64>,
}

/// What a successful put stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    pub checksums: Checksums,
    pub size: u64,
    /// `false` when an identical binary was already stored (deduplicated).
    pub created: bool,
}

/// How to read a binary.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// A byte range (end exclusive); `None` reads everything.
    pub range: Option<Range<u64>>,
}

/// A stored binary as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub digest: Sha256,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// An open read of a binary.
pub struct GetResult {
    pub meta: ObjectMeta,
    /// The byte range the stream carries (end exclusive).
    pub range: Range<u64>,
    pub stream: ByteStream,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Capacity and reachability of a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Bytes still free, where the backend can tell (object stores cannot).
    pub free_space: Option<u64>,
    /// Total bytes, where the backend can tell.
    pub total_space: Option<u64>,
}

/// A store of binaries keyed by SHA-256.
///
/// Contract, checked by the conformance tests:
/// - `put_opts` hashes the body in the same pass as it stores it, and makes the binary visible
///   under its digest only once every byte is durable and every declared checksum and the
///   declared size matched. On any error nothing new is visible.
/// - Storing bytes that are already stored succeeds and reports `created: false`.
/// - A missing binary is [`Error::NotFound`], never a generic error.
/// - `delete` of a missing binary succeeds.
#[async_trait]
pub trait BinaryProvider: Send + Sync + Debug + Display + 'static {
    /// Stores a body and returns its digests.
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult>;

    /// Opens a binary, or a range of it, for streaming.
    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult>;

    /// Size and time of a stored binary.
    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta>;

    /// Removes a binary; succeeds if it is already gone.
    async fn delete(&self, digest: &Sha256) -> Result<()>;

    /// Every stored binary, in no particular order.
    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>>;

    /// Free space and reachability; an error means the backend is unusable now.
    async fn health(&self) -> Result<Health>;

    /// Stores a local file whose SHA-256 and size are already known: the eventual queue
    /// handing a queued binary to its backend. The digest is still verified (a file that does
    /// not hash to `sha256` gives [`Error::ChecksumMismatch`] and stores nothing). Object stores
    /// override it to send the file in parallel parts, retrying each part, instead of one stream.
    /// Returns whether the binary was created (`false`: it was already stored).
    async fn put_file(&self, path: &Path, sha256: &Sha256, size: u64) -> Result<bool> {
        put_file_as_stream(self, path, sha256, size).await
    }

    /// The provider's staging side, if it can write bytes durably before it knows their
    /// digest, at no extra cost (a local disk: write, then rename). Wrappers that write one body
    /// to several providers hash it once and stage it on each. Default: `None`.
    fn as_stager(&self) -> Option<&dyn Stager> {
        None
    }

    /// Signs download URLs for this provider's binaries, where it can: an object store with
    /// its signer attached ([`crate::signing::SignedProvider`]). A wrapper passes it on when a
    /// URL to the store below serves what the wrapper would, and refuses it (`None`)
    /// otherwise. Default: `None`.
    fn download_signer(&self) -> Option<&dyn DownloadSigner> {
        None
    }

    /// Takes presigned upload sessions, where the store can (S3): clients then send their
    /// bytes to it directly. Default: `None`.
    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        None
    }

    /// Removes the staging a crash left behind (temporary files on this node's disks older
    /// than `age.local`; staging objects in a shared store older than `age.shared`, if given)
    /// and returns how many. Default: nothing to sweep.
    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        let _ = age;
        Ok(0)
    }
}

/// How old staging must be before [`BinaryProvider::clean_staging`] removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingAge {
    /// Temporary files on this node's own disks, which only this process writes: at start-up
    /// anything older than the orphan grace is a crash's leftover.
    pub local: Duration,
    /// Staging objects in a store other nodes write too; `None` leaves them alone.
    pub shared: Option<Duration>,
}

/// Writes bodies without hashing them; the caller hashes once and names the result.
#[async_trait]
pub trait Stager: Send + Sync {
    /// Writes the body durably under no name. `size`, when given, must match the body's
    /// length (else [`Error::Truncated`] or [`Error::TooLong`] and nothing is kept).
    async fn stage(&self, body: ByteStream, size: Option<u64>) -> Result<Box<dyn StagedBinary>>;
}

/// A body written by a [`Stager`], not yet visible. Dropping it discards it.
#[async_trait]
pub trait StagedBinary: Send + Sync + Debug {
    /// Bytes written.
    fn size(&self) -> u64;
    /// Makes the bytes visible under `digest`, which the caller computed from them. Returns
    /// whether the binary was created (`false`: it was already stored).
    async fn commit(self: Box<Self>, digest: &Sha256) -> Result<bool>;
}

/// Bytes per read of a local file: large enough that a read costs little per byte, small
/// enough that a few in flight stay small.
pub const READ_CHUNK: usize = 512 << 10;

/// Streams a local file in [`READ_CHUNK`]s (the default [`BinaryProvider::put_file`]).
pub(crate) async fn read_file_stream(path: &Path) -> Result<ByteStream> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::storage_io("local file", path.display(), e))?;
    let shown = path.display().to_string();
    Ok(
        tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
            .map(move |chunk| chunk.map_err(|e| Error::storage_io("local file", &shown, e)))
            .boxed(),
    )
}

/// [`BinaryProvider::put_file`] through `put_opts`: the file streamed as a body whose SHA-256
/// and size are declared. For providers (and wrappers) with nothing faster.
pub async fn put_file_as_stream<P: BinaryProvider + ?Sized>(
    provider: &P,
    path: &Path,
    sha256: &Sha256,
    size: u64,
) -> Result<bool> {
    let body = read_file_stream(path).await?;
    let expected = ExpectedChecksums {
        sha256: Some(*sha256),
        ..Default::default()
    };
    let opts = PutOptions {
        expected,
        size: Some(size),
    };
    Ok(provider.put_opts(body, opts).await?.created)
}

/// Conveniences over [`BinaryProvider`], for every provider.
#[async_trait]
pub trait BinaryProviderExt: BinaryProvider {
    /// Stores bytes held in memory.
    async fn put_bytes(&self, bytes: Bytes, expected: ExpectedChecksums) -> Result<PutResult> {
        let size = bytes.len() as u64;
        let body = futures::stream::once(async move { Ok(bytes) }).boxed();
        self.put_opts(
            body,
            PutOptions {
                expected,
                size: Some(size),
            },
        )
        .await
    }

    /// Opens a whole binary.
    async fn get(&self, digest: &Sha256) -> Result<GetResult> {
        self.get_opts(digest, GetOptions::default()).await
    }

    /// Reads a whole binary, or a range of it, into memory (tests, small objects).
    async fn get_bytes(&self, digest: &Sha256, range: Option<Range<u64>>) -> Result<Bytes> {
        let result = self.get_opts(digest, GetOptions { range }).await?;
        let chunks: Vec<Bytes> = result.stream.try_collect().await?;
        Ok(Bytes::from(chunks.concat()))
    }

    /// Whether a binary is stored.
    async fn exists(&self, digest: &Sha256) -> Result<bool> {
        match self.head(digest).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: BinaryProvider + ?Sized> BinaryProviderExt for T {}

/// Reads a body of announced length whole (small bodies held in memory), refusing a short
/// ([`Error::Truncated`]) or long ([`Error::TooLong`]) one.
pub async fn read_exactly(mut body: ByteStream, size: u64) -> Result<Bytes> {
    let mut buffer = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if buffer.len() as u64 + chunk.len() as u64 > size {
            return Err(Error::TooLong { expected: size });
        }
        buffer.extend_from_slice(&chunk);
    }
    if (buffer.len() as u64) < size {
        return Err(Error::Truncated {
            expected: size,
            received: buffer.len() as u64,
        });
    }
    Ok(buffer.freeze())
}

/// The answer for a body whose bytes are stored already (their key exists): the rest of the
/// body is read (a short or overlong one is still refused) and hashed, every declared checksum
/// checked, and nothing stored (`created: false`).
pub async fn already_stored(
    body: ByteStream,
    hashing: crate::HashingTask,
    opts: &PutOptions,
) -> Result<PutResult> {
    drain(body, opts.size).await?;
    let (checksums, size) = hashing.finish().await?;
    opts.expected.verify(&checksums)?;
    Ok(PutResult {
        checksums,
        size,
        created: false,
    })
}

/// Reads a body to its end without keeping it (its bytes are stored already), refusing a short
/// or long one when its length was announced. Returns the bytes read.
pub async fn drain(mut body: ByteStream, size: Option<u64>) -> Result<u64> {
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        received += chunk?.len() as u64;
        if let Some(size) = size
            && received > size
        {
            return Err(Error::TooLong { expected: size });
        }
    }
    if let Some(size) = size
        && received < size
    {
        return Err(Error::Truncated {
            expected: size,
            received,
        });
    }
    Ok(received)
}

/// Checks a requested range against a binary's size.
pub fn check_range(range: Option<Range<u64>>, size: u64) -> Result<Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(r) if r.start <= r.end && r.end <= size && (r.start < size || r.start == r.end) => {
            Ok(r)
        }
        Some(_) => Err(Error::RangeNotSatisfiable { size }),
    }
}
