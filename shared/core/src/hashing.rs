//! One streaming pass that computes SHA-256, SHA-1 and MD5 of a body while it flows to a
//! backend. Hashing runs on blocking threads fed through a bounded channel, so it overlaps with
//! network and disk I/O and memory stays bounded; it must never buffer a whole body.

use bytes::Bytes;
use futures::StreamExt;
use md5::Md5 as Md5Hasher;
use sha1::{Digest, Sha1 as Sha1Hasher};
use sha2::Sha256 as Sha256Hasher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{ByteStream, Checksums, Error, Md5, Result, Sha1, Sha256};

/// Chunks in flight between the body and each hashing thread.
const HASH_QUEUE_CHUNKS: usize = 16;

/// Computes all three digests in one synchronous pass.
#[derive(Debug, Clone, Default)]
pub struct ChecksumHasher {
    sha256: Sha256Hasher,
    sha1: Sha1Hasher,
    md5: Md5Hasher,
    len: u64,
}

impl ChecksumHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.sha1.update(data);
        self.md5.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digests of everything fed.
    pub fn finish(self) -> Checksums {
        Checksums {
            sha256: Sha256::from_bytes(self.sha256.finalize().into()),
            sha1: Sha1::from_bytes(self.sha1.finalize().into()),
            md5: Md5::from_bytes(self.md5.finalize().into()),
        }
    }

    /// Digests of a byte slice (tests, small bodies).
    pub fn digest(data: &[u8]) -> Checksums {
        let mut h = Self::new();
        h.update(data);
        h.finish()
    }
}

/// The digests of a stream, being computed on background threads.
///
/// SHA-256 with SHA-1 runs on one thread and MD5 on another: on a machine with SHA extensions
/// MD5 is the slowest of the three, and splitting them keeps hashing off the critical path of an
/// upload. Obtain one with [`hash_stream`].
#[derive(Debug)]
pub struct HashingTask {
    sha: JoinHandle<(Sha256Hasher, Sha1Hasher, u64)>,
    md5: JoinHandle<Md5Hasher>,
}

impl HashingTask {
    /// Waits for the hashing threads and returns the digests and the number of bytes hashed.
    /// Call it only after the stream from [`hash_stream`] has ended without error.
    pub async fn finish(self) -> Result<(Checksums, u64)> {
        let join = |e: tokio::task::JoinError| Error::Storage {
            backend: "hashing".into(),
            key: "-".into(),
            source: Box::new(e),
            retryable: false,
        };
        let (sha256, sha1, len) = self.sha.await.map_err(join)?;
        let md5 = self.md5.await.map_err(join)?;
        Ok((
            Checksums {
                sha256: Sha256::from_bytes(sha256.finalize().into()),
                sha1: Sha1::from_bytes(sha1.finalize().into()),
                md5: Md5::from_bytes(md5.finalize().into()),
            },
            len,
        ))
    }
}

/// Wraps a body so that every chunk that passes through is also hashed. Returns the body,
/// unchanged, and the task that will hold its digests once it has ended. If the body errors or
/// is dropped early, the task's result is meaningless and should be dropped with it.
pub fn hash_stream(body: ByteStream) -> (ByteStream, HashingTask) {
    let (sha_tx, mut sha_rx) = mpsc::channel::<Bytes>(HASH_QUEUE_CHUNKS);
    let (md5_tx, mut md5_rx) = mpsc::channel::<Bytes>(HASH_QUEUE_CHUNKS);
    let sha = tokio::task::spawn_blocking(move || {
        let (mut sha256, mut sha1, mut len) = (Sha256Hasher::new(), Sha1Hasher::new(), 0u64);
        while let Some(chunk) = sha_rx.blocking_recv() {
            sha256.update(&chunk);
            sha1.update(&chunk);
            len += chunk.len() as u64;
        }
        (sha256, sha1, len)
    });
    let md5 = tokio::task::spawn_blocking(move || {
        let mut md5 = Md5Hasher::new();
        while let Some(chunk) = md5_rx.blocking_recv() {
            md5.update(&chunk);
        }
        md5
    });
    // The senders live in the stream's state and are dropped as soon as the body ends,
    // which is what lets the hashing threads finish.
    let stream = futures::stream::unfold(Some((body, sha_tx, md5_tx)), |state| async move {
        let (mut body, sha_tx, md5_tx) = state?;
        let chunk = match body.next().await? {
            Ok(chunk) => chunk,
            Err(e) => return Some((Err(e), None)),
        };
        let sent =
            sha_tx.send(chunk.clone()).await.is_ok() && md5_tx.send(chunk.clone()).await.is_ok();
        if !sent {
            let stopped = Error::Storage {
                backend: "hashing".into(),
                key: "-".into(),
                source: "a hashing thread stopped early".into(),
                retryable: false,
            };
            return Some((Err(stopped), None));
        }
        Some((Ok(chunk), Some((body, sha_tx, md5_tx))))
    })
    .boxed();
    (stream, HashingTask { sha, md5 })
}

/// Whole reads up to this size are read and checked before the first byte is served, so that
/// a corrupt copy can be replaced within the same request; larger ones are checked as they
/// stream ([`verify_stream`]).
pub(crate) const CHECK_BEFORE_SERVING: u64 = 1 << 20;

/// A whole read of a stored binary, checked against the digest it is stored under.
/// `Ok(None)`: the copy is corrupt (found before serving; the caller drops it and reads
/// another). For larger binaries the check happens as the stream is read: on a mismatch the
/// stream ends with the error `on_corrupt` returns instead of its last chunk.
pub(crate) async fn checked_read(
    mut found: crate::GetResult,
    on_corrupt: impl FnOnce(Error) -> Error + Send + 'static,
) -> Result<Option<crate::GetResult>> {
    let digest = found.meta.digest;
    if found.meta.size > CHECK_BEFORE_SERVING {
        found.stream = verify_stream(found.stream, digest, on_corrupt);
        return Ok(Some(found));
    }
    let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(found.stream).await?;
    let bytes = Bytes::from(chunks.concat());
    if Sha256::from_bytes(Sha256Hasher::digest(&bytes).into()) != digest {
        return Ok(None);
    }
    found.stream = futures::stream::once(async move { Ok(bytes) }).boxed();
    Ok(Some(found))
}

/// Wraps a read of a whole stored binary so that it is checked against the digest it is
/// stored under. The last chunk is held back until the digest is known: a corrupt copy never
/// reaches a client as a complete body. On a mismatch the stream ends with an error instead
/// of the last chunk and `on_corrupt` runs once (to drop the copy, count it, re-fetch).
pub fn verify_stream(
    body: ByteStream,
    expected: Sha256,
    on_corrupt: impl FnOnce(Error) -> Error + Send + 'static,
) -> ByteStream {
    struct State<F> {
        body: ByteStream,
        /// Chunks to the hashing thread, which runs beside the sending of the body.
        tx: Option<mpsc::Sender<Bytes>>,
        digest: Option<JoinHandle<Sha256Hasher>>,
        held: Option<Bytes>,
        on_corrupt: Option<F>,
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE_CHUNKS);
    let digest = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256Hasher::new();
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher
    });
    let state = State {
        body,
        tx: Some(tx),
        digest: Some(digest),
        held: None,
        on_corrupt: Some(on_corrupt),
    };
    futures::stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        loop {
            match state.body.next().await {
                Some(Ok(chunk)) => {
                    let sent = match &state.tx {
                        Some(tx) => tx.send(chunk.clone()).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        let stopped = Error::Storage {
                            backend: "hashing".into(),
                            key: expected.to_string(),
                            source: "the hashing thread stopped early".into(),
                            retryable: true,
                        };
                        return Some((Err(stopped), None));
                    }
                    if let Some(previous) = state.held.replace(chunk) {
                        return Some((Ok(previous), Some(state)));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    drop(state.tx.take()); // lets the hashing thread finish
                    let actual = match state.digest.take()?.await {
                        Ok(hasher) => Sha256::from_bytes(hasher.finalize().into()),
                        Err(e) => {
                            // Not the bytes' fault: no verdict on the copy.
                            let failed = Error::Storage {
                                backend: "hashing".into(),
                                key: expected.to_string(),
                                source: Box::new(e),
                                retryable: true,
                            };
                            return Some((Err(failed), None));
                        }
                    };
                    if actual == expected {
                        let last = state.held.take()?;
                        return Some((Ok(last), None));
                    }
                    let mismatch = Error::ChecksumMismatch {
                        algorithm: crate::ChecksumAlgorithm::Sha256,
                        expected: expected.to_hex(),
                        actual: actual.to_hex(),
                    };
                    let error = match state.on_corrupt.take() {
                        Some(f) => f(mismatch),
                        None => mismatch,
                    };
                    return Some((Err(error), None));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn stream_digests_match_one_shot_digests() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Result<Bytes>> = data
            .chunks(7_001)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (stream, task) = hash_stream(futures::stream::iter(chunks).boxed());
        let passed: Vec<Bytes> = stream.try_collect().await.expect("stream");
        let (sums, len) = task.finish().await.expect("digests");
        assert_eq!(passed.concat(), data);
        assert_eq!(len, data.len() as u64);
        assert_eq!(sums, ChecksumHasher::digest(&data));
    }

    #[tokio::test]
    async fn verify_stream_passes_intact_bytes_and_holds_back_the_end_of_corrupt_ones() {
        let data = Bytes::from_static(b"hello, verified world");
        let digest = ChecksumHasher::digest(&data).sha256;
        let chunks =
            || futures::stream::iter(vec![Ok(data.slice(..5)), Ok(data.slice(5..))]).boxed();
        let intact: Vec<Bytes> = verify_stream(chunks(), digest, |e| e)
            .try_collect()
            .await
            .expect("intact");
        assert_eq!(intact.concat(), data);

        let other = ChecksumHasher::digest(b"something else").sha256;
        let items: Vec<Result<Bytes>> = verify_stream(chunks(), other, |e| e).collect().await;
        assert_eq!(
            items.len(),
            2,
            "the first chunk, then the error instead of the last"
        );
        assert!(matches!(items[1], Err(Error::ChecksumMismatch { .. })));
    }

    #[test]
    fn known_empty_digests() {
        let sums = ChecksumHasher::digest(b"");
        assert_eq!(
            sums.sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sums.sha1.to_hex(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(sums.md5.to_hex(), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
