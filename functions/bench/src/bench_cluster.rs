//! `stowage-bench bench-cluster-queue`: the cluster eventual queue's acknowledgement rate with
//! redundancy 2 across two nodes on loopback (each upload fsynced on the receiving node's disk
//! and streamed to its peer's), against redundancy 1 on one node's local disk
//! (`s3-storage-v3`), in the same run. Both sides' object store is a port nothing listens on,
//! so only the queue's work is measured; both keep their metadata in PostgreSQL (each in a
//! database of its own). Also each node's peak RSS per file size, which must stay flat.
//!
//! Next to each side's CPU per GiB, the least that side's work costs on this machine (the
//! digests, and a minimal loop's socket-to-file copy and socket send), so that the ratio of
//! the two sides' CPU can be held against the ratio no implementation can beat: on these two
//! cores the acknowledgement rates follow the CPU.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sqlx::Connection as _;
use stowage_core::Error;

use crate::bench::{
    Server, cpu_time, fail, mb_per_s, median, random_pattern, rss_kib, start_server,
};
use crate::bench_s3::{make_set, parse_sets, stop, upload_round_robin};
use crate::cpu::per_gib;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchClusterArgs {
    /// A PostgreSQL URL whose user may create databases (two are made for the run and
    /// dropped after it).
    #[arg(long)]
    postgres: String,
    /// Sets of files, SIZE×COUNT, comma-separated.
    #[arg(long, default_value = "1MiB×200,64MiB×8")]
    sets: String,
    /// Rounds per set (medians are reported); the sides alternate within a round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Directory for the nodes' data and queue disks.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

const SECRET: &str = "bench-cluster-queue-secret-0123456789";

/// A fresh database on the server of `admin`, as its URL.
pub(crate) async fn create_database(admin: &str, name: &str) -> Result<String, Error> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin)
        .await
        .map_err(|e| Error::Unavailable(format!("bench: connect to {admin}: {e}")))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| Error::Unavailable(format!("bench: create database {name}: {e}")))?;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

pub(crate) async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::AnyConnection::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// A node in `dir/name` on `database` with the filestore `template` over an S3 nobody
/// serves; `token` is the cluster's admin token when another node created it.
async fn start_node(
    dir: &Path,
    name: &str,
    database: &str,
    template: &str,
    token: Option<&str>,
) -> Result<(Server, u32), Error> {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).map_err(fail("create data dir"))?;
    if let Some(token) = token {
        std::fs::write(data_dir.join("admin.token"), token).map_err(fail("write admin.token"))?;
    }
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail("bind"))?;
        listener.local_addr().map_err(fail("bind"))?.port()
    };
    // The cluster side keeps two copies, both fsynced before the answer.
    let copies = if template.starts_with("cluster-") {
        "redundancy = 2\nlenientLimit = 2\n"
    } else {
        ""
    };
    let config = format!(
        "[database]\nurl = \"{database}\"\n\n[filestore]\ntemplate = \"{template}\"\n\n\
         [filestore.s3]\nbucketName = \"nowhere\"\nendpoint = \"http://127.0.0.1:{nowhere}\"\n\
         region = \"us-east-1\"\nusePathStyleAccess = true\nidentity = \"test\"\n\
         credential = \"test\"\ntestConnection = false\n\n\
         [filestore.eventual]\nmaxRetryBackoffSecs = 60\n{copies}\n\
         [cluster]\nheartbeat_secs = 1\nsecret = \"{SECRET}\"\n"
    );
    let path = data_dir.join("stowage.toml");
    std::fs::write(&path, config).map_err(fail("write config"))?;
    let server = start_server(&data_dir, Some(&path)).await?;
    let pid = server
        .child
        .id()
        .ok_or_else(|| Error::Unavailable("bench: a node exited".into()))?;
    Ok((server, pid))
}

/// The least CPU per GiB each side's work costs on this machine, measured in the same run:
/// what a minimal program spends on it.
struct CpuBound {
    /// The three digests, in-process.
    digests: f64,
    /// Bytes read from a loopback socket and written to a file, fsynced.
    receive: f64,
    /// Bytes written to a loopback socket.
    send: f64,
    /// Bytes read from a loopback socket and written to a file around the page cache
    /// (`O_DIRECT`), fsynced: how a peer writes its copy.
    receive_uncached: f64,
}

impl CpuBound {
    /// R=1: the node receives, hashes and writes.
    fn single(&self) -> f64 {
        self.digests + self.receive
    }

    /// R=2: the receiving node does as much and sends a copy; its peer receives it and writes
    /// it around the page cache.
    fn cluster(&self) -> f64 {
        self.single() + self.send + self.receive_uncached
    }
}

/// [`CpuBound`] over `total` bytes of `pattern` (at most 256 MiB), medians of `rounds`.
async fn cpu_bound(
    pattern: &Bytes,
    total: u64,
    dir: &Path,
    rounds: usize,
) -> Result<CpuBound, Error> {
    let size = total.min(256 << 20);
    let (mut digests, mut receive, mut send, mut uncached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        digests.push(per_gib(
            crate::cpu::digest_bound(pattern, size).await?,
            size,
        ));
        let (received, sent) =
            crate::cpu::socket_to_file_both(pattern, size, &dir.join("bound.bin")).await?;
        receive.push(per_gib(received, size));
        send.push(per_gib(sent, size));
        let (received, _) =
            crate::cpu::socket_to_file_with(pattern, size, &dir.join("bound.bin"), true).await?;
        uncached.push(per_gib(received, size));
    }
    Ok(CpuBound {
        digests: median(digests),
        receive: median(receive),
        send: median(send),
        receive_uncached: median(uncached),
    })
}

async fn create_repo(server: &Server) -> Result<(), Error> {
    reqwest::Client::new()
        .put(format!("{}/api/repositories/bench", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Error::Unavailable(format!("bench: create repository: {e}")))?;
    Ok(())
}

fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

pub(crate) async fn run(args: &BenchClusterArgs) -> Result<(), Error> {
    let sets = parse_sets(&args.sets)?;
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-cluster-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let (single_db, cluster_db) = (
        format!("bench_single_{run_id}"),
        format!("bench_cluster_{run_id}"),
    );
    let single_url = create_database(&args.postgres, &single_db).await?;
    let cluster_url = create_database(&args.postgres, &cluster_db).await?;
    let outcome = measure(args, sets, work.path(), &single_url, &cluster_url).await;
    drop_database(&args.postgres, &single_db).await;
    drop_database(&args.postgres, &cluster_db).await;
    outcome
}

async fn measure(
    args: &BenchClusterArgs,
    sets: Vec<(u64, usize)>,
    dir: &Path,
    single_url: &str,
    cluster_url: &str,
) -> Result<(), Error> {
    let (single, single_pid) = start_node(dir, "single", single_url, "s3-storage-v3", None).await?;
    create_repo(&single).await?;
    let (a, a_pid) = start_node(dir, "node-a", cluster_url, "cluster-s3-storage-v3", None).await?;
    let (b, b_pid) = start_node(
        dir,
        "node-b",
        cluster_url,
        "cluster-s3-storage-v3",
        Some(&a.token),
    )
    .await?;
    create_repo(&a).await?;
    // Both nodes see each other (heartbeats of 1 s) before the first upload.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = reqwest::Client::new();
    let pattern = random_pattern();
    println!(
        "# stowage-bench bench-cluster-queue ({}), {} upload(s) in flight, {} rounds",
        dir.display(),
        args.clients.max(1),
        args.rounds
    );
    println!();
    println!(
        "| files | R=1, one node's disk: ack MB/s | R=2 across two nodes: ack MB/s | ratio (goal ≥ 0.7) | CPU s/GiB: R=1 node / R=2 nodes A+B | CPU ratio: Stowage / bound | peak RSS MiB: single / node A / node B |"
    );
    println!("|---|---:|---:|---:|---|---|---|");
    for (n, (size, count)) in sets.into_iter().enumerate() {
        let total = size * count as u64;
        let (mut single_r, mut cluster_r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut rss = [0u64; 3];
        let (mut single_c, mut cluster_c) = (Vec::new(), Vec::new());
        let cpu = |pid| cpu_time(pid).unwrap_or_default();
        for round in 0..args.rounds.max(1) {
            let seed = (n as u64) << 16 | round as u64;
            let one = make_set(&pattern, size, count, seed << 1);
            let two = make_set(&pattern, size, count, seed << 1 | 1);
            for pid in [single_pid, a_pid, b_pid] {
                reset_peak(pid);
            }
            let tag = format!("s{n}r{round}");
            // The sides alternate which goes first, so that neither always meets a busier disk.
            let single_side = async {
                let before = cpu(single_pid);
                let t = upload_round_robin(&client, &[&single], &one, &tag, false, args.clients)
                    .await?;
                Ok::<_, Error>((t, cpu(single_pid).saturating_sub(before)))
            };
            let cluster_side = async {
                let before = cpu(a_pid) + cpu(b_pid);
                let t =
                    upload_round_robin(&client, &[&a, &b], &two, &tag, false, args.clients).await?;
                Ok::<_, Error>((t, (cpu(a_pid) + cpu(b_pid)).saturating_sub(before)))
            };
            let ((t_single, c_single), (t_cluster, c_cluster)) = if round % 2 == 0 {
                let s = single_side.await?;
                (s, cluster_side.await?)
            } else {
                let c = cluster_side.await?;
                (single_side.await?, c)
            };
            single_c.push(per_gib(c_single, total));
            cluster_c.push(per_gib(c_cluster, total));
            for (i, pid) in [single_pid, a_pid, b_pid].into_iter().enumerate() {
                rss[i] = rss[i].max(rss_kib(pid, "VmHWM:").unwrap_or(0));
            }
            let (s, c) = (mb_per_s(total, t_single), mb_per_s(total, t_cluster));
            eprintln!(
                "  {} × {count}, round {round}: R=1 {s:.0} MB/s, R=2 {c:.0} MB/s ({:.2})",
                bytesize::ByteSize(size),
                c / s
            );
            single_r.push(s);
            cluster_r.push(c);
            ratios.push(c / s);
        }
        let bound = cpu_bound(&pattern, total, dir, args.rounds).await?;
        let (single_c, cluster_c) = (median(single_c), median(cluster_c));
        eprintln!(
            "  bound: R=1 {:.2} s/GiB (digests {:.2}, socket to file {:.2}), R=2 {:.2} s/GiB \
             (+ send {:.2}, + socket to file around the page cache {:.2})",
            bound.single(),
            bound.digests,
            bound.receive,
            bound.cluster(),
            bound.send,
            bound.receive_uncached
        );
        println!(
            "| {} × {count} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} / {:.1} / {:.1} |",
            bytesize::ByteSize(size),
            median(single_r),
            median(cluster_r),
            median(ratios),
            single_c,
            cluster_c,
            single_c / cluster_c,
            bound.single() / bound.cluster(),
            rss[0] as f64 / 1024.0,
            rss[1] as f64 / 1024.0,
            rss[2] as f64 / 1024.0,
        );
    }
    for server in [single, a, b] {
        stop(server).await;
    }
    Ok(())
}
