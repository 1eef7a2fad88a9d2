//! The all-in-one `stowage` binary: `serve` (the HTTP API), `migrate`, `gc`, `balance`,
//! `backup`, `restore` and `healthcheck`. The benchmarks are a binary of their own (`stowage-bench`, functions/bench).
//! It only wires: configuration, clients and pools are built once here and handed to the
//! library crates, which hold all the logic.

mod access;
mod backup;
mod progress;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Stowage: a content-addressed binary store for artifact repositories.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "STOWAGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (with no options: SQLite and a filestore under ./stowage-data on
    /// 127.0.0.1:8081).
    Serve(ConfigArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArgs),
    /// Collect garbage offline (the server must be stopped; while it runs, use
    /// `POST /api/system/storage/gc`).
    Gc(ConfigArgs),
    /// Bring every binary of a sharded filestore back to its redundancy, offline (while the
    /// server runs, use `POST /api/system/storage/optimize`).
    Balance(ConfigArgs),
    /// Back up the metadata, the binaries (only those the target lacks) and the configuration
    /// (secrets left out) to a directory or s3://bucket/prefix, offline (while the server
    /// runs, use `POST /api/system/backup`).
    Backup(backup::BackupArgs),
    /// Restore a backup into this configuration's Stowage, which must be empty (any engine,
    /// any filestore); every binary is checked against its digest.
    Restore(backup::RestoreArgs),
    /// Read every copy of every binary on every shard and check its SHA-256; repair a bad or
    /// missing copy from a good one; exit non-zero, naming the artifacts, when a binary has no
    /// good copy left (offline; the server must be stopped).
    Verify(backup::VerifyArgs),
    /// Promote a passive standby: make its database replica the primary (PostgreSQL), after
    /// which the node starts as active.
    Promote(ConfigArgs),
    /// One replication pass of a passive standby: copy the binaries its filestore lacks from
    /// the active's ([standby] source), offline (a running passive does it on its own).
    Replicate(ConfigArgs),
    /// Exit 0 if the server on STOWAGE_LISTEN (or --listen) is ready (its database, backend,
    /// locks and queue answer): a container health check.
    Healthcheck(ConfigArgs),
    /// Manage users (as the administrator, with the database's credentials).
    #[command(subcommand)]
    User(access::UserCommand),
    /// Create, list and revoke access tokens.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(access::AuditCommand),
}

/// Where the configuration comes from; flags override `STOWAGE_*` variables, which override
/// the file.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "STOWAGE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (database, filestore, admin token).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Database URL (sqlite://FILE).
    #[arg(long)]
    database_url: Option<String>,
}

impl ConfigArgs {
    /// The configuration, with secret references (the database password, the CloudFront
    /// key) resolved.
    pub(crate) async fn load(&self) -> Result<stowage_config::Config, stowage_core::Error> {
        let mut config =
            stowage_config::Config::load(self.config.as_deref(), |k| std::env::var(k).ok())?;
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(u) = &self.database_url {
            config.database.url = Some(u.clone());
        }
        config
            .resolve_secrets(&stowage_config::secrets::Secrets::default())
            .await?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stowage_api::function::init_tracing(matches!(cli.log_format, LogFormat::Json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stowage: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Healthcheck(args) => {
                let listen = args.load().await?.listen.to_string();
                match stowage_api::function::healthcheck(&listen) {
                    ExitCode::SUCCESS => Ok(()),
                    _ => Err(stowage_core::Error::Unavailable(format!(
                        "no healthy stowage on {listen}"
                    ))),
                }
            }
            Command::Serve(args) => serve::serve(&args).await,
            Command::Migrate(args) => serve::migrate(&args).await,
            Command::Gc(args) => serve::gc(&args).await,
            Command::Balance(args) => serve::balance(&args).await,
            Command::Backup(args) => backup::backup(&args).await,
            Command::Restore(args) => backup::restore(&args).await,
            Command::Verify(args) => backup::verify(&args).await,
            Command::Promote(args) => serve::promote(&args).await,
            Command::Replicate(args) => backup::replicate(&args).await,
            Command::User(command) => access::user(command).await,
            Command::Token(command) => access::token(command).await,
            Command::Audit(command) => access::audit(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("stowage: {e}");
            ExitCode::FAILURE
        }
    }
}
