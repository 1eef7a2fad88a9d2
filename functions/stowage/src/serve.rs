//! `stowage serve`, `migrate`, `gc` and `balance`: build the clients once, then run.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use stowage_api::http::{AppState, Limits, figures, router};
use stowage_config::Config;
use stowage_config::secrets::Secrets;
use stowage_core::Error;
use stowage_metadata::Metadata;
use stowage_service::auth::{Auth, NewAdminToken};
use stowage_service::{Cluster, Filestore, Stowage};

use crate::ConfigArgs;

/// Name of the lock file that keeps two processes from serving one data directory: they would
/// share its SQLite file (a single-node engine) and its admin token, and clean up each other's
/// staged uploads. Nodes of a cluster each have their own data directory.
const DATA_DIR_LOCK: &str = "stowage.lock";

pub(crate) async fn open_metadata(config: &Config) -> Result<Metadata, Error> {
    let metadata = Metadata::connect(&config.database_url(), &config.pool_settings()).await?;
    metadata.migrate_or_check().await?;
    Ok(metadata)
}

/// Creates the data directory and takes its lock for the life of the returned file.
pub(crate) fn lock_data_dir(config: &Config) -> Result<File, Error> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(DATA_DIR_LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::InvalidInput(format!("cannot open {}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            Error::Unavailable(format!(
                "another stowage process is using {}; stop it first",
                dir.display()
            ))
        },
    )?;
    stowage_core::fs::set_staging_owner(&data_dir_identity(&path)?);
    Ok(file)
}

/// The data directory's identity, kept in its lock file (made on first use): staged files
/// carry it, so that the next run of this node removes what a crashed run left, whatever its
/// age (`stowage_core::fs::set_staging_owner`).
fn data_dir_identity(lock: &std::path::Path) -> Result<String, Error> {
    let unreadable =
        |e: std::io::Error| Error::InvalidInput(format!("cannot use {}: {e}", lock.display()));
    let kept = std::fs::read_to_string(lock).map_err(unreadable)?;
    let kept = kept.trim();
    if !kept.is_empty() {
        return Ok(kept.to_string());
    }
    let identity = format!("{:016x}", rand::random::<u64>());
    std::fs::write(lock, &identity).map_err(unreadable)?;
    Ok(identity)
}

/// Whether this process is its database's only writer: the database is a SQLite file inside
/// the data directory whose lock (taken before) keeps every other stowage process out. Then
/// artifact lookups may be cached in memory (`stowage_metadata::cache`).
fn sole_writer(config: &Config) -> bool {
    let url = config.database_url();
    let Some(file) = url.strip_prefix("sqlite://") else {
        return false;
    };
    let file = file.split('?').next().unwrap_or(file);
    match (
        std::fs::canonicalize(file),
        std::fs::canonicalize(&config.data_dir),
    ) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => false,
    }
}

/// This node's id: configured, or random for this run.
pub(crate) fn node_id(config: &Config) -> String {
    config
        .cluster
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()))
}

pub(crate) async fn build(
    config: &Config,
    node_id: &str,
) -> Result<(Arc<Stowage>, Metadata, Filestore), Error> {
    let metadata = open_metadata(config).await?;
    let filestore = stowage_config::filestore::build(config).await?;
    let stowage = Arc::new(Stowage::new(
        filestore.clone(),
        metadata.clone(),
        &config.service_settings(),
        node_id,
    ));
    Ok((stowage, metadata, filestore))
}

/// `stowage migrate`: applies the migrations and creates the admin token if the database has
/// none yet (printed once), so function binaries, which do neither, can start against it.
/// With `STOWAGE_ADMIN_TOKEN` (the token, or a secret reference) that token is registered
/// instead of a random one.
pub(crate) async fn migrate(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Error::InvalidInput(format!("cannot create {}: {e}", config.data_dir.display()))
    })?;
    let metadata = open_metadata(&config).await?;
    let chosen = match std::env::var("STOWAGE_ADMIN_TOKEN") {
        Ok(reference) => Some(
            Secrets::default()
                .resolve("STOWAGE_ADMIN_TOKEN", &reference)
                .await?,
        ),
        Err(_) => None,
    };
    let created = match &chosen {
        Some(token) => {
            if Auth::register(&metadata, token).await? {
                println!("registered STOWAGE_ADMIN_TOKEN as the admin token");
            }
            None
        }
        None => Auth::init(&metadata, &config.data_dir).await?.1,
    };
    metadata.close().await;
    println!(
        "migrations applied to {}",
        config.database_url_for_display()
    );
    if let Some(new) = created {
        print_new_token(&new);
    }
    Ok(())
}

fn print_new_token(new: &NewAdminToken) {
    println!(
        "Created the admin token (shown once; also written to {}):\n{}",
        new.file.display(),
        new.token
    );
}

pub(crate) async fn gc(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let report = crate::progress::watched("gc", stowage.gc(), || {
        let p = stowage.gc_progress();
        let r = if p.running {
            &p.current
        } else {
            p.last.as_ref().unwrap_or(&p.current)
        };
        format!(
            "{}{} binaries removed, {} orphans removed, {} bytes freed, {} trash entries purged",
            if p.running {
                format!("{}: ", p.phase)
            } else {
                String::new()
            },
            r.binaries_removed,
            r.orphans_removed,
            r.bytes_freed,
            r.trash_purged
        )
    })
    .await?;
    metadata.close().await;
    println!(
        "{}",
        serde_json::to_string_pretty(&figures::gc_report(&report)).unwrap_or_default()
    );
    Ok(())
}

/// `stowage balance`: one balancing pass of the sharded store, offline.
pub(crate) async fn balance(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    let _lock = lock_data_dir(&config)?;
    let (stowage, metadata, _) = build(&config, &node_id(&config)).await?;
    let report = crate::progress::watched("balance", stowage.balance(), || {
        let Some(p) = stowage.balance_progress() else {
            return "not sharded".into();
        };
        match p.current.or(p.last) {
            Some(r) => format!(
                "{} of {} binaries checked, {} copies made ({} bytes), {} removed, {} failed",
                r.checked, r.total, r.copied, r.copied_bytes, r.removed, r.failed
            ),
            None => "listing the mounts".into(),
        }
    })
    .await;
    metadata.close().await;
    let report = report?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "filestore template \"{}\" is not sharded: there is nothing to balance",
            config.filestore.template
        ))
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&figures::balance_report(&report)).unwrap_or_default()
    );
    Ok(())
}

/// A node whose clock is off from the database's by more than this is warned of at start:
/// leases are timed by the database, but session expiry, the trash's retention and the orphan
/// grace by this node's clock, and a standby that takes over keeps its own.
const CLOCK_SKEW_WARNING_MS: i64 = 2_000;

async fn warn_of_clock_skew(metadata: &Metadata) {
    match metadata.clock_skew_ms().await {
        Ok(skew) if skew.abs() > CLOCK_SKEW_WARNING_MS => tracing::warn!(
            skew_ms = skew,
            "this node's clock is {} s {} the database's: keep the clocks in sync (NTP, chrony); \
             upload sessions, the trash's retention and garbage collection's grace are timed by \
             this node's clock",
            skew.abs() / 1000,
            if skew > 0 { "ahead of" } else { "behind" }
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot compare this node's clock with the database's")
        }
    }
}

pub(crate) async fn serve(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    let _lock = lock_data_dir(&config)?;
    let node_id = node_id(&config);
    let (stowage, metadata, filestore) = build(&config, &node_id).await?;
    if sole_writer(&config) {
        metadata.enable_artifact_cache();
    }
    warn_of_clock_skew(&metadata).await;
    let passive = config.standby.role == stowage_config::config::Role::Passive;
    let read_only = metadata.is_read_only().await?;
    if passive != read_only {
        return Err(Error::InvalidInput(if passive {
            "[standby] role = \"passive\" needs the active's database replica, which takes no \
             writes, but this database takes them: point database.url at the replica, or set \
             role = \"active\""
                .into()
        } else {
            "this database is a read-only replica: set [standby] role = \"passive\" (a standby \
             of the active site), or promote the replica first (`stowage promote`)"
                .into()
        }));
    }
    let source = match (&config.standby.source, passive) {
        (Some(spec), true) => Some(stowage_config::backup::standby_source(spec, &config).await?),
        (None, true) => {
            return Err(Error::InvalidInput(
                "[standby] role = \"passive\" needs source: the active's filestore directory \
                 or s3://bucket/path, which the binaries are copied from"
                    .into(),
            ));
        }
        (_, false) => None,
    };
    // Staged uploads of an earlier run of this node, and any older than the grace period,
    // were left by a crash.
    let removed = filestore
        .clean_local_staging(Duration::from_secs(config.gc.orphan_grace_secs))
        .await?;
    if removed > 0 {
        tracing::info!(removed, "removed staged uploads left by an earlier crash");
    }
    // The eventual queue is recovered by its first scan: whatever is queued gets uploaded.
    let dispatcher = filestore.eventual.as_ref().map(|e| e.spawn_dispatcher());
    // A passive's admin token is the active's, replicated with the rest.
    let auth = if passive {
        Auth::load(&metadata).await?
    } else {
        let (auth, created) = Auth::init(&metadata, &config.data_dir).await?;
        if let Some(new) = created {
            print_new_token(&new);
        }
        auth
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::InvalidInput(format!("cannot read the listening address: {e}")))?;
    let address = config
        .cluster
        .address
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let cluster = Arc::new(Cluster::new(
        metadata.clone(),
        &config.cluster_settings(),
        node_id,
        address,
    ));
    // A passive writes nothing: no heartbeat (it is never primary), no scheduled tasks, no
    // statistics; it copies binaries from the active instead.
    let heartbeat = if passive {
        None
    } else {
        cluster.beat().await?;
        Some(cluster.spawn())
    };
    let replication = source.map(|source| {
        let (stowage, every, rate) = (
            Arc::clone(&stowage),
            Duration::from_secs(config.standby.interval_secs.max(1)),
            config.standby.rate.as_u64(),
        );
        tracing::info!("passive standby: binaries are copied from the active's filestore");
        tokio::spawn(async move {
            loop {
                if let Err(e) = stowage.replicate_pass(&*source, Some(rate), None).await {
                    tracing::warn!(error = %e, "a replication pass failed");
                }
                tokio::time::sleep(every).await;
            }
        })
    });
    let active = !passive;
    let scheduled_gc = (active && config.gc.interval_secs > 0).then(|| {
        stowage_service::tasks::spawn_scheduled_gc(
            Arc::clone(&stowage),
            Arc::clone(&cluster),
            Duration::from_secs(config.gc.interval_secs),
        )
    });
    let balancing_interval = config.filestore.sharding.balancing_interval;
    let scheduled_balancing = (active && filestore.sharding.is_some() && balancing_interval > 0)
        .then(|| {
            stowage_service::tasks::spawn_scheduled_balancing(
                Arc::clone(&stowage),
                Arc::clone(&cluster),
                Duration::from_millis(balancing_interval),
            )
        });
    let scheduled_scrub = (active && config.scrub.interval_secs > 0).then(|| {
        stowage_service::tasks::spawn_scheduled_scrub(
            Arc::clone(&stowage),
            Arc::clone(&cluster),
            Duration::from_secs(config.scrub.interval_secs),
            Some(config.scrub.rate.as_u64()),
        )
    });
    stowage.security().admit_admin_token(auth);
    if active {
        stowage.security().append_audit_in_background();
        stowage.write_download_stats_in_background();
    }
    let service = Arc::clone(&stowage);
    let state = AppState {
        stowage,
        cluster: Arc::clone(&cluster),
        base_url: config.base_url.clone(),
        backups: Some(stowage_api::http::BackupSettings {
            config: Arc::new(config.clone()),
            config_text: crate::backup::kept_config(&args.config)?,
            work_dir: config.data_dir.join("backup-work"),
        }),
        context_path: config.server.context_path()?,
        metrics: config
            .metrics
            .enabled
            .then(stowage_api::http::metrics::install)
            .flatten(),
        limits: Limits::default(),
    };
    let scrape = stowage_api::function::spawn_metrics_listener(&state, &config).await?;
    let app = router(state);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), database = %config.database_url_for_display(), "stowage listening");
    println!("stowage listening on http://{addr}");
    let timeouts = stowage_api::function::Timeouts::of(&config);
    stowage_api::function::serve_until_signal(listener, app, timeouts).await?;
    tracing::info!("in-flight requests finished; leaving the cluster");
    for task in [heartbeat, replication].into_iter().flatten() {
        task.abort();
    }
    // Uploads cut short stay queued; the next start sends them.
    stowage_api::function::stop_dispatcher(filestore.eventual.as_ref(), dispatcher, &config).await;
    for task in [scheduled_gc, scheduled_balancing, scheduled_scrub, scrape]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    if active {
        // Entries of the changes just acknowledged go into the trail before the process ends.
        service.security().flush_audit().await;
        if let Err(e) = service.flush_download_stats().await {
            tracing::warn!(error = %e, "the last download statistics were not written");
        }
        cluster.leave().await;
    }
    metadata.close().await;
    Ok(())
}

/// `stowage promote`: makes a passive standby's database the primary (PostgreSQL's
/// `pg_promote`; other engines' replicas by their own tooling), after which the node starts as
/// active.
pub(crate) async fn promote(args: &ConfigArgs) -> Result<(), Error> {
    let config = args.load().await?;
    let metadata = Metadata::connect(&config.database_url(), &config.pool_settings()).await?;
    let promoted = metadata.promote().await;
    metadata.close().await;
    if promoted? {
        println!(
            "the database is promoted and takes writes: start this node with [standby] role = \
             \"active\" (or no [standby] section)"
        );
    } else {
        println!("the database already takes writes: nothing to promote");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &std::path::Path, url: Option<String>) -> Config {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        };
        config.database.url = url;
        config
    }

    #[test]
    fn only_the_sqlite_file_in_the_locked_data_dir_makes_a_sole_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("stowage.db"), b"").expect("db");
        let elsewhere = dir.path().join("elsewhere.db");
        std::fs::write(&elsewhere, b"").expect("db");
        assert!(sole_writer(&config(&data, None)));
        assert!(sole_writer(&config(
            &data,
            Some(format!(
                "sqlite://{}?mode=rwc",
                data.join("stowage.db").display()
            ))
        )));
        assert!(!sole_writer(&config(
            &data,
            Some(format!("sqlite://{}", elsewhere.display()))
        )));
        assert!(!sole_writer(&config(
            &data,
            Some("postgres://stowage@127.0.0.1:5432/stowage".into())
        )));
    }
}
