//! `stowage-bench bench-backup`: the rate of `stowage backup` and `stowage restore` (embedded
//! default, a directory target on the same disk) against a plain copy of the same bytes to
//! the same disk in the same run: every binary file copied with the durability a backup and
//! a restore give each one (fsynced, renamed, its directory fsynced), one after another; and of
//! `stowage verify` against `sha256sum` over the same files. Goal: ≥ 0.7 of the peer's rate,
//! in MB/s; artifacts/s are printed beside.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use stowage_core::Error;

use crate::bench::{fail, mb_per_s, median, random_pattern, start_server};
use crate::bench_s3::{make_set, stop};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchBackupArgs {
    /// Large artifacts: count and size.
    #[arg(long, default_value_t = 8)]
    large_count: usize,
    #[arg(long, default_value = "64MiB")]
    large_size: ByteSize,
    /// Small artifacts: count and size.
    #[arg(long, default_value_t = 2000)]
    small_count: usize,
    #[arg(long, default_value = "16KiB")]
    small_size: ByteSize,
    /// Rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory on the disk to measure (a fresh sub-directory is made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The plain peer: each file of `from` copied below `to` as a crash-safe copy must be (and
/// as Stowage's filesystem store writes one): to a temporary name, fsynced, renamed into
/// place, its directory fsynced (and the directory above, for a new directory); one after
/// another.
fn plain_copy(from: &Path, to: &Path) -> Result<(u64, Duration), Error> {
    let started = Instant::now();
    let mut bytes = 0;
    for file in files(from) {
        let rel = file
            .strip_prefix(from)
            .map_err(|_| Error::InvalidInput("bench: path".into()))?;
        let target = to.join(rel);
        let parent = target
            .parent()
            .ok_or_else(|| Error::InvalidInput("bench: path".into()))?;
        let new_dir = !parent.exists();
        std::fs::create_dir_all(parent).map_err(fail("create a copy directory"))?;
        let temp = target.with_extension("part");
        bytes += std::fs::copy(&file, &temp).map_err(fail("copy"))?;
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(fail("fsync a copy"))?;
        std::fs::rename(&temp, &target).map_err(fail("rename a copy"))?;
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(fail("fsync a directory"))?;
        if new_dir && let Some(above) = parent.parent() {
            std::fs::File::open(above)
                .and_then(|d| d.sync_all())
                .map_err(fail("fsync a directory"))?;
        }
    }
    Ok((bytes, started.elapsed()))
}

/// Runs the `stowage` binary beside this one with `args`; its wall time.
async fn stowage(args: &[&str]) -> Result<Duration, Error> {
    let exe = std::env::current_exe().map_err(fail("find stowage-bench"))?;
    let started = Instant::now();
    let out = tokio::process::Command::new(exe.with_file_name("stowage"))
        .args(args)
        .env("STOWAGE_LOG", "error")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(fail("run stowage"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(Error::Unavailable(format!(
            "bench: stowage {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(elapsed)
}

pub(crate) async fn run(args: &BenchBackupArgs) -> Result<(), Error> {
    let root = args
        .dir
        .join(format!("stowage-bench-backup-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(fail("create the bench directory"))?;
    let result = measure(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn measure(args: &BenchBackupArgs, root: &Path) -> Result<(), Error> {
    // The source: the embedded default with the artifacts.
    let source = root.join("source");
    std::fs::create_dir_all(&source).map_err(fail("create the source"))?;
    let server = start_server(&source, None).await?;
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/api/repositories/bench", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench: repository: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "bench: repository: {}",
            r.status()
        )));
    }
    let pattern = random_pattern();
    let mut artifacts = 0usize;
    for (count, size, seed) in [
        (args.large_count, args.large_size.as_u64(), 1),
        (args.small_count, args.small_size.as_u64(), 2),
    ] {
        let set = make_set(&pattern, size, count, seed);
        for (i, body) in set.files.into_iter().enumerate() {
            let r = client
                .put(format!("{}/bench/s{seed}/f{i}.bin", server.base))
                .bearer_auth(&server.token)
                .body(body)
                .send()
                .await
                .map_err(|e| Error::Unavailable(format!("bench: deploy: {e}")))?;
            if r.status() != reqwest::StatusCode::CREATED {
                return Err(Error::Unavailable(format!("bench: deploy: {}", r.status())));
            }
            artifacts += 1;
        }
    }
    stop(server).await;
    let filestore = source.join("filestore");
    let total: u64 = files(&filestore)
        .iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_pre"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "bench-backup: {artifacts} artifacts, {} ({} × {} and {} × {}), {} rounds, in {}",
        ByteSize::b(total),
        args.large_count,
        args.large_size,
        args.small_count,
        args.small_size,
        args.rounds,
        root.display()
    );
    let source_arg = source.display().to_string();
    let (mut plain_b, mut backup, mut plain_r, mut restore) = (vec![], vec![], vec![], vec![]);
    let (mut sums, mut scrubs) = (vec![], vec![]);
    for round in 0..args.rounds {
        let plain_dir = root.join(format!("plain-{round}"));
        let (bytes, t) = plain_copy(&filestore, &plain_dir)?;
        plain_b.push(mb_per_s(bytes, t));
        let _ = std::fs::remove_dir_all(&plain_dir);

        let target = root.join(format!("backup-{round}"));
        let target_arg = target.display().to_string();
        let t = stowage(&["backup", "--data-dir", &source_arg, "--to", &target_arg]).await?;
        backup.push(mb_per_s(total, t));

        let plain_dir = root.join(format!("plain-restore-{round}"));
        let (bytes, t) = plain_copy(&target.join("binaries"), &plain_dir)?;
        plain_r.push(mb_per_s(bytes, t));
        let _ = std::fs::remove_dir_all(&plain_dir);

        // Scrub against sha256sum over the same files (the embedded filestore: one copy each).
        let listed: Vec<PathBuf> = files(&filestore)
            .into_iter()
            .filter(|p| !p.components().any(|c| c.as_os_str() == "_pre"))
            .collect();
        let started = Instant::now();
        let out = tokio::process::Command::new("sha256sum")
            .args(&listed)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(fail("run sha256sum"))?;
        if !out.success() {
            return Err(Error::Unavailable("bench: sha256sum failed".into()));
        }
        sums.push(mb_per_s(total, started.elapsed()));
        let t = stowage(&["verify", "--data-dir", &source_arg]).await?;
        scrubs.push(mb_per_s(total, t));

        let restored = root.join(format!("restored-{round}"));
        let restored_arg = restored.display().to_string();
        let t = stowage(&[
            "restore",
            "--data-dir",
            &restored_arg,
            "--from",
            &target_arg,
        ])
        .await?;
        restore.push(mb_per_s(total, t));
        let _ = std::fs::remove_dir_all(&restored);
        let _ = std::fs::remove_dir_all(&target);
        println!(
            "  round {}: plain copy {:.0} MB/s, backup {:.0} MB/s; plain copy {:.0} MB/s, restore {:.0} MB/s; sha256sum {:.0} MB/s, scrub {:.0} MB/s",
            round + 1,
            plain_b[round],
            backup[round],
            plain_r[round],
            restore[round],
            sums[round],
            scrubs[round]
        );
    }
    let mb = total as f64 / 1e6;
    // Ratios are taken round by round, each against its peer of the same round (the disk's
    // speed drifts between rounds far more than within one), and their median reported.
    let paired =
        |ours: &[f64], peer: &[f64]| median(ours.iter().zip(peer).map(|(o, p)| o / p).collect());
    for (what, ours, plain, peer) in [
        ("backup", &backup, &plain_b, "plain copy"),
        ("restore", &restore, &plain_r, "plain copy"),
        ("scrub", &scrubs, &sums, "sha256sum"),
    ] {
        let rate = median(ours.clone());
        println!(
            "{what}: {rate:.0} MB/s ({:.0} artifacts/s), {peer} {:.0} MB/s: ratio {:.2} (median of the rounds' ratios; goal ≥ 0.7)",
            rate / mb * artifacts as f64,
            median(plain.clone()),
            paired(ours, plain)
        );
    }
    Ok(())
}
