//! Leased locks, cluster membership, upload sessions and task runs.

use std::time::Duration;

use super::*;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Metadata {
    /// Takes the lock `name` for `owner` for `lease`, if nobody holds an unexpired lease on
    /// it. Returns whether it was taken. Leases are timed by the database's clock, the one
    /// every node shares, never by a node's own (which may be skewed).
    pub async fn try_lock(&self, name: &str, owner: &str, lease: Duration) -> Result<bool> {
        let lease = millis(lease);
        if self.engine == Engine::MySql {
            // No conditional upsert in MySQL: insert if absent, else take over an expired lease.
            let inserted = sqlx::query(self.sql_now(
                "INSERT INTO locks (name, owner, expires_ms) VALUES (?, ?, {now} + ?) \
                 ON CONFLICT (name) DO NOTHING",
            ))
            .bind(name)
            .bind(owner)
            .bind(lease)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
            if inserted.rows_affected() > 0 {
                return Ok(true);
            }
            let taken = sqlx::query(self.sql_now(
                "UPDATE locks SET owner = ?, expires_ms = {now} + ? \
                 WHERE name = ? AND expires_ms < {now}",
            ))
            .bind(owner)
            .bind(lease)
            .bind(name)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
            return Ok(taken.rows_affected() > 0);
        }
        let done = sqlx::query(self.sql_now(
            "INSERT INTO locks (name, owner, expires_ms) VALUES (?, ?, {now} + ?) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
             expires_ms = excluded.expires_ms WHERE locks.expires_ms < {now}",
        ))
        .bind(name)
        .bind(owner)
        .bind(lease)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Holds the lock `name` for `owner` for `lease` from now: renews it when `owner` holds it
    /// already (an earlier attempt of its own), else takes it if nobody holds an unexpired
    /// lease. Returns whether `owner` holds it now.
    pub async fn hold_lock(&self, name: &str, owner: &str, lease: Duration) -> Result<bool> {
        Ok(self.renew_lock(name, owner, lease).await? || self.try_lock(name, owner, lease).await?)
    }

    /// Extends a lease `owner` holds to `lease` from now (by the database's clock); returns
    /// `false` if it no longer holds it.
    pub async fn renew_lock(&self, name: &str, owner: &str, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            self.sql_now("UPDATE locks SET expires_ms = {now} + ? WHERE name = ? AND owner = ?"),
        )
        .bind(millis(lease))
        .bind(name)
        .bind(owner)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether every `(name, owner)` lease in `held` is still held, with at least `margin` of
    /// it left by the database's clock: the fence a holder passes before an act that must not
    /// happen once its lock may have passed to someone else (garbage collection's removals).
    pub async fn leases_held(&self, held: &[(&str, &str)], margin: Duration) -> Result<bool> {
        if held.is_empty() {
            return Ok(true);
        }
        let pairs = vec!["(name = ? AND owner = ?)"; held.len()].join(" OR ");
        let sql = format!(
            "SELECT COUNT(*) FROM locks WHERE ({pairs}) AND expires_ms > {} + ?",
            self.db_now()
        );
        let mut query = sqlx::query_scalar::<_, i64>(self.sql_built(sql));
        for (name, owner) in held {
            query = query.bind(*name).bind(*owner);
        }
        let found = query
            .bind(millis(margin))
            .fetch_one(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(usize::try_from(found).is_ok_and(|n| n == held.len()))
    }

    /// In one round trip to the primary: how many collections have begun removing binaries
    /// ([`Self::count_gc_run`]), and whether a row holds the lock `removal_lock`, live or
    /// expired (an expired row is a holder that died or lost its lease, and may still be at
    /// work): what a deploy notes before it stores its bytes.
    pub async fn gc_witness(&self, removal_lock: &str) -> Result<(i64, bool)> {
        let row = sqlx::query(self.sql(
            "SELECT g.runs AS runs, \
             (SELECT COUNT(*) FROM locks l WHERE l.name = ?) AS holders \
             FROM gc_state g WHERE g.id = 1",
        ))
        .bind(removal_lock)
        .fetch_one(self.writer_uncached())
        .await
        .map_err(db_err)?;
        let runs = row.try_get("runs").map_err(db_err)?;
        let holders: i64 = row.try_get("holders").map_err(db_err)?;
        Ok((runs, holders > 0))
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
        sqlx::query_scalar(
            self.sql_now("SELECT owner FROM locks WHERE name = ? AND expires_ms >= {now}"),
        )
        .bind(name)
        .fetch_optional(self.writer_uncached())
        .await
        .map_err(db_err)
    }

    /// Registers a node or records its heartbeat, at the database's time (`heartbeat_ms` of
    /// `node` is not used).
    pub async fn heartbeat(&self, node: &NodeRecord) -> Result<()> {
        sqlx::query(self.sql_now(
            "INSERT INTO nodes (id, address, version, started_ms, heartbeat_ms, zone) \
             VALUES (?, ?, ?, ?, {now}, ?) ON CONFLICT (id) DO UPDATE SET \
             address = excluded.address, version = excluded.version, \
             heartbeat_ms = excluded.heartbeat_ms, zone = excluded.zone",
        ))
        .bind(&node.id)
        .bind(&node.address)
        .bind(&node.version)
        .bind(node.started_ms)
        .bind(&node.zone)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Removes a node (on clean shutdown).
    pub async fn remove_node(&self, id: &str) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM nodes WHERE id = ?"))
            .bind(id)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Removes the nodes whose last heartbeat is older than `silent_for` (by the database's
    /// clock).
    pub async fn remove_silent_nodes(&self, silent_for: Duration) -> Result<()> {
        sqlx::query(self.sql_now("DELETE FROM nodes WHERE heartbeat_ms < {now} - ?"))
            .bind(millis(silent_for))
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
        rows.iter().map(node_record).collect()
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

pub(super) fn node_record(r: &AnyRow) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: r.try_get("id").map_err(db_err)?,
        address: r.try_get("address").map_err(db_err)?,
        version: r.try_get("version").map_err(db_err)?,
        started_ms: r.try_get("started_ms").map_err(db_err)?,
        heartbeat_ms: r.try_get("heartbeat_ms").map_err(db_err)?,
        zone: r.try_get("zone").map_err(db_err)?,
    })
}
