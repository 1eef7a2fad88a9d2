//! `stowage backup`, `stowage restore` and `stowage verify`: the service's backup, restore and
//! scrub, with a progress bar on a terminal and plain lines otherwise, and the report as JSON
//! on stdout.

use std::path::PathBuf;

use clap::Args;
use stowage_core::Error;
use stowage_service::security::Caller;
use stowage_service::{BackupOptions, CopyProgress, ProgressCell};

use crate::ConfigArgs;
use crate::serve::{build, lock_data_dir, node_id};

#[derive(Debug, Clone, Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to: a directory, or s3://bucket/prefix.
    #[arg(long)]
    to: String,
    /// Complete backups to keep there (the newest); older ones, and the binaries only they
    /// named, are removed.
    #[arg(long, default_value_t = 7)]
    keep: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where from: a directory, or s3://bucket/prefix.
    #[arg(long)]
    from: String,
    /// Which backup (its id); default: the newest complete one.
    #[arg(long)]
    backup: Option<String>,
}

fn status(p: &CopyProgress) -> (String, Option<(u64, u64)>) {
    let text = format!(
        "{}: {} of {} binaries, {} of {} bytes",
        if p.phase.is_empty() {
            "starting"
        } else {
            p.phase
        },
        p.binaries_done,
        p.binaries_total,
        p.bytes_done,
        p.bytes_total
    );
    (
        text,
        (p.bytes_total > 0).then_some((p.bytes_done, p.bytes_total)),
    )
}

/// The configuration file's text, secrets left out, for a backup to keep.
pub(crate) fn kept_config(path: &Option<PathBuf>) -> Result<Option<String>, Error> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
    stowage_config::backup::without_secrets(&text).map(Some)
}

fn work_dir(config: &stowage_config::Config) -> PathBuf {
    config.data_dir.join("backup-work")
}

/// `stowage backup --to TARGET`: offline (the embedded server must be stopped; while it runs,
/// `POST /api/system/backup`).
pub(crate) async fn backup(args: &BackupArgs) -> Result<(), Error> {
    let config = args.config.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let target = stowage_config::backup::target(&args.to, &config).await?;
    let config_text = kept_config(&args.config.config)?;
    let options = BackupOptions {
        keep: args.keep,
        config_text,
        work_dir: work_dir(&config),
    };
    let progress = ProgressCell::default();
    let report = crate::progress::watched_with_bar(
        "backup",
        stowage.backup(&Caller::admin(), &target, &options, &progress),
        || status(&progress.get()),
    )
    .await;
    metadata.close().await;
    let report = report?;
    println!(
        "{}",
        serde_json::to_string_pretty(&stowage_api::http::figures::backup_report(&report))
            .unwrap_or_default()
    );
    Ok(())
}

/// `stowage restore --from TARGET`: into this configuration's Stowage, which must be empty.
pub(crate) async fn restore(args: &RestoreArgs) -> Result<(), Error> {
    let config = args.config.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let source = stowage_config::backup::target(&args.from, &config).await?;
    let progress = ProgressCell::default();
    let report = crate::progress::watched_with_bar(
        "restore",
        stowage.restore_backup(
            &Caller::admin(),
            &source,
            args.backup.as_deref(),
            &work_dir(&config),
            &progress,
        ),
        || status(&progress.get()),
    )
    .await;
    metadata.close().await;
    let report = report?;
    println!(
        "{}",
        serde_json::to_string_pretty(&stowage_api::http::figures::restore_report(&report))
            .unwrap_or_default()
    );
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Read at most this many bytes a second (e.g. 100MB); default: as fast as the stores go.
    #[arg(long)]
    rate: Option<bytesize::ByteSize>,
}

/// `stowage verify`: reads every copy of every binary, repairs what a good copy can repair,
/// and exits non-zero when a binary has no good copy left (the report names its artifacts).
pub(crate) async fn verify(args: &VerifyArgs) -> Result<(), Error> {
    let config = args.config.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let progress = ProgressCell::default();
    let report = crate::progress::watched_with_bar(
        "verify",
        stowage.scrub(&Caller::admin(), args.rate.map(|r| r.as_u64()), &progress),
        || status(&progress.get()),
    )
    .await;
    metadata.close().await;
    let report = report?;
    println!(
        "{}",
        serde_json::to_string_pretty(&stowage_api::http::figures::scrub_report(&report))
            .unwrap_or_default()
    );
    if report.unrepaired.is_empty() {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "{} binaries have no good copy left: {}",
            report.unrepaired.len(),
            report
                .unrepaired
                .iter()
                .map(|u| format!(
                    "{} ({}; held by {})",
                    u.digest,
                    u.reason,
                    u.artifacts.join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}

/// `stowage replicate`: one replication pass of a passive standby, offline (its server
/// stopped; a running passive replicates on its own every `[standby] interval_secs`).
pub(crate) async fn replicate(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    let _lock = lock_data_dir(&config)?;
    let Some(spec) = &config.standby.source else {
        return Err(Error::InvalidInput(
            "replicate needs [standby] source: the active's filestore directory or \
             s3://bucket/path"
                .into(),
        ));
    };
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let source = stowage_config::backup::standby_source(spec, &config).await?;
    let progress = ProgressCell::default();
    let report = crate::progress::watched_with_bar(
        "replicate",
        stowage.replicate_pass(
            &*source,
            Some(config.standby.rate.as_u64()),
            Some(&progress),
        ),
        || status(&progress.get()),
    )
    .await;
    metadata.close().await;
    let report = report?;
    println!(
        "{}",
        serde_json::to_string_pretty(&stowage_api::http::figures::standby(&report))
            .unwrap_or_default()
    );
    if report.lag_binaries > 0 {
        return Err(Error::Unavailable(format!(
            "{} binaries could not be copied from the active: {}",
            report.lag_binaries,
            report.last_error.unwrap_or_default()
        )));
    }
    Ok(())
}
