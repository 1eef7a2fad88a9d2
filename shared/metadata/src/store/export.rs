//! The metadata as a logical export that does not depend on the engine (backups, and the
//! upgrade from the embedded SQLite to PostgreSQL or MySQL), and its import into an empty
//! store.
//!
//! The export is JSON Lines, read from one consistent snapshot (a read transaction:
//! SQLite's WAL snapshot, PostgreSQL's `REPEATABLE READ`, InnoDB's consistent snapshot):
//!
//! ```text
//! {"format":"stowage-metadata","version":1,"schema":10,"engine":"sqlite","exportedMs":…}
//! {"table":"repositories","columns":["repo_key","rclass",…]}
//! ["libs","local",…]                       one array per row, in the columns' order
//! {"end":"repositories","rows":3}
//! …                                        every table of EXPORTED, in that order
//! {"end":"export","tables":15}
//! ```
//!
//! Every value is an integer, a string or null: the schema holds nothing else (booleans are
//! integers on every engine), so a row reads and binds alike on each. Generated columns
//! (`parent`) are not exported; the importing database derives them. What belongs to the
//! running cluster only (locks, nodes, task runs, open upload sessions, the collection
//! counter) is not exported either ([`NOT_EXPORTED`]).

use std::io::{BufRead, Write};

use futures::TryStreamExt as _;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Row};
use stowage_core::{Error, Result};

use super::{Engine, Metadata, db_err};

/// The export format's version.
const FORMAT_VERSION: u64 = 1;

/// A column's kind: every column of the schema is an integer or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

use Kind::{Int, Text};

/// The exported tables, in an order that satisfies their foreign keys, with their columns.
const EXPORTED: &[(&str, &[(&str, Kind)])] = &[
    (
        "repositories",
        &[
            ("repo_key", Text),
            ("rclass", Text),
            ("package_type", Text),
            ("description", Text),
            ("config", Text),
            ("created_ms", Int),
        ],
    ),
    (
        "binaries",
        &[
            ("sha256", Text),
            ("sha1", Text),
            ("md5", Text),
            ("size", Int),
            ("created_ms", Int),
        ],
    ),
    (
        "artifacts",
        &[
            ("id", Int),
            ("repo_key", Text),
            ("path", Text),
            ("sha256", Text),
            ("size", Int),
            ("created_ms", Int),
            ("created_by", Text),
            ("modified_ms", Int),
            ("modified_by", Text),
            ("original_sha1", Text),
            ("original_md5", Text),
            ("original_sha256", Text),
        ],
    ),
    (
        "artifact_properties",
        &[("artifact_id", Int), ("name", Text), ("value", Text)],
    ),
    (
        "folders",
        &[
            ("id", Int),
            ("repo_key", Text),
            ("path", Text),
            ("created_ms", Int),
            ("created_by", Text),
            ("modified_ms", Int),
            ("modified_by", Text),
        ],
    ),
    (
        "folder_properties",
        &[("folder_id", Int), ("name", Text), ("value", Text)],
    ),
    (
        "trash",
        &[
            ("id", Int),
            ("repo_key", Text),
            ("path", Text),
            ("sha256", Text),
            ("size", Int),
            ("created_ms", Int),
            ("created_by", Text),
            ("properties", Text),
            ("deleted_ms", Int),
            ("deleted_by", Text),
        ],
    ),
    (
        "download_stats",
        &[
            ("artifact_id", Int),
            ("downloads", Int),
            ("last_ms", Int),
            ("last_by", Text),
        ],
    ),
    (
        "tokens",
        &[("name", Text), ("token_sha256", Text), ("created_ms", Int)],
    ),
    (
        "users",
        &[
            ("name", Text),
            ("email", Text),
            ("password_hash", Text),
            ("admin", Int),
            ("disabled", Int),
            ("created_ms", Int),
        ],
    ),
    (
        "user_groups",
        &[
            ("name", Text),
            ("description", Text),
            ("auto_join", Int),
            ("created_ms", Int),
        ],
    ),
    (
        "group_members",
        &[("group_name", Text), ("user_name", Text)],
    ),
    (
        "permission_targets",
        &[("name", Text), ("body", Text), ("created_ms", Int)],
    ),
    (
        "access_tokens",
        &[
            ("id", Text),
            ("user_name", Text),
            ("token_sha256", Text),
            ("scope", Text),
            ("description", Text),
            ("created_ms", Int),
            ("expires_ms", Int),
            ("revoked", Int),
            ("refresh_sha256", Text),
        ],
    ),
    (
        "audit_log",
        &[
            ("seq", Int),
            ("at_ms", Int),
            ("node", Text),
            ("actor", Text),
            ("source", Text),
            ("action", Text),
            ("target", Text),
            ("detail", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    ),
];

/// Tables, and generated columns, that are not exported, on purpose: a test holds every
/// table and column of the schema to be in [`EXPORTED`] or here, so that a migration that adds
/// one must decide.
pub const NOT_EXPORTED: &[&str] = &[
    "locks",
    "nodes",
    "queue_copies",
    "task_runs",
    "upload_sessions",
    "gc_state",
    "_sqlx_migrations",
    "artifacts.parent",
    "folders.parent",
];

/// Tables whose `id` is taken from a sequence on PostgreSQL: set past the imported ids.
const SEQUENCED: &[&str] = &["artifacts", "folders", "trash"];

/// What an export or an import held, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub schema: i64,
    pub tables: Vec<(String, u64)>,
}

impl ExportSummary {
    /// Rows of `table`.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// The columns of every exported table (for the schema test and the backup's readers).
pub fn exported_columns() -> Vec<(&'static str, Vec<&'static str>)> {
    EXPORTED
        .iter()
        .map(|(t, cols)| (*t, cols.iter().map(|(c, _)| *c).collect()))
        .collect()
}

fn bad_export(line: usize, what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "the metadata export is damaged at line {line}: {what}"
    ))
}

fn io_err(e: std::io::Error) -> Error {
    Error::InvalidInput(format!("cannot write the metadata export: {e}"))
}

fn write_line(out: &mut impl Write, value: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| Error::InvalidInput(format!("cannot write the metadata export: {e}")))?;
    out.write_all(b"\n").map_err(io_err)
}

impl Metadata {
    /// The schema version the database is at (its last applied migration).
    pub async fn schema_version(&self) -> Result<i64> {
        sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.writer)
            .await
            .map_err(db_err)?
            .try_get::<Option<i64>, _>("v")
            .map_err(db_err)
            .map(|v| v.unwrap_or(0))
    }

    /// Writes the whole metadata to `out` from one consistent snapshot (see the module's
    /// documentation). `on_table` is told each table's name and rows as it is done.
    pub async fn export(
        &self,
        out: &mut impl Write,
        mut on_table: impl FnMut(&str, u64),
    ) -> Result<ExportSummary> {
        let schema = self.schema_version().await?;
        // SQLite: a read transaction on the reader pool (writers go on meanwhile, WAL);
        // elsewhere the primary's snapshot, not a replica that may lag.
        let (pool, begin) = match self.engine {
            Engine::Sqlite => (&self.reader, "BEGIN"),
            Engine::Postgres => (
                &self.writer,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            ),
            Engine::MySql => (
                &self.writer,
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            ),
        };
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        write_line(
            out,
            &serde_json::json!({
                "format": "stowage-metadata",
                "version": FORMAT_VERSION,
                "schema": schema,
                "engine": format!("{:?}", self.engine).to_lowercase(),
                "exportedMs": crate::now_ms(),
            }),
        )?;
        let mut summary = ExportSummary {
            schema,
            tables: Vec::new(),
        };
        for (table, columns) in EXPORTED {
            let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            write_line(
                out,
                &serde_json::json!({ "table": table, "columns": names }),
            )?;
            let sql = format!(
                "SELECT {} FROM {table} ORDER BY {}",
                names.join(", "),
                names[0]
            );
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *tx);
            let mut count = 0u64;
            let mut line = Vec::with_capacity(columns.len());
            while let Some(row) = rows.try_next().await.map_err(db_err)? {
                line.clear();
                for (i, (_, kind)) in columns.iter().enumerate() {
                    line.push(match kind {
                        Int => row
                            .try_get::<Option<i64>, _>(i)
                            .map_err(db_err)?
                            .map_or(Value::Null, Value::from),
                        Text => row
                            .try_get::<Option<String>, _>(i)
                            .map_err(db_err)?
                            .map_or(Value::Null, Value::from),
                    });
                }
                serde_json::to_writer(&mut *out, &line).map_err(|e| {
                    Error::InvalidInput(format!("cannot write the metadata export: {e}"))
                })?;
                out.write_all(b"\n").map_err(io_err)?;
                count += 1;
            }
            drop(rows);
            write_line(out, &serde_json::json!({ "end": table, "rows": count }))?;
            on_table(table, count);
            summary.tables.push(((*table).to_string(), count));
        }
        write_line(
            out,
            &serde_json::json!({ "end": "export", "tables": EXPORTED.len() }),
        )?;
        tx.rollback().await.map_err(db_err)?;
        out.flush().map_err(io_err)?;
        Ok(summary)
    }

    /// Whether the store holds no repository, binary, artifact, trash entry, user, group,
    /// permission target or access token: what [`Metadata::import`] needs.
    pub async fn is_empty(&self) -> Result<bool> {
        for table in [
            "repositories",
            "binaries",
            "artifacts",
            "trash",
            "users",
            "user_groups",
            "permission_targets",
            "access_tokens",
        ] {
            let sql = format!("SELECT COUNT(*) AS n FROM {table}");
            let n: i64 = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&self.writer)
                .await
                .map_err(db_err)?
                .try_get("n")
                .map_err(db_err)?;
            if n > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Imports an export (as [`Metadata::export`] wrote it) into this store, which must be
    /// empty ([`Metadata::is_empty`]); the admin token a fresh store may have is replaced by
    /// the export's. One transaction: a damaged or cut export leaves the store as it was.
    /// `on_table` is told each table's name and rows as it is done.
    pub async fn import(
        &self,
        input: impl BufRead,
        mut on_table: impl FnMut(&str, u64),
    ) -> Result<ExportSummary> {
        if !self.is_empty().await? {
            return Err(Error::Conflict(
                "the target database is not empty: restore into a new Stowage (a fresh \
                 database after `stowage migrate`)"
                    .into(),
            ));
        }
        let schema = self.schema_version().await?;
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let mut lines = input.lines().enumerate();
        let mut next = || -> Result<Option<(usize, Value)>> {
            match lines.next() {
                None => Ok(None),
                Some((i, Err(e))) => Err(bad_export(i + 1, e)),
                Some((i, Ok(text))) => serde_json::from_str(&text)
                    .map(|v| Some((i + 1, v)))
                    .map_err(|e| bad_export(i + 1, e)),
            }
        };
        let Some((_, header)) = next()? else {
            return Err(bad_export(1, "it is empty"));
        };
        if header["format"] != "stowage-metadata" || header["version"] != FORMAT_VERSION {
            return Err(bad_export(
                1,
                format!("not a Stowage metadata export of version {FORMAT_VERSION}: {header}"),
            ));
        }
        let exported_schema = header["schema"].as_i64().unwrap_or(i64::MAX);
        if exported_schema > schema {
            return Err(Error::InvalidInput(format!(
                "the export is of schema {exported_schema} but this Stowage's database is at \
                 {schema}: restore with the Stowage version that made the backup, or a newer one"
            )));
        }
        // A fresh store's own admin token gives way to the export's.
        sqlx::query("DELETE FROM tokens")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut summary = ExportSummary {
            schema: exported_schema,
            tables: Vec::new(),
        };
        for (table, columns) in EXPORTED {
            let Some((at, head)) = next()? else {
                return Err(bad_export(0, format!("it ends before table {table}")));
            };
            if head["table"] != *table {
                return Err(bad_export(
                    at,
                    format!("expected table {table}, found {head}"),
                ));
            }
            let names: Vec<String> =
                serde_json::from_value(head["columns"].clone()).map_err(|e| bad_export(at, e))?;
            let expected: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            if names != expected {
                return Err(bad_export(
                    at,
                    format!("table {table} has columns {names:?}, this Stowage {expected:?}"),
                ));
            }
            let mut batch: Vec<Vec<Value>> = Vec::new();
            let mut count = 0u64;
            loop {
                let Some((at, line)) = next()? else {
                    return Err(bad_export(0, format!("it ends inside table {table}")));
                };
                match line {
                    Value::Array(values) => {
                        if values.len() != columns.len() {
                            return Err(bad_export(at, "a row of the wrong length"));
                        }
                        for ((name, kind), v) in columns.iter().zip(&values) {
                            let fits = match kind {
                                Int => v.is_null() || v.is_i64(),
                                Text => v.is_null() || v.is_string(),
                            };
                            if !fits {
                                return Err(bad_export(at, format!("{table}.{name} = {v}")));
                            }
                        }
                        batch.push(values);
                        count += 1;
                        if batch.len() >= IMPORT_BATCH {
                            self.insert_rows(&mut tx, table, columns, &batch).await?;
                            batch.clear();
                        }
                    }
                    Value::Object(end) => {
                        if end.get("end").and_then(Value::as_str) != Some(table)
                            || end.get("rows").and_then(Value::as_u64) != Some(count)
                        {
                            return Err(bad_export(
                                at,
                                format!("table {table} ends with {count} rows, not as it says"),
                            ));
                        }
                        break;
                    }
                    other => return Err(bad_export(at, format!("unexpected {other}"))),
                }
            }
            self.insert_rows(&mut tx, table, columns, &batch).await?;
            on_table(table, count);
            summary.tables.push(((*table).to_string(), count));
        }
        match next()? {
            Some((_, end)) if end["end"] == "export" => {}
            _ => return Err(bad_export(0, "its last line is missing: it was cut")),
        }
        if self.engine == Engine::Postgres {
            for table in SEQUENCED {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        drop(writes);
        Ok(summary)
    }

    /// One multi-row INSERT of `rows` into `table`.
    async fn insert_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        table: &str,
        columns: &[(&str, Kind)],
        rows: &[Vec<Value>],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let one = format!("({})", vec!["?"; columns.len()].join(", "));
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            names.join(", "),
            vec![one; rows.len()].join(", ")
        );
        let mut query = sqlx::query(self.sql_built(sql));
        // The import checked each value's kind against its column's.
        for row in rows {
            for ((_, kind), v) in columns.iter().zip(row) {
                query = match kind {
                    Int => query.bind(v.as_i64()),
                    Text => query.bind(v.as_str().map(str::to_string)),
                };
            }
        }
        query.execute(&mut **tx).await.map_err(db_err)?;
        Ok(())
    }
}

/// Calls `each` with every row of `table` in an export (its values in the columns' order of
/// [`exported_columns`]), reading the export once, as a stream. An export without the table's
/// end line is damaged.
pub fn for_each_row(
    input: impl BufRead,
    table: &str,
    mut each: impl FnMut(&[Value]) -> Result<()>,
) -> Result<u64> {
    let mut inside = false;
    let mut count = 0u64;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| bad_export(i + 1, e))?;
        if !inside {
            // Rows are arrays: only the table and end lines are objects.
            if line.starts_with('{') {
                let head: Value = serde_json::from_str(&line).map_err(|e| bad_export(i + 1, e))?;
                inside = head["table"] == table;
            }
            continue;
        }
        match serde_json::from_str::<Value>(&line).map_err(|e| bad_export(i + 1, e))? {
            Value::Array(values) => {
                each(&values)?;
                count += 1;
            }
            Value::Object(end) if end.get("end").and_then(Value::as_str) == Some(table) => {
                return Ok(count);
            }
            other => return Err(bad_export(i + 1, format!("unexpected {other}"))),
        }
    }
    Err(bad_export(0, format!("table {table} is missing or cut")))
}

/// Rows per INSERT: 15 columns at most, well inside every engine's limit on bound values.
const IMPORT_BATCH: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table and column of the schema is exported, or left out on purpose: a migration
    /// that adds one must say which (here, on SQLite, whose schema the others mirror).
    #[tokio::test]
    async fn every_table_and_column_is_exported_or_left_out_on_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let meta = Metadata::connect(&url, &super::super::PoolSettings::default())
            .await
            .expect("connect");
        meta.migrate().await.expect("migrate");
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&meta.writer)
        .await
        .expect("tables")
        .iter()
        .map(|r| r.try_get::<String, _>("name").expect("name"))
        .collect();
        let mut unplaced = Vec::new();
        for table in &tables {
            let exported = EXPORTED.iter().find(|(t, _)| t == table);
            if exported.is_none() && !NOT_EXPORTED.contains(&table.as_str()) {
                unplaced.push(table.clone());
                continue;
            }
            let Some((_, columns)) = exported else {
                continue;
            };
            let sql = format!("SELECT name FROM pragma_table_xinfo('{table}')");
            let names: Vec<String> = sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&meta.writer)
                .await
                .expect("columns")
                .iter()
                .map(|r| r.try_get::<String, _>("name").expect("name"))
                .collect();
            for name in &names {
                let qualified = format!("{table}.{name}");
                if !columns.iter().any(|(c, _)| c == name)
                    && !NOT_EXPORTED.contains(&qualified.as_str())
                {
                    unplaced.push(qualified);
                }
            }
            for (c, _) in columns.iter() {
                assert!(
                    names.iter().any(|n| n == c),
                    "{table}.{c} is exported but not in the schema"
                );
            }
        }
        assert!(
            unplaced.is_empty(),
            "in neither EXPORTED nor NOT_EXPORTED: {unplaced:?}"
        );
    }
}
