//! The link between cluster nodes for the cluster eventual queue: another node's queue disk as
//! a [`BinaryProvider`], over that node's internal endpoint ([`QUEUE_PATH`]).
//!
//! | call | what the peer does |
//! |---|---|
//! | `PUT /_stowage/peer/queue/staged` | stages the body (fsynced, its CRC-32C computed) and answers `{id, crc32c, size}`: a quorum write's copy, named by the commit below |
//! | `POST /_stowage/peer/queue/staged/{id}?sha256=…&crc32c=…` | names the staged copy, once the sender checked the upload's digests and that the peer received what it sent; refused when the staged bytes have another CRC-32C (201 new, 200 held already) |
//! | `PUT /_stowage/peer/queue` | stores the body in its queue, hashed and fsynced, and answers its checksums (201 new, 200 held already); declared `X-Checksum-*` headers must match (a repair's copy) |
//! | `GET /_stowage/peer/queue/{sha256}` | streams its copy (`Range` honoured: 206 with `Content-Range`) |
//! | `HEAD /_stowage/peer/queue/{sha256}` | its copy's size (`Content-Length`) |
//! | `DELETE /_stowage/peer/queue/{sha256}` | drops its copy (204), never the object store's |
//!
//! Every call carries the cluster's secret in [`KEY_HEADER`]; the endpoint opens for nothing
//! else (no user, no token). The secret is never logged.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use stowage_core::eventual::{PeerLink, QueueNode};
use stowage_core::{
    BinaryProvider, ByteStream, Checksums, Error, GetOptions, GetResult, Health, ObjectMeta,
    PutOptions, PutResult, Result, Sha256, StagedBinary, Stager,
};

/// Where a node's queue endpoint is, below its root (never under the context path).
pub const QUEUE_PATH: &str = "/_stowage/peer/queue";
/// The header that carries the cluster's secret.
pub const KEY_HEADER: &str = "x-stowage-cluster-key";

/// What a peer answers to a staged copy.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StagedAnswer {
    pub id: String,
    /// The CRC-32C of the bytes the peer received.
    pub crc32c: u32,
    pub size: u64,
}

/// What a peer answers to a committed copy.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CommittedAnswer {
    pub created: bool,
}

/// What a peer answers to a stored copy.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct StoredCopy {
    #[serde(flatten)]
    pub checksums: Checksums,
    pub size: u64,
    pub created: bool,
}

/// Reaches peers over HTTP with the cluster's secret.
#[derive(Clone)]
pub struct HttpPeerLink {
    client: reqwest::Client,
    secret: Arc<str>,
}

impl fmt::Debug for HttpPeerLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPeerLink").finish_non_exhaustive()
    }
}

impl HttpPeerLink {
    /// A link that presents `secret` (the cluster's, `[cluster] secret`).
    pub fn new(secret: &str) -> Result<Self> {
        if secret.len() < 16 {
            return Err(Error::InvalidInput(
                "[cluster] secret must be at least 16 characters (it opens every node's \
                 internal endpoint)"
                    .into(),
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                Error::InvalidInput(format!("cannot build the peers' HTTP client: {e}"))
            })?;
        Ok(Self {
            client,
            secret: Arc::from(secret),
        })
    }
}

impl PeerLink for HttpPeerLink {
    fn queue_of(&self, node: &QueueNode) -> Arc<dyn BinaryProvider> {
        Arc::new(PeerQueue {
            link: self.clone(),
            node: node.id.clone(),
            base: format!("http://{}{QUEUE_PATH}", node.address),
        })
    }
}

/// One peer's queue disk.
#[derive(Debug, Clone)]
pub struct PeerQueue {
    link: HttpPeerLink,
    node: String,
    base: String,
}

impl fmt::Display for PeerQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.node)
    }
}

/// Requests that are not bodies' transfers end within this.
const SHORT: Duration = Duration::from_secs(10);

impl PeerQueue {
    fn request(&self, method: reqwest::Method, digest: Option<&Sha256>) -> reqwest::RequestBuilder {
        let url = match digest {
            Some(d) => format!("{}/{d}", self.base),
            None => self.base.clone(),
        };
        self.link
            .client
            .request(method, url)
            .header(KEY_HEADER, &*self.link.secret)
    }

    /// Sends `body` with `request` and reads the peer's JSON answer.
    async fn send_body<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        body: ByteStream,
    ) -> Result<T> {
        let response = request
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refused(None, response).await);
        }
        self.answer(response).await
    }

    /// The peer's JSON answer.
    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T> {
        response.json().await.map_err(|e| Error::Storage {
            backend: self.to_string(),
            key: "-".into(),
            source: format!("the peer's answer was not understood: {e}").into(),
            retryable: true,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::Unavailable(format!("{self} cannot be reached: {e}"))
    }

    /// The peer's refusal as an error: its own message where it gave one.
    async fn refused(&self, digest: Option<&Sha256>, response: reqwest::Response) -> Error {
        let status = response.status();
        let what = digest.map_or_else(|| "a queued copy".to_string(), |d| format!("copy {d}"));
        if status == reqwest::StatusCode::NOT_FOUND {
            return Error::NotFound {
                what: format!("{what} on {self}"),
            };
        }
        let size = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse().ok());
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            return Error::RangeNotSatisfiable {
                size: size.unwrap_or(0),
            };
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(String::from))
            .unwrap_or(body);
        let hint = match status.as_u16() {
            401 | 403 => " (do both nodes have the same [cluster] secret?)",
            _ => "",
        };
        Error::Storage {
            backend: self.to_string(),
            key: what,
            source: format!("the peer answered {status}{hint}: {message}").into(),
            retryable: status.is_server_error(),
        }
    }
}

#[async_trait]
impl BinaryProvider for PeerQueue {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let mut request = self.request(reqwest::Method::PUT, None);
        if let Some(size) = opts.size {
            request = request.header(reqwest::header::CONTENT_LENGTH, size);
        }
        let e = &opts.expected;
        for (name, value) in [
            ("x-checksum-sha256", e.sha256.map(|d| d.to_hex())),
            ("x-checksum-sha1", e.sha1.map(|d| d.to_hex())),
            ("x-checksum-md5", e.md5.map(|d| d.to_hex())),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        let stored: StoredCopy = self.send_body(request, body).await?;
        Ok(PutResult {
            checksums: stored.checksums,
            size: stored.size,
            created: stored.created,
        })
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        let mut request = self.request(reqwest::Method::GET, Some(digest));
        if let Some(range) = &opts.range {
            if range.start == range.end {
                // An empty range: only the size is wanted.
                let meta = self.head(digest).await?;
                let range = stowage_core::check_range(Some(range.clone()), meta.size)?;
                return Ok(GetResult {
                    meta,
                    range,
                    stream: futures::stream::empty().boxed(),
                });
            }
            request = request.header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", range.start, range.end - 1),
            );
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refused(Some(digest), response).await);
        }
        let length = response.content_length().unwrap_or(0);
        let (range, size) = match response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
        {
            Some((start, end, size)) => (start..end + 1, size),
            None => (0..length, length),
        };
        let shown = self.to_string();
        let stream = response
            .bytes_stream()
            .map_err(move |e| Error::Storage {
                backend: shown.clone(),
                key: "-".into(),
                source: format!("reading a peer's copy broke off: {e}").into(),
                retryable: true,
            })
            .boxed();
        Ok(GetResult {
            meta: ObjectMeta {
                digest: *digest,
                size,
                last_modified: SystemTime::now(),
            },
            range,
            stream,
        })
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        let response = self
            .request(reqwest::Method::HEAD, Some(digest))
            .timeout(SHORT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refused(Some(digest), response).await);
        }
        Ok(ObjectMeta {
            digest: *digest,
            size: response.content_length().unwrap_or(0),
            last_modified: SystemTime::now(),
        })
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        let response = self
            .request(reqwest::Method::DELETE, Some(digest))
            .timeout(SHORT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        match response.status() {
            s if s.is_success() || s == reqwest::StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.refused(Some(digest), response).await),
        }
    }

    /// A quorum write stages on the peer and names the copy once its digest checked out: the
    /// peer computes a CRC-32C only (the transfer's check), where a stored copy would cost it
    /// all three digests again.
    fn as_stager(&self) -> Option<&dyn Stager> {
        Some(self)
    }

    /// A peer's queue is listed by the peer itself (its scans), never through another node.
    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        futures::stream::empty().boxed()
    }

    async fn health(&self) -> Result<Health> {
        Ok(Health::default())
    }
}

#[async_trait]
impl Stager for PeerQueue {
    async fn stage(&self, body: ByteStream, size: Option<u64>) -> Result<Box<dyn StagedBinary>> {
        let mut request = self
            .link
            .client
            .put(format!("{}/staged", self.base))
            .header(KEY_HEADER, &*self.link.secret);
        if let Some(size) = size {
            request = request.header(reqwest::header::CONTENT_LENGTH, size);
        }
        // The CRC-32C of what is sent, to match against what the peer received.
        let sent = Arc::new(std::sync::Mutex::new(0u32));
        let feed = Arc::clone(&sent);
        let body = body
            .inspect_ok(move |chunk| {
                let mut crc = feed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *crc = crc32c::crc32c_append(*crc, chunk);
            })
            .boxed();
        let staged: StagedAnswer = self.send_body(request, body).await?;
        let sent = *sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Box::new(PeerStagedCopy {
            queue: self.clone(),
            staged,
            sent,
        }))
    }
}

/// A copy staged on a peer, named there by its commit.
#[derive(Debug)]
struct PeerStagedCopy {
    queue: PeerQueue,
    staged: StagedAnswer,
    /// The CRC-32C of what was sent.
    sent: u32,
}

#[async_trait]
impl StagedBinary for PeerStagedCopy {
    fn size(&self) -> u64 {
        self.staged.size
    }

    async fn commit(self: Box<Self>, digest: &Sha256) -> Result<bool> {
        if self.staged.crc32c != self.sent {
            // Not committed: the peer drops the staged bytes when they have waited too long.
            return Err(Error::Unavailable(format!(
                "{} received bytes with CRC-32C {:08x}, not the {:08x} of the {digest} that \
                 were sent",
                self.queue, self.staged.crc32c, self.sent
            )));
        }
        let response = self
            .queue
            .link
            .client
            .post(format!("{}/staged/{}", self.queue.base, self.staged.id))
            .query(&[
                ("sha256", digest.to_hex()),
                ("crc32c", self.sent.to_string()),
            ])
            .header(KEY_HEADER, &*self.queue.link.secret)
            .timeout(SHORT)
            .send()
            .await
            .map_err(|e| self.queue.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.queue.refused(Some(digest), response).await);
        }
        let committed: CommittedAnswer = self.queue.answer(response).await?;
        Ok(committed.created)
    }
}

/// `bytes START-END/SIZE` → (start, end, size).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, size.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_short_secrets_are_refused() {
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        let e = HttpPeerLink::new("short").expect_err("too short");
        assert!(e.to_string().contains("16 characters"), "{e}");
        // The secret never shows in a debug print.
        let link = HttpPeerLink::new("a-long-enough-cluster-secret").expect("link");
        assert!(!format!("{link:?}").contains("long-enough"));
    }
}
