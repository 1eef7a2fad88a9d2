//! Backup and restore (issue 23): the embedded default (SQLite and a local filestore) backed up
//! to a directory, restored onto PostgreSQL and S3 (LocalStack) with every artifact, property,
//! checksum, trash entry and token equal; a second backup copies only the new binaries; a
//! backup with one flipped byte is refused on restore, naming the damage.

use std::path::Path;
use std::process::Output;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{
    Options, Server, bytes, database_url_on, postgres_database, s3, sha256_hex, stowage_bin,
};

/// Runs `stowage ARGS` with `--data-dir dir/data`, and the database and config given.
async fn stowage(dir: &Path, database_url: &str, config: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(stowage_bin());
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--database-url")
        .arg(database_url)
        .env_remove("STOWAGE_CONFIG")
        .stdin(std::process::Stdio::null());
    if let Some(config) = config {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join("stowage.toml");
        std::fs::write(&path, config).expect("config");
        cmd.arg("--config").arg(path);
    }
    cmd.output().await.expect("run stowage")
}

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: not a JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The only backup's metadata export in `target`, without its header line.
fn export_body(target: &Path, id: &str) -> Vec<String> {
    let text = std::fs::read_to_string(target.join("backups").join(id).join("metadata.jsonl"))
        .expect("export");
    text.lines().skip(1).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_the_embedded_default_restores_onto_postgres_and_s3() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let Some(pg_url) = postgres_database(&root.path().join("pg")).await else {
        return;
    };
    let source_dir = root.path().join("source");
    let target = root.path().join("backup");
    let target_arg = target.display().to_string();

    // 1,000 artifacts over 3 repositories, with properties, some in the trash, a user and a
    // token, on the embedded default.
    let source_db = database_url_on(&source_dir, "sqlite").await;
    let s = Server::start_with(
        &source_dir,
        Options {
            database_url: Some(source_db.clone()),
            ..Options::default()
        },
    )
    .await;
    let c = s.admin();
    for repo in ["libs", "docs", "images"] {
        s.create_repo(repo).await;
    }
    let deploys = futures::stream::iter(0..1000u64)
        .map(|i| {
            let c = c.clone();
            let repo = ["libs", "docs", "images"][(i % 3) as usize];
            let url = s.url(&format!(
                "/{repo}/d{}/f{i}.bin;build={};n={i}",
                i % 7,
                i % 5
            ));
            async move {
                c.put(url)
                    .body(bytes(1000 + i, 1_000 + (i as usize % 50) * 100))
                    .send()
                    .await
                    .expect("put")
                    .status()
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(deploys.iter().all(|s| *s == StatusCode::CREATED));
    for i in [3u64, 6, 9] {
        let r = c
            .delete(s.url(&format!("/libs/d{}/f{i}.bin", i % 7)))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let r = c
        .put(s.url("/api/security/users/ci"))
        .json(&serde_json::json!({"email": "ci@example.com", "password": "Secret-Passw0rd!"}))
        .send()
        .await
        .expect("user");
    assert!(r.status().is_success(), "{}", r.status());
    let token: Value = c
        .post(s.url("/access/api/v1/tokens"))
        .json(&serde_json::json!({"username": "ci", "scope": "applied-permissions/user"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let ci_token = token["access_token"].as_str().expect("token").to_string();
    let admin_token = s.token.clone();
    s.terminate();
    assert!(s.wait().await.success());

    let out = stowage(
        &source_dir,
        &source_db,
        None,
        &["backup", "--to", &target_arg],
    )
    .await;
    let first = ok(&out, "backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup: done"),
        "plain progress lines: {stderr}"
    );
    assert_eq!(first["tables"]["artifacts"], 997);
    assert_eq!(first["tables"]["trash"], 3);
    assert_eq!(first["copied"], first["binaries"]);
    let first_id = first["id"].as_str().expect("id").to_string();

    // Restore onto PostgreSQL and S3.
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, root.path()).await;
    let restored_dir = root.path().join("restored");
    let config = format!(
        "[filestore]\ntemplate = \"s3-storage-v3-direct\"\n\n{}",
        s3::toml_section(&endpoint, &bucket)
    );
    ok_status(
        &stowage(&restored_dir, &pg_url, Some(&config), &["migrate"]).await,
        "migrate",
    );
    let restored = ok(
        &stowage(
            &restored_dir,
            &pg_url,
            Some(&config),
            &["restore", "--from", &target_arg],
        )
        .await,
        "restore",
    );
    assert_eq!(restored["id"], first_id.as_str());
    assert_eq!(restored["tables"], first["tables"]);

    // Every row of every table equal: the restored store's own backup exports the same.
    let again_target = root.path().join("backup-of-restored");
    let again = ok(
        &stowage(
            &restored_dir,
            &pg_url,
            Some(&config),
            &["backup", "--to", &again_target.display().to_string()],
        )
        .await,
        "backup of the restored store",
    );
    assert_eq!(
        export_body(&again_target, again["id"].as_str().expect("id")),
        export_body(&target, &first_id),
        "every artifact, property, checksum, trash entry and token is the same"
    );

    // And it serves them, from S3, with the same tokens.
    let r = Server::start_with(
        &restored_dir,
        Options {
            config: Some(config.clone()),
            database_url: Some(pg_url.clone()),
            token: Some(admin_token.clone()),
            ..Options::default()
        },
    )
    .await;
    for i in (0..1000u64).step_by(37).filter(|i| ![3, 6, 9].contains(i)) {
        let repo = ["libs", "docs", "images"][(i % 3) as usize];
        let got = r
            .admin()
            .get(r.url(&format!("/{repo}/d{}/f{i}.bin?redirect=false", i % 7)))
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), StatusCode::OK, "{repo} f{i}");
        let body = got.bytes().await.expect("body");
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&bytes(1000 + i, 1_000 + (i as usize % 50) * 100))
        );
    }
    let props: Value = r
        .admin()
        .get(r.url("/api/storage/docs/d1/f1.bin?properties"))
        .send()
        .await
        .expect("props")
        .json()
        .await
        .expect("json");
    assert_eq!(props["properties"]["build"], serde_json::json!(["1"]));
    let trash: Value = r
        .admin()
        .get(r.url("/api/trash"))
        .send()
        .await
        .expect("trash")
        .json()
        .await
        .expect("json");
    assert_eq!(trash["items"].as_array().map(Vec::len), Some(3), "{trash}");
    let whoami = reqwest::Client::new()
        .get(r.url("/libs/d0/f0.bin?redirect=false"))
        .bearer_auth(&ci_token)
        .send()
        .await
        .expect("get as ci");
    assert_ne!(
        whoami.status(),
        StatusCode::UNAUTHORIZED,
        "the user's token is restored"
    );
    r.terminate();
    assert!(r.wait().await.success());

    // A second backup after 10 new deploys copies those 10 binaries only.
    let s = Server::start_with(
        &source_dir,
        Options {
            database_url: Some(source_db.clone()),
            ..Options::default()
        },
    )
    .await;
    for i in 0..10u64 {
        let put = s
            .admin()
            .put(s.url(&format!("/docs/new/n{i}.bin")))
            .body(bytes(50_000 + i, 4_000))
            .send()
            .await
            .expect("put");
        assert_eq!(put.status(), StatusCode::CREATED);
    }
    s.terminate();
    assert!(s.wait().await.success());
    let second = ok(
        &stowage(
            &source_dir,
            &source_db,
            None,
            &["backup", "--to", &target_arg],
        )
        .await,
        "second backup",
    );
    assert_eq!(second["copied"], 10, "{second}");
    assert_eq!(second["copiedBytes"], 40_000);

    // One flipped byte in the backup: the restore names the damage and exits non-zero.
    let victim = sha256_hex(&bytes(1000 + 1, 1_000 + 100));
    let file = target.join("binaries").join(&victim[..2]).join(&victim);
    let mut data = std::fs::read(&file).expect("a backed-up binary");
    data[10] ^= 0x01;
    std::fs::write(&file, data).expect("flip a byte");
    let damaged_dir = root.path().join("damaged");
    let damaged_db = database_url_on(&damaged_dir, "sqlite").await;
    let out = stowage(
        &damaged_dir,
        &damaged_db,
        None,
        &["restore", "--from", &target_arg],
    )
    .await;
    assert!(!out.status.success(), "a damaged backup is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&victim) && stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("docs/d1/f1.bin"),
        "the artifact is named: {stderr}"
    );
    let empty = stowage(
        &damaged_dir,
        &damaged_db,
        None,
        &["restore", "--from", &target_arg],
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&empty.stderr).contains("not empty"),
        "nothing of the refused restore was imported"
    );
}

fn ok_status(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_running_server_backs_up_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    for i in 0..5u64 {
        let r = s
            .admin()
            .put(s.url(&format!("/libs/f{i}.bin")))
            .body(bytes(i, 2_000))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let target = dir.path().join("api-backup");
    let url = s.url(&format!(
        "/api/system/backup?to={}&keep=2",
        target.display()
    ));
    let anonymous = reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !target.exists(),
        "nothing is made for a caller who may not back up"
    );
    let r = s
        .admin()
        .post(s.url("/api/system/backup"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a target is needed");

    let mut ids = Vec::new();
    for round in 0..3 {
        let r = s.admin().post(&url).send().await.expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let report = loop {
            let tasks: Value = s
                .admin()
                .get(s.url("/api/system/tasks"))
                .send()
                .await
                .expect("tasks")
                .json()
                .await
                .expect("json");
            let backup = &tasks["backup"];
            if backup["progress"]["running"] == false
                && let Some(ok) = backup["last"]["ok"].as_object()
                && !ids.contains(&ok["id"])
            {
                break Value::Object(ok.clone());
            }
            assert!(backup["last"]["failed"].is_null(), "{tasks}");
            assert!(
                std::time::Instant::now() < deadline,
                "no backup finished: {tasks}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(report["tables"]["artifacts"], 5, "{report}");
        assert_eq!(report["copied"], if round == 0 { 5 } else { 0 }, "{report}");
        ids.push(report["id"].clone());
    }
    // keep=2: the first of the three is gone, the two newest stay.
    let kept: Vec<String> = std::fs::read_dir(target.join("backups"))
        .expect("backups")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&ids[0].as_str().expect("id").to_string()));
}

#[tokio::test]
async fn a_scrub_repairs_a_flipped_byte_and_a_lost_copy_and_names_what_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[filestore]\ntemplate = \"redundant-shards\"\n\n[scrub]\ninterval_secs = 1\n";
    let db = database_url_on(dir.path(), "sqlite").await;
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some(config.into()),
            database_url: Some(db.clone()),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    let files: Vec<Vec<u8>> = (0..3).map(|i| bytes(700 + i, 20_000)).collect();
    for (i, data) in files.iter().enumerate() {
        let r = s
            .admin()
            .put(s.url(&format!("/libs/f{i}.bin")))
            .body(data.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // The primary's scheduled scrub, and its outcome in the storage figures.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let info = s.storage_info().await;
        if info["scrub"]["last"]["ok"]["binaries"] == 3 {
            assert_eq!(info["scrub"]["last"]["ok"]["copies"], 6, "{info}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled scrub: {}",
            info["scrub"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let data_dir = s.data_dir.clone();
    s.terminate();
    assert!(s.wait().await.success());
    let copy = |shard: u32, i: usize| {
        let digest = sha256_hex(&files[i]);
        data_dir
            .join(format!("shard-fs-{shard}"))
            .join(&digest[..2])
            .join(digest)
    };
    for shard in [1, 2] {
        for i in 0..3 {
            assert!(copy(shard, i).exists(), "R=2: every binary on both mounts");
        }
    }
    // One flipped byte in one copy of f0; f1's copy on the second mount lost.
    let mut flipped = std::fs::read(copy(1, 0)).expect("copy");
    flipped[100] ^= 0x40;
    std::fs::write(copy(1, 0), flipped).expect("flip");
    std::fs::remove_file(copy(2, 1)).expect("lose a copy");

    let first = ok(
        &stowage(dir.path(), &db, Some(config), &["verify"]).await,
        "verify",
    );
    assert_eq!(first["binaries"], 3, "{first}");
    assert_eq!(first["bad"], 1, "{first}");
    assert_eq!(first["missing"], 1, "{first}");
    assert_eq!(first["repaired"], 2, "{first}");
    assert_eq!(first["unrepaired"], serde_json::json!([]), "{first}");
    assert_eq!(
        sha256_hex(&std::fs::read(copy(1, 0)).expect("repaired")),
        sha256_hex(&files[0])
    );
    assert_eq!(std::fs::read(copy(2, 1)).expect("made again"), files[1]);
    let second = ok(
        &stowage(dir.path(), &db, Some(config), &["verify"]).await,
        "verify",
    );
    assert_eq!(
        (
            second["bad"].clone(),
            second["missing"].clone(),
            second["repaired"].clone()
        ),
        (
            serde_json::json!(0),
            serde_json::json!(0),
            serde_json::json!(0)
        ),
        "a second scrub finds nothing: {second}"
    );
    assert_eq!(second["copies"], 6);

    // Both copies of f2 bad: nothing to repair from; the artifact is named, the exit non-zero.
    for shard in [1, 2] {
        let mut bad = std::fs::read(copy(shard, 2)).expect("copy");
        bad[0] ^= 0x01;
        std::fs::write(copy(shard, 2), bad).expect("flip");
    }
    let out = stowage(dir.path(), &db, Some(config), &["verify"]).await;
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(
        report["unrepaired"][0]["sha256"],
        sha256_hex(&files[2]),
        "{report}"
    );
    assert_eq!(
        report["unrepaired"][0]["artifacts"],
        serde_json::json!(["libs/f2.bin"])
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("libs/f2.bin"));
}

#[tokio::test]
async fn a_backup_to_s3_restores_from_s3() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, root.path()).await;
    // The embedded default's filestore; the [filestore.s3] section gives the backup target its
    // endpoint and credentials.
    let config = s3::toml_section(&endpoint, &bucket);
    let source_dir = root.path().join("source");
    let source_db = database_url_on(&source_dir, "sqlite").await;
    let s = Server::start_with(
        &source_dir,
        Options {
            config: Some(config.clone()),
            database_url: Some(source_db.clone()),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    for i in 0..3u64 {
        let r = s
            .admin()
            .put(s.url(&format!("/libs/s3/f{i}.bin;k=v{i}")))
            .body(bytes(300 + i, 70_000))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let token = s.token.clone();
    s.stop().await;
    let target = format!("s3://{bucket}/backups-of/stowage");
    let first = ok(
        &stowage(
            &source_dir,
            &source_db,
            Some(&config),
            &["backup", "--to", &target],
        )
        .await,
        "backup to S3",
    );
    assert_eq!(first["copied"], 3, "{first}");
    let again = ok(
        &stowage(
            &source_dir,
            &source_db,
            Some(&config),
            &["backup", "--to", &target, "--keep", "1"],
        )
        .await,
        "second backup to S3",
    );
    assert_eq!(again["copied"], 0, "{again}");
    assert_eq!(
        again["removedBackups"].as_array().map(Vec::len),
        Some(1),
        "keep 1: {again}"
    );

    let restored_dir = root.path().join("restored");
    let restored_db = database_url_on(&restored_dir, "sqlite").await;
    let restored = ok(
        &stowage(
            &restored_dir,
            &restored_db,
            Some(&config),
            &["restore", "--from", &target],
        )
        .await,
        "restore from S3",
    );
    assert_eq!(restored["id"], again["id"]);
    let r = Server::start_with(
        &restored_dir,
        Options {
            config: Some(config.clone()),
            database_url: Some(restored_db),
            token: Some(token),
            ..Options::default()
        },
    )
    .await;
    for i in 0..3u64 {
        assert_eq!(
            r.body(&format!("/libs/s3/f{i}.bin")).await,
            bytes(300 + i, 70_000)
        );
    }
    r.stop().await;
}
