//! Group commit of deploys on SQLite.
//!
//! SQLite has one writer, and each committed transaction costs an fsync of its write-ahead log:
//! deploys committed one by one queue behind each other's fsyncs and behind each other's
//! statements (each a round trip to the connection's thread). Here the deploys that arrive
//! while a commit is in flight wait together and are then written in **one** transaction that
//! reads each repository's settings once and creates each folder once, and committed with one
//! fsync. A deploy is answered only after the transaction that holds it committed, so a 201
//! still means the row is durable (docs/durability.md, "Group commit"). If one deploy of a
//! group is refused (a folder where its file would go, an immutable path), the group's
//! transaction is rolled back and each of its deploys committed alone.
//!
//! No thread waits for work: the first deploy that finds no commit in flight spawns a task that
//! commits groups until none is waiting. The task, not the deploy, owns the transaction, so a
//! client that goes away cannot cancel the other deploys of its group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::artifacts::{InTransaction, count_reused};
use super::*;

/// At most this many deploys share a transaction (the rest wait for the next one), which
/// bounds how long the writer is held.
const GROUP_MAX: usize = 64;

/// The deploys waiting for a commit, and whether a task is committing.
#[derive(Debug, Default)]
pub(super) struct CommitGroup {
    state: Mutex<GroupState>,
    transactions: AtomicU64,
    deploys: AtomicU64,
}

/// How many transactions the group commit has committed, for how many deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    pub transactions: u64,
    pub deploys: u64,
}

#[derive(Debug, Default)]
struct GroupState {
    waiting: Vec<Waiting>,
    committing: bool,
}

#[derive(Debug)]
struct Waiting {
    new: NewArtifact,
    reply: oneshot::Sender<Result<ArtifactRecord>>,
}

impl CommitGroup {
    fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears the group if its committing task ends without saying so (it panicked): the waiting
/// deploys are then answered with an error, and the next one starts a new task.
struct Unwind<'a> {
    group: &'a CommitGroup,
    armed: bool,
}

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.group.state();
            state.waiting.clear();
            state.committing = false;
        }
    }
}

impl Metadata {
    /// The group commit's figures; `None` on engines that commit each deploy alone.
    pub fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.group.as_ref().map(|group| GroupCommitStats {
            transactions: group.transactions.load(Ordering::Relaxed),
            deploys: group.deploys.load(Ordering::Relaxed),
        })
    }

    /// [`Self::commit_artifact`] through the group commit.
    pub(super) async fn commit_in_group(
        &self,
        group: &Arc<CommitGroup>,
        new: &NewArtifact,
    ) -> Result<ArtifactRecord> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut state = group.state();
            state.waiting.push(Waiting {
                new: new.clone(),
                reply,
            });
            !std::mem::replace(&mut state.committing, true)
        };
        if lead {
            let this = self.clone();
            let group = Arc::clone(group);
            tokio::spawn(async move { this.commit_groups(&group).await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the deploy's metadata commit was interrupted (nothing of it was recorded); \
                 deploy it again"
                    .into(),
            ))
        })
    }

    /// Commits groups until no deploy waits.
    async fn commit_groups(&self, group: &CommitGroup) {
        let mut unwind = Unwind { group, armed: true };
        loop {
            let batch: Vec<Waiting> = {
                let mut state = group.state();
                if state.waiting.is_empty() {
                    // Under the same lock as the check, so that a deploy arriving now starts
                    // a new task instead of waiting for this one.
                    state.committing = false;
                    unwind.armed = false;
                    return;
                }
                let n = state.waiting.len().min(GROUP_MAX);
                state.waiting.drain(..n).collect()
            };
            group.transactions.fetch_add(1, Ordering::Relaxed);
            group
                .deploys
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.commit_group(batch).await;
        }
    }

    /// Writes `batch` in one transaction and answers each deploy once it committed. When one
    /// of them is refused (or the transaction fails), nothing of the group is kept and each
    /// deploy is committed again alone, so that it gets its own answer: refusals are rare,
    /// and this spares every deploy the savepoint each would otherwise need.
    async fn commit_group(&self, batch: Vec<Waiting>) {
        let writes = self.writes();
        let mut tx = match writes.begin().await {
            Ok(tx) => tx,
            Err(e) => return answer_failed(batch, &e),
        };
        let mut known = InTransaction::default();
        let mut recorded = Vec::with_capacity(batch.len());
        let mut failed = None;
        for waiting in &batch {
            match self
                .record_artifact(&mut tx, &mut known, &waiting.new)
                .await
            {
                Ok(done) => recorded.push(done),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let failed = match failed {
            None => tx.commit().await.map_err(db_err).err(),
            Some(e) => {
                drop(tx.rollback().await);
                Some(e)
            }
        };
        // The artifact cache learns of the write before any deploy is answered.
        drop(writes);
        match failed {
            None => {
                for (waiting, (record, reused)) in batch.into_iter().zip(recorded) {
                    count_reused(reused);
                    // A deploy whose caller went away is not waited for.
                    let _ = waiting.reply.send(Ok(record));
                }
            }
            // Alone already: its failure is its answer.
            Some(e) if batch.len() == 1 => {
                if let Some(waiting) = batch.into_iter().next() {
                    let _ = waiting.reply.send(Err(e));
                }
            }
            Some(_) => {
                for waiting in batch {
                    let answer = self.commit_artifact_alone(&waiting.new).await;
                    let _ = waiting.reply.send(answer);
                }
            }
        }
    }
}

fn answer_failed(batch: Vec<Waiting>, e: &Error) {
    for waiting in batch {
        let _ = waiting.reply.send(Err(for_each(e)));
    }
}

/// A failure of the group's transaction, as each of its deploys is told it.
fn for_each(e: &Error) -> Error {
    match e {
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        Error::Metadata { source, retryable } => Error::Metadata {
            source: source.to_string().into(),
            retryable: *retryable,
        },
        other => Error::Metadata {
            source: other.to_string().into(),
            retryable: false,
        },
    }
}
