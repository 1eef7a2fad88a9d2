//! Metadata behaviours, on a fresh database per test, on the engine `STOWAGE_TEST_DATABASE`
//! names (SQLite by default; `scripts/test` runs them again on PostgreSQL).

use std::time::Duration;

use stowage_core::{ArtifactPath, ChecksumHasher, Error, RepoKey};
use stowage_metadata::{
    ChecksumLookup, Metadata, NewArtifact, NodeRecord, PoolSettings, Relocation, Repository,
    now_ms, retry_conflicts,
};

async fn fresh() -> (tempfile::TempDir, Metadata) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = stowage_tests::database_url(dir.path()).await;
    let meta = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("connect");
    meta.migrate().await.expect("migrate");
    (dir, meta)
}

fn repo(key: &str) -> Repository {
    Repository {
        key: RepoKey::parse(key).expect("key"),
        rclass: "local".into(),
        package_type: "generic".into(),
        description: String::new(),
        config: serde_json::json!({}),
        created_ms: 1,
    }
}

fn artifact(repo: &str, path: &str, bytes: &[u8]) -> NewArtifact {
    NewArtifact {
        repo: RepoKey::parse(repo).expect("key"),
        path: ArtifactPath::parse(path).expect("path"),
        checksums: ChecksumHasher::digest(bytes),
        size: bytes.len() as u64,
        by: "admin".into(),
        properties: vec![("build".into(), "42".into())],
        original: Default::default(),
    }
}

#[tokio::test]
async fn commit_overwrite_search_and_dedup() {
    let (_dir, meta) = fresh().await;
    assert!(meta.put_repository(&repo("r1")).await.expect("create"));
    assert!(!meta.put_repository(&repo("r1")).await.expect("update"));
    meta.put_repository(&repo("r2")).await.expect("create");
    let a = meta
        .commit_artifact(&artifact("r1", "a/b/x.bin", b"one"))
        .await
        .expect("commit");
    meta.commit_artifact(&artifact("r2", "y.bin", b"one"))
        .await
        .expect("commit");
    let summary = meta.storage_summary().await.expect("summary");
    assert_eq!((summary.binaries_count, summary.artifacts_count), (1, 2));
    assert_eq!(summary.artifacts_size, 6);

    let over = meta
        .commit_artifact(&artifact("r1", "a/b/x.bin", b"two"))
        .await
        .expect("overwrite");
    assert_eq!(over.id, a.id);
    assert_eq!(over.created_ms, a.created_ms);
    assert_eq!(over.checksums, ChecksumHasher::digest(b"two"));
    let found = meta
        .search_checksum(ChecksumLookup::Sha1(ChecksumHasher::digest(b"one").sha1))
        .await
        .expect("search");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path.as_str(), "y.bin");
    assert_eq!(
        meta.properties(a.id).await.expect("props"),
        vec![("build".into(), "42".into())]
    );
    // "one" is still referenced by r2; nothing is unreferenced yet.
    assert!(meta.unreferenced_binaries(10).await.expect("gc").is_empty());
}

#[tokio::test]
async fn files_and_folders_do_not_collide() {
    let (_dir, meta) = fresh().await;
    meta.put_repository(&repo("r")).await.expect("create");
    meta.commit_artifact(&artifact("r", "a/b", b"x"))
        .await
        .expect("file");
    let below_file = meta.commit_artifact(&artifact("r", "a/b/c", b"x")).await;
    assert!(
        matches!(below_file, Err(Error::Conflict(_))),
        "{below_file:?}"
    );
    let on_folder = meta.commit_artifact(&artifact("r", "a", b"x")).await;
    assert!(
        matches!(on_folder, Err(Error::Conflict(_))),
        "{on_folder:?}"
    );
    let missing_repo = meta.commit_artifact(&artifact("nope", "a", b"x")).await;
    assert!(
        matches!(missing_repo, Err(Error::RepositoryNotFound { .. })),
        "{missing_repo:?}"
    );
    // a sibling whose name merely starts with the folder's name is not inside it
    meta.commit_artifact(&artifact("r", "a-b", b"y"))
        .await
        .expect("sibling");
    let root = meta
        .folder(&repo("r"), &ArtifactPath::root())
        .await
        .expect("root")
        .expect("folder");
    let names: Vec<_> = root
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.folder))
        .collect();
    assert_eq!(names, vec![("a", true), ("a-b", false)]);
    assert!(
        meta.folder(&repo("r"), &ArtifactPath::parse("zzz").expect("p"))
            .await
            .expect("q")
            .is_none()
    );
}

/// Deploys committed at once: on SQLite they share transactions (the group commit), and one
/// that is refused — a file where a folder is — still gets its refusal while the others of its
/// group are recorded. (Run again on a conflict, as the service does: InnoDB reports deadlocks
/// between concurrent upserts of neighbouring keys.)
#[tokio::test]
async fn concurrent_commits_share_transactions_and_a_refused_one_leaves_the_rest() {
    let (_dir, meta) = fresh().await;
    meta.put_repository(&repo("r")).await.expect("create");
    meta.commit_artifact(&artifact("r", "taken", b"file"))
        .await
        .expect("file");
    let many = |from: usize| -> Vec<NewArtifact> {
        (from..from + 32)
            .map(|i| {
                artifact(
                    "r",
                    &format!("d/{}/{i}.bin", i % 3),
                    format!("bytes {i}").as_bytes(),
                )
            })
            .collect()
    };

    let before = meta.group_commit_stats();
    let deploys = many(0);
    let answers = futures::future::join_all(
        deploys
            .iter()
            .map(|new| retry_conflicts(|| meta.commit_artifact(new))),
    )
    .await;
    for (answer, new) in answers.iter().zip(&deploys) {
        assert_eq!(answer.as_ref().expect("recorded").path, new.path);
    }
    if let (Some(before), Some(after)) = (before, meta.group_commit_stats()) {
        let deploys = after.deploys - before.deploys;
        let transactions = after.transactions - before.transactions;
        assert_eq!(deploys, 32);
        assert!(
            transactions < deploys / 4,
            "32 deploys at once took {transactions} transactions"
        );
    }

    let mut deploys = many(32);
    deploys.insert(17, artifact("r", "taken/below", b"refused"));
    let answers = futures::future::join_all(
        deploys
            .iter()
            .map(|new| retry_conflicts(|| meta.commit_artifact(new))),
    )
    .await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 17 {
            assert!(matches!(answer, Err(Error::Conflict(_))), "{answer:?}");
        } else {
            assert_eq!(answer.as_ref().expect("recorded").path, deploys[i].path);
        }
    }
    for new in many(0).iter().chain(&many(32)) {
        let record = meta
            .artifact(&new.repo, &new.path)
            .await
            .expect("lookup")
            .expect("recorded");
        assert_eq!(record.checksums, new.checksums);
        assert_eq!(
            meta.properties(record.id).await.expect("props"),
            vec![("build".into(), "42".into())]
        );
    }
    let below = ArtifactPath::parse("taken/below").expect("path");
    assert!(
        meta.artifact(&repo("r").key, &below)
            .await
            .expect("q")
            .is_none()
    );
}

/// A file deployed again replaces its properties; deployed anew it has only its own.
#[tokio::test]
async fn a_replaced_file_loses_its_old_properties() {
    let (_dir, meta) = fresh().await;
    meta.put_repository(&repo("r")).await.expect("create");
    let mut first = artifact("r", "p/x.bin", b"one");
    first.properties = vec![("old".into(), "1".into())];
    meta.commit_artifact(&first).await.expect("first");
    let second = meta
        .commit_artifact(&artifact("r", "p/x.bin", b"two"))
        .await
        .expect("second");
    assert_eq!(
        meta.properties(second.id).await.expect("props"),
        vec![("build".into(), "42".into())]
    );
}

#[tokio::test]
async fn trash_restore_and_garbage() {
    let (_dir, meta) = fresh().await;
    meta.put_repository(&repo("r")).await.expect("create");
    meta.commit_artifact(&artifact("r", "d/one", b"1"))
        .await
        .expect("commit");
    meta.commit_artifact(&artifact("r", "d/two", b"2"))
        .await
        .expect("commit");
    let folder = ArtifactPath::parse("d").expect("path");
    assert_eq!(
        meta.trash(&RepoKey::parse("r").expect("k"), &folder, "admin")
            .await
            .expect("trash")
            .files,
        2
    );
    assert!(
        meta.artifact(
            &RepoKey::parse("r").expect("k"),
            &ArtifactPath::parse("d/one").expect("p")
        )
        .await
        .expect("q")
        .is_none()
    );
    assert_eq!(meta.trash_list().await.expect("list").len(), 2);
    // trashed binaries are still referenced
    assert!(meta.unreferenced_binaries(10).await.expect("gc").is_empty());
    assert_eq!(
        meta.restore(&RepoKey::parse("r").expect("k"), &folder)
            .await
            .expect("restore"),
        2
    );
    let back = meta
        .artifact(
            &RepoKey::parse("r").expect("k"),
            &ArtifactPath::parse("d/two").expect("p"),
        )
        .await
        .expect("q")
        .expect("restored");
    assert_eq!(meta.properties(back.id).await.expect("props").len(), 1);
    meta.trash(&RepoKey::parse("r").expect("k"), &folder, "admin")
        .await
        .expect("trash");
    assert_eq!(meta.empty_trash(None).await.expect("empty"), 2);
    let garbage = meta.unreferenced_binaries(10).await.expect("gc");
    assert_eq!(garbage.len(), 2);
    for b in garbage {
        assert!(
            meta.delete_binary_if_unreferenced(&b.checksums.sha256)
                .await
                .expect("delete")
        );
    }
    assert_eq!(
        meta.storage_summary()
            .await
            .expect("summary")
            .binaries_count,
        0
    );
}

#[tokio::test]
async fn upload_sessions_are_kept_until_finished_and_found_when_expired() {
    let (_dir, meta) = fresh().await;
    let session = |id: &str, expires_ms| stowage_metadata::UploadSession {
        id: id.into(),
        repo: RepoKey::parse("r1").expect("key"),
        path: ArtifactPath::parse("dir/big file.bin").expect("path"),
        sha256: ChecksumHasher::digest(id.as_bytes()).sha256,
        size: 6_000_000_000,
        multipart_upload_id: (id == "b").then(|| "upload-1".to_string()),
        created_by: "admin".into(),
        created_ms: 1,
        expires_ms,
    };
    meta.create_upload_session(&session("a", 100))
        .await
        .expect("a");
    meta.create_upload_session(&session("b", 5_000))
        .await
        .expect("b");
    assert_eq!(
        meta.upload_session("b").await.expect("read"),
        Some(session("b", 5_000))
    );
    assert_eq!(meta.upload_session("zz").await.expect("read"), None);
    let expired = meta
        .expired_upload_sessions(1_000, 10)
        .await
        .expect("expired");
    assert_eq!(expired, vec![session("a", 100)]);
    assert!(meta.delete_upload_session("a").await.expect("delete"));
    assert!(!meta.delete_upload_session("a").await.expect("once only"));
}

/// The SHA-256 that `meta` answers for `repo`/`path`, if any.
async fn sha_of(meta: &Metadata, repo: &str, path: &str) -> Option<String> {
    meta.artifact(
        &RepoKey::parse(repo).expect("key"),
        &ArtifactPath::parse(path).expect("path"),
    )
    .await
    .expect("lookup")
    .map(|a| a.checksums.sha256.to_hex())
}

fn sha(bytes: &[u8]) -> Option<String> {
    Some(ChecksumHasher::digest(bytes).sha256.to_hex())
}

#[tokio::test]
async fn cached_lookups_follow_every_write() {
    let (_dir, meta) = fresh().await;
    meta.enable_artifact_cache();
    assert!(meta.clone().artifact_cache_enabled());
    let r = RepoKey::parse("r").expect("key");
    let path = |p: &str| ArtifactPath::parse(p).expect("path");
    meta.put_repository(&repo("r")).await.expect("create");
    // A cached "not found" ends with the deploy.
    assert_eq!(sha_of(&meta, "r", "a/x").await, None);
    meta.commit_artifact(&artifact("r", "a/x", b"1"))
        .await
        .expect("commit");
    assert_eq!(sha_of(&meta, "r", "a/x").await, sha(b"1"));
    assert_eq!(sha_of(&meta, "r", "a/x").await, sha(b"1"));
    // Overwrite.
    meta.commit_artifact(&artifact("r", "a/x", b"2"))
        .await
        .expect("overwrite");
    assert_eq!(sha_of(&meta, "r", "a/x").await, sha(b"2"));
    // Move, then copy.
    let (a, b) = (path("a"), path("b"));
    let relocation = |src, dst, copy| Relocation {
        src_repo: &r,
        src,
        dst_repo: &r,
        dst,
        by: "admin",
        copy,
        dry: false,
        check_source: &|_, _| Ok(()),
        check_target: &|_, _| Ok(()),
        check_overwrite: &|_, _| Ok(()),
    };
    meta.relocate(&relocation(&a, &b, false))
        .await
        .expect("move");
    assert_eq!(sha_of(&meta, "r", "a/x").await, None);
    assert_eq!(sha_of(&meta, "r", "b/x").await, sha(b"2"));
    let (bx, cx) = (path("b/x"), path("c/x"));
    meta.relocate(&relocation(&bx, &cx, true))
        .await
        .expect("copy");
    assert_eq!(sha_of(&meta, "r", "c/x").await, sha(b"2"));
    // Trash and restore.
    meta.trash(&r, &path("b"), "admin").await.expect("trash");
    assert_eq!(sha_of(&meta, "r", "b/x").await, None);
    meta.restore(&r, &path("b")).await.expect("restore");
    assert_eq!(sha_of(&meta, "r", "b/x").await, sha(b"2"));
    // The repository goes, and its artifacts with it.
    assert!(meta.delete_repository(&r).await.expect("delete"));
    assert_eq!(sha_of(&meta, "r", "b/x").await, None);
    assert_eq!(sha_of(&meta, "r", "c/x").await, None);
}

#[tokio::test]
async fn the_cache_answers_from_memory_until_its_own_process_writes() {
    let (dir, cached) = fresh().await;
    cached.enable_artifact_cache();
    // Two more stores on the same database, as other processes would have.
    let url = stowage_tests::database_url(dir.path()).await;
    let other = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("connect");
    let plain = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("connect");
    assert!(!plain.artifact_cache_enabled());
    cached.put_repository(&repo("r")).await.expect("create");
    cached
        .commit_artifact(&artifact("r", "x", b"1"))
        .await
        .expect("commit");
    assert_eq!(sha_of(&cached, "r", "x").await, sha(b"1"));
    other
        .commit_artifact(&artifact("r", "x", b"2"))
        .await
        .expect("overwrite elsewhere");
    // Why only the database's only writer may cache: another writer is not seen...
    assert_eq!(sha_of(&cached, "r", "x").await, sha(b"1"));
    assert_eq!(sha_of(&plain, "r", "x").await, sha(b"2"));
    // ...until a write of its own (any) makes its entries stale.
    cached
        .commit_artifact(&artifact("r", "y", b"3"))
        .await
        .expect("commit");
    assert_eq!(sha_of(&cached, "r", "x").await, sha(b"2"));
    // What storageinfo shows: one answer from memory, two from the database.
    let stats = cached.artifact_cache_stats().expect("enabled");
    assert_eq!((stats.hits, stats.misses), (1, 2), "{stats:?}");
    assert_eq!(plain.artifact_cache_stats(), None);
}

#[tokio::test]
async fn removal_for_good_collection_runs_and_lock_rows() {
    let (_dir, meta) = fresh().await;
    meta.put_repository(&repo("r")).await.expect("create");
    let r = RepoKey::parse("r").expect("key");
    meta.commit_artifact(&artifact("r", "d/kept", b"kept"))
        .await
        .expect("commit");
    meta.commit_artifact(&artifact("r", "d/gone", b"gone"))
        .await
        .expect("commit");
    meta.trash(&r, &ArtifactPath::parse("d/kept").expect("p"), "admin")
        .await
        .expect("trash");
    // Removed for good: not in the trash, and its binary is garbage.
    let gone = ArtifactPath::parse("d/gone").expect("p");
    assert_eq!(meta.remove(&r, &gone).await.expect("remove").files, 1);
    assert!(meta.artifact(&r, &gone).await.expect("q").is_none());
    let trash: Vec<String> = meta
        .trash_list()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.path.to_string())
        .collect();
    assert_eq!(trash, vec!["d/kept"]);
    let gone_sha = ChecksumHasher::digest(b"gone").sha256;
    let garbage = meta.unreferenced_binaries(10).await.expect("gc");
    assert_eq!(garbage.len(), 1);
    assert_eq!(garbage[0].checksums.sha256, gone_sha);
    assert!(meta.binary_recorded(&gone_sha).await.expect("recorded"));

    // Collection runs count up from 0.
    assert_eq!(meta.gc_runs().await.expect("runs"), 0);
    meta.count_gc_run().await.expect("count");
    meta.count_gc_run().await.expect("count");
    assert_eq!(meta.gc_runs().await.expect("runs"), 2);

    // A lock row is seen while it exists, expired or not (with the run count, in one read).
    assert_eq!(meta.gc_witness("task:x").await.expect("q"), (2, false));
    assert!(
        meta.try_lock("task:x", "me", Duration::ZERO)
            .await
            .expect("lock")
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        meta.gc_witness("task:x").await.expect("q"),
        (2, true),
        "expired, still there"
    );
    meta.unlock("task:x", "me").await.expect("unlock");
    assert_eq!(meta.gc_witness("task:x").await.expect("q"), (2, false));
}

#[tokio::test]
async fn leases_and_heartbeats_are_timed_by_the_database_clock() {
    let (_dir, meta) = fresh().await;
    let minute = Duration::from_secs(60);

    // A live lease: held by its owner only, renewed by its owner only, fenced with its margin.
    assert!(meta.try_lock("task:l", "a", minute).await.expect("lock"));
    assert!(!meta.try_lock("task:l", "b", minute).await.expect("held"));
    assert!(!meta.renew_lock("task:l", "b", minute).await.expect("renew"));
    assert!(meta.renew_lock("task:l", "a", minute).await.expect("renew"));
    let held = [("task:l", "a")];
    assert!(
        meta.leases_held(&held, Duration::from_secs(30))
            .await
            .expect("q")
    );
    assert!(
        !meta
            .leases_held(&held, Duration::from_secs(120))
            .await
            .expect("q"),
        "less than the margin is left"
    );
    assert!(
        !meta
            .leases_held(&[("task:l", "a"), ("task:l", "b")], Duration::ZERO)
            .await
            .expect("q"),
        "one of two is not held"
    );
    assert_eq!(
        meta.lock_owner("task:l").await.expect("q").as_deref(),
        Some("a")
    );

    // A lease that ran out is taken over; its old holder can neither renew nor pass the fence.
    assert!(
        meta.try_lock("task:m", "a", Duration::ZERO)
            .await
            .expect("lock")
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(meta.lock_owner("task:m").await.expect("q"), None, "expired");
    assert!(
        meta.try_lock("task:m", "b", minute)
            .await
            .expect("taken over")
    );
    assert!(!meta.renew_lock("task:m", "a", minute).await.expect("renew"));
    assert!(
        !meta
            .leases_held(&[("task:m", "a")], Duration::ZERO)
            .await
            .expect("q")
    );
    assert!(
        meta.leases_held(&[("task:m", "b")], Duration::ZERO)
            .await
            .expect("q")
    );

    // A heartbeat is stamped with the database's time, whatever the node says.
    let node = NodeRecord {
        id: "n1".into(),
        address: "http://127.0.0.1:1".into(),
        version: "test".into(),
        started_ms: 1,
        heartbeat_ms: 1,
        zone: String::new(),
    };
    meta.heartbeat(&node).await.expect("beat");
    meta.remove_silent_nodes(minute).await.expect("sweep");
    let nodes = meta.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1, "a node that just beat is not silent");
    assert!(
        (nodes[0].heartbeat_ms - now_ms()).abs() < 60_000,
        "stamped now, not at {}",
        node.heartbeat_ms
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    meta.remove_silent_nodes(Duration::ZERO)
        .await
        .expect("sweep");
    assert!(
        meta.nodes().await.expect("nodes").is_empty(),
        "silent for longer than 0 ms"
    );
    meta.heartbeat(&node).await.expect("beat");
    meta.remove_node("n1").await.expect("leave");
    assert!(meta.nodes().await.expect("nodes").is_empty());
}

#[tokio::test]
async fn the_cluster_queue_ledger_keeps_copies_per_node_and_knows_the_live_holders() {
    let (_dir, meta) = fresh().await;
    let node = |id: &str, zone: &str| NodeRecord {
        id: id.into(),
        address: format!("127.0.0.1:{}", id.len()),
        version: "test".into(),
        started_ms: 1,
        heartbeat_ms: 1,
        zone: zone.into(),
    };
    meta.heartbeat(&node("a", "z1")).await.expect("beat");
    meta.heartbeat(&node("b", "z2")).await.expect("beat");
    let digest: stowage_core::Sha256 = "ab".repeat(32).parse().expect("digest");
    let other: stowage_core::Sha256 = "cd".repeat(32).parse().expect("digest");
    meta.record_queue_copies(&digest, 10, &["a", "b"])
        .await
        .expect("record");
    // Recorded twice stays one row; a node that never beat ("gone") is no live holder.
    meta.record_queue_copies(&digest, 10, &["a", "gone"])
        .await
        .expect("record again");
    meta.record_queue_copies(&other, 7, &["b"])
        .await
        .expect("record");
    let copies = meta.queue_copies().await.expect("copies");
    assert_eq!(copies.len(), 4, "{copies:?}");
    assert!(copies.iter().all(|c| c.queued_ms > 0));
    let live: Vec<String> = meta
        .queue_holders(&digest, Duration::from_secs(60))
        .await
        .expect("holders")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(live, ["a", "b"]);
    let zones: Vec<String> = meta
        .live_nodes(Duration::from_secs(60))
        .await
        .expect("live")
        .into_iter()
        .map(|n| n.zone)
        .collect();
    assert_eq!(zones, ["z1", "z2"], "zones are kept");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        meta.live_nodes(Duration::ZERO)
            .await
            .expect("live")
            .is_empty(),
        "no heartbeat is younger than 0 ms"
    );
    // One node's copy, then every copy, forgotten.
    meta.forget_queue_copies(&digest, Some("a"))
        .await
        .expect("forget");
    let holders = meta
        .queue_holders(&digest, Duration::from_secs(60))
        .await
        .expect("holders");
    assert_eq!(holders.len(), 1);
    meta.forget_queue_copies(&digest, None)
        .await
        .expect("forget");
    let left = meta.queue_copies().await.expect("copies");
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].sha256, left[0].size), (other, 7));
}

#[tokio::test]
async fn users_groups_permissions_and_tokens_are_kept() {
    use stowage_metadata::{GroupRecord, TokenRecord, UserRecord};
    let (_dir, meta) = fresh().await;
    let group = |name: &str, auto_join: bool| GroupRecord {
        name: name.into(),
        description: format!("the {name}"),
        auto_join,
        created_ms: 0,
        members: Vec::new(),
    };
    assert!(
        meta.put_group(&group("readers", true), None)
            .await
            .expect("group")
    );
    assert!(
        meta.put_group(&group("devs", false), None)
            .await
            .expect("group")
    );
    let user = |name: &str, groups: &[&str]| UserRecord {
        name: name.into(),
        email: format!("{name}@example.com"),
        password_hash: Some("$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA".into()),
        admin: false,
        disabled: false,
        created_ms: 0,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    assert!(meta.put_user(&user("bob", &["devs"])).await.expect("user"));
    let err = meta
        .put_user(&user("eve", &["nope"]))
        .await
        .expect_err("no such group");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // An update keeps the password when none is given and sets exactly the groups named.
    let mut update = user("bob", &[]);
    update.password_hash = None;
    update.disabled = true;
    assert!(!meta.put_user(&update).await.expect("update"));
    let snap = meta.security_snapshot().await.expect("snapshot");
    let bob = snap.users.iter().find(|u| u.name == "bob").expect("bob");
    assert!(bob.disabled);
    assert!(bob.password_hash.is_some(), "the password is kept");
    assert!(
        bob.groups.is_empty(),
        "exactly the groups named: {:?}",
        bob.groups
    );
    assert!(
        snap.users.iter().all(|u| u.name != "eve"),
        "nothing of a refused user"
    );
    // A new user joins the auto-join groups.
    meta.put_user(&user("carol", &["devs"]))
        .await
        .expect("user");
    let snap = meta.security_snapshot().await.expect("snapshot");
    let carol = snap
        .users
        .iter()
        .find(|u| u.name == "carol")
        .expect("carol");
    assert_eq!(carol.groups, vec!["devs", "readers"]);
    let devs = snap.groups.iter().find(|g| g.name == "devs").expect("devs");
    assert_eq!(devs.members, vec!["carol"]);
    // Members set from the group's side.
    meta.put_group(&group("devs", false), Some(&["bob".into(), "carol".into()]))
        .await
        .expect("members");
    let snap = meta.security_snapshot().await.expect("snapshot");
    let devs = snap.groups.iter().find(|g| g.name == "devs").expect("devs");
    assert_eq!(devs.members, vec!["bob", "carol"]);

    assert!(
        meta.put_permission("p", "{\"name\":\"p\"}")
            .await
            .expect("perm")
    );
    assert!(
        !meta
            .put_permission("p", "{\"name\":\"p\",\"x\":1}")
            .await
            .expect("perm")
    );
    let snap = meta.security_snapshot().await.expect("snapshot");
    assert_eq!(snap.permissions.len(), 1);
    assert_eq!(snap.permissions[0].body, "{\"name\":\"p\",\"x\":1}");

    let token = TokenRecord {
        id: "0123456789abcdef0123456789abcdef".into(),
        user: "carol".into(),
        scope: "applied-permissions/user".into(),
        description: "ci".into(),
        created_ms: 5,
        expires_ms: Some(1_000),
        revoked: false,
        refreshable: true,
    };
    meta.create_access_token(&token, &"ab".repeat(32), Some(&"ef".repeat(32)))
        .await
        .expect("token");
    assert_eq!(
        meta.access_token_by_refresh(&"ef".repeat(32))
            .await
            .expect("q"),
        Some(token.clone())
    );
    assert_eq!(
        meta.access_token_by_hash(&"ab".repeat(32))
            .await
            .expect("q"),
        Some(token.clone())
    );
    assert_eq!(
        meta.access_token_by_hash(&"cd".repeat(32))
            .await
            .expect("q"),
        None
    );
    assert_eq!(
        meta.access_tokens(Some("carol")).await.expect("list"),
        vec![token.clone()]
    );
    // A refresh replaces the token, once.
    let next = TokenRecord {
        id: "fedcba9876543210fedcba9876543210".into(),
        refreshable: false,
        ..token.clone()
    };
    let replace = |secret: &'static str| meta.replace_access_token(&token.id, &next, secret, None);
    assert!(
        replace("1212121212121212121212121212121212121212121212121212121212121212")
            .await
            .expect("replace")
    );
    assert!(
        !replace("3434343434343434343434343434343434343434343434343434343434343434")
            .await
            .expect("again")
    );
    assert_eq!(
        meta.access_token_by_refresh(&"ef".repeat(32))
            .await
            .expect("q"),
        None
    );
    for secret in ["ab".repeat(32)] {
        assert!(
            meta.access_token_by_hash(&secret)
                .await
                .expect("q")
                .expect("kept")
                .revoked
        );
    }
    assert!(meta.revoke_access_token(&next.id).await.expect("revoke"));
    assert!(!meta.revoke_access_token(&next.id).await.expect("again"));
    assert!(
        meta.access_token_by_hash(&"12".repeat(32))
            .await
            .expect("q")
            .expect("kept")
            .revoked
    );

    assert!(meta.delete_user("carol").await.expect("delete"));
    assert!(
        meta.access_tokens(Some("carol"))
            .await
            .expect("list")
            .is_empty(),
        "its tokens go"
    );
    assert!(meta.delete_group("devs").await.expect("delete"));
    assert!(meta.delete_permission("p").await.expect("delete"));
    let snap = meta.security_snapshot().await.expect("snapshot");
    assert_eq!(snap.users.len(), 1);
    assert_eq!(snap.groups.len(), 1);
    assert!(snap.permissions.is_empty());
}

fn p(path: &str) -> ArtifactPath {
    ArtifactPath::parse(path).expect("path")
}

fn names(listing: &stowage_metadata::FolderListing) -> Vec<(&str, bool)> {
    listing
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.folder))
        .collect()
}

#[tokio::test]
async fn folders_are_entries_of_their_own() {
    let (_dir, meta) = fresh().await;
    let r = RepoKey::parse("r").expect("key");
    meta.put_repository(&repo("r")).await.expect("create");
    // Created explicitly, with the folders above it; creating it again changes nothing.
    let made = meta
        .create_folder(&r, &p("org/empty"), "alice")
        .await
        .expect("create");
    assert_eq!(made.created_by, "alice");
    let again = meta
        .create_folder(&r, &p("org/empty"), "bob")
        .await
        .expect("again");
    assert_eq!(again, made);
    // Implicitly, by a deploy below.
    meta.commit_artifact(&artifact("r", "org/lib/x.jar", b"x"))
        .await
        .expect("deploy");
    let org = meta
        .folder(&repo("r"), &p("org"))
        .await
        .expect("q")
        .expect("org");
    assert_eq!(names(&org), [("empty", true), ("lib", true)]);
    assert_eq!(org.folder.created_by, "alice");
    // A folder cannot be created at or below a file, nor a file where a folder is.
    let on_file = meta.create_folder(&r, &p("org/lib/x.jar/sub"), "a").await;
    assert!(matches!(on_file, Err(Error::Conflict(_))), "{on_file:?}");
    let file_on_folder = meta
        .commit_artifact(&artifact("r", "org/empty", b"y"))
        .await;
    assert!(
        matches!(file_on_folder, Err(Error::Conflict(_))),
        "{file_on_folder:?}"
    );
    // The folder stays when its last file goes.
    meta.trash(&r, &p("org/lib/x.jar"), "admin")
        .await
        .expect("trash");
    let lib = meta
        .folder(&repo("r"), &p("org/lib"))
        .await
        .expect("q")
        .expect("lib is kept");
    assert!(lib.children.is_empty());
    // Properties of its own; recursive or not.
    meta.commit_artifact(&artifact("r", "org/lib/y.jar", b"y"))
        .await
        .expect("deploy");
    let only_folder = meta
        .set_properties(&r, &p("org"), false, &[("team".into(), vec!["a".into()])])
        .await
        .expect("set");
    assert_eq!(only_folder, 1);
    let org_id = org.folder.id.expect("a row");
    assert_eq!(
        meta.folder_properties(org_id).await.expect("props"),
        [("team".to_string(), "a".to_string())]
    );
    let y = meta
        .artifact(&r, &p("org/lib/y.jar"))
        .await
        .expect("q")
        .expect("y");
    assert_eq!(meta.properties(y.id).await.expect("props").len(), 1);
    let everything = meta
        .set_properties(&r, &p("org"), true, &[("qa".into(), vec!["ok".into()])])
        .await
        .expect("set");
    assert_eq!(everything, 4, "org, org/empty, org/lib and y.jar");
    assert!(
        meta.properties(y.id)
            .await
            .expect("props")
            .contains(&("qa".to_string(), "ok".to_string()))
    );
    // A move takes the folders along, empty ones and their properties too.
    meta.relocate(&Relocation {
        src_repo: &r,
        src: &p("org"),
        dst_repo: &r,
        dst: &p("moved"),
        by: "admin",
        copy: false,
        dry: false,
        check_source: &|_, _| Ok(()),
        check_target: &|_, _| Ok(()),
        check_overwrite: &|_, _| Ok(()),
    })
    .await
    .expect("move");
    assert!(
        meta.folder(&repo("r"), &p("org"))
            .await
            .expect("q")
            .is_none()
    );
    let moved = meta
        .folder(&repo("r"), &p("moved"))
        .await
        .expect("q")
        .expect("moved");
    assert_eq!(names(&moved), [("empty", true), ("lib", true)]);
    let moved_props = meta
        .folder_properties(moved.folder.id.expect("row"))
        .await
        .expect("props");
    assert!(moved_props.contains(&("team".to_string(), "a".to_string())));
    // Deleting a folder takes out its files and its folders.
    let taken = meta.trash(&r, &p("moved"), "admin").await.expect("trash");
    assert_eq!((taken.files, taken.folders), (1, 3));
    assert!(
        meta.folder(&repo("r"), &p("moved/empty"))
            .await
            .expect("q")
            .is_none()
    );
    let summary = meta.storage_summary().await.expect("summary");
    assert_eq!(summary.folders_count, 0);
    // Restoring a file from the trash recreates the folders it needs.
    meta.restore(&r, &p("moved/lib/y.jar"))
        .await
        .expect("restore");
    assert_eq!(
        meta.storage_summary().await.expect("summary").folders_count,
        2
    );
}

#[tokio::test]
async fn file_lists_page_through_the_path_index() {
    let (_dir, meta) = fresh().await;
    let r = RepoKey::parse("r").expect("key");
    meta.put_repository(&repo("r")).await.expect("create");
    for path in ["a/1", "a/2", "a/b/3", "a/b/c/4", "a-sibling", "z"] {
        meta.commit_artifact(&artifact("r", path, path.as_bytes()))
            .await
            .expect("deploy");
    }
    let walk = |kind, deep, path: &'static str| {
        let meta = meta.clone();
        let r = r.clone();
        async move {
            let (mut all, mut after) = (Vec::new(), None::<String>);
            loop {
                let page = meta
                    .list_page(kind, &r, &p(path), deep, after.as_deref(), 2)
                    .await
                    .expect("page");
                let done = page.len() < 2;
                after = page.last().map(|e| e.path.as_str().to_string());
                all.extend(page.into_iter().map(|e| e.path.as_str().to_string()));
                if done {
                    return all;
                }
            }
        }
    };
    use stowage_metadata::ListKind::{Files, Folders};
    assert_eq!(
        walk(Files, true, "a").await,
        ["a/1", "a/2", "a/b/3", "a/b/c/4"]
    );
    assert_eq!(walk(Files, false, "a").await, ["a/1", "a/2"]);
    assert_eq!(walk(Folders, true, "a").await, ["a/b", "a/b/c"]);
    assert_eq!(walk(Files, false, "").await, ["a-sibling", "z"]);
    assert_eq!(walk(Files, true, "").await.len(), 6);
    let (latest, _) = meta
        .last_modified(&r, &p("a"))
        .await
        .expect("q")
        .expect("found");
    assert!(latest.as_str().starts_with("a/"), "{latest}");
}

#[tokio::test]
async fn original_checksums_and_download_counts_are_kept() {
    let (_dir, meta) = fresh().await;
    let r = RepoKey::parse("r").expect("key");
    meta.put_repository(&repo("r")).await.expect("create");
    let mut new = artifact("r", "f.jar", b"f");
    new.original.sha1 = Some(new.checksums.sha1);
    let record = meta.commit_artifact(&new).await.expect("deploy");
    assert_eq!(record.original.sha1, Some(new.checksums.sha1));
    assert_eq!(record.original.sha256, None);
    let recorded = meta
        .record_original_checksum(
            &r,
            &p("f.jar"),
            stowage_metadata::OriginalChecksum::Md5,
            &new.checksums.md5.to_hex(),
        )
        .await
        .expect("record")
        .expect("file");
    assert_eq!(recorded.original.md5, Some(new.checksums.md5));
    assert_eq!(recorded.original.sha1, Some(new.checksums.sha1));
    // Counts add up across batches; the last download wins.
    meta.add_downloads(&[(record.id, 3, 10, "ann".into())])
        .await
        .expect("add");
    meta.add_downloads(&[(record.id, 2, 20, "bob".into())])
        .await
        .expect("add");
    let stats = meta.download_stats(record.id).await.expect("stats");
    assert_eq!(
        (stats.downloads, stats.last_ms, stats.last_by.as_str()),
        (5, 20, "bob")
    );
    // They go with the artifact.
    meta.remove(&r, &p("f.jar")).await.expect("remove");
    assert_eq!(
        meta.download_stats(record.id)
            .await
            .expect("stats")
            .downloads,
        0
    );
}

/// An upgrade from the schema before folders were entries finds the folders the recorded
/// artifacts imply, with the earliest creation below each.
#[tokio::test]
async fn the_folders_migration_finds_the_folders_of_existing_artifacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = stowage_tests::database_url(dir.path()).await;
    let meta = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("connect");
    meta.migrate_to(7).await.expect("the schema before folders");
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&url).await.expect("raw");
    let sha = "e".repeat(64);
    let insert = |sql: String| {
        let raw = raw.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&raw)
                .await
                .expect("insert");
        }
    };
    insert("INSERT INTO repositories (repo_key, rclass, package_type, description, config, created_ms) VALUES ('r', 'local', 'generic', '', '{}', 1)".into()).await;
    insert(format!("INSERT INTO binaries (sha256, sha1, md5, size, created_ms) VALUES ('{sha}', '{}', '{}', 1, 1)", "a".repeat(40), "b".repeat(32))).await;
    for (path, created) in [
        ("top", 5),
        ("x/y/z/deep", 7),
        ("x/y/other", 3),
        ("x/file", 9),
    ] {
        insert(format!("INSERT INTO artifacts (repo_key, path, sha256, size, created_ms, created_by, modified_ms, modified_by) VALUES ('r', '{path}', '{sha}', 1, {created}, 'old', {created}, 'old')")).await;
    }
    raw.close().await;
    meta.migrate().await.expect("upgrade");
    let x = meta
        .folder(&repo("r"), &p("x"))
        .await
        .expect("q")
        .expect("x");
    assert_eq!(names(&x), [("file", false), ("y", true)]);
    assert_eq!(x.folder.created_ms, 3, "the earliest creation below x");
    let y = meta
        .folder(&repo("r"), &p("x/y"))
        .await
        .expect("q")
        .expect("x/y");
    assert_eq!(names(&y), [("other", false), ("z", true)]);
    let root = meta
        .folder(&repo("r"), &ArtifactPath::root())
        .await
        .expect("q")
        .expect("root");
    assert_eq!(names(&root), [("top", false), ("x", true)]);
    assert_eq!(meta.storage_summary().await.expect("s").folders_count, 3);
}

/// Moving a folder onto a folder above it, when its names repeat below it, would overwrite
/// files still to be moved: refused, nothing changed.
#[tokio::test]
async fn a_move_whose_targets_land_inside_its_source_is_refused() {
    let (_dir, meta) = fresh().await;
    let r = RepoKey::parse("r").expect("key");
    meta.put_repository(&repo("r")).await.expect("create");
    for (path, bytes) in [("m/b/x", b"1"), ("m/b/b/x", b"2")] {
        meta.commit_artifact(&artifact("r", path, bytes))
            .await
            .expect("deploy");
    }
    let moved = meta
        .relocate(&Relocation {
            src_repo: &r,
            src: &p("m/b"),
            dst_repo: &r,
            dst: &p("m"),
            by: "admin",
            copy: false,
            dry: false,
            check_source: &|_, _| Ok(()),
            check_target: &|_, _| Ok(()),
            check_overwrite: &|_, _| Ok(()),
        })
        .await;
    assert!(matches!(moved, Err(Error::InvalidInput(_))), "{moved:?}");
    for (path, bytes) in [("m/b/x", b"1"), ("m/b/b/x", b"2")] {
        assert_eq!(
            sha_of(&meta, "r", path).await,
            sha(bytes),
            "{path} unchanged"
        );
    }
}

/// A move of more files than a page: every file lands with its own bytes and properties, an
/// overwrite on the second page takes the moved bytes, nothing is left at the source.
#[tokio::test]
async fn a_move_of_many_files_goes_page_by_page_and_loses_nothing() {
    let (_dir, meta) = fresh().await;
    let r = RepoKey::parse("r").expect("key");
    meta.put_repository(&repo("r")).await.expect("create");
    const FILES: usize = 1_500;
    for i in 0..FILES {
        let mut new = artifact(
            "r",
            &format!("src/d{}/f{i:05}", i % 7),
            format!("{i}").as_bytes(),
        );
        new.properties = vec![("n".into(), i.to_string())];
        meta.commit_artifact(&new).await.expect("deploy");
    }
    // Already at a target, with other bytes (past the first page of 1,000).
    meta.commit_artifact(&artifact("r", "dst/d4/f01201", b"old"))
        .await
        .expect("deploy");
    let moved = meta
        .relocate(&Relocation {
            src_repo: &r,
            src: &p("src"),
            dst_repo: &r,
            dst: &p("dst"),
            by: "admin",
            copy: false,
            dry: false,
            check_source: &|_, _| Ok(()),
            check_target: &|_, _| Ok(()),
            check_overwrite: &|_, _| Ok(()),
        })
        .await
        .expect("move");
    assert_eq!(moved, FILES as u64);
    for i in [0, 999, 1000, 1201, FILES - 1] {
        let path = format!("dst/d{}/f{i:05}", i % 7);
        assert_eq!(
            sha_of(&meta, "r", &path).await,
            sha(format!("{i}").as_bytes()),
            "{path}"
        );
        let record = meta
            .artifact(&r, &p(&path))
            .await
            .expect("q")
            .expect("moved");
        assert_eq!(
            meta.properties(record.id).await.expect("props"),
            [("n".to_string(), i.to_string())],
            "{path}"
        );
    }
    assert!(
        meta.folder(&repo("r"), &p("src"))
            .await
            .expect("q")
            .is_none()
    );
    let summary = meta.storage_summary().await.expect("summary");
    assert_eq!(summary.artifacts_count, FILES as u64);
}

/// The export's lines without its header (which names the engine and the time).
fn export_body(meta_export: &[u8]) -> Vec<String> {
    String::from_utf8(meta_export.to_vec())
        .expect("utf-8")
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_sqlite_export_imports_whole_into_this_engine() {
    use stowage_metadata::{GroupRecord, UserRecord};
    // The source is the embedded default, whatever the engine under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("source.db").display()
    );
    let source = Metadata::connect(&url, &PoolSettings::default())
        .await
        .expect("connect");
    source.migrate().await.expect("migrate");
    for key in ["libs", "docs", "misc"] {
        source.put_repository(&repo(key)).await.expect("repo");
    }
    for i in 0..30u32 {
        let repo_key = ["libs", "docs", "misc"][i as usize % 3];
        let mut a = artifact(repo_key, &format!("d{}/f{i}.bin", i % 4), &i.to_le_bytes());
        a.properties.push(("n".into(), i.to_string()));
        source.commit_artifact(&a).await.expect("commit");
    }
    source
        .trash(
            &RepoKey::parse("libs").expect("key"),
            &ArtifactPath::parse("d0").expect("path"),
            "admin",
        )
        .await
        .expect("trash");
    source
        .put_group(
            &GroupRecord {
                name: "devs".into(),
                description: "developers".into(),
                auto_join: false,
                created_ms: 0,
                members: Vec::new(),
            },
            None,
        )
        .await
        .expect("group");
    source
        .put_user(&UserRecord {
            name: "bob".into(),
            email: "bob@example.com".into(),
            password_hash: Some("$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA".into()),
            admin: false,
            disabled: false,
            created_ms: 0,
            groups: vec!["devs".into()],
        })
        .await
        .expect("user");
    let mut exported = Vec::new();
    let summary = source
        .export(&mut exported, |_, _| {})
        .await
        .expect("export");
    assert_eq!(summary.rows("repositories"), 3);
    assert_eq!(summary.rows("artifacts") + summary.rows("trash"), 30);
    assert!(summary.rows("trash") > 0 && summary.rows("folders") > 0);
    assert_eq!(
        summary.rows("artifact_properties"),
        summary.rows("artifacts") * 2
    );

    let (_target_dir, target) = fresh().await;
    let imported = target
        .import(std::io::Cursor::new(&exported), |_, _| {})
        .await
        .expect("import");
    assert_eq!(imported.tables, summary.tables);
    let mut again = Vec::new();
    target.export(&mut again, |_, _| {}).await.expect("export");
    assert_eq!(
        export_body(&again),
        export_body(&exported),
        "every row of every table is the same on this engine"
    );
    // The store works on: a new artifact gets an id after the imported ones.
    let next = target
        .commit_artifact(&artifact("docs", "new.bin", b"new"))
        .await
        .expect("a deploy after the restore");
    let max_id = source
        .artifact(
            &RepoKey::parse("misc").expect("k"),
            &ArtifactPath::parse("d1/f25.bin").expect("p"),
        )
        .await
        .expect("lookup")
        .map_or(0, |a| a.id);
    assert!(next.id > max_id, "{} after {max_id}", next.id);

    // A second import is refused: the target is no longer empty.
    let refused = target
        .import(std::io::Cursor::new(&exported), |_, _| {})
        .await
        .expect_err("not empty");
    assert!(refused.to_string().contains("not empty"), "{refused}");

    // A cut export changes nothing.
    let (_cut_dir, cut_target) = fresh().await;
    let cut = &exported[..exported.len() / 2];
    let damaged = cut_target
        .import(std::io::Cursor::new(cut), |_, _| {})
        .await
        .expect_err("a cut export");
    assert!(damaged.to_string().contains("damaged"), "{damaged}");
    assert!(
        cut_target.is_empty().await.expect("empty"),
        "nothing of a cut import stays"
    );
}
