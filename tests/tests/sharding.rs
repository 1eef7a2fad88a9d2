//! `stowage serve` on the sharding templates, over real directories and real LocalStack
//! buckets: where copies land, a mount lost in the middle of an upload (with lenientLimit 1 and
//! with lenientLimit = redundancy), corrupt copies, write-disabled mounts, and balancing
//! (raised by `POST /api/system/storage/optimize`) restoring every binary to its redundancy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use stowage_core::{BinaryProviderExt, Sha256};
use stowage_tests::s3::{self, LocalStack};
use stowage_tests::{Options, Server, bytes, sha256_hex, stored_binaries_in};

const MIB: usize = 1024 * 1024;

/// A sharded configuration: `mounts` are TOML inline tables.
fn config(
    template: &str,
    redundancy: usize,
    lenient: usize,
    mounts: &[String],
    extra: &str,
) -> String {
    format!(
        "[filestore]\ntemplate = \"{template}\"\n\n[filestore.sharding]\nredundancy = {redundancy}\n\
         lenientLimit = {lenient}\ncheckPeriod = 200\nbalancingInterval = 0\n\
         concurrentStreamWaitTimeout = 10000\nmounts = [\n{}\n]\n{extra}",
        mounts.join(",\n")
    )
}

fn dir_mount(id: &str, dir: &Path, more: &str) -> String {
    format!("  {{ id = \"{id}\", dir = \"{}\"{more} }}", dir.display())
}

/// Mount directories `m1`… under `root`.
fn mount_dirs(root: &Path, n: usize) -> Vec<PathBuf> {
    (1..=n).map(|i| root.join(format!("m{i}"))).collect()
}

/// `n` writable directory mounts `m1`… under `root`: their directories and their TOML.
fn plain_mounts(root: &Path, n: usize) -> (Vec<PathBuf>, Vec<String>) {
    let dirs = mount_dirs(root, n);
    let mounts = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| dir_mount(&format!("m{}", i + 1), d, ""))
        .collect();
    (dirs, mounts)
}

async fn start(dir: &Path, config: String) -> Server {
    let server = Server::start_with(
        dir,
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await;
    server.create_repo("libs").await;
    server
}

async fn deploy(server: &Server, path: &str, data: &[u8]) -> reqwest::Response {
    server
        .admin()
        .put(server.url(path))
        .body(data.to_vec())
        .send()
        .await
        .expect("deploy")
}

/// Which of `dirs` hold a copy of `data`, each copy checked to be intact.
fn copies(dirs: &[PathBuf], data: &[u8]) -> Vec<usize> {
    let hex = sha256_hex(data);
    let mut on = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let path = dir.join(&hex[..2]).join(&hex);
        if let Ok(stored) = std::fs::read(&path) {
            assert_eq!(
                sha256_hex(&stored),
                hex,
                "the copy in {} is intact",
                dir.display()
            );
            on.push(i);
        }
    }
    on
}

async fn assert_served(server: &Server, path: &str, data: &[u8]) {
    let r = server
        .admin()
        .get(server.url(path))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let body = r.bytes().await.expect("body");
    assert!(body == data, "{path} served other bytes");
}

#[tokio::test]
async fn two_copies_over_three_directories_spread_evenly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = plain_mounts(dir.path(), 3);
    let server = start(dir.path(), config("redundant-shards", 2, 0, &mounts, "")).await;
    let mut per_mount = [0usize; 3];
    for i in 0..12u64 {
        let data = bytes(i, 50_000 + i as usize);
        let r = deploy(&server, &format!("/libs/a/f{i}.bin"), &data).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let on = copies(&dirs, &data);
        assert_eq!(on.len(), 2, "f{i} is on mounts {on:?}");
        for m in on {
            per_mount[m] += 1;
        }
        assert_served(&server, &format!("/libs/a/f{i}.bin"), &data).await;
    }
    assert_eq!(
        per_mount,
        [8, 8, 8],
        "round robin spreads the 24 copies evenly"
    );
    let info = server.storage_info().await;
    let shards = &info["shards"];
    assert_eq!(shards["redundancy"], 2);
    for (i, mount) in shards["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .enumerate()
    {
        assert_eq!(mount["id"], format!("m{}", i + 1));
        assert_eq!(mount["state"], "up");
        assert!(
            mount["binariesCount"].is_null(),
            "counted by balancing, not run yet"
        );
        assert!(mount["freeSpace"].as_u64().is_some(), "{mount}");
    }
    // Garbage collection is followed by a balancing pass, which finds nothing to do.
    let r = server
        .admin()
        .post(server.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::OK);
    let gc: Value = r.json().await.expect("json");
    let balancing = &gc["balancing"];
    assert_eq!(balancing["complete"], true, "{gc}");
    assert_eq!(balancing["total"], 12, "{gc}");
    assert_eq!(
        (balancing["copied"].as_u64(), balancing["removed"].as_u64()),
        (Some(0), Some(0)),
        "{gc}"
    );
    let info = server.storage_info().await;
    for mount in info["shards"]["mounts"].as_array().expect("mounts") {
        assert_eq!(mount["binariesCount"], 8, "{mount}");
        assert!(mount["countedSecsAgo"].as_u64().is_some(), "{mount}");
    }
    server.stop().await;
}

/// Deploys `data` in two halves with a pause between them, running `between` in the pause.
async fn deploy_interrupted(
    server: &Server,
    path: &str,
    data: &[u8],
    between: impl std::future::Future<Output = ()>,
) -> StatusCode {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let request = server.admin().put(server.url(path)).body(body).send();
    let half = data.len() / 2;
    let (first, second) = (
        Bytes::copy_from_slice(&data[..half]),
        Bytes::copy_from_slice(&data[half..]),
    );
    let send = async move {
        tx.send(Ok(first)).await.expect("first half");
        tokio::time::sleep(Duration::from_millis(500)).await;
        between.await;
        tx.send(Ok(second)).await.expect("second half");
    };
    let (response, ()) = tokio::join!(request, send);
    response.expect("response").status()
}

/// Deploys `data` and removes the mount directory `lost` halfway through the body.
async fn deploy_losing(server: &Server, path: &str, data: &[u8], lost: &Path) -> StatusCode {
    let lost = lost.to_path_buf();
    deploy_interrupted(server, path, data, async move {
        std::fs::remove_dir_all(&lost).expect("lose the mount");
    })
    .await
}

#[tokio::test]
async fn a_mount_lost_mid_upload_is_tolerated_down_to_the_lenient_limit_and_balanced_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = plain_mounts(dir.path(), 2);
    let server = start(dir.path(), config("redundant-shards", 2, 1, &mounts, "")).await;
    let before = bytes(1, 300_000);
    assert_eq!(
        deploy(&server, "/libs/before.bin", &before).await.status(),
        StatusCode::CREATED
    );

    let data = bytes(2, 4 * MIB);
    let status = deploy_losing(&server, "/libs/during.bin", &data, &dirs[1]).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "one copy is enough with lenientLimit 1"
    );
    assert_served(&server, "/libs/during.bin", &data).await;
    assert_served(&server, "/libs/before.bin", &before).await;
    let after = bytes(3, 200_000);
    assert_eq!(
        deploy(&server, "/libs/after.bin", &after).await.status(),
        StatusCode::CREATED
    );
    let info = server.storage_info().await;
    assert_eq!(info["shards"]["mounts"][1]["state"], "down", "{info}");
    assert!(
        info["shards"]["balancing"]["needsBalancing"] == true,
        "{info}"
    );

    // The disk comes back, empty; balancing restores two verified copies of everything.
    std::fs::create_dir(&dirs[1]).expect("m2 back");
    let report = server.balance().await;
    assert_eq!(report["copied"], 3, "{report}");
    assert_eq!(report["remaining"], 0, "{report}");
    for data in [&before, &data, &after] {
        assert_eq!(copies(&dirs, data), vec![0, 1]);
    }
    let info = server.storage_info().await;
    assert_eq!(info["shards"]["mounts"][1]["state"], "up", "{info}");
    assert_eq!(
        info["shards"]["balancing"]["needsBalancing"], false,
        "{info}"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_lenient_limit_equal_to_redundancy_a_lost_mount_fails_the_upload_and_commits_nothing()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = plain_mounts(dir.path(), 2);
    let server = start(dir.path(), config("redundant-shards", 2, 0, &mounts, "")).await;
    let before = bytes(10, 100_000);
    assert_eq!(
        deploy(&server, "/libs/before.bin", &before).await.status(),
        StatusCode::CREATED
    );

    let data = bytes(11, 4 * MIB);
    let status = deploy_losing(&server, "/libs/during.bin", &data, &dirs[1]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let r = server
        .admin()
        .get(server.url("/libs/during.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing was committed");
    assert!(
        copies(&dirs, &data).is_empty(),
        "no copy of the failed upload is kept"
    );
    assert!(
        stored_binaries_in(&dirs[0]).len() == 1,
        "only the earlier binary is on m1"
    );

    // While the mount is away, uploads are refused with the reason; reads go on.
    let r = deploy(&server, "/libs/refused.bin", &bytes(12, 1000)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("lenientLimit is 2") && text.contains("m2"),
        "{text}"
    );
    assert_served(&server, "/libs/before.bin", &before).await;

    std::fs::create_dir(&dirs[1]).expect("m2 back");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        deploy(&server, "/libs/during.bin", &data).await.status(),
        StatusCode::CREATED
    );
    let report = server.balance().await;
    assert_eq!(report["copied"], 1, "{report}");
    assert_eq!(copies(&dirs, &before), vec![0, 1]);
    assert_eq!(copies(&dirs, &data), vec![0, 1]);
    server.stop().await;
}

/// Flips a byte in the middle of a stored copy.
fn corrupt(dir: &Path, data: &[u8]) {
    let hex = sha256_hex(data);
    let path = dir.join(&hex[..2]).join(&hex);
    let mut stored = std::fs::read(&path).expect("copy");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x55;
    std::fs::write(&path, stored).expect("corrupt");
}

#[tokio::test]
async fn a_corrupt_copy_is_detected_on_read_served_from_the_other_and_replaced_by_balancing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = plain_mounts(dir.path(), 2);
    let server = start(dir.path(), config("redundant-shards", 2, 0, &mounts, "")).await;
    let small = bytes(20, 200_000);
    let large = bytes(21, 5 * MIB);
    assert_eq!(
        deploy(&server, "/libs/small.bin", &small).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        deploy(&server, "/libs/large.bin", &large).await.status(),
        StatusCode::CREATED
    );
    corrupt(&dirs[0], &small);
    corrupt(&dirs[1], &large);

    // Small binaries are checked before the first byte: every read gets the right bytes.
    for _ in 0..4 {
        assert_served(&server, "/libs/small.bin", &small).await;
    }
    // Large ones are checked as they stream: a read of the bad copy is cut short (the client
    // sees a broken transfer, never a complete wrong file) and the bad copy is set aside.
    let mut good = 0;
    for _ in 0..2 {
        let r = server
            .admin()
            .get(server.url("/libs/large.bin"))
            .send()
            .await
            .expect("get");
        match r.bytes().await {
            Ok(body) => {
                assert!(body == large, "wrong bytes served as a complete body");
                good += 1;
            }
            Err(e) => assert!(e.is_body() || e.is_decode(), "{e}"),
        }
    }
    assert!(good >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        assert_served(&server, "/libs/large.bin", &large).await;
    }
    let report = server.balance().await;
    assert_eq!(report["copied"], 2, "{report}");
    assert_eq!(copies(&dirs, &small), vec![0, 1]);
    assert_eq!(copies(&dirs, &large), vec![0, 1]);
    server.stop().await;
}

#[tokio::test]
async fn a_write_disabled_mount_is_never_written_but_read_and_balanced_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dirs = mount_dirs(dir.path(), 3);
    // First the old disk alone holds a binary.
    let old_only = config("double-shards", 1, 0, &[dir_mount("m3", &dirs[2], "")], "");
    let server = start(dir.path(), old_only).await;
    let old = bytes(30, 150_000);
    assert_eq!(
        deploy(&server, "/libs/old.bin", &old).await.status(),
        StatusCode::CREATED
    );
    server.stop().await;

    // Then two new disks join with redundancy 2 and the old one is closed to writes.
    let mounts = vec![
        dir_mount("m1", &dirs[0], ""),
        dir_mount("m2", &dirs[1], ""),
        dir_mount("m3", &dirs[2], ", writeEnabled = false"),
    ];
    let server = Server::start_with(
        dir.path(),
        Options {
            config: Some(config("redundant-shards", 2, 0, &mounts, "")),
            ..Options::default()
        },
    )
    .await;
    for i in 0..6u64 {
        let data = bytes(31 + i, 20_000);
        assert_eq!(
            deploy(&server, &format!("/libs/new{i}.bin"), &data)
                .await
                .status(),
            StatusCode::CREATED
        );
        assert_eq!(copies(&dirs, &data), vec![0, 1], "never written to m3");
    }
    assert_served(&server, "/libs/old.bin", &old).await;
    let report = server.balance().await;
    assert_eq!(report["copied"], 1, "{report}");
    let on = copies(&dirs, &old);
    assert_eq!(on.len(), 2, "{on:?}");
    assert!(on.contains(&2), "m3 keeps its copy and was the source");
    server.stop().await;
}

#[tokio::test]
async fn garbage_collection_goes_on_while_a_mount_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = plain_mounts(dir.path(), 2);
    let extra = "[trashcan]\nenabled = false\n";
    let server = start(dir.path(), config("double-shards", 1, 1, &mounts, extra)).await;
    // Round robin puts one on each mount; both become garbage.
    for i in 0..2u64 {
        let path = format!("/libs/g{i}.bin");
        assert_eq!(
            deploy(&server, &path, &bytes(60 + i, 5000)).await.status(),
            StatusCode::CREATED
        );
        let r = server
            .admin()
            .delete(server.url(&path))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    std::fs::remove_dir_all(&dirs[1]).expect("lose m2");
    let r = server
        .admin()
        .post(server.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc");
    let status = r.status();
    let report: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["binariesSkipped"], 1,
        "the binary on the lost mount waits: {report}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_sharded_config_that_cannot_work_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, mounts) = plain_mounts(dir.path(), 2);
    let stderr =
        stowage_tests::serve_refused(dir.path(), &config("redundant-shards", 3, 0, &mounts, ""))
            .await;
    assert!(stderr.contains("redundancy is 3 but 2 mounts"), "{stderr}");
    let stderr =
        stowage_tests::serve_refused(dir.path(), &config("s3-sharding", 1, 0, &[], "")).await;
    assert!(
        stderr.contains("needs [filestore.sharding] mounts"),
        "{stderr}"
    );
}

/// A bucket mount on LocalStack at `endpoint`.
fn bucket_mount(id: &str, endpoint: &str, bucket: &str) -> String {
    format!(
        "  {{ id = \"{id}\", s3 = {{ bucketName = \"{bucket}\", endpoint = \"{endpoint}\" }} }}"
    )
}

async fn bucket_holds(s3: &stowage_s3::S3Provider, data: &[u8]) -> bool {
    let digest: Sha256 = sha256_hex(data).parse().expect("digest");
    match s3.get_bytes(&digest, None).await {
        Ok(stored) => {
            assert!(
                stored == data,
                "the copy in {} is intact",
                s3.backend().bucket()
            );
            true
        }
        Err(stowage_core::Error::NotFound { .. }) => false,
        Err(e) => panic!("reading {}: {e}", s3.backend().bucket()),
    }
}

#[tokio::test]
async fn s3_shards_survive_a_localstack_stopped_mid_upload_and_balance_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(shared) = s3::endpoint() else { return };
    let Some(private) = LocalStack::start(dir.path()).await else {
        return;
    };
    let port = private.port;
    let (a, b) = (s3::bucket_name(), s3::bucket_name());
    let s3a = s3::create_bucket(&shared, &a, dir.path()).await;
    let s3b = s3::create_bucket(&private.endpoint(), &b, dir.path()).await;
    let mounts = vec![
        bucket_mount("s3-a", &shared, &a),
        bucket_mount("s3-b", &private.endpoint(), &b),
    ];
    let base = s3::toml_section(&shared, "unused");
    let server = start(dir.path(), config("s3-sharding", 2, 1, &mounts, &base)).await;

    let before = bytes(40, 2 * MIB);
    assert_eq!(
        deploy(&server, "/libs/before.bin", &before).await.status(),
        StatusCode::CREATED
    );
    assert!(bucket_holds(&s3a, &before).await && bucket_holds(&s3b, &before).await);

    // LocalStack B dies in the middle of an upload: one copy is enough.
    let data = bytes(41, 3 * MIB);
    let status = deploy_interrupted(&server, "/libs/during.bin", &data, private.kill()).await;
    assert_eq!(status, StatusCode::CREATED);
    let after = bytes(42, 500_000);
    assert_eq!(
        deploy(&server, "/libs/after.bin", &after).await.status(),
        StatusCode::CREATED
    );
    for (path, data) in [("before", &before), ("during", &data), ("after", &after)] {
        assert_served(&server, &format!("/libs/{path}.bin"), data).await;
    }

    // B comes back empty (LocalStack keeps nothing); balancing fills its new bucket.
    let private = LocalStack::start_on(dir.path(), port)
        .await
        .expect("LocalStack again");
    let s3b = s3::create_bucket(&private.endpoint(), &b, dir.path()).await;
    let report = server.balance().await;
    assert_eq!(report["copied"], 3, "{report}");
    for data in [&before, &data, &after] {
        assert!(bucket_holds(&s3a, data).await && bucket_holds(&s3b, data).await);
    }
    server.stop().await;
    private.kill().await;
}
