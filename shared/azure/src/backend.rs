//! The Azure side of the core's [`ObjectBackend`]: one container.
//!
//! Reads, listing, deletes and copies go through `object_store` (its Azure client, credentials
//! and XML parsing). Writes are our own requests, signed by `object_store`'s
//! [`AzureAuthorizer`] with the same credential, because `object_store` sends no checksums: a
//! small body is one Put Blob with its Content-MD5 (the upload's own MD5, already computed), a
//! larger one Put Blocks (each with its CRC-64, `x-ms-content-crc64`, several in flight) and a
//! Put Block List, so Azure refuses damaged bytes. A block's CRC-64 costs a small fraction of
//! the MD5 Azure also accepts there, which would be a second MD5 over every byte. Every
//! write is conditional on `If-None-Match: *`: it creates, never replaces. Block ids carry a
//! random prefix per upload, so two uploads of one key never mix their blocks.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::{Method, StatusCode};
use object_store::azure::{AzureAuthorizer, MicrosoftAzure};
use object_store::path::Path as StorePath;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    client::HttpRequestBody,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use stowage_core::object::{ObjectBackend, ObjectInfo, ObjectWriter};
use stowage_core::{ByteStream, Checksums, Error, Result, Sha256};
use tokio::task::JoinHandle;

/// Everything but RFC 3986's unreserved characters is escaped in a query value.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Characters of a blob name escaped in its URL (`/` stays).
const BLOB_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// How long a pending server-side copy is waited for.
const COPY_WAIT: Duration = Duration::from_secs(120);

/// One container.
#[derive(Debug, Clone)]
pub struct AzureBackend {
    pub(crate) store: Arc<MicrosoftAzure>,
    http: reqwest::Client,
    pub(crate) account: Arc<str>,
    pub(crate) container: Arc<str>,
    /// Blob endpoint, account included (`https://acct.blob.core.windows.net`).
    pub(crate) endpoint: Arc<str>,
    block_size: usize,
    concurrency: usize,
}

impl fmt::Display for AzureBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "azure://{}/{}", self.account, self.container)
    }
}

/// An `object_store` failure in the domain's terms.
fn map_store_error(backend: &impl fmt::Display, key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what: format!("{backend}/{key}"),
        },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::BackendRefused {
            backend: backend.to_string(),
            key: key.to_string(),
            hint: "Azure denied access: check accountKey, sasToken or the identity's role on \
                   the container (Storage Blob Data Contributor)"
                .into(),
            source: Box::new(e),
        },
        other => Error::Storage {
            backend: backend.to_string(),
            key: key.to_string(),
            source: Box::new(other),
            // Network failures and 5xx; object_store's own retries are off, ours apply.
            retryable: true,
        },
    }
}

impl AzureBackend {
    pub(crate) fn new(
        store: MicrosoftAzure,
        account: &str,
        container: &str,
        endpoint: &str,
        block_size: u64,
        concurrency: usize,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            http,
            account: account.into(),
            container: container.into(),
            endpoint: endpoint.into(),
            block_size: usize::try_from(block_size).unwrap_or(16 << 20),
            concurrency: concurrency.max(1),
        })
    }

    /// `<endpoint>/<container>[/<key>]`.
    pub(crate) fn url(&self, key: Option<&str>) -> String {
        match key {
            Some(key) => format!(
                "{}/{}/{}",
                self.endpoint,
                self.container,
                utf8_percent_encode(key, BLOB_PATH)
            ),
            None => format!("{}/{}", self.endpoint, self.container),
        }
    }

    /// Sends one signed request and returns its response, whatever its status.
    async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<reqwest::Response> {
        let what = key.unwrap_or("");
        let mut url = self.url(key);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::CONTENT_LENGTH, body.len().to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut request = request
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::InvalidInput(format!("bad Azure request for {url}: {e}")))?;
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| map_store_error(self, what, e))?;
        AzureAuthorizer::new(&credential, &self.account)
            .try_authorize(&mut request)
            .map_err(|e| map_store_error(self, what, e))?;
        let (parts, _) = request.into_parts();
        self.http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Storage {
                backend: self.to_string(),
                key: what.to_string(),
                source: Box::new(e),
                retryable: true,
            })
    }

    /// A failed response in the domain's terms.
    async fn failure(&self, key: &str, response: reqwest::Response) -> Error {
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.unwrap_or_default();
        // Azure says Md5Mismatch or Crc64Mismatch; Azurite "InvalidOperation: Provided
        // contentMD5 doesn't match" for an MD5.
        let damaged =
            code == "Md5Mismatch" || code == "Crc64Mismatch" || text.contains("contentMD5");
        let source = format!(
            "{status} {code}: {}",
            text.chars().take(300).collect::<String>()
        );
        match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                what: format!("{self}/{key}"),
            },
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::BackendRefused {
                backend: self.to_string(),
                key: key.to_string(),
                hint: format!(
                    "Azure refused the request ({code}): check accountKey, sasToken or the \
                     identity's role on the container"
                ),
                source: source.into(),
            },
            _ => Error::Storage {
                backend: self.to_string(),
                key: key.to_string(),
                source: source.into(),
                // Bytes damaged on the way are worth another try.
                retryable: status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                    || damaged,
            },
        }
    }

    /// Whether a conditional create found the blob there (409 BlobAlreadyExists or 412).
    fn already_there(response: &reqwest::Response) -> bool {
        matches!(
            response.status(),
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED
        )
    }

    /// Creates the container; succeeds if it exists.
    pub async fn create_container(&self) -> Result<()> {
        let response = self
            .send(Method::PUT, None, "restype=container", &[], Bytes::new())
            .await?;
        if response.status().is_success() || response.status() == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(self.failure("", response).await)
    }

    async fn put_block(&self, key: &str, id: &str, block: Bytes) -> Result<()> {
        let crc64 = content_crc64(&block);
        let query = format!("comp=block&blockid={}", utf8_percent_encode(id, UNRESERVED));
        let response = self
            .send(
                Method::PUT,
                Some(key),
                &query,
                &[("x-ms-content-crc64", crc64)],
                block,
            )
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.failure(key, response).await)
    }

    /// Waits until a server-side copy into `key` is no longer pending.
    async fn wait_for_copy(&self, key: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + COPY_WAIT;
        loop {
            let response = self
                .send(Method::HEAD, Some(key), "", &[], Bytes::new())
                .await?;
            if !response.status().is_success() {
                return Err(self.failure(key, response).await);
            }
            let status = response
                .headers()
                .get("x-ms-copy-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("success")
                .to_string();
            match status.as_str() {
                "success" => return Ok(()),
                "pending" if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => {
                    return Err(Error::Storage {
                        backend: self.to_string(),
                        key: key.to_string(),
                        source: format!("the server-side copy ended as {other:?}").into(),
                        retryable: true,
                    });
                }
            }
        }
    }
}

/// Azure's transactional CRC-64 of `bytes`, as `x-ms-content-crc64` carries it: CRC-64/NVME
/// (reflected polynomial `0x9A6C9329AC4BC9B5`, all ones in and out), its 8 bytes little-endian,
/// in base64.
fn content_crc64(bytes: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes);
    BASE64.encode(crc.to_le_bytes())
}

/// Blocks being sent, committed as a block list at `finish`; a body smaller than one block is
/// one Put Blob instead.
#[derive(Debug)]
struct AzureWriter {
    backend: AzureBackend,
    key: String,
    /// Random per upload: block ids of concurrent uploads of one key never collide.
    upload: String,
    buffer: BytesMut,
    ids: Vec<String>,
    in_flight: Vec<JoinHandle<Result<()>>>,
}

impl AzureWriter {
    fn start_block(&mut self, block: Bytes) {
        let id = BASE64.encode(format!("{}-{:06}", self.upload, self.ids.len()));
        self.ids.push(id.clone());
        let (backend, key) = (self.backend.clone(), self.key.clone());
        self.in_flight.push(tokio::spawn(async move {
            backend.put_block(&key, &id, block).await
        }));
    }

    /// Waits for the oldest blocks until fewer than `limit` are in flight.
    async fn settle(&mut self, limit: usize) -> Result<()> {
        while self.in_flight.len() > limit {
            let oldest = self.in_flight.remove(0);
            oldest.await.map_err(|e| Error::Storage {
                backend: self.backend.to_string(),
                key: self.key.clone(),
                source: Box::new(e),
                retryable: true,
            })??;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectWriter for AzureWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() > self.backend.block_size {
            let block = self.buffer.split_to(self.backend.block_size).freeze();
            self.start_block(block);
            self.settle(self.backend.concurrency - 1).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, checksums: &Checksums) -> Result<bool> {
        if self.ids.is_empty() {
            let body = std::mem::take(&mut self.buffer).freeze();
            return self.backend.put_small(&self.key, body, checksums).await;
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer).freeze();
            self.start_block(last);
        }
        self.settle(0).await?;
        let mut list = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &self.ids {
            list.push_str(&format!("<Latest>{id}</Latest>"));
        }
        list.push_str("</BlockList>");
        let headers = [
            ("if-none-match", "*".to_string()),
            (
                "x-ms-blob-content-md5",
                BASE64.encode(checksums.md5.as_bytes()),
            ),
            (
                "x-ms-blob-content-type",
                "application/octet-stream".to_string(),
            ),
            ("content-type", "application/xml".to_string()),
        ];
        let response = self
            .backend
            .send(
                Method::PUT,
                Some(&self.key),
                "comp=blocklist",
                &headers,
                Bytes::from(list),
            )
            .await?;
        if AzureBackend::already_there(&response) {
            return Ok(false);
        }
        if response.status().is_success() {
            return Ok(true);
        }
        Err(self.backend.failure(&self.key, response).await)
    }

    async fn abort(self: Box<Self>) {
        // Uncommitted blocks are invisible and Azure drops them after a week.
        for block in self.in_flight {
            block.abort();
        }
    }
}

#[async_trait]
impl ObjectBackend for AzureBackend {
    async fn put_small(&self, key: &str, body: Bytes, checksums: &Checksums) -> Result<bool> {
        let headers = [
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("content-md5", BASE64.encode(checksums.md5.as_bytes())),
            ("content-type", "application/octet-stream".to_string()),
            ("if-none-match", "*".to_string()),
        ];
        let response = self
            .send(Method::PUT, Some(key), "", &headers, body)
            .await?;
        if Self::already_there(&response) {
            return Ok(false);
        }
        if response.status().is_success() {
            return Ok(true);
        }
        Err(self.failure(key, response).await)
    }

    async fn writer(
        &self,
        key: &str,
        _size: Option<u64>,
        _sha256: Option<&Sha256>,
    ) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(AzureWriter {
            backend: self.clone(),
            key: key.to_string(),
            upload: format!("{:016x}", rand::random::<u64>()),
            buffer: BytesMut::new(),
            ids: Vec::new(),
            in_flight: Vec::new(),
        }))
    }

    async fn copy_if_absent(
        &self,
        from: &str,
        to: &str,
        _size: u64,
        _sha256: &Sha256,
    ) -> Result<bool> {
        let options = CopyOptions {
            mode: CopyMode::Create,
            ..Default::default()
        };
        match self
            .store
            .copy_opts(&StorePath::from(from), &StorePath::from(to), options)
            .await
        {
            Ok(()) => {
                self.wait_for_copy(to).await?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(map_store_error(self, to, e)),
        }
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo> {
        let meta = self
            .store
            .head(&StorePath::from(key))
            .await
            .map_err(|e| map_store_error(self, key, e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            last_modified: SystemTime::from(meta.last_modified),
        })
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let found = self
            .store
            .get_opts(&StorePath::from(key), options)
            .await
            .map_err(|e| map_store_error(self, key, e))?;
        let (backend, key) = (self.to_string(), key.to_string());
        Ok(found
            .into_stream()
            .map_err(move |e| map_store_error(&backend, &key, e))
            .boxed())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_store_error(self, key, e)),
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let prefix_path = StorePath::from(prefix);
        let listed = if prefix.is_empty() {
            self.store.list(None)
        } else {
            self.store.list(Some(&prefix_path))
        };
        let (backend, prefix) = (self.to_string(), prefix.to_string());
        listed
            .map(move |found| {
                found
                    .map(|meta| ObjectInfo {
                        key: meta.location.to_string(),
                        size: meta.size,
                        last_modified: SystemTime::from(meta.last_modified),
                    })
                    .map_err(|e| map_store_error(&backend, &prefix, e))
            })
            .boxed()
    }

    async fn check(&self) -> Result<()> {
        let response = self
            .send(Method::GET, None, "restype=container", &[], Bytes::new())
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.failure("", response).await)
    }
}

#[cfg(test)]
mod tests {
    use super::content_crc64;

    #[test]
    fn a_blocks_crc64_is_the_value_azure_computes() {
        // The vectors of Azure's own SDK (azure-sdk-for-cpp, crypt_functions_test.cpp).
        assert_eq!(content_crc64(b""), "AAAAAAAAAAA=");
        assert_eq!(content_crc64(b"Hello Azure!"), "DtjZpL9/o8c=");
        // CRC-64/NVME's catalogue check value, 0xAE8B14860A799888, little-endian.
        assert_eq!(
            content_crc64(b"123456789"),
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                0xAE8B_1486_0A79_9888_u64.to_le_bytes()
            )
        );
    }
}
