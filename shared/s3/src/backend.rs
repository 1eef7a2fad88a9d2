//! The S3 side of the core's [`ObjectBackend`] (templates `s3-storage-v3-direct`, the backend
//! behind the eventual queue of `s3-storage-v3`, and S3 shard mounts): binaries at
//! `<path>/ab/abcdef…` in one bucket. The core's object-store provider decides where a body
//! goes (in memory, streamed, or spooled to a file below `maxFileSizeForDirectUpload`) and
//! keeps the content-addressing rules; this module sends the requests, S3's way:
//!
//! - **One request** for a small body (up to `maxInMemoryUploadSize`): a conditional PUT
//!   (`If-None-Match: *`) straight to its content key with `x-amz-checksum-sha256`, so S3
//!   refuses damaged bytes and a 412 tells that identical bytes were already there.
//! - **A streamed PUT** below `maxFileSizeForDirectUpload` ([`StreamWriter`]): to the content
//!   key with the declared SHA-256 as its checksum, or to a staging key with a CRC32 trailer
//!   (S3 refuses bytes damaged on the way), then copied server-side to the content key by a
//!   CopyObject that has S3 compute the copy's SHA-256, which must equal the digest computed
//!   here. Stowage hashes the bytes once; the SDK's CRC32 costs a small fraction of a
//!   SHA-256 (CRC32C, which S3 takes too, LocalStack refuses in this SDK's trailer).
//! - **Parallel parts from memory** for a large body of declared SHA-256 ([`PartsWriter`]):
//!   part size × (concurrency + 1) in memory, each part with a CRC32 checksum, completed only
//!   once the whole body hashed to the declared digest.
//! - **Parallel parts from a file** ([`ObjectBackend::put_file`]) for spooled bodies and for the
//!   eventual queue's files: each part re-read from the file on retry.
//! - **A multipart copy** above 5 GiB, where one CopyObject cannot.
//!
//! Whatever fails, the staging object is deleted and the multipart upload aborted;
//! `PresignedUploads::clean_stale_uploads` sweeps what a crash left behind. Retries are the
//! SDK's (its standard mode): the core's retry layer is set to one attempt for S3.

use std::fmt;
use std::io;
use std::ops::Range;
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
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use stowage_core::object::{
    ObjectBackend, ObjectInfo, ObjectKeys, ObjectSettings, ObjectStoreProvider, ObjectWriter, Spool,
};
use stowage_core::{ByteStream, Checksums, Error, KeyLayout, PresignedUploads, Result, Sha256};

use crate::config::{S3Config, ServerSideEncryption};
use crate::error::{is_already_there, is_bad_digest, map_sdk_error};

/// Largest object a single PUT or CopyObject may write.
pub(crate) const MAX_SINGLE_OBJECT: u64 = 5 * 1024 * 1024 * 1024;
/// Chunks queued between the request body and the S3 request.
const STREAM_QUEUE_CHUNKS: usize = 8;

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

/// A bucket as a binary store: the core's object-store provider over [`S3Backend`].
pub type S3Provider = ObjectStoreProvider<S3Backend>;

/// Builds the client (once per process) and, with `testConnection`, checks that the bucket
/// exists and these credentials reach it. `direct_limit` is `maxFileSizeForDirectUpload`;
/// larger uploads, and uploads of unknown length, are spooled in `spool_dir`.
pub async fn connect(
    config: S3Config,
    layout: KeyLayout,
    direct_limit: u64,
    spool_dir: PathBuf,
) -> Result<S3Provider> {
    config.validate()?;
    tokio::fs::create_dir_all(&spool_dir)
        .await
        .map_err(|e| Error::Storage {
            backend: "s3".into(),
            key: spool_dir.display().to_string(),
            source: format!("cannot create the multipart spool directory: {e}").into(),
            retryable: false,
        })?;
    let direct_limit = direct_limit.min(MAX_SINGLE_OBJECT);
    let settings = ObjectSettings {
        path: config.path.clone(),
        layout,
        small_upload_limit: config.max_in_memory_upload_size.as_u64(),
        memory_budget: config.in_memory_upload_budget.as_u64(),
        spool: Some(Spool {
            dir: spool_dir,
            direct_limit,
        }),
        // The SDK retries each request (its standard mode); a second layer would multiply.
        attempts: 1,
    };
    let (client, credentials) = crate::client::build(&config).await;
    let name = format!("s3://{}/{}", config.bucket_name, config.path);
    let backend = S3Backend {
        inner: Arc::new(Inner {
            client,
            credentials,
            credentials_expiry: std::sync::Mutex::new(None),
            bucket: config.bucket_name.clone(),
            keys: ObjectKeys::new(&config.path, layout),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            direct_limit,
            name,
            config,
        }),
    };
    if backend.inner.config.test_connection {
        backend.check().await.map_err(|e| {
            Error::InvalidInput(format!(
                "the S3 connection test failed (set [filestore.s3] testConnection = false to \
                 start anyway): {e}{}",
                std::error::Error::source(&e)
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ))
        })?;
    }
    Ok(ObjectStoreProvider::new(backend, settings))
}

/// One bucket (and the folder `path` in it).
#[derive(Debug, Clone)]
pub struct S3Backend {
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
    pub(crate) keys: ObjectKeys,
    pub(crate) config: S3Config,
    /// `maxFileSizeForDirectUpload` (at most 5 GiB): below it, one streamed PUT; at or above
    /// it, parts.
    pub(crate) direct_limit: u64,
    permits: Arc<Semaphore>,
    /// `s3://bucket/path`, for messages.
    pub(crate) name: String,
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.name)
    }
}

impl S3Backend {
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
        self.inner.keys.of(digest)
    }

    pub(crate) fn staging_key(&self, name: &str) -> String {
        self.inner.keys.staging(name)
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

    /// Stores a local file at `key`: one PUT (S3 checks the SHA-256) for small files, else a
    /// multipart upload with parallel parts. `verified` says the caller already hashed the
    /// file; otherwise it is hashed here before a multipart upload, whose parts S3 checks only
    /// one by one.
    async fn store_file(
        &self,
        key: &str,
        path: &Path,
        sha256: &Sha256,
        size: u64,
        verified: bool,
    ) -> Result<bool> {
        let part_size = self.inner.config.part_size_for(size);
        if size < self.inner.direct_limit || size <= part_size {
            let request = self
                .put_request(key)
                .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                .body(file_body(path, 0, size).await?);
            let label = path.display().to_string();
            return self.put_if_absent(request, key, sha256, &label).await;
        }
        // An unverified file is hashed once S3 has answered the upload's creation, so that a
        // store that cannot be reached costs no read of the file (the queue retries such
        // uploads, and the retry layer each request, for as long as S3 is away).
        let verify = (!verified).then_some(sha256);
        self.multipart_from_file(key, path, size, part_size, verify)
            .await?;
        Ok(true)
    }

    /// Starts a multipart upload of a stored binary (its settings, and CRC32 part checksums
    /// when `checked_parts`). Returns the upload id.
    pub(crate) async fn create_multipart(&self, key: &str, checked_parts: bool) -> Result<String> {
        let c = &self.inner.config;
        let mut create = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(key)
            .content_type("application/octet-stream");
        if checked_parts {
            create = create.checksum_algorithm(ChecksumAlgorithm::Crc32);
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

    /// Sends one part with a CRC32 checksum S3 verifies (the whole binary's SHA-256 is
    /// checked by whoever completes the upload).
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
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(body)
            .send()
            .await
            .map_err(|e| self.map(key, "UploadPart", e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
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
        verify: Option<&Sha256>,
    ) -> Result<()> {
        let upload_id = self.create_multipart(key, true).await?;
        if let Some(expected) = verify {
            let checked = match stowage_core::sha256_of_file(path).await {
                Ok(actual) if actual == *expected => Ok(()),
                Ok(actual) => Err(Error::ChecksumMismatch {
                    algorithm: stowage_core::ChecksumAlgorithm::Sha256,
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                self.abort_multipart(key, &upload_id).await;
                return Err(e);
            }
        }
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
    /// a stored binary; a multipart copy above 5 GiB. A single copy has S3 compute the SHA-256
    /// of what it wrote, which must be `sha256` (the digest computed here as the bytes came in).
    pub(crate) async fn copy_into_place(
        &self,
        from: &str,
        to: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<()> {
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
            let copied = copy
                .send()
                .await
                .map_err(|e| self.map(to, "CopyObject", e))?;
            let ours = BASE64.encode(sha256.as_bytes());
            return match copied
                .copy_object_result()
                .and_then(|r| r.checksum_sha256())
            {
                Some(theirs) if theirs != ours => {
                    // S3 verified the staged bytes' CRC32 as they arrived: only a store that
                    // damages its own copies gets here. The content key is left for a scrub
                    // to judge (another upload of the same bytes may have written it too).
                    tracing::error!(
                        key = to,
                        theirs,
                        ours,
                        "S3 computed another SHA-256 for a server-side copy than the bytes sent"
                    );
                    Err(Error::Storage {
                        backend: self.to_string(),
                        key: to.to_owned(),
                        source: format!(
                            "S3 copied bytes with SHA-256 {theirs} (base64) but {ours} was sent"
                        )
                        .into(),
                        retryable: true,
                    })
                }
                _ => Ok(()),
            };
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
    /// ends; with what the answer says of it (for a range, `size` is the range's).
    pub(crate) async fn read_key(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ByteStream, ObjectInfo)> {
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
        let info = ObjectInfo {
            key: key.to_owned(),
            size: out
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            last_modified: out
                .last_modified()
                .map_or(SystemTime::UNIX_EPOCH, to_system_time),
        };
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
        Ok((stream, info))
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
/// A local file as a request body, read in [`stowage_core::READ_CHUNK`]s. The SDK's default is
/// 4 KiB, and each read is a hand-off to a blocking thread and back: for a queued 64 MiB
/// binary, 16,384 of them, which cost more CPU than its digests (docs/benchmarks.md, "The
/// eventual path reads its queued file in large pieces").
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<SdkStream> {
    SdkStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .buffer_size(
            usize::try_from(len).map_or(stowage_core::READ_CHUNK, |len| {
                len.clamp(4096, stowage_core::READ_CHUNK)
            }),
        )
        .build()
        .await
        .map_err(|e| Error::Storage {
            backend: "local file".into(),
            key: path.display().to_string(),
            source: Box::new(e),
            retryable: false,
        })
}

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

/// One streamed PUT of an announced length, fed chunk by chunk as the body arrives.
#[derive(Debug)]
struct StreamWriter {
    backend: S3Backend,
    key: String,
    /// The declared digest when `key` is its content key (S3 checks the bytes against it);
    /// `None` for a staging key (the SDK's trailer carries the SHA-256 S3 computed).
    content: Option<Sha256>,
    tx: Option<mpsc::Sender<Bytes>>,
    request: JoinHandle<Result<PutObjectOutput>>,
}

impl StreamWriter {
    fn start(backend: &S3Backend, key: &str, size: u64, content: Option<Sha256>) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE_CHUNKS);
        let mut request = backend
            .put_request(key)
            .body(SdkStream::from_body_1_x(ChannelBody {
                rx,
                remaining: size,
            }))
            .content_length(i64::try_from(size).unwrap_or(i64::MAX));
        request = match &content {
            Some(sha256) => request
                .if_none_match("*")
                .checksum_sha256(BASE64.encode(sha256.as_bytes())),
            None => request.checksum_algorithm(ChecksumAlgorithm::Crc32),
        };
        let request = tokio::spawn({
            let (backend, key) = (backend.clone(), key.to_owned());
            async move {
                let _permit = backend.permit().await?;
                request
                    .send()
                    .await
                    .map_err(|e| backend.map(&key, "PutObject", e))
            }
        });
        Self {
            backend: backend.clone(),
            key: key.to_owned(),
            content,
            tx: Some(tx),
            request,
        }
    }

    /// How the request ended.
    async fn outcome(&mut self) -> Result<PutObjectOutput> {
        (&mut self.request).await.map_err(|e| Error::Storage {
            backend: self.backend.to_string(),
            key: self.key.clone(),
            source: Box::new(e),
            retryable: true,
        })?
    }
}

#[async_trait]
impl ObjectWriter for StreamWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::Unavailable(
                "the S3 request has already ended".into(),
            ));
        };
        if tx.send(chunk).await.is_ok() {
            return Ok(());
        }
        // The request ended before taking the whole body: its error says why.
        self.tx = None;
        Err(match self.outcome().await {
            Err(e) => e,
            Ok(_) => Error::Unavailable("the S3 request ended before the body was sent".into()),
        })
    }

    async fn finish(mut self: Box<Self>, _checksums: &Checksums) -> Result<bool> {
        self.tx = None;
        let sent = self.outcome().await;
        let Some(_) = self.content else {
            // A staging key: S3 checked the CRC32 trailer (and refused damaged bytes); the
            // SHA-256 is checked on the copy to the content key.
            sent?;
            return Ok(true);
        };
        match sent {
            Ok(_) => Ok(true),
            // Stored meanwhile by another upload of the same bytes.
            Err(e) if is_already_there(&e) => Ok(false),
            // The bytes hashed right here to the declared digest but not at S3: damaged on
            // the way; try again.
            Err(e) if is_bad_digest(&e) => Err(Error::Storage {
                backend: self.backend.to_string(),
                key: self.key.clone(),
                source: format!("S3 received damaged bytes: {e}").into(),
                retryable: true,
            }),
            Err(e) => Err(e),
        }
    }

    async fn abort(mut self: Box<Self>) {
        // A body that ends short of its announced length fails the request; cancelling it
        // drops the connection. Either way S3 keeps nothing.
        self.tx = None;
        self.request.abort();
    }
}

/// A multipart upload of parts cut from the body as it arrives, each part in a buffer of its
/// own and up to `multipartConcurrency` in flight: memory stays at (concurrency + 1) parts
/// whatever the size.
#[derive(Debug)]
struct PartsWriter {
    backend: S3Backend,
    key: Arc<str>,
    upload_id: Arc<str>,
    part_size: usize,
    buf: BytesMut,
    number: i32,
    in_flight: JoinSet<Result<CompletedPart>>,
    parts: Vec<CompletedPart>,
}

impl PartsWriter {
    async fn start(backend: &S3Backend, key: &str, size: Option<u64>) -> Result<Self> {
        let part_size = backend
            .inner
            .config
            .part_size_for(size.unwrap_or(MAX_SINGLE_OBJECT));
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        let upload_id = backend.create_multipart(key, true).await?;
        Ok(Self {
            backend: backend.clone(),
            key: key.into(),
            upload_id: upload_id.into(),
            part_size,
            buf: BytesMut::with_capacity(part_size),
            number: 0,
            in_flight: JoinSet::new(),
            parts: Vec::new(),
        })
    }

    /// Sends the buffered part, after waiting for a slot among the parts in flight.
    async fn send_part(&mut self) -> Result<()> {
        let part = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_size));
        self.number += 1;
        if self.in_flight.len() >= self.backend.inner.config.multipart_concurrency {
            self.collect_one().await?;
        }
        let (backend, key, upload_id) = (
            self.backend.clone(),
            Arc::clone(&self.key),
            Arc::clone(&self.upload_id),
        );
        let number = self.number;
        self.in_flight.spawn(async move {
            let len = part.len() as u64;
            backend
                .upload_part(
                    &key,
                    &upload_id,
                    number,
                    len,
                    SdkStream::from(part.freeze()),
                )
                .await
        });
        Ok(())
    }

    /// Waits for one part in flight, if any.
    async fn collect_one(&mut self) -> Result<bool> {
        let Some(done) = self.in_flight.join_next().await else {
            return Ok(false);
        };
        let part = done.map_err(|e| Error::Storage {
            backend: self.backend.to_string(),
            key: self.key.to_string(),
            source: Box::new(e),
            retryable: true,
        })??;
        self.parts.push(part);
        Ok(true)
    }
}

#[async_trait]
impl ObjectWriter for PartsWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let take = (self.part_size - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, _checksums: &Checksums) -> Result<bool> {
        let sent = async {
            if !self.buf.is_empty() || self.number == 0 {
                self.send_part().await?;
            }
            while self.collect_one().await? {}
            Ok(std::mem::take(&mut self.parts))
        }
        .await;
        self.backend
            .finish_multipart(&self.key, &self.upload_id, sent)
            .await?;
        Ok(true)
    }

    async fn abort(mut self: Box<Self>) {
        self.in_flight.abort_all();
        self.backend
            .abort_multipart(&self.key, &self.upload_id)
            .await;
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectBackend for S3Backend {
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool> {
        let request = self
            .put_request(key)
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(SdkStream::from(body));
        self.put_if_absent(request, key, &checksums.sha256, "the request")
            .await
    }

    async fn writer(
        &self,
        key: &str,
        size: Option<u64>,
        sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>> {
        match size {
            Some(size) if size < self.inner.direct_limit => Ok(Box::new(StreamWriter::start(
                self,
                key,
                size,
                sha256.copied(),
            ))),
            _ => Ok(Box::new(PartsWriter::start(self, key, size).await?)),
        }
    }

    fn write_buffer(&self, size: u64) -> u64 {
        if size < self.inner.direct_limit {
            return 0;
        }
        let c = &self.inner.config;
        c.part_size_for(size) * (c.multipart_concurrency as u64 + 1)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &Sha256,
        verified: bool,
    ) -> Result<bool> {
        self.store_file(key, path, sha256, size, verified).await
    }

    // S3 has no create-only copy; the provider asks whether `to` exists first, and a content
    // key can only ever hold the same bytes, so replacing it loses nothing.
    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<bool> {
        self.copy_into_place(from, to, size, sha256).await?;
        Ok(true)
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        let (size, last_modified) = self.head_key(key).await?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size,
            last_modified,
        })
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        Ok(self.read_key(key, Some(range)).await?.0)
    }

    // GetObject answers with the size and time: no HeadObject first.
    async fn open(&self, key: &str) -> Result<(ObjectInfo, ByteStream)> {
        let (stream, info) = self.read_key(key, None).await?;
        Ok((info, stream))
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.delete_key(key).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let this = self.clone();
        let pages = self
            .inner
            .client
            .list_objects_v2()
            .bucket(&self.inner.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let prefix = prefix.to_owned();
        futures::stream::unfold(pages, |mut pages| async move {
            pages.next().await.map(|page| (page, pages))
        })
        .map(move |page| {
            let page = page.map_err(|e| this.map(&prefix, "ListObjectsV2", e))?;
            let items: Vec<Result<ObjectInfo>> = page
                .contents()
                .iter()
                .filter_map(|object| {
                    Some(Ok(ObjectInfo {
                        key: object.key()?.to_owned(),
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

    async fn check(&self) -> Result<()> {
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
        Ok(())
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        Some(self)
    }
}
