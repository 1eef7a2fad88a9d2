//! `stowage-bench bench-small`: small deploys per second (issue 25), with `clients` uploads in
//! flight, through `stowage serve` on the embedded default (SQLite, local filestore) and, with
//! `--postgres`, on PostgreSQL; against the peer the issue names, measured in the same run on
//! the same disk: a plain program whose `clients` threads each write a file, fsync it, rename
//! it into place and fsync its directory, as fast as they can. Also the server's CPU per
//! deploy. Every deploy carries distinct bytes, so nothing is deduplicated.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use stowage_core::Error;

use crate::bench::{
    Server, bench_repository, cpu_time, expect_created, fail, median, random_pattern, start_server,
};
use crate::bench_s3::stop;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchSmallArgs {
    /// Artifact sizes, comma-separated.
    #[arg(long, default_value = "1KiB,64KiB,1MiB")]
    sizes: String,
    /// Deploys in flight at once (threads, for the plain program).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Rounds (medians are reported); the sides alternate within a round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A PostgreSQL URL whose user may create databases: also measures a server on it.
    #[arg(long)]
    postgres: Option<String>,
    /// Directory for the servers' data and the plain program's files (on the disk measured).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

fn parse_sizes(spec: &str) -> Result<Vec<u64>, Error> {
    spec.split(',')
        .map(|s| {
            s.trim()
                .parse::<ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| Error::InvalidInput(format!("bench-small: size {s:?}: {e}")))
        })
        .collect()
}

/// `size` bytes of `pattern` starting with `stamp`: distinct for each stamp.
fn stamped(pattern: &Bytes, size: u64, stamp: u64) -> Bytes {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        let n = (size - buf.len()).min(pattern.len());
        buf.extend_from_slice(&pattern[..n]);
    }
    let stamp = stamp.to_le_bytes();
    let n = stamp.len().min(buf.len());
    buf[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(buf)
}

/// The plain peer: `clients` threads, each writing files of `size` for `seconds` (a temporary
/// name, fsynced, renamed, the directory fsynced) in a directory of its own below `dir`;
/// files per second.
fn plain_writes(
    dir: &Path,
    pattern: &Bytes,
    size: u64,
    clients: usize,
    seconds: u64,
) -> Result<f64, Error> {
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), Error> {
        let workers: Vec<_> = (0..clients)
            .map(|t| {
                let (done, dir) = (&done, dir.join(format!("plain-{t}")));
                scope.spawn(move || -> Result<(), Error> {
                    std::fs::create_dir_all(&dir).map_err(fail("create a plain directory"))?;
                    let parent = std::fs::File::open(&dir).map_err(fail("open a directory"))?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let bytes = stamped(pattern, size, (t as u64) << 40 | n);
                        let temp = dir.join(format!("{n}.part"));
                        let mut file =
                            std::fs::File::create(&temp).map_err(fail("create a file"))?;
                        file.write_all(&bytes).map_err(fail("write"))?;
                        file.sync_all().map_err(fail("fsync"))?;
                        std::fs::rename(&temp, dir.join(format!("{n}.bin")))
                            .map_err(fail("rename"))?;
                        parent.sync_all().map_err(fail("fsync a directory"))?;
                        done.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| Error::Unavailable("bench-small: a writer panicked".into()))??;
        }
        Ok(())
    })?;
    // The files stay until the run ends: on ext4 a burst of deleted inodes makes the next
    // creations scan past them (`recently_deleted`), which would tax whichever side runs next.
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// `clients` deploy loops against `server` for `seconds`; deploys per second, and the
/// server's CPU per deploy.
async fn deploys(
    client: &reqwest::Client,
    server: &Server,
    pattern: &Bytes,
    size: u64,
    clients: usize,
    seconds: u64,
    tag: &str,
) -> Result<(f64, Duration), Error> {
    let pid = server
        .child
        .id()
        .ok_or_else(|| Error::Unavailable("bench-small: the server exited".into()))?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let loops = (0..clients).map(|t| {
        let (client, done, pattern) = (client.clone(), Arc::clone(&done), pattern.clone());
        let (base, token) = (server.base.clone(), server.token.clone());
        let tag = tag.to_string();
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let bytes = stamped(&pattern, size, 1 << 63 | (t as u64) << 40 | n);
                let request = client
                    .put(format!("{base}/bench/{tag}/{t}/{n}.bin"))
                    .bearer_auth(&token)
                    .body(bytes);
                expect_created(request, "bench-small: deploy").await?;
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<_, Error>(())
        }
    });
    futures::future::try_join_all(loops).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let count = done.load(Ordering::Relaxed).max(1);
    Ok((
        count as f64 / elapsed,
        cpu / u32::try_from(count).unwrap_or(u32::MAX),
    ))
}

/// A server in `dir/name` (the embedded default, or on `database`) with repository `bench`.
async fn server(dir: &Path, name: &str, database: Option<&str>) -> Result<Server, Error> {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).map_err(fail("create data dir"))?;
    let config = match database {
        Some(url) => {
            let path = data_dir.join("stowage.toml");
            std::fs::write(&path, format!("[database]\nurl = \"{url}\"\n"))
                .map_err(fail("write config"))?;
            Some(path)
        }
        None => None,
    };
    let server = start_server(&data_dir, config.as_deref()).await?;
    bench_repository(&server).await?;
    Ok(server)
}

pub(crate) async fn run(args: &BenchSmallArgs) -> Result<(), Error> {
    let sizes = parse_sizes(&args.sizes)?;
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-small-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let database = match &args.postgres {
        Some(admin) => {
            let name = format!("bench_small_{:08x}", rand::random::<u32>());
            Some((
                admin.clone(),
                name.clone(),
                crate::bench_cluster::create_database(admin, &name).await?,
            ))
        }
        None => None,
    };
    let outcome = measure(
        args,
        &sizes,
        work.path(),
        database.as_ref().map(|d| d.2.as_str()),
    )
    .await;
    if let Some((admin, name, _)) = &database {
        crate::bench_cluster::drop_database(admin, name).await;
    }
    outcome
}

async fn measure(
    args: &BenchSmallArgs,
    sizes: &[u64],
    dir: &Path,
    database: Option<&str>,
) -> Result<(), Error> {
    let embedded = server(dir, "embedded", None).await?;
    let on_postgres = match database {
        Some(url) => Some(server(dir, "postgres", Some(url)).await?),
        None => None,
    };
    let clients = args.clients.max(1);
    println!(
        "# stowage-bench bench-small ({}), {clients} deploys in flight, {} s each, {} rounds",
        dir.display(),
        args.seconds,
        args.rounds
    );
    println!();
    println!(
        "| size | plain write+fsync+rename /s | embedded deploys/s (÷ plain; goal ≥ 0.5) | CPU µs/deploy | PostgreSQL deploys/s (÷ plain) | CPU µs/deploy |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let client = reqwest::Client::new();
    let pattern = random_pattern();
    let plain_dir = dir.join("plain");
    let mut plain_round = 0u32;
    for &size in sizes {
        let (mut plain, mut emb, mut emb_cpu, mut pg, mut pg_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut emb_rate, mut pg_rate) = (Vec::new(), Vec::new());
        for round in 0..args.rounds.max(1) {
            let tag = format!("{size}-{round}");
            plain_round += 1;
            let p = {
                let (dir, pattern) = (plain_dir.join(plain_round.to_string()), pattern.clone());
                let (clients, seconds) = (clients, args.seconds);
                tokio::task::spawn_blocking(move || {
                    plain_writes(&dir, &pattern, size, clients, seconds)
                })
                .await
                .map_err(|e| Error::Unavailable(format!("bench-small: {e}")))??
            };
            let (e, e_cpu) = deploys(
                &client,
                &embedded,
                &pattern,
                size,
                clients,
                args.seconds,
                &tag,
            )
            .await?;
            let pg_round = match &on_postgres {
                Some(s) => {
                    Some(deploys(&client, s, &pattern, size, clients, args.seconds, &tag).await?)
                }
                None => None,
            };
            eprintln!(
                "  {} round {round}: plain {p:.0}/s, embedded {e:.0}/s ({:.2}){}",
                ByteSize::b(size).display().iec(),
                e / p,
                pg_round.map_or(String::new(), |(r, _)| format!(
                    ", PostgreSQL {r:.0}/s ({:.2})",
                    r / p
                ))
            );
            plain.push(p);
            emb_rate.push(e);
            emb.push(e / p);
            emb_cpu.push(e_cpu.as_secs_f64() * 1e6);
            if let Some((r, c)) = pg_round {
                pg_rate.push(r);
                pg.push(r / p);
                pg_cpu.push(c.as_secs_f64() * 1e6);
            }
        }
        let plain = median(plain);
        let pg_cells = if pg.is_empty() {
            "— | —".to_string()
        } else {
            format!(
                "{:.0} ({:.2}) | {:.0}",
                median(pg_rate),
                median(pg),
                median(pg_cpu)
            )
        };
        println!(
            "| {} | {plain:.0} | {:.0} ({:.2}) | {:.0} | {pg_cells} |",
            ByteSize::b(size).display().iec(),
            median(emb_rate),
            median(emb),
            median(emb_cpu),
        );
    }
    stop(embedded).await;
    if let Some(s) = on_postgres {
        stop(s).await;
    }
    Ok(())
}
