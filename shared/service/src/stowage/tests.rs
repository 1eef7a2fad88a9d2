//! The service's writes take the locks of what they change: while another holder has a path's
//! (or a repository's) lock, each write of it waits, then gives up with `Unavailable`, having
//! changed nothing; once the lock is free, the same write goes through. A download of a
//! binary still queued is served, not redirected to a store that does not hold it yet. And
//! garbage collection at grace 0, run in the worst place a deploy can meet it, never leaves an
//! acknowledged artifact without its bytes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Map;
use stowage_core::memory::InMemoryProvider;
use stowage_core::{ArtifactPath, Error, RepoKey};
use stowage_metadata::{Metadata, PoolSettings};

use super::{DeployRequest, Stowage};
use crate::locks::{LockName, LockSettings};
use crate::security::Caller;
use crate::{Filestore, Settings};

/// The administrator: these tests are about storage, not permissions.
fn admin() -> Caller {
    Caller::admin()
}

/// The service over `filestore`, on a fresh SQLite database in `dir`, with a short lock wait.
async fn service_over(dir: &std::path::Path, filestore: Filestore) -> Stowage {
    service_with(dir, filestore, Settings::default()).await
}

/// The same with `settings` (but a short lock wait), on the database in `dir` (made if new).
async fn service_with(dir: &std::path::Path, filestore: Filestore, settings: Settings) -> Stowage {
    let url = format!("sqlite://{}", dir.join("m.db").display());
    service_on(&url, filestore, settings).await
}

/// The same on the database at `url`.
async fn service_on(url: &str, filestore: Filestore, settings: Settings) -> Stowage {
    let metadata = Metadata::connect(url, &PoolSettings::default())
        .await
        .expect("db");
    metadata.migrate().await.expect("migrate");
    let settings = Settings {
        locks: LockSettings {
            lease: Duration::from_secs(30),
            wait: Duration::from_millis(100),
        },
        ..settings
    };
    Stowage::new(filestore, metadata, &settings, "n1")
}

/// The service with garbage collection's orphan grace at `orphan_grace`.
async fn service_with_grace(
    dir: &std::path::Path,
    filestore: Filestore,
    orphan_grace: Duration,
) -> Stowage {
    let settings = Settings {
        orphan_grace,
        ..Settings::default()
    };
    service_with(dir, filestore, settings).await
}

async fn service(dir: &std::path::Path) -> Stowage {
    let filestore = Filestore::from_provider(Arc::new(InMemoryProvider::new()));
    service_over(dir, filestore).await
}

fn body(data: &'static [u8]) -> stowage_core::ByteStream {
    body_of(&bytes::Bytes::from_static(data))
}

fn body_of(data: &bytes::Bytes) -> stowage_core::ByteStream {
    let data = data.clone();
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

#[tokio::test]
async fn every_write_of_a_path_waits_for_its_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = service(dir.path()).await;
    let repo = RepoKey::parse("libs").expect("key");
    let path = ArtifactPath::parse("a/b.txt").expect("path");
    assert!(
        stowage
            .put_repository(&admin(), &repo, Map::new())
            .await
            .expect("repo")
    );
    stowage
        .deploy(
            &admin(),
            &repo,
            &path,
            body(b"hello"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");
    let props = vec![("os".to_string(), vec!["linux".to_string()])];

    let held = stowage
        .locks
        .lock(&LockName::path(&repo, &path))
        .await
        .expect("lock");
    let refused = |r: Result<u64, Error>| matches!(r, Err(Error::Unavailable(_)));
    assert!(refused(
        stowage
            .set_properties(&admin(), &repo, &path, true, &props)
            .await
    ));
    assert!(refused(
        stowage
            .delete_properties(&admin(), &repo, &path, true, &["os".to_string()])
            .await
    ));
    assert!(refused(stowage.delete(&admin(), &repo, &path).await));
    assert!(matches!(
        stowage
            .deploy(
                &admin(),
                &repo,
                &path,
                body(b"other"),
                DeployRequest::default()
            )
            .await,
        Err(Error::Unavailable(_))
    ));
    assert!(
        stowage
            .properties(&admin(), &repo, &path)
            .await
            .expect("properties")
            .is_empty(),
        "nothing was written while the lock was held"
    );
    held.release().await;

    assert_eq!(
        stowage
            .set_properties(&admin(), &repo, &path, true, &props)
            .await
            .expect("set"),
        1
    );
    assert_eq!(
        stowage
            .delete(&admin(), &repo, &path)
            .await
            .expect("delete"),
        1
    );
    let held = stowage
        .locks
        .lock(&LockName::path(&repo, &path))
        .await
        .expect("lock");
    assert!(refused(stowage.restore(&admin(), &repo, &path).await));
    held.release().await;
    assert_eq!(
        stowage
            .restore(&admin(), &repo, &path)
            .await
            .expect("restore"),
        1
    );

    let held = stowage
        .locks
        .lock(&LockName::Repository(repo.clone()))
        .await
        .expect("lock");
    assert!(matches!(
        stowage.delete_repository(&admin(), &repo).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        stowage.put_repository(&admin(), &repo, Map::new()).await,
        Err(Error::Unavailable(_))
    ));
    held.release().await;
    stowage
        .delete_repository(&admin(), &repo)
        .await
        .expect("delete repository");
    assert!(matches!(
        stowage.repository(&admin(), &repo).await,
        Err(Error::RepositoryNotFound { .. })
    ));
}

#[tokio::test]
async fn a_redirecting_repository_serves_a_still_queued_binary_itself() {
    use stowage_core::eventual::{EventualProvider, EventualSettings};
    use stowage_core::signing::SignedProvider;
    use stowage_core::testing::{FixedSigner, drain_queue};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SignedProvider::new(
        Arc::new(InMemoryProvider::new()),
        Arc::new(FixedSigner),
    ));
    let queue = EventualProvider::new(
        store,
        stowage_core::KeyLayout::default(),
        EventualSettings {
            dirs: vec![dir.path().join("queue")],
            lenient_limit: 1,
            number_of_threads: 1,
            dispatcher_interval: Duration::from_millis(10),
            max_retry_backoff: Duration::from_millis(10),
            cluster: None,
        },
    )
    .expect("queue");
    let filestore = Filestore {
        eventual: Some(queue.clone()),
        ..Filestore::from_provider(Arc::new(queue.clone()))
    };
    let stowage = service_over(dir.path(), filestore).await;
    let repo = RepoKey::parse("dist").expect("key");
    let path = ArtifactPath::parse("app.bin").expect("path");
    let mut config = Map::new();
    config.insert("downloadRedirect".into(), true.into());
    config.insert("downloadRedirectMinSize".into(), 0.into());
    stowage
        .put_repository(&admin(), &repo, config)
        .await
        .expect("repo");
    stowage
        .deploy(
            &admin(),
            &repo,
            &path,
            body(b"queued bytes"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");

    let request = super::DownloadRequest::default();
    let (_, queued) = stowage
        .download(&admin(), &repo, &path, &request)
        .await
        .expect("download");
    assert!(
        matches!(queued, super::Download::Bytes { body: Some(_), .. }),
        "still queued: served, not redirected ({queued:?})"
    );
    drain_queue(&queue).await;
    let (_, uploaded) = stowage
        .download(&admin(), &repo, &path, &request)
        .await
        .expect("download");
    assert!(
        matches!(uploaded, super::Download::Redirect(_)),
        "uploaded: redirected ({uploaded:?})"
    );
}

/// A store that, once armed, holds the next upload after its bytes are stored and before the
/// deploy records them, until told to go: the window where garbage collection can meet it.
/// With `linger`, every upload waits that long there. With `armed_head`, the next question
/// whether a binary is there is held the same way (garbage collection asks it under the
/// binary's lock, before it removes).
#[derive(Debug, Default)]
struct PausingProvider {
    inner: InMemoryProvider,
    linger: Duration,
    armed: std::sync::atomic::AtomicBool,
    armed_head: std::sync::atomic::AtomicBool,
    stored: tokio::sync::Notify,
    go: tokio::sync::Notify,
    /// How many times the store was asked whether a binary is there.
    heads: std::sync::atomic::AtomicU32,
}

impl std::fmt::Display for PausingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pausing memory")
    }
}

#[async_trait::async_trait]
impl stowage_core::BinaryProvider for PausingProvider {
    async fn put_opts(
        &self,
        body: stowage_core::ByteStream,
        opts: stowage_core::PutOptions,
    ) -> stowage_core::Result<stowage_core::PutResult> {
        let stored = self.inner.put_opts(body, opts).await?;
        tokio::time::sleep(self.linger).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.stored.notify_one();
            self.go.notified().await;
        }
        Ok(stored)
    }

    async fn get_opts(
        &self,
        digest: &stowage_core::Sha256,
        opts: stowage_core::GetOptions,
    ) -> stowage_core::Result<stowage_core::GetResult> {
        self.inner.get_opts(digest, opts).await
    }

    async fn head(
        &self,
        digest: &stowage_core::Sha256,
    ) -> stowage_core::Result<stowage_core::ObjectMeta> {
        self.heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self
            .armed_head
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.stored.notify_one();
            self.go.notified().await;
        }
        self.inner.head(digest).await
    }

    async fn delete(&self, digest: &stowage_core::Sha256) -> stowage_core::Result<()> {
        self.inner.delete(digest).await
    }

    fn list(
        &self,
    ) -> futures::stream::BoxStream<'static, stowage_core::Result<stowage_core::ObjectMeta>> {
        self.inner.list()
    }

    async fn health(&self) -> stowage_core::Result<stowage_core::Health> {
        self.inner.health().await
    }
}

/// The bytes served for `repo/path`.
async fn served(stowage: &Stowage, repo: &RepoKey, path: &ArtifactPath) -> Vec<u8> {
    use futures::TryStreamExt as _;
    let request = super::DownloadRequest::default();
    let (_, download) = stowage
        .download(&admin(), repo, path, &request)
        .await
        .unwrap_or_else(|e| panic!("{repo}/{path} must be served: {e}"));
    let super::Download::Bytes {
        body: Some(body), ..
    } = download
    else {
        panic!("{repo}/{path}: bytes expected, got {download:?}");
    };
    let chunks: Vec<bytes::Bytes> = body.try_collect().await.expect("the bytes are there");
    chunks.concat()
}

#[tokio::test]
async fn garbage_collection_between_a_store_and_its_record_never_loses_an_acknowledged_deploy() {
    use stowage_core::BinaryProviderExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PausingProvider::default());
    let filestore = Filestore::from_provider(Arc::clone(&store) as _);
    let stowage = Arc::new(service_with_grace(dir.path(), filestore, Duration::ZERO).await);
    let repo = RepoKey::parse("libs").expect("key");
    stowage
        .put_repository(&admin(), &repo, Map::new())
        .await
        .expect("repo");
    let heads = || store.heads.load(std::sync::atomic::Ordering::SeqCst);

    // With no collection since it began, a deploy need not ask the store again.
    let quiet = ArtifactPath::parse("quiet.bin").expect("path");
    stowage
        .deploy(
            &admin(),
            &repo,
            &quiet,
            body(b"no collection near"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");
    assert_eq!(heads(), 0, "no second look without a collection");
    // While a collection holds its removal lock (or died holding it), every deploy looks.
    let removing = stowage
        .locks
        .lock(&Stowage::gc_removals())
        .await
        .expect("lock");
    let during = ArtifactPath::parse("during.bin").expect("path");
    stowage
        .deploy(
            &admin(),
            &repo,
            &during,
            body(b"a collection is on"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");
    assert_eq!(heads(), 1, "a second look while a collection removes");
    removing.release().await;

    // New bytes (the deploy creates them) and bytes already stored with no row (an orphan
    // the deploy finds): either way collection at grace 0 sees unreferenced bytes.
    for (name, data, orphan_first) in [
        ("fresh.bin", &b"bytes this deploy creates"[..], false),
        (
            "orphan.bin",
            &b"bytes already there, unreferenced"[..],
            true,
        ),
    ] {
        let path = ArtifactPath::parse(name).expect("path");
        if orphan_first {
            store
                .inner
                .put_bytes(bytes::Bytes::from_static(data), Default::default())
                .await
                .expect("orphan");
        }
        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let deploy = tokio::spawn({
            let (stowage, repo, path) = (Arc::clone(&stowage), repo.clone(), path.clone());
            async move {
                let body = Box::pin(futures::stream::once(async move {
                    Ok(bytes::Bytes::from_static(data))
                }));
                stowage
                    .deploy(&admin(), &repo, &path, body, DeployRequest::default())
                    .await
            }
        });
        store.stored.notified().await;
        let report = stowage.gc().await.expect("gc");
        assert_eq!(report.orphans_removed, 1, "{name}: the unrecorded bytes go");
        let before = heads();
        store.go.notify_one();
        let outcome = deploy.await.expect("join");
        assert!(
            heads() > before,
            "{name}: after a collection, the bytes are looked for"
        );
        assert!(
            matches!(outcome, Err(Error::Unavailable(_))),
            "{name}: a deploy whose bytes were collected is not acknowledged: {outcome:?}"
        );
        assert!(
            stowage.artifact(&admin(), &repo, &path).await.is_err(),
            "{name}: and records nothing"
        );

        // Deployed again, it is acknowledged, and no collection takes its bytes.
        stowage
            .deploy(&admin(), &repo, &path, body(data), DeployRequest::default())
            .await
            .expect("deploy again");
        stowage.gc().await.expect("gc");
        assert_eq!(served(&stowage, &repo, &path).await, data, "{name}");
    }
}

#[tokio::test]
async fn concurrent_deploys_of_shared_bytes_with_collection_looping_at_grace_zero_lose_nothing() {
    const DEPLOYS: usize = 600;
    // Few enough contents that deploys meet each other's bytes, enough that bytes often
    // lose their last reference.
    let contents: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..40)
            .map(|n| bytes::Bytes::from(format!("content {n}")))
            .collect(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PausingProvider {
        linger: Duration::from_millis(2),
        ..Default::default()
    };
    let filestore = Filestore::from_provider(Arc::new(store));
    let stowage = Arc::new(service_with_grace(dir.path(), filestore, Duration::ZERO).await);
    let repo = RepoKey::parse("libs").expect("key");
    stowage
        .put_repository(&admin(), &repo, Map::new())
        .await
        .expect("repo");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = tokio::spawn({
        let (stowage, done) = (Arc::clone(&stowage), Arc::clone(&done));
        async move {
            let mut removed = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let report = stowage.gc().await.expect("gc");
                removed += report.binaries_removed + report.orphans_removed;
                tokio::task::yield_now().await;
            }
            removed
        }
    });
    // Each deploy goes to a path of its own, or over one of a few shared paths; a deleted
    // artifact's bytes become collectable while others deploy the same bytes again.
    let deploys = futures::stream::iter(0..DEPLOYS)
        .map(|i| {
            let (stowage, repo) = (Arc::clone(&stowage), repo.clone());
            let data = contents[(i * 7) % contents.len()].clone();
            async move {
                let path = ArtifactPath::parse(&format!("d/{i}.bin")).expect("path");
                let shared = ArtifactPath::parse(&format!("s/{}.bin", i % 3)).expect("path");
                let own = stowage
                    .deploy(
                        &admin(),
                        &repo,
                        &path,
                        body_of(&data),
                        DeployRequest::default(),
                    )
                    .await;
                let _ = stowage
                    .deploy(
                        &admin(),
                        &repo,
                        &shared,
                        body_of(&data),
                        DeployRequest::default(),
                    )
                    .await;
                if i % 2 == 0 && own.is_ok() {
                    stowage
                        .delete(&admin(), &repo, &path)
                        .await
                        .expect("delete");
                    stowage.empty_trash(&admin()).await.expect("empty trash");
                    return None;
                }
                own.ok().map(|_| (path, data))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let removed = collector.await.expect("collector");
    let acknowledged: Vec<_> = deploys.into_iter().flatten().collect();
    assert!(
        acknowledged.len() > DEPLOYS / 4,
        "most deploys are acknowledged ({} of {DEPLOYS})",
        acknowledged.len()
    );
    for (path, data) in &acknowledged {
        assert_eq!(served(&stowage, &repo, path).await, data.as_ref(), "{path}");
    }
    for i in 0..3 {
        let shared = ArtifactPath::parse(&format!("s/{i}.bin")).expect("path");
        served(&stowage, &repo, &shared).await;
    }
    println!(
        "checked {} acknowledged artifacts (and 3 overwritten ones) after {DEPLOYS} deploys; \
         collection removed {removed} unreferenced binaries meanwhile",
        acknowledged.len()
    );
}

/// A collection paused past its leases (here: its lock rows taken from it while it waits on
/// the store, as when they expire and another holder takes them) removes nothing more once
/// it goes on: it fails at the fence, the bytes stay, and the next collection finds them.
#[tokio::test]
async fn a_collection_that_lost_its_leases_removes_nothing_more() {
    use stowage_core::BinaryProvider as _;

    let dir = tempfile::tempdir().expect("tempdir");
    // Leases are rows only on a server database (SQLite's locks live in the process).
    let Some(url) = stowage_tests::postgres_database(dir.path()).await else {
        return;
    };
    let store = Arc::new(PausingProvider::default());
    let settings = Settings {
        orphan_grace: Duration::ZERO,
        trash_enabled: false,
        ..Settings::default()
    };
    let filestore = Filestore::from_provider(Arc::clone(&store) as _);
    let stowage = Arc::new(service_on(&url, filestore, settings).await);
    let repo = RepoKey::parse("libs").expect("key");
    stowage
        .put_repository(&admin(), &repo, Map::new())
        .await
        .expect("repo");
    let path = ArtifactPath::parse("gone.bin").expect("path");
    let data = b"bytes nothing refers to any more";
    let digest = stowage_core::ChecksumHasher::digest(data).sha256;
    stowage
        .deploy(&admin(), &repo, &path, body(data), DeployRequest::default())
        .await
        .expect("deploy");
    stowage
        .delete(&admin(), &repo, &path)
        .await
        .expect("delete");

    store
        .armed_head
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let collection = tokio::spawn({
        let stowage = Arc::clone(&stowage);
        async move { stowage.gc().await }
    });
    store.stored.notified().await;
    for key in ["task:gc-removals".to_string(), format!("binary:{digest}")] {
        let owner = stowage
            .metadata
            .lock_owner(&key)
            .await
            .expect("owner")
            .unwrap_or_else(|| panic!("the collection holds {key}"));
        stowage.metadata.unlock(&key, &owner).await.expect("take");
    }
    store.go.notify_one();
    let outcome = collection.await.expect("join");
    match &outcome {
        Err(Error::Unavailable(reason)) => {
            assert!(reason.contains("lost its lease"), "{reason}");
        }
        other => panic!("a collection without its leases must stop: {other:?}"),
    }
    store
        .inner
        .head(&digest)
        .await
        .expect("the bytes were not removed");

    // A collection holding its locks removes them (by then an orphan: the row went first).
    let report = stowage.gc().await.expect("gc");
    assert_eq!(report.binaries_removed + report.orphans_removed, 1);
    assert!(store.inner.head(&digest).await.is_err());
}

#[tokio::test]
async fn with_the_trash_disabled_a_delete_removes_its_files_and_leaves_the_trash_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn stowage_core::BinaryProvider> = Arc::new(InMemoryProvider::new());
    let on = service_over(dir.path(), Filestore::from_provider(Arc::clone(&store))).await;
    let repo = RepoKey::parse("libs").expect("key");
    let (kept, gone) = (
        ArtifactPath::parse("kept.txt").expect("path"),
        ArtifactPath::parse("gone.txt").expect("path"),
    );
    on.put_repository(&admin(), &repo, Map::new())
        .await
        .expect("repo");
    on.deploy(
        &admin(),
        &repo,
        &kept,
        body(b"in the trash"),
        DeployRequest::default(),
    )
    .await
    .expect("deploy");
    on.delete(&admin(), &repo, &kept).await.expect("delete");

    // The same store and database, the trash switched off.
    let settings = Settings {
        trash_enabled: false,
        ..Settings::default()
    };
    let off = service_with(dir.path(), Filestore::from_provider(store), settings).await;
    off.deploy(
        &admin(),
        &repo,
        &gone,
        body(b"removed at once"),
        DeployRequest::default(),
    )
    .await
    .expect("deploy");
    assert_eq!(off.delete(&admin(), &repo, &gone).await.expect("delete"), 1);
    assert!(off.artifact(&admin(), &repo, &gone).await.is_err(), "gone");
    off.gc().await.expect("gc");
    let trash: Vec<String> = off
        .trash_list(&admin())
        .await
        .expect("trash")
        .into_iter()
        .map(|t| t.path.to_string())
        .collect();
    assert_eq!(
        trash,
        vec!["kept.txt"],
        "what the trash held stays, the new delete is not in it"
    );
    assert_eq!(
        off.restore(&admin(), &repo, &kept).await.expect("restore"),
        1
    );
    assert_eq!(served(&off, &repo, &kept).await, b"in the trash");
    assert!(matches!(
        off.restore(&admin(), &repo, &gone).await,
        Err(Error::NotFound { .. }) | Ok(0)
    ));
}

#[tokio::test]
async fn a_refused_uploads_copies_are_taken_back_only_when_nothing_can_need_them() {
    use stowage_core::quorum::TakeBack as _;
    use stowage_core::{BinaryProvider as _, BinaryProviderExt as _};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(InMemoryProvider::new());
    let stowage = service_over(dir.path(), Filestore::from_provider(store.clone())).await;
    let guard = super::GuardedTakeBack {
        locks: stowage.locks.clone(),
        metadata: stowage.metadata.clone(),
    };
    let repo = RepoKey::parse("libs").expect("key");
    stowage
        .put_repository(&admin(), &repo, Map::new())
        .await
        .expect("repo");
    let take_back = |digest| {
        let store = store.clone();
        let guard = &guard;
        async move {
            guard
                .take_back(
                    digest,
                    Box::pin(async move { store.delete(&digest).await.expect("delete") }),
                )
                .await;
        }
    };
    let stored = |data: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .put_bytes(bytes::Bytes::from_static(data), Default::default())
                .await
                .expect("put")
                .checksums
                .sha256
        }
    };

    // Recorded by an artifact (a concurrent upload of the same bytes won): kept.
    let path = ArtifactPath::parse("won.bin").expect("path");
    stowage
        .deploy(
            &admin(),
            &repo,
            &path,
            body(b"recorded bytes"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");
    let recorded = stored(b"recorded bytes").await;
    take_back(recorded).await;
    assert!(
        store.exists(&recorded).await.expect("exists"),
        "a recorded binary stays"
    );

    // Recorded by nothing: removed, and counted as a removal, so a deploy that found these
    // bytes meanwhile looks for them again before recording.
    let witness = stowage.gc_witness().await.expect("witness");
    let unrecorded = stored(b"nobody recorded these").await;
    take_back(unrecorded).await;
    assert!(
        !store.exists(&unrecorded).await.expect("exists"),
        "taken back"
    );
    assert!(
        stowage
            .may_have_collected_since(witness)
            .await
            .expect("since"),
        "a take-back is seen by deploys in flight"
    );

    // While a collection removes, the copies are left to it, and nothing waits.
    let removing = stowage
        .locks
        .lock(&Stowage::gc_removals())
        .await
        .expect("lock");
    let left = stored(b"left to the collection").await;
    take_back(left).await;
    assert!(store.exists(&left).await.expect("exists"), "left for GC");
    removing.release().await;
    served(&stowage, &repo, &path).await;
}
