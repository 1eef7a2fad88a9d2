//! `[filestore.azure-blob-storage]`: the Azure Blob provider's settings. Names follow
//! Artifactory's `azure-blob-storage` binary provider where it has one (`accountName`,
//! `accountKey`, `containerName`, `endpoint`, `path`); the rest is marked as Stowage's own.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use stowage_core::Error;

/// Most blocks one blob may have.
pub const MAX_BLOCKS: u64 = 50_000;

/// `[filestore.azure-blob-storage]`. (Serialize lets a shard's settings be laid over these.)
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureConfig {
    /// The storage account. Required.
    pub account_name: String,
    /// The account's shared key (base64). It authenticates requests and signs download URLs
    /// (service SAS). Default: none.
    pub account_key: Option<String>,
    /// Or a SAS token (`sv=…&sig=…`) granting read, write, delete and list on the container.
    /// (Stowage's own.)
    pub sas_token: Option<String>,
    /// Or an Entra ID service principal: `clientId`, `clientSecret`, `tenantId`. Without any
    /// of these, Entra ID from the environment (workload identity, managed identity) is used.
    /// Download URLs need `accountKey`; without it downloads are served through Stowage.
    /// (Stowage's own.)
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub tenant_id: Option<String>,
    /// The container. Required.
    pub container_name: String,
    /// Folder inside the container; binaries live at `<path>/ab/abcdef…`. Default `filestore`.
    pub path: String,
    /// Blob endpoint including the account for emulators
    /// (`http://127.0.0.1:10000/devstoreaccount1`). Default `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Checks at start-up that the container is reachable. Default `true`.
    pub test_connection: bool,
    /// Uploads of announced length up to this size are held in memory and sent as one Put
    /// Blob carrying their Content-MD5, which Azure checks. Default 8 MiB. (Stowage's own.)
    pub max_in_memory_upload_size: ByteSize,
    /// Block size of larger uploads; each block carries its Content-MD5. Default 16 MiB
    /// (Artifactory's `multipartElementSizeInMb` default).
    pub block_size: ByteSize,
    /// Blocks of one upload sent at once. Default 4. (Stowage's own.)
    pub upload_concurrency: usize,
    /// Attempts of an idempotent request that fails transiently. Default 4. (Stowage's own.)
    pub max_retry_attempts: u32,
    /// Least validity of download redirect URLs. Default 600.
    pub signed_url_expiry_seconds: u64,
    /// A slow client's rate, by which the validity of large binaries' URLs grows. Default 1 MB
    /// (per second). (Stowage's own.)
    pub signed_url_slow_client_rate: ByteSize,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            account_name: String::new(),
            account_key: None,
            sas_token: None,
            client_id: None,
            client_secret: None,
            tenant_id: None,
            container_name: String::new(),
            path: "filestore".into(),
            endpoint: None,
            test_connection: true,
            max_in_memory_upload_size: ByteSize::mib(8),
            block_size: ByteSize::mib(16),
            upload_concurrency: 4,
            max_retry_attempts: 4,
            signed_url_expiry_seconds: 600,
            signed_url_slow_client_rate: ByteSize::mb(1),
        }
    }
}

impl AzureConfig {
    /// Checks the settings, naming the first wrong one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| {
            Err(Error::InvalidInput(format!(
                "[filestore.azure-blob-storage] {msg}"
            )))
        };
        if self.account_name.trim().is_empty() {
            return bad("accountName is required".into());
        }
        if self.container_name.trim().is_empty() {
            return bad("containerName is required".into());
        }
        if self.account_key.is_some() && self.sas_token.is_some() {
            return bad("set accountKey or sasToken, not both".into());
        }
        let principal = [&self.client_id, &self.client_secret, &self.tenant_id];
        let given = principal.iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            return bad(
                "an Entra ID service principal needs clientId, clientSecret and tenantId".into(),
            );
        }
        let block = self.block_size.as_u64();
        if !(64 * 1024..=4000 * 1024 * 1024).contains(&block) {
            return bad(format!(
                "blockSize is {block} bytes; it must be 64 KiB to 4000 MiB"
            ));
        }
        if self.upload_concurrency == 0 {
            return bad("uploadConcurrency must be at least 1".into());
        }
        if self.max_retry_attempts == 0 {
            return bad("maxRetryAttempts must be at least 1".into());
        }
        if self.signed_url_expiry_seconds == 0 {
            return bad("signedUrlExpirySeconds must be at least 1".into());
        }
        Ok(())
    }

    /// The blob endpoint, account included, without a trailing `/`.
    pub fn blob_endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{}.blob.core.windows.net", self.account_name),
        }
    }
}
