//! The `stowage` command line: `migrate`, `gc`, and start-up housekeeping of `serve`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use stowage_tests::{Server, bytes, stowage_bin};

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..2 {
        let out = tokio::process::Command::new(stowage_bin())
            .arg("migrate")
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .await
            .expect("run migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    assert!(dir.path().join("stowage.db").exists());
}

#[tokio::test]
async fn a_bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr =
        stowage_tests::serve_refused(dir.path(), "[filestore]\ntemplate = \"floppy-disk\"\n").await;
    assert!(
        stderr.contains("unknown filestore template \"floppy-disk\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_removes_stale_staged_uploads_and_offline_gc_frees_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let r = c
        .put(s.url("/libs/a.bin"))
        .body(bytes(9, 4096))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        c.delete(s.url("/libs/a.bin"))
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::NO_CONTENT
    );
    c.post(s.url("/api/trash/empty"))
        .send()
        .await
        .expect("empty");
    let (data_dir, database_url) = (s.data_dir.clone(), s.database_url.clone());
    assert!(s.stop().await.success());

    // What a crash leaves in _pre: an old staged file (removed) and a young one (kept, it may
    // belong to an upload in flight on another process).
    let pre = data_dir.join("filestore").join("_pre");
    let stale = pre.join("stale.tmp");
    let young = pre.join("young.tmp");
    std::fs::write(&stale, b"partial").expect("stale");
    std::fs::write(&young, b"partial").expect("young");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(7200)))
        .expect("age the stale file");

    // Within the grace period (default one hour) freshly written garbage is kept...
    let gc = |config: Option<&str>| {
        let mut cmd = tokio::process::Command::new(stowage_bin());
        cmd.arg("gc")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&database_url);
        if let Some(text) = config {
            let path = dir.path().join("gc.toml");
            std::fs::write(&path, text).expect("config");
            cmd.arg("--config").arg(path);
        }
        cmd
    };
    let out = gc(None).output().await.expect("run gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("gc report");
    assert_eq!(report["binariesRemoved"], 0, "recent bytes are kept");
    // ...and without one it goes.
    let out = gc(Some("[gc]\norphan_grace_secs = 0\n"))
        .output()
        .await
        .expect("run gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("gc report");
    assert_eq!(report["binariesRemoved"], 1);
    // Without a terminal, progress is plain lines on stderr, a first and a last.
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("gc: started"), "{progress}");
    assert!(
        progress.contains("gc: done: 1 binaries removed"),
        "{progress}"
    );
    assert!(
        !progress.contains('\u{1b}'),
        "no terminal codes: {progress:?}"
    );
    // On a pseudo-terminal (script(1)), a progress bar: terminal codes, the same last words.
    let command = format!(
        "{} gc --data-dir {} --database-url {}",
        stowage_bin().display(),
        data_dir.display(),
        database_url
    );
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("run script(1): util-linux's, on every Debian");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains('\u{1b}'),
        "a bar draws with terminal codes: {shown:?}"
    );
    assert!(shown.contains("gc: done: 0 binaries removed"), "{shown:?}");
    assert!(
        !shown.contains("gc: started"),
        "no plain lines on a terminal: {shown:?}"
    );

    let s = Server::start(dir.path()).await;
    assert!(
        !stale.exists(),
        "a stale staged upload must be removed at start-up"
    );
    assert!(young.exists(), "a young staged upload must be left alone");
    assert!(s.stored_binaries().is_empty());
    // The API reports how far this node's collection got.
    let c = s.admin();
    let r = c
        .post(s.url("/api/system/storage/gc"))
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), StatusCode::OK);
    let tasks: serde_json::Value = c
        .get(s.url("/api/system/tasks"))
        .send()
        .await
        .expect("tasks")
        .json()
        .await
        .expect("json");
    assert_eq!(tasks["gc"]["running"], false, "{tasks}");
    assert_eq!(tasks["gc"]["last"]["binariesRemoved"], 0, "{tasks}");
    assert!(tasks["gc"]["startedAt"].is_string(), "{tasks}");
    assert!(tasks["balancing"].is_null(), "not sharded: {tasks}");
}

#[tokio::test]
async fn users_and_tokens_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let r = s
        .admin()
        .put(s.url("/libs/a.bin"))
        .body(bytes(7, 100))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    s.cli(
        &["user", "add", "ci", "--password-stdin"],
        "ci-password-123\n",
    )
    .await;
    let (list, _) = s.cli(&["user", "list"], "").await;
    assert!(list.contains("ci\tuser"), "{list}");
    let (token, said) = s
        .cli(
            &["token", "create", "--user", "ci", "--expires-in", "600"],
            "",
        )
        .await;
    let token = token.trim().to_string();
    let id = said
        .split_whitespace()
        .nth(1)
        .expect("the token's id")
        .to_string();
    let get = |c: reqwest::RequestBuilder| async move { c.send().await.expect("get").status() };
    let url = s.url("/libs/a.bin");
    let client = reqwest::Client::new();
    // Known, but granted nothing: 403; unknown credentials: 401.
    assert_eq!(
        get(client.get(&url).basic_auth("ci", Some("ci-password-123"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(client.get(&url).bearer_auth(&token)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(client.get(&url).basic_auth("ci", Some("wrong-password"))).await,
        StatusCode::UNAUTHORIZED
    );
    let (tokens, _) = s.cli(&["token", "list"], "").await;
    assert!(tokens.contains(&id) && !tokens.contains(&token), "{tokens}");
    s.cli(&["token", "revoke", &id], "").await;
    s.cli(&["user", "disable", "ci"], "").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        get(client.get(&url).bearer_auth(&token)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(client.get(&url).basic_auth("ci", Some("ci-password-123"))).await,
        StatusCode::UNAUTHORIZED
    );
    s.stop().await;
}
