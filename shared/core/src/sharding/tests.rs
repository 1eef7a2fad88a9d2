use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::*;
use crate::conformance::test_bytes;
use crate::fs::FileSystemProvider;
use crate::memory::InMemoryProvider;
use crate::{BinaryProviderExt, KeyLayout};

fn settings(redundancy: usize, lenient_limit: usize) -> ShardingSettings {
    ShardingSettings {
        redundancy,
        lenient_limit,
        fan_out: FanOutSettings {
            buffer_bytes: 32 << 10,
            wait_timeout: Duration::from_secs(5),
        },
        free_space_sample_interval: Duration::ZERO,
        ..ShardingSettings::default()
    }
}

fn mount(id: &str) -> MountSettings {
    MountSettings {
        check_period: Duration::from_millis(10),
        ..MountSettings::new(id)
    }
}

fn memory_mounts(n: usize) -> (Vec<InMemoryProvider>, Mounts) {
    let providers: Vec<InMemoryProvider> = (0..n).map(|_| InMemoryProvider::new()).collect();
    let mounts = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                mount(&format!("m{i}")),
                Arc::new(p.clone()) as Arc<dyn BinaryProvider>,
            )
        })
        .collect();
    (providers, mounts)
}

/// Directory mounts `m0`… under `root`.
fn dir_mounts(root: &Path, n: usize) -> (Vec<PathBuf>, Mounts) {
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("m{i}"))).collect();
    let mounts = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let fs = FileSystemProvider::new(d, KeyLayout::default()).expect("mount dir");
            (
                mount(&format!("m{i}")),
                Arc::new(fs) as Arc<dyn BinaryProvider>,
            )
        })
        .collect();
    (dirs, mounts)
}

async fn holders(providers: &[InMemoryProvider], digest: &Sha256) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        if p.exists(digest).await.expect("head") {
            out.push(i);
        }
    }
    out
}

#[tokio::test]
async fn conformance_over_three_mounts_with_two_copies() {
    let (_, mounts) = memory_mounts(3);
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    crate::conformance::run_all(Arc::new(sharding), 11).await;
}

#[tokio::test]
async fn conformance_over_three_directories_with_two_staged_copies() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = dir_mounts(root.path(), 3);
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    crate::conformance::run_all(Arc::new(sharding), 12).await;
    // Refused uploads (wrong checksum, short body) left nothing staged or stored.
    for dir in &dirs {
        let staged = std::fs::read_dir(dir.join(crate::fs::TEMP_DIR_NAME))
            .expect("_pre")
            .count();
        assert_eq!(staged, 0, "{}", dir.display());
    }
}

#[tokio::test]
async fn two_copies_over_three_mounts_land_on_two_distinct_mounts_evenly() {
    let (providers, mounts) = memory_mounts(3);
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    let mut per_mount = [0usize; 3];
    for seed in 0..30 {
        let stored = sharding
            .put_bytes(test_bytes(seed, 1000 + seed as usize), Default::default())
            .await
            .expect("put");
        let on = holders(&providers, &stored.checksums.sha256).await;
        assert_eq!(on.len(), 2, "binary {seed} is on mounts {on:?}");
        for i in on {
            per_mount[i] += 1;
        }
    }
    assert_eq!(
        per_mount,
        [20, 20, 20],
        "round robin spreads 60 copies evenly"
    );
}

#[tokio::test]
async fn percentage_free_space_picks_the_emptiest_mounts() {
    let providers = [
        InMemoryProvider::with_capacity(1_000_000),
        InMemoryProvider::with_capacity(100_000),
        InMemoryProvider::with_capacity(10_000_000),
    ];
    // Mount 2 is the largest but the fullest in share; mount 0 is emptiest.
    providers[2]
        .put_bytes(test_bytes(90, 9_500_000), Default::default())
        .await
        .expect("fill");
    providers[1]
        .put_bytes(test_bytes(91, 50_000), Default::default())
        .await
        .expect("fill");
    let mounts = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                mount(&format!("m{i}")),
                Arc::new(p.clone()) as Arc<dyn BinaryProvider>,
            )
        })
        .collect();
    let mut s = settings(1, 0);
    s.write_behavior = WriteBehavior::PercentageFreeSpace;
    let sharding = ShardingProvider::new(mounts, s).expect("sharding");
    let stored = sharding
        .put_bytes(test_bytes(1, 1000), Default::default())
        .await
        .expect("put");
    assert_eq!(holders(&providers, &stored.checksums.sha256).await, vec![0]);

    // By absolute free space, the large mount wins even though it is 95% full.
    let (big, small) = (
        InMemoryProvider::with_capacity(10_000_000),
        InMemoryProvider::with_capacity(100_000),
    );
    big.put_bytes(test_bytes(92, 9_000_000), Default::default())
        .await
        .expect("fill");
    let mounts = vec![
        (
            mount("small"),
            Arc::new(small.clone()) as Arc<dyn BinaryProvider>,
        ),
        (
            mount("big"),
            Arc::new(big.clone()) as Arc<dyn BinaryProvider>,
        ),
    ];
    let mut s = settings(1, 0);
    s.write_behavior = WriteBehavior::FreeSpace;
    let sharding = ShardingProvider::new(mounts, s).expect("sharding");
    let stored = sharding
        .put_bytes(test_bytes(2, 1000), Default::default())
        .await
        .expect("put");
    assert!(big.exists(&stored.checksums.sha256).await.expect("head"));
    assert!(!small.exists(&stored.checksums.sha256).await.expect("head"));
}

#[tokio::test]
async fn zone_writes_put_one_copy_in_each_zone_and_zone_reads_prefer_the_nearest() {
    let providers: Vec<InMemoryProvider> = (0..4)
        .map(|_| InMemoryProvider::with_capacity(1 << 30))
        .collect();
    let zones = ["us-east-1", "us-east-1", "us-east-2", "us-east-2"];
    let mounts = providers
        .iter()
        .zip(zones)
        .enumerate()
        .map(|(i, (p, z))| {
            let settings = MountSettings {
                zone: Some(z.to_string()),
                ..mount(&format!("mount{}", i + 1))
            };
            (settings, Arc::new(p.clone()) as Arc<dyn BinaryProvider>)
        })
        .collect();
    let mut s = settings(2, 0);
    s.write_behavior = WriteBehavior::ZonePercentageFreeSpace;
    s.read_behavior = ReadBehavior::Zone;
    s.cross_zone_order = vec!["us-east-2".into(), "us-east-1".into()];
    let sharding = ShardingProvider::new(mounts, s).expect("sharding");
    for seed in 0..8 {
        let stored = sharding
            .put_bytes(test_bytes(seed, 5000), Default::default())
            .await
            .expect("put");
        let on = holders(&providers, &stored.checksums.sha256).await;
        assert_eq!(on.len(), 2);
        assert!(on[0] < 2 && on[1] >= 2, "one copy per zone: {on:?}");
    }
    // The nearest zone (us-east-2: mounts 3 and 4) is read first.
    let order = sharding.read_order().await;
    assert!(order[0] >= 2 && order[1] >= 2, "{order:?}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_with_the_reason() {
    let (_, mounts) = memory_mounts(2);
    let err = ShardingProvider::new(mounts, settings(3, 0)).expect_err("R > M");
    assert!(
        err.to_string().contains("redundancy is 3 but 2 mounts"),
        "{err}"
    );
    let (_, mounts) = memory_mounts(3);
    let err = ShardingProvider::new(mounts, settings(2, 3)).expect_err("lenient > R");
    assert!(err.to_string().contains("lenientLimit is 3"), "{err}");
    let (_, mut mounts) = memory_mounts(2);
    mounts[1].0.write_enabled = false;
    let err = ShardingProvider::new(mounts, settings(2, 0)).expect_err("too few writable");
    assert!(err.to_string().contains("writeEnabled"), "{err}");
    let (_, mounts) = memory_mounts(2);
    let mut s = settings(1, 0);
    s.read_behavior = ReadBehavior::Zone;
    let err = ShardingProvider::new(mounts, s).expect_err("zones missing");
    assert!(err.to_string().contains("has no zone"), "{err}");
}

#[tokio::test]
async fn a_lost_mount_is_tolerated_down_to_the_lenient_limit_and_balancing_restores_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = dir_mounts(root.path(), 3);
    let sharding = ShardingProvider::new(mounts, settings(3, 2)).expect("sharding");
    let keep = test_bytes(20, 200_000);
    let kept = sharding
        .put_bytes(keep.clone(), Default::default())
        .await
        .expect("put");
    std::fs::remove_dir_all(&dirs[1]).expect("lose a mount");

    // Two copies are enough.
    let data = test_bytes(21, 300_000);
    let stored = sharding
        .put_bytes(data.clone(), Default::default())
        .await
        .expect("lenient put");
    let digest = stored.checksums.sha256;
    assert!(sharding.needs_balancing());
    assert_eq!(sharding.get_bytes(&digest, None).await.expect("read"), data);
    let status = sharding.mount_status().await;
    assert_eq!(status[1].state, "down", "{status:?}");
    assert!(status[1].last_error.is_some());

    // One more mount lost: below the lenient limit, uploads are refused and nothing is kept.
    std::fs::remove_dir_all(&dirs[2]).expect("lose another");
    let err = sharding
        .put_bytes(test_bytes(22, 1000), Default::default())
        .await
        .expect_err("too few mounts");
    assert!(err.to_string().contains("lenientLimit is 2"), "{err}");
    // Everything stored is still readable.
    assert_eq!(
        sharding
            .get_bytes(&kept.checksums.sha256, None)
            .await
            .expect("read"),
        keep
    );

    // The mounts come back (empty); balancing brings both binaries back to three copies.
    std::fs::create_dir(&dirs[1]).expect("back");
    std::fs::create_dir(&dirs[2]).expect("back");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = sharding.balance(None).await.expect("balance");
    assert!(report.complete, "{report:?}");
    assert_eq!(report.copied, 4, "{report:?}"); // each binary is left on m0 alone
    assert_eq!(report.remaining, 0);
    assert!(!sharding.needs_balancing());
    for dir in &dirs {
        let fs = FileSystemProvider::new(dir, KeyLayout::default()).expect("open");
        assert_eq!(fs.get_bytes(&digest, None).await.expect("copy"), data);
        assert_eq!(
            fs.get_bytes(&kept.checksums.sha256, None)
                .await
                .expect("copy"),
            keep
        );
    }
}

#[tokio::test]
async fn a_failed_upload_keeps_no_copy() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = dir_mounts(root.path(), 2);
    let sharding = ShardingProvider::new(mounts, settings(2, 2)).expect("sharding");
    // The mount is lost after the write started: its staging folder is gone.
    std::fs::remove_dir_all(dirs[1].join(crate::fs::TEMP_DIR_NAME)).expect("break the mount");
    let data = test_bytes(30, 100_000);
    let err = sharding
        .put_bytes(data.clone(), Default::default())
        .await
        .expect_err("needs both copies");
    assert!(err.to_string().contains("stored on 1 of 2 mounts"), "{err}");
    let digest = crate::ChecksumHasher::digest(&data).sha256;
    let fs = FileSystemProvider::new(&dirs[0], KeyLayout::default()).expect("open");
    assert!(
        !fs.exists(&digest).await.expect("head"),
        "the copy written was taken back"
    );
}

/// Overwrites a stored copy with bytes of the same length.
fn corrupt(dir: &Path, digest: &Sha256) {
    let fs = FileSystemProvider::new(dir, KeyLayout::default()).expect("open");
    let path = fs.path_of(digest);
    let mut bytes = std::fs::read(&path).expect("read copy");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).expect("corrupt");
}

#[tokio::test]
async fn a_corrupt_copy_is_never_served_and_balancing_replaces_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, mounts) = dir_mounts(root.path(), 2);
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    let small = test_bytes(40, 100_000);
    let large = test_bytes(41, 3 << 20);
    let small_digest = sharding
        .put_bytes(small.clone(), Default::default())
        .await
        .expect("put")
        .checksums
        .sha256;
    let large_digest = sharding
        .put_bytes(large.clone(), Default::default())
        .await
        .expect("put")
        .checksums
        .sha256;
    corrupt(&dirs[0], &small_digest);
    corrupt(&dirs[1], &large_digest);

    // Small: checked before serving, so every read is served from the good copy.
    for _ in 0..3 {
        assert_eq!(
            sharding.get_bytes(&small_digest, None).await.expect("read"),
            small
        );
    }
    // Large: a read of the corrupt copy is cut short, never completed with wrong bytes.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(sharding.get_bytes(&large_digest, None).await);
    }
    assert!(
        outcomes.iter().any(|o| matches!(o, Ok(b) if *b == large)),
        "one read hits the good copy"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().map_or(true, |b| *b == large)),
        "no wrong bytes served"
    );
    // Once seen, corrupt copies are set aside; reads then go to the good copy only.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sharding.get_bytes(&large_digest, None).await.expect("read"),
        large
    );

    let report = sharding.balance(None).await.expect("balance");
    assert_eq!(report.copied, 2, "{report:?}");
    for dir in &dirs {
        let fs = FileSystemProvider::new(dir, KeyLayout::default()).expect("open");
        assert_eq!(
            fs.get_bytes(&small_digest, None).await.expect("copy"),
            small
        );
        assert_eq!(
            fs.get_bytes(&large_digest, None).await.expect("copy"),
            large
        );
    }
}

#[tokio::test]
async fn a_write_disabled_mount_is_read_and_balanced_from_but_never_written() {
    let (providers, mut mounts) = memory_mounts(3);
    mounts[0].0.write_enabled = false;
    // A binary from before the mount was closed to writes.
    let old = test_bytes(50, 4000);
    let old_digest = providers[0]
        .put_bytes(old.clone(), Default::default())
        .await
        .expect("seed")
        .checksums
        .sha256;
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    for seed in 0..10 {
        let stored = sharding
            .put_bytes(test_bytes(51 + seed, 3000), Default::default())
            .await
            .expect("put");
        assert_eq!(
            holders(&providers, &stored.checksums.sha256).await,
            vec![1, 2]
        );
    }
    assert_eq!(
        sharding.get_bytes(&old_digest, None).await.expect("read"),
        old
    );
    let report = sharding.balance(None).await.expect("balance");
    assert_eq!(report.copied, 1, "{report:?}");
    let on = holders(&providers, &old_digest).await;
    assert_eq!(on.len(), 2, "{on:?}");
    assert!(on.contains(&0), "the write-disabled mount keeps its copy");
}

#[tokio::test]
async fn balancing_removes_copies_beyond_the_redundancy_and_skips_unwanted_binaries() {
    let (providers, mounts) = memory_mounts(3);
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    let everywhere = test_bytes(60, 2000);
    for p in &providers {
        p.put_bytes(everywhere.clone(), Default::default())
            .await
            .expect("seed");
    }
    let garbage = test_bytes(61, 2000);
    let garbage_digest = providers[0]
        .put_bytes(garbage, Default::default())
        .await
        .expect("seed")
        .checksums
        .sha256;
    let wanted: Wanted = Arc::new(move |d| Box::pin(async move { Ok(d != garbage_digest) }));
    let report = sharding.balance(Some(wanted)).await.expect("balance");
    assert_eq!((report.removed, report.copied), (1, 0), "{report:?}");
    let digest = crate::ChecksumHasher::digest(&everywhere).sha256;
    assert_eq!(holders(&providers, &digest).await.len(), 2);
    assert_eq!(holders(&providers, &garbage_digest).await, vec![0]);
    assert_eq!(sharding.balance_progress().last, Some(report));
}

#[tokio::test]
async fn a_pass_out_of_time_reports_what_remains_and_the_next_one_finishes() {
    let (providers, mounts) = memory_mounts(2);
    let mut s = settings(2, 0);
    s.max_balancing_run_time = Duration::ZERO;
    let sharding = ShardingProvider::new(mounts, s).expect("sharding");
    for seed in 0..5 {
        providers[0]
            .put_bytes(test_bytes(70 + seed, 1000), Default::default())
            .await
            .expect("seed");
    }
    let report = sharding.balance(None).await.expect("balance");
    assert!(!report.complete, "{report:?}");
    assert_eq!((report.copied, report.remaining), (0, 5), "{report:?}");
    assert!(sharding.needs_balancing());

    // A fresh pass with time to spare (a new store over the same mounts).
    let mounts: Mounts = vec![
        (
            mount("m0"),
            Arc::new(providers[0].clone()) as Arc<dyn BinaryProvider>,
        ),
        (
            mount("m1"),
            Arc::new(providers[1].clone()) as Arc<dyn BinaryProvider>,
        ),
    ];
    let sharding = ShardingProvider::new(mounts, settings(2, 0)).expect("sharding");
    let report = sharding.balance(None).await.expect("balance");
    assert!(report.complete);
    assert_eq!((report.copied, report.remaining), (5, 0), "{report:?}");
}

/// A mount whose writes take each chunk only after a long pause (a dying disk, a hung link).
#[derive(Debug, Clone, Default)]
struct Sluggish(InMemoryProvider);

impl fmt::Display for Sluggish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sluggish")
    }
}

#[async_trait]
impl BinaryProvider for Sluggish {
    async fn put_opts(&self, body: ByteStream, opts: PutOptions) -> Result<PutResult> {
        let slow = body
            .then(|chunk| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                chunk
            })
            .boxed();
        self.0.put_opts(slow, opts).await
    }
    async fn get_opts(&self, digest: &Sha256, opts: GetOptions) -> Result<GetResult> {
        self.0.get_opts(digest, opts).await
    }
    async fn head(&self, digest: &Sha256) -> Result<ObjectMeta> {
        self.0.head(digest).await
    }
    async fn delete(&self, digest: &Sha256) -> Result<()> {
        self.0.delete(digest).await
    }
    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list()
    }
    async fn health(&self) -> Result<Health> {
        self.0.health().await
    }
}

#[tokio::test]
async fn a_copy_that_stops_taking_data_is_cut_off_without_stalling_the_upload() {
    let fast = InMemoryProvider::new();
    let slow = Sluggish::default();
    let mounts: Mounts = vec![
        (
            mount("fast"),
            Arc::new(fast.clone()) as Arc<dyn BinaryProvider>,
        ),
        (
            mount("slow"),
            Arc::new(slow.clone()) as Arc<dyn BinaryProvider>,
        ),
    ];
    let mut s = settings(2, 1);
    s.fan_out.wait_timeout = Duration::from_millis(200);
    let sharding = ShardingProvider::new(mounts, s).expect("sharding");
    // Many small chunks: the slow copy's 32 KiB buffer fills after the first ones.
    let data = test_bytes(80, 1 << 20);
    let body = futures::stream::iter(
        (0..data.len())
            .step_by(16 << 10)
            .map(|at| Ok(data.slice(at..(at + (16 << 10)).min(data.len()))))
            .collect::<Vec<_>>(),
    )
    .boxed();
    let started = std::time::Instant::now();
    let stored = sharding
        .put_opts(body, PutOptions::default())
        .await
        .expect("one copy is enough");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow copy was cut off, not waited for ({:?})",
        started.elapsed()
    );
    let digest = stored.checksums.sha256;
    assert!(fast.exists(&digest).await.expect("head"));
    assert!(!slow.0.exists(&digest).await.expect("head"));
    let status = sharding.mount_status().await;
    assert_eq!(status[1].state, "down", "{status:?}");
    assert!(
        status[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("concurrentStreamWaitTimeout")),
        "{status:?}"
    );
}
