//! Capabilities travel with the chain: a download signer and presigned uploads attached at
//! the bottom are seen through every wrapper that passes them on (cache, eventual queue) and
//! refused by the one that cannot (sharding); a staging sweep reaches every layer's disks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache::{CacheSettings, CachedProvider};
use crate::eventual::{EventualProvider, EventualSettings};
use crate::fs::{FileSystemProvider, TEMP_DIR_NAME};
use crate::memory::InMemoryProvider;
use crate::sharding::{MountSettings, ShardingProvider, ShardingSettings};
use crate::signing::{DownloadUrlRequest, SignedProvider};
use crate::testing::FixedSigner;
use crate::{BinaryProvider, KeyLayout, StagingAge};

/// An old file in `dir`'s staging folder, as a crash leaves it.
fn leftover(dir: &std::path::Path) -> std::path::PathBuf {
    let pre = dir.join(TEMP_DIR_NAME);
    std::fs::create_dir_all(&pre).expect("staging dir");
    let file = pre.join("crashed.tmp");
    std::fs::write(&file, b"partial").expect("leftover");
    let old = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(old))
        .expect("age it");
    file
}

#[tokio::test]
async fn capabilities_pass_through_wrappers_or_are_refused_and_sweeps_reach_every_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = KeyLayout::default();
    let signed: Arc<dyn BinaryProvider> = Arc::new(SignedProvider::new(
        Arc::new(InMemoryProvider::new()),
        Arc::new(FixedSigner),
    ));
    let queue_dir = tmp.path().join("queue");
    let eventual = EventualProvider::new(
        signed,
        layout,
        EventualSettings {
            dirs: vec![queue_dir.clone()],
            lenient_limit: 1,
            number_of_threads: 1,
            dispatcher_interval: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(1),
            cluster: None,
        },
    )
    .expect("queue");
    let cache_dir = tmp.path().join("cache");
    let cache = CachedProvider::open(
        Arc::new(eventual),
        layout,
        CacheSettings {
            dir: cache_dir.clone(),
            max_cache_size: 1 << 20,
            max_file_size_limit: 1 << 20,
            skip_during_upload: false,
        },
    )
    .await
    .expect("cache");

    let digest = crate::ChecksumHasher::digest(b"x").sha256;
    let request = DownloadUrlRequest {
        file_name: "x".into(),
        content_type: "text/plain".into(),
        size: 1,
        extra_validity: Duration::ZERO,
    };
    let signer = cache
        .download_signer()
        .expect("the signer passes the cache and the queue");
    assert!(
        signer
            .download_url(&digest, &request)
            .await
            .expect("url")
            .url
            .ends_with(&digest.to_hex())
    );
    assert!(
        cache.presigned_uploads().is_none(),
        "memory takes no sessions"
    );

    // Leftovers in the queue's and the cache's staging: a local sweep removes both; a young
    // age removes nothing.
    let (in_queue, in_cache) = (leftover(&queue_dir), leftover(&cache_dir));
    let young = StagingAge {
        local: Duration::from_secs(3 * 3600),
        shared: None,
    };
    assert_eq!(cache.clean_staging(young).await.expect("sweep"), 0);
    let old = StagingAge {
        local: Duration::from_secs(3600),
        shared: None,
    };
    assert_eq!(cache.clean_staging(old).await.expect("sweep"), 2);
    assert!(!in_queue.exists() && !in_cache.exists());

    // Sharding refuses signing (no one mount surely holds a binary) and sweeps its mounts.
    let mount_dir = tmp.path().join("mount");
    let mount = FileSystemProvider::new(&mount_dir, layout).expect("mount");
    let mounted: Arc<dyn BinaryProvider> =
        Arc::new(SignedProvider::new(Arc::new(mount), Arc::new(FixedSigner)));
    let settings = MountSettings {
        id: "m1".into(),
        zone: None,
        write_enabled: true,
        check_period: Duration::from_secs(1),
    };
    let sharding = ShardingProvider::new(vec![(settings, mounted)], ShardingSettings::default())
        .expect("sharding");
    assert!(sharding.download_signer().is_none());
    assert!(sharding.presigned_uploads().is_none());
    let on_mount = leftover(&mount_dir);
    assert_eq!(sharding.clean_staging(old).await.expect("sweep"), 1);
    assert!(!on_mount.exists());
}
