//! The metadata store, on SQLite (the embedded default), PostgreSQL (Aurora PostgreSQL) or MySQL
//! (Aurora MySQL; MariaDB in tests), chosen by the database URL. One set of queries serves every engine through sqlx's `Any` driver:
//! they are written with `?` placeholders and standard SQL, and [`Metadata::sql`] adapts them to
//! the engine. Every multi-statement change is one transaction. On SQLite, writes go through a
//! pool of one connection, so SQLite never answers "database is locked" to a writer, and reads
//! use a separate pool (WAL mode).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};
use stowage_core::{ArtifactPath, Checksums, Error, RepoKey, Result, Sha256};

use crate::cache::ArtifactCache;
use crate::model::*;
use crate::now_ms;

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

fn db_err(e: sqlx::Error) -> Error {
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
            "a.created_by, a.modified_ms, a.modified_by ",
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

    /// Closes both pools, waiting for queries in flight.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    // ---- repositories ------------------------------------------------------------------

    /// Creates or updates a repository; returns whether it was created.
    pub async fn put_repository(&self, repo: &Repository) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let existed = sqlx::query(self.sql("SELECT 1 FROM repositories WHERE repo_key = ?"))
            .bind(repo.key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        sqlx::query(self.sql("INSERT INTO repositories (repo_key, rclass, package_type, description, config, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (repo_key) DO UPDATE SET rclass = excluded.rclass, \
             package_type = excluded.package_type, description = excluded.description, \
             config = excluded.config",))
        .bind(repo.key.as_str())
        .bind(&repo.rclass)
        .bind(&repo.package_type)
        .bind(&repo.description)
        .bind(repo.config.to_string())
        .bind(repo.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(!existed)
    }

    /// Every repository, by key.
    pub async fn repositories(&self) -> Result<Vec<Repository>> {
        sqlx::query(self.sql("SELECT * FROM repositories ORDER BY repo_key"))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(repository_from_row)
            .collect()
    }

    /// One repository.
    pub async fn repository(&self, key: &RepoKey) -> Result<Option<Repository>> {
        sqlx::query(self.sql("SELECT * FROM repositories WHERE repo_key = ?"))
            .bind(key.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(repository_from_row)
            .transpose()
    }

    /// Deletes a repository with its artifacts and trash (their binaries become garbage).
    /// Returns whether it existed.
    pub async fn delete_repository(&self, key: &RepoKey) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        for sql in [
            "DELETE FROM artifact_properties WHERE artifact_id IN \
             (SELECT id FROM artifacts WHERE repo_key = ?)",
            "DELETE FROM artifacts WHERE repo_key = ?",
            "DELETE FROM trash WHERE repo_key = ?",
        ] {
            sqlx::query(self.sql(sql))
                .bind(key.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let deleted = sqlx::query(self.sql("DELETE FROM repositories WHERE repo_key = ?"))
            .bind(key.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(deleted > 0)
    }

    // ---- binaries ----------------------------------------------------------------------

    /// A binary by any of its checksums (the oldest, if an MD5 or SHA-1 is shared).
    pub async fn find_binary(&self, lookup: ChecksumLookup) -> Result<Option<BinaryRecord>> {
        let (sql, value) = match lookup {
            ChecksumLookup::Sha256(d) => ("SELECT * FROM binaries WHERE sha256 = ?", d.to_hex()),
            ChecksumLookup::Sha1(d) => (
                "SELECT * FROM binaries WHERE sha1 = ? ORDER BY created_ms LIMIT 1",
                d.to_hex(),
            ),
            ChecksumLookup::Md5(d) => (
                "SELECT * FROM binaries WHERE md5 = ? ORDER BY created_ms LIMIT 1",
                d.to_hex(),
            ),
        };
        sqlx::query(self.sql(sql))
            .bind(value)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(binary_from_row)
            .transpose()
    }

    /// Binaries that no artifact and no trash entry refers to, oldest first.
    pub async fn unreferenced_binaries(&self, limit: u32) -> Result<Vec<BinaryRecord>> {
        sqlx::query(self.sql(
            "SELECT * FROM binaries b \
             WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = b.sha256) \
             AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.sha256 = b.sha256) \
             ORDER BY created_ms LIMIT ?",
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .iter()
        .map(binary_from_row)
        .collect()
    }

    /// Deletes a binary's row if nothing refers to it; returns whether it did. The caller
    /// deletes the bytes afterwards, under the binary's lock.
    pub async fn delete_binary_if_unreferenced(&self, sha256: &Sha256) -> Result<bool> {
        let deleted = sqlx::query(self.sql(
            "DELETE FROM binaries WHERE sha256 = ? \
             AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = binaries.sha256) \
             AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.sha256 = binaries.sha256)",
        ))
        .bind(sha256.to_hex())
        .execute(self.writes().pool())
        .await
        .map_err(db_err)?
        .rows_affected();
        Ok(deleted > 0)
    }

    // ---- artifacts ---------------------------------------------------------------------

    /// Records an artifact whose binary is stored: the binary row if new, the artifact (created
    /// or overwritten), its properties. Fails with `RepositoryNotFound` for a missing repository and with
    /// `Conflict` when a file and a folder would share a path.
    pub async fn commit_artifact(&self, new: &NewArtifact) -> Result<ArtifactRecord> {
        let now = now_ms();
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        self.check_repository(&mut tx, &new.repo).await?;
        self.check_file_path(&mut tx, &new.repo, &new.path).await?;
        sqlx::query(self.sql(
            "INSERT INTO binaries (sha256, sha1, md5, size, created_ms) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (sha256) DO NOTHING",
        ))
        .bind(new.checksums.sha256.to_hex())
        .bind(new.checksums.sha1.to_hex())
        .bind(new.checksums.md5.to_hex())
        .bind(to_i64(new.size))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(self.sql(
            "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
             modified_ms, modified_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
             size = excluded.size, modified_ms = excluded.modified_ms, \
             modified_by = excluded.modified_by",
        ))
        .bind(new.repo.as_str())
        .bind(new.path.as_str())
        .bind(new.checksums.sha256.to_hex())
        .bind(to_i64(new.size))
        .bind(now)
        .bind(&new.by)
        .bind(now)
        .bind(&new.by)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let id = self.artifact_id(&mut tx, &new.repo, &new.path).await?;
        sqlx::query(self.sql("DELETE FROM artifact_properties WHERE artifact_id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        self.insert_properties(&mut tx, id, &new.properties).await?;
        let record = sqlx::query(self.sql(select_artifacts!("WHERE a.id = ?")))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let record = artifact_from_row(&record)?;
        tx.commit().await.map_err(db_err)?;
        Ok(record)
    }

    async fn insert_properties(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: i64,
        properties: &[(String, String)],
    ) -> Result<()> {
        for (name, value) in properties {
            sqlx::query(self.sql(
                "INSERT INTO artifact_properties (artifact_id, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            ))
            .bind(id)
            .bind(name)
            .bind(value)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }

    async fn check_repository(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
    ) -> Result<()> {
        let exists = sqlx::query(self.sql("SELECT 1 FROM repositories WHERE repo_key = ?"))
            .bind(repo.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(Error::RepositoryNotFound {
                key: repo.to_string(),
            })
        }
    }

    /// A file may not sit below another file, nor where a folder is.
    async fn check_file_path(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<()> {
        if path.is_root() {
            return Err(Error::InvalidInput(
                "a file path is required after the repository key".into(),
            ));
        }
        for ancestor in path.ancestors() {
            let file =
                sqlx::query(self.sql("SELECT 1 FROM artifacts WHERE repo_key = ? AND path = ?"))
                    .bind(repo.as_str())
                    .bind(ancestor)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_err)?;
            if file.is_some() {
                return Err(Error::Conflict(format!(
                    "cannot deploy {repo}/{path}: {repo}/{ancestor} is a file, not a folder"
                )));
            }
        }
        let (lo, hi) = below(path.as_str());
        let folder =
            sqlx::query(self.sql(
                "SELECT 1 FROM artifacts WHERE repo_key = ? AND path >= ? AND path < ? LIMIT 1",
            ))
            .bind(repo.as_str())
            .bind(lo)
            .bind(hi)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
        if folder.is_some() {
            return Err(Error::Conflict(format!(
                "cannot deploy {repo}/{path}: it is a folder; delete the folder first"
            )));
        }
        Ok(())
    }

    /// One artifact.
    pub async fn artifact(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Option<ArtifactRecord>> {
        if let Some(cached) = self.cache.get(repo.as_str(), path.as_str()) {
            return Ok(cached);
        }
        let generation = self.cache.generation();
        let record =
            sqlx::query(self.sql(select_artifacts!("WHERE a.repo_key = ? AND a.path = ?")))
                .bind(repo.as_str())
                .bind(path.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(artifact_from_row)
                .transpose()?;
        self.cache
            .put(repo.as_str(), path.as_str(), generation, record.clone());
        Ok(record)
    }

    /// An artifact's properties, sorted.
    pub async fn properties(&self, artifact_id: i64) -> Result<Vec<(String, String)>> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        self.read_properties(&mut conn, artifact_id).await
    }

    /// An artifact's properties, sorted, on a given connection (a pool's or a transaction's).
    async fn read_properties(
        &self,
        conn: &mut sqlx::AnyConnection,
        artifact_id: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(self.sql(
            "SELECT name, value FROM artifact_properties WHERE artifact_id = ? ORDER BY name, value",
        ))
        .bind(artifact_id)
        .fetch_all(conn)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name").map_err(db_err)?,
                    r.try_get("value").map_err(db_err)?,
                ))
            })
            .collect()
    }

    /// A folder's direct children, or `None` if nothing lies below `path` (the root of an
    /// existing repository is always a folder).
    pub async fn folder(
        &self,
        repo: &Repository,
        path: &ArtifactPath,
    ) -> Result<Option<FolderListing>> {
        let rows = if path.is_root() {
            sqlx::query(
                self.sql("SELECT path, created_ms, modified_ms FROM artifacts WHERE repo_key = ?"),
            )
            .bind(repo.key.as_str())
            .fetch_all(&self.reader)
            .await
        } else {
            let (lo, hi) = below(path.as_str());
            sqlx::query(self.sql(
                "SELECT path, created_ms, modified_ms FROM artifacts \
                 WHERE repo_key = ? AND path >= ? AND path < ?",
            ))
            .bind(repo.key.as_str())
            .bind(lo)
            .bind(hi)
            .fetch_all(&self.reader)
            .await
        }
        .map_err(db_err)?;
        if rows.is_empty() && !path.is_root() {
            return Ok(None);
        }
        let skip = if path.is_root() {
            0
        } else {
            path.as_str().len() + 1
        };
        let mut children = BTreeMap::new();
        let (mut created, mut modified) = (i64::MAX, i64::MIN);
        for row in &rows {
            let full: String = row.try_get("path").map_err(db_err)?;
            created = created.min(row.try_get("created_ms").map_err(db_err)?);
            modified = modified.max(row.try_get("modified_ms").map_err(db_err)?);
            let rest = full.get(skip..).unwrap_or_default();
            let (name, folder) = match rest.split_once('/') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            };
            *children.entry(name.to_string()).or_insert(false) |= folder;
        }
        if rows.is_empty() {
            (created, modified) = (repo.created_ms, repo.created_ms);
        }
        Ok(Some(FolderListing {
            created_ms: created,
            modified_ms: modified,
            children: children
                .into_iter()
                .map(|(name, folder)| FolderChild { name, folder })
                .collect(),
        }))
    }

    /// Artifacts whose binary has the given checksum.
    pub async fn search_checksum(&self, lookup: ChecksumLookup) -> Result<Vec<ArtifactRecord>> {
        let (sql, value) = match lookup {
            ChecksumLookup::Sha256(d) => (
                select_artifacts!("WHERE b.sha256 = ? ORDER BY a.repo_key, a.path"),
                d.to_hex(),
            ),
            ChecksumLookup::Sha1(d) => (
                select_artifacts!("WHERE b.sha1 = ? ORDER BY a.repo_key, a.path"),
                d.to_hex(),
            ),
            ChecksumLookup::Md5(d) => (
                select_artifacts!("WHERE b.md5 = ? ORDER BY a.repo_key, a.path"),
                d.to_hex(),
            ),
        };
        sqlx::query(self.sql(sql))
            .bind(value)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(artifact_from_row)
            .collect()
    }

    /// The id of the artifact at `repo/path`, inside a transaction that just wrote it.
    async fn artifact_id(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<i64> {
        sqlx::query_scalar(self.sql("SELECT id FROM artifacts WHERE repo_key = ? AND path = ?"))
            .bind(repo.as_str())
            .bind(path.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)
    }

    /// The artifact rows at `path` (a file) or below it (a folder; everything for the root).
    async fn rows_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Vec<AnyRow>> {
        let (lo, hi) = below(path.as_str());
        sqlx::query(self.sql(
            "SELECT * FROM artifacts WHERE repo_key = ? \
             AND (path = ? OR (path >= ? AND path < ?) OR ? = '') ORDER BY path",
        ))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)
    }

    /// Moves or copies a file, or every file below a folder, to `dst` (metadata only: the
    /// binaries are shared, never touched). A file already at a target is overwritten; a file
    /// and a folder may not swap places. With `dry`, nothing changes. Returns how many files.
    #[allow(clippy::too_many_arguments)]
    pub async fn relocate(
        &self,
        src_repo: &RepoKey,
        src: &ArtifactPath,
        dst_repo: &RepoKey,
        dst: &ArtifactPath,
        by: &str,
        copy: bool,
        dry: bool,
    ) -> Result<u64> {
        let within = |inner: &ArtifactPath, outer: &ArtifactPath| {
            outer.is_root() || inner == outer || inner.as_str().starts_with(&format!("{outer}/"))
        };
        if src_repo == dst_repo && within(dst, src) {
            return Err(Error::InvalidInput(format!(
                "cannot {} {src_repo}/{src} onto or into itself",
                if copy { "copy" } else { "move" }
            )));
        }
        let now = now_ms();
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        self.check_repository(&mut tx, src_repo).await?;
        self.check_repository(&mut tx, dst_repo).await?;
        let rows = self.rows_at(&mut tx, src_repo, src).await?;
        if rows.is_empty() {
            return Err(Error::NotFound {
                what: format!("{src_repo}/{src}"),
            });
        }
        for row in &rows {
            let old: String = row.try_get("path").map_err(db_err)?;
            let rest = old
                .get(src.as_str().len()..)
                .unwrap_or_default()
                .trim_start_matches('/');
            let target = match (dst.is_root(), rest.is_empty()) {
                (_, true) if dst.is_root() => ArtifactPath::parse(src.name())?,
                (_, true) => dst.clone(),
                (true, false) => ArtifactPath::parse(rest)?,
                (false, false) => ArtifactPath::parse(&format!("{dst}/{rest}"))?,
            };
            self.check_file_path(&mut tx, dst_repo, &target).await?;
            let id: i64 = row.try_get("id").map_err(db_err)?;
            let (created_ms, created_by) = if copy {
                (now, by.to_string())
            } else {
                (
                    row.try_get::<i64, _>("created_ms").map_err(db_err)?,
                    row.try_get::<String, _>("created_by").map_err(db_err)?,
                )
            };
            sqlx::query(self.sql(
                "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
                 modified_ms, modified_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
                 size = excluded.size, modified_ms = excluded.modified_ms, \
                 modified_by = excluded.modified_by",
            ))
            .bind(dst_repo.as_str())
            .bind(target.as_str())
            .bind(row.try_get::<String, _>("sha256").map_err(db_err)?)
            .bind(row.try_get::<i64, _>("size").map_err(db_err)?)
            .bind(created_ms)
            .bind(created_by)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let new_id = self.artifact_id(&mut tx, dst_repo, &target).await?;
            sqlx::query(self.sql("DELETE FROM artifact_properties WHERE artifact_id = ?"))
                .bind(new_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query(self.sql(
                "INSERT INTO artifact_properties (artifact_id, name, value) \
                 SELECT ?, name, value FROM artifact_properties WHERE artifact_id = ?",
            ))
            .bind(new_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if !copy {
                for sql in [
                    "DELETE FROM artifact_properties WHERE artifact_id = ?",
                    "DELETE FROM artifacts WHERE id = ?",
                ] {
                    sqlx::query(self.sql(sql))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
            }
        }
        if dry {
            tx.rollback().await.map_err(db_err)?;
        } else {
            tx.commit().await.map_err(db_err)?;
        }
        Ok(rows.len() as u64)
    }

    /// Sets properties (each name's values replace the ones it had) on a file or on every file
    /// below a folder; returns how many files.
    pub async fn set_properties(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        properties: &[(String, Vec<String>)],
    ) -> Result<u64> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let rows = self.rows_at(&mut tx, repo, path).await?;
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(db_err)?;
            for (name, values) in properties {
                sqlx::query(
                    self.sql("DELETE FROM artifact_properties WHERE artifact_id = ? AND name = ?"),
                )
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                let pairs: Vec<(String, String)> =
                    values.iter().map(|v| (name.clone(), v.clone())).collect();
                self.insert_properties(&mut tx, id, &pairs).await?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rows.len() as u64)
    }

    /// Removes the named properties from a file or every file below a folder.
    pub async fn delete_properties(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        names: &[String],
    ) -> Result<u64> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let rows = self.rows_at(&mut tx, repo, path).await?;
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(db_err)?;
            for name in names {
                sqlx::query(
                    self.sql("DELETE FROM artifact_properties WHERE artifact_id = ? AND name = ?"),
                )
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rows.len() as u64)
    }

    /// Artifacts that have, for every criterion, the property with one of its values;
    /// optionally only in `repos`. At most `limit`, by repository and path.
    pub async fn search_properties(
        &self,
        criteria: &[(String, Vec<String>)],
        repos: &[RepoKey],
        limit: u32,
    ) -> Result<Vec<(RepoKey, ArtifactPath)>> {
        let mut sql = String::from("SELECT a.repo_key, a.path FROM artifacts a WHERE 1 = 1");
        let placeholders = |n: usize| vec!["?"; n].join(", ");
        for (_, values) in criteria {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM artifact_properties p WHERE p.artifact_id = a.id \
                 AND p.name = ? AND p.value IN ({}))",
                placeholders(values.len().max(1))
            ));
        }
        if !repos.is_empty() {
            sql.push_str(&format!(
                " AND a.repo_key IN ({})",
                placeholders(repos.len())
            ));
        }
        sql.push_str(" ORDER BY a.repo_key, a.path LIMIT ?");
        let mut query = sqlx::query(self.sql_built(sql));
        for (name, values) in criteria {
            query = query.bind(name.clone());
            if values.is_empty() {
                query = query.bind(String::new());
            }
            for v in values {
                query = query.bind(v.clone());
            }
        }
        for r in repos {
            query = query.bind(r.as_str().to_string());
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let repo: String = row.try_get(0).map_err(db_err)?;
                let path: String = row.try_get(1).map_err(db_err)?;
                Ok((
                    RepoKey::parse(&repo).map_err(|_| corrupt("repository key", &repo))?,
                    ArtifactPath::parse(&path).map_err(|_| corrupt("path", &path))?,
                ))
            })
            .collect()
    }

    // ---- trash -------------------------------------------------------------------------

    /// Moves a file, or every file below a folder, to the trash; returns how many moved.
    pub async fn trash(&self, repo: &RepoKey, path: &ArtifactPath, by: &str) -> Result<u64> {
        let now = now_ms();
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let rows = self.rows_at(&mut tx, repo, path).await?;
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(db_err)?;
            let props = self.read_properties(&mut tx, id).await?;
            sqlx::query(self.sql(
                "INSERT INTO trash (repo_key, path, sha256, size, created_ms, created_by, \
                 properties, deleted_ms, deleted_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
                 size = excluded.size, created_ms = excluded.created_ms, \
                 created_by = excluded.created_by, properties = excluded.properties, \
                 deleted_ms = excluded.deleted_ms, deleted_by = excluded.deleted_by",
            ))
            .bind(repo.as_str())
            .bind(row.try_get::<String, _>("path").map_err(db_err)?)
            .bind(row.try_get::<String, _>("sha256").map_err(db_err)?)
            .bind(row.try_get::<i64, _>("size").map_err(db_err)?)
            .bind(row.try_get::<i64, _>("created_ms").map_err(db_err)?)
            .bind(row.try_get::<String, _>("created_by").map_err(db_err)?)
            .bind(serde_json::to_string(&props).unwrap_or_else(|_| "[]".into()))
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            sqlx::query(self.sql("DELETE FROM artifact_properties WHERE artifact_id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query(self.sql("DELETE FROM artifacts WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rows.len() as u64)
    }

    /// Everything in the trash, newest deletion first.
    pub async fn trash_list(&self) -> Result<Vec<TrashRecord>> {
        let rows =
            sqlx::query(self.sql("SELECT * FROM trash ORDER BY deleted_ms DESC, repo_key, path"))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let repo: String = row.try_get("repo_key").map_err(db_err)?;
                let path: String = row.try_get("path").map_err(db_err)?;
                let sha256: String = row.try_get("sha256").map_err(db_err)?;
                Ok(TrashRecord {
                    repo: RepoKey::parse(&repo).map_err(|_| corrupt("repository key", &repo))?,
                    path: ArtifactPath::parse(&path).map_err(|_| corrupt("path", &path))?,
                    sha256: sha256.parse().map_err(|_| corrupt("SHA-256", &sha256))?,
                    size: to_u64(row.try_get("size").map_err(db_err)?),
                    deleted_ms: row.try_get("deleted_ms").map_err(db_err)?,
                    deleted_by: row.try_get("deleted_by").map_err(db_err)?,
                })
            })
            .collect()
    }

    /// Puts a trashed file, or every trashed file below a folder, back where it was. Paths that
    /// are occupied again make the whole restore fail with `Conflict`; returns how many moved.
    pub async fn restore(&self, repo: &RepoKey, path: &ArtifactPath) -> Result<u64> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        self.check_repository(&mut tx, repo).await?;
        let (lo, hi) = below(path.as_str());
        let rows = sqlx::query(self.sql("SELECT * FROM trash WHERE repo_key = ? AND (path = ? OR (path >= ? AND path < ?) OR ? = '')",))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for row in &rows {
            let trashed: String = row.try_get("path").map_err(db_err)?;
            let target = ArtifactPath::parse(&trashed).map_err(|_| corrupt("path", &trashed))?;
            if sqlx::query(self.sql("SELECT 1 FROM artifacts WHERE repo_key = ? AND path = ?"))
                .bind(repo.as_str())
                .bind(target.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "cannot restore {repo}/{target}: a file with that path exists again"
                )));
            }
            self.check_file_path(&mut tx, repo, &target).await?;
            sqlx::query(self.sql(
                "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
                 modified_ms, modified_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(repo.as_str())
            .bind(target.as_str())
            .bind(row.try_get::<String, _>("sha256").map_err(db_err)?)
            .bind(row.try_get::<i64, _>("size").map_err(db_err)?)
            .bind(row.try_get::<i64, _>("created_ms").map_err(db_err)?)
            .bind(row.try_get::<String, _>("created_by").map_err(db_err)?)
            .bind(now_ms())
            .bind(row.try_get::<String, _>("deleted_by").map_err(db_err)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let id = self.artifact_id(&mut tx, repo, &target).await?;
            let props: String = row.try_get("properties").map_err(db_err)?;
            let props: Vec<(String, String)> = serde_json::from_str(&props).unwrap_or_default();
            self.insert_properties(&mut tx, id, &props).await?;
            sqlx::query(self.sql("DELETE FROM trash WHERE id = ?"))
                .bind(row.try_get::<i64, _>("id").map_err(db_err)?)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rows.len() as u64)
    }

    /// Empties the trash, or only what was deleted before `before_ms`; returns how many went.
    pub async fn empty_trash(&self, before_ms: Option<i64>) -> Result<u64> {
        let done = sqlx::query(self.sql("DELETE FROM trash WHERE deleted_ms < ?"))
            .bind(before_ms.unwrap_or(i64::MAX))
            .execute(self.writes().pool())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    // ---- summaries and tokens ------------------------------------------------------------

    /// Counts and sizes for `/api/storageinfo`.
    pub async fn storage_summary(&self) -> Result<StorageSummary> {
        let pair = |sql: &'static str| async move {
            let row = sqlx::query(self.sql(sql))
                .fetch_one(&self.reader)
                .await
                .map_err(db_err)?;
            let count: i64 = row.try_get(0).map_err(db_err)?;
            let size: i64 = row.try_get(1).map_err(db_err)?;
            Ok::<_, Error>((to_u64(count), to_u64(size)))
        };
        let (binaries_count, binaries_size) =
            pair("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM binaries").await?;
        let (artifacts_count, artifacts_size) =
            pair("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts").await?;
        let (trash_count, _) =
            pair("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM trash").await?;
        let rows = sqlx::query(self.sql("SELECT r.repo_key, r.package_type, COUNT(a.id) AS files, CAST(COALESCE(SUM(a.size), 0) AS BIGINT) AS used \
             FROM repositories r LEFT JOIN artifacts a ON a.repo_key = r.repo_key \
             GROUP BY r.repo_key, r.package_type ORDER BY r.repo_key",))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let repositories = rows
            .iter()
            .map(|row| {
                let key: String = row.try_get("repo_key").map_err(db_err)?;
                Ok(RepoSummary {
                    key: RepoKey::parse(&key).map_err(|_| corrupt("repository key", &key))?,
                    package_type: row.try_get("package_type").map_err(db_err)?,
                    files_count: to_u64(row.try_get("files").map_err(db_err)?),
                    used_space: to_u64(row.try_get("used").map_err(db_err)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(StorageSummary {
            binaries_count,
            binaries_size,
            artifacts_count,
            artifacts_size,
            trash_count,
            repositories,
        })
    }

    /// The stored hash of a named token.
    pub async fn token_hash(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar(self.sql("SELECT token_sha256 FROM tokens WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)
    }

    /// Stores a token's hash unless the name already has one; returns whether it stored it.
    pub async fn create_token_hash(&self, name: &str, token_sha256: &str) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO tokens (name, token_sha256, created_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        ))
        .bind(name)
        .bind(token_sha256)
        .bind(now_ms())
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- leased locks and cluster membership ---------------------------------------------

    /// Takes the lock `name` for `owner` until `expires_ms`, if nobody holds an unexpired lease
    /// on it. Returns whether it was taken.
    pub async fn try_lock(&self, name: &str, owner: &str, expires_ms: i64) -> Result<bool> {
        if self.engine == Engine::MySql {
            // No conditional upsert in MySQL: insert if absent, else take over an expired lease.
            let inserted = sqlx::query(self.sql(
                "INSERT INTO locks (name, owner, expires_ms) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
            ))
            .bind(name)
            .bind(owner)
            .bind(expires_ms)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
            if inserted.rows_affected() > 0 {
                return Ok(true);
            }
            let taken = sqlx::query(self.sql(
                "UPDATE locks SET owner = ?, expires_ms = ? WHERE name = ? AND expires_ms < ?",
            ))
            .bind(owner)
            .bind(expires_ms)
            .bind(name)
            .bind(now_ms())
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
            return Ok(taken.rows_affected() > 0);
        }
        let done = sqlx::query(self.sql(
            "INSERT INTO locks (name, owner, expires_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
             expires_ms = excluded.expires_ms WHERE locks.expires_ms < ?",
        ))
        .bind(name)
        .bind(owner)
        .bind(expires_ms)
        .bind(now_ms())
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Extends a lease `owner` holds; returns `false` if it no longer holds it.
    pub async fn renew_lock(&self, name: &str, owner: &str, expires_ms: i64) -> Result<bool> {
        let done =
            sqlx::query(self.sql("UPDATE locks SET expires_ms = ? WHERE name = ? AND owner = ?"))
                .bind(expires_ms)
                .bind(name)
                .bind(owner)
                .execute(self.writer_uncached())
                .await
                .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Releases a lock `owner` holds (nothing happens if it does not).
    pub async fn unlock(&self, name: &str, owner: &str) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM locks WHERE name = ? AND owner = ?"))
            .bind(name)
            .bind(owner)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Who holds an unexpired lease on `name`.
    pub async fn lock_owner(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar(self.sql("SELECT owner FROM locks WHERE name = ? AND expires_ms >= ?"))
            .bind(name)
            .bind(now_ms())
            .fetch_optional(self.writer_uncached())
            .await
            .map_err(db_err)
    }

    /// Registers a node or records its heartbeat.
    pub async fn heartbeat(&self, node: &NodeRecord) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO nodes (id, address, version, started_ms, heartbeat_ms) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET \
             address = excluded.address, version = excluded.version, \
             heartbeat_ms = excluded.heartbeat_ms",
        ))
        .bind(&node.id)
        .bind(&node.address)
        .bind(&node.version)
        .bind(node.started_ms)
        .bind(node.heartbeat_ms)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Removes a node (on clean shutdown) and nodes silent since before `stale_before_ms`.
    pub async fn remove_nodes(&self, id: &str, stale_before_ms: i64) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM nodes WHERE id = ? OR heartbeat_ms < ?"))
            .bind(id)
            .bind(stale_before_ms)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Every registered node, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(self.sql("SELECT * FROM nodes ORDER BY id"))
            .fetch_all(self.writer_uncached())
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    id: r.try_get("id").map_err(db_err)?,
                    address: r.try_get("address").map_err(db_err)?,
                    version: r.try_get("version").map_err(db_err)?,
                    started_ms: r.try_get("started_ms").map_err(db_err)?,
                    heartbeat_ms: r.try_get("heartbeat_ms").map_err(db_err)?,
                })
            })
            .collect()
    }

    /// Records a new upload session.
    pub async fn create_upload_session(&self, session: &UploadSession) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO upload_sessions (id, repo, path, sha256, size, multipart_upload_id, \
             created_by, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&session.id)
        .bind(session.repo.as_str())
        .bind(session.path.as_str())
        .bind(session.sha256.to_hex())
        .bind(i64::try_from(session.size).unwrap_or(i64::MAX))
        .bind(session.multipart_upload_id.as_deref())
        .bind(&session.created_by)
        .bind(session.created_ms)
        .bind(session.expires_ms)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// An upload session, if it exists (expired or not).
    pub async fn upload_session(&self, id: &str) -> Result<Option<UploadSession>> {
        let row = sqlx::query(self.sql("SELECT * FROM upload_sessions WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.writer_uncached())
            .await
            .map_err(db_err)?;
        row.as_ref().map(upload_session_from_row).transpose()
    }

    /// Removes an upload session; returns whether it existed (so only one caller finishes it).
    pub async fn delete_upload_session(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(self.sql("DELETE FROM upload_sessions WHERE id = ?"))
            .bind(id)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` sessions that expired before `now_ms`, oldest first.
    pub async fn expired_upload_sessions(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<UploadSession>> {
        let rows =
            sqlx::query(self.sql(
                "SELECT * FROM upload_sessions WHERE expires_ms < ? ORDER BY expires_ms LIMIT ?",
            ))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(self.writer_uncached())
            .await
            .map_err(db_err)?;
        rows.iter().map(upload_session_from_row).collect()
    }

    /// Records the start of a cluster-wide task run; returns its id.
    pub async fn start_task_run(&self, task: &str, node: &str) -> Result<i64> {
        if self.engine == Engine::MySql {
            let mut conn = self.writer_uncached().acquire().await.map_err(db_err)?;
            sqlx::query(
                self.sql("INSERT INTO task_runs (task, node, started_ms) VALUES (?, ?, ?)"),
            )
            .bind(task)
            .bind(node)
            .bind(now_ms())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            let id: i64 = sqlx::query_scalar(self.sql("SELECT CAST(LAST_INSERT_ID() AS SIGNED)"))
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
            return Ok(id);
        }
        sqlx::query_scalar(
            self.sql(
                "INSERT INTO task_runs (task, node, started_ms) VALUES (?, ?, ?) RETURNING id",
            ),
        )
        .bind(task)
        .bind(node)
        .bind(now_ms())
        .fetch_one(self.writer_uncached())
        .await
        .map_err(db_err)
    }

    /// Records the end of a task run.
    pub async fn finish_task_run(&self, id: i64, outcome: &str) -> Result<()> {
        sqlx::query(self.sql("UPDATE task_runs SET finished_ms = ?, outcome = ? WHERE id = ?"))
            .bind(now_ms())
            .bind(outcome)
            .bind(id)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
