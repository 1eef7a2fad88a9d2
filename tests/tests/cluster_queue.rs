//! The cluster eventual queue (`cluster-s3-storage-v3`): `stowage serve` processes on one
//! PostgreSQL, each with its own queue directory, against a private LocalStack that the tests
//! stop and start. An upload is on `redundancy` nodes' disks before its 201, any node serves
//! it while it is queued, a node killed with S3 away loses nothing, a lost queue disk is
//! restored from the peers, and the internal peer endpoint opens to the cluster's secret only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use stowage_core::BinaryProviderExt as _;
use stowage_tests::s3::{self, LocalStack};
use stowage_tests::{Options, Server, bytes, postgres_database, sha256_hex, stored_binaries_in};

const SECRET: &str = "cluster-queue-test-secret-0123456789";

/// A node's configuration: the cluster template over LocalStack's `bucket`, short heartbeats,
/// leases and retries, and redundancy 2 with `lenient_limit`.
fn node_config(endpoint: &str, bucket: &str, lenient_limit: usize) -> String {
    format!(
        "[filestore]\ntemplate = \"cluster-s3-storage-v3\"\n\n{}testConnection = false\n\n\
         [filestore.eventual]\nredundancy = 2\nlenientLimit = {lenient_limit}\n\
         dispatcherInterval = 200\nmaxRetryBackoffSecs = 1\n\n\
         [cluster]\nheartbeat_secs = 1\nprimary_lease_secs = 3\nlock_lease_secs = 3\n\
         secret = \"{SECRET}\"\n",
        s3::toml_section(endpoint, bucket)
    )
}

struct Cluster {
    root: PathBuf,
    database: String,
    config: String,
    token: String,
}

impl Cluster {
    /// Node `i` (its directory `root/node-i`, kept across restarts).
    async fn start_node(&self, i: usize) -> Server {
        Server::start_with(
            &self.root.join(format!("node-{i}")),
            Options {
                config: Some(self.config.clone()),
                database_url: Some(self.database.clone()),
                token: Some(self.token.clone()),
                env: Vec::new(),
            },
        )
        .await
    }
}

/// `n` nodes on a fresh PostgreSQL database (`None`: a loud skip outside CI).
async fn start_cluster(root: &Path, config: String, n: usize) -> Option<(Cluster, Vec<Server>)> {
    let database = postgres_database(root).await?;
    let first = Server::start_with(
        &root.join("node-0"),
        Options {
            config: Some(config.clone()),
            database_url: Some(database.clone()),
            token: None,
            env: Vec::new(),
        },
    )
    .await;
    let cluster = Cluster {
        root: root.to_path_buf(),
        database,
        config,
        token: first.token.clone(),
    };
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(cluster.start_node(i).await);
    }
    nodes[0].create_repo("libs").await;
    // Every node sees every other alive before the first upload.
    wait_for(
        Duration::from_secs(30),
        "every node to see the others",
        || async {
            let info = nodes[0]
                .admin()
                .get(nodes[0].url("/api/system/cluster"))
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()?;
            (info["nodes"].as_array()?.len() == n).then_some(())
        },
    )
    .await;
    Some((cluster, nodes))
}

/// Polls `check` every 200 ms until it gives `Some`, or fails after `within`.
async fn wait_for<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The queue directory of `node`.
fn queue_dir(node: &Server) -> PathBuf {
    node.data_dir.join("eventual")
}

/// Which of `nodes` hold a queued copy of `sha256` on their disk.
fn holders(nodes: &[&Server], sha256: &str) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            stored_binaries_in(&queue_dir(n))
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == sha256))
        })
        .map(|(i, _)| i)
        .collect()
}

async fn deploy(node: &Server, path: &str, data: &[u8]) -> reqwest::Response {
    node.admin()
        .put(node.url(path))
        .body(data.to_vec())
        .send()
        .await
        .expect("deploy")
}

async fn assert_served(node: &Server, path: &str, data: &[u8]) {
    let r = node
        .admin()
        .get(node.url(path))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK, "{path} through {}", node.base);
    assert_eq!(
        r.bytes().await.expect("body").as_ref(),
        data,
        "{path} through {}",
        node.base
    );
}

fn cluster_queue(info: &serde_json::Value) -> &serde_json::Value {
    &info["clusterQueue"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_uploads_live_on_two_nodes_and_survive_a_killed_node_while_s3_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(localstack) = LocalStack::start(dir.path()).await else {
        return;
    };
    let (endpoint, port) = (localstack.endpoint(), localstack.port);
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let config = node_config(&endpoint, &bucket, 2);
    let Some((cluster, mut nodes)) = start_cluster(dir.path(), config, 3).await else {
        localstack.kill().await;
        return;
    };

    // S3 goes away: 50 deploys, round-robin through the three nodes.
    localstack.kill().await;
    let mut deployed = Vec::new();
    for i in 0..50u64 {
        let data = bytes(1000 + i, 1_000 + (i as usize * 7_919) % 300_000);
        let path = format!("/libs/a/{i}.bin");
        let node = &nodes[i as usize % 3];
        let r = deploy(node, &path, &data).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{path}: {:?}",
            r.text().await
        );
        // Before the 201, the bytes were on two nodes' disks.
        let sha256 = sha256_hex(&data);
        let on = holders(&nodes.iter().collect::<Vec<_>>(), &sha256);
        assert_eq!(on.len(), 2, "{path} is on the disks of nodes {on:?}");
        assert!(
            on.contains(&(i as usize % 3)),
            "the receiving node holds {path}"
        );
        deployed.push((path, data));
    }
    // Right away, every node serves every one.
    for (path, data) in &deployed {
        for node in &nodes {
            assert_served(node, path, data).await;
        }
    }
    let info = nodes[0].storage_info().await;
    let queue = cluster_queue(&info);
    assert_eq!(queue["binaries"], 50, "{info}");
    assert_eq!(queue["underReplicated"], 0, "{info}");
    assert_eq!(queue["nodes"].as_array().map(Vec::len), Some(3), "{info}");
    let copies: u64 = queue["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["depth"].as_u64().expect("depth"))
        .sum();
    assert_eq!(copies, 100, "two copies each: {info}");

    // One node dies; then S3 comes back.
    let killed = nodes.remove(1);
    killed.crash().await;
    let localstack = LocalStack::start_on(dir.path(), port)
        .await
        .expect("LocalStack again");
    let s3 = s3::create_bucket(&endpoint, &bucket, dir.path()).await;

    // The survivors upload everything, from their own copies.
    wait_for(Duration::from_secs(120), "every binary in S3", || async {
        for (_, data) in &deployed {
            let digest = sha256_hex(data).parse().expect("digest");
            if !s3.exists(&digest).await.unwrap_or(false) {
                return None;
            }
        }
        Some(())
    })
    .await;
    for (path, data) in &deployed {
        let digest = sha256_hex(data).parse().expect("digest");
        assert_eq!(
            s3.get_bytes(&digest, None).await.expect("in S3").as_ref(),
            data.as_slice(),
            "{path} reached S3 intact"
        );
        for node in &nodes {
            assert_served(node, path, data).await;
        }
    }
    for node in &nodes {
        wait_for(
            Duration::from_secs(30),
            "a survivor's queue disk to empty",
            || async {
                stored_binaries_in(&queue_dir(node))
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    }
    // The killed node comes back with its disk: what it held is in S3, so it drops it all.
    let back = cluster.start_node(1).await;
    wait_for(
        Duration::from_secs(30),
        "the returned node's queue disk to empty",
        || async {
            stored_binaries_in(&queue_dir(&back))
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let info = back.storage_info().await;
    assert_eq!(cluster_queue(&info)["binaries"], 0, "{info}");
    back.stop().await;
    for node in nodes {
        node.stop().await;
    }
    localstack.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_queue_disk_was_emptied_rejoins_and_the_peers_restore_redundancy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(localstack) = LocalStack::start(dir.path()).await else {
        return;
    };
    let (endpoint, port) = (localstack.endpoint(), localstack.port);
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let config = node_config(&endpoint, &bucket, 2);
    let Some((_cluster, nodes)) = start_cluster(dir.path(), config, 3).await else {
        localstack.kill().await;
        return;
    };
    localstack.kill().await;
    let mut deployed = Vec::new();
    for i in 0..12u64 {
        let data = bytes(2000 + i, 50_000 + i as usize);
        let path = format!("/libs/b/{i}.bin");
        let r = deploy(&nodes[i as usize % 3], &path, &data).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        deployed.push((path, data));
    }
    let all: Vec<&Server> = nodes.iter().collect();
    // Node 0's queue disk is lost: emptied under the running node.
    let lost: Vec<String> = deployed
        .iter()
        .map(|(_, d)| sha256_hex(d))
        .filter(|s| holders(&all, s).contains(&0))
        .collect();
    assert!(!lost.is_empty(), "node 0 held some copies");
    for file in stored_binaries_in(&queue_dir(&nodes[0])) {
        std::fs::remove_file(file).expect("remove a queued copy");
    }
    // Nothing acknowledged is lost: every one is still served by every node ...
    for (path, data) in &deployed {
        for node in &nodes {
            assert_served(node, path, data).await;
        }
    }
    // ... and the peers make the missing copies: two disks hold each binary again.
    wait_for(
        Duration::from_secs(60),
        "two copies of every binary again",
        || async {
            deployed
                .iter()
                .all(|(_, d)| holders(&all, &sha256_hex(d)).len() >= 2)
                .then_some(())
        },
    )
    .await;
    let info = nodes[0].storage_info().await;
    assert_eq!(cluster_queue(&info)["underReplicated"], 0, "{info}");
    // S3 returns: everything reaches it and every disk empties.
    let localstack = LocalStack::start_on(dir.path(), port)
        .await
        .expect("LocalStack again");
    let s3 = s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    wait_for(
        Duration::from_secs(120),
        "every queue disk to empty",
        || async {
            all.iter()
                .all(|n| stored_binaries_in(&queue_dir(n)).is_empty())
                .then_some(())
        },
    )
    .await;
    for (path, data) in &deployed {
        let digest = sha256_hex(data).parse().expect("digest");
        assert_eq!(
            s3.get_bytes(&digest, None).await.expect("in S3").as_ref(),
            data.as_slice(),
            "{path}"
        );
    }
    for node in nodes {
        node.stop().await;
    }
    localstack.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lenient_limit_one_acknowledges_with_a_peer_down_and_the_peer_endpoint_takes_only_the_secret()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(localstack) = LocalStack::start(dir.path()).await else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&localstack.endpoint(), &bucket, dir.path()).await;
    let config = node_config(&localstack.endpoint(), &bucket, 1);
    let Some((cluster, mut nodes)) = start_cluster(dir.path(), config, 2).await else {
        localstack.kill().await;
        return;
    };

    // The peer endpoint: anonymous callers, users' tokens and a wrong secret are refused.
    let peer_url = nodes[0].url("/_stowage/peer/queue");
    let plain = reqwest::Client::new();
    let r = plain.put(&peer_url).body("x").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = nodes[0]
        .admin()
        .put(&peer_url)
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the admin token is no peer"
    );
    let r = plain
        .put(&peer_url)
        .header("x-stowage-cluster-key", "not-the-cluster-secret")
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let listed = nodes[0]
        .admin()
        .get(format!("{peer_url}/{}", sha256_hex(b"x")))
        .send()
        .await
        .expect("get");
    assert_eq!(listed.status(), StatusCode::UNAUTHORIZED);
    let r = plain
        .put(&peer_url)
        .header("x-stowage-cluster-key", SECRET)
        .body("a copy")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored: serde_json::Value = r.json().await.expect("json");
    assert_eq!(stored["sha256"], sha256_hex(b"a copy"));
    let r = plain
        .delete(format!("{peer_url}/{}", sha256_hex(b"a copy")))
        .header("x-stowage-cluster-key", SECRET)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A quorum write's staged copy is named only when the peer received what was sent: a
    // CRC-32C other than the sender's (bytes damaged on the way) is refused and names nothing.
    let staged_copy = bytes(2999, 100_000);
    let digest = sha256_hex(&staged_copy);
    let crc = crc32c::crc32c(&staged_copy);
    for (sent_crc, status) in [
        (crc ^ 1, StatusCode::BAD_REQUEST),
        (crc, StatusCode::CREATED),
    ] {
        let r = plain
            .put(format!("{peer_url}/staged"))
            .header("x-stowage-cluster-key", SECRET)
            .body(staged_copy.clone())
            .send()
            .await
            .expect("stage");
        assert_eq!(r.status(), StatusCode::CREATED);
        let staged: serde_json::Value = r.json().await.expect("json");
        assert_eq!(staged["crc32c"], crc, "{staged}");
        assert_eq!(staged["size"], staged_copy.len(), "{staged}");
        let id = staged["id"].as_str().expect("id");
        let r = plain
            .post(format!(
                "{peer_url}/staged/{id}?sha256={digest}&crc32c={sent_crc}"
            ))
            .header("x-stowage-cluster-key", SECRET)
            .send()
            .await
            .expect("commit");
        assert_eq!(r.status(), status, "{:?}", r.text().await);
        let held = plain
            .head(format!("{peer_url}/{digest}"))
            .header("x-stowage-cluster-key", SECRET)
            .send()
            .await
            .expect("head");
        let named = status == StatusCode::CREATED;
        assert_eq!(held.status().is_success(), named, "{}", held.status());
    }
    let r = plain
        .delete(format!("{peer_url}/{digest}"))
        .header("x-stowage-cluster-key", SECRET)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // S3 away, the peer stopped: deploys are acknowledged with one copy, under-replicated.
    let port = localstack.port;
    localstack.kill().await;
    let peer = nodes.remove(1);
    peer.stop().await;
    let mut deployed = Vec::new();
    for i in 0..5u64 {
        let data = bytes(3000 + i, 20_000);
        let path = format!("/libs/c/{i}.bin");
        let r = deploy(&nodes[0], &path, &data).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        deployed.push((path, data));
    }
    let info = nodes[0].storage_info().await;
    assert_eq!(cluster_queue(&info)["underReplicated"], 5, "{info}");
    // The peer returns: the missing copies are made on its disk.
    let peer = cluster.start_node(1).await;
    wait_for(
        Duration::from_secs(60),
        "the copies on the returned peer",
        || async {
            deployed
                .iter()
                .all(|(_, d)| holders(&[&nodes[0], &peer], &sha256_hex(d)).len() == 2)
                .then_some(())
        },
    )
    .await;
    let info = wait_for(Duration::from_secs(10), "no under-replication", || async {
        let info = nodes[0].storage_info().await;
        (cluster_queue(&info)["underReplicated"] == 0).then_some(info)
    })
    .await;
    assert_eq!(cluster_queue(&info)["binaries"], 5, "{info}");
    for (path, data) in &deployed {
        assert_served(&peer, path, data).await;
    }
    peer.stop().await;
    // With lenientLimit = 2 and the peer down, a deploy is refused and keeps nothing.
    let strict = node_config(&format!("http://127.0.0.1:{port}"), &bucket, 2);
    let node = nodes.remove(0);
    node.stop().await;
    let strict_cluster = Cluster {
        config: strict,
        ..cluster
    };
    let node = strict_cluster.start_node(0).await;
    let data = bytes(4000, 10_000);
    let r = deploy(&node, "/libs/c/refused.bin", &data).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        r.text().await
    );
    assert!(
        holders(&[&node], &sha256_hex(&data)).is_empty(),
        "a refused upload keeps no copy"
    );
    node.stop().await;
}

/// `cluster-file-system`: each node's own directory, every binary on `redundancy` nodes.
fn file_system_config(lenient_limit: usize) -> String {
    format!(
        "[filestore]\ntemplate = \"cluster-file-system\"\n\n\
         [filestore.sharding]\nredundancy = 2\nlenientLimit = {lenient_limit}\n\n\
         [filestore.eventual]\ndispatcherInterval = 200\n\n\
         [cluster]\nheartbeat_secs = 1\nprimary_lease_secs = 3\nlock_lease_secs = 3\n\
         secret = \"{SECRET}\"\n"
    )
}

fn filestore_holders(nodes: &[&Server], sha256: &str) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.stored_binaries()
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == sha256))
        })
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_file_system_keeps_two_copies_across_nodes_and_balances_after_a_node_was_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((cluster, mut nodes)) = start_cluster(dir.path(), file_system_config(1), 3).await
    else {
        return;
    };
    let mut deployed = Vec::new();
    for i in 0..20u64 {
        let data = bytes(5000 + i, 30_000 + i as usize * 1_000);
        let path = format!("/libs/fs/{i}.bin");
        let r = deploy(&nodes[i as usize % 3], &path, &data).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let on = filestore_holders(&nodes.iter().collect::<Vec<_>>(), &sha256_hex(&data));
        assert_eq!(on.len(), 2, "{path} is on the disks of nodes {on:?}");
        deployed.push((path, data));
    }
    let info = nodes[0].storage_info().await;
    assert!(info["eventualQueue"].is_null(), "no queue: {info}");
    assert_eq!(info["clusterFileSystem"]["binaries"], 20, "{info}");

    // Node 1 dies: every artifact is still served, and the survivors copy what it held.
    let killed = nodes.remove(1);
    killed.crash().await;
    for (path, data) in &deployed {
        for node in &nodes {
            assert_served(node, path, data).await;
        }
    }
    let survivors: Vec<&Server> = nodes.iter().collect();
    wait_for(
        Duration::from_secs(60),
        "two copies on the survivors",
        || async {
            deployed
                .iter()
                .all(|(_, d)| filestore_holders(&survivors, &sha256_hex(d)).len() == 2)
                .then_some(())
        },
    )
    .await;
    // Deploys go on while it is away.
    for i in 20..25u64 {
        let data = bytes(5000 + i, 10_000);
        let path = format!("/libs/fs/{i}.bin");
        let r = deploy(&nodes[i as usize % 2], &path, &data).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        deployed.push((path, data));
    }
    // It returns with its disk: it serves everything (what it lacks from its peers), and
    // every binary has two copies or more on live nodes.
    let back = cluster.start_node(1).await;
    for (path, data) in &deployed {
        assert_served(&back, path, data).await;
    }
    let info = wait_for(Duration::from_secs(30), "no under-replication", || async {
        let info = back.storage_info().await;
        (info["clusterFileSystem"]["underReplicated"] == 0).then_some(info)
    })
    .await;
    assert_eq!(info["clusterFileSystem"]["binaries"], 25, "{info}");
    let all = [&nodes[0], &back, &nodes[1]];
    for (path, data) in &deployed {
        let on = filestore_holders(&all, &sha256_hex(data));
        assert!(on.len() >= 2, "{path} is on nodes {on:?}");
    }
    back.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
