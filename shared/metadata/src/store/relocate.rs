//! Moves and copies (metadata only: the binaries are shared, never touched), a page of files
//! at a time: each page's files are read with a locking read, checked (permissions,
//! immutable paths, file/folder clashes, overwrites) and then written with statements over
//! the whole page, so memory stays flat and round trips are a few per thousand files.

use std::collections::{BTreeSet, HashMap};

use super::*;

/// Files moved or copied per page.
const PAGE: usize = 1000;

impl Metadata {
    /// Moves or copies a file, or a folder with everything below it (its folders too, empty
    /// ones and their properties), to `dst`. A file already at a target is overwritten; a
    /// file and a folder may not swap places; a target inside the source is refused. With
    /// `dry`, nothing changes. Returns how many files.
    pub async fn relocate(&self, relocation: &Relocation<'_>) -> Result<u64> {
        let Relocation {
            src_repo,
            src,
            dst_repo,
            dst,
            copy,
            dry,
            ..
        } = *relocation;
        if src_repo == dst_repo && within(dst, src) {
            return Err(Error::InvalidInput(format!(
                "cannot {} {src_repo}/{src} onto or into itself",
                if copy { "copy" } else { "move" }
            )));
        }
        let now = now_ms();
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let immutables = (
            self.check_repository(&mut tx, src_repo).await?,
            self.check_repository(&mut tx, dst_repo).await?,
        );
        if !copy {
            self.lock_folders_at(&mut tx, src_repo, src).await?;
        }
        let folders = self.folder_rows_at(&mut tx, src_repo, src).await?;
        // The folders first, outermost first, with their properties: empty ones move too.
        for folder in &folders {
            let target = target_of(relocation, folder.path.as_str())?;
            let needed = folders::with_ancestors(&target);
            let doing = format!("create {dst_repo}/{target}/");
            self.check_no_file_at(&mut tx, dst_repo, &needed, &doing)
                .await?;
            self.ensure_folders(&mut tx, dst_repo, &needed, relocation.by, now)
                .await?;
            sqlx::query(self.sql(
                "INSERT INTO folder_properties (folder_id, name, value) \
                 SELECT f.id, p.name, p.value FROM folders f, folder_properties p \
                 WHERE f.repo_key = ? AND f.path = ? AND p.folder_id = ? ON CONFLICT DO NOTHING",
            ))
            .bind(dst_repo.as_str())
            .bind(target.as_str())
            .bind(folder.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let mut files = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .source_page(&mut tx, src_repo, src, after.as_deref())
                .await?;
            if page.is_empty() {
                break;
            }
            let last: String = page[page.len() - 1].try_get("path").map_err(db_err)?;
            self.relocate_page(&mut tx, relocation, &immutables, &page, now)
                .await?;
            files += page.len() as u64;
            if page.len() < PAGE {
                break;
            }
            after = Some(last);
        }
        if files == 0 && folders.is_empty() {
            return Err(Error::NotFound {
                what: format!("{src_repo}/{src}"),
            });
        }
        if !copy {
            self.delete_folders_at(&mut tx, src_repo, src).await?;
        }
        if dry {
            tx.rollback().await.map_err(db_err)?;
        } else {
            tx.commit().await.map_err(db_err)?;
        }
        Ok(files)
    }

    /// The next page of source rows: the file at `src` (one row, on the first page), or the
    /// files below it after `after`, in path order, locked.
    async fn source_page(
        &self,
        tx: &mut Transaction<'static, Any>,
        repo: &RepoKey,
        src: &ArtifactPath,
        after: Option<&str>,
    ) -> Result<Vec<AnyRow>> {
        if after.is_none() && !src.is_root() {
            let sql = format!(
                "SELECT * FROM artifacts WHERE repo_key = ? AND path = ?{}",
                self.for_update()
            );
            let file = sqlx::query(self.sql_built(sql))
                .bind(repo.as_str().to_string())
                .bind(src.as_str().to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
            if let Some(file) = file {
                return Ok(vec![file]);
            }
        }
        // One lower bound on the path (see `list_page`).
        let (lo, hi) = if src.is_root() {
            (String::new(), None)
        } else {
            let (lo, hi) = below(src.as_str());
            (lo, Some(hi))
        };
        let first = after
            .filter(|a| *a > lo.as_str())
            .map_or(lo, str::to_string);
        let sql = format!(
            "SELECT * FROM artifacts WHERE repo_key = ? AND path > ?{} ORDER BY path LIMIT ?{}",
            if hi.is_some() { " AND path < ?" } else { "" },
            self.for_update()
        );
        let mut query = sqlx::query(self.sql_built(sql))
            .bind(repo.as_str().to_string())
            .bind(first);
        if let Some(hi) = hi {
            query = query.bind(hi);
        }
        query
            .bind(PAGE as i64)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)
    }

    /// Checks and writes one page of source rows: see the module's words.
    async fn relocate_page(
        &self,
        tx: &mut Transaction<'static, Any>,
        relocation: &Relocation<'_>,
        (src_immutable, dst_immutable): &(ImmutablePaths, ImmutablePaths),
        page: &[AnyRow],
        now: i64,
    ) -> Result<()> {
        let Relocation {
            src_repo,
            dst_repo,
            by,
            copy,
            check_source,
            check_target,
            check_overwrite,
            ..
        } = *relocation;
        let mut sources = Vec::with_capacity(page.len());
        for row in page {
            let old: String = row.try_get("path").map_err(db_err)?;
            let target = target_of(relocation, &old)?;
            if !copy {
                src_immutable.allow(src_repo, &old, "moved")?;
            }
            check_source(src_repo, &old)?;
            check_target(dst_repo, target.as_str())?;
            sources.push((row, target));
        }
        let targets: Vec<String> = sources
            .iter()
            .map(|(_, t)| t.as_str().to_string())
            .collect();
        // A file may not land where a folder is, nor below a file.
        let folder_clash = self.recorded_in(tx, "folders", dst_repo, &targets).await?;
        if let Some(folder) = folder_clash.keys().next() {
            return Err(Error::Conflict(format!(
                "cannot deploy {dst_repo}/{folder}: it is a folder; delete the folder first"
            )));
        }
        let above: BTreeSet<&str> = sources.iter().flat_map(|(_, t)| t.ancestors()).collect();
        let above: Vec<&str> = above.into_iter().collect();
        self.check_no_file_at(tx, dst_repo, &above, &format!("deploy into {dst_repo}"))
            .await?;
        // Overwrites of other bytes need their own permission and may not touch released files.
        let existing = self
            .recorded_in(tx, "artifacts", dst_repo, &targets)
            .await?;
        for (row, target) in &sources {
            let sha256: String = row.try_get("sha256").map_err(db_err)?;
            if existing
                .get(target.as_str())
                .is_some_and(|(_, current)| *current != sha256)
            {
                dst_immutable.allow_path(dst_repo, target, "overwritten")?;
                check_overwrite(dst_repo, target.as_str())?;
            }
        }
        self.ensure_folders(tx, dst_repo, &above, by, now).await?;
        // The targets, in one statement.
        let mut sql = String::from(
            "INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, \
             modified_ms, modified_by, original_sha1, original_md5, original_sha256) VALUES ",
        );
        sql.push_str(&vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; sources.len()].join(", "));
        sql.push_str(
            " ON CONFLICT (repo_key, path) DO UPDATE SET sha256 = excluded.sha256, \
             size = excluded.size, modified_ms = excluded.modified_ms, \
             modified_by = excluded.modified_by, original_sha1 = excluded.original_sha1, \
             original_md5 = excluded.original_md5, original_sha256 = excluded.original_sha256",
        );
        let mut query = sqlx::query(self.sql_built(sql));
        for (row, target) in &sources {
            let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
            let original = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
            let (created_ms, created_by) = if copy {
                (now, by.to_string())
            } else {
                (
                    row.try_get::<i64, _>("created_ms").map_err(db_err)?,
                    get_s("created_by")?,
                )
            };
            query = query
                .bind(dst_repo.as_str().to_string())
                .bind(target.as_str().to_string())
                .bind(get_s("sha256")?)
                .bind(row.try_get::<i64, _>("size").map_err(db_err)?)
                .bind(created_ms)
                .bind(created_by)
                .bind(now)
                .bind(by.to_string())
                .bind(original("original_sha1")?)
                .bind(original("original_md5")?)
                .bind(original("original_sha256")?);
        }
        query.execute(&mut **tx).await.map_err(db_err)?;
        // Each target gets its source's properties, and only those.
        let ids = self
            .recorded_in(tx, "artifacts", dst_repo, &targets)
            .await?;
        let mut pairs = Vec::with_capacity(sources.len());
        for (row, target) in &sources {
            let from: i64 = row.try_get("id").map_err(db_err)?;
            let (to, _) = *ids
                .get(target.as_str())
                .ok_or_else(|| corrupt("moved artifact", target.as_str()))?;
            pairs.push((from, to));
        }
        let (sources, targets): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        self.delete_where_in(tx, "artifact_properties", "artifact_id", &targets)
            .await?;
        let sql = format!(
            "INSERT INTO artifact_properties (artifact_id, name, value) \
             SELECT CASE artifact_id {} END, name, value FROM artifact_properties \
             WHERE artifact_id IN ({})",
            vec!["WHEN ? THEN ?"; pairs.len()].join(" "),
            vec!["?"; pairs.len()].join(", ")
        );
        let mut query = sqlx::query(self.sql_built(sql));
        for (from, to) in &pairs {
            query = query.bind(*from).bind(*to);
        }
        for from in &sources {
            query = query.bind(*from);
        }
        query.execute(&mut **tx).await.map_err(db_err)?;
        if !copy {
            for (table, column) in [
                ("artifact_properties", "artifact_id"),
                ("download_stats", "artifact_id"),
                ("artifacts", "id"),
            ] {
                self.delete_where_in(tx, table, column, &sources).await?;
            }
        }
        Ok(())
    }

    /// Deletes the rows of `table` whose `column` is one of `ids`, in `tx`.
    async fn delete_where_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        table: &'static str,
        column: &'static str,
        ids: &[i64],
    ) -> Result<()> {
        let sql = format!(
            "DELETE FROM {table} WHERE {column} IN ({})",
            vec!["?"; ids.len()].join(", ")
        );
        let mut query = sqlx::query(self.sql_built(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await.map_err(db_err)?;
        Ok(())
    }

    /// Of `paths`, those recorded in `table` (`artifacts` or `folders`) of `repo`: each with
    /// its row's id and SHA-256 (folders: empty).
    async fn recorded_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        table: &'static str,
        repo: &RepoKey,
        paths: &[String],
    ) -> Result<HashMap<String, (i64, String)>> {
        let column = if table == "artifacts" { "sha256" } else { "''" };
        let sql = format!(
            "SELECT id, path, {column} AS sha256 FROM {table} WHERE repo_key = ? \
             AND path IN ({})",
            vec!["?"; paths.len()].join(", ")
        );
        let mut query = sqlx::query(self.sql_built(sql)).bind(repo.as_str().to_string());
        for path in paths {
            query = query.bind(path.clone());
        }
        query
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("path").map_err(db_err)?,
                    (
                        row.try_get("id").map_err(db_err)?,
                        row.try_get("sha256").map_err(db_err)?,
                    ),
                ))
            })
            .collect()
    }
}

/// Whether `inner` is `outer` or below it (everything is below the root).
fn within(inner: &ArtifactPath, outer: &ArtifactPath) -> bool {
    outer.is_root() || inner == outer || inner.as_str().starts_with(&format!("{outer}/"))
}

/// Where an entry at `old` (the source or below it) goes. A target inside the source (a
/// folder moved onto a folder above it whose names repeat) would overwrite what is still to
/// be moved: refused.
fn target_of(relocation: &Relocation<'_>, old: &str) -> Result<ArtifactPath> {
    let Relocation {
        src_repo,
        src,
        dst_repo,
        dst,
        copy,
        ..
    } = *relocation;
    let rest = old
        .get(src.as_str().len()..)
        .unwrap_or_default()
        .trim_start_matches('/');
    let target = match (dst.is_root(), rest.is_empty()) {
        (_, true) if dst.is_root() => ArtifactPath::parse(src.name()),
        (_, true) => Ok(dst.clone()),
        (true, false) => ArtifactPath::parse(rest),
        (false, false) => ArtifactPath::parse(&format!("{dst}/{rest}")),
    }?;
    if src_repo == dst_repo && !src.is_root() && within(&target, src) {
        return Err(Error::InvalidInput(format!(
            "cannot {} {src_repo}/{src} to {dst_repo}/{dst}: {old} would land on {target}, \
             inside what is being {}",
            if copy { "copy" } else { "move" },
            if copy { "copied" } else { "moved" }
        )));
    }
    Ok(target)
}
