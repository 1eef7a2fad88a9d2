//! Download redirects for GCS: V4 signed URLs (`GOOG4-RSA-SHA256`), signed offline with the
//! service account's private key from `credentialsFile`, answering with the file's name
//! (`response-content-disposition`) and content type. A signed URL needs that key: with the
//! default credentials alone (a VM's service account) there is no signer, and downloads are
//! served through Stowage.
//!
//! The signing is Stowage's own (40 lines of the documented algorithm, on the `rsa` crate):
//! `gcloud-storage`'s signer leaves `*` unescaped in the canonical query, so a URL carrying
//! `filename*=` (every Content-Disposition Stowage sends) would be refused by Google. The tests
//! compare each signature with the official Python client's for the same key and time.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use sha2::{Digest, Sha256 as Sha256Hasher};
use stowage_core::signing::{
    DownloadSigner, DownloadUrlRequest, SignedUrl, UrlExpiry, content_disposition,
};
use stowage_core::{Error, Result, Sha256};

use crate::{GcsConfig, GcsProvider};

/// Longest validity of a V4 signed URL.
pub const MAX_SIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The fields of a service-account key file that signing needs.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
}

/// RFC 3986's unreserved characters stay; everything else is escaped (V4's canonical form).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same for an object name, whose `/` stay.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// Signs V4 download URLs for one bucket.
#[derive(Clone)]
pub struct GcsSigner {
    provider: GcsProvider,
    email: String,
    key: SigningKey<Sha256Hasher>,
    expiry: UrlExpiry,
    /// Scheme and host of the URLs: `https`, `storage.googleapis.com` unless an endpoint is set.
    scheme: String,
    host: String,
}

impl std::fmt::Debug for GcsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsSigner")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl GcsSigner {
    /// A signer from the configured key file; `Ok(None)` without one.
    pub fn from_config(config: &GcsConfig, provider: &GcsProvider) -> Result<Option<Self>> {
        let Some(path) = &config.credentials_file else {
            return Ok(None);
        };
        let refuse = |what: String| {
            Error::InvalidInput(format!(
                "[filestore.google-storage] credentialsFile {}: {what}",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
        let key: ServiceAccountKey = serde_json::from_str(&text).map_err(|e| {
            refuse(format!(
                "not a service-account key (client_email and private_key sign URLs): {e}"
            ))
        })?;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&key.private_key)
            .map_err(|e| refuse(format!("private_key is not a PKCS#8 RSA key: {e}")))?;
        let (scheme, host) = match config.endpoint.as_deref() {
            Some(endpoint) => {
                let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                (scheme.to_string(), rest.trim_end_matches('/').to_string())
            }
            None => ("https".to_string(), "storage.googleapis.com".to_string()),
        };
        Ok(Some(Self {
            provider: provider.clone(),
            email: key.client_email,
            key: SigningKey::new(private),
            expiry: UrlExpiry {
                base: Duration::from_secs(config.signed_url_expiry_seconds.max(1)),
                slow_client_bytes_per_sec: config.signed_url_slow_client_rate.as_u64().max(1),
                max: MAX_SIGNED_EXPIRY,
            },
            scheme,
            host,
        }))
    }

    /// A V4 signed GET URL for `key` with extra query parameters, valid `expires` from
    /// `start` (path style: `/<bucket>/<key>`).
    pub fn sign(
        &self,
        key: &str,
        extra: Vec<(String, String)>,
        start: SystemTime,
        expires: Duration,
    ) -> String {
        let stamp = chrono::DateTime::<chrono::Utc>::from(start);
        let timestamp = stamp.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{}/auto/storage/goog4_request", stamp.format("%Y%m%d"));
        let mut query: Vec<(String, String)> = vec![
            ("X-Goog-Algorithm".into(), "GOOG4-RSA-SHA256".into()),
            (
                "X-Goog-Credential".into(),
                format!("{}/{scope}", self.email),
            ),
            ("X-Goog-Date".into(), timestamp.clone()),
            ("X-Goog-Expires".into(), expires.as_secs().to_string()),
            ("X-Goog-SignedHeaders".into(), "host".into()),
        ];
        query.extend(extra);
        let mut encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, QUERY),
                    utf8_percent_encode(v, QUERY)
                )
            })
            .collect();
        encoded.sort();
        let query = encoded.join("&");
        let bucket = &*self.provider.backend().bucket;
        let path = format!(
            "/{}/{}",
            utf8_percent_encode(bucket, PATH),
            utf8_percent_encode(key, PATH)
        );
        let canonical = format!(
            "GET\n{path}\n{query}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
            self.host
        );
        let to_sign = format!(
            "GOOG4-RSA-SHA256\n{timestamp}\n{scope}\n{}",
            hex::encode(Sha256Hasher::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(self.key.sign(to_sign.as_bytes()).to_bytes());
        format!(
            "{}://{}{path}?{query}&X-Goog-Signature={signature}",
            self.scheme, self.host
        )
    }
}

#[async_trait]
impl DownloadSigner for GcsSigner {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        let (expires_in, reusable_for) = self.expiry.for_request(request, MAX_SIGNED_EXPIRY);
        let query = vec![
            (
                "response-content-disposition".to_string(),
                content_disposition(&request.file_name),
            ),
            (
                "response-content-type".to_string(),
                request.content_type.clone(),
            ),
        ];
        let now = SystemTime::now();
        let url = self.sign(&self.provider.key_of(digest), query, now, expires_in);
        Ok(SignedUrl {
            url,
            expires_at: now + expires_in,
            reusable_for,
        })
    }
}
