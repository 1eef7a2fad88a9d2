//! Access control through the HTTP API of a real `stowage serve`: users, groups, permission
//! targets and scoped tokens decide every call, with 401 for missing or bad credentials and
//! 403 for a known caller without the permission; secrets never come back. On the database
//! `STOWAGE_TEST_DATABASE` names (scripts/test runs it on SQLite, PostgreSQL and MariaDB).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stowage_tests::{Server, bytes, sha256_hex};

/// Waits out the bound within which every node follows a change of users, tokens or
/// permissions (`stowage_service::security::FRESHNESS`, 2 s), with a margin.
const FRESHNESS: Duration = Duration::from_millis(2_500);

/// A client that sends `auth` (`Authorization` header value) with every request, or nothing.
fn client(auth: Option<String>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(auth) = auth {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&auth).expect("header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn basic(user: &str, secret: &str) -> reqwest::Client {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    client(Some(format!("Basic {encoded}")))
}

fn bearer(token: &str) -> reqwest::Client {
    client(Some(format!("Bearer {token}")))
}

async fn send(
    c: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<Vec<u8>>,
) -> StatusCode {
    let mut request = c.request(method, url);
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.expect("request").status()
}

async fn admin_json(s: &Server, method: Method, path: &str, body: Value) -> StatusCode {
    let r = s
        .admin()
        .request(method, s.url(path))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        r.text().await.unwrap_or_default()
    );
    status
}

/// A token created by the administrator of `s` with `body` (the JSON of
/// `POST /access/api/v1/tokens`): the answer.
async fn new_token(s: &Server, body: Value) -> Value {
    let r = s
        .admin()
        .post(s.url("/access/api/v1/tokens"))
        .json(&body)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK, "token for {body}");
    r.json().await.expect("json")
}

/// Users `alice` (group `devs`: read, deploy, annotate in `libs`) and `bob` (read in `libs`),
/// repositories `libs` and `secret` with a file each.
async fn setup(s: &Server) {
    s.create_repo("libs").await;
    s.create_repo("secret").await;
    for (path, data) in [
        ("/libs/app/a.jar", bytes(1, 3000)),
        ("/secret/s.bin", bytes(2, 3000)),
    ] {
        let r = s
            .admin()
            .put(s.url(path))
            .body(data)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    admin_json(
        s,
        Method::PUT,
        "/api/security/groups/devs",
        json!({"description": "developers"}),
    )
    .await;
    for (name, groups) in [("alice", vec!["devs"]), ("bob", vec![])] {
        let status = admin_json(
            s,
            Method::PUT,
            &format!("/api/security/users/{name}"),
            json!({"email": format!("{name}@example.com"), "password": format!("{name}-password-1"), "groups": groups}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    admin_json(
        s,
        Method::PUT,
        "/api/v2/security/permissions/libs-team",
        json!({
            "name": "libs-team",
            "repo": {
                "repositories": ["libs"],
                "include-patterns": ["**"],
                "actions": {
                    "users": {"bob": ["read"]},
                    "groups": {"devs": ["read", "write", "annotate"]}
                }
            }
        }),
    )
    .await;
}

/// One call of the matrix: who, with which client, the method, the path, the body, and the
/// status expected.
type Case<'a> = (
    &'static str,
    &'a reqwest::Client,
    Method,
    &'static str,
    Option<Vec<u8>>,
    StatusCode,
);

#[tokio::test]
async fn users_and_groups_get_what_their_permission_targets_grant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    let (anonymous, alice, bob) = (
        client(None),
        basic("alice", "alice-password-1"),
        basic("bob", "bob-password-1"),
    );
    let (admin, u) = (s.admin(), |p: &str| s.url(p));
    let new = || Some(bytes(3, 2000));
    let other = || Some(bytes(4, 2000));
    let matrix: Vec<Case<'_>> = vec![
        (
            "anonymous",
            &anonymous,
            Method::GET,
            "/libs/app/a.jar",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "anonymous",
            &anonymous,
            Method::PUT,
            "/libs/app/n.jar",
            new(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bob",
            &bob,
            Method::GET,
            "/libs/app/a.jar",
            None,
            StatusCode::OK,
        ),
        (
            "bob",
            &bob,
            Method::GET,
            "/api/storage/libs/app/a.jar",
            None,
            StatusCode::OK,
        ),
        (
            "bob",
            &bob,
            Method::PUT,
            "/libs/app/b.jar",
            new(),
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::DELETE,
            "/libs/app/a.jar",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::GET,
            "/secret/s.bin",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::PUT,
            "/api/storage/libs/app/a.jar?properties=k=v",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::POST,
            "/api/system/storage/gc",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::GET,
            "/api/trash",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            &bob,
            Method::GET,
            "/api/security/users",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::GET,
            "/libs/app/a.jar",
            None,
            StatusCode::OK,
        ),
        (
            "alice",
            &alice,
            Method::PUT,
            "/libs/app/c.jar",
            new(),
            StatusCode::CREATED,
        ),
        (
            "alice",
            &alice,
            Method::PUT,
            "/libs/app/c.jar",
            new(),
            StatusCode::CREATED,
        ),
        // Overwriting with other bytes needs delete, which alice lacks.
        (
            "alice",
            &alice,
            Method::PUT,
            "/libs/app/c.jar",
            other(),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::PUT,
            "/api/storage/libs/app/c.jar?properties=k=v",
            None,
            StatusCode::NO_CONTENT,
        ),
        (
            "alice",
            &alice,
            Method::DELETE,
            "/libs/app/c.jar",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::POST,
            "/api/copy/libs/app/a.jar?to=/libs/copy/a.jar",
            None,
            StatusCode::OK,
        ),
        // A copy onto a file with other bytes is an overwrite: it needs delete there too.
        (
            "alice",
            &alice,
            Method::POST,
            "/api/copy/libs/copy/a.jar?to=/libs/app/c.jar",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::POST,
            "/api/move/libs/app/a.jar?to=/libs/moved/a.jar",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::POST,
            "/api/copy/secret/s.bin?to=/libs/s.bin",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::PUT,
            "/secret/x.bin",
            new(),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            &alice,
            Method::PUT,
            "/api/repositories/mine",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "admin",
            &admin,
            Method::PUT,
            "/secret/x.bin",
            new(),
            StatusCode::CREATED,
        ),
        (
            "admin",
            &admin,
            Method::DELETE,
            "/libs/app/c.jar",
            None,
            StatusCode::NO_CONTENT,
        ),
    ];
    for (who, c, method, path, body, expected) in matrix {
        let got = send(c, method.clone(), u(path), body).await;
        assert_eq!(got, expected, "{who} {method} {path}");
    }

    // Lists and searches show only what the caller may read.
    let repos: Value = bob
        .get(u("/api/repositories"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let keys: Vec<&str> = repos
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, vec!["libs"], "bob sees only libs");
    let secret_sha = sha256_hex(&bytes(2, 3000));
    let found: Value = bob
        .get(u(&format!("/api/search/checksum?sha256={secret_sha}")))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["results"], json!([]), "bob cannot find secret's file");
    // Deploy by checksum of bytes the caller cannot read is as if they were unknown.
    let by_checksum = alice
        .put(u("/libs/stolen.bin"))
        .header("X-Checksum-Deploy", "true")
        .header("X-Checksum-Sha256", &secret_sha)
        .send()
        .await
        .expect("put");
    assert_eq!(by_checksum.status(), StatusCode::NOT_FOUND);
    // A folder lists only readable children.
    let root: Value = bob
        .get(u("/api/storage/libs"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert!(
        root["children"].as_array().is_some_and(|c| !c.is_empty()),
        "{root}"
    );
    s.stop().await;
}

/// Status and body of a GET of libs' file.
async fn fetch(s: &Server, c: reqwest::Client) -> (StatusCode, String) {
    let r = c.get(s.url("/libs/app/a.jar")).send().await.expect("get");
    (r.status(), r.text().await.expect("text"))
}

#[tokio::test]
async fn bad_credentials_say_nothing_and_secrets_never_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    // The names of the admin token and of anonymous callers are not for users.
    for reserved in ["admin", "anonymous"] {
        let r = s
            .admin()
            .put(s.url(&format!("/api/security/users/{reserved}")))
            .json(&json!({"password": "some-password-1"}))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{reserved}");
    }
    let wrong = fetch(&s, basic("bob", "not-the-password")).await;
    let unknown = fetch(&s, basic("nobody", "not-the-password")).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown, "no answer tells whether a user exists");
    assert_eq!(
        fetch(&s, bearer("stwt_0000")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The user as the API shows it: no password, no hash.
    let shown = s
        .admin()
        .get(s.url("/api/security/users/bob"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(shown.contains("bob@example.com"), "{shown}");
    assert!(
        !shown.contains("bob-password-1") && !shown.contains("argon2"),
        "{shown}"
    );

    // A token is shown once; the list never shows it again.
    let created = new_token(&s, json!({"username": "bob", "description": "ci"})).await;
    let secret = created["access_token"]
        .as_str()
        .expect("secret")
        .to_string();
    let listed = s
        .admin()
        .get(s.url("/access/api/v1/tokens"))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert!(
        listed.contains("ci") && !listed.contains(&secret),
        "{listed}"
    );
    assert_eq!(fetch(&s, bearer(&secret)).await.0, StatusCode::OK);
    // As basic auth with the user's name, and as X-JFrog-Art-Api.
    assert_eq!(fetch(&s, basic("bob", &secret)).await.0, StatusCode::OK);
    assert_eq!(
        fetch(&s, basic("alice", &secret)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let api_key = reqwest::Client::new()
        .get(s.url("/libs/app/a.jar"))
        .header("X-JFrog-Art-Api", &secret)
        .send()
        .await
        .expect("get");
    assert_eq!(api_key.status(), StatusCode::OK);

    // Failed logins are throttled: after ten, even the right password waits.
    for _ in 0..10 {
        fetch(&s, basic("alice", "wrong-password")).await;
    }
    let throttled = fetch(&s, basic("alice", "alice-password-1")).await;
    assert_eq!(throttled.0, StatusCode::UNAUTHORIZED);
    assert!(
        throttled.1.contains("too many failed logins"),
        "{}",
        throttled.1
    );

    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    for leaked in ["bob-password-1", "alice-password-1", secret.as_str()] {
        assert!(!log.contains(leaked), "the log holds a secret");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_token_scoped_to_a_group_reads_that_and_nothing_else_until_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    // ci is in devs (read, deploy in libs) and readers (read in secret); its token only
    // carries readers.
    admin_json(&s, Method::PUT, "/api/security/groups/readers", json!({})).await;
    admin_json(
        &s,
        Method::PUT,
        "/api/security/users/ci",
        json!({"groups": ["devs", "readers"]}),
    )
    .await;
    admin_json(
        &s,
        Method::PUT,
        "/api/v2/security/permissions/secret-read",
        json!({"repo": {"repositories": ["secret"], "actions": {"groups": {"readers": ["read"]}}}}),
    )
    .await;
    let created: Value = s
        .admin()
        .post(s.url("/access/api/v1/tokens"))
        .form(&[
            ("username", "ci"),
            ("scope", "applied-permissions/groups:readers"),
            ("expires_in", "600"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let (secret, id) = (
        created["access_token"]
            .as_str()
            .expect("secret")
            .to_string(),
        created["token_id"].as_str().expect("id").to_string(),
    );
    assert_eq!(created["expires_in"], 600);
    let ci = bearer(&secret);
    assert_eq!(
        send(&ci, Method::GET, s.url("/secret/s.bin"), None).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&ci, Method::GET, s.url("/libs/app/a.jar"), None).await,
        StatusCode::FORBIDDEN,
        "devs' grants are not in the token's scope"
    );
    assert_eq!(
        send(
            &ci,
            Method::PUT,
            s.url("/secret/n.bin"),
            Some(bytes(5, 100))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let repos: Value = ci
        .get(s.url("/api/repositories"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(repos.as_array().map(Vec::len), Some(1), "{repos}");
    let libs_sha = sha256_hex(&bytes(1, 3000));
    let found: Value = ci
        .get(s.url(&format!("/api/search/checksum?sha256={libs_sha}")))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["results"], json!([]));
    // A user cannot make itself a token with more than it has.
    let escalate = basic("bob", "bob-password-1")
        .post(s.url("/access/api/v1/tokens"))
        .json(&json!({"scope": "applied-permissions/admin"}))
        .send()
        .await
        .expect("token");
    assert_eq!(escalate.status(), StatusCode::FORBIDDEN);

    // Revoked: refused within the freshness bound.
    let revoke = s
        .admin()
        .delete(s.url(&format!("/access/api/v1/tokens/{id}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), StatusCode::OK);
    tokio::time::sleep(FRESHNESS).await;
    assert_eq!(
        send(&ci, Method::GET, s.url("/secret/s.bin"), None).await,
        StatusCode::UNAUTHORIZED
    );
    // Expired: refused.
    let short = new_token(
        &s,
        json!({"username": "ci", "scope": "applied-permissions/groups:readers", "expires_in": 1}),
    )
    .await;
    let short = bearer(short["access_token"].as_str().expect("secret"));
    assert_eq!(
        send(&short, Method::GET, s.url("/secret/s.bin"), None).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        send(&short, Method::GET, s.url("/secret/s.bin"), None).await,
        StatusCode::UNAUTHORIZED
    );
    // A disabled user's password stops working within the bound too.
    admin_json(
        &s,
        Method::POST,
        "/api/security/users/bob",
        json!({"disabled": true}),
    )
    .await;
    tokio::time::sleep(FRESHNESS).await;
    assert_eq!(
        send(
            &basic("bob", "bob-password-1"),
            Method::GET,
            s.url("/libs/app/a.jar"),
            None
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    s.stop().await;
}

/// Two nodes on one PostgreSQL database: a token revoked on one is refused by the other
/// within the freshness bound (each node reads tokens from the primary database and keeps
/// what it read for at most 2 s).
#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_another_within_the_bound() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(url) = stowage_tests::postgres_database(root.path()).await else {
        return;
    };
    // One database and one filestore.
    let config = format!(
        "[filestore.file-system]\nfileStoreDir = \"{}\"\n",
        root.path().join("filestore").display()
    );
    let options = |token: Option<String>| stowage_tests::Options {
        config: Some(config.clone()),
        database_url: Some(url.clone()),
        token,
        ..stowage_tests::Options::default()
    };
    let a = Server::start_with(&root.path().join("a"), options(None)).await;
    let b = Server::start_with(&root.path().join("b"), options(Some(a.token.clone()))).await;
    setup(&a).await;
    let created = new_token(&a, json!({"username": "bob"})).await;
    let token = bearer(created["access_token"].as_str().expect("secret"));
    let id = created["token_id"].as_str().expect("id");
    assert_eq!(
        send(&token, Method::GET, b.url("/libs/app/a.jar"), None).await,
        StatusCode::OK
    );
    let revoked = a
        .admin()
        .delete(a.url(&format!("/access/api/v1/tokens/{id}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        send(&token, Method::GET, a.url("/libs/app/a.jar"), None).await,
        StatusCode::UNAUTHORIZED,
        "at once on the node that revoked it"
    );
    let revoked_at = std::time::Instant::now();
    loop {
        let status = send(&token, Method::GET, b.url("/libs/app/a.jar"), None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < FRESHNESS,
            "the other node still accepts the revoked token after {:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the other node refused the revoked token after {:?}",
        revoked_at.elapsed()
    );
    a.stop().await;
    b.stop().await;
}

/// The audit trail records deploys, overwrites, deletes, moves, security changes, token
/// creation and revocation and failed logins, each with who and from where, never a secret;
/// only administrators read it; `stowage audit verify` passes on the trail as written and
/// names the entry when one row is edited in the database.
#[tokio::test]
async fn the_audit_trail_is_complete_secret_free_and_tamper_evident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    let alice = basic("alice", "alice-password-1");
    assert_eq!(
        send(
            &alice,
            Method::PUT,
            s.url("/libs/app/new.jar"),
            Some(bytes(8, 100))
        )
        .await,
        StatusCode::CREATED
    );
    let admin = s.admin();
    assert_eq!(
        send(
            &admin,
            Method::PUT,
            s.url("/libs/app/new.jar"),
            Some(bytes(9, 100))
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        send(
            &admin,
            Method::POST,
            s.url("/api/move/libs/app/new.jar?to=/libs/moved.jar"),
            None
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        send(&admin, Method::DELETE, s.url("/libs/moved.jar"), None).await,
        StatusCode::NO_CONTENT
    );
    let created = new_token(&s, json!({"username": "bob"})).await;
    let secret = created["access_token"]
        .as_str()
        .expect("secret")
        .to_string();
    let id = created["token_id"].as_str().expect("id").to_string();
    assert_eq!(
        send(
            &admin,
            Method::DELETE,
            s.url(&format!("/access/api/v1/tokens/{id}")),
            None
        )
        .await,
        StatusCode::OK
    );
    fetch(&s, basic("bob", "a-wrong-password")).await;
    // Failed logins are appended in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        send(
            &basic("bob", "bob-password-1"),
            Method::GET,
            s.url("/api/audit"),
            None
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let text = admin
        .get(s.url("/api/audit?limit=1000"))
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("text");
    for leaked in [
        "alice-password-1",
        "bob-password-1",
        "a-wrong-password",
        secret.as_str(),
        "argon2",
    ] {
        assert!(!text.contains(leaked), "the audit trail holds a secret");
    }
    let trail: Value = serde_json::from_str(&text).expect("json");
    let entries = trail["entries"].as_array().expect("entries");
    let has = |action: &str, actor: &str, target: &str| {
        entries.iter().any(|e| {
            e["action"] == action
                && e["actor"] == actor
                && e["target"].as_str().is_some_and(|t| t.contains(target))
        })
    };
    for (action, actor, target) in [
        ("repository.put", "admin", "libs"),
        ("group.put", "admin", "devs"),
        ("user.put", "admin", "alice"),
        ("permission.put", "admin", "libs-team"),
        ("deploy", "alice", "libs/app/new.jar"),
        ("overwrite", "admin", "libs/app/new.jar"),
        ("move", "admin", "libs/app/new.jar -> libs/moved.jar"),
        ("delete", "admin", "libs/moved.jar"),
        ("token.create", "admin", id.as_str()),
        ("token.revoke", "admin", id.as_str()),
        ("login.failed", "anonymous", "bob"),
    ] {
        assert!(
            has(action, actor, target),
            "no {action} by {actor} of {target}: {trail}"
        );
    }
    assert!(
        entries.iter().all(|e| e["source"] == "127.0.0.1"),
        "every entry says where the call came from"
    );

    let (out, _) = s.cli(&["audit", "verify"], "").await;
    assert!(out.contains(&format!("{} entries", entries.len())), "{out}");
    // One edited row breaks the chain at that row.
    sqlx::any::install_default_drivers();
    use sqlx::Connection as _;
    let mut db = sqlx::AnyConnection::connect(&s.database_url)
        .await
        .expect("connect");
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
        .execute(&mut db)
        .await
        .expect("tamper");
    db.close().await.expect("close");
    let (status, _, stderr) = s.run_cli(&["audit", "verify"], "").await;
    assert!(!status.success(), "an edited trail does not verify");
    assert!(
        stderr.contains("audit entry 5 is not as it was written"),
        "{stderr}"
    );
    s.stop().await;
}

/// A refreshable token comes with a refresh token that replaces it once by a new pair (same
/// user, scope and lifetime); the old token stops working, and the refresh token cannot be
/// used again.
#[tokio::test]
async fn a_refresh_token_replaces_its_token_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    let created = new_token(
        &s,
        json!({"username": "bob", "refreshable": true, "expires_in": 600}),
    )
    .await;
    let (old, refresh) = (
        created["access_token"]
            .as_str()
            .expect("secret")
            .to_string(),
        created["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_string(),
    );
    let anonymous = client(None);
    let renew = |refresh: String| {
        anonymous
            .post(s.url("/access/api/v1/tokens"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
    };
    let renewed = renew(refresh.clone()).await.expect("refresh");
    assert_eq!(renewed.status(), StatusCode::OK);
    let renewed: Value = renewed.json().await.expect("json");
    let new = renewed["access_token"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_ne!(new, old);
    assert_eq!(renewed["expires_in"], 600, "the same lifetime");
    assert!(
        renewed["refresh_token"]
            .as_str()
            .is_some_and(|r| r != refresh)
    );
    assert_eq!(fetch(&s, bearer(&new)).await.0, StatusCode::OK);
    let again = renew(refresh).await.expect("refresh");
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a refresh token works once"
    );
    tokio::time::sleep(FRESHNESS).await;
    assert_eq!(
        fetch(&s, bearer(&old)).await.0,
        StatusCode::UNAUTHORIZED,
        "the old token is revoked"
    );
    s.stop().await;
}

/// `manage` in a repository lets a user create, change and delete the permission targets of
/// that repository, and of no other (nor one on `ANY`, nor widen one beyond its repositories).
#[tokio::test]
async fn a_repository_manager_manages_its_permission_targets_and_no_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    admin_json(
        &s,
        Method::PUT,
        "/api/v2/security/permissions/libs-managers",
        json!({"repo": {"repositories": ["libs"], "actions": {"users": {"alice": ["manage"]}}}}),
    )
    .await;
    admin_json(
        &s,
        Method::PUT,
        "/api/v2/security/permissions/secret-only",
        json!({"repo": {"repositories": ["secret"], "actions": {"users": {"bob": ["read"]}}}}),
    )
    .await;
    let alice = basic("alice", "alice-password-1");
    let put = |name: &str, repositories: Value| {
        alice
            .put(s.url(&format!("/api/v2/security/permissions/{name}")))
            .json(&json!({"repo": {"repositories": repositories,
                "actions": {"users": {"bob": ["read", "write"]}}}}))
            .send()
    };
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(put("libs-writers", json!(["libs"])).await.expect("put")),
        StatusCode::CREATED
    );
    for (name, repos) in [
        ("secret-writers", json!(["secret"])),
        ("everything", json!(["ANY"])),
        ("libs-writers", json!(["libs", "secret"])),
        ("secret-only", json!(["libs"])),
    ] {
        assert_eq!(
            status(put(name, repos.clone()).await.expect("put")),
            StatusCode::FORBIDDEN,
            "{name} on {repos}"
        );
    }
    // What alice granted works: bob deploys to libs now.
    tokio::time::sleep(FRESHNESS).await;
    assert_eq!(
        send(
            &basic("bob", "bob-password-1"),
            Method::PUT,
            s.url("/libs/bob.bin"),
            Some(bytes(6, 10))
        )
        .await,
        StatusCode::CREATED
    );
    let listed: Value = alice
        .get(s.url("/api/v2/security/permissions"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["libs-managers", "libs-team", "libs-writers"]);
    let delete = |name: &str| {
        alice
            .delete(s.url(&format!("/api/v2/security/permissions/{name}")))
            .send()
    };
    assert_eq!(
        status(delete("secret-only").await.expect("delete")),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(delete("libs-writers").await.expect("delete")),
        StatusCode::OK
    );
    s.stop().await;
}

/// Anonymous access per repository: a read permission granted to `anonymous` opens that
/// repository to callers without credentials, and nothing else.
#[tokio::test]
async fn a_permission_granted_to_anonymous_opens_one_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    setup(&s).await;
    let anonymous = client(None);
    let get = |path: &str| send(&anonymous, Method::GET, s.url(path), None);
    assert_eq!(get("/libs/app/a.jar").await, StatusCode::UNAUTHORIZED);
    admin_json(
        &s,
        Method::PUT,
        "/api/v2/security/permissions/public-libs",
        json!({"repo": {"repositories": ["libs"], "actions": {"users": {"anonymous": ["read"]}}}}),
    )
    .await;
    assert_eq!(get("/libs/app/a.jar").await, StatusCode::OK);
    assert_eq!(get("/secret/s.bin").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(
            &anonymous,
            Method::PUT,
            s.url("/libs/anon.bin"),
            Some(bytes(1, 10))
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    s.stop().await;
}
