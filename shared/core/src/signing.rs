//! Signed download URLs: a redirect that lets a client fetch a binary straight from the object
//! store (S3 presigned GET, CloudFront signed URL, GCS V4, Azure SAS) without Stowage's
//! credentials or the caller's. Object stores implement [`DownloadSigner`]; the assembly
//! attaches one to the chain with [`SignedProvider`].

use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{
    BinaryProvider, ByteStream, GetOptions, GetResult, Health, ObjectMeta, PresignedUploads,
    PutOptions, PutResult, Result, Sha256, Stager, StagingAge,
};

/// What the signed URL should make the store answer.
#[derive(Debug, Clone)]
pub struct DownloadUrlRequest {
    /// The name the client should save the file as (`Content-Disposition`).
    pub file_name: String,
    /// The `Content-Type` to answer with.
    pub content_type: String,
    /// The binary's size, which the expiry scales with.
    pub size: u64,
    /// Validity to add to what the signer would give (a URL meant to be handed out again
    /// later, as [`ReusingSigner`] does).
    pub extra_validity: Duration,
}

/// A signed URL and when it stops working.
#[derive(Debug, Clone)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: SystemTime,
    /// How long it may still be handed out with the validity asked for left in full: the
    /// part of `extra_validity` the signer could grant.
    pub reusable_for: Duration,
}

/// Signs download URLs for stored binaries.
#[async_trait]
pub trait DownloadSigner: Send + Sync + Debug {
    /// A URL serving the binary to whoever holds it, until it expires.
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl>;
}

/// How long download URLs stay valid.
#[derive(Debug, Clone, Copy)]
pub struct UrlExpiry {
    /// The least validity (`signedUrlExpirySeconds`).
    pub base: Duration,
    /// A slow client's rate: the validity grows by the time such a client needs for the whole
    /// binary, so that one that resumes a broken transfer with `Range` still can.
    pub slow_client_bytes_per_sec: u64,
    /// The longest validity the signing scheme allows.
    pub max: Duration,
}

impl UrlExpiry {
    /// The validity of a URL for a binary of `size` bytes.
    pub fn for_size(&self, size: u64) -> Duration {
        let transfer = Duration::from_secs(size / self.slow_client_bytes_per_sec.max(1));
        (self.base + transfer).min(self.max)
    }

    /// The validity to sign a request with, at most `cap`, and how much of its
    /// `extra_validity` (at most half the validity) that leaves for reuse.
    pub fn for_request(&self, request: &DownloadUrlRequest, cap: Duration) -> (Duration, Duration) {
        let wanted = self.for_size(request.size).min(cap);
        // A URL never lives more than half as long again as configured.
        let extra = request.extra_validity.min(wanted / 2);
        let signed = (wanted + extra).min(self.max).min(cap);
        (signed, signed.saturating_sub(wanted))
    }
}

/// Longest time a signed URL is handed out again.
const MAX_REUSE: Duration = Duration::from_secs(300);

/// Hands out the same signed URL for the same binary, name and type for a while, so that
/// popular binaries (CI clients fetch the same ones again and again) cost one signature per
/// window instead of one per request. Each URL is signed for the window longer than its
/// validity, so every copy handed out still has its full validity left.
#[derive(Debug)]
pub struct ReusingSigner {
    inner: std::sync::Arc<dyn DownloadSigner>,
    urls: moka::future::Cache<(Sha256, String, String, u64), (SignedUrl, std::time::Instant)>,
}

impl ReusingSigner {
    pub fn new(inner: std::sync::Arc<dyn DownloadSigner>) -> Self {
        Self {
            inner,
            urls: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(MAX_REUSE)
                .build(),
        }
    }
}

#[async_trait]
impl DownloadSigner for ReusingSigner {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        let key = (
            *digest,
            request.file_name.clone(),
            request.content_type.clone(),
            request.size,
        );
        let now = std::time::Instant::now();
        if let Some((url, until)) = self.urls.get(&key).await
            && now < until
        {
            return Ok(url);
        }
        let mut wider = request.clone();
        wider.extra_validity += MAX_REUSE;
        let signed = self.inner.download_url(digest, &wider).await?;
        let window = signed.reusable_for.min(MAX_REUSE);
        if !window.is_zero() {
            self.urls.insert(key, (signed.clone(), now + window)).await;
        }
        Ok(signed)
    }
}

/// `Content-Disposition: attachment` with the name as given (quotes and backslashes escaped,
/// non-ASCII replaced) and, for non-ASCII names, RFC 6266's `filename*` in UTF-8.
pub fn content_disposition(file_name: &str) -> String {
    let plain: String = file_name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    if plain == file_name {
        return format!("attachment; filename=\"{plain}\"");
    }
    let encoded =
        percent_encoding::utf8_percent_encode(file_name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_grows_with_size_up_to_the_maximum() {
        let e = UrlExpiry {
            base: Duration::from_secs(600),
            slow_client_bytes_per_sec: 1_000_000,
            max: Duration::from_secs(7 * 86_400),
        };
        assert_eq!(e.for_size(0), Duration::from_secs(600));
        assert_eq!(e.for_size(10_000_000_000), Duration::from_secs(10_600));
        assert_eq!(e.for_size(u64::MAX), Duration::from_secs(7 * 86_400));
        let request = |size, extra| DownloadUrlRequest {
            file_name: "f".into(),
            content_type: "t".into(),
            size,
            extra_validity: Duration::from_secs(extra),
        };
        let cap = Duration::from_secs(7 * 86_400);
        let secs = |(a, b): (Duration, Duration)| (a.as_secs(), b.as_secs());
        assert_eq!(secs(e.for_request(&request(0, 300), cap)), (900, 300));
        assert_eq!(
            secs(e.for_request(&request(0, 3000), cap)),
            (900, 300),
            "at most half again"
        );
        assert_eq!(
            secs(e.for_request(&request(0, 300), Duration::from_secs(700))),
            (700, 100)
        );
        assert_eq!(
            secs(e.for_request(&request(u64::MAX, 300), cap)),
            (7 * 86_400, 0)
        );
    }

    #[test]
    fn disposition_keeps_plain_names_and_encodes_others() {
        assert_eq!(
            content_disposition("app-1.0.jar"),
            "attachment; filename=\"app-1.0.jar\""
        );
        assert_eq!(
            content_disposition("résumé \"v2\".txt"),
            "attachment; filename=\"r_sum_ _v2_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22%2Etxt"
        );
    }
}

/// A provider with a download signer attached: the signer travels with the chain, so a
/// wrapper above passes it on ([`BinaryProvider::download_signer`]) or refuses it. Every other
/// call goes to the provider as it is.
#[derive(Debug)]
pub struct SignedProvider {
    inner: std::sync::Arc<dyn BinaryProvider>,
    signer: std::sync::Arc<dyn DownloadSigner>,
}

impl SignedProvider {
    /// `inner`, whose binaries `signer` signs URLs for (reusing each URL for a while, as
    /// [`ReusingSigner`] does).
    pub fn new(
        inner: std::sync::Arc<dyn BinaryProvider>,
        signer: std::sync::Arc<dyn DownloadSigner>,
    ) -> Self {
        Self {
            inner,
            signer: std::sync::Arc::new(ReusingSigner::new(signer)),
        }
    }
}

impl std::fmt::Display for SignedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl BinaryProvider for SignedProvider {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(body, opts).await
    }

    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(digest, opts).await
    }

    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        self.inner.head(digest).await
    }

    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.inner.delete(digest).await
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list()
    }

    async fn health(&self) -> Result<Health> {
        self.inner.health().await
    }

    async fn put_file(&self, path: &Path, sha256: &Sha256, size: u64) -> Result<bool> {
        self.inner.put_file(path, sha256, size).await
    }

    fn as_stager(&self) -> Option<&dyn Stager> {
        self.inner.as_stager()
    }

    fn download_signer(&self) -> Option<&dyn DownloadSigner> {
        Some(self.signer.as_ref())
    }

    fn presigned_uploads(&self) -> Option<&dyn PresignedUploads> {
        self.inner.presigned_uploads()
    }

    async fn clean_staging(&self, age: StagingAge) -> Result<u64> {
        self.inner.clean_staging(age).await
    }
}
