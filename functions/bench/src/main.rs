//! `stowage-bench`: Stowage's benchmarks, in a binary of their own so the production `stowage`
//! binary carries none of them. Each command starts the `stowage` binary that was built beside
//! this one (`cargo build --release -p stowage -p stowage-bench`) and measures it against the
//! raw limits of the same machine, in the same run (see docs/benchmarks.md).

mod bench;
mod bench_backup;
mod bench_cloud;
mod bench_cluster;
mod bench_downloads;
mod bench_listings;
mod bench_s3;
mod bench_shards;
mod bench_small;
mod cpu;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Stowage's benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure upload and download throughput against the disk's and the hashes' raw limits.
    Bench(bench::BenchArgs),
    /// Measure uploads to an S3 endpoint (direct and eventual) against the plain SDK.
    #[command(name = "bench-s3")]
    BenchS3(bench_s3::BenchS3Args),
    /// Measure uploads and downloads through Stowage to GCS and Azure emulators against each
    /// backend's plain client.
    #[command(name = "bench-cloud")]
    BenchCloud(bench_cloud::BenchCloudArgs),
    /// Measure proxied downloads (cache hit, miss, filesystem) against the disk, the
    /// single-flight fan-out, and redirect answers against ping.
    #[command(name = "bench-downloads")]
    BenchDownloads(bench_downloads::BenchDownloadsArgs),
    /// Measure sharded uploads for redundancy 1–3 on tmpfs and disk, and the balancing rate.
    #[command(name = "bench-shards")]
    BenchShards(bench_shards::BenchShardsArgs),
    /// Measure folder info and deep file lists in a repository of a million artifacts, on
    /// SQLite and PostgreSQL, against the folder read before folders were entries.
    #[command(name = "bench-listings")]
    BenchListings(bench_listings::BenchListingsArgs),
    /// Measure `stowage backup` and `stowage restore` against a plain copy of the same bytes
    /// to the same disk.
    #[command(name = "bench-backup")]
    BenchBackup(bench_backup::BenchBackupArgs),
    /// Measure the cluster queue's acknowledgements with redundancy 2 across two nodes
    /// against redundancy 1 on one node's disk, and each node's peak RSS.
    #[command(name = "bench-cluster-queue")]
    BenchClusterQueue(bench_cluster::BenchClusterArgs),
    /// Measure small deploys per second (embedded default, and PostgreSQL with --postgres)
    /// against a plain program that writes, fsyncs and renames the same files.
    #[command(name = "bench-small")]
    BenchSmall(bench_small::BenchSmallArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOWAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args).await,
        Command::BenchS3(args) => bench_s3::run(&args).await,
        Command::BenchCloud(args) => bench_cloud::run(&args).await,
        Command::BenchShards(args) => bench_shards::run(&args).await,
        Command::BenchDownloads(args) => bench_downloads::run(&args).await,
        Command::BenchListings(args) => bench_listings::run(&args).await,
        Command::BenchBackup(args) => bench_backup::run(&args).await,
        Command::BenchClusterQueue(args) => bench_cluster::run(&args).await,
        Command::BenchSmall(args) => bench_small::run(&args).await,
    };
    if let Err(e) = result {
        eprintln!("stowage-bench: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
