//! Repositories: created, updated, listed and removed with their content.

use super::*;

impl Metadata {
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
            "DELETE FROM download_stats WHERE artifact_id IN \
             (SELECT id FROM artifacts WHERE repo_key = ?)",
            "DELETE FROM artifacts WHERE repo_key = ?",
            "DELETE FROM folder_properties WHERE folder_id IN \
             (SELECT id FROM folders WHERE repo_key = ?)",
            "DELETE FROM folders WHERE repo_key = ?",
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
}
