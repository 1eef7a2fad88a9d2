//! The service's writes take the locks of what they change: while another holder has a path's
//! (or a repository's) lock, each write of it waits, then gives up with `Unavailable`, having
//! changed nothing; once the lock is free, the same write goes through.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use stowage_core::memory::InMemoryProvider;
use stowage_core::{ArtifactPath, Error, RepoKey};
use stowage_metadata::{Metadata, PoolSettings};

use super::{DeployRequest, Stowage};
use crate::locks::{LockName, LockSettings};
use crate::{Filestore, Settings};

async fn service(dir: &std::path::Path) -> Stowage {
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
    Stowage::new(
        Filestore::from_provider(Arc::new(InMemoryProvider::new())),
        metadata,
        &settings,
        "n1",
    )
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
