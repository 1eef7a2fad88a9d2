//! Storage summaries, download statistics and the hashed tokens.

use super::*;

impl Metadata {
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
        let (folders_count, _) = pair("SELECT COUNT(*), 0 FROM folders").await?;
        let rows = sqlx::query(self.sql(
            "SELECT r.repo_key, r.package_type, \
             (SELECT COUNT(*) FROM artifacts a WHERE a.repo_key = r.repo_key) AS files, \
             (SELECT CAST(COALESCE(SUM(a.size), 0) AS BIGINT) FROM artifacts a \
              WHERE a.repo_key = r.repo_key) AS used, \
             (SELECT COUNT(*) FROM folders f WHERE f.repo_key = r.repo_key) AS folders \
             FROM repositories r ORDER BY r.repo_key",
        ))
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
                    folders_count: to_u64(row.try_get("folders").map_err(db_err)?),
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
            folders_count,
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
}

impl Metadata {
    /// Adds counted downloads, `(artifact id, downloads, last time, last by)`, in one
    /// transaction: what a node gathered since its last flush.
    pub async fn add_downloads(&self, counted: &[(i64, u64, i64, String)]) -> Result<()> {
        if counted.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer_uncached().begin().await.map_err(db_err)?;
        for (id, downloads, last_ms, last_by) in counted {
            sqlx::query(self.sql(
                "INSERT INTO download_stats (artifact_id, downloads, last_ms, last_by) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (artifact_id) DO UPDATE SET \
                 downloads = download_stats.downloads + excluded.downloads, \
                 last_ms = excluded.last_ms, last_by = excluded.last_by",
            ))
            .bind(*id)
            .bind(to_i64(*downloads))
            .bind(*last_ms)
            .bind(last_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    /// An artifact's download statistics (zero when never downloaded).
    pub async fn download_stats(&self, artifact_id: i64) -> Result<DownloadStats> {
        let row =
            sqlx::query(self.sql(
                "SELECT downloads, last_ms, last_by FROM download_stats WHERE artifact_id = ?",
            ))
            .bind(artifact_id)
            .fetch_optional(self.fresh_reads())
            .await
            .map_err(db_err)?;
        row.map_or(Ok(DownloadStats::default()), |row| {
            Ok(DownloadStats {
                downloads: to_u64(row.try_get("downloads").map_err(db_err)?),
                last_ms: row.try_get("last_ms").map_err(db_err)?,
                last_by: row.try_get("last_by").map_err(db_err)?,
            })
        })
    }
}

impl Metadata {
    /// Asks the database (the writer, which every write needs) for a trivial answer: what a
    /// readiness check holds the node to.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query(self.sql("SELECT 1"))
            .fetch_one(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Connections of the writer and reader pools: (open, idle) each.
    pub fn pool_figures(&self) -> [(u32, u32); 2] {
        [
            (self.writer.size(), self.writer.num_idle() as u32),
            (self.reader.size(), self.reader.num_idle() as u32),
        ]
    }
}
