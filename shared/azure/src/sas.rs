//! Download redirects for Azure: service SAS URLs (HMAC-SHA256 with the account key over the
//! documented string-to-sign, version 2022-11-02), read-only, for one blob, answering with the
//! file's name (`rscd`) and content type (`rsct`). Neither the official crate nor
//! `object_store` signs a service SAS with response headers, so this is Stowage's own; Azurite
//! verifies every signature in the tests. Without an account key (SAS token or Entra ID)
//! there is no signer and downloads are served through Stowage.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::utf8_percent_encode;
use sha2::Sha256 as Sha256Hasher;
use stowage_core::signing::{
    DownloadSigner, DownloadUrlRequest, SignedUrl, UrlExpiry, content_disposition,
};
use stowage_core::{Error, Result, Sha256};

use crate::{AzureConfig, AzureProvider};

/// The SAS version signed (its string-to-sign has 16 fields).
pub const SAS_VERSION: &str = "2022-11-02";
/// Longest validity Stowage gives a download SAS (Azure sets none; a week, as S3 and GCS).
pub const MAX_SAS_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Signs read-only service SAS URLs for the blobs of one container.
#[derive(Clone)]
pub struct AzureSasSigner {
    provider: AzureProvider,
    key: Vec<u8>,
    expiry: UrlExpiry,
    https: bool,
}

impl std::fmt::Debug for AzureSasSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSasSigner")
            .field("backend", &self.provider.to_string())
            .finish_non_exhaustive()
    }
}

/// The fields of a service SAS for one blob.
#[derive(Debug, Clone)]
pub struct SasFields<'a> {
    pub permissions: &'a str,
    pub expiry: SystemTime,
    pub content_disposition: &'a str,
    pub content_type: &'a str,
}

impl AzureSasSigner {
    /// A signer from the configured account key; `Ok(None)` without one.
    pub fn from_config(config: &AzureConfig, provider: &AzureProvider) -> Result<Option<Self>> {
        let Some(key) = &config.account_key else {
            return Ok(None);
        };
        let key = BASE64.decode(key.trim()).map_err(|e| {
            Error::InvalidInput(format!(
                "[filestore.azure-blob-storage] accountKey is not base64: {e}"
            ))
        })?;
        Ok(Some(Self {
            provider: provider.clone(),
            key,
            expiry: UrlExpiry {
                base: Duration::from_secs(config.signed_url_expiry_seconds.max(1)),
                slow_client_bytes_per_sec: config.signed_url_slow_client_rate.as_u64().max(1),
                max: MAX_SAS_EXPIRY,
            },
            https: config.blob_endpoint().starts_with("https://"),
        }))
    }

    /// The URL of blob `key` with a service SAS of these fields.
    pub fn sign(&self, key: &str, fields: &SasFields<'_>) -> String {
        let backend = self.provider.backend();
        let expiry = chrono::DateTime::<chrono::Utc>::from(fields.expiry)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let protocol = if self.https { "https" } else { "" };
        let resource = format!("/blob/{}/{}/{key}", backend.account, backend.container);
        let to_sign = [
            fields.permissions,
            "", // signed start: valid from now
            &expiry,
            &resource,
            "", // signed identifier (stored access policy)
            "", // signed IP range
            protocol,
            SAS_VERSION,
            "b", // signed resource: a blob
            "",  // snapshot time
            "",  // encryption scope
            "",  // rscc
            fields.content_disposition,
            "", // rsce
            "", // rscl
            fields.content_type,
        ]
        .join("\n");
        let mut mac =
            Hmac::<Sha256Hasher>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        let mut query = vec![
            ("sv", SAS_VERSION),
            ("sr", "b"),
            ("sp", fields.permissions),
            ("se", &expiry),
        ];
        if self.https {
            query.push(("spr", "https"));
        }
        if !fields.content_disposition.is_empty() {
            query.push(("rscd", fields.content_disposition));
        }
        if !fields.content_type.is_empty() {
            query.push(("rsct", fields.content_type));
        }
        query.push(("sig", &signature));
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, crate::backend::UNRESERVED)))
            .collect();
        format!("{}?{}", backend.url(Some(key)), query.join("&"))
    }
}

#[async_trait]
impl DownloadSigner for AzureSasSigner {
    async fn download_url(
        &self,
        digest: &Sha256,
        request: &DownloadUrlRequest,
    ) -> Result<SignedUrl> {
        let (expires_in, reusable_for) = self.expiry.for_request(request, MAX_SAS_EXPIRY);
        // Whole seconds: the SAS carries no fraction, and the URL must not outlive `expires_at`.
        let now = SystemTime::now();
        let expires_at = now + expires_in;
        let disposition = content_disposition(&request.file_name);
        let url = self.sign(
            &self.provider.key_of(digest),
            &SasFields {
                permissions: "r",
                expiry: expires_at,
                content_disposition: &disposition,
                content_type: &request.content_type,
            },
        );
        Ok(SignedUrl {
            url,
            expires_at,
            reusable_for,
        })
    }
}
