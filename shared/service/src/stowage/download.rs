//! The one decision of a download: nothing (not modified), a redirect to a signed URL, or the
//! bytes (all, or one range of them), from the artifact's record, the repository's redirect
//! settings, the client and what this deployment can carry.

use std::ops::Range;
use std::time::Duration;

use stowage_core::signing::{DownloadUrlRequest, SignedUrl};
use stowage_core::{ArtifactPath, ByteStream, Error, GetOptions, RepoKey, Result};
use stowage_metadata::ArtifactRecord;

use super::Stowage;
use super::conditions::{Conditions, Verdict};
use crate::security::Caller;

/// Below this size a redirecting repository still serves the bytes: the round trip of a
/// redirect costs more than they do.
pub(super) const DEFAULT_REDIRECT_MIN_SIZE: u64 = 1 << 20;

/// One byte range asked for, before it is held against the binary's size (RFC 9110's
/// `first-last`, `first-` and `-suffix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first` to `last`, both included; `last` may lie beyond the end.
    Bounded { first: u64, last: u64 },
    /// From `first` to the end.
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The bytes of a body of `size` this range covers; `RangeNotSatisfiable` when none.
    pub fn resolve(self, size: u64) -> Result<Range<u64>> {
        let unsatisfiable = Err(Error::RangeNotSatisfiable { size });
        match self {
            ByteRange::Suffix(0) => unsatisfiable,
            ByteRange::Suffix(_) if size == 0 => unsatisfiable,
            ByteRange::Suffix(n) => Ok(size - n.min(size)..size),
            ByteRange::From(first) if first < size => Ok(first..size),
            ByteRange::Bounded { first, last } if first < size => Ok(first..last.min(size - 1) + 1),
            ByteRange::From(_) | ByteRange::Bounded { .. } => unsatisfiable,
        }
    }
}

/// Whether the client may be sent elsewhere for the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectPolicy {
    /// As the repository says (`downloadRedirect`, `downloadRedirectMinSize`) and the client
    /// allows (`[downloads] proxy_user_agents`).
    #[default]
    Repository,
    /// Never (`?redirect=false`): the bytes, unless the deployment cannot carry them.
    Never,
}

/// A download asked for.
#[derive(Debug, Clone, Default)]
pub struct DownloadRequest {
    /// Only the headers (HEAD): no body is opened, and no redirect given.
    pub head_only: bool,
    /// One range of the bytes (ignored when `if_range` names another version).
    pub range: Option<ByteRange>,
    /// What the read is conditional on (`If-None-Match`, `If-Modified-Since`: "not
    /// modified"; `If-Match`, `If-Unmodified-Since`: 412 when they fail).
    pub conditions: Conditions,
    /// The range applies only to this version (`If-Range`).
    pub if_range: Option<String>,
    pub redirect: RedirectPolicy,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Larger bodies than this cannot be carried by this deployment (a Lambda response) and
    /// are always redirected.
    pub max_response_body: Option<u64>,
    /// The content type the signed URL makes the store answer with.
    pub content_type: String,
}

/// What a download gives.
pub enum Download {
    /// The client's copy is current.
    NotModified,
    /// The bytes are at a signed URL that carries no credentials of the caller's or Stowage's.
    Redirect(SignedUrl),
    /// The bytes, or `range` of them; `body` is `None` for a HEAD.
    Bytes {
        range: Option<Range<u64>>,
        body: Option<ByteStream>,
    },
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Download::NotModified => f.write_str("NotModified"),
            Download::Redirect(url) => f.debug_tuple("Redirect").field(url).finish(),
            Download::Bytes { range, body } => f
                .debug_struct("Bytes")
                .field("range", range)
                .field("body", &body.as_ref().map(|_| "stream"))
                .finish(),
        }
    }
}

/// The strong validator of an artifact's bytes: its SHA-256, quoted.
pub fn etag(record: &ArtifactRecord) -> String {
    format!("\"{}\"", record.checksums.sha256)
}

/// `stowage_downloads_total{answer}`, looked up once per answer (a download then costs no
/// key building in the recorder).
fn downloads_counter(answer: &'static str) -> &'static metrics::Counter {
    use std::sync::LazyLock;
    static BYTES: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("stowage_downloads_total", "answer" => "bytes"));
    static REDIRECT: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("stowage_downloads_total", "answer" => "redirect"));
    static HEAD: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("stowage_downloads_total", "answer" => "head"));
    static NOT_MODIFIED: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("stowage_downloads_total", "answer" => "not_modified"));
    match answer {
        "redirect" => &REDIRECT,
        "head" => &HEAD,
        "not_modified" => &NOT_MODIFIED,
        _ => &BYTES,
    }
}

impl Stowage {
    /// Decides the download of `repo/path` and opens what it needs: the artifact's record with
    /// nothing, a redirect, or a byte stream.
    pub async fn download(
        &self,
        caller: &Caller,
        repo: &RepoKey,
        path: &ArtifactPath,
        request: &DownloadRequest,
    ) -> Result<(ArtifactRecord, Download)> {
        let record = self.artifact(caller, repo, path).await?;
        let answered = |answer: &'static str| downloads_counter(answer).increment(1);
        match request.conditions.evaluate(Some(&record), true) {
            Verdict::Proceed => {}
            Verdict::NotModified => {
                answered("not_modified");
                return Ok((record, Download::NotModified));
            }
            Verdict::Failed(reason) => {
                return Err(Error::PreconditionFailed(format!(
                    "{repo}/{path}: {reason}"
                )));
            }
        }
        let etag = etag(&record);
        if !request.head_only
            && let Some(url) = self.redirect(&record, request).await?
        {
            self.count_download(&record, caller);
            answered("redirect");
            return Ok((record, Download::Redirect(url)));
        }
        let range = match (request.range, request.if_range.as_deref()) {
            (Some(_), Some(validator)) if validator.trim() != etag => None,
            (range, _) => range.map(|r| r.resolve(record.size)).transpose()?,
        };
        answered(if request.head_only { "head" } else { "bytes" });
        let body = if request.head_only {
            None
        } else {
            let body = self.read(&record, range.clone()).await?;
            // A range counts as a download only when it starts the file (a resumed or
            // parallel download is one download, not one per piece).
            if range.as_ref().is_none_or(|r| r.start == 0) {
                self.count_download(&record, caller);
            }
            Some(body)
        };
        Ok((record, Download::Bytes { range, body }))
    }

    /// The signed URL to send a GET to, if it is to be redirected.
    async fn redirect(
        &self,
        record: &ArtifactRecord,
        request: &DownloadRequest,
    ) -> Result<Option<SignedUrl>> {
        if let Some(max) = request.max_response_body
            && record.size > max
        {
            // This deployment cannot carry the bytes: a redirect whatever the repository says.
            return match self.sign(record, &request.content_type).await? {
                Some(url) => Ok(Some(url)),
                None => Err(Error::Unsupported(format!(
                    "{}/{} has {} bytes, more than the {max} bytes a response of this \
                     deployment may carry, and its filestore cannot sign a redirect: use a \
                     cloud filestore template or serve downloads from a container",
                    record.repo, record.path, record.size
                ))),
            };
        }
        if request.redirect == RedirectPolicy::Never || self.provider.download_signer().is_none() {
            return Ok(None);
        }
        if let Some(agent) = request.user_agent.as_deref().map(str::to_lowercase)
            && self.proxy_user_agents.iter().any(|p| agent.contains(p))
        {
            return Ok(None);
        }
        match self.redirect_min_size(&record.repo).await? {
            Some(min_size) if record.size >= min_size => {
                self.sign(record, &request.content_type).await
            }
            _ => Ok(None),
        }
    }

    /// A signed URL for a recorded artifact, `None` when the filestore cannot sign (a local
    /// filesystem).
    async fn sign(&self, record: &ArtifactRecord, content_type: &str) -> Result<Option<SignedUrl>> {
        let Some(signer) = self.provider.download_signer() else {
            return Ok(None);
        };
        let request = DownloadUrlRequest {
            file_name: record.path.name().to_string(),
            content_type: content_type.to_string(),
            size: record.size,
            extra_validity: Duration::ZERO,
        };
        match signer
            .download_url(&record.checksums.sha256, &request)
            .await
        {
            Ok(url) => Ok(Some(url)),
            // The store does not hold the binary yet (still in the eventual queue): no URL
            // can serve it, the bytes can.
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The smallest binary a repository redirects, `None` if it does not redirect.
    async fn redirect_min_size(&self, repo: &RepoKey) -> Result<Option<u64>> {
        if let Some(cached) = self.redirect_settings.get(repo).await {
            return Ok(cached);
        }
        let settings = self.metadata.repository(repo).await?.and_then(|r| {
            let redirect = r.config.get("downloadRedirect").and_then(|v| v.as_bool());
            let min_size = r
                .config
                .get("downloadRedirectMinSize")
                .and_then(|v| v.as_u64())
                .unwrap_or(DEFAULT_REDIRECT_MIN_SIZE);
            (redirect == Some(true)).then_some(min_size)
        });
        self.redirect_settings.insert(repo.clone(), settings).await;
        Ok(settings)
    }

    /// Opens the bytes of a recorded artifact, or a range of them.
    async fn read(&self, record: &ArtifactRecord, range: Option<Range<u64>>) -> Result<ByteStream> {
        let digest = record.checksums.sha256;
        match self.provider.get_opts(&digest, GetOptions { range }).await {
            Ok(got) => Ok(got.stream),
            Err(Error::NotFound { .. }) => {
                tracing::error!(%digest, repo = %record.repo, path = %record.path, "a recorded binary is missing from the filestore");
                Err(Error::Storage {
                    backend: self.provider.to_string(),
                    key: digest.to_hex(),
                    source: format!(
                        "the binary recorded for {}/{} is missing",
                        record.repo, record.path
                    )
                    .into(),
                    retryable: false,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        let r = |range: ByteRange, size| range.resolve(size).ok();
        assert_eq!(r(ByteRange::Bounded { first: 0, last: 0 }, 10), Some(0..1));
        assert_eq!(r(ByteRange::Bounded { first: 2, last: 5 }, 10), Some(2..6));
        assert_eq!(r(ByteRange::From(5), 10), Some(5..10));
        assert_eq!(r(ByteRange::Suffix(3), 10), Some(7..10));
        assert_eq!(r(ByteRange::Suffix(30), 10), Some(0..10));
        assert_eq!(
            r(
                ByteRange::Bounded {
                    first: 8,
                    last: 100
                },
                10
            ),
            Some(8..10)
        );
        assert_eq!(r(ByteRange::From(10), 10), None);
        assert_eq!(
            r(
                ByteRange::Bounded {
                    first: 10,
                    last: 20
                },
                10
            ),
            None
        );
        assert_eq!(r(ByteRange::Suffix(0), 10), None);
        assert_eq!(r(ByteRange::From(0), 0), None);
    }
}
