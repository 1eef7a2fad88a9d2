//! Artifacts: committed, looked up, listed by folder, moved or copied, and their properties.

use super::*;

/// Which entries a property belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum PropertyTable {
    Artifact,
    Folder,
}

impl PropertyTable {
    fn select(self) -> &'static str {
        match self {
            Self::Artifact => {
                "SELECT name, value FROM artifact_properties WHERE artifact_id = ? \
                 ORDER BY name, value"
            }
            Self::Folder => {
                "SELECT name, value FROM folder_properties WHERE folder_id = ? ORDER BY name, value"
            }
        }
    }

    fn delete_named(self) -> &'static str {
        match self {
            Self::Artifact => "DELETE FROM artifact_properties WHERE artifact_id = ? AND name = ?",
            Self::Folder => "DELETE FROM folder_properties WHERE folder_id = ? AND name = ?",
        }
    }

    fn insert(self) -> &'static str {
        match self {
            Self::Artifact => {
                "INSERT INTO artifact_properties (artifact_id, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING"
            }
            Self::Folder => {
                "INSERT INTO folder_properties (folder_id, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING"
            }
        }
    }
}

/// What one transaction has read and written already, so that the deploys it holds (a group
/// commit's) ask the database once: each repository's immutable paths, the folders ensured.
/// Valid only in the transaction it was made for, and dropped with it (also when that rolls
/// back): within it, nothing else can change a repository or remove a folder (SQLite holds
/// the write lock; elsewhere the folders' rows are locked `FOR SHARE`).
#[derive(Debug, Default)]
pub(super) struct InTransaction {
    immutable: std::collections::HashMap<RepoKey, ImmutablePaths>,
    folders: std::collections::HashSet<(RepoKey, String)>,
}

/// What [`Metadata::check_file_path`] found at a path that a file may take.
#[derive(Debug, Default)]
pub(super) struct PathState {
    /// The SHA-256 (hex) of the file there now, if there is one.
    pub(super) current: Option<String>,
    /// The folders above the path that exist.
    pub(super) folders: Vec<String>,
}

/// Counts a deploy whose bytes were recorded already: it stored nothing new.
pub(super) fn count_reused(reused: bool) {
    if reused {
        metrics::counter!("stowage_dedup_total").increment(1);
    }
}

impl Metadata {
    /// Records an artifact whose binary is stored: the binary row if new, the artifact (created
    /// or overwritten), its properties. Fails with `RepositoryNotFound` for a missing repository and with
    /// `Conflict` when a file and a folder would share a path.
    pub async fn commit_artifact(&self, new: &NewArtifact) -> Result<ArtifactRecord> {
        match &self.group {
            Some(group) => self.commit_in_group(group, new).await,
            None => self.commit_artifact_alone(new).await,
        }
    }

    /// [`Self::commit_artifact`] in a transaction of its own.
    pub(super) async fn commit_artifact_alone(&self, new: &NewArtifact) -> Result<ArtifactRecord> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let (record, reused) = self
            .record_artifact(&mut tx, &mut InTransaction::default(), new)
            .await?;
        tx.commit().await.map_err(db_err)?;
        drop(writes);
        count_reused(reused);
        Ok(record)
    }

    /// What [`Self::commit_artifact`] writes, in `tx` (which the caller commits): the record
    /// as written, and whether its binary was recorded already (a deduplicated deploy).
    /// `known` is what `tx` has read and written already (for the deploys of one group).
    pub(super) async fn record_artifact(
        &self,
        tx: &mut Transaction<'static, Any>,
        known: &mut InTransaction,
        new: &NewArtifact,
    ) -> Result<(ArtifactRecord, bool)> {
        let now = now_ms();
        let immutable = match known.immutable.get(&new.repo) {
            Some(immutable) => immutable.clone(),
            None => {
                let immutable = self.check_repository(tx, &new.repo).await?;
                known.immutable.insert(new.repo.clone(), immutable.clone());
                immutable
            }
        };
        let PathState { current, folders } = self.check_file_path(tx, &new.repo, &new.path).await?;
        if self.engine == Engine::Sqlite {
            // Nothing can delete them before this transaction ends: it holds the write lock.
            // (Elsewhere `ensure_folders` locks them against a concurrent delete.)
            known
                .folders
                .extend(folders.into_iter().map(|folder| (new.repo.clone(), folder)));
        }
        let folders: Vec<&str> = new
            .path
            .ancestors()
            .into_iter()
            .filter(|folder| {
                !known
                    .folders
                    .contains(&(new.repo.clone(), folder.to_string()))
            })
            .collect();
        self.ensure_folders(tx, &new.repo, &folders, &new.by, now)
            .await?;
        known.folders.extend(
            folders
                .iter()
                .map(|folder| (new.repo.clone(), folder.to_string())),
        );
        let sha256 = new.checksums.sha256.to_hex();
        if immutable.matching(new.path.as_str()).is_some() {
            match &current {
                // The same bytes again (a retried release): nothing changes.
                Some(current) if *current == sha256 => {
                    let record = self.record_at(tx, &new.repo, &new.path).await?;
                    return Ok((record, false));
                }
                Some(_) => immutable.allow_path(&new.repo, &new.path, "overwritten")?,
                None => {}
            }
        }
        let new_binary = sqlx::query(self.sql(
            "INSERT INTO binaries (sha256, sha1, md5, size, created_ms) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (sha256) DO NOTHING",
        ))
        .bind(&sha256)
        .bind(new.checksums.sha1.to_hex())
        .bind(new.checksums.md5.to_hex())
        .bind(to_i64(new.size))
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?
        .rows_affected()
            > 0;
        sqlx::query(self.sql(
            "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
             modified_ms, modified_by, original_sha1, original_md5, original_sha256) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
             size = excluded.size, modified_ms = excluded.modified_ms, \
             modified_by = excluded.modified_by, original_sha1 = excluded.original_sha1, \
             original_md5 = excluded.original_md5, original_sha256 = excluded.original_sha256",
        ))
        .bind(new.repo.as_str())
        .bind(new.path.as_str())
        .bind(&sha256)
        .bind(to_i64(new.size))
        .bind(now)
        .bind(&new.by)
        .bind(now)
        .bind(&new.by)
        .bind(new.original.sha1.map(|d| d.to_hex()))
        .bind(new.original.md5.map(|d| d.to_hex()))
        .bind(new.original.sha256.map(|d| d.to_hex()))
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        // The record as written (properties are not part of it), and with it the id.
        let record = self.record_at(tx, &new.repo, &new.path).await?;
        if current.is_some() {
            // A replaced file's properties go with it; a new file has none.
            sqlx::query(self.sql("DELETE FROM artifact_properties WHERE artifact_id = ?"))
                .bind(record.id)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        self.insert_properties(tx, record.id, &new.properties)
            .await?;
        Ok((record, !new_binary))
    }

    pub(super) async fn insert_properties(
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

    /// That `repo` exists (`RepositoryNotFound` if not), and its immutable paths, read in the
    /// transaction that is about to change its files.
    pub(super) async fn check_repository(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
    ) -> Result<ImmutablePaths> {
        let config: Option<String> =
            sqlx::query_scalar(self.sql("SELECT config FROM repositories WHERE repo_key = ?"))
                .bind(repo.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
        let config = config.ok_or_else(|| Error::RepositoryNotFound {
            key: repo.to_string(),
        })?;
        let config: serde_json::Value =
            serde_json::from_str(&config).map_err(|_| corrupt("config", &config))?;
        ImmutablePaths::from_config(&config)
    }

    /// A file may not sit below another file, nor where a folder is: `Conflict` if it would.
    /// Otherwise what is at the path now, and which of the folders above it exist. One query.
    pub(super) async fn check_file_path(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<PathState> {
        if path.is_root() {
            return Err(Error::InvalidInput(
                "a file path is required after the repository key".into(),
            ));
        }
        let ancestors = path.ancestors();
        let mut sql = String::from(
            "SELECT 'folder', path FROM folders WHERE repo_key = ? AND path = ? \
             UNION ALL SELECT 'self', sha256 FROM artifacts WHERE repo_key = ? AND path = ?",
        );
        if !ancestors.is_empty() {
            let listed = vec!["?"; ancestors.len()].join(", ");
            sql.push_str(&format!(
                " UNION ALL SELECT 'file', path FROM artifacts WHERE repo_key = ? AND path IN \
                 ({listed}) UNION ALL SELECT 'parent', path FROM folders WHERE repo_key = ? \
                 AND path IN ({listed})"
            ));
        }
        let mut query = sqlx::query_as::<_, (String, String)>(self.sql_built(sql));
        for _ in 0..2 {
            query = query.bind(repo.as_str()).bind(path.as_str());
        }
        if !ancestors.is_empty() {
            for _ in 0..2 {
                query = query.bind(repo.as_str());
                for ancestor in &ancestors {
                    query = query.bind(*ancestor);
                }
            }
        }
        let mut state = PathState::default();
        for (kind, value) in query.fetch_all(&mut **tx).await.map_err(db_err)? {
            match kind.as_str() {
                "folder" => {
                    return Err(Error::Conflict(format!(
                        "cannot deploy {repo}/{path}: it is a folder; delete the folder first"
                    )));
                }
                "file" => {
                    return Err(Error::Conflict(format!(
                        "cannot deploy {repo}/{path}: {repo}/{value} is a file, not a folder"
                    )));
                }
                "parent" => state.folders.push(value),
                _ => state.current = Some(value),
            }
        }
        Ok(state)
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

    /// One artifact, asked of the primary past every cache: what a conditional write holds
    /// its conditions against, under the path's lock.
    pub async fn artifact_on_primary(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Option<ArtifactRecord>> {
        sqlx::query(self.sql(select_artifacts!("WHERE a.repo_key = ? AND a.path = ?")))
            .bind(repo.as_str())
            .bind(path.as_str())
            .fetch_optional(self.fresh_reads())
            .await
            .map_err(db_err)?
            .as_ref()
            .map(artifact_from_row)
            .transpose()
    }

    /// An artifact's properties, sorted.
    pub async fn properties(&self, artifact_id: i64) -> Result<Vec<(String, String)>> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        self.read_properties(&mut conn, artifact_id).await
    }

    /// An artifact's properties, sorted, on a given connection (a pool's or a transaction's).
    pub(super) async fn read_properties(
        &self,
        conn: &mut sqlx::AnyConnection,
        artifact_id: i64,
    ) -> Result<Vec<(String, String)>> {
        self.read_properties_of(conn, PropertyTable::Artifact, artifact_id)
            .await
    }

    /// The properties of an artifact's or a folder's row `id`, sorted, on `conn`.
    pub(super) async fn read_properties_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        table: PropertyTable,
        id: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(self.sql(table.select()))
            .bind(id)
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
    /// The artifact at `repo/path`, read in `tx` (one statement: the record carries its id).
    async fn record_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<ArtifactRecord> {
        let row = sqlx::query(self.sql(select_artifacts!("WHERE a.repo_key = ? AND a.path = ?")))
            .bind(repo.as_str())
            .bind(path.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
        artifact_from_row(&row)
    }

    pub(super) async fn artifact_id(
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

    /// The artifact rows at `path` (a file) or below it (a folder; everything for the root),
    /// locked until `tx` ends.
    pub(super) async fn rows_at(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        path: &ArtifactPath,
    ) -> Result<Vec<AnyRow>> {
        let (lo, hi) = below(path.as_str());
        // A locking read: it sees the latest committed rows (on MySQL too, whose plain reads
        // keep the transaction's first snapshot), and holds them for the write that follows.
        let sql = format!(
            "SELECT * FROM artifacts WHERE repo_key = ? \
             AND (path = ? OR (path >= ? AND path < ?) OR ? = '') ORDER BY path{}",
            self.for_update()
        );
        sqlx::query(self.sql_built(sql))
            .bind(repo.as_str())
            .bind(path.as_str())
            .bind(lo)
            .bind(hi)
            .bind(path.as_str())
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)
    }

    /// Sets properties (each name's values replace the ones it had) on a file, or on a
    /// folder and, with `recursive`, everything below it; returns how many entries changed.
    pub async fn set_properties(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        recursive: bool,
        properties: &[(String, Vec<String>)],
    ) -> Result<u64> {
        let edits = properties.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        self.edit_properties(repo, path, recursive, edits).await
    }

    /// Removes the named properties from a file, or from a folder and, with `recursive`,
    /// everything below it.
    pub async fn delete_properties(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        recursive: bool,
        names: &[String],
    ) -> Result<u64> {
        let none: &[String] = &[];
        let edits = names.iter().map(|n| (n.as_str(), none));
        self.edit_properties(repo, path, recursive, edits).await
    }

    /// Gives each named property exactly the values listed (none: removes it) on the file or
    /// folder at `path` and, with `recursive`, on every file and folder below it, in one
    /// transaction; returns how many entries.
    async fn edit_properties<'a>(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        recursive: bool,
        edits: impl Iterator<Item = (&'a str, &'a [String])> + Clone,
    ) -> Result<u64> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let mut entries = Vec::new();
        for row in self.rows_at(&mut tx, repo, path).await? {
            let at: String = row.try_get("path").map_err(db_err)?;
            if recursive || at == path.as_str() {
                entries.push((
                    PropertyTable::Artifact,
                    row.try_get::<i64, _>("id").map_err(db_err)?,
                ));
            }
        }
        for folder in self.folder_rows_at(&mut tx, repo, path).await? {
            if let Some(id) = folder.id
                && (recursive || folder.path == *path)
            {
                entries.push((PropertyTable::Folder, id));
            }
        }
        for (table, id) in &entries {
            for (name, values) in edits.clone() {
                sqlx::query(self.sql(table.delete_named()))
                    .bind(*id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                for value in values {
                    sqlx::query(self.sql(table.insert()))
                        .bind(*id)
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(entries.len() as u64)
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
}

/// Which original checksum a checksum file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalChecksum {
    Sha1,
    Sha256,
    Md5,
}

impl Metadata {
    /// Records `hex` as the original (client-declared) checksum of the file at `repo/path`;
    /// the record as it is then, `None` when there is no file there.
    pub async fn record_original_checksum(
        &self,
        repo: &RepoKey,
        path: &ArtifactPath,
        which: OriginalChecksum,
        hex: &str,
    ) -> Result<Option<ArtifactRecord>> {
        let sql = match which {
            OriginalChecksum::Sha1 => {
                "UPDATE artifacts SET original_sha1 = ? WHERE repo_key = ? AND path = ?"
            }
            OriginalChecksum::Sha256 => {
                "UPDATE artifacts SET original_sha256 = ? WHERE repo_key = ? AND path = ?"
            }
            OriginalChecksum::Md5 => {
                "UPDATE artifacts SET original_md5 = ? WHERE repo_key = ? AND path = ?"
            }
        };
        {
            let writes = self.writes();
            sqlx::query(self.sql(sql))
                .bind(hex)
                .bind(repo.as_str())
                .bind(path.as_str())
                .execute(writes.pool())
                .await
                .map_err(db_err)?;
        }
        self.artifact_on_primary(repo, path).await
    }
}
