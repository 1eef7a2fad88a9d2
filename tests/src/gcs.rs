//! fake-gcs-server for the integration tests: the shared one scripts/test starts
//! (`STOWAGE_TEST_GCS_ENDPOINT`), a bucket of each test's own on it, private servers an outage
//! test can stop and start again, and a throwaway service-account key for signing.

use std::path::{Path, PathBuf};

use stowage_gcs::GcsConfig;

use crate::emulator::Emulator;

/// fake-gcs-server's address; without it a failure under CI and a loud skip elsewhere.
pub fn endpoint() -> Option<String> {
    crate::required_env("STOWAGE_TEST_GCS_ENDPOINT", "fake-gcs-server")
}

/// The venv's Python, which carries the official `google-cloud-storage` client.
pub fn python() -> Option<String> {
    crate::required_env("STOWAGE_TEST_GCS_PYTHON", "the google-cloud-storage venv")
}

/// A fresh bucket name.
pub fn bucket_name() -> String {
    format!("stowage-it-{:016x}", rand::random::<u64>())
}

/// Creates a bucket through the JSON API.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b?project=stowage-tests"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .expect("create bucket");
    assert!(
        response.status().is_success(),
        "create bucket {bucket}: {}",
        response.status()
    );
}

/// The `[filestore.google-storage]` settings for the emulator (anonymous requests).
pub fn config(endpoint: &str, bucket: &str) -> GcsConfig {
    GcsConfig {
        bucket_name: bucket.into(),
        endpoint: Some(endpoint.into()),
        anonymous: true,
        ..Default::default()
    }
}

/// The same settings as a TOML table body.
pub fn toml_fields(endpoint: &str, bucket: &str) -> String {
    format!("bucketName = \"{bucket}\"\nendpoint = \"{endpoint}\"\nanonymous = true\n")
}

/// A service-account key file with a fresh RSA key (made by `openssl`), as Google issues them.
pub fn service_account_key(dir: &Path) -> PathBuf {
    let pem = dir.join("sa-key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(made.success(), "openssl genpkey failed");
    let key = std::fs::read_to_string(&pem).expect("read key");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "stowage-tests",
        "private_key_id": "0123456789abcdef",
        "private_key": key,
        "client_email": "stowage@stowage-tests.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, json.to_string()).expect("write key file");
    path
}

/// A fake-gcs-server of a test's own, keeping its objects under `dir` across restarts.
pub async fn start_private(dir: &Path, port: u16) -> Option<Emulator> {
    let binary = crate::required_env("STOWAGE_TEST_GCS_BINARY", "fake-gcs-server")?;
    let root = dir.join("gcs-data");
    std::fs::create_dir_all(&root).expect("gcs data dir");
    let args: Vec<String> = [
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        &port.to_string(),
        "-backend",
        "filesystem",
        "-filesystem-root",
        &root.display().to_string(),
        "-public-host",
        &format!("127.0.0.1:{port}"),
        "-external-url",
        &format!("http://127.0.0.1:{port}"),
        "-log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Some(
        Emulator::start(
            dir,
            "fake-gcs-server",
            port,
            &binary,
            &args,
            "/storage/v1/b",
        )
        .await,
    )
}
