//! The provider conformance suite: the behaviour every [`BinaryProvider`] must show, written
//! once and run against the in-memory provider, the filesystem, and (in later crates) every
//! cloud backend against its real server. Panics on the first broken expectation; it is test
//! support only and must never be called by serving code.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{
    BinaryProvider, BinaryProviderExt, ByteStream, ChecksumHasher, Error, ExpectedChecksums,
    GetOptions, PutOptions,
};

/// Deterministic test bytes, distinct per `seed` (so parallel runs do not share digests).
pub fn test_bytes(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn chunked(data: &Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<crate::Result<Bytes>> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// Runs every case. `seed` keeps runs against a shared server apart.
pub async fn run_all(provider: Arc<dyn BinaryProvider>, seed: u64) {
    round_trip_unknown_and_known_digest(&*provider, seed).await;
    empty_and_multi_chunk_binaries(&*provider, seed + 1).await;
    ranges(&*provider, seed + 2).await;
    wrong_checksum_stores_nothing(&*provider, seed + 3).await;
    short_long_and_failing_bodies_store_nothing(&*provider, seed + 4).await;
    missing_binary_is_not_found(&*provider, seed + 5).await;
    list_and_delete(&*provider, seed + 6).await;
    concurrent_puts_of_the_same_bytes(Arc::clone(&provider), seed + 7).await;
}

async fn round_trip_unknown_and_known_digest(p: &dyn BinaryProvider, seed: u64) {
    let data = test_bytes(seed, 100_000);
    let sums = ChecksumHasher::digest(&data);
    let put = p
        .put_opts(chunked(&data, 8_192), PutOptions::default())
        .await
        .expect("put with unknown digest");
    assert_eq!(put.checksums, sums);
    assert_eq!(put.size, data.len() as u64);
    assert!(put.created, "first put must report created");
    assert_eq!(p.get_bytes(&sums.sha256, None).await.expect("get"), data);
    assert_eq!(
        p.head(&sums.sha256).await.expect("head").size,
        data.len() as u64
    );

    let expected = ExpectedChecksums {
        sha256: Some(sums.sha256),
        sha1: Some(sums.sha1),
        md5: Some(sums.md5),
    };
    let again = p
        .put_opts(
            chunked(&data, 4_096),
            PutOptions {
                expected,
                size: Some(data.len() as u64),
            },
        )
        .await
        .expect("put with known digest");
    assert!(!again.created, "identical bytes must be deduplicated");
    p.delete(&sums.sha256).await.expect("delete");
}

async fn empty_and_multi_chunk_binaries(p: &dyn BinaryProvider, seed: u64) {
    let empty = Bytes::new();
    let put = p
        .put_bytes(empty.clone(), ExpectedChecksums::none())
        .await
        .expect("empty put");
    assert_eq!(put.size, 0);
    assert_eq!(
        p.get_bytes(&put.checksums.sha256, None)
            .await
            .expect("get empty"),
        empty
    );

    let large = test_bytes(seed, 5 * 1024 * 1024 + 17);
    let put = p
        .put_opts(
            chunked(&large, 65_536),
            PutOptions {
                size: Some(large.len() as u64),
                ..Default::default()
            },
        )
        .await
        .expect("large put");
    assert_eq!(put.checksums, ChecksumHasher::digest(&large));
    let back = p
        .get_bytes(&put.checksums.sha256, None)
        .await
        .expect("large get");
    assert!(back == large, "large binary must read back identical");
    p.delete(&put.checksums.sha256).await.expect("delete");
}

async fn ranges(p: &dyn BinaryProvider, seed: u64) {
    let data = test_bytes(seed, 10_000);
    let d = p
        .put_bytes(data.clone(), ExpectedChecksums::none())
        .await
        .expect("put")
        .checksums
        .sha256;
    for range in [0..1, 10..5_000, 9_999..10_000, 0..10_000, 500..500] {
        let got = p
            .get_bytes(&d, Some(range.clone()))
            .await
            .expect("range get");
        assert_eq!(
            got,
            data.slice(range.start as usize..range.end as usize),
            "{range:?}"
        );
    }
    let result = p
        .get_opts(
            &d,
            GetOptions {
                range: Some(100..200),
            },
        )
        .await
        .expect("range");
    assert_eq!(result.range, 100..200);
    assert_eq!(result.meta.size, 10_000);
    let reversed = std::ops::Range { start: 5, end: 4 };
    for bad in [10_000..10_001, 20_000..20_010, reversed] {
        match p
            .get_opts(
                &d,
                GetOptions {
                    range: Some(bad.clone()),
                },
            )
            .await
        {
            Err(Error::RangeNotSatisfiable { size }) => assert_eq!(size, 10_000),
            other => panic!("range {bad:?} must be unsatisfiable, got {other:?}"),
        }
    }
    p.delete(&d).await.expect("delete");
}

/// Three declarations of `digests`: the SHA-256 alone, the SHA-1 alone, the MD5 alone.
pub fn each_declared_alone(digests: &crate::Checksums) -> [ExpectedChecksums; 3] {
    [
        ExpectedChecksums {
            sha256: Some(digests.sha256),
            ..Default::default()
        },
        ExpectedChecksums {
            sha1: Some(digests.sha1),
            ..Default::default()
        },
        ExpectedChecksums {
            md5: Some(digests.md5),
            ..Default::default()
        },
    ]
}

async fn wrong_checksum_stores_nothing(p: &dyn BinaryProvider, seed: u64) {
    let data = test_bytes(seed, 50_000);
    let real = ChecksumHasher::digest(&data);
    let wrong = ChecksumHasher::digest(b"something else");
    for expected in each_declared_alone(&wrong) {
        match p.put_bytes(data.clone(), expected).await {
            Err(Error::ChecksumMismatch { .. }) => {}
            other => panic!("a wrong checksum must be refused, got {other:?}"),
        }
        assert!(
            !p.exists(&real.sha256).await.expect("exists"),
            "nothing may be stored"
        );
        assert!(
            !p.exists(&wrong.sha256).await.expect("exists"),
            "nothing may be stored"
        );
    }
}

/// Ten chunks of `data`, then the client goes away.
fn failing_after_ten_chunks(data: &Bytes) -> ByteStream {
    chunked(data, 1_000)
        .take(10)
        .chain(futures::stream::once(async {
            Err(Error::Body {
                source: "client went away".into(),
            })
        }))
        .boxed()
}

async fn short_long_and_failing_bodies_store_nothing(p: &dyn BinaryProvider, seed: u64) {
    let data = test_bytes(seed, 30_000);
    let real = ChecksumHasher::digest(&data).sha256;
    let short = p
        .put_opts(
            chunked(&data, 1_000),
            PutOptions {
                size: Some(40_000),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(
            short,
            Err(Error::Truncated {
                expected: 40_000,
                received: 30_000
            })
        ),
        "{short:?}"
    );
    let long = p
        .put_opts(
            chunked(&data, 1_000),
            PutOptions {
                size: Some(20_000),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(long, Err(Error::TooLong { expected: 20_000 })),
        "{long:?}"
    );
    let failing = failing_after_ten_chunks(&data);
    let failed = p.put_opts(failing, PutOptions::default()).await;
    assert!(matches!(failed, Err(Error::Body { .. })), "{failed:?}");
    // The same with its size announced (a small body may take another path).
    let failing = failing_after_ten_chunks(&data);
    let announced = PutOptions {
        size: Some(30_000),
        ..Default::default()
    };
    let failed = p.put_opts(failing, announced).await;
    assert!(matches!(failed, Err(Error::Body { .. })), "{failed:?}");
    assert!(
        !p.exists(&real).await.expect("exists"),
        "nothing may be stored"
    );
    let listed: Vec<_> = p.list().try_collect().await.expect("list");
    assert!(listed.iter().all(|m| m.digest != real));
}

async fn missing_binary_is_not_found(p: &dyn BinaryProvider, seed: u64) {
    let missing = ChecksumHasher::digest(&test_bytes(seed, 10)).sha256;
    assert!(matches!(p.get(&missing).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        p.head(&missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!p.exists(&missing).await.expect("exists"));
    p.delete(&missing)
        .await
        .expect("deleting a missing binary succeeds");
}

async fn list_and_delete(p: &dyn BinaryProvider, seed: u64) {
    let mut digests = Vec::new();
    for i in 0..5 {
        let data = test_bytes(seed * 100 + i, 1_000 + i as usize);
        digests.push(
            p.put_bytes(data, ExpectedChecksums::none())
                .await
                .expect("put")
                .checksums
                .sha256,
        );
    }
    let listed: Vec<_> = p.list().try_collect().await.expect("list");
    for (i, d) in digests.iter().enumerate() {
        let m = listed.iter().find(|m| m.digest == *d).expect("listed");
        assert_eq!(m.size, 1_000 + i as u64);
    }
    for d in &digests {
        p.delete(d).await.expect("delete");
        assert!(!p.exists(d).await.expect("exists"));
    }
    let listed: Vec<_> = p.list().try_collect().await.expect("list");
    assert!(listed.iter().all(|m| !digests.contains(&m.digest)));
}

async fn concurrent_puts_of_the_same_bytes(p: Arc<dyn BinaryProvider>, seed: u64) {
    let data = test_bytes(seed, 200_000);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (p, data) = (Arc::clone(&p), data.clone());
            tokio::spawn(async move {
                p.put_opts(chunked(&data, 16_384), PutOptions::default())
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let put = t.await.expect("task").expect("concurrent put");
        created += usize::from(put.created);
    }
    assert!(created >= 1, "at least one put creates the binary");
    let d = ChecksumHasher::digest(&data).sha256;
    assert_eq!(p.get_bytes(&d, None).await.expect("get"), data);
    p.delete(&d).await.expect("delete");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyLayout;
    use crate::fs::FileSystemProvider;
    use crate::memory::InMemoryProvider;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_provider_conforms() {
        run_all(Arc::new(InMemoryProvider::new()), 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filesystem_provider_conforms_and_leaves_no_staged_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = FileSystemProvider::new(dir.path().join("filestore"), KeyLayout::default())
            .expect("provider");
        run_all(Arc::new(provider.clone()), 2).await;
        let staged: Vec<_> = std::fs::read_dir(provider.temp_dir())
            .expect("read _pre")
            .collect();
        assert!(staged.is_empty(), "staged files left behind: {staged:?}");
        let flat =
            FileSystemProvider::new(dir.path().join("flat"), KeyLayout::new(0).expect("layout"))
                .expect("provider");
        run_all(Arc::new(flat), 3).await;
    }
}
