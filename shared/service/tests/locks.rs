//! Locks on SQLite, the single-node engine, live in the process: they order operations on one
//! name, time out with a 503-kind error, write nothing to the database, and leave nothing
//! behind once released.

use std::time::Duration;

use stowage_core::Error;
use stowage_metadata::{Metadata, PoolSettings};
use stowage_service::locks::{LockName, LockSettings, Locks};

#[tokio::test]
async fn sqlite_locks_are_in_process_mutexes_that_order_and_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let metadata = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("db");
    metadata.migrate().await.expect("migrate");
    let settings = LockSettings {
        lease: Duration::from_secs(30),
        wait: Duration::from_millis(200),
    };
    let locks = Locks::new(metadata.clone(), "n1", settings);
    let name = LockName::Named("test");

    let held = locks.lock(&name).await.expect("first");
    assert_eq!(
        metadata.lock_owner("task:test").await.expect("owner"),
        None,
        "no database row"
    );
    let err = locks.lock(&name).await.expect_err("held elsewhere");
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    let other = locks
        .lock(&LockName::Named("other"))
        .await
        .expect("another name is free");

    // A waiter gets the lock as soon as it is released.
    let waiter = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.lock(&LockName::Named("test")).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.release().await;
    waiter
        .await
        .expect("join")
        .expect("taken after the release");
    other.release().await;
    locks.lock(&name).await.expect("free again").release().await;
}
