//! No acknowledged artifact is lost while garbage collection runs as eagerly as it can: three
//! `stowage serve` nodes on one PostgreSQL database and one filestore, collection looping on
//! the primary at an orphan grace of 0 (scheduled every second, and asked for back to back),
//! and clients on every node deploying contents from one pool to their own paths and to a few
//! shared paths, deleting half of their own right after (so bytes keep losing their last
//! reference while others deploy them again), and bursts of 48 deploys of bytes nobody else
//! has to one hot path (each waits for its lock with its bytes stored and not yet recorded). After the storm, and one more collection,
//! every artifact that was acknowledged (201) and not deleted must be served, byte for byte,
//! by every node. Once per template: the file system, shards (two directory mounts, both
//! copies required) and the eventual queue in front of S3 (LocalStack).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{Options, Server, bytes, postgres_database, s3, sha256_hex};

/// Deploys per template (a multiple of the 12 clients).
const DEPLOYS: usize = 2_016;
/// Clients per node.
const CLIENTS: usize = 4;
/// Shared paths every client overwrites.
const SHARED_PATHS: usize = 4;
/// Rounds of concurrent deploys of new bytes to one path, and deploys per round.
const BURSTS: usize = 10;
const BURST: usize = 48;
/// Contents the deploys draw from: few enough that deploys often meet bytes another deploy
/// stored or a collection is removing, enough that bytes often lose their last reference (an
/// overwrite of a shared path, a delete).
const CONTENTS: usize = 600;

/// What every node of the cluster shares besides its filestore: collection every second at an
/// orphan grace of 0, short heartbeats and leases.
fn cluster_config(filestore: &str) -> String {
    format!(
        "{filestore}\n[gc]\ninterval_secs = 1\norphan_grace_secs = 0\n\n\
         [cluster]\nheartbeat_secs = 1\nprimary_lease_secs = 3\nlock_lease_secs = 5\n\
         lock_wait_secs = 30\nsecret = \"durability-test-cluster-secret-0123\"\n"
    )
}

/// Three nodes on a fresh PostgreSQL database with `config`; `None` (a loud skip) outside CI
/// without PostgreSQL.
async fn start_cluster(root: &Path, config: &str) -> Option<Vec<Server>> {
    let url = postgres_database(root).await?;
    let mut nodes: Vec<Server> = Vec::new();
    for i in 0..3 {
        let options = Options {
            config: Some(config.to_string()),
            database_url: Some(url.clone()),
            token: nodes.first().map(|n| n.token.clone()),
            env: Vec::new(),
        };
        nodes.push(Server::start_with(&root.join(format!("node-{i}")), options).await);
    }
    Some(nodes)
}

/// The node that is primary now.
async fn primary(nodes: &[Server]) -> &Server {
    for _ in 0..100 {
        for node in nodes {
            let view: Value = node
                .admin()
                .get(node.url("/api/system/cluster"))
                .send()
                .await
                .expect("cluster")
                .json()
                .await
                .expect("json");
            if view["thisNodeIsPrimary"] == true {
                return node;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no node acts as primary");
}

/// What the storm left to check.
#[derive(Debug, Default)]
struct Outcome {
    /// Own paths acknowledged and not deleted, with the SHA-256 of their bytes.
    kept: Vec<(String, String)>,
    /// Every answer's status, counted.
    statuses: HashMap<u16, usize>,
}

/// The storm: `DEPLOYS` deploys from `CLIENTS` clients per node, while collection loops on the
/// primary; then one more collection with everything quiet.
async fn storm(nodes: &[Server], template: &str) -> Outcome {
    nodes[0].create_repo("libs").await;
    let contents: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..CONTENTS as u64)
            .map(|i| bytes(9000 + i, 1_000 + (i as usize % 40) * 700))
            .collect(),
    );
    let primary = primary(nodes).await;
    let stop = Arc::new(AtomicBool::new(false));
    let collector = tokio::spawn({
        let (client, url, stop) = (
            primary.admin(),
            primary.url("/api/system/storage/gc"),
            Arc::clone(&stop),
        );
        async move {
            let (mut runs, mut removed) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let r = client.post(&url).send().await.expect("gc");
                let status = r.status();
                // 503: the scheduled run held the task's lock for all of lock_wait_secs.
                assert!(
                    status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                    "garbage collection answered {status}"
                );
                if status == StatusCode::OK {
                    let report: Value = r.json().await.expect("gc report");
                    runs += 1;
                    removed += report["binariesRemoved"].as_u64().expect("binariesRemoved")
                        + report["orphansRemoved"].as_u64().expect("orphansRemoved");
                }
            }
            (runs, removed)
        }
    });

    let per_client = DEPLOYS / (nodes.len() * CLIENTS);
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..CLIENTS {
            let (http, base, contents) = (node.admin(), node.base.clone(), Arc::clone(&contents));
            clients.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64((n * 100 + c) as u64);
                let mut outcome = Outcome::default();
                for i in 0..per_client {
                    let pooled = contents[rng.random_range(0..contents.len())].clone();
                    let (path, data, shared) = if rng.random_range(0..10) < 6 {
                        (format!("own/{n}-{c}/{i}.bin"), pooled, false)
                    } else {
                        let k = rng.random_range(1..SHARED_PATHS);
                        (format!("shared/{k}.bin"), pooled, true)
                    };
                    let url = format!("{base}/libs/{path}");
                    let status = http
                        .put(&url)
                        .body(data.clone())
                        .send()
                        .await
                        .expect("deploy")
                        .status();
                    *outcome.statuses.entry(status.as_u16()).or_default() += 1;
                    if status != StatusCode::CREATED || shared {
                        continue;
                    }
                    if rng.random_range(0..2) == 0 {
                        let status = http.delete(&url).send().await.expect("delete").status();
                        assert_eq!(status, StatusCode::NO_CONTENT, "delete {path}");
                        continue;
                    }
                    outcome.kept.push((path, sha256_hex(&data)));
                }
                outcome
            }));
        }
    }
    // Meanwhile, bursts of deploys of bytes nobody else has to one path, spread over the
    // nodes: each waits for the path's lock with its bytes stored and not yet recorded, the
    // window issue 19 lost artifacts in.
    let bursts = tokio::spawn({
        let targets: Vec<(reqwest::Client, String)> = nodes
            .iter()
            .map(|n| (n.admin(), n.url("/libs/shared/0.bin")))
            .collect();
        async move {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            for round in 0..BURSTS {
                let puts = (0..BURST).map(|j| {
                    let (client, url) = targets[j % targets.len()].clone();
                    let data = bytes(1_000_000 + (round * BURST + j) as u64, 3_000);
                    async move { client.put(&url).body(data).send().await.expect("deploy") }
                });
                for r in futures::future::join_all(puts).await {
                    *statuses.entry(r.status().as_u16()).or_default() += 1;
                }
            }
            statuses
        }
    });
    let mut outcome = Outcome::default();
    for (status, n) in bursts.await.expect("bursts") {
        *outcome.statuses.entry(status).or_default() += n;
    }
    for client in clients {
        let part = client.await.expect("client");
        outcome.kept.extend(part.kept);
        for (status, n) in part.statuses {
            *outcome.statuses.entry(status).or_default() += n;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, removed) = collector.await.expect("collector");
    // Answers a client may get: 201, or 503 when a collection took the bytes of a deploy that
    // then refused to record them (nothing acknowledged, retry).
    assert!(
        outcome.statuses.keys().all(|s| [201, 503].contains(s)),
        "{template}: unexpected answers to deploys: {:?}",
        outcome.statuses
    );
    assert!(
        removed > 0,
        "{template}: collection removed unreferenced bytes during the storm"
    );
    println!(
        "{template}: {runs} collections asked for during the storm removed {removed} \
         unreferenced binaries (besides the scheduled ones)"
    );
    outcome
}

/// After the storm: queues drained, one more collection at grace 0, then every kept artifact
/// served by every node, byte for byte, and every shared path served with the bytes its row
/// records.
async fn check(nodes: &[Server], template: &str, outcome: &Outcome) {
    for node in nodes {
        if node.storage_info().await["eventualQueue"].is_object() {
            node.wait_for_empty_queue().await;
        }
    }
    let primary = primary(nodes).await;
    let status = primary
        .admin()
        .post(primary.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc")
        .status();
    assert!(
        status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
        "gc: {status}"
    );
    let mut checked = 0;
    for (i, (path, sha256)) in outcome.kept.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let r = node
            .admin()
            .get(node.url(&format!("/libs/{path}")))
            .send()
            .await
            .expect("get");
        let status = r.status();
        let body = r.bytes().await.expect("body");
        assert_eq!(
            status,
            StatusCode::OK,
            "{template}: acknowledged {path} is lost: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(&sha256_hex(&body), sha256, "{template}: {path}'s bytes");
        checked += 1;
    }
    for k in 0..SHARED_PATHS {
        for node in nodes {
            let r = node
                .admin()
                .get(node.url(&format!("/libs/shared/{k}.bin")))
                .send()
                .await
                .expect("get");
            if r.status() == StatusCode::NOT_FOUND {
                continue; // never acknowledged
            }
            assert_eq!(r.status(), StatusCode::OK, "{template}: shared/{k}.bin");
            let recorded = r
                .headers()
                .get("x-checksum-sha256")
                .and_then(|v| v.to_str().ok())
                .expect("X-Checksum-Sha256")
                .to_string();
            let body = r.bytes().await.expect("body");
            assert_eq!(sha256_hex(&body), recorded, "{template}: shared/{k}.bin");
        }
    }
    let deploys: usize = outcome.statuses.values().sum();
    println!(
        "{template}: checked {checked} acknowledged artifacts (and {SHARED_PATHS} shared paths \
         on every node) after {deploys} deploys over 3 nodes with collection looping at grace \
         0; answers: {:?}",
        outcome.statuses
    );
    assert!(
        // Of the pooled deploys, 60 % go to own paths, and half of those are kept.
        checked > DEPLOYS / 4,
        "{template}: nearly every kept deploy was acknowledged ({checked} of {deploys})"
    );
}

async fn run(root: &Path, template: &str, filestore: &str) {
    let Some(nodes) = start_cluster(root, &cluster_config(filestore)).await else {
        return;
    };
    let outcome = storm(&nodes, template).await;
    check(&nodes, template, &outcome).await;
    for node in nodes {
        node.stop().await;
    }
}

/// The embedded default (one node, SQLite, a local filestore), where deploys commit in groups
/// (`group_commit.rs`): the same storm against collections at grace 0 loses nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_default_with_group_commits_loses_no_acknowledged_artifact_at_grace_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let filestore = format!(
        "[filestore.file-system]\nfileStoreDir = \"{}\"\n",
        root.path().join("filestore").display()
    );
    let node = root.path().join("node");
    let options = Options {
        config: Some(cluster_config(&filestore)),
        database_url: Some(format!("sqlite://{}", node.join("stowage.db").display())),
        token: None,
        env: Vec::new(),
    };
    let nodes = vec![Server::start_with(&node, options).await];
    let outcome = storm(&nodes, "file-system").await;
    check(&nodes, "file-system", &outcome).await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_system_loses_no_acknowledged_artifact_to_a_collection_at_grace_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let filestore = format!(
        "[filestore.file-system]\nfileStoreDir = \"{}\"\n",
        root.path().join("filestore").display()
    );
    run(root.path(), "file-system", &filestore).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_lose_no_acknowledged_artifact_to_a_collection_at_grace_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let mounts: Vec<String> = (1..=2)
        .map(|i| {
            let dir = root.path().join(format!("m{i}"));
            format!("  {{ id = \"m{i}\", dir = \"{}\" }}", dir.display())
        })
        .collect();
    let filestore = format!(
        "[filestore]\ntemplate = \"double-shards\"\n\n[filestore.sharding]\nredundancy = 2\n\
         lenientLimit = 2\nbalancingInterval = 0\nmounts = [\n{}\n]\n",
        mounts.join(",\n")
    );
    run(root.path(), "double-shards", &filestore).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_eventual_queue_loses_no_acknowledged_artifact_to_a_collection_at_grace_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, root.path()).await;
    let filestore = format!(
        "[filestore]\ntemplate = \"cluster-s3-storage-v3\"\n\n{}\n\
         [filestore.eventual]\ndispatcherInterval = 100\nmaxRetryBackoffSecs = 1\n",
        s3::toml_section(&endpoint, &bucket)
    );
    run(root.path(), "cluster-s3-storage-v3", &filestore).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_file_system_loses_no_acknowledged_artifact_to_a_collection_at_grace_zero() {
    // Each node's own directory, every binary on two of the three.
    let root = tempfile::tempdir().expect("tempdir");
    let filestore = "[filestore]\ntemplate = \"cluster-file-system\"\n\n\
                     [filestore.sharding]\nredundancy = 2\nlenientLimit = 2\n\n\
                     [filestore.eventual]\ndispatcherInterval = 200\n";
    run(root.path(), "cluster-file-system", filestore).await;
}
