//! Metadata throughput on SQLite, PostgreSQL and MariaDB, from one process and from three:
//! deploy-by-checksum (metadata only), file info and checksum search, with ops/s and p50/p99
//! latency, and deploy-by-checksum again with locking off to show what the locks cost.
//!
//! Run it through `scripts/bench-metadata` (which starts PostgreSQL and MariaDB), or directly
//! with `cargo bench -p stowage-service --features bench --bench metadata`, which measures the
//! engines whose admin URLs are set (`STOWAGE_TEST_POSTGRES_URL`, `STOWAGE_TEST_MYSQL_URL`)
//! plus SQLite. Worker processes are this same executable, re-run with `STOWAGE_BENCH_WORKER`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage_core::conformance::test_bytes;
use stowage_core::memory::InMemoryProvider;
use stowage_core::{ArtifactPath, BinaryProviderExt, ChecksumHasher, ExpectedChecksums, RepoKey};
use stowage_metadata::{ChecksumLookup, Metadata, NewArtifact, PoolSettings, Repository};
use stowage_service::locks::Locks;
use stowage_service::security::Caller;
use stowage_service::{DeployRequest, Filestore, Settings, Stowage};

/// Binaries (and artifacts) seeded before measuring.
const SEED: u64 = 500;
/// Concurrent tasks per process.
const TASKS: usize = 8;
/// Seconds each measurement runs.
const SECONDS: u64 = 3;

fn seed_bytes(i: u64) -> bytes::Bytes {
    test_bytes(10_000 + i, 1024)
}

async fn connect(url: &str) -> Metadata {
    let settings = PoolSettings {
        max_connections: TASKS as u32,
        ..PoolSettings::default()
    };
    Metadata::connect(url, &settings).await.expect("connect")
}

async fn setup(url: &str) {
    let metadata = connect(url).await;
    metadata.migrate().await.expect("migrate");
    let repo = RepoKey::parse("bench").expect("key");
    metadata
        .put_repository(&Repository {
            key: repo.clone(),
            rclass: "local".into(),
            package_type: "generic".into(),
            description: String::new(),
            config: serde_json::json!({}),
            created_ms: 0,
        })
        .await
        .expect("repository");
    for i in 0..SEED {
        let data = seed_bytes(i);
        metadata
            .commit_artifact(&NewArtifact {
                repo: repo.clone(),
                path: ArtifactPath::parse(&format!("seed/{i}.bin")).expect("path"),
                checksums: ChecksumHasher::digest(&data),
                size: data.len() as u64,
                by: "bench".into(),
                properties: vec![],
                original: Default::default(),
            })
            .await
            .expect("seed");
    }
    metadata.close().await;
}

/// One worker process: runs `op` from TASKS tasks for SECONDS and prints its latencies (µs).
async fn worker(url: &str, op: &str, locks: bool, process: usize) {
    let metadata = connect(url).await;
    let provider = Arc::new(InMemoryProvider::new());
    for i in 0..SEED {
        provider
            .put_bytes(seed_bytes(i), ExpectedChecksums::none())
            .await
            .expect("seed provider");
    }
    let mut stowage = Stowage::new(
        Filestore::from_provider(provider),
        metadata.clone(),
        &Settings::default(),
        &format!("bench-{process}"),
    );
    if !locks {
        stowage = stowage.with_locks(Locks::disabled(metadata.clone()));
    }
    let stowage = Arc::new(stowage);
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (stowage, op) = (Arc::clone(&stowage), op.to_string());
        tasks.push(tokio::spawn(async move {
            let admin = Caller::admin();
            let repo = RepoKey::parse("bench").expect("key");
            let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let i = (n * 7 + task as u64 * 13) % SEED;
                let digest = ChecksumHasher::digest(&seed_bytes(i)).sha256;
                let started = Instant::now();
                let ok = match op.as_str() {
                    "deploy" => {
                        let path = ArtifactPath::parse(&format!("deploy/p{process}/t{task}/{}", n % 50)).expect("path");
                        let request = DeployRequest {
                            expected: ExpectedChecksums { sha256: Some(digest), ..Default::default() },
                            by: "bench".into(),
                            ..Default::default()
                        };
                        stowage.deploy_by_checksum(&admin, &repo, &path, request).await.is_ok()
                    }
                    "info" => {
                        let path = ArtifactPath::parse(&format!("seed/{i}.bin")).expect("path");
                        stowage.artifact(&admin, &repo, &path).await.is_ok()
                    }
                    _ => matches!(stowage.search_checksum(&admin, ChecksumLookup::Sha256(digest)).await, Ok(v) if !v.is_empty()),
                };
                latencies.push(started.elapsed().as_micros() as u64);
                errors += u64::from(!ok);
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        errors += e;
    }
    println!(
        "{}",
        serde_json::json!({ "latencies": all, "errors": errors })
    );
    metadata.close().await;
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn measure(url: &str, op: &str, locks: bool, processes: usize) -> (f64, f64, f64, u64) {
    let exe = std::env::current_exe().expect("bench executable");
    let children: Vec<_> = (0..processes)
        .map(|p| {
            tokio::process::Command::new(&exe)
                .env("STOWAGE_BENCH_WORKER", format!("{url}|{op}|{locks}|{p}"))
                .env("STOWAGE_LOG", "off")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for child in children {
        let out = child.wait_with_output().await.expect("worker output");
        assert!(out.status.success(), "a worker failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value =
            serde_json::from_str(line.lines().last().unwrap_or("{}")).expect("worker json");
        latencies.extend(
            v["latencies"]
                .as_array()
                .expect("latencies")
                .iter()
                .filter_map(|x| x.as_u64()),
        );
        errors += v["errors"].as_u64().unwrap_or(0);
    }
    latencies.sort_unstable();
    let ops = latencies.len() as f64 / SECONDS as f64;
    (
        ops,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        errors,
    )
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var("STOWAGE_BENCH_WORKER") {
        let parts: Vec<&str> = spec.split('|').collect();
        worker(
            parts[0],
            parts[1],
            parts[2] == "true",
            parts[3].parse().expect("process"),
        )
        .await;
        return;
    }
    let mut engines = vec!["sqlite"];
    if std::env::var_os("STOWAGE_TEST_POSTGRES_URL").is_some() {
        engines.push("postgres");
    }
    if std::env::var_os("STOWAGE_TEST_MYSQL_URL").is_some() {
        engines.push("mysql");
    }
    println!(
        "# metadata bench: {TASKS} tasks per process, {SECONDS} s per run, {SEED} seeded binaries\n"
    );
    println!("| engine | processes | operation | locks | ops/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---|---|---:|---:|---:|---:|");
    for engine in engines {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let url = stowage_tests::database_url_on(dir.path(), engine).await;
        setup(&url).await;
        for processes in [1, 3] {
            for (op, locks) in [
                ("deploy", true),
                ("deploy", false),
                ("info", true),
                ("search", true),
            ] {
                let (ops, p50, p99, errors) = measure(&url, op, locks, processes).await;
                let op_name = match op {
                    "deploy" => "deploy by checksum",
                    "info" => "file info",
                    _ => "checksum search",
                };
                let locks = if op == "deploy" {
                    if locks { "on" } else { "off" }
                } else {
                    "-"
                };
                println!(
                    "| {engine} | {processes} | {op_name} | {locks} | {ops:.0} | {p50:.2} | {p99:.2} | {errors} |"
                );
            }
        }
    }
}
