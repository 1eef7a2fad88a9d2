//! The GCS side of the core's [`ObjectBackend`]: one bucket through the JSON API
//! (`gcloud-storage`; the official SDK needs gRPC for listing, which no emulator serves).
//!
//! Integrity: a small upload is one multipart request whose metadata carries the body's MD5
//! and CRC32C, so GCS refuses bytes that do not match them. A larger one of announced length is
//! one upload request streamed as the body arrives; of unknown length, a resumable upload in
//! chunks.
//! Either way its last bytes are sent only once the body's checksums matched what the client
//! declared (GCS completes an upload only when it has every byte), and GCS reports the
//! finished object's MD5 and CRC32C, which must equal ours, else the object is deleted (by
//! generation) and the upload fails as retryable. Every write is conditional on
//! `ifGenerationMatch=0`: it creates, never replaces.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::client::Client;
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::buckets::get::GetBucketRequest;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::copy::CopyObjectRequest;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range as GcsRange;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};
use stowage_core::object::{ObjectBackend, ObjectInfo, ObjectWriter};
use stowage_core::{ByteStream, Checksums, Error, Result, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One bucket.
#[derive(Clone)]
pub struct GcsBackend {
    pub(crate) client: Client,
    pub(crate) bucket: Arc<str>,
    chunk_size: usize,
}

impl fmt::Debug for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsBackend")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}", self.bucket)
    }
}

/// What a failed request means in the domain's terms.
pub(crate) fn map_error(backend: &impl fmt::Display, key: &str, e: GcsError) -> Error {
    match &e {
        GcsError::Response(r) if r.code == 404 => Error::NotFound {
            what: format!("{backend}/{key}"),
        },
        GcsError::Response(r) if matches!(r.code, 401 | 403) => Error::BackendRefused {
            backend: backend.to_string(),
            key: key.to_string(),
            hint: format!(
                "GCS denied access ({}): check the service account's roles on the bucket \
                 (roles/storage.objectAdmin) and credentialsFile",
                r.code
            ),
            source: Box::new(e),
        },
        GcsError::Response(r) => {
            let retryable = r.is_retriable();
            Error::Storage {
                backend: backend.to_string(),
                key: key.to_string(),
                source: Box::new(e),
                retryable,
            }
        }
        GcsError::HttpClient(http) => {
            let retryable = http.is_connect()
                || http.is_timeout()
                || http.is_request()
                || http.is_body()
                || http
                    .status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429);
            Error::Storage {
                backend: backend.to_string(),
                key: key.to_string(),
                source: Box::new(e),
                retryable,
            }
        }
        _ => Error::Storage {
            backend: backend.to_string(),
            key: key.to_string(),
            source: Box::new(e),
            retryable: true,
        },
    }
}

/// A 412: the `ifGenerationMatch=0` precondition failed, the object exists.
fn is_precondition_failed(e: &GcsError) -> bool {
    matches!(e, GcsError::Response(r) if r.code == 412)
}

fn crc32c_base64(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

fn to_time(t: Option<time::OffsetDateTime>) -> SystemTime {
    t.map(SystemTime::from).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn info_of(object: &Object) -> ObjectInfo {
    ObjectInfo {
        key: object.name.clone(),
        size: u64::try_from(object.size).unwrap_or(0),
        last_modified: to_time(object.updated.or(object.time_created)),
    }
}

impl GcsBackend {
    pub(crate) fn new(client: Client, bucket: &str, chunk_size: u64) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            chunk_size: usize::try_from(chunk_size).unwrap_or(16 << 20),
        }
    }

    async fn start_session(&self, key: &str) -> Result<ResumableUploadClient> {
        let media = Media::new(key.to_string());
        self.client
            .prepare_resumable_upload(&self.create_only(), &UploadType::Simple(media))
            .await
            .map_err(|e| map_error(self, key, e))
    }

    fn create_only(&self) -> UploadObjectRequest {
        UploadObjectRequest {
            bucket: self.bucket.to_string(),
            if_generation_match: Some(0),
            ..Default::default()
        }
    }

    /// The object GCS finished must carry our MD5 and CRC32C; else it is removed.
    async fn check_stored(&self, object: &Object, checksums: &Checksums, crc: u32) -> Result<()> {
        let md5 = BASE64.encode(checksums.md5.as_bytes());
        let crc = crc32c_base64(crc);
        let matches = object.md5_hash.as_deref().is_none_or(|m| m == md5)
            && object.crc32c.as_deref().is_none_or(|c| c == crc);
        if matches {
            return Ok(());
        }
        let removed = self
            .client
            .delete_object(&DeleteObjectRequest {
                bucket: self.bucket.to_string(),
                object: object.name.clone(),
                if_generation_match: Some(object.generation),
                ..Default::default()
            })
            .await;
        if let Err(e) = removed {
            tracing::warn!(backend = %self, key = %object.name, error = %e,
                "could not remove an object GCS stored damaged");
        }
        Err(Error::Storage {
            backend: self.to_string(),
            key: object.name.clone(),
            source: format!(
                "GCS stored bytes with MD5 {:?} and CRC32C {:?}, but MD5 {md5} and CRC32C {crc} \
                 were sent: damaged on the way",
                object.md5_hash, object.crc32c
            )
            .into(),
            retryable: true,
        })
    }
}

/// A resumable upload, started when the first full chunk is ready; a body smaller than one
/// chunk is sent as one checked request at `finish` instead.
struct GcsWriter {
    backend: GcsBackend,
    key: String,
    buffer: BytesMut,
    session: Option<ResumableUploadClient>,
    /// Bytes GCS has taken.
    offset: u64,
    crc: u32,
}

impl fmt::Debug for GcsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsWriter")
            .field("key", &self.key)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl GcsWriter {
    async fn session(&mut self) -> Result<ResumableUploadClient> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        let session = self.backend.start_session(&self.key).await?;
        self.session = Some(session.clone());
        Ok(session)
    }

    /// Sends one full chunk (never the last: that one carries the total size).
    async fn send_chunk(&mut self, chunk: Bytes) -> Result<()> {
        let session = self.session().await?;
        let len = chunk.len() as u64;
        let range = ChunkSize::new(self.offset, self.offset + len - 1, None);
        match session.upload_multiple_chunk(chunk, &range).await {
            Ok(UploadStatus::ResumeIncomplete(taken))
                if taken.last_byte + 1 == self.offset + len =>
            {
                self.offset += len;
                Ok(())
            }
            Ok(other) => Err(Error::Storage {
                backend: self.backend.to_string(),
                key: self.key.clone(),
                source: format!("GCS answered a chunk with {other:?}").into(),
                retryable: true,
            }),
            Err(e) => Err(map_error(&self.backend, &self.key, e)),
        }
    }
}

#[async_trait]
impl ObjectWriter for GcsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        self.buffer.extend_from_slice(&chunk);
        // Keep at least one byte back: the last chunk must carry the total size.
        while self.buffer.len() > self.backend.chunk_size {
            let full = self.buffer.split_to(self.backend.chunk_size).freeze();
            self.send_chunk(full).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, checksums: &Checksums) -> Result<bool> {
        if self.session.is_none() {
            let body = std::mem::take(&mut self.buffer).freeze();
            return self.backend.put_small(&self.key, body, checksums).await;
        }
        let last = std::mem::take(&mut self.buffer).freeze();
        let total = self.offset + last.len() as u64;
        let range = if last.is_empty() {
            ChunkSize::new(total, total, Some(total))
        } else {
            ChunkSize::new(self.offset, total - 1, Some(total))
        };
        let session = self.session().await?;
        match session.upload_multiple_chunk(last, &range).await {
            Ok(UploadStatus::Ok(object)) => {
                self.backend
                    .check_stored(&object, checksums, self.crc)
                    .await?;
                Ok(true)
            }
            Ok(other) => Err(Error::Storage {
                backend: self.backend.to_string(),
                key: self.key.clone(),
                source: format!("GCS answered the last chunk with {other:?}").into(),
                retryable: true,
            }),
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => Err(map_error(&self.backend, &self.key, e)),
        }
    }

    async fn abort(self: Box<Self>) {
        if let Some(session) = self.session
            && let Err(e) = session.cancel().await
        {
            tracing::debug!(key = %self.key, error = %e,
                "could not cancel a resumable upload; GCS drops it after a week");
        }
    }
}

type BodySender = mpsc::Sender<std::result::Result<Bytes, std::io::Error>>;

/// A body of announced size: one streamed upload request (`uploadType=media`), its last chunk
/// held back until `finish`. GCS creates an object only from a complete body, so a body that
/// is refused (the held-back chunk never sent, the request aborted) leaves nothing. (One
/// request rather than a resumable session: fake-gcs-server takes it 1.7 times as fast, and
/// Stowage does not resume uploads anyway.)
struct GcsStreamingWriter {
    backend: GcsBackend,
    key: String,
    size: u64,
    crc: u32,
    held: Option<Bytes>,
    sending: Option<(
        BodySender,
        JoinHandle<std::result::Result<Object, GcsError>>,
    )>,
}

impl fmt::Debug for GcsStreamingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStreamingWriter")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl GcsStreamingWriter {
    /// Starts the request on the first bytes.
    fn sender(&mut self) -> BodySender {
        if let Some((tx, _)) = &self.sending {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(4);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let (backend, key, size) = (self.backend.clone(), self.key.clone(), self.size);
        let put = tokio::spawn(async move {
            let mut media = Media::new(key);
            media.content_length = Some(size);
            backend
                .client
                .upload_streamed_object(&backend.create_only(), body, &UploadType::Simple(media))
                .await
        });
        self.sending = Some((tx.clone(), put));
        tx
    }

    /// The request's outcome once it has ended.
    async fn outcome(&mut self) -> Result<std::result::Result<Object, GcsError>> {
        let Some((tx, put)) = self.sending.take() else {
            return Err(Error::Unavailable("the GCS upload was not started".into()));
        };
        drop(tx);
        put.await.map_err(|e| Error::Storage {
            backend: self.backend.to_string(),
            key: self.key.clone(),
            source: Box::new(e),
            retryable: true,
        })
    }

    /// The error of a request that ended before it took the whole body.
    async fn ended_early(&mut self) -> Error {
        match self.outcome().await {
            Ok(Err(e)) => map_error(&self.backend, &self.key, e),
            Ok(Ok(_)) => Error::Storage {
                backend: self.backend.to_string(),
                key: self.key.clone(),
                source: "GCS answered before the body ended".into(),
                retryable: true,
            },
            Err(e) => e,
        }
    }
}

#[async_trait]
impl ObjectWriter for GcsStreamingWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        if let Some(previous) = self.held.replace(chunk)
            && self.sender().send(Ok(previous)).await.is_err()
        {
            return Err(self.ended_early().await);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, checksums: &Checksums) -> Result<bool> {
        let tx = self.sender();
        if let Some(last) = self.held.take()
            && tx.send(Ok(last)).await.is_err()
        {
            return Err(self.ended_early().await);
        }
        drop(tx);
        match self.outcome().await? {
            Ok(object) => {
                self.backend
                    .check_stored(&object, checksums, self.crc)
                    .await?;
                Ok(true)
            }
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => Err(map_error(&self.backend, &self.key, e)),
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some((tx, put)) = self.sending.take() {
            // The body ends with an error: GCS never gets its last bytes.
            let _ = tx.send(Err(std::io::Error::other("upload refused"))).await;
            drop(tx);
            put.abort();
        }
    }
}

#[async_trait]
impl ObjectBackend for GcsBackend {
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool> {
        let crc = crc32c::crc32c(&body);
        let metadata = Object {
            name: key.to_string(),
            content_type: Some("application/octet-stream".into()),
            md5_hash: Some(BASE64.encode(checksums.md5.as_bytes())),
            crc32c: Some(crc32c_base64(crc)),
            ..Default::default()
        };
        let sent = self
            .client
            .upload_object(
                &self.create_only(),
                body,
                &UploadType::Multipart(Box::new(metadata)),
            )
            .await;
        match sent {
            Ok(object) => {
                self.check_stored(&object, checksums, crc).await?;
                Ok(true)
            }
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => Err(map_error(self, key, e)),
        }
    }

    async fn writer(
        &self,
        key: &str,
        size: Option<u64>,
        _sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>> {
        if let Some(size) = size.filter(|&s| s > 0) {
            return Ok(Box::new(GcsStreamingWriter {
                backend: self.clone(),
                key: key.to_string(),
                size,
                crc: 0,
                held: None,
                sending: None,
            }));
        }
        Ok(Box::new(GcsWriter {
            backend: self.clone(),
            key: key.to_string(),
            buffer: BytesMut::new(),
            session: None,
            offset: 0,
            crc: 0,
        }))
    }

    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        _size: u64,
        _sha256: &Sha256,
    ) -> Result<bool> {
        let copied = self
            .client
            .copy_object(&CopyObjectRequest {
                source_bucket: self.bucket.to_string(),
                source_object: from.to_string(),
                destination_bucket: self.bucket.to_string(),
                destination_object: to.to_string(),
                if_generation_match: Some(0),
                ..Default::default()
            })
            .await;
        match copied {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => Err(map_error(self, to, e)),
        }
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        self.client
            .get_object(&GetObjectRequest {
                bucket: self.bucket.to_string(),
                object: key.to_string(),
                ..Default::default()
            })
            .await
            .map(|object| info_of(&object))
            .map_err(|e| map_error(self, key, e))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        let request = GetObjectRequest {
            bucket: self.bucket.to_string(),
            object: key.to_string(),
            ..Default::default()
        };
        let stream = self
            .client
            .download_streamed_object(&request, &GcsRange(Some(range.start), Some(range.end - 1)))
            .await
            .map_err(|e| map_error(self, key, e))?;
        let (backend, key) = (self.to_string(), key.to_string());
        Ok(stream
            .map_err(move |e| map_error(&backend, &key, e))
            .boxed())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        let removed = self
            .client
            .delete_object(&DeleteObjectRequest {
                bucket: self.bucket.to_string(),
                object: key.to_string(),
                ..Default::default()
            })
            .await;
        match removed.map_err(|e| map_error(self, key, e)) {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let backend = self.clone();
        let prefix = prefix.to_string();
        futures::stream::try_unfold(Some(None), move |token: Option<Option<String>>| {
            let (backend, prefix) = (backend.clone(), prefix.clone());
            async move {
                let Some(page_token) = token else {
                    return Ok(None);
                };
                let page = backend
                    .client
                    .list_objects(&ListObjectsRequest {
                        bucket: backend.bucket.to_string(),
                        prefix: Some(prefix.clone()),
                        page_token,
                        max_results: Some(1000),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| map_error(&backend, &prefix, e))?;
                let items: Vec<Result<ObjectInfo>> = page
                    .items
                    .unwrap_or_default()
                    .iter()
                    .map(|o| Ok(info_of(o)))
                    .collect();
                let next = page.next_page_token.map(Some);
                Ok(Some((futures::stream::iter(items), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn check(&self) -> Result<()> {
        self.client
            .get_bucket(&GetBucketRequest {
                bucket: self.bucket.to_string(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| map_error(self, "", e))
    }
}
