//! Download redirects: S3 presigned GET URLs ([`S3Backend`] as a [`DownloadSigner`]) and
//! CloudFront signed URLs ([`CloudFrontSigner`]), both answering with the file's name
//! (`response-content-disposition`) and content type.
//!
//! **Keys that outlive the URL.** A presigned S3 URL stops working when the credentials that
//! signed it expire, whatever its own expiry. Under a role (Lambda, ECS, EC2), credentials last
//! an hour or so: the URL's expiry is then capped at the credentials' and a warning says so.
//! For long-lived download URLs use static keys of an IAM user dedicated to signing, or
//! CloudFront, whose RSA key pair does not expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::config::ProvideCredentials;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use stowage_core::signing::{
    DownloadSigner, DownloadUrlRequest, SignedUrl, UrlExpiry, content_disposition,
};
use stowage_core::{Error, Result, Sha256};

use crate::S3Config;
use crate::backend::S3Backend;

/// Longest validity of a SigV4 presigned URL.
pub(crate) const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Credentials this close to their expiry are not used to sign (the SDK refreshes them).
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(60);

pub(crate) fn url_expiry(config: &S3Config, max: Duration) -> UrlExpiry {
    UrlExpiry {
        base: Duration::from_secs(config.signed_url_expiry_seconds.max(1)),
        slow_client_bytes_per_sec: config.signed_url_slow_client_rate.as_u64().max(1),
        max,
    }
}

#[async_trait]
impl DownloadSigner for S3Backend {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        // A URL is only good while the credentials that signed it are.
        let mut cap = MAX_PRESIGNED_EXPIRY;
        if let Some(expiry) = self.credentials_expiry().await {
            cap = expiry
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(CREDENTIALS_MARGIN)
                .max(Duration::from_secs(1));
            let wanted = url_expiry(self.config(), MAX_PRESIGNED_EXPIRY).for_size(request.size);
            if cap < wanted {
                tracing::warn!(?wanted, capped = ?cap,
                    "a download URL is capped at the expiry of the temporary credentials that sign it; \
                     use static keys or CloudFront for longer-lived URLs");
            }
        }
        let (expires_in, reusable_for) =
            url_expiry(self.config(), MAX_PRESIGNED_EXPIRY).for_request(request, cap);
        let key = self.key_of(digest);
        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in)
            .map_err(|e| Error::InvalidInput(format!("bad download URL expiry: {e}")))?;
        let presigned = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .response_content_disposition(content_disposition(&request.file_name))
            .response_content_type(&request.content_type)
            .presigned(presigning)
            .await
            .map_err(|e| self.map(&key, "presign GetObject", e))?;
        Ok(SignedUrl {
            url: presigned.uri().to_string(),
            expires_at: SystemTime::now() + expires_in,
            reusable_for,
        })
    }
}

/// How often the signing credentials' expiry is asked for again.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(60);

impl S3Backend {
    /// When the credentials that sign URLs expire (`None`: static keys, or unknown).
    async fn credentials_expiry(&self) -> Option<SystemTime> {
        let lock = || {
            self.inner
                .credentials_expiry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((asked, expiry)) = *lock()
            && asked.elapsed() < CREDENTIALS_RECHECK
        {
            return expiry;
        }
        let provider = self.inner.credentials.as_ref()?;
        let expiry = provider.provide_credentials().await.ok()?.expiry();
        *lock() = Some((std::time::Instant::now(), expiry));
        expiry
    }
}

/// Signs CloudFront URLs for the binaries of an S3 provider (the distribution's origin).
#[derive(Debug, Clone)]
pub struct CloudFrontSigner {
    s3: S3Backend,
    domain: String,
    key_pair_id: String,
    key: SigningKey<sha1::Sha1>,
    ip_range: Option<String>,
    custom_policy: bool,
    expiry: UrlExpiry,
}

/// CloudFront's URL-safe base64: standard base64 with `+` → `-`, `=` → `_`, `/` → `~`.
pub fn cloudfront_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// A CloudFront policy statement, fields in the order CloudFront documents (and botocore
/// writes) them.
#[derive(serde::Serialize)]
struct Policy<'a> {
    #[serde(rename = "Statement")]
    statement: [Statement<'a>; 1],
}

#[derive(serde::Serialize)]
struct Statement<'a> {
    #[serde(rename = "Resource")]
    resource: &'a str,
    #[serde(rename = "Condition")]
    condition: Condition<'a>,
}

#[derive(serde::Serialize)]
struct Condition<'a> {
    #[serde(rename = "DateLessThan")]
    date_less_than: EpochTime,
    #[serde(rename = "IpAddress", skip_serializing_if = "Option::is_none")]
    ip_address: Option<SourceIp<'a>>,
}

#[derive(serde::Serialize)]
struct EpochTime {
    #[serde(rename = "AWS:EpochTime")]
    epoch_time: u64,
}

#[derive(serde::Serialize)]
struct SourceIp<'a> {
    #[serde(rename = "AWS:SourceIp")]
    source_ip: &'a str,
}

impl CloudFrontSigner {
    /// From `[filestore.s3]`'s `cloudFront*` settings; `None` when no domain is configured.
    pub fn from_config(s3: &S3Backend) -> Result<Option<Self>> {
        let c = s3.config();
        let Some(domain) = c.cloud_front_domain_name.clone() else {
            return Ok(None);
        };
        let bad = |m: String| Error::InvalidInput(format!("[filestore.s3] {m}"));
        let key_pair_id = c
            .cloud_front_key_pair_id
            .clone()
            .ok_or_else(|| bad("cloudFrontDomainName needs cloudFrontKeyPairId".into()))?;
        let pem = match (&c.cloud_front_private_key, &c.cloud_front_private_key_file) {
            (Some(pem), None) => pem.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                bad(format!(
                    "cannot read cloudFrontPrivateKeyFile {}: {e}",
                    path.display()
                ))
            })?,
            _ => {
                return Err(bad(
                    "cloudFrontDomainName needs exactly one of cloudFrontPrivateKey (PEM) or \
                     cloudFrontPrivateKeyFile"
                        .into(),
                ));
            }
        };
        let ip_range = c.cloud_front_ip_range.as_ref().map(|ip| {
            if ip.contains('/') {
                ip.clone()
            } else {
                format!("{ip}/32")
            }
        });
        Ok(Some(Self::new(
            s3.clone(),
            &domain,
            &key_pair_id,
            &pem,
            ip_range,
            c.cloud_front_custom_policy,
            url_expiry(c, Duration::from_secs(365 * 86_400)),
        )?))
    }

    /// A signer for `domain` with the RSA key in `pem` (PKCS#1 or PKCS#8).
    pub fn new(
        s3: S3Backend,
        domain: &str,
        key_pair_id: &str,
        pem: &str,
        ip_range: Option<String>,
        custom_policy: bool,
        expiry: UrlExpiry,
    ) -> Result<Self> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "[filestore.s3] the CloudFront private key is not an RSA key in PEM \
                     (PKCS#1 or PKCS#8): {e}"
                ))
            })?;
        Ok(Self {
            s3,
            domain: domain.trim_end_matches('/').to_string(),
            key_pair_id: key_pair_id.to_string(),
            key: SigningKey::new(key),
            ip_range,
            custom_policy,
            expiry,
        })
    }

    /// Signs `url` until `expires` (seconds since the epoch), as CloudFront checks it: the
    /// canned policy (`Expires=`), or a custom one (`Policy=`) with the IP range if configured.
    pub fn sign(&self, url: &str, expires: u64) -> String {
        let custom = self.custom_policy || self.ip_range.is_some();
        let policy = Policy {
            statement: [Statement {
                resource: url,
                condition: Condition {
                    date_less_than: EpochTime {
                        epoch_time: expires,
                    },
                    ip_address: self
                        .ip_range
                        .as_deref()
                        .map(|source_ip| SourceIp { source_ip }),
                },
            }],
        };
        // Serializing plain structs of strings and numbers cannot fail.
        let policy = serde_json::to_string(&policy).unwrap_or_default();
        let signature = self.key.sign(policy.as_bytes()).to_vec();
        let first = if custom {
            format!("Policy={}", cloudfront_base64(policy.as_bytes()))
        } else {
            format!("Expires={expires}")
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{separator}{first}&Signature={}&Key-Pair-Id={}",
            cloudfront_base64(&signature),
            self.key_pair_id
        )
    }
}

#[async_trait]
impl DownloadSigner for CloudFrontSigner {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let (validity, reusable_for) = self.expiry.for_request(request, self.expiry.max);
        let expires_at = SystemTime::now() + validity;
        let expires = expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let url = format!(
            "https://{}/{}?response-content-disposition={}&response-content-type={}",
            self.domain,
            self.s3.key_of(digest),
            utf8_percent_encode(&content_disposition(&request.file_name), NON_ALPHANUMERIC),
            utf8_percent_encode(&request.content_type, NON_ALPHANUMERIC),
        );
        Ok(SignedUrl {
            url: self.sign(&url, expires),
            expires_at,
            reusable_for,
        })
    }
}
