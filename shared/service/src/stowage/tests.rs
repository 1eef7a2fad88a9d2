//! The service's writes take the locks of what they change: while another holder has a path's
//! (or a repository's) lock, each write of it waits, then gives up with `Unavailable`, having
//! changed nothing; once the lock is free, the same write goes through. And a download of a
//! binary still queued is served, not redirected to a store that does not hold it yet.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use stowage_core::memory::InMemoryProvider;
use stowage_core::{ArtifactPath, Error, RepoKey};
use stowage_metadata::{Metadata, PoolSettings};

use super::{DeployRequest, Stowage};
use crate::locks::{LockName, LockSettings};
use crate::{Filestore, Settings};

/// The service over `filestore`, on a fresh SQLite database in `dir`, with a short lock wait.
async fn service_over(dir: &std::path::Path, filestore: Filestore) -> Stowage {
    let url = format!("sqlite://{}", dir.join("m.db").display());
    let metadata = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("db");
    metadata.migrate().await.expect("migrate");
    let settings = Settings {
        locks: LockSettings {
            lease: Duration::from_secs(30),
            wait: Duration::from_millis(100),
        },
        ..Settings::default()
    };
    Stowage::new(filestore, metadata, &settings, "n1")
}

async fn service(dir: &std::path::Path) -> Stowage {
    let filestore = Filestore::from_provider(Arc::new(InMemoryProvider::new()));
    service_over(dir, filestore).await
}

fn body(data: &'static [u8]) -> stowage_core::ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok(bytes::Bytes::from_static(data))
    }))
}

#[tokio::test]
async fn every_write_of_a_path_waits_for_its_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = service(dir.path()).await;
    let repo = RepoKey::parse("libs").expect("key");
    let path = ArtifactPath::parse("a/b.txt").expect("path");
    assert!(
        stowage
            .put_repository(&repo, Map::new())
            .await
            .expect("repo")
    );
    stowage
        .deploy(&repo, &path, body(b"hello"), DeployRequest::default())
        .await
        .expect("deploy");
    let props = vec![("os".to_string(), vec!["linux".to_string()])];

    let held = stowage
        .locks
        .lock(&LockName::path(&repo, &path))
        .await
        .expect("lock");
    let refused = |r: Result<u64, Error>| matches!(r, Err(Error::Unavailable(_)));
    assert!(refused(stowage.set_properties(&repo, &path, &props).await));
    assert!(refused(
        stowage
            .delete_properties(&repo, &path, &["os".to_string()])
            .await
    ));
    assert!(refused(stowage.delete(&repo, &path, "me").await));
    assert!(matches!(
        stowage
            .deploy(&repo, &path, body(b"other"), DeployRequest::default())
            .await,
        Err(Error::Unavailable(_))
    ));
    assert!(
        stowage.properties(&repo, &path).await.is_err(),
        "nothing was written while the lock was held"
    );
    held.release().await;

    assert_eq!(
        stowage
            .set_properties(&repo, &path, &props)
            .await
            .expect("set"),
        1
    );
    assert_eq!(stowage.delete(&repo, &path, "me").await.expect("delete"), 1);
    let held = stowage
        .locks
        .lock(&LockName::path(&repo, &path))
        .await
        .expect("lock");
    assert!(refused(stowage.restore(&repo, &path).await));
    held.release().await;
    assert_eq!(stowage.restore(&repo, &path).await.expect("restore"), 1);

    let held = stowage
        .locks
        .lock(&LockName::Repository(repo.clone()))
        .await
        .expect("lock");
    assert!(matches!(
        stowage.delete_repository(&repo).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        stowage.put_repository(&repo, Map::new()).await,
        Err(Error::Unavailable(_))
    ));
    held.release().await;
    stowage
        .delete_repository(&repo)
        .await
        .expect("delete repository");
    assert!(matches!(
        stowage.repository(&repo).await,
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
    stowage.put_repository(&repo, config).await.expect("repo");
    stowage
        .deploy(
            &repo,
            &path,
            body(b"queued bytes"),
            DeployRequest::default(),
        )
        .await
        .expect("deploy");

    let request = super::DownloadRequest::default();
    let (_, queued) = stowage
        .download(&repo, &path, &request)
        .await
        .expect("download");
    assert!(
        matches!(queued, super::Download::Bytes { body: Some(_), .. }),
        "still queued: served, not redirected ({queued:?})"
    );
    drain_queue(&queue).await;
    let (_, uploaded) = stowage
        .download(&repo, &path, &request)
        .await
        .expect("download");
    assert!(
        matches!(uploaded, super::Download::Redirect(_)),
        "uploaded: redirected ({uploaded:?})"
    );
}
