//! `stowage-bench bench-listings`: folder info and deep file lists in a repository of a
//! million artifacts, on SQLite and (given an admin URL) PostgreSQL, in one run.
//!
//! The repository `big` holds `lib/sub0` … `lib/sub9` with 100,000 files each, and `small`
//! with 10,000. Measured:
//! - folder info of `lib` (10 children, 1,000,000 files below) through `stowage serve`: p50
//!   and p99 over sequential requests, beside the ping endpoint's (the HTTP floor);
//! - the same folder read in-process by `Metadata::folder` and by the query folder info made
//!   before folders were entries (every path below the folder, grouped by child): today's
//!   figure against the one before;
//! - a deep `?list` of `small` (10,000 files), of `lib/sub0` (100,000 files) and of `lib`
//!   (1,000,000), each by a fresh server: time, bytes, and the server's peak RSS (VmHWM)
//!   before and after, which must stay flat; and the (not deep) list of `lib/sub0`, whose
//!   100,000 files are direct children;
//! - the delete of `lib/sub9` (100,000 files, to the trash) and the move of `lib/sub8`, each
//!   by a fresh server.
//!
//! Rows are seeded straight into the database (a million deploys would take an hour): one
//! binary, the artifacts and their folders, as deploys would have recorded them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use stowage_core::{ArtifactPath, Error, RepoKey};
use stowage_metadata::{Metadata, PoolSettings, Repository};

use crate::bench::{Server, fail, median, rss_kib, start_server};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchListingsArgs {
    /// A PostgreSQL admin URL (a database `stowage_bench_listings` is created on it, and
    /// dropped first if there); SQLite only without it.
    #[arg(long, env = "STOWAGE_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    /// Files in each of lib/sub0 … lib/sub9.
    #[arg(long, default_value_t = 100_000)]
    per_folder: u64,
    /// Sequential folder-info requests measured.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Directory for the servers' data.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

const SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
const SHA1: &str = "f572d396fae9206628714fb2ce00f72e94f2258f";
const MD5: &str = "b1946ac92492d2347c6235b4d2611184";
/// Rows per INSERT while seeding.
const BATCH: u64 = 500;

fn db_err(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Unavailable(format!("bench-listings: {what}: {e}"))
}

/// Seeds `url` (migrated, with repository `big`): the files and folders described above.
async fn seed(url: &str, per_folder: u64) -> Result<(), Error> {
    let metadata = Metadata::connect(url, &PoolSettings::default()).await?;
    metadata.migrate().await?;
    metadata
        .put_repository(&Repository {
            key: RepoKey::parse("big")?,
            rclass: "local".into(),
            package_type: "generic".into(),
            description: String::new(),
            config: serde_json::json!({}),
            created_ms: 1,
        })
        .await?;
    metadata.close().await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .map_err(db_err("connect"))?;
    let pg = url.starts_with("postgres");
    let placeholders = |n: usize, cols: usize| -> String {
        let mut k = 0;
        (0..n)
            .map(|_| {
                let row: Vec<String> = (0..cols)
                    .map(|_| {
                        k += 1;
                        if pg { format!("${k}") } else { "?".into() }
                    })
                    .collect();
                format!("({})", row.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let binary = if pg {
        "INSERT INTO binaries (sha256, sha1, md5, size, created_ms) VALUES ($1, $2, $3, 6, 1)"
    } else {
        "INSERT INTO binaries (sha256, sha1, md5, size, created_ms) VALUES (?, ?, ?, 6, 1)"
    };
    sqlx::query(binary)
        .bind(SHA256)
        .bind(SHA1)
        .bind(MD5)
        .execute(&pool)
        .await
        .map_err(db_err("seed the binary"))?;
    let mut folders: Vec<String> = vec!["lib".into(), "small".into()];
    let mut files: Vec<String> = Vec::new();
    for j in 0..10 {
        folders.push(format!("lib/sub{j}"));
        files.extend((0..per_folder).map(|k| format!("lib/sub{j}/f{k:07}.jar")));
    }
    files.extend((0..per_folder / 10).map(|k| format!("small/f{k:07}.jar")));
    let started = Instant::now();
    let mut tx = pool.begin().await.map_err(db_err("begin"))?;
    let sql = format!(
        "INSERT INTO folders (repo_key, path, created_ms, created_by, modified_ms, modified_by) \
         VALUES {}",
        placeholders(folders.len(), 6)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for f in &folders {
        query = query
            .bind("big")
            .bind(f.as_str())
            .bind(1_i64)
            .bind("bench")
            .bind(1_i64)
            .bind("bench");
    }
    query
        .execute(&mut *tx)
        .await
        .map_err(db_err("seed folders"))?;
    for chunk in files.chunks(BATCH as usize) {
        let sql = format!(
            "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
             modified_ms, modified_by) VALUES {}",
            placeholders(chunk.len(), 8)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, f) in chunk.iter().enumerate() {
            let ms = 1_000 + i as i64;
            query = query
                .bind("big")
                .bind(f.as_str())
                .bind(SHA256)
                .bind(6_i64)
                .bind(ms)
                .bind("bench")
                .bind(ms)
                .bind("bench");
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(db_err("seed artifacts"))?;
    }
    tx.commit().await.map_err(db_err("commit"))?;
    if pg {
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .map_err(db_err("analyze"))?;
    }
    pool.close().await;
    println!(
        "  seeded {} artifacts and {} folders in {:.1} s",
        files.len(),
        folders.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Folder info as it was read before folders were entries (before issue 22): every path
/// below the folder, grouped by child. The same statement, on the same rows.
async fn folder_before(pool: &sqlx::AnyPool, pg: bool, folder: &str) -> Result<usize, Error> {
    let sql = if pg {
        "SELECT path, created_ms, modified_ms FROM artifacts \
         WHERE repo_key = $1 AND path >= $2 AND path < $3"
    } else {
        "SELECT path, created_ms, modified_ms FROM artifacts \
         WHERE repo_key = ? AND path >= ? AND path < ?"
    };
    let mut rows = sqlx::query(sql)
        .bind("big")
        .bind(format!("{folder}/"))
        .bind(format!("{folder}0"))
        .fetch(pool);
    let mut children = BTreeMap::new();
    let skip = folder.len() + 1;
    while let Some(row) = rows.next().await {
        let row = row.map_err(db_err("read"))?;
        let path: String = sqlx::Row::try_get(&row, "path").map_err(db_err("path"))?;
        let rest = path.get(skip..).unwrap_or_default();
        let (name, is_folder) = match rest.split_once('/') {
            Some((name, _)) => (name.to_string(), true),
            None => (rest.to_string(), false),
        };
        *children.entry(name).or_insert(false) |= is_folder;
    }
    Ok(children.len())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// p50 and p99 (ms) of `n` sequential GETs of `path`.
async fn latencies(server: &Server, path: &str, n: usize) -> Result<(f64, f64), Error> {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.base);
    let mut taken = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(&url)
            .bearer_auth(&server.token)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("bench-listings: {url}: {e}")))?;
        if !r.status().is_success() {
            return Err(Error::Unavailable(format!(
                "bench-listings: {url} answered {}",
                r.status()
            )));
        }
        r.bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("bench-listings: {url}: {e}")))?;
        taken.push(ms(t.elapsed()));
    }
    Ok((percentile(taken.clone(), 0.5), percentile(taken, 0.99)))
}

/// Stops a server and waits for it to exit (the next one serves the same data directory).
async fn stop(mut server: Server) {
    let _ = server.child.kill().await;
}

fn pid_of(server: &Server) -> Result<u32, Error> {
    server
        .child
        .id()
        .ok_or_else(|| Error::Unavailable("bench-listings: the server has exited".into()))
}

/// A list of `folder` (`deep` or its direct files) by a fresh server: (bytes, seconds,
/// VmHWM KiB before, after).
async fn list(
    data_dir: &Path,
    config: &Path,
    folder: &str,
    deep: bool,
) -> Result<(u64, f64, u64, u64), Error> {
    let server = start_server(data_dir, Some(config)).await?;
    let pid = pid_of(&server)?;
    // One small request first, so the baseline includes a served request's buffers.
    latencies(&server, "/api/storage/big/lib", 3).await?;
    let before = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let url = format!(
        "{}/api/storage/big/{folder}?list&deep={}",
        server.base,
        u8::from(deep)
    );
    let t = Instant::now();
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&server.token)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-listings: {url}: {e}")))?;
    let mut body = r.bytes_stream();
    let mut bytes = 0u64;
    let mut tail = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Unavailable(format!("bench-listings: {e}")))?;
        bytes += chunk.len() as u64;
        tail = chunk.to_vec();
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = rss_kib(pid, "VmHWM:").unwrap_or(0);
    stop(server).await;
    if !tail.ends_with(b"]}") {
        return Err(Error::Unavailable(format!(
            "bench-listings: the list of {folder} ended early"
        )));
    }
    Ok((bytes, seconds, before, after))
}

/// One call that changes a folder, by a fresh server: (seconds, peak RSS growth in KiB).
async fn timed_change(
    data_dir: &Path,
    config: &Path,
    method: reqwest::Method,
    path: &str,
) -> Result<(f64, u64), Error> {
    let server = start_server(data_dir, Some(config)).await?;
    let pid = pid_of(&server)?;
    let hwm_before = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let url = format!("{}{path}", server.base);
    let t = Instant::now();
    let r = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&server.token)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-listings: {url}: {e}")))?;
    let seconds = t.elapsed().as_secs_f64();
    let hwm_after = rss_kib(pid, "VmHWM:").unwrap_or(0);
    stop(server).await;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "bench-listings: {url} answered {}",
            r.status()
        )));
    }
    Ok((seconds, hwm_after.saturating_sub(hwm_before)))
}

async fn engine(name: &str, url: &str, dir: &Path, args: &BenchListingsArgs) -> Result<(), Error> {
    println!("{name}:");
    seed(url, args.per_folder).await?;
    let data_dir = dir.join(format!("listings-{name}"));
    std::fs::create_dir_all(&data_dir).map_err(fail("create data dir"))?;
    let config = data_dir.join("stowage.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n"))
        .map_err(fail("write config"))?;

    // In-process: today's folder read, and the one before.
    let metadata = Metadata::connect(url, &PoolSettings::default()).await?;
    let repo = metadata
        .repository(&RepoKey::parse("big")?)
        .await?
        .ok_or_else(|| Error::Unavailable("bench-listings: no repository".into()))?;
    let lib = ArtifactPath::parse("lib")?;
    let mut now = Vec::new();
    for _ in 0..args.requests {
        let t = Instant::now();
        let listing = metadata.folder(&repo, &lib).await?;
        now.push(ms(t.elapsed()));
        if listing.map(|l| l.children.len()) != Some(10) {
            return Err(Error::Unavailable(
                "bench-listings: lib has not 10 children".into(),
            ));
        }
    }
    metadata.close().await;
    let pool = sqlx::AnyPool::connect(url)
        .await
        .map_err(db_err("connect"))?;
    let mut before = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let children = folder_before(&pool, url.starts_with("postgres"), "lib").await?;
        before.push(ms(t.elapsed()));
        if children != 10 {
            return Err(Error::Unavailable(
                "bench-listings: old read disagrees".into(),
            ));
        }
    }
    pool.close().await;
    println!(
        "  folder info of lib (10 children, {} files below), in-process: p50 {:.3} ms (before issue 22: {:.0} ms, median of 3)",
        args.per_folder * 10,
        median(now),
        median(before)
    );

    // Through the server.
    let server = start_server(&data_dir, Some(&config)).await?;
    let (ping50, ping99) = latencies(&server, "/api/system/ping", args.requests).await?;
    let (p50, p99) = latencies(&server, "/api/storage/big/lib", args.requests).await?;
    stop(server).await;
    println!(
        "  folder info of lib over HTTP: p50 {p50:.2} ms, p99 {p99:.2} ms (ping: p50 {ping50:.2} ms, p99 {ping99:.2} ms) — limit p50 ≤ 5 ms"
    );
    let lists = [
        ("small", true, args.per_folder / 10),
        ("lib/sub0", true, args.per_folder),
        ("lib", true, args.per_folder * 10),
        ("lib/sub0", false, args.per_folder),
    ];
    for (folder, deep, files) in lists {
        let (bytes, seconds, hwm_before, hwm_after) =
            list(&data_dir, &config, folder, deep).await?;
        let how = if deep { "deep ?list" } else { "?list" };
        println!(
            "  {how} of {folder} ({files} files): {seconds:.2} s, {:.1} MB, {:.0} files/s; server peak RSS {:.1} MiB before, {:.1} MiB after (+{:.1} MiB)",
            bytes as f64 / 1e6,
            files as f64 / seconds,
            hwm_before as f64 / 1024.0,
            hwm_after as f64 / 1024.0,
            hwm_after.saturating_sub(hwm_before) as f64 / 1024.0
        );
    }
    // A folder delete (to the trash, by statements over the folder, its files checked a
    // page at a time) and a folder move (a page of files at a time).
    let changes = [
        (
            "delete of lib/sub9",
            reqwest::Method::DELETE,
            "/big/lib/sub9",
        ),
        (
            "move of lib/sub8",
            reqwest::Method::POST,
            "/api/move/big/lib/sub8?to=/big/moved",
        ),
    ];
    for (what, method, path) in changes {
        let (seconds, grown) = timed_change(&data_dir, &config, method, path).await?;
        println!(
            "  {what} ({} files): {seconds:.2} s, {:.0} files/s; server peak RSS +{:.1} MiB",
            args.per_folder,
            args.per_folder as f64 / seconds,
            grown as f64 / 1024.0
        );
    }
    Ok(())
}

pub(crate) async fn run(args: &BenchListingsArgs) -> Result<(), Error> {
    let dir = tempfile::tempdir_in(&args.dir).map_err(fail("create a temporary directory"))?;
    let sqlite = format!("sqlite://{}", dir.path().join("listings.db").display());
    engine("sqlite", &sqlite, dir.path(), args).await?;
    if let Some(admin) = &args.postgres {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(admin)
            .await
            .map_err(db_err("connect to PostgreSQL"))?;
        for sql in [
            "DROP DATABASE IF EXISTS stowage_bench_listings",
            "CREATE DATABASE stowage_bench_listings",
        ] {
            sqlx::query(sql)
                .execute(&pool)
                .await
                .map_err(db_err("create the database"))?;
        }
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').unwrap_or((admin, ""));
        let url = format!("{base}/stowage_bench_listings");
        engine("postgresql", &url, dir.path(), args).await?;
    } else {
        println!("postgresql: skipped (give --postgres or STOWAGE_TEST_POSTGRES_URL)");
    }
    Ok(())
}
