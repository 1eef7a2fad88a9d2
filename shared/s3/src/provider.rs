//! The S3 provider (templates `s3-storage-v3-direct`, and the backend behind the eventual queue
//! of `s3-storage-v3`): binaries at `<path>/ab/abcdef…` in one bucket.
//!
//! Uploads below `maxFileSizeForDirectUpload` go to S3 while they are hashed, never touching
//! local disk. Small ones (up to `maxInMemoryUploadSize`, within a process-wide memory budget)
//! are held in memory until hashed, then sent as one conditional PUT (`If-None-Match: *`)
//! straight to their content-addressed key: one request, retryable by the SDK, and a 412 tells
//! that identical bytes were already there. Larger ones stream: straight to the content key
//! when the client declared the SHA-256, otherwise to a staging key `<path>/_pre/<random>` and
//! then a server-side copy to the content key, because a key must never hold bytes that do not
//! hash to its name.
//!
//! At or above the threshold, and for bodies of unknown length, the body is spooled to a
//! temporary file while hashed and sent as a multipart upload with parallel parts. When the
//! client declared the SHA-256 the content key is known up front, so instead the body is cut
//! into parts in memory (part size × (concurrency + 1), within the budget) and sent straight to
//! that key; the upload is completed only once the whole body hashed to the declared digest.
//!
//! Every PUT and part carries a SHA-256 checksum (`x-amz-checksum-sha256` or the SDK's
//! trailer), so S3 itself refuses damaged bytes. Whatever fails, the staging object is deleted
//! and the multipart upload aborted;
//! [`S3Provider::clean_stale_uploads`] sweeps what a crash left behind.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::{ByteStream as SdkStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use stowage_core::{
    BinaryProvider, ByteStream, Error, GetOptions, GetResult, Health, KeyLayout, ObjectMeta,
    PresignedUploads, PutOptions, PutResult, Result, STAGING, Sha256, already_stored, hash_stream,
};

use crate::config::{S3Config, ServerSideEncryption};
use crate::error::{is_already_there, is_bad_digest, map_sdk_error};

/// Largest object a single PUT or CopyObject may write.
pub(crate) const MAX_SINGLE_OBJECT: u64 = 5 * 1024 * 1024 * 1024;
/// Chunks queued between the request body and the S3 request.
const STREAM_QUEUE_CHUNKS: usize = 8;
/// Write buffer of the spool file.
const SPOOL_BUFFER: usize = 1 << 20;

/// Applies the stored-binary settings (encryption, KMS key, storage class) to a request
/// builder that has them (PutObject, CopyObject, CreateMultipartUpload).
macro_rules! with_storage_settings {
    ($builder:expr, $config:expr) => {{
        let mut builder = $builder;
        if let Some(sse) = $config.server_side_encryption {
            builder = builder.server_side_encryption(sse_of(sse));
        }
        if let Some(kms) = &$config.kms_server_side_encryption_key_id {
            builder = builder.ssekms_key_id(kms);
        }
        if let Some(class) = &$config.storage_class {
            builder = builder.storage_class(class.as_str().into());
        }
        builder
    }};
}

/// Stores binaries in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Provider {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    /// When the signing credentials expire (`None`: never), and when that was asked: the
    /// provider chain is not cached (on EC2 or ECS it is an HTTP call), so signing asks at
    /// most once a minute.
    pub(crate) credentials_expiry:
        std::sync::Mutex<Option<(std::time::Instant, Option<std::time::SystemTime>)>>,
    pub(crate) bucket: String,
    /// `""` or `"<path>/"`.
    pub(crate) prefix: String,
    pub(crate) layout: KeyLayout,
    pub(crate) config: S3Config,
    /// `maxFileSizeForDirectUpload`: at or above it, uploads are spooled and sent in parts.
    pub(crate) direct_limit: u64,
    spool_dir: PathBuf,
    permits: Arc<Semaphore>,
    /// The in-memory upload budget, in KiB.
    memory: Arc<Semaphore>,
    /// `s3://bucket/path`, for messages.
    pub(crate) name: String,
}

impl fmt::Display for S3Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.name)
    }
}

impl S3Provider {
    /// Builds the client (once per process) and, with `testConnection`, checks that the
    /// bucket exists and these credentials reach it. `direct_limit` is
    /// `maxFileSizeForDirectUpload`; larger uploads are spooled in `spool_dir`.
    pub async fn connect(
        config: S3Config,
        layout: KeyLayout,
        direct_limit: u64,
        spool_dir: PathBuf,
    ) -> Result<Self> {
        config.validate()?;
        tokio::fs::create_dir_all(&spool_dir)
            .await
            .map_err(|e| Error::Storage {
                backend: "s3".into(),
                key: spool_dir.display().to_string(),
                source: format!("cannot create the multipart spool directory: {e}").into(),
                retryable: false,
            })?;
        let (client, credentials) = crate::client::build(&config).await;
        let prefix = match config.path.as_str() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let name = format!("s3://{}/{}", config.bucket_name, config.path);
        let provider = Self {
            inner: Arc::new(Inner {
                client,
                credentials,
                credentials_expiry: std::sync::Mutex::new(None),
                bucket: config.bucket_name.clone(),
                prefix,
                layout,
                permits: Arc::new(Semaphore::new(config.max_connections)),
                memory: Arc::new(Semaphore::new(
                    usize::try_from(config.in_memory_upload_budget.as_u64() / 1024)
                        .unwrap_or(usize::MAX)
                        .min(Semaphore::MAX_PERMITS),
                )),
                direct_limit,
                spool_dir,
                name,
                config,
            }),
        };
        if provider.inner.config.test_connection {
            provider.health().await.map_err(|e| {
                Error::InvalidInput(format!(
                    "the S3 connection test failed (set [filestore.s3] testConnection = false to \
                     start anyway): {e}{}",
                    std::error::Error::source(&e)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ))
            })?;
        }
        Ok(provider)
    }

    /// The SDK client, for tools and tests that talk to the same bucket.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The settings it runs with.
    pub fn config(&self) -> &crate::S3Config {
        &self.inner.config
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The object key of a binary.
    pub fn key_of(&self, digest: &Sha256) -> String {
        format!("{}{}", self.inner.prefix, self.inner.layout.key(digest))
    }

    pub(crate) fn staging_key(&self, name: &str) -> String {
        format!("{}{STAGING}/{name}", self.inner.prefix)
    }

    pub(crate) fn map<E, R>(
        &self,
        key: &str,
        operation: &'static str,
        err: aws_sdk_s3::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + crate::error::HasStatus,
    {
        map_sdk_error(&self.inner.name, key, operation, err)
    }

    /// A slot among `maxConnections` requests in flight.
    pub(crate) async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        self.inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the S3 client is shutting down".into()))
    }

    async fn head_key(&self, key: &str) -> Result<(u64, SystemTime)> {
        let _permit = self.permit().await?;
        let out = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map(key, "HeadObject", e))?;
        Ok((
            u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            out.last_modified()
                .map_or(SystemTime::UNIX_EPOCH, to_system_time),
        ))
    }

    pub(crate) async fn key_exists(&self, key: &str) -> Result<bool> {
        match self.head_key(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn delete_key(&self, key: &str) -> Result<()> {
        let _permit = self.permit().await?;
        match self
            .inner
            .client
            .delete_object()
            .bucket(&self.inner.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map(key, "DeleteObject", e) {
                Error::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Deletes a staging object, logging (not failing) when that is impossible: the stale
    /// upload sweep removes it later.
    pub(crate) async fn discard(&self, key: &str) {
        if let Err(e) = self.delete_key(key).await {
            tracing::warn!(key, error = %e, "could not delete a staging object; the stale-upload sweep will");
        }
    }

    /// A PUT of a stored binary: its headers and the encryption and storage class settings.
    fn put_request(&self, key: &str) -> PutObjectFluentBuilder {
        let c = &self.inner.config;
        let mut request = self
            .inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(key)
            .content_type("application/octet-stream");
        request = with_storage_settings!(request, c);
        request
    }

    /// Sends a PUT that only creates the key (`If-None-Match: *`). Returns whether it created
    /// it; `false` means identical bytes were already there (the key is their digest).
    async fn put_if_absent(
        &self,
        request: PutObjectFluentBuilder,
        key: &str,
        sha256: &Sha256,
        body_label: &str,
    ) -> Result<bool> {
        let sent = {
            let _permit = self.permit().await?;
            request
                .if_none_match("*")
                .checksum_sha256(BASE64.encode(sha256.as_bytes()))
                .send()
                .await
                .map_err(|e| self.map(key, "PutObject", e))
        };
        match sent {
            Ok(_) => Ok(true),
            Err(e) if is_already_there(&e) => Ok(false),
            Err(e) if is_bad_digest(&e) => Err(Error::ChecksumMismatch {
                algorithm: stowage_core::ChecksumAlgorithm::Sha256,
                expected: sha256.to_string(),
                actual: format!("something else (S3 refused the bytes of {body_label})"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Reserves memory for an in-memory upload of `size` bytes, if the budget allows now.
    fn reserve_memory(&self, size: u64) -> Option<OwnedSemaphorePermit> {
        if size > self.inner.config.max_in_memory_upload_size.as_u64() {
            return None;
        }
        self.reserve_budget(size)
    }

    /// Reserves `bytes` of the in-memory budget, if it allows now.
    fn reserve_budget(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        self.inner.memory.clone().try_acquire_many_owned(kib).ok()
    }

    /// The in-memory path: collect while hashing, check, then one conditional PUT. The PUT
    /// starts as soon as the SHA-256 is known and checked; MD5 (three times slower to compute)
    /// finishes while it runs, unless the client declared an MD5 or SHA-1 that must be checked
    /// first ([`stowage_core::HashingTask::until_storable`]).
    async fn put_buffered(
        &self,
        body: ByteStream,
        opts: PutOptions,
        size: u64,
        _reserved: OwnedSemaphorePermit,
    ) -> Result<PutResult> {
        let (body, hashing) = hash_stream(body);
        let buf = stowage_core::read_exactly(body, size).await?;
        let (sha256, size, rest) = hashing.until_storable(&opts.expected).await?;
        let key = self.key_of(&sha256);
        let request = self
            .put_request(&key)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(SdkStream::from(buf));
        let (created, hashed) = tokio::join!(
            self.put_if_absent(request, &key, &sha256, "the request"),
            rest
        );
        let (checksums, size) = hashed?;
        Ok(PutResult {
            checksums,
            size,
            created: created?,
        })
    }

    /// Streams `body` (exactly `size` bytes) as one PUT. Returns how feeding the body went
    /// (`Ok(true)`: every byte was read and sent) and how the request went, separately, so that
    /// a fault in the client's body is reported as such rather than as an S3 error.
    async fn send_streamed(
        &self,
        request: PutObjectFluentBuilder,
        mut body: ByteStream,
        size: u64,
        key: &str,
    ) -> (Result<bool>, Result<PutObjectOutput>) {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE_CHUNKS);
        let request = request
            .body(SdkStream::from_body_1_x(ChannelBody {
                rx,
                remaining: size,
            }))
            .content_length(i64::try_from(size).unwrap_or(i64::MAX));
        let feed = async move {
            let mut received = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(Error::TooLong { expected: size });
                }
                if tx.send(chunk).await.is_err() {
                    return Ok(false); // the request failed; its error says why
                }
            }
            if received < size {
                return Err(Error::Truncated {
                    expected: size,
                    received,
                });
            }
            Ok(true)
        };
        let send = async {
            let _permit = self.permit().await?;
            request
                .send()
                .await
                .map_err(|e| self.map(key, "PutObject", e))
        };
        tokio::join!(feed, send)
    }

    /// The direct path: the body goes to S3 as it arrives.
    async fn put_streamed(
        &self,
        body: ByteStream,
        opts: PutOptions,
        size: u64,
    ) -> Result<PutResult> {
        let (body, hashing) = hash_stream(body);
        let Some(sha256) = opts.expected.sha256 else {
            return self
                .put_streamed_via_staging(body, hashing, opts, size)
                .await;
        };
        let key = self.key_of(&sha256);
        if self.key_exists(&key).await? {
            return already_stored(body, hashing, &opts).await;
        }
        let request = self
            .put_request(&key)
            .if_none_match("*")
            .checksum_sha256(BASE64.encode(sha256.as_bytes()));
        let (fed, sent) = self.send_streamed(request, body, size, &key).await;
        if !fed? {
            return Err(sent.err().unwrap_or_else(|| {
                Error::Unavailable("the S3 request ended before the body was sent".into())
            }));
        }
        let (checksums, size) = hashing.finish().await?;
        // S3 refuses bytes that do not match the declared SHA-256; say so in our terms.
        opts.expected.verify(&checksums)?;
        match sent {
            Ok(_) => Ok(PutResult {
                checksums,
                size,
                created: true,
            }),
            // Stored meanwhile by another upload of the same bytes.
            Err(e) if is_already_there(&e) => Ok(PutResult {
                checksums,
                size,
                created: false,
            }),
            // The bytes hashed right here but not at S3: damaged on the way; try again.
            Err(e) if is_bad_digest(&e) => Err(Error::Storage {
                backend: self.to_string(),
                key,
                source: format!("S3 received damaged bytes: {e}").into(),
                retryable: true,
            }),
            Err(e) => Err(e),
        }
    }

    async fn put_streamed_via_staging(
        &self,
        body: ByteStream,
        hashing: stowage_core::HashingTask,
        opts: PutOptions,
        size: u64,
    ) -> Result<PutResult> {
        let staging = self.staging_key(&format!("{:032x}", rand::random::<u128>()));
        let request = self
            .put_request(&staging)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        let (fed, sent) = self.send_streamed(request, body, size, &staging).await;
        let stored = async {
            if !fed? {
                return Err(sent.err().unwrap_or_else(|| {
                    Error::Unavailable("the S3 request ended before the body was sent".into())
                }));
            }
            let output = sent?;
            let (checksums, size) = hashing.finish().await?;
            opts.expected.verify(&checksums)?;
            let ours = BASE64.encode(checksums.sha256.as_bytes());
            if let Some(theirs) = output.checksum_sha256()
                && theirs != ours
            {
                return Err(Error::Storage {
                    backend: self.to_string(),
                    key: staging.clone(),
                    source: format!(
                        "S3 stored bytes with SHA-256 {theirs} (base64) but {ours} was sent"
                    )
                    .into(),
                    retryable: true,
                });
            }
            let key = self.key_of(&checksums.sha256);
            let created = !self.key_exists(&key).await?;
            if created {
                self.copy_into_place(&staging, &key, size).await?;
            }
            Ok(PutResult {
                checksums,
                size,
                created,
            })
        }
        .await;
        self.discard(&staging).await;
        stored
    }

    /// The spooled path: bodies at or above `maxFileSizeForDirectUpload`, or of unknown length.
    async fn put_spooled(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let (body, hashing) = hash_stream(body);
        let spool = self.spool(body, opts.size).await?;
        let (checksums, size) = hashing.finish().await?;
        opts.expected.verify(&checksums)?;
        let created = self
            .store_file(&spool, &checksums.sha256, size, true)
            .await?;
        Ok(PutResult {
            checksums,
            size,
            created,
        })
    }

    /// Writes a body to a temporary file (removed when dropped), checking its length.
    async fn spool(
        &self,
        mut body: ByteStream,
        expected: Option<u64>,
    ) -> Result<tempfile::TempPath> {
        let io_err = |e: io::Error| Error::Storage {
            backend: self.to_string(),
            key: self.inner.spool_dir.display().to_string(),
            source: format!("spooling the upload to local disk failed: {e}").into(),
            retryable: false,
        };
        let temp = tempfile::Builder::new()
            .prefix("spool-")
            .tempfile_in(&self.inner.spool_dir)
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

    /// Stores a local file under its digest: one PUT (S3 checks the SHA-256) for small files,
    /// else a multipart upload with parallel parts. `verified` says the caller already hashed
    /// the file; otherwise it is hashed here before a multipart upload, whose parts S3 checks
    /// only one by one.
    async fn store_file(
        &self,
        path: &Path,
        sha256: &Sha256,
        size: u64,
        verified: bool,
    ) -> Result<bool> {
        let key = self.key_of(sha256);
        if self.key_exists(&key).await? {
            return Ok(false);
        }
        let part_size = self.inner.config.part_size_for(size);
        if size < self.inner.direct_limit.min(MAX_SINGLE_OBJECT) || size <= part_size {
            let request = self
                .put_request(&key)
                .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                .body(file_body(path, 0, size).await?);
            let label = path.display().to_string();
            return self.put_if_absent(request, &key, sha256, &label).await;
        }
        if !verified {
            let actual = sha256_of_file(path)
                .await
                .map_err(|e| Error::storage_io("local file", path.display(), e))?;
            if actual != *sha256 {
                return Err(Error::ChecksumMismatch {
                    algorithm: stowage_core::ChecksumAlgorithm::Sha256,
                    expected: sha256.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        self.multipart_from_file(&key, path, size, part_size)
            .await?;
        Ok(true)
    }

    /// Starts a multipart upload of a stored binary (its settings, and SHA-256 part checksums
    /// when `sha256_parts`). Returns the upload id.
    pub(crate) async fn create_multipart(&self, key: &str, sha256_parts: bool) -> Result<String> {
        let c = &self.inner.config;
        let mut create = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(key)
            .content_type("application/octet-stream");
        if sha256_parts {
            create = create.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        create = with_storage_settings!(create, c);
        let _permit = self.permit().await?;
        create
            .send()
            .await
            .map_err(|e| self.map(key, "CreateMultipartUpload", e))?
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Storage {
                backend: self.to_string(),
                key: key.to_owned(),
                source: "CreateMultipartUpload returned no upload id".into(),
                retryable: true,
            })
    }

    /// Sends one part with a SHA-256 checksum S3 verifies.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        len: u64,
        body: SdkStream,
    ) -> Result<CompletedPart> {
        let _permit = self.permit().await?;
        let out = self
            .inner
            .client
            .upload_part()
            .bucket(&self.inner.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(body)
            .send()
            .await
            .map_err(|e| self.map(key, "UploadPart", e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .set_checksum_sha256(out.checksum_sha256().map(str::to_owned))
            .build())
    }

    /// Completes a multipart upload from its parts (in any order).
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<CompletedPart>,
    ) -> Result<()> {
        parts.sort_by_key(|p| p.part_number());
        let _permit = self.permit().await?;
        self.inner
            .client
            .complete_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.map(key, "CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Completes a multipart upload from its parts, or aborts it when the parts (`parts` is an
    /// error) or the completion failed: no incomplete upload is left behind.
    pub(crate) async fn finish_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Result<Vec<CompletedPart>>,
    ) -> Result<()> {
        let completed = match parts {
            Ok(parts) => self.complete_multipart(key, upload_id, parts).await,
            Err(e) => Err(e),
        };
        if completed.is_err() {
            self.abort_multipart(key, upload_id).await;
        }
        completed
    }

    async fn multipart_from_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        part_size: u64,
    ) -> Result<()> {
        let upload_id = self.create_multipart(key, true).await?;
        let parts = futures::stream::iter(0..size.div_ceil(part_size))
            .map(|index| {
                let upload_id = upload_id.as_str();
                async move {
                    let offset = index * part_size;
                    let len = part_size.min(size - offset);
                    let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    let body = file_body(path, offset, len).await?;
                    self.upload_part(key, upload_id, number, len, body).await
                }
            })
            .buffered(self.inner.config.multipart_concurrency)
            .try_collect()
            .await;
        self.finish_multipart(key, &upload_id, parts).await
    }

    /// The declared large path: parts are cut from the body as it arrives (held in memory,
    /// within the budget) and sent straight to the content key, which the client's declared
    /// SHA-256 names; the upload is completed only if the whole body hashed to it, so the key
    /// never holds other bytes. No local disk, and hashing overlaps with sending.
    async fn put_multipart_streamed(
        &self,
        body: ByteStream,
        opts: PutOptions,
        size: u64,
        sha256: Sha256,
        _reserved: OwnedSemaphorePermit,
    ) -> Result<PutResult> {
        let key = self.key_of(&sha256);
        let (mut body, hashing) = hash_stream(body);
        if self.key_exists(&key).await? {
            return already_stored(body, hashing, &opts).await;
        }
        let part_size =
            usize::try_from(self.inner.config.part_size_for(size)).unwrap_or(usize::MAX);
        let upload_id = self.create_multipart(&key, true).await?;
        let sent: Result<Vec<CompletedPart>> = async {
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut parts = Vec::new();
            // Each part gets a buffer of its own, exactly its size, so memory stays at
            // (concurrency + 1) parts whatever the file size.
            let mut buf = bytes::BytesMut::with_capacity(part_size);
            let (mut received, mut number) = (0u64, 0i32);
            let mut ended = false;
            while !ended {
                match body.next().await {
                    Some(chunk) => {
                        let mut chunk = chunk?;
                        received += chunk.len() as u64;
                        if received > size {
                            return Err(Error::TooLong { expected: size });
                        }
                        while !chunk.is_empty() {
                            let take = (part_size - buf.len()).min(chunk.len());
                            buf.extend_from_slice(&chunk.split_to(take));
                            if buf.len() < part_size {
                                continue;
                            }
                            let part = std::mem::replace(
                                &mut buf,
                                bytes::BytesMut::with_capacity(part_size),
                            );
                            number += 1;
                            if in_flight.len() >= self.inner.config.multipart_concurrency
                                && let Some(done) = in_flight.next().await
                            {
                                parts.push(done?);
                            }
                            let len = part.len() as u64;
                            in_flight.push(self.upload_part(
                                &key,
                                &upload_id,
                                number,
                                len,
                                SdkStream::from(part.freeze()),
                            ));
                        }
                    }
                    None if received < size => {
                        return Err(Error::Truncated {
                            expected: size,
                            received,
                        });
                    }
                    None => ended = true,
                }
            }
            if !buf.is_empty() {
                number += 1;
                let len = buf.len() as u64;
                in_flight.push(self.upload_part(
                    &key,
                    &upload_id,
                    number,
                    len,
                    SdkStream::from(buf.freeze()),
                ));
            }
            while let Some(done) = in_flight.next().await {
                parts.push(done?);
            }
            Ok(parts)
        }
        .await;
        // Complete only bytes that are what the client declared.
        let verified = match sent {
            Ok(parts) => match hashing.finish().await {
                Ok((checksums, size)) => match opts.expected.verify(&checksums) {
                    Ok(()) => Ok((parts, checksums, size)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match verified {
            Ok((parts, checksums, size)) => {
                self.finish_multipart(&key, &upload_id, Ok(parts)).await?;
                Ok(PutResult {
                    checksums,
                    size,
                    created: true,
                })
            }
            Err(e) => {
                self.abort_multipart(&key, &upload_id).await;
                Err(e)
            }
        }
    }

    /// Aborts a multipart upload, logging (not failing) when that is impossible: the
    /// stale-upload sweep aborts it later.
    pub(crate) async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let aborted = self
            .inner
            .client
            .abort_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = aborted {
            match self.map(key, "AbortMultipartUpload", e) {
                Error::NotFound { .. } => {}
                e => tracing::warn!(key, upload_id, error = %e,
                    "could not abort a multipart upload; the stale-upload sweep will"),
            }
        }
    }

    /// Server-side copy of a staged object to its content-addressed key, with the settings of
    /// a stored binary; a multipart copy above 5 GiB.
    pub(crate) async fn copy_into_place(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let c = &self.inner.config;
        let source = format!("{}/{from}", self.inner.bucket);
        if size <= MAX_SINGLE_OBJECT {
            let mut copy = self
                .inner
                .client
                .copy_object()
                .bucket(&self.inner.bucket)
                .key(to)
                .copy_source(&source)
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .content_type("application/octet-stream")
                .checksum_algorithm(ChecksumAlgorithm::Sha256);
            copy = with_storage_settings!(copy, c);
            let _permit = self.permit().await?;
            copy.send()
                .await
                .map_err(|e| self.map(to, "CopyObject", e))?;
            return Ok(());
        }
        let upload_id = self.create_multipart(to, false).await?;
        // Copy parts are bounded by 5 GiB each; large ones keep the request count low.
        let part_size = c.part_size_for(size).max(512 << 20);
        let copied: Result<Vec<CompletedPart>> = futures::stream::iter(0..size.div_ceil(part_size))
            .map(|index| {
                let (source, upload_id) = (source.as_str(), upload_id.as_str());
                async move {
                    let first = index * part_size;
                    let last = (first + part_size).min(size) - 1;
                    let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    let _permit = self.permit().await?;
                    let out = self
                        .inner
                        .client
                        .upload_part_copy()
                        .bucket(&self.inner.bucket)
                        .key(to)
                        .upload_id(upload_id)
                        .part_number(number)
                        .copy_source(source)
                        .copy_source_range(format!("bytes={first}-{last}"))
                        .send()
                        .await
                        .map_err(|e| self.map(to, "UploadPartCopy", e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(str::to_owned),
                        )
                        .build())
                }
            })
            .buffered(c.multipart_concurrency)
            .try_collect()
            .await;
        self.finish_multipart(to, &upload_id, copied).await
    }

    /// Streams an object (or a byte range of it), holding a connection slot until the stream
    /// ends.
    pub(crate) async fn read_key(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<(ByteStream, Option<u64>)> {
        let permit = self.permit().await?;
        let mut request = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(key);
        if let Some(r) = &range {
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.map(key, "GetObject", e))?;
        let length = out.content_length().and_then(|l| u64::try_from(l).ok());
        let (backend, key) = (self.to_string(), key.to_owned());
        let stream = futures::stream::unfold(Some((out.body, permit)), move |state| {
            let (backend, key) = (backend.clone(), key.clone());
            async move {
                let (mut body, permit) = state?;
                match body.next().await {
                    Some(Ok(chunk)) => Some((Ok(chunk), Some((body, permit)))),
                    Some(Err(e)) => Some((
                        Err(Error::Storage {
                            backend,
                            key,
                            source: Box::new(e),
                            retryable: true,
                        }),
                        None,
                    )),
                    None => None,
                }
            }
        })
        .boxed();
        Ok((stream, length))
    }
}

fn sse_of(sse: ServerSideEncryption) -> aws_sdk_s3::types::ServerSideEncryption {
    match sse {
        ServerSideEncryption::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
        ServerSideEncryption::AwsKms => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
    }
}

pub(crate) fn to_system_time(t: &aws_sdk_s3::primitives::DateTime) -> SystemTime {
    SystemTime::try_from(*t).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A region of a local file as a request body the SDK can re-read on retry.
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<SdkStream> {
    SdkStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|e| Error::Storage {
            backend: "local file".into(),
            key: path.display().to_string(),
            source: Box::new(e),
            retryable: false,
        })
}

async fn sha256_of_file(path: &Path) -> io::Result<Sha256> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        Ok(Sha256::from_bytes(hasher.finalize().into()))
    })
    .await
    .map_err(io::Error::other)?
}

/// The answer for bytes already stored under the declared digest: the body is read only to
/// check its length and what the client declared.
/// A request body fed through a channel, announcing its exact length (which S3 needs, and
/// which lets the SDK add its checksum trailer).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
            Poll::Ready(None) if self.remaining > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body ended before its announced length",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[async_trait]
impl BinaryProvider for S3Provider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        match opts.size {
            Some(size) if size < self.inner.direct_limit.min(MAX_SINGLE_OBJECT) => {
                match self.reserve_memory(size) {
                    Some(reserved) => self.put_buffered(body, opts, size, reserved).await,
                    None => self.put_streamed(body, opts, size).await,
                }
            }
            // Large with a declared SHA-256: parts straight from memory to the content key.
            Some(size) if opts.expected.sha256.is_some() => {
                let part = self.inner.config.part_size_for(size);
                let window = part * (self.inner.config.multipart_concurrency as u64 + 1);
                match (opts.expected.sha256, self.reserve_budget(window)) {
                    (Some(sha256), Some(reserved)) => {
                        self.put_multipart_streamed(body, opts, size, sha256, reserved)
                            .await
                    }
                    _ => self.put_spooled(body, opts).await,
                }
            }
            _ => self.put_spooled(body, opts).await,
        }
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        let key = self.key_of(digest);
        let (size, last_modified, range) = match opts.range {
            // A range needs the size first, to refuse what lies outside the object.
            Some(range) => {
                let (size, last_modified) = self.head_key(&key).await?;
                let range = stowage_core::check_range(Some(range), size)?;
                (size, last_modified, Some(range))
            }
            None => (0, SystemTime::UNIX_EPOCH, None),
        };
        let meta = |size| ObjectMeta {
            digest: *digest,
            size,
            last_modified,
        };
        match range {
            Some(r) if r.is_empty() => Ok(GetResult {
                meta: meta(size),
                range: r,
                stream: futures::stream::empty().boxed(),
            }),
            Some(r) => {
                let (stream, _) = self.read_key(&key, Some(r.clone())).await?;
                Ok(GetResult {
                    meta: meta(size),
                    range: r,
                    stream,
                })
            }
            None => {
                let (stream, length) = self.read_key(&key, None).await?;
                let size = length.unwrap_or(0);
                Ok(GetResult {
                    meta: meta(size),
                    range: 0..size,
                    stream,
                })
            }
        }
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        let (size, last_modified) = self.head_key(&self.key_of(digest)).await?;
        Ok(ObjectMeta {
            digest: *digest,
            size,
            last_modified,
        })
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.delete_key(&self.key_of(digest)).await
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        let pages = self
            .inner
            .client
            .list_objects_v2()
            .bucket(&self.inner.bucket)
            .prefix(&self.inner.prefix)
            .into_paginator()
            .send();
        let prefix = self.inner.prefix.clone();
        futures::stream::unfold(pages, |mut pages| async move {
            pages.next().await.map(|page| (page, pages))
        })
        .map(move |page| {
            let page = page.map_err(|e| this.map(&prefix, "ListObjectsV2", e))?;
            let items: Vec<Result<ObjectMeta>> = page
                .contents()
                .iter()
                .filter_map(|object| {
                    let key = object.key()?.strip_prefix(prefix.as_str())?;
                    let digest = this.inner.layout.parse(key)?;
                    Some(Ok(ObjectMeta {
                        digest,
                        size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                        last_modified: object
                            .last_modified()
                            .map_or(SystemTime::UNIX_EPOCH, to_system_time),
                    }))
                })
                .collect();
            Ok::<_, Error>(futures::stream::iter(items))
        })
        .try_flatten()
        .boxed()
    }

    async fn health(&self) -> Result<Health> {
        let _permit = self.permit().await?;
        self.inner
            .client
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
            .map_err(|e| match self.map("-", "HeadBucket", e) {
                // HeadBucket has no body: a 404 is the bucket, not a key.
                Error::NotFound { .. } => Error::BackendRefused {
                    backend: self.to_string(),
                    key: "-".into(),
                    hint: format!(
                        "bucket {:?} does not exist; create it or fix filestore.s3.bucketName",
                        self.inner.bucket
                    ),
                    source: "HeadBucket got HTTP 404".into(),
                },
                e => e,
            })?;
        Ok(Health::default())
    }

    async fn put_file(&self, path: &Path, sha256: &Sha256, size: u64) -> Result<bool> {
        self.store_file(path, sha256, size, false).await
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        Some(self)
    }

    // S3's staging objects and multipart uploads are swept with the upload sessions
    // (`PresignedUploads::clean_stale_uploads`), which know what a session still needs.
}
