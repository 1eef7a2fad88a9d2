//! `stowage bench-downloads`: proxied download throughput from the read cache (hit), through
//! it from S3 (miss, LocalStack behind it) and from the filesystem provider, against reading
//! the same file from the disk, all with the page cache dropped; the single-flight fan-out (many
//! readers of one uncached binary); and redirect answers per second and their latency against
//! the ping endpoint's; and the redirect and 4 KiB answers with metrics on against a server
//! with them off, in one run. It measures and prints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use stowage_core::Error;

use crate::bench::{
    Server, cpu_time, download, evict, fail, mb_per_s, median, random_pattern, raw_read,
    start_server, upload,
};
use crate::cpu::per_gib;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchDownloadsArgs {
    /// The S3 endpoint (path-style, static keys test/test): `localstack/up` prints it.
    #[arg(
        long,
        env = "STOWAGE_TEST_S3_ENDPOINT",
        default_value = "http://127.0.0.1:4566"
    )]
    endpoint: String,
    /// Size of the file downloaded.
    #[arg(long, default_value = "256MiB")]
    size: ByteSize,
    /// Rounds (a new file each); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Readers of one uncached binary in the single-flight measurement.
    #[arg(long, default_value_t = 64)]
    readers: usize,
    /// Clients in flight for the redirect and ping rates.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds each rate is measured for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Directory for the servers' data (on the disk to measure).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

async fn create_repo(server: &Server, key: &str, body: &str) -> Result<(), Error> {
    let r = reqwest::Client::new()
        .put(format!("{}/api/repositories/{key}", server.base))
        .bearer_auth(&server.token)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-downloads: create repository: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "bench-downloads: create repository answered {}",
            r.status()
        )));
    }
    Ok(())
}

async fn server_with(dir: &Path, name: &str, config: &str) -> Result<Server, Error> {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).map_err(fail("create data dir"))?;
    let path = data_dir.join("stowage.toml");
    std::fs::write(&path, config).map_err(fail("write config"))?;
    let server = start_server(&data_dir, Some(&path)).await?;
    create_repo(&server, "bench", "").await?;
    Ok(server)
}

fn server_pid(server: &Server) -> Result<u32, Error> {
    server
        .child
        .id()
        .ok_or_else(|| Error::Unavailable("bench-downloads: a server exited".into()))
}

/// Where a binary's file is in a filesystem-layout directory.
fn binary_path(root: &Path, sha256: &str) -> PathBuf {
    root.join(&sha256[..2]).join(sha256)
}

/// Requests answered per second by `clients` loops of `path` for `seconds`, expecting
/// `status`; with the p50 and p99 latency in ms.
async fn rate(
    server: &Server,
    path: &str,
    status: u16,
    clients: usize,
    seconds: u64,
) -> Result<(f64, f64, f64), Error> {
    rate_as(server, &server.token, path, status, clients, seconds).await
}

/// [`rate`] with the credentials `token`.
async fn rate_as(
    server: &Server,
    token: &str,
    path: &str,
    status: u16,
    clients: usize,
    seconds: u64,
) -> Result<(f64, f64, f64), Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Unavailable(format!("bench-downloads: client: {e}")))?;
    let url = format!("{}{path}", server.base);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops = (0..clients.max(1)).map(|_| {
        let (client, url, token) = (client.clone(), url.clone(), token.to_string());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(|e| Error::Unavailable(format!("bench-downloads: {url}: {e}")))?;
                if r.status().as_u16() != status {
                    return Err(Error::Unavailable(format!(
                        "bench-downloads: {url} answered {} instead of {status}",
                        r.status()
                    )));
                }
                let _ = r.bytes().await;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, Error>(latencies)
        }
    });
    let mut all: Vec<f64> = Vec::new();
    for l in futures::future::join_all(loops).await {
        all.extend(l?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok((all.len() as f64 / elapsed, pick(0.5), pick(0.99)))
}

pub(crate) async fn run(args: &BenchDownloadsArgs) -> Result<(), Error> {
    let size = args.size.as_u64();
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-downloads-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let bucket = format!("bench-downloads-{:08x}", rand::random::<u32>());
    crate::bench_s3::s3_client(&args.endpoint, &bucket, work.path()).await?;
    let s3_section = format!(
        "[filestore.s3]\nbucketName = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         usePathStyleAccess = true\nidentity = \"test\"\ncredential = \"test\"\n",
        args.endpoint
    );
    let cached_config = format!(
        "[filestore]\ntemplate = \"s3-storage-v3-direct\"\n\n[filestore.cache]\nenabled = true\n\
         skipDuringUpload = true\nmaxCacheSize = \"20GB\"\nmaxFileSizeLimit = \"20GB\"\n\n{s3_section}"
    );
    let cached = server_with(work.path(), "cached", &cached_config).await?;
    create_repo(
        &cached,
        "dist",
        r#"{"downloadRedirect":true,"downloadRedirectMinSize":0}"#,
    )
    .await?;
    let plain = server_with(work.path(), "plain", "").await?;
    let cache_dir = work.path().join("cached").join("cache");
    let filestore = work.path().join("plain").join("filestore");
    println!(
        "bench-downloads: {} per file, {} rounds (medians), page cache dropped before each read; \
         LocalStack at {}",
        args.size.display().iec(),
        args.rounds,
        args.endpoint
    );

    let pattern: Bytes = random_pattern();
    let client = reqwest::Client::new();
    let (mut miss, mut hit, mut fs, mut disk) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // CPU seconds per GiB of each server around each download, and the copy bound (a file
    // read and written to a socket) on the same file.
    let (cached_pid, plain_pid) = (server_pid(&cached)?, server_pid(&plain)?);
    let (mut miss_c, mut hit_c, mut fs_c, mut copy_c) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let cpu = |pid: u32| cpu_time(pid).unwrap_or_default();
    for round in 0..args.rounds {
        // Each round's file differs: the pattern is the same but the size is not.
        let n = size + round as u64;
        let name = format!("round-{round}.bin");
        let (_, sha) = upload(&client, &cached, &name, &pattern, n).await?;
        upload(&client, &plain, &name, &pattern, n).await?;
        let before = cpu(cached_pid);
        let (bytes, took) = download(&cached, &name).await?;
        miss_c.push(per_gib(cpu(cached_pid).saturating_sub(before), bytes));
        miss.push(mb_per_s(bytes, took));
        let cached_file = binary_path(&cache_dir, &sha);
        evict(&cached_file)?;
        let before = cpu(cached_pid);
        let (bytes, took) = download(&cached, &name).await?;
        hit_c.push(per_gib(cpu(cached_pid).saturating_sub(before), bytes));
        hit.push(mb_per_s(bytes, took));
        let fs_file = binary_path(&filestore, &sha);
        evict(&fs_file)?;
        let before = cpu(plain_pid);
        let (bytes, took) = download(&plain, &name).await?;
        fs_c.push(per_gib(cpu(plain_pid).saturating_sub(before), bytes));
        fs.push(mb_per_s(bytes, took));
        evict(&fs_file)?;
        let (c, n) = crate::cpu::file_to_socket(&fs_file).await?;
        copy_c.push(per_gib(c, n));
        evict(&cached_file)?;
        let (bytes, took) = tokio::task::spawn_blocking(move || raw_read(&cached_file, true))
            .await
            .map_err(|e| Error::Unavailable(format!("bench-downloads: {e}")))??;
        disk.push(mb_per_s(bytes, took));
    }
    let (miss, hit, fs, disk) = (median(miss), median(hit), median(fs), median(disk));
    println!("  read from disk (1 MiB reads, read-ahead) {disk:8.0} MB/s");
    println!(
        "  cache hit                                 {hit:8.0} MB/s  ({:.2} of disk; goal ≥ 0.8)",
        hit / disk
    );
    println!("  cache miss (LocalStack → cache → client)  {miss:8.0} MB/s");
    println!(
        "  filesystem provider                       {fs:8.0} MB/s  ({:.2} of disk)",
        fs / disk
    );
    let copy = median(copy_c);
    println!(
        "  CPU per GiB (s; the server's, /proc/PID/stat; copy bound file → socket {copy:.3} in this run):"
    );
    for (what, c) in [
        ("cache hit", median(hit_c)),
        ("filesystem provider", median(fs_c)),
        ("cache miss (S3 → cache → client)", median(miss_c)),
    ] {
        println!(
            "    {what:<34} {c:.3}  ({:.2} of the copy bound; goal ≤ 2)",
            c / copy
        );
    }

    // Single-flight: many readers of one uncached binary.
    let name = "fan-out.bin";
    upload(&client, &cached, name, &pattern, size + 1000).await?;
    let started = Instant::now();
    let readers = (0..args.readers).map(|_| download(&cached, name));
    let mut delivered = 0u64;
    for r in futures::future::join_all(readers).await {
        delivered += r?.0;
    }
    let took = started.elapsed();
    let info: serde_json::Value = client
        .get(format!("{}/api/storageinfo", cached.base))
        .bearer_auth(&cached.token)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-downloads: storageinfo: {e}")))?
        .json()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-downloads: storageinfo: {e}")))?;
    println!(
        "  single-flight: {} readers of one uncached binary: {:.0} MB/s delivered in total \
         ({:.2} s); backend reads so far: {}",
        args.readers,
        mb_per_s(delivered, took),
        took.as_secs_f64(),
        info["cache"]["backendReads"]
    );

    // Redirect answers against ping.
    let r = client
        .put(format!("{}/dist/redirect.bin", cached.base))
        .bearer_auth(&cached.token)
        .body(pattern.slice(..2 << 20))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-downloads: upload: {e}")))?;
    if r.status() != reqwest::StatusCode::CREATED {
        return Err(Error::Unavailable(format!(
            "bench-downloads: upload answered {}",
            r.status()
        )));
    }
    let (ping_rps, ping_p50, ping_p99) =
        rate(&cached, "/api/system/ping", 200, args.clients, args.seconds).await?;
    let (redirect_rps, redirect_p50, redirect_p99) = rate(
        &cached,
        "/dist/redirect.bin",
        302,
        args.clients,
        args.seconds,
    )
    .await?;
    // The same lookup without signing: what the metadata query costs.
    let (info_rps, info_p50, info_p99) = rate(
        &cached,
        "/api/storage/dist/redirect.bin",
        200,
        args.clients,
        args.seconds,
    )
    .await?;
    println!(
        "  ping       {ping_rps:8.0} answers/s  p50 {ping_p50:.2} ms  p99 {ping_p99:.2} ms ({} clients)",
        args.clients
    );
    println!(
        "  redirect   {redirect_rps:8.0} answers/s  p50 {redirect_p50:.2} ms  p99 {redirect_p99:.2} ms  \
         ({:.2} of ping; goal ≥ 0.5)",
        redirect_rps / ping_rps
    );
    println!(
        "  file info  {info_rps:8.0} answers/s  p50 {info_p50:.2} ms  p99 {info_p99:.2} ms  \
         (the same metadata lookup, no signing)"
    );

    // The same answers for a caller whose permissions are evaluated: a token scoped to a
    // group granted read on the two repositories, against the admin token.
    let scoped = scoped_token(&cached).await?;
    let r = client
        .put(format!("{}/bench/small.bin", cached.base))
        .bearer_auth(&cached.token)
        .body(pattern.slice(..4096))
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-downloads: upload: {e}")))?;
    if r.status() != reqwest::StatusCode::CREATED {
        return Err(Error::Unavailable(format!(
            "bench-downloads: upload answered {}",
            r.status()
        )));
    }
    let mut rows = Vec::new();
    for (what, path, status) in [
        ("redirect", "/dist/redirect.bin", 302),
        ("4 KiB GET", "/bench/small.bin", 200),
    ] {
        let (admin, ..) = rate(&cached, path, status, args.clients, args.seconds).await?;
        let (token, ..) =
            rate_as(&cached, &scoped, path, status, args.clients, args.seconds).await?;
        rows.push((what, admin, token));
    }
    for (what, admin, token) in rows {
        println!(
            "  {what:<10} scoped token {token:8.0} answers/s, admin token {admin:8.0} answers/s: \
             {:.2} (goal ≥ 0.9)",
            token / admin
        );
    }
    // The same two answers on a server with metrics off, alternating with the one above.
    let unmetered = server_with(
        work.path(),
        "unmetered",
        &format!("{cached_config}\n[metrics]\nenabled = false\n"),
    )
    .await?;
    create_repo(
        &unmetered,
        "dist",
        r#"{"downloadRedirect":true,"downloadRedirectMinSize":0}"#,
    )
    .await?;
    for (path, body) in [
        ("/dist/redirect.bin", pattern.slice(..2 << 20)),
        ("/bench/small.bin", pattern.slice(..4096)),
    ] {
        let request = client
            .put(format!("{}{path}", unmetered.base))
            .bearer_auth(&unmetered.token)
            .body(body);
        crate::bench::expect_created(request, "bench-downloads: upload").await?;
    }
    for (what, path, status) in [
        ("redirect", "/dist/redirect.bin", 302),
        ("4 KiB GET", "/bench/small.bin", 200),
    ] {
        let (mut on, mut off, mut on_cpu, mut off_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2 {
            for (server, rates, cpus) in [
                (&cached, &mut on, &mut on_cpu),
                (&unmetered, &mut off, &mut off_cpu),
            ] {
                let pid = server.child.id().unwrap_or(0);
                let before = cpu_time(pid).unwrap_or_default();
                let (per_second, ..) =
                    rate(server, path, status, args.clients, args.seconds).await?;
                let used = cpu_time(pid).unwrap_or_default().saturating_sub(before);
                let answers = per_second * args.seconds as f64;
                rates.push(per_second);
                cpus.push(used.as_secs_f64() * 1e6 / answers.max(1.0));
            }
        }
        let (on, off) = (median(on), median(off));
        let (on_cpu, off_cpu) = (median(on_cpu), median(off_cpu));
        println!(
            "  {what:<10} metrics on {on:8.0} answers/s, off {off:8.0} answers/s: {:.2} (goal ≥ 0.95); \
             server CPU per answer {on_cpu:.1} µs on, {off_cpu:.1} µs off ({:.2})",
            on / off,
            off_cpu / on_cpu
        );
    }
    drop(unmetered);
    drop(cached);
    drop(plain);
    Ok(())
}

/// A token of user `ci`, scoped to group `readers`, which a permission target grants read on
/// the repositories `dist` and `bench`.
async fn scoped_token(server: &Server) -> Result<String, Error> {
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        client
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(&server.token)
            .json(&body)
            .send()
    };
    let fail = |what: &str, e: String| Error::Unavailable(format!("bench-downloads: {what}: {e}"));
    for (method, path, body) in [
        (
            reqwest::Method::PUT,
            "/api/security/groups/readers",
            serde_json::json!({}),
        ),
        (
            reqwest::Method::PUT,
            "/api/security/users/ci",
            serde_json::json!({"groups": ["readers"]}),
        ),
        (
            reqwest::Method::PUT,
            "/api/v2/security/permissions/bench-read",
            serde_json::json!({"repo": {"repositories": ["dist", "bench"],
                "actions": {"groups": {"readers": ["read"]}}}}),
        ),
    ] {
        let r = call(method, path, body)
            .await
            .map_err(|e| fail(path, e.to_string()))?;
        if !r.status().is_success() {
            return Err(fail(path, r.status().to_string()));
        }
    }
    let created: serde_json::Value = call(
        reqwest::Method::POST,
        "/access/api/v1/tokens",
        serde_json::json!({"username": "ci", "scope": "applied-permissions/groups:readers"}),
    )
    .await
    .map_err(|e| fail("token", e.to_string()))?
    .json()
    .await
    .map_err(|e| fail("token", e.to_string()))?;
    created["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail("token", created.to_string()))
}
