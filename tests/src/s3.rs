//! LocalStack for the integration tests: the shared one scripts/test starts
//! (`STOWAGE_TEST_S3_ENDPOINT`), a bucket of each test's own on it, and private LocalStack
//! ones a test can kill and start again (outage tests): processes stopped by their PIDs, or
//! containers with `STOWAGE_TEST_LOCALSTACK=container` (see [`crate::localstack`]).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use stowage_core::KeyLayout;
use stowage_s3::{S3Config, S3Provider};
use testcontainers_modules::testcontainers::ContainerAsync;
use tokio::process::{Child, Command};

use crate::localstack;

/// LocalStack's address; without it a failure under CI and a loud skip (`None`) elsewhere.
pub fn endpoint() -> Option<String> {
    crate::required_env("STOWAGE_TEST_S3_ENDPOINT", "LocalStack")
}

/// The Python of the LocalStack venv scripts/test installs (it also carries botocore and
/// cryptography); without it a failure under CI and a loud skip (`None`) elsewhere.
pub fn localstack_python() -> Option<String> {
    crate::required_env("STOWAGE_TEST_LOCALSTACK_PYTHON", "LocalStack's venv")
}

/// A fresh bucket name.
pub fn bucket_name() -> String {
    format!("stowage-it-{:016x}", rand::random::<u64>())
}

/// The `[filestore.s3]` settings for LocalStack, as a provider configuration.
pub fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config::local_emulator(endpoint, bucket)
}

/// The same settings as a TOML section.
pub fn toml_section(endpoint: &str, bucket: &str) -> String {
    format!(
        "[filestore.s3]\nbucketName = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\nusePathStyleAccess = true\nidentity = \"test\"\n\
         credential = \"test\"\nmultipartPartSize = \"5MiB\"\nmaxInMemoryUploadSize = \"1MiB\"\n"
    )
}

/// A client of the bucket (the provider, without a connection test) for checking what a
/// server stored; `spool` is where it would spool (unused by the checks).
pub async fn client(endpoint: &str, bucket: &str, spool: &Path) -> S3Provider {
    stowage_s3::connect(
        config(endpoint, bucket),
        KeyLayout::default(),
        250_000_000,
        spool.to_path_buf(),
    )
    .await
    .expect("S3 client")
}

/// Creates a bucket.
pub async fn create_bucket(endpoint: &str, bucket: &str, spool: &Path) -> S3Provider {
    let s3 = client(endpoint, bucket, spool).await;
    s3.backend()
        .client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
    s3
}

/// Keys in a bucket.
pub async fn keys(s3: &S3Provider) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = s3
        .backend()
        .client()
        .list_objects_v2()
        .bucket(s3.backend().bucket())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        keys.extend(
            page.expect("list")
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    keys
}

/// A LocalStack of a test's own, on a fixed port so that it can be killed and started again:
/// a process on the host, or a container where `STOWAGE_TEST_LOCALSTACK=container`
/// ([`crate::localstack`]). Only S3 runs in it.
#[derive(Debug)]
pub struct LocalStack {
    running: Running,
    pub port: u16,
}

#[derive(Debug)]
enum Running {
    Process(Child),
    Container(Box<ContainerAsync<localstack::Image>>),
}

impl LocalStack {
    /// Starts one on a free port; `None` (a loud skip, or a failure under CI) when the
    /// LocalStack interpreter scripts/test installs is not known.
    pub async fn start(dir: &Path) -> Option<Self> {
        Self::start_on(dir, crate::free_port()).await
    }

    /// Starts one on `port`.
    pub async fn start_on(dir: &Path, port: u16) -> Option<Self> {
        match localstack::Source::from_env() {
            localstack::Source::Host => Self::start_process(dir, port).await,
            localstack::Source::Container => {
                let container = localstack::start_container(port, "s3")
                    .await
                    .unwrap_or_else(|message| panic!("{message}"));
                Some(Self {
                    running: Running::Container(Box::new(container)),
                    port,
                })
            }
        }
    }

    async fn start_process(dir: &Path, port: u16) -> Option<Self> {
        let python = localstack_python()?;
        let state = dir.join(format!("localstack-{port}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let log = std::fs::File::create(state.join("localstack.log")).expect("log");
        let mut child = Command::new(python)
            .args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "s3")
            .envs(localstack::SETTINGS)
            .env("GATEWAY_SERVER", "hypercorn")
            .env("LOCALSTACK_VOLUME_DIR", state.join("volume"))
            .env("TMPDIR", &state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn LocalStack");
        let health = format!("http://127.0.0.1:{port}/_localstack/health");
        for _ in 0..240 {
            if let Ok(r) = reqwest::get(&health).await
                && let Ok(text) = r.text().await
                && (text.contains("\"s3\": \"available\"") || text.contains("\"s3\": \"running\""))
            {
                return Some(Self {
                    running: Running::Process(child),
                    port,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("LocalStack exited with {status}; see {}", state.display());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "LocalStack was not ready within 60 s; see {}",
            state.display()
        );
    }

    /// Its address.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it at once (SIGKILL by PID: LocalStack sometimes ignores SIGTERM; a container is
    /// removed). Its buckets and objects are gone with it.
    pub async fn kill(self) {
        match self.running {
            Running::Process(mut child) => child.kill().await.expect("kill LocalStack"),
            Running::Container(container) => {
                container.rm().await.expect("remove LocalStack's container");
            }
        }
    }
}

/// Sends bytes to the presigned URLs of a session, as a client would, with no Stowage token.
pub async fn send_session_bytes(
    session: &serde_json::Value,
    data: &[u8],
) -> Vec<reqwest::StatusCode> {
    let http = reqwest::Client::new();
    let send = |request: &serde_json::Value, body: Vec<u8>| {
        let mut builder = http.request(
            request["method"]
                .as_str()
                .expect("method")
                .parse()
                .expect("method"),
            request["url"].as_str().expect("url"),
        );
        for (k, v) in request["headers"].as_object().expect("headers") {
            builder = builder.header(k.as_str(), v.as_str().expect("value"));
        }
        builder.body(body).send()
    };
    let upload = &session["upload"];
    let mut statuses = Vec::new();
    match upload["kind"].as_str() {
        Some("single") => {
            statuses.push(
                send(&upload["request"], data.to_vec())
                    .await
                    .expect("PUT")
                    .status(),
            );
        }
        Some("multipart") => {
            for part in upload["parts"].as_array().expect("parts") {
                let offset =
                    usize::try_from(part["offset"].as_u64().expect("offset")).expect("usize");
                let size = usize::try_from(part["size"].as_u64().expect("size")).expect("usize");
                statuses.push(
                    send(part, data[offset..offset + size].to_vec())
                        .await
                        .expect("part")
                        .status(),
                );
            }
        }
        other => panic!("unknown upload kind {other:?} in {session}"),
    }
    statuses
}
