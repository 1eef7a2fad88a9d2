//! How far a long task got, and how the last run of a background task ended: what the CLI's
//! progress bar, `GET /api/system/tasks` and `/api/storageinfo` read. Backups, restores,
//! scrubs, replication passes and prunes share these.

use std::sync::Mutex;

use stowage_core::Result;

/// How far a copying task got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyProgress {
    pub running: bool,
    /// What it is doing (`metadata`, `binaries`, `copies`, `finishing`, …).
    pub phase: &'static str,
    pub binaries_done: u64,
    pub binaries_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A task's progress, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct ProgressCell(Mutex<CopyProgress>);

impl ProgressCell {
    pub fn get(&self) -> CopyProgress {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut CopyProgress)) {
        if let Ok(mut p) = self.0.lock() {
            f(&mut p);
        }
    }

    /// A run begins: `phase`, with the totals when they are known.
    pub(crate) fn start(&self, phase: &'static str, binaries_total: u64, bytes_total: u64) {
        self.update(|p| {
            *p = CopyProgress {
                running: true,
                phase,
                binaries_total,
                bytes_total,
                ..CopyProgress::default()
            }
        });
    }

    /// Like [`ProgressCell::start`], unless a run is under way: `false` then, and nothing
    /// changes (one check and set, so two callers cannot both start).
    pub(crate) fn try_start(&self, phase: &'static str) -> bool {
        let Ok(mut p) = self.0.lock() else {
            return false;
        };
        if p.running {
            return false;
        }
        *p = CopyProgress {
            running: true,
            phase,
            ..CopyProgress::default()
        };
        true
    }

    /// The run is over (its figures stay for the last look).
    pub(crate) fn stop(&self) {
        self.update(|p| p.running = false);
    }
}

/// A task this node runs in the background: its progress, and how its last run ended.
#[derive(Debug)]
pub(crate) struct Background<T> {
    pub(crate) progress: ProgressCell,
    last: Mutex<Option<std::result::Result<T, String>>>,
}

impl<T> Default for Background<T> {
    fn default() -> Self {
        Self {
            progress: ProgressCell::default(),
            last: Mutex::new(None),
        }
    }
}

impl<T: Clone> Background<T> {
    /// Keeps how a run ended, and marks it over.
    pub(crate) fn finished(&self, done: &Result<T>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(match done {
                Ok(report) => Ok(report.clone()),
                Err(e) => Err(e.to_string()),
            });
        }
        self.progress.stop();
    }

    /// The progress now, and how the last run ended.
    pub(crate) fn status(&self) -> (CopyProgress, Option<std::result::Result<T, String>>) {
        let last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        (self.progress.get(), last)
    }
}

/// What asking for a task in the background did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStart {
    /// It started now.
    Started,
    /// One was running already; it goes on.
    AlreadyRunning,
}
