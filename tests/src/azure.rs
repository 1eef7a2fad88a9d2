//! Azurite for the integration tests: the shared one scripts/test starts
//! (`STOWAGE_TEST_AZURE_ENDPOINT`), a container of each test's own on it (the well-known dev
//! account), and private Azurites an outage test can stop and start again.

use std::path::Path;

use stowage_azure::AzureConfig;
use stowage_core::KeyLayout;

use crate::emulator::Emulator;

/// Azurite's well-known development account and its key (published by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's blob endpoint (account included); without it a failure under CI and a loud skip
/// elsewhere.
pub fn endpoint() -> Option<String> {
    crate::required_env("STOWAGE_TEST_AZURE_ENDPOINT", "Azurite")
}

/// A fresh container name.
pub fn container_name() -> String {
    format!("stowage-it-{:016x}", rand::random::<u64>())
}

/// The `[filestore.azure-blob-storage]` settings for Azurite.
pub fn config(endpoint: &str, container: &str) -> AzureConfig {
    AzureConfig {
        account_name: ACCOUNT.into(),
        account_key: Some(ACCOUNT_KEY.into()),
        container_name: container.into(),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    }
}

/// The same settings as TOML table fields.
pub fn toml_fields(endpoint: &str, container: &str) -> String {
    format!(
        "accountName = \"{ACCOUNT}\"\naccountKey = \"{ACCOUNT_KEY}\"\n\
         containerName = \"{container}\"\nendpoint = \"{endpoint}\"\n"
    )
}

/// Creates a container.
pub async fn create_container(endpoint: &str, container: &str) {
    let provider =
        stowage_azure::build(&config(endpoint, container), KeyLayout::default()).expect("build");
    provider
        .backend()
        .create_container()
        .await
        .expect("create container");
}

/// An Azurite of a test's own, keeping its blobs under `dir` across restarts.
pub async fn start_private(dir: &Path, port: u16) -> Option<Emulator> {
    let azurite = crate::required_env("STOWAGE_TEST_AZURITE_BIN", "Azurite")?;
    let location = dir.join("azurite-data");
    std::fs::create_dir_all(&location).expect("azurite data dir");
    let args: Vec<String> = [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--location",
        &location.display().to_string(),
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let probe = format!("/{ACCOUNT}?comp=list");
    Some(Emulator::start(dir, "azurite", port, &azurite, &args, &probe).await)
}
