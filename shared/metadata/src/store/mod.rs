//! The metadata store, on SQLite (the embedded default), PostgreSQL (Aurora PostgreSQL) or MySQL
//! (Aurora MySQL; MariaDB in tests), chosen by the database URL. One set of queries serves every engine through sqlx's `Any` driver:
//! they are written with `?` placeholders and standard SQL, and [`Metadata::sql`] adapts them to
//! the engine. Every multi-statement change is one transaction. On SQLite, writes go through a
//! pool of one connection, so SQLite never answers "database is locked" to a writer, and reads
//! use a separate pool (WAL mode).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};
use stowage_core::{ArtifactPath, Checksums, Error, ExpectedChecksums, RepoKey, Result, Sha256};

use crate::ImmutablePaths;
use crate::cache::ArtifactCache;
use crate::model::*;
use crate::now_ms;
pub use artifacts::OriginalChecksum;
pub use audit::GENESIS;
pub use export::{ExportSummary, NOT_EXPORTED, exported_columns, for_each_row};
pub use folders::ListKind;
pub use group_commit::GroupCommitStats;

/// Pool settings (`[database]` in the configuration).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per pool. In a cluster, this times the number of nodes must stay below the
    /// database's connection limit (`max_connections` on PostgreSQL).
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing with a retryable error.
    pub acquire_timeout: Duration,
    /// How long an idle connection is kept before it is closed.
    pub idle_timeout: Duration,
    /// How long SQLite waits on a lock held by another process before giving up.
    pub busy_timeout: Duration,
    /// A separate URL for read-only queries (an Aurora reader endpoint); PostgreSQL only.
    pub reader_url: Option<String>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            busy_timeout: Duration::from_secs(10),
            reader_url: None,
        }
    }
}

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    /// MySQL 8 / Aurora MySQL; MariaDB 10.11 stands in for it in tests.
    MySql,
}

impl Engine {
    /// The engine a database URL names.
    pub fn from_url(url: &str) -> Result<Self> {
        match url.split(':').next().unwrap_or_default() {
            "sqlite" => Ok(Engine::Sqlite),
            "postgres" | "postgresql" => Ok(Engine::Postgres),
            "mysql" | "mariadb" => Ok(Engine::MySql),
            other => Err(Error::InvalidInput(format!(
                "database URL scheme {other:?} is not supported; use sqlite://<file>, \
                 postgres://user@host:port/database or mysql://user@host:port/database"
            ))),
        }
    }
}

/// The metadata store.
#[derive(Debug, Clone)]
pub struct Metadata {
    engine: Engine,
    writer: AnyPool,
    reader: AnyPool,
    cache: Arc<ArtifactCache>,
    /// Deploys' commits gathered into shared transactions: SQLite only, whose one writer
    /// would otherwise fsync once per deploy (`group_commit.rs`).
    group: Option<Arc<group_commit::CommitGroup>>,
}

/// A write's access to the writer pool, for every write that can change what
/// [`Metadata::artifact`] answers (repositories, binaries, artifacts, properties, trash).
/// Dropping it — after the write, however it ended — makes the artifact cache's entries stale
/// (see `cache.rs`); so hold it until the write is over, e.g. as `let writes = self.writes();`
/// at the top of the method.
struct Writes<'a>(&'a Metadata);

impl<'a> Writes<'a> {
    fn pool(&self) -> &'a AnyPool {
        &self.0.writer
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// that it waits (busy timeout) for another process's writer instead of failing later when
    /// a read snapshot turns out to be stale.
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        match self.0.engine {
            Engine::Sqlite => self.0.writer.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres | Engine::MySql => self.0.writer.begin().await,
        }
        .map_err(db_err)
    }
}

impl Drop for Writes<'_> {
    fn drop(&mut self) {
        self.0.cache.written();
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// What a write to a read-only database (a standby's replica) is told.
pub const READ_ONLY: &str = "this Stowage's database is a read-only replica: this is a passive \
    standby, and writes go to the active site until `stowage promote` makes this one active";

fn db_err(e: sqlx::Error) -> Error {
    // PostgreSQL: read_only_sql_transaction (a hot standby); MySQL reports --read-only under
    // the general SQLSTATE HY000, so its message tells.
    if let sqlx::Error::Database(d) = &e
        && match d.code().as_deref() {
            Some("25006") => true,
            Some("HY000") => d.message().contains("read-only"),
            _ => false,
        }
    {
        return Error::Unavailable(READ_ONLY.into());
    }
    let retryable = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => {
            matches!(
                d.code().as_deref(),
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY.
                Some("5" | "6" | "261" | "517")
            // PostgreSQL: serialization failure, deadlock, shutdown, cannot connect now.
            | Some("40001" | "40P01" | "57P01" | "57P02" | "57P03")
            ) || d.code().is_some_and(|c| c.starts_with("08"))
        }
        _ => false,
    };
    Error::Metadata {
        source: Box::new(e),
        retryable,
    }
}

/// Whether an error is a transaction conflict (a deadlock or a serialization failure) that the
/// same transaction, run again, will most likely get past.
pub fn is_conflict(e: &Error) -> bool {
    let Error::Metadata { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01"))
}

/// Runs a write transaction again (up to three times, with a short pause) when it lost a
/// conflict to another transaction; InnoDB in particular reports deadlocks between concurrent
/// upserts that touch neighbouring keys.
pub async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) && tries < 3 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "transaction conflict; running it again");
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

/// `?` placeholders → `$1, $2, …` (PostgreSQL). Queries here never hold `?` in literals.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Metadata {
        source: format!("the database holds an invalid {what}: {value:?}").into(),
        retryable: false,
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The standard SQL of this module in MySQL's words: `ON CONFLICT … DO NOTHING` becomes
/// `INSERT IGNORE`, `ON CONFLICT (…) DO UPDATE SET a = excluded.a` becomes
/// `ON DUPLICATE KEY UPDATE a = VALUES(a)`, `CAST(… AS BIGINT)` becomes `AS SIGNED`.
/// (A conditional upsert and `RETURNING` have no such rewrite; their callers handle MySQL.)
fn mysql_dialect(sql: &str) -> String {
    let sql = sql.replace(" AS BIGINT)", " AS SIGNED)");
    let Some(at) = sql.find(" ON CONFLICT") else {
        return sql;
    };
    let (head, tail) = sql.split_at(at);
    if tail.contains("DO NOTHING") {
        return head.replacen("INSERT INTO", "INSERT IGNORE INTO", 1);
    }
    let Some(set) = tail.find("DO UPDATE SET ") else {
        return sql;
    };
    let assignments = &tail[set + "DO UPDATE SET ".len()..];
    let mut out = format!("{head} ON DUPLICATE KEY UPDATE ");
    let mut rest = assignments;
    while let Some(i) = rest.find("excluded.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "excluded.".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(&format!("VALUES({})", &after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The settings an SQLite connection starts with. Only the writer sets the journal mode and
/// durability (a read-only connection changing them could fail with "database is locked");
/// the busy timeout comes first so that nothing after it fails without waiting.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    busy_ms: u128,
    writer: bool,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        let mut pragmas = vec![format!("PRAGMA busy_timeout = {busy_ms}")];
        if writer {
            pragmas.extend([
                "PRAGMA journal_mode = WAL".to_string(),
                "PRAGMA synchronous = FULL".to_string(),
                "PRAGMA foreign_keys = ON".to_string(),
            ]);
        }
        for pragma in pragmas {
            conn.execute(AssertSqlSafe(pragma)).await?;
        }
        Ok(())
    })
}

/// A connection failure, without the URL's password.
fn connect_err(url: &str, e: sqlx::Error) -> Error {
    let shown = match url.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme_user = match scheme_user.rsplit_once(':') {
                Some((before, _password)) if before.contains("//") && !before.ends_with('/') => {
                    format!("{before}:***")
                }
                _ => scheme_user.to_string(),
            };
            format!("{scheme_user}@{host}")
        }
        None => url.to_string(),
    };
    let retryable = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
    Error::Metadata {
        source: format!("cannot connect to {shown}: {e}").into(),
        retryable,
    }
}

/// The end of the range of paths below `folder/`: `/` + 1 is `0` in byte order.
fn below(folder: &str) -> (String, String) {
    (format!("{folder}/"), format!("{folder}0"))
}

fn artifact_from_row(row: &AnyRow) -> Result<ArtifactRecord> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let repo = get_s("repo_key")?;
    let path = get_s("path")?;
    Ok(ArtifactRecord {
        id: get_i("id")?,
        repo: RepoKey::parse(&repo).map_err(|_| corrupt("repository key", &repo))?,
        path: ArtifactPath::parse(&path).map_err(|_| corrupt("path", &path))?,
        checksums: checksums_from_row(row)?,
        size: to_u64(get_i("size")?),
        created_ms: get_i("created_ms")?,
        created_by: get_s("created_by")?,
        modified_ms: get_i("modified_ms")?,
        modified_by: get_s("modified_by")?,
        original: originals_from_row(row)?,
    })
}

/// The checksums a deploy declared, from `original_*` columns (NULL: not declared).
fn originals_from_row(row: &AnyRow) -> Result<ExpectedChecksums> {
    let parse = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
    Ok(ExpectedChecksums {
        sha256: parse("original_sha256")?
            .map(|v| v.parse().map_err(|_| corrupt("SHA-256", &v)))
            .transpose()?,
        sha1: parse("original_sha1")?
            .map(|v| v.parse().map_err(|_| corrupt("SHA-1", &v)))
            .transpose()?,
        md5: parse("original_md5")?
            .map(|v| v.parse().map_err(|_| corrupt("MD5", &v)))
            .transpose()?,
    })
}

fn upload_session_from_row(row: &AnyRow) -> Result<UploadSession> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let (repo, path, sha256) = (get_s("repo")?, get_s("path")?, get_s("sha256")?);
    Ok(UploadSession {
        id: get_s("id")?,
        repo: RepoKey::parse(&repo).map_err(|_| corrupt("repository key", &repo))?,
        path: ArtifactPath::parse(&path).map_err(|_| corrupt("path", &path))?,
        sha256: sha256
            .trim()
            .parse()
            .map_err(|_| corrupt("SHA-256", &sha256))?,
        size: to_u64(get_i("size")?),
        multipart_upload_id: row
            .try_get::<Option<String>, _>("multipart_upload_id")
            .map_err(db_err)?,
        created_by: get_s("created_by")?,
        created_ms: get_i("created_ms")?,
        expires_ms: get_i("expires_ms")?,
    })
}

fn checksums_from_row(row: &AnyRow) -> Result<Checksums> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let (sha256, sha1, md5) = (get_s("sha256")?, get_s("sha1")?, get_s("md5")?);
    Ok(Checksums {
        sha256: sha256.parse().map_err(|_| corrupt("SHA-256", &sha256))?,
        sha1: sha1.parse().map_err(|_| corrupt("SHA-1", &sha1))?,
        md5: md5.parse().map_err(|_| corrupt("MD5", &md5))?,
    })
}

fn binary_from_row(row: &AnyRow) -> Result<BinaryRecord> {
    Ok(BinaryRecord {
        checksums: checksums_from_row(row)?,
        size: to_u64(row.try_get("size").map_err(db_err)?),
        created_ms: row.try_get("created_ms").map_err(db_err)?,
    })
}

fn repository_from_row(row: &AnyRow) -> Result<Repository> {
    let key: String = row.try_get("repo_key").map_err(db_err)?;
    let config: String = row.try_get("config").map_err(db_err)?;
    Ok(Repository {
        key: RepoKey::parse(&key).map_err(|_| corrupt("repository key", &key))?,
        rclass: row.try_get("rclass").map_err(db_err)?,
        package_type: row.try_get("package_type").map_err(db_err)?,
        description: row.try_get("description").map_err(db_err)?,
        config: serde_json::from_str(&config).map_err(|_| corrupt("repository config", &config))?,
        created_ms: row.try_get("created_ms").map_err(db_err)?,
    })
}

/// An artifact query with its binary's checksums; the argument is the rest of the statement.
macro_rules! select_artifacts {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.repo_key, a.path, a.sha256, b.sha1, b.md5, a.size, a.created_ms, ",
            "a.created_by, a.modified_ms, a.modified_by, a.original_sha1, a.original_md5, ",
            "a.original_sha256 ",
            "FROM artifacts a JOIN binaries b ON b.sha256 = a.sha256 ",
            $rest
        )
    };
}

impl Metadata {
    /// Connects to the database at `url` (`sqlite://FILE`, created if missing, or
    /// `postgres://…`).
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = Engine::from_url(url)?;
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .idle_timeout(Some(settings.idle_timeout))
        };
        let (writer, reader) = match engine {
            Engine::Sqlite => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    return Err(Error::InvalidInput(
                        "an in-memory SQLite database cannot be shared by the reader and writer \
                         pools; give a file, e.g. sqlite://stowage-data/stowage.db"
                            .into(),
                    ));
                }
                let sep = if url.contains('?') { '&' } else { '?' };
                let busy_ms = settings.busy_timeout.as_millis();
                let writer = pool(1)
                    .after_connect(move |conn, _| sqlite_pragmas(conn, busy_ms, true))
                    .connect(&format!("{url}{sep}mode=rwc"))
                    .await
                    .map_err(|e| connect_err(url, e))?;
                let reader = pool(settings.max_connections)
                    .after_connect(move |conn, _| sqlite_pragmas(conn, busy_ms, false))
                    .connect(&format!("{url}{sep}mode=ro"))
                    .await
                    .map_err(|e| connect_err(url, e))?;
                (writer, reader)
            }
            Engine::Postgres | Engine::MySql => {
                let writer = pool(settings.max_connections)
                    .connect(url)
                    .await
                    .map_err(|e| connect_err(url, e))?;
                let reader = match &settings.reader_url {
                    Some(reader_url) => pool(settings.max_connections)
                        .connect(reader_url)
                        .await
                        .map_err(|e| connect_err(reader_url, e))?,
                    None => writer.clone(),
                };
                (writer, reader)
            }
        };
        Ok(Self {
            engine,
            writer,
            reader,
            cache: Arc::default(),
            group: (engine == Engine::Sqlite).then(Arc::default),
        })
    }

    /// Serves artifact lookups from memory until a write makes them stale (see `cache.rs`).
    /// Only for the database's **only writer**: `stowage serve` on the SQLite file in the data
    /// directory it holds locked. Another process's writes would not be seen (for up to
    /// [`crate::cache::TTL`]).
    pub fn enable_artifact_cache(&self) {
        self.cache.enable();
    }

    /// Whether [`Self::enable_artifact_cache`] was called on this store or a clone of it.
    pub fn artifact_cache_enabled(&self) -> bool {
        self.cache.is_enabled()
    }

    /// The artifact cache's hits, misses and size; `None` while it is not enabled.
    pub fn artifact_cache_stats(&self) -> Option<crate::cache::ArtifactCacheStats> {
        self.cache.stats()
    }

    fn writes(&self) -> Writes<'_> {
        Writes(self)
    }

    /// A pool whose reads see every committed write: the reader on SQLite (the same file,
    /// read-only), the writer on PostgreSQL and MySQL (whose reader may be a lagging replica).
    fn fresh_reads(&self) -> &AnyPool {
        match self.engine {
            Engine::Sqlite => &self.reader,
            Engine::Postgres | Engine::MySql => &self.writer,
        }
    }

    /// The writer pool for tables no cached lookup depends on: tokens, locks, cluster nodes,
    /// upload sessions, task runs, and the migrations.
    fn writer_uncached(&self) -> &AnyPool {
        &self.writer
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A query adapted to the engine.
    fn sql(&self, sql: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(match self.engine {
            Engine::Sqlite => Cow::Borrowed(sql),
            Engine::Postgres => Cow::Owned(numbered_placeholders(sql)),
            Engine::MySql => Cow::Owned(mysql_dialect(sql)),
        })
    }

    /// The database's clock, in ms since the epoch, as an SQL expression: what leases and
    /// heartbeats are timed by, so that a node whose own clock is skewed cannot misjudge
    /// whether another node's lease has run out.
    fn db_now(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Engine::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Engine::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS BIGINT)",
        }
    }

    /// Whether the database takes no writes: a PostgreSQL hot standby, a read-only MySQL.
    pub async fn is_read_only(&self) -> Result<bool> {
        let sql = match self.engine {
            Engine::Sqlite => return Ok(false),
            Engine::Postgres => "SELECT CAST(pg_is_in_recovery() AS INT) AS ro",
            Engine::MySql => "SELECT CAST(@@global.read_only AS SIGNED) AS ro",
        };
        let ro: i64 = sqlx::query(sql)
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?
            .try_get("ro")
            .map_err(db_err)?;
        Ok(ro != 0)
    }

    /// How far a PostgreSQL standby's replay is behind its primary, in ms (`None`: not a
    /// standby, or nothing replayed yet).
    pub async fn replica_lag_ms(&self) -> Result<Option<i64>> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        sqlx::query(
            "SELECT CAST(EXTRACT(EPOCH FROM (clock_timestamp() - pg_last_xact_replay_timestamp())) \
             * 1000 AS BIGINT) AS lag WHERE pg_is_in_recovery()",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?
        .map(|r| r.try_get::<Option<i64>, _>("lag").map_err(db_err))
        .transpose()
        .map(Option::flatten)
    }

    /// Makes a standby's database the primary (`stowage promote`): PostgreSQL's `pg_promote`,
    /// waiting up to a minute; `Ok(false)` when it was writable already. Other engines'
    /// replicas are promoted by their own tooling (Aurora: a global database failover).
    pub async fn promote(&self) -> Result<bool> {
        if !self.is_read_only().await? {
            return Ok(false);
        }
        match self.engine {
            Engine::Postgres => {
                let done: bool = sqlx::query("SELECT pg_promote(true, 60) AS done")
                    .fetch_one(&self.writer)
                    .await
                    .map_err(db_err)?
                    .try_get("done")
                    .map_err(db_err)?;
                if done {
                    Ok(true)
                } else {
                    Err(Error::Unavailable(
                        "PostgreSQL did not finish its promotion within 60 s; see its log".into(),
                    ))
                }
            }
            Engine::MySql | Engine::Sqlite => Err(Error::Unsupported(
                "this database is a read-only replica that Stowage cannot promote: promote it \
                 with the database's own tooling (an Aurora global database failover, a MySQL \
                 replica's `SET GLOBAL read_only = OFF`), then start Stowage as active"
                    .into(),
            )),
        }
    }

    /// How far this node's clock is ahead of the database's (negative: behind), in ms: the
    /// database's clock is read between two readings of this node's, and compared with their
    /// middle, so the round trip does not count.
    pub async fn clock_skew_ms(&self) -> Result<i64> {
        let before = crate::now_ms();
        let db: i64 = sqlx::query(self.sql_now("SELECT {now} AS now_ms"))
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?
            .try_get("now_ms")
            .map_err(db_err)?;
        let after = crate::now_ms();
        Ok((before + after) / 2 - db)
    }

    /// A query whose `{now}` is the database's clock ([`Self::db_now`]), adapted to the engine.
    fn sql_now(&self, sql: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
        self.sql_built(sql.replace("{now}", self.db_now()))
    }

    /// What makes a read in a write transaction lock its rows (and, on MySQL, read the latest
    /// committed rows): nothing on SQLite, whose writer is alone.
    fn for_update(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres | Engine::MySql => " FOR UPDATE",
        }
    }

    /// [`Self::for_update`]'s shared form: rows others may share-lock too, but not change.
    fn for_share(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR SHARE",
            Engine::MySql => " LOCK IN SHARE MODE",
        }
    }

    /// An artifact's properties as the JSON the trash keeps (`[["name","value"],…]`), as a
    /// subquery on the artifact id `id` (an SQL expression).
    fn properties_json(&self, id: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!(
                "(SELECT json_group_array(json_array(p.name, p.value)) \
                 FROM artifact_properties p WHERE p.artifact_id = {id})"
            ),
            Engine::Postgres => format!(
                "(SELECT COALESCE(json_agg(json_build_array(p.name, p.value))::text, '[]') \
                 FROM artifact_properties p WHERE p.artifact_id = {id})"
            ),
            Engine::MySql => format!(
                "(SELECT COALESCE(JSON_ARRAYAGG(JSON_ARRAY(p.name, p.value)), '[]') \
                 FROM artifact_properties p WHERE p.artifact_id = {id})"
            ),
        }
    }

    /// A query built at run time from fixed fragments and `?` placeholders only (never from
    /// input), adapted to the engine.
    fn sql_built(&self, sql: String) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(match self.engine {
            Engine::Sqlite => Cow::Owned(sql),
            Engine::Postgres => Cow::Owned(numbered_placeholders(&sql)),
            Engine::MySql => Cow::Owned(mysql_dialect(&sql)),
        })
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.engine {
            Engine::Sqlite => &SQLITE_MIGRATOR,
            Engine::Postgres => &POSTGRES_MIGRATOR,
            Engine::MySql => &MYSQL_MIGRATOR,
        };
        migrator
            .run(self.writer_uncached())
            .await
            .map_err(|e| Error::Metadata {
                source: Box::new(e),
                retryable: false,
            })
    }

    /// On a writable database, [`Metadata::migrate`]; on a read-only replica (a passive
    /// standby's), which takes no migrations, a check that its schema is this Stowage's.
    pub async fn migrate_or_check(&self) -> Result<()> {
        if !self.is_read_only().await? {
            return self.migrate().await;
        }
        let migrator = match self.engine {
            Engine::Sqlite => &SQLITE_MIGRATOR,
            Engine::Postgres => &POSTGRES_MIGRATOR,
            Engine::MySql => &MYSQL_MIGRATOR,
        };
        let wanted = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let have = self.schema_version().await?;
        if have == wanted {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the database is a read-only replica at schema {have}, and this Stowage needs \
                 {wanted}: upgrade the active site first (its migrations replicate here), or run \
                 the Stowage version that matches"
            )))
        }
    }

    /// Applies pending migrations up to `version` only (an upgrade in steps; the upgrade
    /// tests start from an older schema this way).
    pub async fn migrate_to(&self, version: i64) -> Result<()> {
        let migrator = match self.engine {
            Engine::Sqlite => &SQLITE_MIGRATOR,
            Engine::Postgres => &POSTGRES_MIGRATOR,
            Engine::MySql => &MYSQL_MIGRATOR,
        };
        migrator
            .run_to(version, self.writer_uncached())
            .await
            .map_err(|e| Error::Metadata {
                source: Box::new(e),
                retryable: false,
            })
    }

    /// Closes both pools, waiting for queries in flight.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

mod artifacts;
mod audit;
mod binaries;
mod cluster;
mod export;
mod folders;
mod group_commit;
mod queue;
mod relocate;
mod repositories;
mod security;
mod summaries;
mod trash;
