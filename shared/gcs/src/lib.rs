//! Stowage's Google Cloud Storage backend: the core's object-store provider over one bucket
//! ([`GcsBackend`], on `gcloud-storage`'s JSON API client), and V4 signed download URLs
//! ([`GcsSigner`]). Everything GCS-specific lives here: the client, the credentials, the error
//! mapping.
//!
//! Why `gcloud-storage`: the official `google-cloud-storage` crate lists and deletes over gRPC,
//! which neither GCS emulator serves, and `object_store`'s GCS client speaks the XML API,
//! which fake-gcs-server lacks. `gcloud-storage` uses the JSON API for everything and signs V4
//! URLs offline.

mod backend;
mod config;
mod downloads;

use gcloud_storage::client::{Client, ClientConfig};
use stowage_core::object::{ObjectSettings, ObjectStoreProvider};
use stowage_core::{Error, KeyLayout, Result};

pub use backend::GcsBackend;
pub use config::{CHUNK_GRANULARITY, GcsConfig};
pub use downloads::{GcsSigner, MAX_SIGNED_EXPIRY};

/// A bucket as a binary store.
pub type GcsProvider = ObjectStoreProvider<GcsBackend>;

/// Builds the client (credentials resolved once) and, unless `testConnection = false`,
/// checks that the bucket is reachable, with an error that says what to fix.
pub async fn connect(config: &GcsConfig, layout: KeyLayout) -> Result<GcsProvider> {
    config.validate()?;
    let mut client_config = ClientConfig::default();
    if let Some(endpoint) = &config.endpoint {
        client_config.storage_endpoint = endpoint.trim_end_matches('/').to_string();
    }
    let client_config = if config.anonymous {
        client_config.anonymous()
    } else if let Some(path) = &config.credentials_file {
        let file =
            gcloud_storage::client::google_cloud_auth::credentials::CredentialsFile::new_from_file(
                path.display().to_string(),
            )
            .await
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "[filestore.google-storage] credentialsFile {}: {e}",
                    path.display()
                ))
            })?;
        client_config.with_credentials(file).await.map_err(|e| {
            Error::InvalidInput(format!(
                "[filestore.google-storage] the credentials in {} do not work: {e}",
                path.display()
            ))
        })?
    } else {
        client_config.with_auth().await.map_err(|e| {
            Error::InvalidInput(format!(
                "[filestore.google-storage] no Google credentials found (set credentialsFile, \
                 GOOGLE_APPLICATION_CREDENTIALS, or run on Google Cloud): {e}"
            ))
        })?
    };
    let backend = GcsBackend::new(
        Client::new(client_config),
        &config.bucket_name,
        config.upload_chunk_size.as_u64(),
    );
    let provider = ObjectStoreProvider::new(
        backend,
        ObjectSettings {
            path: config.path.clone(),
            layout,
            small_upload_limit: config.max_in_memory_upload_size.as_u64(),
            attempts: config.max_retry_attempts,
            ..Default::default()
        },
    );
    if config.test_connection {
        use stowage_core::object::ObjectBackend as _;
        provider.backend().check().await.map_err(|e| {
            Error::InvalidInput(format!(
                "[filestore.google-storage] cannot reach bucket {:?}: {e}",
                config.bucket_name
            ))
        })?;
    }
    Ok(provider)
}
