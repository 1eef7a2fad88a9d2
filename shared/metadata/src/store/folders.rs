//! Folders: entries of their own, as in Artifactory. A deploy records the folders above its
//! file (`ensure_folders`); `PUT /repo/a/b/` creates one explicitly; a folder stays when the
//! files below it go, until it is deleted. Every row carries its `parent` (derived from the
//! path by the database), so a folder's children cost one indexed lookup in `folders` and one
//! in `artifacts`, whatever lies deeper; file lists walk the path index a page at a time.

use super::*;

/// What a file list walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Files,
    Folders,
}

fn folder_from_row(row: &AnyRow) -> Result<FolderRecord> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let repo = get_s("repo_key")?;
    let path = get_s("path")?;
    Ok(FolderRecord {
        id: Some(get_i("id")?),
        repo: RepoKey::parse(&repo).map_err(|_| corrupt("repository key", &repo))?,
        path: ArtifactPath::parse(&path).map_err(|_| corrupt("path", &path))?,
        created_ms: get_i("created_ms")?,
        created_by: get_s("created_by")?,
        modified_ms: get_i("modified_ms")?,
        modified_by: get_s("modified_by")?,
    })
}

/// A repository's root, as a folder.
fn root_folder(repo: &Repository) -> FolderRecord {
    FolderRecord {
        id: None,
        repo: repo.key.clone(),
        path: ArtifactPath::root(),
        created_ms: repo.created_ms,
        created_by: String::new(),
        modified_ms: repo.created_ms,
        modified_by: String::new(),
    }
}

/// A path and every folder above it, outermost first (`a`, `a/b`, `a/b/c` for `a/b/c`).
pub(super) fn with_ancestors(path: &ArtifactPath) -> Vec<&str> {
    let mut all = path.ancestors();
    if !path.is_root() {
        all.push(path.as_str());
    }
    all
}

impl Metadata {
    /// Records the folders `paths` (by `by`, at `now`) where they are not recorded yet, in
    /// `tx`, and share-locks them until `tx` ends: a delete of one of them
    /// ([`Self::lock_folders_at`]) then either waits for this write, and sees what it records
    /// below the folder, or went first, and the folder is recorded anew here.
    pub(super) async fn ensure_folders(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        paths: &[&str],
        by: &str,
        now: i64,
    ) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let listed = vec!["?"; paths.len()].join(", ");
        for _ in 0..3 {
            let mut sql = String::from(
                "INSERT INTO folders (repo_key, path, created_ms, created_by, modified_ms, \
                 modified_by) VALUES ",
            );
            sql.push_str(&vec!["(?, ?, ?, ?, ?, ?)"; paths.len()].join(", "));
            sql.push_str(" ON CONFLICT (repo_key, path) DO NOTHING");
            let mut query = sqlx::query(self.sql_built(sql));
            for path in paths {
                query = query
                    .bind(repo.as_str().to_string())
                    .bind(path.to_string())
                    .bind(now)
                    .bind(by.to_string())
                    .bind(now)
                    .bind(by.to_string());
            }
            query.execute(&mut **tx).await.map_err(db_err)?;
            if self.engine == Engine::Sqlite {
                return Ok(());
            }
            let sql = format!(
                "SELECT path FROM folders WHERE repo_key = ? AND path IN ({listed}){}",
                self.for_share()
            );
            let mut query = sqlx::query(self.sql_built(sql)).bind(repo.as_str().to_string());
            for path in paths {
                query = query.bind(path.to_string());
            }
            // Fewer than asked: a delete took some away while this waited for their locks.
            if query.fetch_all(&mut **tx).await.map_err(db_err)?.len() == paths.len() {
                return Ok(());
            }
        }
        Err(Error::Metadata {
            source: format!("the folders of {repo} were deleted again and again during a write")
                .into(),
            retryable: true,
        })
    }

    /// `Conflict` when a file is recorded at any of `paths` (the folders a write needs).
    pub(super) async fn check_no_file_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        paths: &[&str],
        doing: &str,
    ) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT path FROM artifacts WHERE repo_key = ? AND path IN ({}) LIMIT 1",
            vec!["?"; paths.len()].join(", ")
        );
        let mut query =
            sqlx::query_scalar::<_, String>(self.sql_built(sql)).bind(repo.as_str().to_string());
        for path in paths {
            query = query.bind(path.to_string());
        }
        match query.fetch_optional(&mut **tx).await.map_err(db_err)? {
            Some(file) => Err(Error::Conflict(format!(
                "cannot {doing}: {repo}/{file} is a file, not a folder"
            ))),
            None => Ok(()),
        }
    }

    /// The folder recorded at `repo/path` (not the root), on `conn`.
    async fn folder_row(
        &self,
        conn: &mut sqlx::AnyConnection,
        repo: &RepoKey,
        path: &str,
    ) -> Result<Option<FolderRecord>> {
        sqlx::query(self.sql(
            "SELECT id, repo_key, path, created_ms, created_by, modified_ms, modified_by \
             FROM folders WHERE repo_key = ? AND path = ?",
        ))
        .bind(repo.as_str())
        .bind(path)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(folder_from_row)
        .transpose()
    }

    /// Creates the folder `repo/path` and the folders above it (those that exist stay as
    /// they are). `Conflict` when a file is at the path or above it.
    pub async fn create_folder(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        by: &str,
    ) -> Result<FolderRecord> {
        if path.is_root() {
            return Err(Error::InvalidInput(
                "a folder path is required after the repository key".into(),
            ));
        }
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        self.check_repository(&mut tx, repo).await?;
        let folders = with_ancestors(path);
        self.check_no_file_at(&mut tx, repo, &folders, &format!("create {repo}/{path}/"))
            .await?;
        self.ensure_folders(&mut tx, repo, &folders, by, now_ms())
            .await?;
        let created = self
            .folder_row(&mut tx, repo, path.as_str())
            .await?
            .ok_or_else(|| corrupt("folder", path.as_str()))?;
        tx.commit().await.map_err(db_err)?;
        Ok(created)
    }

    /// The folder at `repo/path` (the root of an existing repository is always one).
    pub async fn folder_record(
        &self,
        repo: &Repository,
        path: &ArtifactPath,
    ) -> Result<Option<FolderRecord>> {
        if path.is_root() {
            return Ok(Some(root_folder(repo)));
        }
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        self.folder_row(&mut conn, &repo.key, path.as_str()).await
    }

    /// A folder and its direct children, or `None` if there is no folder at `path`. Costs
    /// two indexed lookups by parent, whatever lies deeper.
    pub async fn folder(
        &self,
        repo: &Repository,
        path: &ArtifactPath,
    ) -> Result<Option<FolderListing>> {
        let Some(folder) = self.folder_record(repo, path).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(self.sql(
            "SELECT path, 1 AS folder FROM folders WHERE repo_key = ? AND parent = ? \
             UNION ALL SELECT path, 0 AS folder FROM artifacts WHERE repo_key = ? AND parent = ?",
        ))
        .bind(repo.key.as_str())
        .bind(path.as_str())
        .bind(repo.key.as_str())
        .bind(path.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let mut children = Vec::with_capacity(rows.len());
        for row in &rows {
            let full: String = row.try_get("path").map_err(db_err)?;
            let folder: i64 = row.try_get("folder").map_err(db_err)?;
            let name = full.rsplit('/').next().unwrap_or_default().to_string();
            children.push(FolderChild {
                name,
                folder: folder != 0,
            });
        }
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(FolderListing { folder, children }))
    }

    /// One page of a file list: the files (or folders) directly in `path`, or with `deep`
    /// everywhere below it, after `after` in path order, at most `limit`. Walks the path
    /// index, so a list of any length is read a page at a time.
    pub async fn list_page(
        &self,
        kind: ListKind,
        repo: &RepoKey,
        path: &ArtifactPath,
        deep: bool,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ListedEntry>> {
        let select = match kind {
            ListKind::Files => {
                "SELECT a.path, a.modified_ms, a.size, a.sha256, b.sha1 FROM artifacts a \
                 JOIN binaries b ON b.sha256 = a.sha256"
            }
            ListKind::Folders => "SELECT a.path, a.modified_ms FROM folders a",
        };
        // One lower bound on the path, so that each page starts where the last one ended
        // in the index (two bounds, and SQLite walks from the folder's start every page).
        let (scope, first, end) = match (deep, path.is_root()) {
            (true, true) => ("", after.unwrap_or("").to_string(), None),
            (true, false) => {
                let (lo, hi) = below(path.as_str());
                let first = after
                    .filter(|a| *a > lo.as_str())
                    .map_or(lo, str::to_string);
                (" AND a.path < ?", first, Some(hi))
            }
            (false, _) => (" AND a.parent = ?", after.unwrap_or("").to_string(), None),
        };
        let sql =
            format!("{select} WHERE a.repo_key = ?{scope} AND a.path > ? ORDER BY a.path LIMIT ?");
        let mut query = sqlx::query(self.sql_built(sql)).bind(repo.as_str().to_string());
        match (deep, end) {
            (true, Some(hi)) => query = query.bind(hi),
            (true, None) => {}
            (false, _) => query = query.bind(path.as_str().to_string()),
        }
        let rows = query
            .bind(first)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let full: String = row.try_get("path").map_err(db_err)?;
                let file = match kind {
                    ListKind::Folders => None,
                    ListKind::Files => {
                        let sha1: String = row.try_get("sha1").map_err(db_err)?;
                        let sha256: String = row.try_get("sha256").map_err(db_err)?;
                        Some(ListedFile {
                            size: to_u64(row.try_get("size").map_err(db_err)?),
                            sha1: sha1.parse().map_err(|_| corrupt("SHA-1", &sha1))?,
                            sha256: sha256.parse().map_err(|_| corrupt("SHA-256", &sha256))?,
                        })
                    }
                };
                Ok(ListedEntry {
                    path: ArtifactPath::parse(&full).map_err(|_| corrupt("path", &full))?,
                    file,
                    modified_ms: row.try_get("modified_ms").map_err(db_err)?,
                })
            })
            .collect()
    }

    /// The file at `path`, or the last modified file below it (Artifactory's
    /// `?lastModified`), with its modification time.
    pub async fn last_modified(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Option<(ArtifactPath, i64)>> {
        let (lo, hi) = below(path.as_str());
        let row = sqlx::query(self.sql(
            "SELECT path, modified_ms FROM artifacts WHERE repo_key = ? \
             AND (path = ? OR (path >= ? AND path < ?) OR ? = '') \
             ORDER BY modified_ms DESC, path LIMIT 1",
        ))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.map(|row| {
            let full: String = row.try_get("path").map_err(db_err)?;
            Ok((
                ArtifactPath::parse(&full).map_err(|_| corrupt("path", &full))?,
                row.try_get("modified_ms").map_err(db_err)?,
            ))
        })
        .transpose()
    }

    /// A folder's properties, sorted.
    pub async fn folder_properties(&self, folder_id: i64) -> Result<Vec<(String, String)>> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        self.read_properties_of(&mut conn, artifacts::PropertyTable::Folder, folder_id)
            .await
    }

    /// Locks the folder rows at `path` and below it until `tx` ends, outermost first (the
    /// order deploys lock them in), before a delete or a move reads what is below the folder:
    /// a deploy below it that recorded its folders first is then committed and seen. SQLite
    /// has one writer at a time, and needs no row locks.
    pub(super) async fn lock_folders_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<()> {
        if self.engine == Engine::Sqlite {
            return Ok(());
        }
        let (lo, hi) = below(path.as_str());
        sqlx::query(self.sql(
            "SELECT id FROM folders WHERE repo_key = ? \
             AND (path = ? OR (path >= ? AND path < ?) OR ? = '') ORDER BY path FOR UPDATE",
        ))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// The folder rows at `path` or below it (every folder of the repository for the root),
    /// in `tx`, outermost first.
    pub(super) async fn folder_rows_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Vec<FolderRecord>> {
        let (lo, hi) = below(path.as_str());
        sqlx::query(self.sql(
            "SELECT id, repo_key, path, created_ms, created_by, modified_ms, modified_by \
             FROM folders WHERE repo_key = ? \
             AND (path = ? OR (path >= ? AND path < ?) OR ? = '') ORDER BY path",
        ))
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(lo)
        .bind(hi)
        .bind(path.as_str())
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?
        .iter()
        .map(folder_from_row)
        .collect()
    }

    /// Deletes the folders at `path` and below it (every folder of the repository for the
    /// root) with their properties, in `tx`; returns how many.
    pub(super) async fn delete_folders_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<u64> {
        let scope = "repo_key = ? AND (path = ? OR (path >= ? AND path < ?) OR ? = '')";
        let sql = format!(
            "DELETE FROM folder_properties WHERE folder_id IN (SELECT id FROM folders WHERE {scope})"
        );
        self.execute_in_scope(tx, sql, repo, path).await?;
        let deleted = self
            .execute_in_scope(tx, format!("DELETE FROM folders WHERE {scope}"), repo, path)
            .await?;
        Ok(deleted)
    }
}
