//! `stowage bench-shards`: upload throughput and peak memory of the sharding provider for
//! redundancy 1, 2 and 3 over three directory mounts, on tmpfs (where the software is what is
//! measured) and on the disk (compared with the disk's own rate for R × the bytes: R files
//! written at once and fsynced); then the balancing rate when every one of many small binaries
//! lacks a copy after a mount was down. It runs in this process, at the provider level (no
//! HTTP, no database), so that R is the only thing that changes. It measures and prints; with
//! each case this process's CPU per GiB, next to the digests' CPU and one copy's (R files
//! written from memory at once, fsynced, over R) measured in the same run (issue 25).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use futures::{StreamExt, TryStreamExt};
use stowage_core::fanout::FanOutSettings;
use stowage_core::fs::FileSystemProvider;
use stowage_core::sharding::{MountSettings, Mounts, ShardingProvider, ShardingSettings};
use stowage_core::{BinaryProvider, Error, KeyLayout, PutOptions};

use crate::bench::{cpu_time, fail, mb_per_s, median, random_pattern, rss_kib};
use crate::bench_s3::parse_sets;
use crate::cpu::per_gib;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchShardsArgs {
    /// A directory on the disk to measure (fresh sub-directories are made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// A directory on tmpfs.
    #[arg(long, default_value = "/dev/shm")]
    tmpfs: PathBuf,
    /// File sets as SIZE×COUNT, comma-separated.
    #[arg(long, default_value = "64MiB×16,1GiB×1")]
    sets: String,
    /// Size of the chunks the body arrives in (what an HTTP server hands over).
    #[arg(long, default_value = "64KiB")]
    chunk: ByteSize,
    /// Rounds per case; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Small binaries restored by the balancing measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    balance_binaries: usize,
    /// Size of each of them.
    #[arg(long, default_value = "4KiB")]
    balance_size: ByteSize,
    /// `concurrentStreamBufferKb`.
    #[arg(long, default_value_t = 32)]
    buffer_kb: usize,
}

/// Samples this process's RSS every 5 ms until dropped, keeping the highest: the peak of one
/// case (`VmHWM` only grows over the process's life, and resetting it is not allowed
/// everywhere).
struct PeakRss {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

impl PeakRss {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(std::process::id(), "VmRSS:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        Self {
            stop,
            sampler: Some(sampler),
        }
    }

    /// The highest RSS seen, in MiB.
    fn finish(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let kib = self.sampler.take().and_then(|s| s.join().ok()).unwrap_or(0);
        kib as f64 / 1024.0
    }
}

/// A sharded store over `mounts` directories under `root`, redundancy `r`.
fn sharded(
    root: &Path,
    mounts: usize,
    r: usize,
    buffer_kb: usize,
) -> Result<ShardingProvider, Error> {
    let built: Mounts = (1..=mounts)
        .map(|i| {
            let fs = FileSystemProvider::new(root.join(format!("m{i}")), KeyLayout::default())?;
            let settings = MountSettings {
                check_period: Duration::from_millis(10),
                ..MountSettings::new(format!("m{i}"))
            };
            Ok((settings, Arc::new(fs) as Arc<dyn BinaryProvider>))
        })
        .collect::<Result<_, Error>>()?;
    let settings = ShardingSettings {
        redundancy: r,
        lenient_limit: 1,
        fan_out: FanOutSettings {
            buffer_bytes: buffer_kb << 10,
            wait_timeout: Duration::from_secs(30),
        },
        ..ShardingSettings::default()
    };
    ShardingProvider::new(built, settings)
}

/// A body of `size` bytes in `chunk`-sized slices of the pattern, stamped with `stamp` so no
/// two files are equal.
fn body(pattern: &Bytes, size: u64, chunk: usize, stamp: u64) -> stowage_core::ByteStream {
    let mut first = pattern.slice(..chunk.min(size as usize)).to_vec();
    let n = first.len().min(8);
    first[..n].copy_from_slice(&stamp.to_le_bytes()[..n]);
    let first = Bytes::from(first);
    let pattern = pattern.clone();
    let per_pattern = pattern.len() / chunk;
    let mut left = size;
    let chunks = (0..).map_while(move |i: usize| {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk as u64) as usize;
        left -= n as u64;
        if i == 0 {
            return Some(Ok(first.slice(..n)));
        }
        let start = (i % per_pattern) * chunk;
        Some(Ok(pattern.slice(start..start + n)))
    });
    futures::stream::iter(chunks).boxed()
}

/// R files of `size` written at once and fsynced: the disk's own rate for R × the bytes.
fn raw_parallel_write(
    root: &Path,
    r: usize,
    pattern: &Bytes,
    size: u64,
) -> Result<Duration, Error> {
    use std::io::Write;
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<(), Error> {
        let writers: Vec<_> = (0..r)
            .map(|i| {
                let path = root.join(format!("raw-{i}"));
                scope.spawn(move || -> Result<(), Error> {
                    let mut file = std::fs::File::create(&path).map_err(fail("create"))?;
                    let mut left = size;
                    while left > 0 {
                        let n = left.min(pattern.len() as u64) as usize;
                        file.write_all(&pattern[..n]).map_err(fail("write"))?;
                        left -= n as u64;
                    }
                    file.sync_all().map_err(fail("fsync"))?;
                    std::fs::remove_file(&path).map_err(fail("remove"))
                })
            })
            .collect();
        for w in writers {
            w.join()
                .map_err(|_| Error::Unavailable("bench-shards: a writer panicked".into()))??;
        }
        Ok(())
    })?;
    Ok(start.elapsed())
}

/// Uploads `count` files of `size` through a store with redundancy `r`; returns the time.
async fn upload_set(
    store: &ShardingProvider,
    pattern: &Bytes,
    size: u64,
    count: usize,
    chunk: usize,
    seed: u64,
) -> Result<Duration, Error> {
    let start = Instant::now();
    for i in 0..count {
        let opts = PutOptions {
            size: Some(size),
            ..PutOptions::default()
        };
        store
            .put_opts(body(pattern, size, chunk, seed << 20 | i as u64), opts)
            .await?;
    }
    Ok(start.elapsed())
}

struct Case {
    medium: &'static str,
    set: String,
    r: usize,
    mb_s: f64,
    rss_mib: f64,
    /// This process's CPU per GiB uploaded (medians of the rounds).
    cpu: f64,
    /// The digests' CPU per GiB, and one copy's (a minimal write of R files from memory,
    /// fsynced, over R), measured in the same run.
    digests: f64,
    copy: f64,
}

impl Case {
    /// Issue 25's limit: 1.3 × (digests + one copy), plus one copy per extra replica.
    fn limit(&self) -> f64 {
        1.3 * (self.digests + self.copy) + (self.r - 1) as f64 * self.copy
    }
}

async fn run_medium(
    args: &BenchShardsArgs,
    medium: &'static str,
    root: &Path,
    pattern: &Bytes,
    cases: &mut Vec<Case>,
    baselines: &mut Vec<(String, usize, f64)>,
) -> Result<(), Error> {
    let chunk = usize::try_from(args.chunk.as_u64())
        .unwrap_or(1 << 16)
        .max(1);
    let mut seed = 1u64;
    let me = std::process::id();
    let cpu = || cpu_time(me).unwrap_or_default();
    for (size, count) in parse_sets(&args.sets)? {
        let set = format!("{}×{count}", ByteSize::b(size).display().iec());
        let hashed = size.min(256 << 20);
        let mut digests = Vec::new();
        for _ in 0..args.rounds {
            digests.push(per_gib(
                crate::cpu::digest_bound(pattern, hashed).await?,
                hashed,
            ));
        }
        let digests = median(digests);
        for r in 1..=3 {
            let mut rates = Vec::new();
            let mut cpus = Vec::new();
            let mut peak: f64 = 0.0;
            for _ in 0..args.rounds {
                let dir = root.join(format!("bench-shards-{}", rand::random::<u32>()));
                let store = sharded(&dir, 3, r, args.buffer_kb)?;
                let rss = PeakRss::start();
                seed += 1;
                let before = cpu();
                let took = upload_set(&store, pattern, size, count, chunk, seed).await?;
                cpus.push(per_gib(cpu().saturating_sub(before), size * count as u64));
                peak = peak.max(rss.finish());
                rates.push(mb_per_s(size * count as u64, took));
                std::fs::remove_dir_all(&dir).map_err(fail("remove the mounts"))?;
            }
            let mb_s = median(rates);
            let (mut raw, mut copies) = (Vec::new(), Vec::new());
            for _ in 0..args.rounds {
                let before = cpu();
                let took = raw_parallel_write(root, r, pattern, size)?;
                copies.push(per_gib(cpu().saturating_sub(before), size * r as u64));
                raw.push(mb_per_s(size * r as u64, took));
            }
            let case = Case {
                medium,
                set: set.clone(),
                r,
                mb_s,
                rss_mib: peak,
                cpu: median(cpus),
                digests,
                copy: median(copies),
            };
            println!(
                "  {medium:5} {set:>12}  R={r}  {mb_s:8.0} MB/s  peak RSS {peak:6.1} MiB  CPU \
                 {:.2} s/GiB (digests {:.2}, a copy {:.2}; limit {:.2})",
                case.cpu,
                case.digests,
                case.copy,
                case.limit()
            );
            cases.push(case);
            if medium == "disk" {
                let raw = median(raw);
                println!(
                    "  disk  {set:>12}  {r} files at once, fsynced: {raw:8.0} MB/s (of R × bytes)"
                );
                baselines.push((set.clone(), r, raw));
            }
        }
    }
    Ok(())
}

/// Every binary written while mount 2 of 2 was down (R=2, lenientLimit 1); then it returns
/// and one balancing pass restores the second copies.
async fn balancing(
    args: &BenchShardsArgs,
    medium: &str,
    root: &Path,
    pattern: &Bytes,
) -> Result<(), Error> {
    let n = args.balance_binaries;
    if n == 0 {
        return Ok(());
    }
    let size = args.balance_size.as_u64();
    let dir = root.join(format!("bench-balance-{}", rand::random::<u32>()));
    let store = sharded(&dir, 2, 2, args.buffer_kb)?;
    std::fs::remove_dir_all(dir.join("m2")).map_err(fail("take m2 away"))?;
    let chunk = usize::try_from(size).unwrap_or(4096).max(1);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let store = &store;
            async move {
                store
                    .put_opts(
                        body(pattern, size, chunk, 7 << 40 | i as u64),
                        PutOptions::default(),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let written = started.elapsed();
    std::fs::create_dir(dir.join("m2")).map_err(fail("bring m2 back"))?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = store.balance(None).await?;
    let took = Duration::from_millis(report.elapsed_ms.max(1));
    println!(
        "  {medium:5} balancing {n} × {}: {} copies in {:.2} s = {:.0} binaries/s, {:.1} MB/s \
         (writing them with one mount down took {:.2} s); complete: {}",
        args.balance_size.display().iec(),
        report.copied,
        took.as_secs_f64(),
        report.copied as f64 / took.as_secs_f64(),
        mb_per_s(report.copied_bytes, took),
        written.as_secs_f64(),
        report.complete
    );
    let fs = FileSystemProvider::new(dir.join("m2"), KeyLayout::default())?;
    let restored = fs
        .list()
        .try_fold(0usize, |n, _| async move { Ok(n + 1) })
        .await?;
    if restored != n {
        return Err(Error::Unavailable(format!(
            "bench-shards: balancing restored {restored} of {n} copies"
        )));
    }
    std::fs::remove_dir_all(&dir).map_err(fail("remove the mounts"))
}

pub(crate) async fn run(args: &BenchShardsArgs) -> Result<(), Error> {
    let pattern = random_pattern();
    let disk = args
        .dir
        .join(format!("stowage-bench-shards-{}", rand::random::<u32>()));
    let tmpfs = args
        .tmpfs
        .join(format!("stowage-bench-shards-{}", rand::random::<u32>()));
    for d in [&disk, &tmpfs] {
        std::fs::create_dir_all(d).map_err(fail("create the bench directory"))?;
    }
    println!(
        "bench-shards: 3 directory mounts, redundancy 1–3, sequential uploads in {} chunks, \
         concurrentStreamBufferKb {}, {} rounds (medians)",
        args.chunk.display().iec(),
        args.buffer_kb,
        args.rounds
    );
    let mut cases = Vec::new();
    let mut baselines = Vec::new();
    // What hashing SHA-256, SHA-1 and MD5 of one stream allows on this CPU (MD5 cannot be
    // split): no upload of one stream, whatever R, can be faster.
    let hash_size = 1u64 << 30;
    let hash_ceiling = mb_per_s(
        hash_size,
        crate::bench::pipelined_hash(&pattern, hash_size).await?,
    );
    println!("  hashing one stream (SHA-256, SHA-1, MD5 on their threads): {hash_ceiling:.0} MB/s");
    let result = async {
        run_medium(args, "tmpfs", &tmpfs, &pattern, &mut cases, &mut baselines).await?;
        run_medium(args, "disk", &disk, &pattern, &mut cases, &mut baselines).await?;
        balancing(args, "tmpfs", &tmpfs, &pattern).await?;
        balancing(args, "disk", &disk, &pattern).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&disk);
    let _ = std::fs::remove_dir_all(&tmpfs);
    result?;

    println!(
        "\nratios (goals: tmpfs R=2 ≥ 0.8 × R=1; disk R copies ≥ 0.7 × the disk's rate for R × bytes):"
    );
    for case in cases.iter().filter(|c| c.r > 1) {
        let base = cases
            .iter()
            .find(|c| c.medium == case.medium && c.set == case.set && c.r == 1)
            .map_or(f64::NAN, |c| c.mb_s);
        let vs_r1 = case.mb_s / base;
        let vs_disk = baselines
            .iter()
            .find(|(set, r, _)| case.medium == "disk" && *set == case.set && *r == case.r)
            .map(|(_, r, raw)| case.mb_s * *r as f64 / raw);
        match vs_disk {
            Some(v) => println!(
                "  {:5} {:>12}  R={}: {vs_r1:.2} of R=1; copies at {v:.2} of the disk's rate \
                 ({:.2} of what hashing allows)",
                case.medium,
                case.set,
                case.r,
                case.mb_s / hash_ceiling
            ),
            None => println!(
                "  {:5} {:>12}  R={}: {vs_r1:.2} of R=1",
                case.medium, case.set, case.r
            ),
        }
    }
    let disk_r1: Vec<_> = baselines.iter().filter(|(_, r, _)| *r == 1).collect();
    for (set, _, raw) in disk_r1 {
        if let Some(c) = cases
            .iter()
            .find(|c| c.medium == "disk" && c.set == *set && c.r == 1)
        {
            println!(
                "  disk  {set:>12}  R=1: copies at {:.2} of the disk's rate",
                c.mb_s / raw
            );
        }
    }
    println!(
        "\nCPU per GiB (s; /proc/self/stat; medians): against issue 25's limit, 1.3 × (digests + \
         a copy) + a copy per extra replica, the bounds measured in this run:"
    );
    for c in &cases {
        println!(
            "  {:5} {:>12}  R={}: {:.2} s/GiB, {:.2} of the limit {:.2} (digests {:.2}, a copy {:.2})",
            c.medium,
            c.set,
            c.r,
            c.cpu,
            c.cpu / c.limit(),
            c.limit(),
            c.digests,
            c.copy
        );
    }
    let peaks: Vec<String> = cases
        .iter()
        .map(|c| format!("{} {} R={}: {:.0}", c.medium, c.set, c.r, c.rss_mib))
        .collect();
    println!(
        "peak RSS (MiB), which must not grow with the file size: {}",
        peaks.join("; ")
    );
    Ok(())
}
