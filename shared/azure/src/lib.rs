//! Stowage's Azure Blob backend: the core's object-store provider over one container
//! ([`AzureBackend`]) and service SAS download URLs ([`AzureSasSigner`]). Everything
//! Azure-specific lives here: the client, the credentials, the error mapping.
//!
//! Why `object_store` (with our own signed writes): the official `azure_storage_blob` crate
//! has no Shared Key authentication and the older `azure_storage_blobs` is deprecated;
//! `object_store` authenticates with an account key, a SAS token or Entra ID (service
//! principal, workload or managed identity) and passes everything against Azurite, but sends
//! no Content-MD5, so uploads are our own requests signed by its authorizer.

mod backend;
mod config;
mod sas;

use std::time::Duration;

use object_store::azure::{MicrosoftAzureBuilder, split_sas};
use object_store::{ClientOptions, RetryConfig};
use stowage_core::object::{ObjectBackend as _, ObjectSettings, ObjectStoreProvider};
use stowage_core::{Error, KeyLayout, Result};

pub use backend::AzureBackend;
pub use config::{AzureConfig, MAX_BLOCKS};
pub use sas::{AzureSasSigner, MAX_SAS_EXPIRY, SAS_VERSION, SasFields};

/// A container as a binary store.
pub type AzureProvider = ObjectStoreProvider<AzureBackend>;

/// Builds the client (credentials resolved on first use) and, unless `testConnection =
/// false`, checks that the container is reachable, with an error that says what to fix.
pub async fn connect(config: &AzureConfig, layout: KeyLayout) -> Result<AzureProvider> {
    let provider = build(config, layout)?;
    if config.test_connection {
        provider.backend().check().await.map_err(|e| {
            Error::InvalidInput(format!(
                "[filestore.azure-blob-storage] cannot reach container {:?} of account {:?}: {e}",
                config.container_name, config.account_name
            ))
        })?;
    }
    Ok(provider)
}

/// The provider without a connection test (tests create the container with it).
pub fn build(config: &AzureConfig, layout: KeyLayout) -> Result<AzureProvider> {
    config.validate()?;
    let refuse =
        |e: object_store::Error| Error::InvalidInput(format!("[filestore.azure-blob-storage] {e}"));
    let endpoint = config.blob_endpoint();
    let plain_http = endpoint.starts_with("http://");
    // Our retries (ObjectSettings::attempts) apply to every call; object_store's are off so
    // that a backend that is down is known as such quickly.
    let retry = RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let options = ClientOptions::new()
        .with_allow_http(plain_http)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout_disabled();
    // What the configuration leaves open comes from the environment (`AZURE_*`: workload or
    // managed identity, a service principal, the Azure CLI).
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_account(&config.account_name)
        .with_container_name(&config.container_name)
        .with_endpoint(endpoint.clone())
        .with_allow_http(plain_http)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(key) = &config.account_key {
        builder = builder.with_access_key(key);
    } else if let Some(sas) = &config.sas_token {
        builder =
            builder.with_sas_authorization(split_sas(sas.trim_start_matches('?')).map_err(refuse)?);
    } else if let (Some(id), Some(secret), Some(tenant)) =
        (&config.client_id, &config.client_secret, &config.tenant_id)
    {
        builder = builder.with_client_secret_authorization(id, secret, tenant);
    }
    let store = builder.build().map_err(refuse)?;
    let backend = AzureBackend::new(
        store,
        &config.account_name,
        &config.container_name,
        &endpoint,
        config.block_size.as_u64(),
        config.upload_concurrency,
    )?;
    Ok(ObjectStoreProvider::new(
        backend,
        ObjectSettings {
            path: config.path.clone(),
            layout,
            small_upload_limit: config.max_in_memory_upload_size.as_u64(),
            attempts: config.max_retry_attempts,
            ..Default::default()
        },
    ))
}
