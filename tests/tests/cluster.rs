//! Several `stowage serve` processes sharing one database and one filestore: concurrent
//! changes of the same paths leave database and filestore in agreement, locks of a crashed node
//! free themselves, and the primary role moves when the primary dies. Always on PostgreSQL:
//! SQLite is the single-node embedded engine, and several processes writing one SQLite file
//! get "database is locked" under load.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, Row};
use stowage_tests::nginx::Balancer;
use stowage_tests::{Options, Server, bytes, postgres_database, required_env, sha256_hex};

/// Settings every node of a test cluster shares: one filestore, short heartbeats and leases,
/// garbage collection scheduled every second (on the primary).
fn node_config(filestore: &Path) -> String {
    format!(
        "[filestore.file-system]\nfileStoreDir = \"{}\"\n\n[gc]\ninterval_secs = 1\n\n\
         [cluster]\nheartbeat_secs = 1\nprimary_lease_secs = 3\nlock_lease_secs = 3\nlock_wait_secs = 30\n",
        filestore.display()
    )
}

async fn start_cluster(root: &Path, n: usize) -> Option<Vec<Server>> {
    start_cluster_with(root, vec![Vec::new(); n]).await
}

/// A cluster of one node per entry of `envs`, each started with those extra environment
/// variables.
async fn start_cluster_with(root: &Path, envs: Vec<Vec<(String, String)>>) -> Option<Vec<Server>> {
    let url = postgres_database(root).await?;
    let mut nodes: Vec<Server> = Vec::new();
    for (i, env) in envs.into_iter().enumerate() {
        // The first node creates the admin token the others are given.
        let token = nodes.first().map(|n| n.token.clone());
        nodes.push(start_node(root, i, &url, token, env).await);
    }
    Some(nodes)
}

/// Node `i` of the cluster on the database `url` in `root`, with extra environment `env`;
/// `token` is the admin token of the node that created it (`None` for the first node).
async fn start_node(
    root: &Path,
    i: usize,
    url: &str,
    token: Option<String>,
    env: Vec<(String, String)>,
) -> Server {
    Server::start_with(
        &root.join(format!("node-{i}")),
        Options {
            config: Some(node_config(&root.join("filestore"))),
            database_url: Some(url.to_string()),
            token,
            env,
        },
    )
    .await
}

async fn cluster_view(node: &Server) -> Value {
    node.admin()
        .get(node.url("/api/system/cluster"))
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("json")
}

/// Connects to the metadata database the nodes share (PostgreSQL or the SQLite file).
async fn rows(url: &str, sql: &'static str) -> Vec<(String, String, i64)> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("connect to the database");
    sqlx::query(sql)
        .fetch_all(&mut conn)
        .await
        .expect("query")
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_hammering_the_same_paths_stay_consistent() {
    // Deploys, overwrites, moves, deletes and reads of four paths, from 4 clients per node.
    let root = tempfile::tempdir().expect("tempdir");
    let Some(nodes) = start_cluster(root.path(), 3).await else {
        return;
    };
    nodes[0].create_repo("libs").await;

    let view = cluster_view(&nodes[1]).await;
    assert_eq!(view["nodes"].as_array().expect("nodes").len(), 3);
    let primaries: Vec<_> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["primary"] == true)
        .collect();
    assert_eq!(primaries.len(), 1, "exactly one primary: {view}");

    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|i| bytes(500 + i, 20_000 + i as usize * 1000))
        .collect();
    let paths = ["a/one.bin", "a/two.bin", "b/three.bin", "four.bin"];
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for worker in 0..4u64 {
            let (c, base, bodies) = (node.admin(), node.base.clone(), bodies.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64 * 100 + worker);
                let mut statuses = Vec::new();
                for _ in 0..25 {
                    let path = paths[rng.random_range(0..paths.len())];
                    let url = format!("{base}/libs/{path}");
                    let r = match rng.random_range(0..12) {
                        0..6 => {
                            c.put(&url)
                                .body(bodies[rng.random_range(0..bodies.len())].clone())
                                .send()
                                .await
                        }
                        6..8 => c.delete(&url).send().await,
                        8..10 => {
                            let to = paths[rng.random_range(0..paths.len())];
                            c.post(format!("{base}/api/move/libs/{path}?to=/libs/{to}"))
                                .send()
                                .await
                        }
                        _ => c.get(&url).send().await,
                    }
                    .expect("request");
                    let status = r.status();
                    if status.is_server_error() {
                        eprintln!("{status}: {}", r.text().await.unwrap_or_default());
                    }
                    statuses.push(status);
                }
                statuses
            }));
        }
    }
    let mut seen: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        for status in t.await.expect("task") {
            *seen.entry(status.as_u16()).or_default() += 1;
        }
    }
    assert!(
        // 400: a move of a path onto itself.
        seen.keys().all(|s| [200, 201, 204, 400, 404].contains(s)),
        "unexpected statuses: {seen:?}"
    );

    // Garbage collection on the primary, then the database and the filestore must agree.
    let primary_id = cluster_view(&nodes[0]).await["primary"]
        .as_str()
        .expect("primary")
        .to_string();
    let address = primary_address(&nodes[0], &primary_id).await;
    let primary = nodes
        .iter()
        .find(|n| n.base.ends_with(&address))
        .expect("the primary is one of the nodes");
    let c = primary.admin();
    c.post(primary.url("/api/trash/empty"))
        .send()
        .await
        .expect("empty");
    let gc = c
        .post(primary.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc");
    assert_eq!(gc.status(), StatusCode::OK);

    let url = primary.database_url.clone();
    let filestore = root.path().join("filestore");
    let binaries = rows(&url, "SELECT sha256, sha1, size FROM binaries").await;
    for (sha256, sha1, size) in &binaries {
        let file = filestore.join(&sha256[..2]).join(sha256);
        let data =
            std::fs::read(&file).unwrap_or_else(|e| panic!("binary row {sha256} has no file: {e}"));
        assert_eq!(data.len() as i64, *size, "size of {sha256}");
        assert_eq!(
            &sha256_hex(&data),
            sha256,
            "a stored file's content matches its row"
        );
        use sha1::Digest;
        assert_eq!(&hex::encode(sha1::Sha1::digest(&data)), sha1);
    }
    let known: Vec<&String> = binaries.iter().map(|(s, _, _)| s).collect();
    let artifacts = rows(&url, "SELECT path, sha256, size FROM artifacts").await;
    for (path, sha256, size) in &artifacts {
        assert!(
            known.contains(&sha256),
            "artifact {path} points at an unknown binary"
        );
        let r = c
            .get(primary.url(&format!("/libs/{path}")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.expect("body");
        assert_eq!(body.len() as i64, *size);
        assert_eq!(&sha256_hex(&body), sha256);
    }
    let stored = stowage_tests::stored_binaries_in(&filestore);
    assert_eq!(
        stored.len(),
        binaries.len(),
        "every stored file has a row, after GC"
    );
}

async fn primary_address(node: &Server, primary_id: &str) -> String {
    let view = cluster_view(node).await;
    view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == primary_id)
        .and_then(|n| n["address"].as_str())
        .expect("primary address")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_role_moves_when_the_primary_dies() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(nodes) = start_cluster(root.path(), 3).await else {
        return;
    };
    let view = cluster_view(&nodes[0]).await;
    let old = view["primary"].as_str().expect("a primary").to_string();
    let address = primary_address(&nodes[0], &old).await;
    let (dead, alive): (Vec<Server>, Vec<Server>) =
        nodes.into_iter().partition(|n| n.base.ends_with(&address));
    assert_eq!(dead.len(), 1);
    // Let the primary run a few scheduled garbage collections first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed_at = Instant::now();
    for node in dead {
        node.crash().await;
    }
    // Lease 3 s plus a 1 s heartbeat: a new primary within 3 + 1 s (+ slack for a busy box).
    let bound = Duration::from_secs(8);
    let new = loop {
        let view = cluster_view(&alive[0]).await;
        match view["primary"].as_str() {
            Some(p) if p != old => break p.to_string(),
            _ => {}
        }
        assert!(
            killed_at.elapsed() < bound,
            "no new primary within {bound:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let view = cluster_view(&alive[1]).await;
    assert_eq!(
        view["primary"],
        new.as_str(),
        "both survivors agree on the primary"
    );
    // Only the primary runs garbage collection; the other node refuses and names it.
    let mut ran = 0;
    for node in &alive {
        let r = node
            .admin()
            .post(node.url("/api/system/storage/gc"))
            .send()
            .await
            .expect("gc");
        match r.status() {
            StatusCode::OK => ran += 1,
            StatusCode::CONFLICT => {
                let body: Value = r.json().await.expect("json");
                assert!(
                    body["errors"][0]["message"]
                        .as_str()
                        .expect("message")
                        .contains(&new)
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ran, 1, "exactly one node ran garbage collection");

    // Scheduled runs (every second, on the primary) never overlapped, before and after the
    // crash, and the ones after it ran on the new primary.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let url = alive[0].database_url.clone();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let runs: Vec<(String, i64, Option<i64>)> = sqlx::query(
        "SELECT node, started_ms, finished_ms FROM task_runs WHERE task = 'gc' ORDER BY started_ms",
    )
    .fetch_all(&mut conn)
    .await
    .expect("task runs")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert!(
        runs.iter().any(|(node, _, _)| node == &old),
        "the old primary ran tasks: {runs:?}"
    );
    assert!(
        runs.iter().any(|(node, _, _)| node == &new),
        "the new primary ran tasks: {runs:?}"
    );
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if let Some(finished) = a.2 {
            assert!(b.1 >= finished, "two runs overlapped: {a:?} and {b:?}");
        } else {
            // A run cut off by the crash: the next one starts only after its lock's lease.
            assert_eq!(
                a.0, old,
                "only the killed node leaves an unfinished run: {a:?}"
            );
        }
        if a.0 != b.0 {
            assert_eq!(
                (a.0.as_str(), b.0.as_str()),
                (old.as_str(), new.as_str()),
                "the role moved once"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_left_by_a_dead_node_frees_itself_and_waiting_is_bounded() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(url) = postgres_database(root.path()).await else {
        return;
    };
    let config = format!(
        "[filestore.file-system]\nfileStoreDir = \"{}\"\n\n[cluster]\nlock_wait_secs = 2\n",
        root.path().join("filestore").display()
    );
    let node = Server::start_with(
        &root.path().join("node"),
        Options {
            config: Some(config),
            database_url: Some(url.clone()),
            ..Options::default()
        },
    )
    .await;
    node.create_repo("libs").await;
    let c = node.admin();
    // What a node killed while deploying libs/a.bin leaves: the path's lock with a live lease.
    // (The lock name is the service's: "path:" + SHA-256 of "repo/path".)
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let name = format!("path:{}", sha256_hex(b"libs/a.bin"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    let insert = |expires: i64| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO locks (name, owner, expires_ms) VALUES ('{name}', 'dead-node', {expires})"
        )))
    };
    insert(now + 60_000)
        .execute(&mut conn)
        .await
        .expect("plant a long lease");

    // Waiting is bounded: a clear 503 with Retry-After after lock_wait_secs, not a hang.
    let started = Instant::now();
    let r = c
        .put(node.url("/libs/a.bin"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let body: Value = r.json().await.expect("json");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("locked")
    );
    // Other paths are not affected.
    assert_eq!(
        c.put(node.url("/libs/b.bin"))
            .body("y")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::CREATED
    );

    // A lease that runs out frees the lock: the deploy goes through once it has expired.
    sqlx::query("DELETE FROM locks WHERE owner = 'dead-node'")
        .execute(&mut conn)
        .await
        .expect("clear");
    insert(now_ms() + 1_500)
        .execute(&mut conn)
        .await
        .expect("plant a short lease");
    let r = c
        .put(node.url("/libs/a.bin"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the deploy proceeds after the dead node's lease expired"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_holding_locks_blocks_nobody_for_long() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(mut nodes) = start_cluster(root.path(), 2).await else {
        return;
    };
    nodes[0].create_repo("libs").await;
    let url = nodes[0].database_url.clone();

    // Hold the repository row so that node 0's deploy stops inside its metadata transaction
    // (the artifact insert waits on the foreign key), i.e. while it holds the path's and the
    // binary's locks.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT repo_key FROM repositories WHERE repo_key = 'libs' FOR UPDATE")
        .fetch_all(&mut *tx)
        .await
        .expect("hold the repository row");
    let victim = nodes.remove(0);
    let stuck = {
        let (c, url) = (victim.admin(), victim.url("/libs/held.bin"));
        tokio::spawn(async move { c.put(url).body("held").send().await })
    };
    let held = format!("path:{}", sha256_hex(b"libs/held.bin"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owners: Vec<String> = sqlx::query("SELECT owner FROM locks WHERE name = $1")
            .bind(&held)
            .fetch_all(&mut *tx)
            .await
            .expect("locks")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !owners.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 never took the path's lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.crash().await;
    let _ = stuck.await;
    tx.rollback().await.expect("release the repository row");

    // The other node deploys the same path once the dead node's lease (3 s) has run out.
    let survivor = &nodes[0];
    let started = Instant::now();
    let r = survivor
        .admin()
        .put(survivor.url("/libs/held.bin"))
        .body("after")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED, "the lock freed itself");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "freed within the lease, not forever"
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the dead node's lock really was in the way until its lease ran out"
    );
    assert_eq!(survivor.body("/libs/held.bin").await, "after".as_bytes());
}

/// The upstream node nginx sent a request to (`X-Stowage-Upstream`).
fn upstream_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-stowage-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no X-Stowage-Upstream: {:?}", response.headers()))
        .to_owned()
}

/// `infra/nginx/run` (the developer's balancer, nginx from Debian's packages) in front of two
/// nodes: a client stays on one node (by the STOWAGE_NODE cookie nginx sets, else by its
/// address), clients spread over both nodes, a deploy through one node is read through the
/// other, a client whose node dies is moved to the living one, and stopping the script stops
/// nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_keeps_clients_on_their_node_and_fails_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut nodes) = start_cluster(dir.path(), 2).await else {
        return;
    };
    let ports: Vec<u16> = nodes
        .iter()
        .map(|n| {
            n.addr()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        })
        .collect();
    let Some(balancer) = Balancer::start(dir.path(), &ports).await else {
        return;
    };
    let http = reqwest::Client::new();
    let ping = balancer.url("/api/system/ping");

    // Without a cookie a client is placed by its address, and told the key it was placed by.
    let first = http.get(&ping).send().await.expect("ping");
    assert_eq!(first.status(), StatusCode::OK, "{}", balancer.log_text());
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("Set-Cookie")
        .to_owned();
    assert!(cookie.starts_with("STOWAGE_NODE=127.0.0.1;"), "{cookie}");
    let home = upstream_of(&first);
    for _ in 0..10 {
        let r = http.get(&ping).send().await.expect("ping");
        assert_eq!(upstream_of(&r), home, "a client without a cookie stays");
    }

    // By cookie: each client keeps its node, and 32 clients land on both nodes.
    let mut client_of: HashMap<String, String> = HashMap::new();
    for i in 0..32 {
        let cookie = format!("STOWAGE_NODE=client-{i}");
        let mut upstreams = Vec::new();
        for _ in 0..4 {
            let r = http
                .get(&ping)
                .header("cookie", &cookie)
                .send()
                .await
                .expect("ping");
            assert_eq!(r.status(), StatusCode::OK);
            upstreams.push(upstream_of(&r));
        }
        upstreams.dedup();
        assert_eq!(upstreams.len(), 1, "{cookie} moved: {upstreams:?}");
        client_of.entry(upstreams.remove(0)).or_insert(cookie);
    }
    let expected: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut seen: Vec<&String> = client_of.keys().collect();
    seen.sort();
    let mut all: Vec<&String> = expected.iter().collect();
    all.sort();
    assert_eq!(seen, all, "both nodes used");
    let (on_0, on_1) = (&client_of[&expected[0]], &client_of[&expected[1]]);

    // Any node serves any call: deploy as a client of node 0, read as a client of node 1.
    let admin = nodes[0].admin();
    let r = admin
        .put(balancer.url("/api/repositories/libs"))
        .header("cookie", on_0)
        .send()
        .await
        .expect("create repo");
    assert!(r.status().is_success(), "create repo: {}", r.status());
    let data = bytes(7, 300_000);
    let r = admin
        .put(balancer.url("/libs/org/app-1.0.jar"))
        .header("cookie", on_0)
        .body(data.clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(upstream_of(&r), expected[0]);
    let r = admin
        .get(balancer.url("/libs/org/app-1.0.jar"))
        .header("cookie", on_1)
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(upstream_of(&r), expected[1]);
    assert_eq!(
        sha256_hex(&r.bytes().await.expect("body")),
        sha256_hex(&data)
    );

    // Node 1 dies: its clients are served by node 0, without an error.
    nodes.swap_remove(1).crash().await;
    for _ in 0..3 {
        let r = admin
            .get(balancer.url("/libs/org/app-1.0.jar"))
            .header("cookie", on_1)
            .send()
            .await
            .expect("download after failover");
        assert_eq!(r.status(), StatusCode::OK);
        // nginx lists every node it tried: the dead one first, the first time.
        let tried = upstream_of(&r);
        assert!(
            tried.ends_with(&expected[0]),
            "moved to the living node: {tried}"
        );
        assert_eq!(r.bytes().await.expect("body").len(), data.len());
    }

    let nginx = Path::new("/proc").join(balancer.nginx_pid.to_string());
    balancer.stop().await;
    assert!(!nginx.exists(), "nginx stopped with the script");
}

/// What a node said of itself: when it was asked, when it answered, and whether it acts as
/// primary then (what its cluster-wide tasks go by).
#[derive(Debug, Clone, Copy)]
struct Claim {
    asked: Instant,
    answered: Instant,
    primary: bool,
}

/// Asks `url` (a node's cluster view) whether it acts as primary; `None` when it does not
/// answer within `patience` (a paused node).
async fn claim(client: &reqwest::Client, url: &str, patience: Duration) -> Option<Claim> {
    let asked = Instant::now();
    let view: Value = tokio::time::timeout(patience, async {
        client.get(url).send().await.ok()?.json().await.ok()
    })
    .await
    .ok()??;
    Some(Claim {
        asked,
        answered: Instant::now(),
        primary: view["thisNodeIsPrimary"]
            .as_bool()
            .expect("thisNodeIsPrimary"),
    })
}

/// Whether two of `claims` say "primary" at instants that cannot be a second apart: what a
/// handover never allows (the new primary takes over only after the old one's lease ran out
/// by the database's clock, and the old one stopped acting a heartbeat, 1 s, before that).
fn two_primaries(claims: &[Claim]) -> bool {
    let primaries: Vec<&Claim> = claims.iter().filter(|c| c.primary).collect();
    primaries.iter().enumerate().any(|(i, a)| {
        primaries[i + 1..].iter().any(|b| {
            let from = a.asked.min(b.asked);
            let to = a.answered.max(b.answered);
            to - from < Duration::from_secs(1)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clocks_hours_apart_never_make_two_primaries_at_once() {
    let Some(faketime) = required_env("STOWAGE_TEST_LIBFAKETIME", "libfaketime") else {
        return;
    };
    // libfaketime shifts the wall clock only: timers and Instants keep the real monotonic one.
    let clock = |offset: &str| {
        vec![
            ("LD_PRELOAD".to_string(), faketime.clone()),
            ("FAKETIME".to_string(), offset.to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
        ]
    };
    let root = tempfile::tempdir().expect("tempdir");
    let Some(url) = postgres_database(root.path()).await else {
        return;
    };
    // The first node, primary from the start, runs an hour behind: by the others' clocks
    // its lease always looks long expired. Then a node on time joins, and one an hour ahead.
    let mut nodes = vec![start_node(root.path(), 0, &url, None, clock("-1h")).await];
    let token = nodes[0].token.clone();
    let started = Instant::now();
    let first = (nodes[0].admin(), nodes[0].url("/api/system/cluster"));
    while claim(&first.0, &first.1, Duration::from_secs(5))
        .await
        .is_none_or(|c| !c.primary)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first node never became primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The node an hour behind was warned of it at start.
    let log =
        std::fs::read_to_string(root.path().join("node-0").join("server.log")).unwrap_or_default();
    assert!(
        log.contains("this node's clock is 3600 s behind the database's")
            || log.contains("this node's clock is 3599 s behind the database's"),
        "a warning about the clock: {log}"
    );

    // Every node asked at once, over and over, while nodes join, one is paused and resumes.
    let targets = std::sync::Arc::new(std::sync::Mutex::new(vec![first]));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = tokio::spawn({
        let (targets, done) = (
            std::sync::Arc::clone(&targets),
            std::sync::Arc::clone(&done),
        );
        async move {
            let mut rounds: Vec<Vec<Claim>> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now: Vec<_> = targets.lock().expect("targets").clone();
                let asks = now
                    .iter()
                    .map(|(client, url)| claim(client, url, Duration::from_millis(500)));
                let claims = futures::future::join_all(asks).await;
                rounds.push(claims.into_iter().flatten().collect());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            rounds
        }
    });
    for (i, offset) in [(1, "+0"), (2, "+1h")] {
        let node = start_node(root.path(), i, &url, Some(token.clone()), clock(offset)).await;
        targets
            .lock()
            .expect("targets")
            .push((node.admin(), node.url("/api/system/cluster")));
        nodes.push(node);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The primary freezes for twice its lease (3 s), as a stalled machine would, and resumes
    // believing nothing happened: by then another node has the role, and it must not act.
    let view = cluster_view(&nodes[1]).await;
    let before = view["primary"].as_str().expect("a primary").to_string();
    let address = primary_address(&nodes[1], &before).await;
    let paused = nodes
        .iter()
        .position(|n| n.base.ends_with(&address))
        .expect("the primary is a node");
    nodes[paused].pause();
    tokio::time::sleep(Duration::from_secs(6)).await;
    nodes[paused].resume();
    tokio::time::sleep(Duration::from_secs(4)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = poller.await.expect("poller");

    let overlapping: Vec<&Vec<Claim>> = rounds.iter().filter(|r| two_primaries(r)).collect();
    let with_primary = rounds
        .iter()
        .filter(|r| r.iter().any(|c| c.primary))
        .count();
    println!(
        "{} rounds of asking every node; {with_primary} with a primary; {} with two",
        rounds.len(),
        overlapping.len()
    );
    assert!(
        overlapping.is_empty(),
        "two nodes acted as primary at once: {:?}",
        overlapping.first()
    );
    assert!(
        rounds.len() > 100,
        "asked often enough: {} rounds",
        rounds.len()
    );
    // The role moved while the primary was frozen, and the cluster has one primary at the end.
    let view = cluster_view(&nodes[1]).await;
    let after = view["primary"].as_str().expect("a primary after the pause");
    assert_ne!(
        after, before,
        "another node took the role during the pause: {view}"
    );
    let mut acting = 0;
    for node in &nodes {
        if cluster_view(node).await["thisNodeIsPrimary"] == true {
            acting += 1;
        }
    }
    assert_eq!(acting, 1, "one node acts as primary at the end");
}
