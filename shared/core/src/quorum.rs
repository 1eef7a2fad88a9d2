//! The one quorum writer, used by the sharding provider (copies on R mounts) and the eventual
//! queue (copies in its queue directories): one body written to several providers at once from
//! one read of it, held against `lenientLimit`.
//!
//! - The body is **hashed once**, here. Providers that can stage (directories) only write and
//!   are named once the digest is known and checked; others (object stores) store and hash
//!   their own copy.
//! - A copy that takes nothing for the fan-out's wait is **cut off** and not waited for; the
//!   others may still reach the limit.
//! - Failures are **classified once** ([`Error::is_request_fault`]): a fault of the request
//!   (a wrong checksum, a short body) explains every copy's failure and is reported as it is;
//!   anything else is a copy that failed.
//! - A refused write **takes back** the copies it created, so a refusal stores nothing;
//!   through a [`TakeBack`] guard where one is installed, so that the removal cannot race a
//!   concurrent identical upload that counted on those copies.
//!
//! It must never report success with fewer than `lenient_limit` durable copies.

use std::fmt;

use async_trait::async_trait;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::fanout::{FanOutSettings, fan_out_with_cuts, unless_cut};
use crate::{
    BinaryProvider, ByteStream, Checksums, Error, PutOptions, PutResult, Sha256, StagedBinary,
};

/// Decides when the copies a refused write created may be removed. A concurrent upload of the
/// same bytes may have found such a copy (`created: false`) and be about to record it; the
/// service's guard removes them under the same locks and witness as garbage collection does
/// (docs/durability.md), or leaves them to garbage collection.
#[async_trait]
pub trait TakeBack: Send + Sync + fmt::Debug {
    /// Runs `remove` (which deletes the copies of `digest` this write created) when no
    /// recorded artifact refers to `digest`, or drops it, leaving the copies to garbage
    /// collection.
    async fn take_back(&self, digest: Sha256, remove: BoxFuture<'_, ()>);
}

/// What a quorum write gave.
#[derive(Debug)]
pub struct Quorum {
    /// The upload's result (`created` when any copy was new), or why it was refused.
    pub outcome: Result<PutResult, Refused>,
    /// How many copies were stored (before any was taken back).
    pub stored: usize,
    /// The copies that failed, by the index of their target (a request fault reported in
    /// `outcome` is not repeated here).
    pub failures: Vec<(usize, Error)>,
}

/// Why a quorum write was refused.
#[derive(Debug)]
pub enum Refused {
    /// The request itself was at fault (wrong checksum, short body): the same everywhere.
    Request(Error),
    /// Fewer than `lenient_limit` copies were stored; [`Quorum::failures`] says why.
    TooFewCopies,
}

/// Writes `body` to every target at once and holds the copies against `lenient_limit`.
pub async fn put_quorum(
    targets: &[&dyn BinaryProvider],
    body: ByteStream,
    opts: &PutOptions,
    lenient_limit: usize,
    fan_out: FanOutSettings,
    guard: Option<&dyn TakeBack>,
) -> Quorum {
    let (results, refused) = write_copies(targets, body, opts, fan_out).await;
    take_back(targets, refused, guard).await;
    let mut stored: Vec<(usize, PutResult)> = Vec::new();
    let mut failures: Vec<(usize, Error)> = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(r) => stored.push((i, r)),
            Err(e) => failures.push((i, e)),
        }
    }
    let count = stored.len();
    if count >= lenient_limit
        && let Some((_, first)) = stored.first()
    {
        let outcome = Ok(PutResult {
            created: stored.iter().any(|(_, r)| r.created),
            ..*first
        });
        return Quorum {
            outcome,
            stored: count,
            failures,
        };
    }
    // Too few copies: take back those this upload created, so the failure stores nothing.
    let created = stored
        .iter()
        .filter(|(_, r)| r.created)
        .map(|(i, r)| (*i, r.checksums.sha256))
        .collect();
    take_back(targets, created, guard).await;
    let outcome = match failures.iter().position(|(_, e)| e.is_request_fault()) {
        Some(pos) => Err(Refused::Request(failures.swap_remove(pos).1)),
        None => Err(Refused::TooFewCopies),
    };
    Quorum {
        outcome,
        stored: count,
        failures,
    }
}

/// Removes the copies a refused write created (target index and digest), through `guard`
/// when there is one.
async fn take_back(
    targets: &[&dyn BinaryProvider],
    created: Vec<(usize, Sha256)>,
    guard: Option<&dyn TakeBack>,
) {
    let mut by_digest: Vec<(Sha256, Vec<usize>)> = Vec::new();
    for (i, digest) in created {
        match by_digest.iter_mut().find(|(d, _)| *d == digest) {
            Some((_, copies)) => copies.push(i),
            None => by_digest.push((digest, vec![i])),
        }
    }
    for (digest, copies) in by_digest {
        let remove = async move {
            for i in copies {
                if let Err(e) = targets[i].delete(&digest).await {
                    tracing::warn!(target = %targets[i], error = %e,
                        "a copy of a refused upload could not be removed; garbage collection will");
                }
            }
        };
        match guard {
            Some(guard) => guard.take_back(digest, remove.boxed()).await,
            None => remove.await,
        }
    }
}

/// One write per target, from one read of `body`, each copy's result in the targets' order;
/// and the copies stored under a digest the body turned out not to match (to take back).
async fn write_copies(
    targets: &[&dyn BinaryProvider],
    body: ByteStream,
    opts: &PutOptions,
    fan_out: FanOutSettings,
) -> (Vec<Result<PutResult, Error>>, Vec<(usize, Sha256)>) {
    if let [only] = targets {
        return (vec![only.put_opts(body, opts.clone()).await], Vec::new());
    }
    let (hashed, hashing) = crate::hash_stream(body);
    let branches = fan_out_with_cuts(hashed, targets.len(), fan_out);
    let writes = futures::future::join_all(targets.iter().zip(branches).map(
        |(&target, (branch, cut))| {
            let write = async move {
                match target.as_stager() {
                    Some(stager) => stager.stage(branch, opts.size).await.map(Written::Staged),
                    None => target
                        .put_opts(branch, opts.clone())
                        .await
                        .map(Written::Stored),
                }
            };
            // A copy cut off for taking no data is not waited for.
            unless_cut(write, cut)
        },
    ))
    .await;
    // When a copy was written whole, the body was read to its end and hashed.
    let verdict = if writes.iter().any(Result::is_ok) {
        match hashing.finish().await {
            Ok((checksums, size)) => match opts.expected.verify(&checksums) {
                Ok(()) => Verdict::Good(checksums, size),
                Err(_) => Verdict::Mismatch(checksums),
            },
            Err(e) => Verdict::Failed(e.to_string()),
        }
    } else {
        Verdict::Failed("no copy was written".into())
    };
    let mut refused = Vec::new();
    let mut results = Vec::with_capacity(targets.len());
    let settled = futures::future::join_all(writes.into_iter().map(|write| {
        let verdict = &verdict;
        async move {
            match (write?, verdict) {
                // A copy that hashed to what was sent; one that stored other bytes (damaged on
                // its way) is no copy of this upload, and is taken back when it is new.
                (Written::Stored(r), Verdict::Good(checksums, _))
                    if r.checksums.sha256 == checksums.sha256 =>
                {
                    Ok(Ok(r))
                }
                (Written::Stored(r), Verdict::Good(checksums, _)) => {
                    let e = Error::Unavailable(format!(
                        "a copy stored bytes hashing to {}, not the {} that were sent",
                        r.checksums.sha256, checksums.sha256
                    ));
                    if r.created {
                        Ok(Err((r.checksums.sha256, e)))
                    } else {
                        Err(e)
                    }
                }
                (Written::Staged(staged), Verdict::Good(checksums, size)) => Ok(Ok(PutResult {
                    checksums: *checksums,
                    size: *size,
                    created: staged.commit(&checksums.sha256).await?,
                })),
                // A staged copy vanishes when dropped; a stored one this upload created is
                // taken back.
                (Written::Stored(r), bad) if r.created => {
                    Ok(Err((r.checksums.sha256, bad.error(opts))))
                }
                (_, bad) => Err(bad.error(opts)),
            }
        }
    }))
    .await;
    for (i, outcome) in settled.into_iter().enumerate() {
        results.push(match outcome {
            Ok(Ok(r)) => Ok(r),
            Ok(Err((digest, e))) => {
                refused.push((i, digest));
                Err(e)
            }
            Err(e) => Err(e),
        });
    }
    (results, refused)
}

/// A copy's bytes, staged (to be named once checked) or stored under their digest.
enum Written {
    Staged(Box<dyn StagedBinary>),
    Stored(PutResult),
}

/// What hashing a redundant write found.
enum Verdict {
    Good(Checksums, u64),
    Mismatch(Checksums),
    Failed(String),
}

impl Verdict {
    fn error(&self, opts: &PutOptions) -> Error {
        match self {
            Verdict::Mismatch(checksums) => match opts.expected.verify(checksums) {
                Err(e) => e,
                Ok(()) => Error::Unavailable("the upload's checksums changed".into()),
            },
            Verdict::Failed(why) => Error::Unavailable(format!("the upload was not stored: {why}")),
            // Only asked of a verdict that is not good.
            Verdict::Good(..) => Error::Unavailable("the upload was not stored".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::conformance::test_bytes;
    use crate::fs::FileSystemProvider;
    use crate::memory::InMemoryProvider;
    use crate::{BinaryProviderExt, ChecksumHasher, ExpectedChecksums, KeyLayout, Sha256};

    const FAN_OUT: FanOutSettings = FanOutSettings {
        buffer_bytes: 64 << 10,
        wait_timeout: std::time::Duration::from_secs(5),
    };

    fn body(data: bytes::Bytes) -> ByteStream {
        Box::pin(futures::stream::once(async move { Ok(data) }))
    }

    fn dir(path: &Path) -> FileSystemProvider {
        FileSystemProvider::new(path, KeyLayout::default()).expect("dir")
    }

    async fn holds(p: &dyn BinaryProvider, digest: &Sha256) -> bool {
        p.exists(digest).await.expect("exists")
    }

    #[tokio::test]
    async fn acknowledged_at_the_limit_refused_below_it_with_nothing_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir(&tmp.path().join("a")), dir(&tmp.path().join("b")));
        let memory = InMemoryProvider::new();
        let data = test_bytes(1, 300_000);
        let digest = ChecksumHasher::digest(&data).sha256;

        // Three kinds of copy (two staged, one stored), one hashing: all three hold the bytes.
        let targets: [&dyn BinaryProvider; 3] = [&a, &b, &memory];
        let q = put_quorum(
            &targets,
            body(data.clone()),
            &PutOptions::default(),
            3,
            FAN_OUT,
            None,
        )
        .await;
        let stored = q.outcome.expect("acknowledged");
        assert_eq!(stored.checksums.sha256, digest);
        assert!(stored.created);
        assert_eq!((q.stored, q.failures.len()), (3, 0));
        for t in targets {
            assert!(holds(t, &digest).await);
        }

        // A missing directory: 2 of 3 copies, below a limit of 3, so both new copies are
        // taken back; the failure names the directory that failed.
        let other = test_bytes(2, 300_000);
        let other_digest = ChecksumHasher::digest(&other).sha256;
        std::fs::remove_dir_all(tmp.path().join("b")).expect("lose b");
        let q = put_quorum(
            &targets,
            body(other.clone()),
            &PutOptions::default(),
            3,
            FAN_OUT,
            None,
        )
        .await;
        assert!(
            matches!(q.outcome, Err(Refused::TooFewCopies)),
            "{:?}",
            q.outcome
        );
        assert_eq!(q.stored, 2);
        assert_eq!(q.failures.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        assert!(!holds(&a, &other_digest).await && !holds(&memory, &other_digest).await);

        // The same at a limit of 2 is acknowledged, with the failure reported beside it.
        let q = put_quorum(
            &targets,
            body(other),
            &PutOptions::default(),
            2,
            FAN_OUT,
            None,
        )
        .await;
        assert!(q.outcome.is_ok());
        assert_eq!((q.stored, q.failures.len()), (2, 1));
    }

    #[tokio::test]
    async fn a_fault_of_the_request_is_reported_as_it_is_and_stores_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, memory) = (dir(&tmp.path().join("a")), InMemoryProvider::new());
        let data = test_bytes(3, 100_000);
        let wrong = ChecksumHasher::digest(&test_bytes(4, 10)).sha256;
        let opts = PutOptions {
            expected: ExpectedChecksums {
                sha256: Some(wrong),
                ..ExpectedChecksums::none()
            },
            size: None,
        };
        let targets: [&dyn BinaryProvider; 2] = [&a, &memory];
        let q = put_quorum(&targets, body(data.clone()), &opts, 1, FAN_OUT, None).await;
        assert!(
            matches!(
                q.outcome,
                Err(Refused::Request(Error::ChecksumMismatch { .. }))
            ),
            "{:?}",
            q.outcome
        );
        let digest = ChecksumHasher::digest(&data).sha256;
        assert!(!holds(&a, &digest).await && !holds(&memory, &digest).await);
        assert!(memory.get_bytes(&digest, None).await.is_err());
    }

    /// A guard that says whether to remove, and remembers what it was asked.
    #[derive(Debug)]
    struct Guard {
        allow: bool,
        asked: std::sync::Mutex<Vec<Sha256>>,
    }

    #[async_trait]
    impl TakeBack for Guard {
        async fn take_back(&self, digest: Sha256, remove: BoxFuture<'_, ()>) {
            self.asked.lock().expect("lock").push(digest);
            if self.allow {
                remove.await;
            }
        }
    }

    #[tokio::test]
    async fn a_refused_write_takes_back_its_copies_only_through_the_guard() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir(&tmp.path().join("a")), dir(&tmp.path().join("b")));
        let memory = InMemoryProvider::new();
        std::fs::remove_dir_all(tmp.path().join("b")).expect("lose b");
        let targets: [&dyn BinaryProvider; 3] = [&a, &b, &memory];
        for allow in [false, true] {
            let data = test_bytes(if allow { 8 } else { 9 }, 100_000);
            let digest = ChecksumHasher::digest(&data).sha256;
            let guard = Guard {
                allow,
                asked: std::sync::Mutex::default(),
            };
            let q = put_quorum(
                &targets,
                body(data),
                &PutOptions::default(),
                3,
                FAN_OUT,
                Some(&guard),
            )
            .await;
            assert!(matches!(q.outcome, Err(Refused::TooFewCopies)));
            assert_eq!(
                *guard.asked.lock().expect("lock"),
                vec![digest],
                "asked once"
            );
            // Refused by the guard (a record may need them): the copies stay, for GC.
            assert_eq!(holds(&a, &digest).await, !allow);
            assert_eq!(holds(&memory, &digest).await, !allow);
        }
    }
}
