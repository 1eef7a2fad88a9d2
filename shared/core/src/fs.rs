//! The local filesystem provider (template `file-system`): binaries under
//! `<fileStoreDir>/ab/abcdef…`, uploads staged in `<fileStoreDir>/_pre/` (same filesystem),
//! fsynced, then renamed into place, so a crash never leaves a partial binary under its final
//! name. It must not know about repositories, paths or the database.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

mod uncached;

pub use uncached::UncachedWriter;

use crate::provider::check_range;
use crate::{
    BinaryProvider, ByteStream, Error, GetOptions, GetResult, Health, KeyLayout, ObjectMeta,
    PutOptions, PutResult, Result, Sha256, StagedBinary, Stager, StagingAge,
};

/// Folder, under the filestore root, where uploads are staged (Artifactory's name for it).
/// The staging folder of a directory store ([`crate::STAGING`]).
pub const TEMP_DIR_NAME: &str = crate::STAGING;
/// Chunks queued between the request body and the writing thread.
const WRITE_QUEUE_CHUNKS: usize = 16;
/// Write buffer of the writing thread: few, large write calls.
const WRITE_BUFFER: usize = 1 << 20;
/// Bodies announced at up to this size are received whole, then hashed, written, fsynced and
/// named in one blocking task: for a small deploy the hand-offs to the hashing and writing
/// threads cost more than the work (docs/benchmarks.md, "Small deploys").
const SMALL_BODY: u64 = 64 << 10;
/// Size of the chunks a download is read in.
pub(crate) use crate::provider::READ_CHUNK;
/// Bytes the kernel is asked to read ahead of the current position.
const KERNEL_READ_AHEAD: u64 = 8 << 20;
/// Chunks read ahead of a slow client.
const READ_AHEAD_CHUNKS: usize = 4;

/// Stores binaries in a local directory.
#[derive(Debug, Clone)]
pub struct FileSystemProvider {
    root: PathBuf,
    temp_dir: PathBuf,
    layout: KeyLayout,
}

impl fmt::Display for FileSystemProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file-system:{}", self.root.display())
    }
}

impl FileSystemProvider {
    /// Opens (creating it if needed) a filestore rooted at `root`.
    pub fn new(root: impl Into<PathBuf>, layout: KeyLayout) -> Result<Self> {
        let root = root.into();
        let temp_dir = root.join(TEMP_DIR_NAME);
        std::fs::create_dir_all(&temp_dir).map_err(|e| Error::Storage {
            backend: "file-system".into(),
            key: temp_dir.display().to_string(),
            source: format!("cannot create the filestore directory: {e}").into(),
            retryable: false,
        })?;
        Ok(Self {
            root,
            temp_dir,
            layout,
        })
    }

    /// The filestore root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The staging folder.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// Where the binary with this digest is (or would be) stored.
    pub fn path_of(&self, digest: &Sha256) -> PathBuf {
        self.root.join(self.layout.key(digest).as_str())
    }

    fn io_error(&self, key: impl fmt::Display, e: io::Error) -> Error {
        // A file missing because the whole filestore is (a disk not mounted) is a broken store,
        // not a missing binary: a sharded store must try the other copies and mark this down.
        if e.kind() == io::ErrorKind::NotFound && !self.root.is_dir() {
            return Error::Storage {
                backend: self.to_string(),
                key: key.to_string(),
                source: format!(
                    "the filestore directory {} is missing (a disk that is not mounted?)",
                    self.root.display()
                )
                .into(),
                retryable: true,
            };
        }
        Error::storage_io(self, key, e)
    }

    /// Removes staged files left by a crash: those an earlier run of this node wrote
    /// (whatever their age), and any older than `older_than`; returns how many. Younger ones
    /// of this run, or of another node sharing the directory, may belong to uploads in flight.
    pub async fn clean_temp(&self, older_than: Duration) -> Result<usize> {
        let dir = self.temp_dir.clone();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let cutoff = SystemTime::now() - older_than;
            let mut removed = 0;
            for entry in std::fs::read_dir(&dir).map_err(|e| this.io_error(dir.display(), e))? {
                let Ok(entry) = entry else { continue };
                let stale = left_by_an_earlier_run(&entry.file_name().to_string_lossy())
                    || entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t < cutoff);
                if stale && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| join_error(self, e))?
    }
}

fn join_error(backend: &impl fmt::Display, e: tokio::task::JoinError) -> Error {
    Error::Storage {
        backend: backend.to_string(),
        key: "-".into(),
        source: Box::new(e),
        retryable: false,
    }
}

/// Who writes this process's staged files: `(owner, process)`. Staged files are named
/// `<owner>.<process>.<random>.tmp`. The owner is the data directory's identity
/// ([`set_staging_owner`], kept in its lock file), the process a token of this run. A staged
/// file with this owner and another process token was left by an earlier run of this very
/// node (the data-directory lock lets only one run at a time), so a sweep removes it whatever
/// its age; another owner's (a node sharing the directory) only by age.
static STAGING_OWNER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Names the data directory that owns this process's staged files (at most 32 letters and
/// digits are kept). Call it once, at start-up, before any upload; without it a process is an
/// owner of its own, and only age tells leftovers.
pub fn set_staging_owner(owner: &str) {
    let owner: String = owner
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let process = format!("{:016x}", rand::random::<u64>());
    let _ = STAGING_OWNER.set((owner, process));
}

fn staging_owner() -> &'static (String, String) {
    STAGING_OWNER.get_or_init(|| {
        let process = format!("{:016x}", rand::random::<u64>());
        (format!("p{process}"), process)
    })
}

/// Whether a staged file's name says an earlier run of this node wrote it.
fn left_by_an_earlier_run(name: &str) -> bool {
    let (owner, process) = staging_owner();
    let mut parts = name.split('.');
    matches!(
        (parts.next(), parts.next()),
        (Some(o), Some(p)) if o == owner && p != process
    ) && name.ends_with(".tmp")
}

/// A staged upload; deleted on drop unless persisted.
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn create(dir: &Path) -> io::Result<(Self, File)> {
        let (owner, process) = staging_owner();
        let name = format!("{owner}.{process}.{:032x}.tmp", rand::random::<u128>());
        let path = dir.join(name);
        let file = File::create_new(&path)?;
        Ok((Self { path: Some(path) }, file))
    }

    /// Moves the staged file, which the caller checked against the digest, to `target`.
    /// Returns whether it created the binary (`false`: a copy was there). An existing copy is
    /// replaced, not trusted: it may be damaged in a way its size does not show, and the staged
    /// bytes are known good. The rename is atomic, so a reader sees one copy or the other
    /// whole, and the fresh file tells garbage collection the bytes are wanted again.
    fn persist(mut self, target: &Path) -> io::Result<bool> {
        let Some(path) = self.path.as_deref() else {
            return Err(io::Error::other("staged file already persisted"));
        };
        let existed = std::fs::metadata(target).is_ok_and(|m| m.is_file());
        let parent = target
            .parent()
            .ok_or_else(|| io::Error::other("binary path has no parent"))?;
        // Only the prefix folder is created: a missing root is a disk that is not mounted,
        // and recreating it would put binaries on the disk below the mount point.
        let new_parent = match std::fs::create_dir(parent) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        std::fs::rename(path, target)?;
        self.path = None;
        File::open(parent)?.sync_all()?;
        if new_parent && let Some(grandparent) = parent.parent() {
            File::open(grandparent)?.sync_all()?;
        }
        Ok(!existed)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a staged upload");
        }
    }
}

/// An upload written and fsynced in `_pre`, waiting for its name.
#[derive(Debug)]
struct StagedFile {
    provider: FileSystemProvider,
    temp: TempFile,
    size: u64,
}

#[async_trait]
impl StagedBinary for StagedFile {
    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(self: Box<Self>, digest: &Sha256) -> Result<bool> {
        let StagedFile { provider, temp, .. } = *self;
        let target = provider.path_of(digest);
        tokio::task::spawn_blocking(move || temp.persist(&target))
            .await
            .map_err(|e| join_error(&provider, e))?
            // Not `io_error`: a folder missing here is a broken store, not a missing binary.
            .map_err(|e| Error::storage_write(&provider, provider.layout.key(digest), e))
    }
}

impl FileSystemProvider {
    /// [`BinaryProvider::put_opts`] for a body of `size` bytes, at most [`SMALL_BODY`]: the
    /// same checks and the same durable order (staged, fsynced, checked, renamed, the folder
    /// fsynced), with one hand-off to a blocking thread instead of five.
    async fn put_small(
        &self,
        mut body: ByteStream,
        size: u64,
        expected: crate::ExpectedChecksums,
    ) -> Result<PutResult> {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > size {
                return Err(Error::TooLong { expected: size });
            }
            bytes.extend_from_slice(&chunk);
        }
        let received = bytes.len() as u64;
        if received < size {
            return Err(Error::Truncated {
                expected: size,
                received,
            });
        }
        let provider = self.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<PutResult> {
            let checksums = crate::ChecksumHasher::digest(&bytes);
            expected.verify(&checksums)?;
            let written = (|| {
                let (temp, mut file) = TempFile::create(&provider.temp_dir)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                temp.persist(&provider.path_of(&checksums.sha256))
            })();
            let created = written.map_err(|e| {
                Error::storage_write(&provider, provider.layout.key(&checksums.sha256), e)
            })?;
            Ok(PutResult {
                checksums,
                size: received,
                created,
            })
        });
        stored.await.map_err(|e| join_error(self, e))?
    }
}

/// How a staged file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Through the page cache: the binary is read soon (uploaded, downloaded).
    Cached,
    /// Around it where the filesystem allows ([`uncached`]): a copy kept in case.
    Uncached,
}

impl FileSystemProvider {
    /// [`Stager::stage`] around the page cache (`O_DIRECT` where the filesystem takes it):
    /// for a copy that is kept in case and hardly ever read, such as a cluster peer's copy of
    /// a queued upload. The same bytes, checks and durability as [`Stager::stage`].
    pub async fn stage_uncached(
        &self,
        body: ByteStream,
        size: Option<u64>,
    ) -> Result<Box<dyn StagedBinary>> {
        self.stage_with(body, size, Caching::Uncached).await
    }

    async fn stage_with(
        &self,
        mut body: ByteStream,
        size: Option<u64>,
        caching: Caching,
    ) -> Result<Box<dyn StagedBinary>> {
        let temp_dir = self.temp_dir.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<TempFile> {
            let (temp, file) = TempFile::create(&temp_dir)?;
            let file = match caching {
                Caching::Cached => {
                    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
                    while let Some(chunk) = rx.blocking_recv() {
                        out.write_all(&chunk)?;
                    }
                    out.into_inner().map_err(|e| e.into_error())?
                }
                Caching::Uncached => {
                    let mut out = uncached::UncachedWriter::new(file, WRITE_BUFFER);
                    while let Some(chunk) = rx.blocking_recv() {
                        out.write_all(&chunk)?;
                    }
                    out.finish()?
                }
            };
            file.sync_all()?;
            Ok(temp)
        });

        // Whatever goes wrong below, returning drops the writer's staged file.
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if let Some(expected) = size
                && received > expected
            {
                return Err(Error::TooLong { expected });
            }
            if tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        drop(tx);
        let temp = writer
            .await
            .map_err(|e| join_error(self, e))?
            // Not `io_error`: a missing staging folder is a broken store, not a missing binary.
            .map_err(|e| Error::storage_write(self, TEMP_DIR_NAME, e))?;
        if let Some(expected) = size
            && received < expected
        {
            return Err(Error::Truncated { expected, received });
        }
        Ok(Box::new(StagedFile {
            provider: self.clone(),
            temp,
            size: received,
        }))
    }
}

#[async_trait]
impl Stager for FileSystemProvider {
    async fn stage(&self, body: ByteStream, size: Option<u64>) -> Result<Box<dyn StagedBinary>> {
        self.stage_with(body, size, Caching::Cached).await
    }
}

#[async_trait]
impl BinaryProvider for FileSystemProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        if let Some(size) = opts.size
            && size <= SMALL_BODY
        {
            return self.put_small(body, size, opts.expected).await;
        }
        let (body, hashing) = crate::hash_stream(body);
        let staged = self.stage(body, opts.size).await?;
        // The file is named (renamed, and its folder synced) while MD5 finishes.
        let (sha256, _, rest) = hashing.until_storable(&opts.expected).await?;
        let (created, hashed) = tokio::join!(staged.commit(&sha256), rest);
        let (checksums, size) = hashed?;
        Ok(PutResult {
            checksums,
            size,
            created: created?,
        })
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        let path = self.path_of(digest);
        let key = self.layout.key(digest);
        let opened = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let file = File::open(&path)?;
            let meta = file.metadata()?;
            Ok((
                file,
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ))
        })
        .await
        .map_err(|e| join_error(self, e))?
        .map_err(|e| self.io_error(&key, e))?;
        let (mut file, size, last_modified) = opened;
        let range = check_range(opts.range, size)?;

        // A reading thread fills a bounded queue, so the disk is read ahead of the socket
        // while memory stays at READ_AHEAD_CHUNKS × READ_CHUNK.
        let (tx, mut rx) = mpsc::channel::<Result<Bytes>>(READ_AHEAD_CHUNKS);
        let (start, len) = (range.start, range.end - range.start);
        let backend = self.to_string();
        tokio::task::spawn_blocking(move || {
            let fail = |e: io::Error| Err(Error::storage_io(&backend, &key, e));
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                let _ = tx.blocking_send(fail(e));
                return;
            }
            let _ = rustix::fs::fadvise(&file, start, None, rustix::fs::Advice::Sequential);
            let mut left = len;
            let mut hinted_until = start;
            while left > 0 {
                // Ask the kernel to fetch the next window while this thread copies and the
                // socket drains, so disk reads overlap with sending. Each byte is hinted once.
                let position = start + (len - left);
                if position + KERNEL_READ_AHEAD / 2 >= hinted_until {
                    let from = hinted_until.max(position);
                    let _ = rustix::fs::fadvise(
                        &file,
                        from,
                        NonZeroU64::new(KERNEL_READ_AHEAD),
                        rustix::fs::Advice::WillNeed,
                    );
                    hinted_until = from + KERNEL_READ_AHEAD;
                }
                let want = READ_CHUNK.min(usize::try_from(left).unwrap_or(READ_CHUNK));
                // read_to_end fills spare capacity without zeroing it first.
                let mut buf = Vec::with_capacity(want);
                match (&mut file).take(want as u64).read_to_end(&mut buf) {
                    Ok(0) => {
                        let short = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the stored binary is shorter than its recorded size",
                        );
                        let _ = tx.blocking_send(fail(short));
                        return;
                    }
                    Ok(n) => {
                        left -= n as u64;
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return; // the reader went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(fail(e));
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        Ok(GetResult {
            meta: ObjectMeta {
                digest: *digest,
                size,
                last_modified,
            },
            range,
            stream,
        })
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        let meta = tokio::fs::metadata(self.path_of(digest))
            .await
            .map_err(|e| self.io_error(self.layout.key(digest), e))?;
        Ok(ObjectMeta {
            digest: *digest,
            size: meta.len(),
            last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        match tokio::fs::remove_file(self.path_of(digest)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error(self.layout.key(digest), e)),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let (tx, mut rx) = mpsc::channel::<Result<ObjectMeta>>(256);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let walk = || -> io::Result<()> {
                let send = |key: &str, meta: std::fs::Metadata| -> bool {
                    let Some(digest) = this.layout.parse(key) else {
                        return true;
                    };
                    let item = ObjectMeta {
                        digest,
                        size: meta.len(),
                        last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    };
                    tx.blocking_send(Ok(item)).is_ok()
                };
                for top in std::fs::read_dir(&this.root)? {
                    let top = top?;
                    let name = top.file_name();
                    let Some(top_name) = name.to_str() else {
                        continue;
                    };
                    if top_name == TEMP_DIR_NAME {
                        continue;
                    }
                    if !top.file_type()?.is_dir() {
                        if !send(top_name, top.metadata()?) {
                            return Ok(());
                        }
                        continue;
                    }
                    for entry in std::fs::read_dir(top.path())? {
                        let entry = entry?;
                        let name = entry.file_name();
                        let Some(name) = name.to_str() else { continue };
                        if !send(&format!("{top_name}/{name}"), entry.metadata()?) {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            };
            if let Err(e) = walk() {
                let _ = tx.blocking_send(Err(this.io_error(this.root.display(), e)));
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    fn as_stager(&self) -> Option<&dyn Stager> {
        Some(self)
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        Ok(self.clean_temp(age.local).await? as u64)
    }

    async fn health(&self) -> Result<Health> {
        let temp_dir = self.temp_dir.clone();
        let stat = tokio::task::spawn_blocking(move || -> io::Result<_> {
            // A disk mounted again empty gets its staging folder back; a missing root (the
            // disk is not mounted) is not recreated, or binaries would fill the disk below.
            if let Err(e) = std::fs::create_dir(&temp_dir)
                && e.kind() != io::ErrorKind::AlreadyExists
            {
                return Err(e);
            }
            Ok(rustix::fs::statvfs(&temp_dir)?)
        })
        .await
        .map_err(|e| join_error(self, e))?
        .map_err(|e| Error::Storage {
            // Not `io_error`: a missing root is a missing disk, not a missing binary.
            backend: self.to_string(),
            key: self.root.display().to_string(),
            source: Box::new(e),
            retryable: true,
        })?;
        Ok(Health {
            free_space: Some(stat.f_bavail.saturating_mul(stat.f_frsize)),
            total_space: Some(stat.f_blocks.saturating_mul(stat.f_frsize)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::test_bytes;
    use crate::{BinaryProviderExt, ChecksumHasher, ExpectedChecksums};

    #[tokio::test]
    async fn a_damaged_copy_of_the_same_size_is_replaced_by_a_good_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FileSystemProvider::new(dir.path(), KeyLayout::default()).expect("fs");
        let data = test_bytes(7, 50_000);
        let digest = ChecksumHasher::digest(&data).sha256;
        let first = fs
            .put_bytes(data.clone(), ExpectedChecksums::none())
            .await
            .expect("put");
        assert!(first.created);
        // Bit rot: same size, other bytes.
        let stored = fs.path_of(&digest);
        std::fs::write(&stored, vec![0u8; data.len()]).expect("damage");
        let again = fs
            .put_bytes(data.clone(), ExpectedChecksums::none())
            .await
            .expect("put again");
        assert!(!again.created, "the binary was there: deduplicated");
        assert_eq!(
            std::fs::read(&stored).expect("read"),
            data.to_vec(),
            "healed"
        );
    }
}
