//! Active/passive (issue 23): a passive Stowage on a PostgreSQL streaming replica of the
//! active's database (a real hot standby, made with pg_basebackup: `PrivatePostgres::replica_of`), copying binaries from the
//! active's filestore. It catches up and serves every artifact, refuses writes, and after the
//! active is killed mid-load and its site lost, holds every artifact acknowledged before its
//! last sync point; `stowage promote` then makes it the active.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::postgres::PrivatePostgres;
use stowage_tests::{Options, Server, bytes, postgres_database, sha256_hex, stowage_bin};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The passive's standby figures, once a pass has run.
async fn standby(s: &Server) -> Value {
    s.storage_info().await["standby"].clone()
}

/// Waits until the passive's last pass saw at least `binaries` and missed none.
async fn caught_up(s: &Server, binaries: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = standby(s).await;
        if st["binaries"].as_u64() >= Some(binaries) && st["lag"]["binaries"] == 0 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the passive did not catch up: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passive_on_a_streaming_replica_catches_up_refuses_writes_and_takes_over() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(db_url) = postgres_database(&root.path().join("db")).await else {
        return;
    };
    let (prefix, db_name) = db_url.rsplit_once('/').expect("database name");
    let host_port = prefix.rsplit_once('@').expect("user@host").1;
    let active_dir = root.path().join("active");
    let active = Server::start_with(
        &active_dir,
        Options {
            database_url: Some(db_url.clone()),
            ..Options::default()
        },
    )
    .await;
    active.create_repo("libs").await;
    let token = active.token.clone();
    let replica = PrivatePostgres::replica_of(host_port, &root.path().join("replica"));
    let replica_url = replica.url(db_name);

    let source = active.data_dir.join("filestore");
    let config = format!(
        "[standby]\nrole = \"passive\"\nsource = \"{}\"\ninterval_secs = 1\n",
        source.display()
    );
    let passive_dir = root.path().join("passive");
    // One pass offline (`stowage replicate`), before the passive serves: the first binaries.
    for i in 0..5u64 {
        let r = active
            .admin()
            .put(active.url(&format!("/libs/first/f{i}.bin")))
            .body(bytes(1_000 + i, 1_024))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    std::fs::create_dir_all(&passive_dir).expect("dir");
    let config_file = passive_dir.join("stowage.toml");
    std::fs::write(&config_file, &config).expect("config");
    let mut replicated = Value::Null;
    for _ in 0..50 {
        let out = tokio::process::Command::new(stowage_bin())
            .args(["replicate", "--database-url", &replica_url, "--config"])
            .arg(&config_file)
            .arg("--data-dir")
            .arg(passive_dir.join("data"))
            .env_remove("STOWAGE_CONFIG")
            .output()
            .await
            .expect("replicate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("replicate: done"));
        replicated = serde_json::from_slice(&out.stdout).expect("report");
        if replicated["binaries"] == 5 {
            break;
        }
        // The replica replays the rows a moment after the primary commits them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replicated["binaries"], 5, "{replicated}");
    assert_eq!(replicated["lag"]["binaries"], 0, "{replicated}");
    let passive = Server::start_with(
        &passive_dir,
        Options {
            config: Some(config.clone()),
            database_url: Some(replica_url.clone()),
            token: Some(token.clone()),
            ..Options::default()
        },
    )
    .await;

    // 200 deploys on the active: the passive catches up and serves them all.
    let c = active.admin();
    for i in 0..200u64 {
        let r = c
            .put(active.url(&format!("/libs/a/f{i}.bin")))
            .body(bytes(5_000 + i, 4_096))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let st = caught_up(&passive, 205).await;
    assert!(st["copied"].as_u64() >= Some(200), "{st}");
    let p = passive.admin();
    for i in 0..200u64 {
        let r = p
            .get(passive.url(&format!("/libs/a/f{i}.bin")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK, "f{i}");
        assert_eq!(
            r.bytes().await.expect("body").as_ref(),
            bytes(5_000 + i, 4_096).as_slice()
        );
    }
    // It refuses writes, saying why.
    let r = p
        .put(passive.url("/libs/a/not-here.bin"))
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.expect("text").contains("passive standby"));

    // The active killed mid-load, and its site (its filestore) lost with it.
    let load = tokio::spawn({
        let (c, base) = (c.clone(), active.url(""));
        async move {
            let mut acked = Vec::new();
            for i in 0..2_000u64 {
                let r = c
                    .put(format!("{base}/libs/b/g{i}.bin"))
                    .body(bytes(90_000 + i, 2_048))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => acked.push((i, now_ms())),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        }
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    active.crash().await;
    let killed_ms = now_ms();
    std::fs::rename(&source, root.path().join("lost-filestore")).expect("lose the active's site");
    let acked = load.await.expect("load");
    assert!(acked.len() > 20, "the load ran: {}", acked.len());
    // The passive goes on with what it has.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = standby(&passive).await;
    let synced = st["syncedAtMs"].as_i64().expect("a sync point");
    let before: Vec<_> = acked.iter().filter(|(_, at)| *at < synced).collect();
    assert!(!before.is_empty(), "a sync point during the load: {st}");
    for (i, _) in &before {
        let r = p
            .get(passive.url(&format!("/libs/b/g{i}.bin")))
            .send()
            .await
            .expect("get");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "g{i}, acknowledged before the sync point"
        );
        assert_eq!(
            sha256_hex(&r.bytes().await.expect("body")),
            sha256_hex(&bytes(90_000 + i, 2_048))
        );
    }
    let last_ack = acked.last().map_or(killed_ms, |(_, at)| *at);
    eprintln!(
        "RPO: {} of {} acknowledged artifacts before the last sync point; the sync point was {} ms \
         before the last acknowledgement ({} ms before the kill)",
        before.len(),
        acked.len(),
        last_ack - synced,
        killed_ms - synced
    );

    // Promotion: the replica becomes the primary, and the node the active.
    passive.stop().await;
    let out = tokio::process::Command::new(stowage_bin())
        .args(["promote", "--database-url", &replica_url, "--data-dir"])
        .arg(passive_dir.join("data"))
        .env_remove("STOWAGE_CONFIG")
        .output()
        .await
        .expect("promote");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("promoted"));
    let promoted = Server::start_with(
        &passive_dir,
        Options {
            database_url: Some(replica_url.clone()),
            token: Some(token.clone()),
            ..Options::default()
        },
    )
    .await;
    let r = promoted
        .admin()
        .put(promoted.url("/libs/after/promotion.bin"))
        .body(vec![7u8; 100])
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the promoted node takes writes"
    );
    let r = promoted
        .admin()
        .get(promoted.url("/libs/a/f7.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    promoted.stop().await;
    drop(replica);
}
