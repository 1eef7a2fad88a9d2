//! Storage summaries and the hashed tokens.

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
}
