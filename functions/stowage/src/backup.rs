//! `stowage backup`, `restore`, `verify` and `replicate`: the service's backup, restore, scrub
//! and standby replication, offline, with a progress bar on a terminal and plain lines
//! otherwise, and the report as JSON on stdout.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use stowage_api::http::figures;
use stowage_config::Config;
use stowage_core::Error;
use stowage_service::security::Caller;
use stowage_service::{BackupOptions, CopyProgress, ProgressCell, Stowage};

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

/// Runs `work` on this configuration's Stowage offline (the data directory's lock held, so no
/// server uses it meanwhile), with a progress bar named `name` fed from the `ProgressCell`
/// `work` is given; prints the report as `json` shapes it, on stdout, and returns it.
async fn offline<T>(
    args: &ConfigArgs,
    name: &str,
    work: impl AsyncFnOnce(Arc<Stowage>, Config, &ProgressCell) -> Result<T, Error>,
    json: fn(&T) -> serde_json::Value,
) -> Result<T, Error> {
    let config = args.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let progress = ProgressCell::default();
    let report = crate::progress::watched_with_bar(name, work(stowage, config, &progress), || {
        status(&progress.get())
    })
    .await;
    metadata.close().await;
    let report = report?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json(&report)).unwrap_or_default()
    );
    Ok(report)
}

/// `stowage backup --to TARGET`: offline (the embedded server must be stopped; while it runs,
/// `POST /api/system/backup`).
pub(crate) async fn backup(args: &BackupArgs) -> Result<(), Error> {
    offline(
        &args.config,
        "backup",
        async |stowage, config, progress| {
            let target = stowage_config::backup::target(&args.to, &config).await?;
            let options = BackupOptions {
                keep: args.keep,
                config_text: kept_config(&args.config.config)?,
                work_dir: work_dir(&config),
            };
            stowage
                .backup(&Caller::admin(), &target, &options, progress)
                .await
        },
        figures::backup_report,
    )
    .await
    .map(|_| ())
}

/// `stowage restore --from TARGET`: into this configuration's Stowage, which must be empty.
pub(crate) async fn restore(args: &RestoreArgs) -> Result<(), Error> {
    offline(
        &args.config,
        "restore",
        async |stowage, config, progress| {
            let source = stowage_config::backup::target(&args.from, &config).await?;
            stowage
                .restore_backup(
                    &Caller::admin(),
                    &source,
                    args.backup.as_deref(),
                    &work_dir(&config),
                    progress,
                )
                .await
        },
        figures::restore_report,
    )
    .await
    .map(|_| ())
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
    let rate = args.rate.map(|r| r.as_u64());
    let report = offline(
        &args.config,
        "verify",
        async |stowage, _, progress| stowage.scrub(&Caller::admin(), rate, progress).await,
        figures::scrub_report,
    )
    .await?;
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
    let report = offline(
        args,
        "replicate",
        async |stowage, config, progress| {
            let Some(spec) = &config.standby.source else {
                return Err(Error::InvalidInput(
                    "replicate needs [standby] source: the active's filestore directory or \
                     s3://bucket/path"
                        .into(),
                ));
            };
            let source = stowage_config::backup::standby_source(spec, &config).await?;
            stowage
                .replicate_pass(&*source, Some(config.standby.rate.as_u64()), Some(progress))
                .await
        },
        figures::standby,
    )
    .await?;
    if report.lag_binaries > 0 {
        return Err(Error::Unavailable(format!(
            "{} binaries could not be copied from the active: {}",
            report.lag_binaries,
            report.last_error.unwrap_or_default()
        )));
    }
    Ok(())
}
