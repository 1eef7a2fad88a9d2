//! `stowage serve` with the `cache-fs` read cache in front of S3 (LocalStack) and in front of
//! the filesystem: one backend read for many concurrent readers, the cache bound and LRU
//! eviction on disk, and a restart that keeps what was cached.

use std::path::Path;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest;
use stowage_tests::s3;
use stowage_tests::{Options, Server, bytes, files_below, sha256_hex};

const MIB: usize = 1024 * 1024;

async fn start(dir: &Path, config: &str) -> Server {
    Server::start_with(
        dir,
        Options {
            config: Some(config.to_string()),
            ..Options::default()
        },
    )
    .await
}

async fn cache_stats(server: &Server) -> Value {
    server.storage_info().await["cache"].clone()
}

/// GETs `path` and returns the status and the SHA-256 of the body, hashed as it streams.
async fn fetch_hash(server: &Server, client: &reqwest::Client, path: &str) -> (StatusCode, String) {
    let r = client.get(server.url(path)).send().await.expect("get");
    let status = r.status();
    let mut hasher = sha2::Sha256::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.expect("chunk"));
    }
    (status, hex::encode(hasher.finalize()))
}

#[tokio::test]
async fn sixty_four_readers_of_an_uncached_binary_cause_one_read_of_s3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let config = format!(
        "[filestore]\ntemplate = \"s3-storage-v3-direct\"\n\n[filestore.cache]\nenabled = true\n\
         skipDuringUpload = true\n\n{}",
        s3::toml_section(&endpoint, &bucket)
    );
    let server = start(dir.path(), &config).await;
    server.create_repo("libs").await;
    let data = bytes(1, 64 * MIB);
    let r = server
        .admin()
        .put(server.url("/libs/big.bin"))
        .body(data.clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        cache_stats(&server).await["entries"],
        0,
        "skipDuringUpload keeps uploads out"
    );

    let client = server.admin();
    let readers = (0..64).map(|_| fetch_hash(&server, &client, "/libs/big.bin"));
    let results = futures::future::join_all(readers).await;
    let want = sha256_hex(&data);
    for (status, got) in &results {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(*got, want, "every reader gets the right bytes");
    }
    let stats = cache_stats(&server).await;
    assert_eq!(
        stats["backendReads"], 1,
        "one read of S3 for 64 readers: {stats}"
    );
    assert_eq!(stats["entries"], 1, "{stats}");

    // A restart keeps the cache: reads are hits, S3 is not read again.
    server.stop().await;
    let server = start(dir.path(), &config).await;
    let client = server.admin();
    let (status, got) = fetch_hash(&server, &client, "/libs/big.bin").await;
    assert_eq!((status, got), (StatusCode::OK, want));
    let stats = cache_stats(&server).await;
    assert_eq!(
        (stats["hits"].as_u64(), stats["backendReads"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_cache_fs_template_stays_within_max_cache_size_and_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        "[filestore]\ntemplate = \"cache-fs\"\n\n[filestore.cache]\nmaxCacheSize = \"3MiB\"\n";
    let server = start(dir.path(), config).await;
    server.create_repo("libs").await;
    let files: Vec<Vec<u8>> = (0..4).map(|i| bytes(10 + i, 1000 * 1024)).collect();
    let cache_dir = server.data_dir.join("cache");
    let on_disk = || -> u64 {
        files_below(&cache_dir)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    let cached = |data: &[u8]| {
        let hex = sha256_hex(data);
        cache_dir.join(&hex[..2]).join(hex).exists()
    };
    for (i, data) in files.iter().take(3).enumerate() {
        let r = server
            .admin()
            .put(server.url(&format!("/libs/f{i}")))
            .body(data.clone())
            .send()
            .await
            .expect("deploy");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(on_disk() <= 3 * MIB as u64);
    }
    // f0 read again: the most recently used. f3 then pushes out f1.
    assert_eq!(server.body("/libs/f0").await, files[0]);
    let r = server
        .admin()
        .put(server.url("/libs/f3"))
        .body(files[3].clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(on_disk() <= 3 * MIB as u64, "{} bytes on disk", on_disk());
    assert!(cached(&files[0]) && !cached(&files[1]) && cached(&files[2]) && cached(&files[3]));
    let stats = cache_stats(&server).await;
    assert_eq!(stats["evictions"], 1, "{stats}");
    // Evicted is not lost: it is read from the filestore below the cache.
    assert_eq!(server.body("/libs/f1").await, files[1]);
    server.stop().await;
}
