//! Backups and restores (see `crate::backup` for the target's layout).
//!
//! A backup holds garbage collection's removals off while it runs (the lock collections take
//! to remove), so every binary of its metadata snapshot is still there when it is copied. It
//! exports the metadata from one snapshot, copies the binaries of that snapshot that the
//! target lacks (each checked against its digest on the way in), writes the configuration
//! without its secrets, and last the manifest: a backup without a manifest is incomplete, and
//! a backup run again after a cut copies only what the cut one did not. Then it keeps the
//! newest `keep` complete backups, removes the rest, and the binaries no kept backup names.
//!
//! A restore goes into an empty store: it copies the backup's binaries into this store's
//! filestore, each checked against its digest, and refuses, naming the damaged binaries and
//! the artifacts that hold them, when one does not hash to its name. Only then does it import
//! the metadata, in one transaction.

use std::collections::HashSet;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};
use stowage_core::{
    BinaryProvider, BinaryProviderExt as _, Error, ExpectedChecksums, PutOptions, Result, Sha256,
};

use super::Stowage;
use super::progress::{CopyProgress, ProgressCell, TaskStart};
use crate::backup::{BackupTarget, file_sha256};
use crate::security::Caller;

/// Binaries copied at once.
const COPIES_AT_ONCE: usize = 4;

/// What a backup is asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Complete backups to keep (the newest); older ones are removed. At least 1.
    pub keep: usize,
    /// The configuration to keep with the backup, its secrets already left out.
    pub config_text: Option<String>,
    /// A local directory for the export while it is written and uploaded.
    pub work_dir: PathBuf,
}

/// What a backup did.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub id: String,
    pub tables: Vec<(String, u64)>,
    /// Binaries the backup names, and their bytes.
    pub binaries: u64,
    pub bytes: u64,
    /// Of them, copied now (the others were in the target already).
    pub copied: u64,
    pub copied_bytes: u64,
    /// Older backups removed (beyond `keep`, or incomplete), and binaries no kept backup names.
    pub removed_backups: Vec<String>,
    pub removed_binaries: u64,
    pub elapsed_ms: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub id: String,
    pub tables: Vec<(String, u64)>,
    pub binaries: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

/// A new backup's id: its UTC time, which sorts as it was taken.
fn new_id() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The binaries (digest, size) of an export, in its order.
fn binaries_of(export: &Path) -> Result<Vec<(Sha256, u64)>> {
    let file = std::fs::File::open(export).map_err(|e| {
        Error::InvalidInput(format!("cannot read the export {}: {e}", export.display()))
    })?;
    let mut out = Vec::new();
    stowage_metadata::for_each_row(BufReader::new(file), "binaries", |row| {
        let digest = row
            .first()
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Sha256>().ok())
            .ok_or_else(|| Error::InvalidInput("the export holds a bad binary digest".into()))?;
        let size = row.get(3).and_then(Value::as_u64).unwrap_or(0);
        out.push((digest, size));
        Ok(())
    })?;
    Ok(out)
}

/// The `repo/path` of every artifact and trash entry of an export that holds one of `digests`.
fn holders_of(export: &Path, digests: &HashSet<Sha256>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (table, what) in [("artifacts", ""), ("trash", " (in the trash)")] {
        let file = std::fs::File::open(export)
            .map_err(|e| Error::InvalidInput(format!("cannot read the export: {e}")))?;
        stowage_metadata::for_each_row(BufReader::new(file), table, |row| {
            let digest = row
                .get(3)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            if digest.is_some_and(|d| digests.contains(&d)) {
                let repo = row.get(1).and_then(Value::as_str).unwrap_or("?");
                let path = row.get(2).and_then(Value::as_str).unwrap_or("?");
                out.push(format!("{repo}/{path}{what}"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Copies `digest` from `from` to `to`, checked against the digest by `to`'s put.
pub(crate) async fn copy_binary(
    from: &dyn BinaryProvider,
    to: &dyn BinaryProvider,
    digest: &Sha256,
    size: u64,
) -> Result<bool> {
    let read = from.get(digest).await?;
    let put = to
        .put_opts(
            read.stream,
            PutOptions {
                expected: ExpectedChecksums {
                    sha256: Some(*digest),
                    ..ExpectedChecksums::default()
                },
                size: Some(size),
            },
        )
        .await?;
    Ok(put.created)
}

fn manifest_name(id: &str) -> String {
    format!("backups/{id}/manifest.json")
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("cannot write {}: {e}", path.display())))?;
    std::fs::write(path, text)
        .map_err(|e| Error::InvalidInput(format!("cannot write {}: {e}", path.display())))
}

impl Stowage {
    /// Backs up this Stowage into `target` (see the module's documentation).
    pub async fn backup(
        &self,
        caller: &Caller,
        target: &BackupTarget,
        options: &BackupOptions,
        progress: &ProgressCell,
    ) -> Result<BackupReport> {
        self.security.require_admin(caller, "back up Stowage")?;
        let started = Instant::now();
        progress.start("metadata", 0, 0);
        let done = self
            .under_lock(Self::gc_removals(), || {
                self.backup_held(target, options, progress)
            })
            .await;
        progress.stop();
        let mut report = done?;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(id = %report.id, binaries = report.binaries, copied = report.copied, copied_bytes = report.copied_bytes, "backup finished");
        Ok(report)
    }

    async fn backup_held(
        &self,
        target: &BackupTarget,
        options: &BackupOptions,
        progress: &ProgressCell,
    ) -> Result<BackupReport> {
        let id = new_id();
        let work = options.work_dir.join(format!("backup-{id}"));
        std::fs::create_dir_all(&work)
            .map_err(|e| Error::InvalidInput(format!("cannot create {}: {e}", work.display())))?;
        let result = self
            .backup_into(&id, &work, target, options, progress)
            .await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    async fn backup_into(
        &self,
        id: &str,
        work: &Path,
        target: &BackupTarget,
        options: &BackupOptions,
        progress: &ProgressCell,
    ) -> Result<BackupReport> {
        // 1. The metadata, from one snapshot.
        let export = work.join("metadata.jsonl");
        let summary = {
            let file = std::fs::File::create(&export).map_err(|e| {
                Error::InvalidInput(format!("cannot create {}: {e}", export.display()))
            })?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            self.metadata.export(&mut out, |_, _| {}).await?
        };
        let binaries = binaries_of(&export)?;
        let bytes: u64 = binaries.iter().map(|(_, s)| s).sum();
        progress.update(|p| {
            p.phase = "binaries";
            p.binaries_total = binaries.len() as u64;
            p.bytes_total = bytes;
        });
        // 2. The binaries the target lacks.
        let copied =
            futures::stream::iter(binaries.iter().copied().map(|(digest, size)| async move {
                let there = target.binaries.exists(&digest).await?;
                let created = if there {
                    false
                } else {
                    copy_binary(&*self.provider, &*target.binaries, &digest, size)
                        .await
                        .map_err(|e| match e {
                            Error::NotFound { .. } => Error::Unavailable(format!(
                                "binary {digest} of the metadata snapshot is not in the filestore: \
                             run `stowage verify` (the store lost it), then back up again"
                            )),
                            other => other,
                        })?
                };
                progress.update(|p| {
                    p.binaries_done += 1;
                    p.bytes_done += size;
                });
                Ok::<_, Error>(if created { Some(size) } else { None })
            }))
            .buffer_unordered(COPIES_AT_ONCE)
            .try_fold((0u64, 0u64), |(n, b), c| async move {
                Ok(match c {
                    Some(size) => (n + 1, b + size),
                    None => (n, b),
                })
            })
            .await?;
        // 3. The files, the manifest last.
        progress.update(|p| p.phase = "finishing");
        let dir = format!("backups/{id}");
        target
            .files
            .put(&format!("{dir}/metadata.jsonl"), &export)
            .await?;
        if let Some(config) = &options.config_text {
            let path = work.join("config.toml");
            std::fs::write(&path, config).map_err(|e| {
                Error::InvalidInput(format!("cannot write {}: {e}", path.display()))
            })?;
            target
                .files
                .put(&format!("{dir}/config.toml"), &path)
                .await?;
        }
        let manifest = json!({
            "format": "stowage-backup",
            "version": 1,
            "id": id,
            "createdMs": stowage_metadata::now_ms(),
            "stowageVersion": env!("CARGO_PKG_VERSION"),
            "schema": summary.schema,
            "metadata": {
                "file": "metadata.jsonl",
                "sha256": file_sha256(&export)?.0.to_hex(),
                "bytes": std::fs::metadata(&export).map(|m| m.len()).unwrap_or(0),
            },
            "tables": summary.tables.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "binaries": { "count": binaries.len(), "bytes": bytes, "copied": copied.0, "copiedBytes": copied.1 },
            "config": options.config_text.as_ref().map(|_| "config.toml"),
        });
        let manifest_path = work.join("manifest.json");
        write_json(&manifest_path, &manifest)?;
        target.files.put(&manifest_name(id), &manifest_path).await?;
        // 4. Keep the newest `keep`.
        let (removed_backups, removed_binaries) = self
            .keep_newest(target, id, options.keep.max(1), &binaries, work)
            .await?;
        Ok(BackupReport {
            id: id.to_string(),
            tables: summary.tables,
            binaries: binaries.len() as u64,
            bytes,
            copied: copied.0,
            copied_bytes: copied.1,
            removed_backups,
            removed_binaries,
            elapsed_ms: 0,
        })
    }

    /// Starts a backup in the background and returns at once; its progress and outcome are
    /// in [`Stowage::background_backup_status`]. One at a time per node; across nodes, the
    /// lock every backup holds (collection's removals) keeps them one after another.
    pub async fn start_backup(
        self: &Arc<Self>,
        caller: &Caller,
        target: BackupTarget,
        options: BackupOptions,
    ) -> Result<TaskStart> {
        self.security.require_admin(caller, "back up Stowage")?;
        if !self.background_backup.progress.try_start("waiting") {
            return Ok(TaskStart::AlreadyRunning);
        }
        let this = Arc::clone(self);
        let caller = caller.clone();
        tokio::spawn(async move {
            let state = Arc::clone(&this.background_backup);
            let done = this
                .backup(&caller, &target, &options, &state.progress)
                .await;
            if let Err(e) = &done {
                tracing::warn!(error = %e, "the backup asked for by the API failed");
            }
            state.finished(&done);
        });
        Ok(TaskStart::Started)
    }

    /// The background backup's progress, and how the last one ended (administrators only).
    pub fn background_backup_status(
        &self,
        caller: &Caller,
    ) -> Result<(
        CopyProgress,
        Option<std::result::Result<BackupReport, String>>,
    )> {
        self.security
            .require_admin(caller, "read the progress of tasks")?;
        Ok(self.background_backup.status())
    }

    /// The ids of `target`'s complete backups, oldest first.
    pub async fn backups(&self, caller: &Caller, target: &BackupTarget) -> Result<Vec<String>> {
        self.security.require_admin(caller, "list backups")?;
        complete_backups(target).await
    }

    /// Removes complete backups beyond the newest `keep`, incomplete ones other than
    /// `current`, and then the binaries no kept backup names.
    async fn keep_newest(
        &self,
        target: &BackupTarget,
        current: &str,
        keep: usize,
        current_binaries: &[(Sha256, u64)],
        work: &Path,
    ) -> Result<(Vec<String>, u64)> {
        let names = target.files.list("backups/").await?;
        let mut ids: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("backups/")?.split('/').next())
            .map(str::to_string)
            .collect();
        ids.dedup();
        let complete: HashSet<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("backups/")?.strip_suffix("/manifest.json"))
            .map(str::to_string)
            .collect();
        let mut kept: Vec<&String> = ids.iter().filter(|id| complete.contains(*id)).collect();
        kept.sort();
        let kept: HashSet<&String> = kept.iter().rev().take(keep).copied().collect();
        let mut removed = Vec::new();
        for id in &ids {
            if kept.contains(id) || id == current {
                continue;
            }
            for name in names
                .iter()
                .filter(|n| n.starts_with(&format!("backups/{id}/")))
            {
                target.files.remove(name).await?;
            }
            removed.push(id.clone());
        }
        if removed.is_empty() {
            return Ok((removed, 0));
        }
        // The binaries still named: the current backup's and every other kept one's.
        let mut named: HashSet<Sha256> = current_binaries.iter().map(|(d, _)| *d).collect();
        for id in kept.iter().filter(|id| id.as_str() != current) {
            let local = work.join(format!("kept-{id}.jsonl"));
            target
                .files
                .get(&format!("backups/{id}/metadata.jsonl"), &local)
                .await?;
            named.extend(binaries_of(&local)?.into_iter().map(|(d, _)| d));
            let _ = std::fs::remove_file(&local);
        }
        let mut removed_binaries = 0;
        let mut listed = target.binaries.list();
        let mut unnamed = Vec::new();
        while let Some(meta) = listed.try_next().await? {
            if !named.contains(&meta.digest) {
                unnamed.push(meta.digest);
            }
        }
        for digest in unnamed {
            target.binaries.delete(&digest).await?;
            removed_binaries += 1;
        }
        Ok((removed, removed_binaries))
    }

    /// Restores the backup `id` (default: the newest complete one) of `source` into this
    /// Stowage, which must be empty (see the module's documentation).
    pub async fn restore_backup(
        &self,
        caller: &Caller,
        source: &BackupTarget,
        id: Option<&str>,
        work_dir: &Path,
        progress: &ProgressCell,
    ) -> Result<RestoreReport> {
        self.security.require_admin(caller, "restore a backup")?;
        let started = Instant::now();
        if !self.metadata.is_empty().await? {
            return Err(Error::Conflict(
                "this Stowage is not empty: restore into a new one (a fresh database after \
                 `stowage migrate`, and an empty filestore)"
                    .into(),
            ));
        }
        let id = match id {
            Some(id) => id.to_string(),
            None => complete_backups(source)
                .await?
                .pop()
                .ok_or_else(|| Error::NotFound {
                    what: format!("a complete backup in {}", source.files),
                })?,
        };
        progress.start("metadata", 0, 0);
        let work = work_dir.join(format!("restore-{id}"));
        std::fs::create_dir_all(&work)
            .map_err(|e| Error::InvalidInput(format!("cannot create {}: {e}", work.display())))?;
        let result = self.restore_from(source, &id, &work, progress).await;
        let _ = std::fs::remove_dir_all(&work);
        progress.stop();
        let mut report = result?;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(id = %report.id, binaries = report.binaries, bytes = report.bytes, "restore finished");
        Ok(report)
    }

    async fn restore_from(
        &self,
        source: &BackupTarget,
        id: &str,
        work: &Path,
        progress: &ProgressCell,
    ) -> Result<RestoreReport> {
        let manifest_path = work.join("manifest.json");
        source
            .files
            .get(&manifest_name(id), &manifest_path)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::NotFound {
                    what: format!("a complete backup {id} in {}", source.files),
                },
                other => other,
            })?;
        let manifest: Value = std::fs::read(&manifest_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::InvalidInput(format!("backup {id}: its manifest is damaged")))?;
        let export = work.join("metadata.jsonl");
        source
            .files
            .get(&format!("backups/{id}/metadata.jsonl"), &export)
            .await?;
        let want = manifest["metadata"]["sha256"].as_str().unwrap_or_default();
        let have = file_sha256(&export)?.0.to_hex();
        if want != have {
            return Err(Error::InvalidInput(format!(
                "backup {id}: its metadata export is damaged (SHA-256 {have}, the manifest says \
                 {want}); nothing was restored"
            )));
        }
        let binaries = binaries_of(&export)?;
        let bytes: u64 = binaries.iter().map(|(_, s)| s).sum();
        progress.update(|p| {
            p.phase = "binaries";
            p.binaries_total = binaries.len() as u64;
            p.bytes_total = bytes;
        });
        // Every binary, checked against its digest on its way into this filestore.
        let damaged = Mutex::new(Vec::new());
        futures::stream::iter(binaries.iter().copied().map(|(digest, size)| {
            let damaged = &damaged;
            async move {
                match copy_binary(&*source.binaries, &*self.provider, &digest, size).await {
                    Ok(_) => {}
                    Err(e @ (Error::ChecksumMismatch { .. }
                    | Error::Truncated { .. }
                    | Error::TooLong { .. }
                    | Error::NotFound { .. })) => {
                        tracing::error!(%digest, error = %e, "a binary of the backup is damaged or missing");
                        if let Ok(mut d) = damaged.lock() {
                            d.push((digest, e.to_string()));
                        }
                    }
                    Err(e) => return Err(e),
                }
                progress.update(|p| {
                    p.binaries_done += 1;
                    p.bytes_done += size;
                });
                Ok::<_, Error>(())
            }
        }))
        .buffer_unordered(COPIES_AT_ONCE)
        .try_collect::<()>()
        .await?;
        let damaged = damaged.into_inner().unwrap_or_default();
        if !damaged.is_empty() {
            let digests: HashSet<Sha256> = damaged.iter().map(|(d, _)| *d).collect();
            let holders = holders_of(&export, &digests)?;
            let list = damaged
                .iter()
                .map(|(d, e)| format!("{d}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::InvalidInput(format!(
                "backup {id}: {} of {} binaries are damaged or missing ({list}); they hold {}. \
                 The metadata was not restored: restore an older backup, or repair these \
                 binaries in the backup and run the restore again",
                damaged.len(),
                binaries.len(),
                holders.join(", ")
            )));
        }
        progress.update(|p| p.phase = "finishing");
        let file = std::fs::File::open(&export)
            .map_err(|e| Error::InvalidInput(format!("cannot read the export: {e}")))?;
        let summary = self
            .metadata
            .import(BufReader::with_capacity(1 << 20, file), |_, _| {})
            .await?;
        Ok(RestoreReport {
            id: id.to_string(),
            tables: summary.tables,
            binaries: binaries.len() as u64,
            bytes,
            elapsed_ms: 0,
        })
    }
}

/// The ids of `target`'s complete backups (those with a manifest), oldest first.
async fn complete_backups(target: &BackupTarget) -> Result<Vec<String>> {
    let mut ids: Vec<String> = target
        .files
        .list("backups/")
        .await?
        .iter()
        .filter_map(|n| n.strip_prefix("backups/")?.strip_suffix("/manifest.json"))
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}
