//! `stowage bench-s3`: upload throughput to an S3 endpoint (LocalStack in development) through
//! `stowage serve` on the direct (`s3-storage-v3-direct`) and eventual (`s3-storage-v3`)
//! templates, against aws-sdk-s3 putting the same files straight to the same endpoint, in one
//! run. The eventual figure is the rate of acknowledgements, compared with an fsync'd local
//! write of the same files. Also the server's peak RSS per file size, which must not grow with
//! it. It measures and prints; it does not judge beyond printing the goals.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use stowage_core::{Error, KeyLayout};
use stowage_s3::{S3Config, S3Provider};

use crate::bench::{
    Server, cpu_time, fail, mb_per_s, median, random_pattern, rss_kib, start_with_config,
};
use crate::cpu::per_gib;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchS3Args {
    /// The S3 endpoint (path-style, static keys test/test): `localstack/up` prints it.
    #[arg(
        long,
        env = "STOWAGE_TEST_S3_ENDPOINT",
        default_value = "http://127.0.0.1:4566"
    )]
    endpoint: String,
    /// File sets as SIZE×COUNT, comma-separated.
    #[arg(long, default_value = "1MiB×200,64MiB×8,512MiB×1")]
    sets: String,
    /// Uploads in flight at once on every side (CI clients upload in parallel); 1 measures
    /// one file at a time.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Rounds per set (new bytes each round); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the servers' data and the local-write baseline.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// One set of files of one size, with their SHA-256s (what a client that declares
/// `X-Checksum-Sha256` sends).
pub(crate) struct FileSet {
    pub(crate) files: Vec<Bytes>,
    sha256: Vec<String>,
}

pub(crate) fn parse_sets(spec: &str) -> Result<Vec<(u64, usize)>, Error> {
    spec.split(',')
        .map(|set| {
            let (size, count) = set.split_once(['×', 'x']).ok_or_else(|| {
                Error::InvalidInput(format!("bench-s3: set {set:?} is not SIZE×COUNT"))
            })?;
            let size: ByteSize = size
                .trim()
                .parse()
                .map_err(|e| Error::InvalidInput(format!("bench-s3: size {size:?}: {e}")))?;
            let count: usize = count
                .trim()
                .parse()
                .map_err(|e| Error::InvalidInput(format!("bench-s3: count {count:?}: {e}")))?;
            Ok((size.as_u64(), count))
        })
        .collect()
}

/// `count` distinct files of `size` bytes: the random pattern repeated, each file stamped
/// with its own number so that nothing is deduplicated.
pub(crate) fn make_set(pattern: &Bytes, size: u64, count: usize, seed: u64) -> FileSet {
    let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
    let files = (0..count)
        .map(|i| {
            let mut buf = Vec::with_capacity(size_usize);
            while buf.len() < size_usize {
                let n = (size_usize - buf.len()).min(pattern.len());
                buf.extend_from_slice(&pattern[..n]);
            }
            let stamp = (seed << 32 | i as u64).to_le_bytes();
            let n = stamp.len().min(buf.len());
            buf[..n].copy_from_slice(&stamp[..n]);
            Bytes::from(buf)
        })
        .collect::<Vec<_>>();
    let sha256 = files
        .iter()
        .map(|f| stowage_core::ChecksumHasher::digest(f).sha256.to_hex())
        .collect();
    FileSet { files, sha256 }
}

pub(crate) async fn s3_client(
    endpoint: &str,
    bucket: &str,
    spool: &Path,
) -> Result<S3Provider, Error> {
    let config = S3Config::local_emulator(endpoint, bucket);
    let s3 = stowage_s3::connect(config, KeyLayout::default(), u64::MAX, spool.into()).await?;
    s3.backend()
        .client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-s3: create bucket {bucket}: {e:?}")))?;
    Ok(s3)
}

/// The plain SDK: one PutObject per file, as a user of aws-sdk-s3 would write it.
async fn sdk_upload(
    s3: &S3Provider,
    set: &FileSet,
    tag: &str,
    clients: usize,
) -> Result<Duration, Error> {
    use futures::{StreamExt, TryStreamExt};
    let start = Instant::now();
    futures::stream::iter(set.files.iter().enumerate())
        .map(|(i, file)| async move {
            s3.backend()
                .client()
                .put_object()
                .bucket(s3.backend().bucket())
                .key(format!("sdk/{tag}/{i}"))
                .body(file.clone().into())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Error::Unavailable(format!("bench-s3: SDK PutObject: {e:?}")))
        })
        .buffer_unordered(clients.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// The plain SDK's multipart upload, as Stowage sends files at or above the threshold: parts
/// of `PART_SIZE`, `PART_CONCURRENCY` at once, each with a SHA-256 checksum.
async fn sdk_multipart_upload(
    s3: &S3Provider,
    set: &FileSet,
    tag: &str,
) -> Result<Duration, Error> {
    use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
    use futures::{StreamExt, TryStreamExt};
    let fail = |e: String| Error::Unavailable(format!("bench-s3: SDK multipart: {e}"));
    let start = Instant::now();
    for (i, file) in set.files.iter().enumerate() {
        let key = format!("sdk-mp/{tag}/{i}");
        let upload_id = s3
            .backend()
            .client()
            .create_multipart_upload()
            .bucket(s3.backend().bucket())
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| fail(format!("{e:?}")))?
            .upload_id()
            .map(str::to_owned)
            .unwrap_or_default();
        let parts: Vec<CompletedPart> = futures::stream::iter(0..file.len().div_ceil(PART_SIZE))
            .map(|n| {
                let (key, upload_id) = (key.as_str(), upload_id.as_str());
                let part = file.slice(n * PART_SIZE..((n + 1) * PART_SIZE).min(file.len()));
                async move {
                    let number = i32::try_from(n + 1).unwrap_or(i32::MAX);
                    let out = s3
                        .backend()
                        .client()
                        .upload_part()
                        .bucket(s3.backend().bucket())
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Sha256)
                        .body(part.into())
                        .send()
                        .await
                        .map_err(|e| fail(format!("{e:?}")))?;
                    Ok::<_, Error>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .set_checksum_sha256(out.checksum_sha256().map(str::to_owned))
                            .build(),
                    )
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        s3.backend()
            .client()
            .complete_multipart_upload()
            .bucket(s3.backend().bucket())
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fail(format!("{e:?}")))?;
    }
    Ok(start.elapsed())
}

/// Stowage's defaults for multipart uploads, which the SDK peer uses too.
const PART_SIZE: usize = 16 << 20;
const PART_CONCURRENCY: usize = 4;
/// Stowage's default `maxFileSizeForDirectUpload`.
const DIRECT_LIMIT: u64 = 250_000_000;

/// Each file written and fsynced to local disk: what the eventual queue's acknowledgement
/// cannot beat.
fn local_write(dir: &Path, files: &[Bytes]) -> Result<Duration, Error> {
    use std::io::Write;
    let start = Instant::now();
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(format!("local-{i}"));
        let mut f = std::fs::File::create(&path).map_err(fail("create"))?;
        f.write_all(file).map_err(fail("write"))?;
        f.sync_all().map_err(fail("fsync"))?;
    }
    let elapsed = start.elapsed();
    for i in 0..files.len() {
        let _ = std::fs::remove_file(dir.join(format!("local-{i}")));
    }
    Ok(elapsed)
}

pub(crate) async fn stowage_upload(
    client: &reqwest::Client,
    server: &Server,
    set: &FileSet,
    tag: &str,
    declare: bool,
    clients: usize,
) -> Result<Duration, Error> {
    upload_round_robin(client, &[server], set, tag, declare, clients).await
}

/// Deploys every file of `set` to the repository `bench`, `clients` at a time, round-robin
/// over `servers` (as a load balancer would); the time until the last 201.
pub(crate) async fn upload_round_robin(
    client: &reqwest::Client,
    servers: &[&Server],
    set: &FileSet,
    tag: &str,
    declare: bool,
    clients: usize,
) -> Result<Duration, Error> {
    use futures::{StreamExt, TryStreamExt};
    let start = Instant::now();
    futures::stream::iter(set.files.iter().enumerate())
        .map(|(i, file)| async move {
            let server = servers[i % servers.len()];
            let mut request = client
                .put(format!("{}/bench/{tag}/{i}.bin", server.base))
                .bearer_auth(&server.token);
            if declare {
                request = request.header("X-Checksum-Sha256", &set.sha256[i]);
            }
            crate::bench::expect_created(request.body(file.clone()), "bench-s3: upload").await?;
            Ok(())
        })
        .buffer_unordered(clients.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// Deletes every object of a bucket, so that the emulator's storage stays small across rounds.
async fn empty_bucket(s3: &S3Provider) -> Result<(), Error> {
    let mut pages = s3
        .backend()
        .client()
        .list_objects_v2()
        .bucket(s3.backend().bucket())
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::Unavailable(format!("bench-s3: list: {e:?}")))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    for key in keys {
        s3.backend()
            .client()
            .delete_object()
            .bucket(s3.backend().bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("bench-s3: delete: {e:?}")))?;
    }
    Ok(())
}

/// Resets a process's peak RSS (VmHWM) so the next reading covers what follows only.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

async fn start(
    dir: &Path,
    name: &str,
    template: &str,
    endpoint: &str,
    bucket: &str,
) -> Result<(Server, u32), Error> {
    let filestore = format!(
        "[filestore]\ntemplate = \"{template}\"\n\n[filestore.s3]\nbucketName = \"{bucket}\"\n\
         endpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nusePathStyleAccess = true\n\
         identity = \"test\"\ncredential = \"test\"\ntestConnection = false\n"
    );
    start_with_config(dir, name, &filestore).await
}

async fn queue_depth(client: &reqwest::Client, server: &Server) -> Result<u64, Error> {
    let info: serde_json::Value = client
        .get(format!("{}/api/storageinfo", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Error::Unavailable(format!("bench-s3: storageinfo: {e}")))?
        .json()
        .await
        .map_err(|e| Error::Unavailable(format!("bench-s3: storageinfo: {e}")))?;
    Ok(info["eventualQueue"]["depth"].as_u64().unwrap_or(0))
}

pub(crate) async fn stop(mut server: Server) {
    if let Some(id) = server.child.id()
        && let Some(pid) = rustix::process::Pid::from_raw(id as i32)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await;
}

pub(crate) async fn run(args: &BenchS3Args) -> Result<(), Error> {
    let sets = parse_sets(&args.sets)?;
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-s3-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let (sdk_bucket, direct_bucket, eventual_bucket) = (
        format!("bench-sdk-{run_id}"),
        format!("bench-direct-{run_id}"),
        format!("bench-eventual-{run_id}"),
    );
    let buckets = [
        s3_client(&args.endpoint, &sdk_bucket, work.path()).await?,
        s3_client(&args.endpoint, &direct_bucket, work.path()).await?,
        s3_client(&args.endpoint, &eventual_bucket, work.path()).await?,
    ];
    let sdk = &buckets[0];
    let (direct, direct_pid) = start(
        work.path(),
        "direct",
        "s3-storage-v3-direct",
        &args.endpoint,
        &direct_bucket,
    )
    .await?;
    let (eventual, eventual_pid) = start(
        work.path(),
        "eventual",
        "s3-storage-v3",
        &args.endpoint,
        &eventual_bucket,
    )
    .await?;
    // The queue alone: its S3 is a port nothing listens on, so no upload competes for the CPU.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail("bind"))?;
        let port = listener.local_addr().map_err(fail("bind"))?.port();
        format!("http://127.0.0.1:{port}")
    };
    let (queue_only, queue_only_pid) = start(
        work.path(),
        "queue-only",
        "s3-storage-v3",
        &unreachable,
        "unreachable",
    )
    .await?;
    let client = reqwest::Client::new();
    let pattern = random_pattern();
    println!(
        "# stowage bench-s3 against {} ({}), {} upload(s) in flight per side",
        args.endpoint,
        work.path().display(),
        args.clients.max(1)
    );
    println!();
    println!(
        "| files | plain SDK PUT MB/s | SDK multipart MB/s | direct MB/s (ratio) | direct, SHA-256 declared MB/s (ratio) | fsync'd local write MB/s | eventual ack MB/s (ratio) | eventual ack, S3 away MB/s (ratio) | direct peak RSS MiB | eventual peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let me = std::process::id();
    let mut cpu_rows = Vec::new();
    for (n, (size, count)) in sets.into_iter().enumerate() {
        let total = size * count as u64;
        let rate = |t: Duration| mb_per_s(total, t);
        let (mut sdk_r, mut direct_r, mut declared_r, mut local_r, mut eventual_r) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut alone_r, mut sdk_mp_r) = (Vec::new(), Vec::new());
        let (mut direct_rss, mut eventual_rss) = (0u64, 0u64);
        // CPU seconds per GiB: the plain SDK's (this process, which does nothing else then),
        // and each server's.
        let (mut sdk_c, mut direct_c, mut declared_c, mut eventual_c) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let cpu = |pid: u32| cpu_time(pid).unwrap_or_default();
        // Rounds interleave every side, so that a disk or a LocalStack that slows down for a
        // while weighs on all of them; each side gets bytes of its own, so nothing deduplicates.
        for round in 0..args.rounds.max(1) {
            let seed = (n * 100 + round * 5) as u64;
            let tag = format!("set{n}-r{round}");
            let set = make_set(&pattern, size, count, seed);
            let before = cpu(me);
            sdk_r.push(rate(sdk_upload(sdk, &set, &tag, args.clients).await?));
            sdk_c.push(per_gib(cpu(me).saturating_sub(before), total));
            if size >= DIRECT_LIMIT {
                sdk_mp_r.push(rate(sdk_multipart_upload(sdk, &set, &tag).await?));
            }
            reset_peak(direct_pid);
            let before = cpu(direct_pid);
            direct_r.push(rate(
                stowage_upload(&client, &direct, &set, &tag, false, args.clients).await?,
            ));
            direct_c.push(per_gib(cpu(direct_pid).saturating_sub(before), total));
            drop(set);
            let declared = make_set(&pattern, size, count, seed + 1);
            let before = cpu(direct_pid);
            declared_r.push(rate(
                stowage_upload(
                    &client,
                    &direct,
                    &declared,
                    &format!("{tag}-d"),
                    true,
                    args.clients,
                )
                .await?,
            ));
            declared_c.push(per_gib(cpu(direct_pid).saturating_sub(before), total));
            direct_rss = direct_rss.max(rss_kib(direct_pid, "VmHWM:").unwrap_or(0));
            drop(declared);
            let queued = make_set(&pattern, size, count, seed + 2);
            let (dir, files) = (work.path().to_owned(), queued.files.clone());
            let t_local = tokio::task::spawn_blocking(move || local_write(&dir, &files))
                .await
                .map_err(|e| Error::Unavailable(format!("bench-s3: {e}")))??;
            local_r.push(rate(t_local));
            reset_peak(eventual_pid);
            let before = cpu(eventual_pid);
            let t_eventual =
                stowage_upload(&client, &eventual, &queued, &tag, false, args.clients).await?;
            eventual_r.push(rate(t_eventual));
            eventual_rss = eventual_rss.max(rss_kib(eventual_pid, "VmHWM:").unwrap_or(0));
            // Let the queue drain before going on, so rounds do not share the disk.
            let drain_start = Instant::now();
            while queue_depth(&client, &eventual).await? > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let drained = drain_start.elapsed() + t_eventual;
            // The queue's whole work: the acknowledged write and the upload behind it.
            eventual_c.push(per_gib(cpu(eventual_pid).saturating_sub(before), total));
            for bucket in &buckets {
                empty_bucket(bucket).await?;
            }
            let alone = make_set(&pattern, size, count, seed + 3);
            alone_r.push(rate(
                stowage_upload(&client, &queue_only, &alone, &tag, false, args.clients).await?,
            ));
            eventual_rss = eventual_rss.max(rss_kib(queue_only_pid, "VmHWM:").unwrap_or(0));
            drop(alone);
            eprintln!(
                "  {} × {count}, round {round}: eventual all in S3 after {:.1} s ({:.0} MB/s end to end)",
                ByteSize::b(size).display().iec(),
                drained.as_secs_f64(),
                rate(drained)
            );
        }
        let (r_sdk, r_local) = (median(sdk_r), median(local_r));
        // Files Stowage sends in parts compare with the SDK sending them in parts.
        let (peer, sdk_mp) = if sdk_mp_r.is_empty() {
            (r_sdk, "—".to_string())
        } else {
            let r = median(sdk_mp_r);
            (r, format!("{r:.0}"))
        };
        let (r_direct, r_declared, r_eventual, r_alone) = (
            median(direct_r),
            median(declared_r),
            median(eventual_r),
            median(alone_r),
        );
        // The bounds on the same bytes, in this run.
        let digest = per_gib(crate::cpu::digest_bound(&pattern, size).await?, size);
        let copy = per_gib(
            crate::cpu::socket_to_file(&pattern, size, &work.path().join("copy.bin")).await?,
            size,
        );
        cpu_rows.push((
            format!("{} × {count}", ByteSize::b(size).display().iec()),
            digest,
            copy,
            median(sdk_c),
            median(direct_c),
            median(declared_c),
            median(eventual_c),
        ));
        println!(
            "| {} × {count} | {r_sdk:.0} | {sdk_mp} | {r_direct:.0} ({:.2}) | {r_declared:.0} ({:.2}) | {r_local:.0} | {r_eventual:.0} ({:.2}) | {r_alone:.0} ({:.2}) | {:.1} | {:.1} |",
            ByteSize::b(size).display().iec(),
            r_direct / peer,
            r_declared / peer,
            r_eventual / r_local,
            r_alone / r_local,
            direct_rss as f64 / 1024.0,
            eventual_rss as f64 / 1024.0,
        );
    }
    println!();
    println!(
        "Ratios: direct and declared against the plain SDK (its multipart upload for files at or \
         above the threshold, which Stowage sends in parts), eventual against the local write. \
         Medians of the rounds. Goals: direct ≥ 0.90 of the plain SDK; eventual acknowledges at ≥ 0.70 of the fsync'd \
         local write; peak RSS bounded and independent of file size. Uploads run --clients at a \
         time on every side (the local write one at a time); files ≥ maxFileSizeForDirectUpload (250 MB) go through \
         the spooled multipart path."
    );
    println!();
    println!(
        "CPU per GiB (s; /proc/PID/stat; medians of the rounds; bounds in this run): the digest \
         bound (three digests, one thread), the copy bound (socket → file + fsync), the plain \
         SDK's PutObject (this process). Ratios: to digest + copy (goal ≤ 1.3; the eventual \
         path, which writes the bytes twice, ≤ 1.3 × (digest + copy) + one copy), and to \
         digest + SDK."
    );
    println!(
        "| files | digest | copy | SDK | direct (÷ d+c; ÷ d+SDK) | declared (÷ d+c; ÷ d+SDK) | eventual, ack + upload (÷ d+2c) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (files, digest, copy, sdk, direct, declared, eventual) in cpu_rows {
        println!(
            "| {files} | {digest:.2} | {copy:.2} | {sdk:.2} | {direct:.2} ({:.2}; {:.2}) | {declared:.2} ({:.2}; {:.2}) | {eventual:.2} ({:.2}) |",
            direct / (digest + copy),
            direct / (digest + sdk),
            declared / (digest + copy),
            declared / (digest + sdk),
            eventual / (digest + 2.0 * copy),
        );
    }
    stop(direct).await;
    stop(eventual).await;
    stop(queue_only).await;
    Ok(())
}
