//! The trash: deletes move artifacts here; restored in place or emptied.

use super::*;

impl Metadata {
    /// Moves a file, or every file below a folder, to the trash; returns how many moved.
    pub async fn trash(&self, repo: &RepoKey, path: &ArtifactPath, by: &str) -> Result<TakenOut> {
        self.take_out(repo, path, Some(by), &|_, _| Ok(())).await
    }

    /// Removes a file, or every file below a folder, for good (the trash disabled): the
    /// trash keeps what it held. Returns how many went; their binaries are left to garbage
    /// collection.
    pub async fn remove(&self, repo: &RepoKey, path: &ArtifactPath) -> Result<TakenOut> {
        self.take_out(repo, path, None, &|_, _| Ok(())).await
    }

    /// Deletes the file at `path`, or the folder there with everything below it, copying each
    /// file into the trash first when `into_trash` names who deletes (folders are not kept
    /// there: a restore recreates those its files need). `check` is asked of every file
    /// first, in the transaction (a caller's permission): one refusal, and nothing is deleted.
    pub async fn take_out(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        into_trash: Option<&str>,
        check: PathCheck<'_>,
    ) -> Result<TakenOut> {
        let now = now_ms();
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let immutable = self.check_repository(&mut tx, repo).await?;
        self.lock_folders_at(&mut tx, repo, path).await?;
        // Nothing of a folder goes when one of its files may not. The files are read a page
        // at a time, and then moved by statements over the whole folder: memory and round
        // trips stay flat however many files go.
        let files = self
            .each_file_at(&mut tx, repo, path, &mut |file| {
                immutable.allow(repo, file, "deleted")?;
                check(repo, file)
            })
            .await?;
        let (lo, hi) = below(path.as_str());
        let scope = "repo_key = ? AND (path = ? OR (path >= ? AND path < ?) OR ? = '')";
        if let Some(by) = into_trash {
            let sql = format!(
                "INSERT INTO trash (repo_key, path, sha256, size, created_ms, created_by, \
                 properties, deleted_ms, deleted_by) \
                 SELECT a.repo_key, a.path, a.sha256, a.size, a.created_ms, a.created_by, {}, \
                 ?, ? FROM artifacts a WHERE {scope} \
                 ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
                 size = excluded.size, created_ms = excluded.created_ms, \
                 created_by = excluded.created_by, properties = excluded.properties, \
                 deleted_ms = excluded.deleted_ms, deleted_by = excluded.deleted_by",
                self.properties_json("a.id")
            );
            sqlx::query(self.sql_built(sql))
                .bind(now)
                .bind(by.to_string())
                .bind(repo.as_str().to_string())
                .bind(path.as_str().to_string())
                .bind(lo.clone())
                .bind(hi.clone())
                .bind(path.as_str().to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for table in ["artifact_properties", "download_stats"] {
            let sql = format!(
                "DELETE FROM {table} WHERE artifact_id IN (SELECT id FROM artifacts WHERE {scope})"
            );
            self.execute_in_scope(&mut tx, sql, repo, path).await?;
        }
        let deleted = self
            .execute_in_scope(
                &mut tx,
                format!("DELETE FROM artifacts WHERE {scope}"),
                repo,
                path,
            )
            .await?;
        if deleted != files {
            // A file arrived where no folder row orders it with this delete (the repository's
            // root) after the checks: it was not checked, so nothing goes (the transaction
            // rolls back) and the caller retries.
            return Err(Error::Metadata {
                source: format!(
                    "{repo}/{path} changed while it was being deleted ({files} files checked, \
                     {deleted} found); retry"
                )
                .into(),
                retryable: true,
            });
        }
        let folders = self.delete_folders_at(&mut tx, repo, path).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(TakenOut { files, folders })
    }

    /// Runs `sql`, whose five placeholders are a repository and the file-or-folder scope of
    /// `path` (`repo_key = ? AND (path = ? OR (path >= ? AND path < ?) OR ? = '')`), in `tx`.
    pub(super) async fn execute_in_scope(
        &self,
        tx: &mut Transaction<'static, Any>,
        sql: String,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<u64> {
        let (lo, hi) = below(path.as_str());
        Ok(sqlx::query(self.sql_built(sql))
            .bind(repo.as_str().to_string())
            .bind(path.as_str().to_string())
            .bind(lo)
            .bind(hi)
            .bind(path.as_str().to_string())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?
            .rows_affected())
    }

    /// Asks `each` of the file at `path` and of every file below it (all of the repository's
    /// for the root), a page at a time in path order, with a locking read; returns how many.
    pub(super) async fn each_file_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
        each: &mut (dyn FnMut(&str) -> Result<()> + Send),
    ) -> Result<u64> {
        const PAGE: i64 = 1000;
        let mut seen = 0;
        if !path.is_root() {
            let sql = format!(
                "SELECT path FROM artifacts WHERE repo_key = ? AND path = ?{}",
                self.for_update()
            );
            let file: Option<String> = sqlx::query_scalar(self.sql_built(sql))
                .bind(repo.as_str().to_string())
                .bind(path.as_str().to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
            if let Some(file) = file {
                each(&file)?;
                return Ok(1);
            }
        }
        let (lo, hi) = if path.is_root() {
            (String::new(), None)
        } else {
            let (lo, hi) = below(path.as_str());
            (lo, Some(hi))
        };
        let mut after = lo;
        loop {
            let sql = format!(
                "SELECT path FROM artifacts WHERE repo_key = ? AND path > ?{} \
                 ORDER BY path LIMIT ?{}",
                if hi.is_some() { " AND path < ?" } else { "" },
                self.for_update()
            );
            let mut query = sqlx::query_scalar::<_, String>(self.sql_built(sql))
                .bind(repo.as_str().to_string())
                .bind(after.clone());
            if let Some(hi) = &hi {
                query = query.bind(hi.clone());
            }
            let page = query
                .bind(PAGE)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_err)?;
            for file in &page {
                each(file)?;
            }
            seen += page.len() as u64;
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = last.clone(),
                _ => return Ok(seen),
            }
        }
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
        self.restore_to(repo, path, None).await
    }

    /// Like [`Metadata::restore`], to `to` instead of where they were (Artifactory's
    /// `?to=repo/path`): a file lands at `to`, the files of a folder below `to` as they were
    /// below the folder.
    pub async fn restore_to(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        to: Option<(&RepoKey, &ArtifactPath)>,
    ) -> Result<u64> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        self.check_repository(&mut tx, repo).await?;
        let dest_repo = to.map_or(repo, |(r, _)| r);
        if dest_repo != repo {
            self.check_repository(&mut tx, dest_repo).await?;
        }
        let destination = |trashed: &ArtifactPath| -> Result<ArtifactPath> {
            let Some((_, to_path)) = to else {
                return Ok(trashed.clone());
            };
            let rest = if path.as_str().is_empty() {
                trashed.as_str()
            } else if trashed.as_str() == path.as_str() {
                ""
            } else {
                trashed
                    .as_str()
                    .strip_prefix(path.as_str())
                    .map_or("", |r| r.trim_start_matches('/'))
            };
            let joined = match (to_path.as_str(), rest) {
                (t, "") => t.to_string(),
                ("", r) => r.to_string(),
                (t, r) => format!("{t}/{r}"),
            };
            ArtifactPath::parse(&joined)
        };
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
        let repo_in = repo;
        let repo = dest_repo;
        for row in &rows {
            let trashed: String = row.try_get("path").map_err(db_err)?;
            let trashed = ArtifactPath::parse(&trashed).map_err(|_| corrupt("path", &trashed))?;
            let target = destination(&trashed)?;
            if sqlx::query(self.sql("SELECT 1 FROM artifacts WHERE repo_key = ? AND path = ?"))
                .bind(repo.as_str())
                .bind(target.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "cannot restore {repo_in}/{trashed} to {repo}/{target}: a file with that \
                     path exists"
                )));
            }
            self.check_file_path(&mut tx, repo, &target).await?;
            let deleted_by: String = row.try_get("deleted_by").map_err(db_err)?;
            self.ensure_folders(&mut tx, repo, &target.ancestors(), &deleted_by, now_ms())
                .await?;
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

    /// Removes a file, or every file below a folder, from the trash for good (their binaries
    /// go at the next garbage collection); returns how many went.
    pub async fn clean_trash(&self, repo: &RepoKey, path: &ArtifactPath) -> Result<u64> {
        let (lo, hi) = below(path.as_str());
        let done = sqlx::query(self.sql(
            "DELETE FROM trash WHERE repo_key = ? AND (path = ? OR (path >= ? AND path < ?) OR ? = '')",
        ))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .execute(self.writes().pool())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
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
}
