//! One body read once, written to several places at the same time: the redundant copies of a
//! sharded upload (`concurrentStreamBufferKb`, `concurrentStreamWaitTimeout` of Artifactory's
//! sharding provider) and the copies of the eventual queue.
//!
//! Each branch has a buffer of at most `buffer_bytes` (a chunk larger than the buffer passes
//! alone), so memory stays bounded whatever the number of branches and the file size: chunks
//! are shared (`Bytes`), never copied. A branch that takes nothing for `wait_timeout` is cut
//! off with an error and the others go on; a branch whose reader went away is dropped. A body
//! error reaches every branch, so each writer discards what it staged.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{ByteStream, Error, Result};

/// How the branches are buffered and how long a slow one is waited for.
#[derive(Debug, Clone, Copy)]
pub struct FanOutSettings {
    /// Bytes each branch may have buffered before the reading of the body waits for it.
    pub buffer_bytes: usize,
    /// How long the reading of the body waits for one branch before cutting it off.
    pub wait_timeout: Duration,
}

type Item = (Result<Bytes>, Option<OwnedSemaphorePermit>);

struct Branch {
    tx: mpsc::UnboundedSender<Item>,
    budget: std::sync::Arc<Semaphore>,
    /// Told when the branch is cut off, so its writer need not be waited for.
    cut: Option<oneshot::Sender<Error>>,
}

/// Resolves when its branch was cut off for taking no data (never, otherwise).
#[derive(Debug)]
pub struct Cut(oneshot::Receiver<Error>);

impl Cut {
    async fn wait(self) -> Error {
        match self.0.await {
            Ok(e) => e,
            Err(_) => std::future::pending().await, // ended without being cut off
        }
    }
}

/// Runs a branch's `write` unless the branch is cut off first: then the write is dropped (a
/// writer drops what it staged) and the cut-off error returned, so nobody waits for a writer
/// that stopped taking data.
pub async fn unless_cut<T>(
    write: impl std::future::Future<Output = Result<T>>,
    cut: Cut,
) -> Result<T> {
    tokio::select! {
        result = write => result,
        e = cut.wait() => Err(e),
    }
}

fn cut_off(settings: &FanOutSettings) -> Error {
    Error::Storage {
        backend: "fan-out".into(),
        key: "-".into(),
        source: format!(
            "this copy took no data for {:?} (concurrentStreamWaitTimeout) while the other \
             copies went on; it was cut off",
            settings.wait_timeout
        )
        .into(),
        retryable: true,
    }
}

impl Branch {
    /// Waits for room in this branch's buffer, then queues the chunk. `Err` when the branch
    /// is gone (its reader dropped it, or it was cut off for being too slow).
    async fn send(
        &mut self,
        chunk: &Bytes,
        settings: &FanOutSettings,
    ) -> std::result::Result<(), ()> {
        let want = chunk.len().clamp(1, settings.buffer_bytes.max(1));
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        let permit = tokio::time::timeout(
            settings.wait_timeout,
            self.budget.clone().acquire_many_owned(want),
        )
        .await;
        match permit {
            Ok(Ok(permit)) => self
                .tx
                .send((Ok(chunk.clone()), Some(permit)))
                .map_err(|_| ()),
            Ok(Err(_closed)) => Err(()),
            Err(_elapsed) => {
                let _ = self.tx.send((Err(cut_off(settings)), None));
                if let Some(cut) = self.cut.take() {
                    let _ = cut.send(cut_off(settings));
                }
                Err(())
            }
        }
    }
}

/// Splits `body` into `n` streams that each see every chunk, reading the body once.
pub fn fan_out(body: ByteStream, n: usize, settings: FanOutSettings) -> Vec<ByteStream> {
    fan_out_with_cuts(body, n, settings)
        .into_iter()
        .map(|(stream, _)| stream)
        .collect()
}

/// [`fan_out`], with each branch's [`Cut`]: run each writer through [`unless_cut`].
pub fn fan_out_with_cuts(
    mut body: ByteStream,
    n: usize,
    settings: FanOutSettings,
) -> Vec<(ByteStream, Cut)> {
    let buffer = u32::try_from(settings.buffer_bytes.max(1)).unwrap_or(u32::MAX);
    let mut cuts = Vec::with_capacity(n);
    let (branches, receivers): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel::<Item>();
            let budget = std::sync::Arc::new(Semaphore::new(buffer as usize));
            let (cut_tx, cut_rx) = oneshot::channel();
            cuts.push(Cut(cut_rx));
            let branch = Branch {
                tx,
                budget,
                cut: Some(cut_tx),
            };
            (branch, rx)
        })
        .unzip();
    tokio::spawn(async move {
        let mut branches: Vec<Option<Branch>> = branches.into_iter().map(Some).collect();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    // Every branch is offered the chunk at once, so one slow branch costs the
                    // others at most its own wait.
                    let sends = branches.iter_mut().map(|slot| async {
                        match slot {
                            Some(branch) => branch.send(&chunk, &settings).await.is_ok(),
                            None => false,
                        }
                    });
                    let alive = futures::future::join_all(sends).await;
                    for (slot, alive) in branches.iter_mut().zip(alive) {
                        if !alive {
                            *slot = None;
                        }
                    }
                    if branches.iter().all(Option::is_none) {
                        return;
                    }
                }
                Err(e) => {
                    let message = match &e {
                        Error::Body { source } => source.to_string(),
                        other => other.to_string(),
                    };
                    for branch in branches.iter().flatten() {
                        let copy = Error::Body {
                            source: message.clone().into(),
                        };
                        let _ = branch.tx.send((Err(copy), None));
                    }
                    return;
                }
            }
        }
    });
    receivers
        .into_iter()
        .zip(cuts)
        .map(|(mut rx, cut)| {
            let stream = futures::stream::poll_fn(move |cx| {
                // The permit is released as the chunk is taken: the buffer counts only what
                // waits in the channel.
                rx.poll_recv(cx)
                    .map(|item| item.map(|(chunk, _permit)| chunk))
            })
            .boxed();
            (stream, cut)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn body(chunks: usize, size: usize) -> ByteStream {
        futures::stream::iter((0..chunks).map(move |i| Ok(Bytes::from(vec![i as u8; size]))))
            .boxed()
    }

    const SETTINGS: FanOutSettings = FanOutSettings {
        buffer_bytes: 32 << 10,
        wait_timeout: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn every_branch_sees_every_byte() {
        let branches = fan_out(body(50, 10_000), 3, SETTINGS);
        let all =
            futures::future::join_all(branches.into_iter().map(|b| b.try_collect::<Vec<Bytes>>()))
                .await;
        for got in all {
            let got = got.expect("branch");
            assert_eq!(got.iter().map(Bytes::len).sum::<usize>(), 500_000);
            assert_eq!(got[7][0], 7);
        }
    }

    #[tokio::test]
    async fn a_stalled_branch_is_cut_off_and_the_others_finish() {
        let mut branches = fan_out(body(100, 16 << 10), 2, SETTINGS);
        let stalled = branches.pop().expect("two");
        let fast = branches.pop().expect("two");
        let started = std::time::Instant::now();
        let got: Vec<Bytes> = fast.try_collect().await.expect("the fast branch completes");
        assert_eq!(got.len(), 100);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stalled branch holds what fit in its buffer, then the cut-off error.
        let items: Vec<Result<Bytes>> = stalled.collect().await;
        let err = items
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("the stalled branch ends in an error");
        assert!(
            err.to_string().contains("concurrentStreamWaitTimeout"),
            "{err}"
        );
        assert!(items.len() < 100);
    }

    #[tokio::test]
    async fn a_body_error_reaches_every_branch() {
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::Body {
                source: "client went away".into(),
            }),
        ])
        .boxed();
        for branch in fan_out(failing, 2, SETTINGS) {
            let err = branch
                .try_collect::<Vec<Bytes>>()
                .await
                .expect_err("the error reaches this branch");
            assert!(err.to_string().contains("client went away"), "{err}");
        }
    }
}
