//! Artifactory REST compatibility, as the Python and JavaScript clients teams use against
//! Artifactory need it (issue 22), over real sockets against the real `stowage` binary: the
//! words of a 404, error shapes, folders as entries of their own, the storage API's modes,
//! `PATCH /api/metadata`, the `/artifactory` context path, original checksums, storage info
//! fields, checksum files and download statistics. Runs on every metadata engine.

use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{Server, bytes, sha256_hex};

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

/// The status and the message of an error answer, which must be Artifactory's JSON shape.
async fn error_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body = r.text().await.expect("body");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert_eq!(v["errors"][0]["status"], status.as_u16(), "{v}");
    let message = v["errors"][0]["message"].as_str().expect("message");
    (status, message.to_string())
}

async fn put(c: &reqwest::Client, s: &Server, path: &str, body: Vec<u8>) -> reqwest::Response {
    c.put(s.url(path)).body(body).send().await.expect("put")
}

#[tokio::test]
async fn not_found_answers_in_artifactorys_words_and_errors_in_its_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    assert_eq!(
        put(&c, &s, "/r/f.txt", b"f".to_vec()).await.status(),
        StatusCode::CREATED
    );
    // 1. The words clients look for.
    let (status, message) = error_of(
        c.get(s.url("/api/storage/r/missing"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.starts_with("Unable to find item"), "{message}");
    let (status, message) = error_of(c.get(s.url("/r/missing")).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.starts_with("File not found"), "{message}");
    let (status, message) = error_of(
        c.get(s.url("/api/storage/r/f.txt?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        message.starts_with("No properties could be found."),
        "{message}"
    );
    let (_, message) = error_of(
        c.get(s.url("/api/storage/r/missing?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert!(message.starts_with("Unable to find item"), "{message}");
    // 2. Shapes: a 405 and a 413 are JSON; an unknown call is a 404; a long path is not
    // echoed whole.
    let (status, message) = error_of(
        c.delete(s.url("/api/storageinfo"))
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(message.contains("DELETE"), "{message}");
    let huge = vec![b'{'; 3 * 1024 * 1024];
    // A client of its own: the server closes the connection of a refused body.
    let (status, _) = error_of(
        s.admin()
            .put(s.url("/api/repositories/big"))
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .expect("put"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, message) =
        error_of(c.get(s.url("/api/no/such/call")).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.contains("no such API endpoint"), "{message}");
    let long = "x".repeat(10_000);
    let (status, message) = error_of(
        c.get(s.url(&format!("/api/storage/r/{long}")))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.len() < 1_000, "{} bytes", message.len());
    // 8. A repository cannot take the context path's name.
    let r = c
        .put(s.url("/api/repositories/artifactory"))
        .json(&serde_json::json!({ "rclass": "local" }))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn folders_are_created_listed_annotated_and_deleted_as_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    // 3. A trailing slash creates a folder, and a deploy below it works.
    let r = c.put(s.url("/r/newfolder/")).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let made = json(r).await;
    assert_eq!(made["createdBy"], "admin", "{made}");
    assert!(s.stored_binaries().is_empty(), "a folder stores no bytes");
    let info = json(
        c.get(s.url("/api/storage/r/newfolder"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(info["children"], serde_json::json!([]), "{info}");
    for key in ["created", "createdBy", "lastModified", "modifiedBy"] {
        assert!(info[key].is_string(), "{key} in {info}");
    }
    assert_eq!(
        put(&c, &s, "/r/newfolder/a.txt", b"a".to_vec())
            .await
            .status(),
        StatusCode::CREATED
    );
    // The folder stays when its last file goes; deleting it takes it out.
    let r = c
        .delete(s.url("/r/newfolder/a.txt"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(s.url("/api/storage/r/newfolder"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .delete(s.url("/r/newfolder"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(s.url("/api/storage/r/newfolder"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A folder where a file is: refused.
    assert_eq!(
        put(&c, &s, "/r/file", b"f".to_vec()).await.status(),
        StatusCode::CREATED
    );
    let r = c.put(s.url("/r/file/")).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // 4. Properties of the folder itself: recursive by default, or not.
    assert_eq!(
        put(&c, &s, "/r/org/lib/x.jar", b"x".to_vec())
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = c
        .get(s.url("/api/storage/r/org?properties"))
        .send()
        .await
        .expect("get");
    let (status, message) = error_of(r).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.starts_with("No properties could be found."));
    let r = c
        .put(s.url("/api/storage/r/org?properties=team=a&recursive=0"))
        .send()
        .await
        .expect("set");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let props = json(
        c.get(s.url("/api/storage/r/org?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(
        props["properties"]["team"],
        serde_json::json!(["a"]),
        "{props}"
    );
    assert!(
        props["uri"]
            .as_str()
            .expect("uri")
            .ends_with("/api/storage/r/org")
    );
    let child = c
        .get(s.url("/api/storage/r/org/lib/x.jar?properties"))
        .send()
        .await
        .expect("get");
    assert_eq!(child.status(), StatusCode::NOT_FOUND, "not recursive");
    let r = c
        .put(s.url("/api/storage/r/org?properties=qa=ok"))
        .send()
        .await
        .expect("set");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for path in ["org", "org/lib", "org/lib/x.jar"] {
        let props = json(
            c.get(s.url(&format!("/api/storage/r/{path}?properties=qa")))
                .send()
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(
            props["properties"]["qa"],
            serde_json::json!(["ok"]),
            "{path}"
        );
    }
    // 6. PATCH /api/metadata sets and removes (null) in one call.
    let r = c
        .patch(s.url("/api/metadata/r/org/lib/x.jar"))
        .json(&serde_json::json!({ "props": { "os": "linux", "qa": null } }))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let props = json(
        c.get(s.url("/api/storage/r/org/lib/x.jar?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(props["properties"], serde_json::json!({ "os": ["linux"] }));
    let r = c
        .patch(s.url("/api/metadata/r/org/lib/x.jar"))
        .body("not json")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // 13. Storage info counts folders, in Artifactory's fields and Stowage's.
    let info = s.storage_info().await;
    assert_eq!(info["binariesSummary"]["foldersCount"], 2, "{info}");
    let fs = &info["fileStoreSummary"];
    for key in [
        "totalSpace",
        "usedSpace",
        "freeSpace",
        "totalSpaceInBytes",
        "freeSpaceInBytes",
    ] {
        assert!(!fs[key].is_null(), "{key} in {fs}");
    }
    let repo = info["repositoriesSummaryList"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["repoKey"] == "r")
        .expect("r")
        .clone();
    assert_eq!(repo["foldersCount"], 2, "{repo}");
    assert_eq!(repo["filesCount"], 2, "{repo}");
}

#[tokio::test]
async fn the_storage_api_lists_counts_and_finds_the_last_modified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    for path in [
        "/r/d/one.txt",
        "/r/d/sub/two.txt",
        "/r/d/sub/deeper/three.txt",
    ] {
        assert_eq!(
            put(&c, &s, path, path.as_bytes().to_vec()).await.status(),
            StatusCode::CREATED
        );
    }
    let files = |v: &Value| -> Vec<(String, bool)> {
        v["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                (
                    f["uri"].as_str().expect("uri").to_string(),
                    f["folder"] == true,
                )
            })
            .collect()
    };
    // 5. ?list: direct files by default; deep with folders; depth.
    let list = json(
        c.get(s.url("/api/storage/r/d?list"))
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(files(&list), [("/one.txt".to_string(), false)], "{list}");
    assert!(list["created"].is_string() && list["uri"].is_string());
    let one = &list["files"][0];
    assert_eq!(one["size"], 12);
    assert_eq!(one["sha2"], sha256_hex(b"/r/d/one.txt"));
    assert_eq!(one["sha1"].as_str().map(str::len), Some(40));
    let deep = json(
        c.get(s.url("/api/storage/r/d?list&deep=1&listFolders=1"))
            .send()
            .await
            .expect("list"),
    )
    .await;
    let expected: Vec<(String, bool)> = [
        ("/one.txt", false),
        ("/sub", true),
        ("/sub/deeper", true),
        ("/sub/deeper/three.txt", false),
        ("/sub/two.txt", false),
    ]
    .iter()
    .map(|(u, f)| (u.to_string(), *f))
    .collect();
    assert_eq!(files(&deep), expected, "{deep}");
    assert_eq!(deep["files"][1]["size"], -1);
    let shallow = json(
        c.get(s.url("/api/storage/r/d?list&deep=1&depth=2"))
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(files(&shallow).len(), 2, "{shallow}");
    let r = c
        .get(s.url("/api/storage/r/d/one.txt?list"))
        .send()
        .await
        .expect("list");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a file is no folder to list"
    );
    // A mode that is not served is a 400 naming the ones that are.
    for query in ["permissions", "list&mdTimestamps=1", "list&stats"] {
        let (status, message) = error_of(
            c.get(s.url(&format!("/api/storage/r/d?{query}")))
                .send()
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(message.contains("?list"), "{message}");
    }
    // ?lastModified: the newest file below.
    let newest = json(
        c.get(s.url("/api/storage/r/d?lastModified"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert!(
        newest["uri"]
            .as_str()
            .expect("uri")
            .ends_with("/api/storage/r/d/sub/deeper/three.txt"),
        "{newest}"
    );
    // ?stats: GETs count (a HEAD and a later range do not), written in batches.
    for _ in 0..3 {
        let r = c.get(s.url("/r/d/one.txt")).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
    }
    c.head(s.url("/r/d/one.txt")).send().await.expect("head");
    c.get(s.url("/r/d/one.txt"))
        .header("range", "bytes=2-")
        .send()
        .await
        .expect("range");
    let stats = json(
        c.get(s.url("/api/storage/r/d/one.txt?stats"))
            .send()
            .await
            .expect("stats"),
    )
    .await;
    assert_eq!(stats["downloadCount"], 3, "{stats}");
    assert_eq!(stats["lastDownloadedBy"], "admin");
    assert!(stats["lastDownloaded"].as_i64().expect("ms") > 0);
    assert_eq!(stats["remoteDownloadCount"], 0);
    // Counted downloads not yet written survive a clean shutdown.
    c.get(s.url("/r/d/one.txt")).send().await.expect("get");
    assert!(s.stop().await.success());
    let s = Server::start(dir.path()).await;
    let stats = json(
        s.admin()
            .get(s.url("/api/storage/r/d/one.txt?stats"))
            .send()
            .await
            .expect("stats"),
    )
    .await;
    assert_eq!(stats["downloadCount"], 4, "{stats}");
}

#[tokio::test]
async fn the_context_path_original_checksums_and_checksum_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    // 8. Everything answers under /artifactory as at the root.
    let r = c
        .get(s.url("/artifactory/api/system/ping"))
        .send()
        .await
        .expect("ping");
    assert_eq!(r.status(), StatusCode::OK);
    let data = bytes(7, 2_000);
    let r = put(&c, &s, "/artifactory/r/x.jar", data.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // 11. Nothing declared: no original checksums, in the answer and in file info alike.
    let deployed = json(r).await;
    assert_eq!(deployed["originalChecksums"], serde_json::json!({}));
    let info = json(
        c.get(s.url("/artifactory/api/storage/r/x.jar"))
            .send()
            .await
            .expect("info"),
    )
    .await;
    assert_eq!(info["originalChecksums"], serde_json::json!({}), "{info}");
    assert_eq!(
        c.get(s.url("/artifactory/r/x.jar"))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body"),
        data
    );
    // Declared: that one.
    let sha256 = sha256_hex(&data);
    let r = c
        .put(s.url("/r/y.jar"))
        .header("x-checksum-sha256", &sha256)
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(
        json(r).await["originalChecksums"],
        serde_json::json!({ "sha256": sha256 })
    );
    let info = json(
        c.get(s.url("/api/storage/r/y.jar"))
            .send()
            .await
            .expect("info"),
    )
    .await;
    assert_eq!(
        info["originalChecksums"],
        serde_json::json!({ "sha256": sha256 })
    );

    // Checksum files: answered from the metadata, for GET and HEAD.
    let sha1 = info["checksums"]["sha1"]
        .as_str()
        .expect("sha1")
        .to_string();
    let md5 = info["checksums"]["md5"].as_str().expect("md5").to_string();
    for (suffix, expected) in [(".sha1", &sha1), (".sha256", &sha256), (".md5", &md5)] {
        let r = c
            .get(s.url(&format!("/r/y.jar{suffix}")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{suffix}");
        assert_eq!(&r.text().await.expect("text"), expected);
    }
    let r = c.head(s.url("/r/y.jar.sha1")).send().await.expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(s.url("/r/none.jar.sha1")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Deploying a matching one stores nothing new and records it as the original.
    let stored = s.stored_binaries().len();
    let r = put(
        &c,
        &s,
        "/r/y.jar.sha1",
        format!("{sha1}  y.jar\n").into_bytes(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.stored_binaries().len(), stored, "nothing new stored");
    let info = json(
        c.get(s.url("/api/storage/r/y.jar"))
            .send()
            .await
            .expect("info"),
    )
    .await;
    assert_eq!(info["originalChecksums"]["sha1"], sha1.as_str(), "{info}");
    let r = c
        .get(s.url("/api/storage/r/y.jar.sha1"))
        .send()
        .await
        .expect("info");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no file of its own");
    // A mismatch is refused, and stores nothing.
    let (status, message) = error_of(
        put(
            &c,
            &s,
            "/r/y.jar.md5",
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message.contains("checksum mismatch"), "{message}");
    assert_eq!(s.stored_binaries().len(), stored);
    // A repository that trusts only its own checksums ignores what clients send.
    let r = c
        .put(s.url("/api/repositories/trusting"))
        .json(&serde_json::json!({ "rclass": "local", "checksumPolicyType": "server-generated-checksums" }))
        .send()
        .await
        .expect("create");
    assert!(r.status().is_success());
    assert_eq!(
        put(&c, &s, "/trusting/z.jar", data.clone()).await.status(),
        StatusCode::CREATED
    );
    let r = put(
        &c,
        &s,
        "/trusting/z.jar.md5",
        b"0123456789abcdef0123456789abcdef".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url("/trusting/z.jar.md5"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("text"), md5);
    // A checksum file with no file beside it is a file of its own.
    let r = put(&c, &s, "/r/alone.txt.sha1", b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.body("/r/alone.txt.sha1").await.as_ref(), b"abc");
}

/// Deploys below a folder racing with deletes of that folder: whatever wins, every file
/// left has its folders (a folder delete and a deploy below it order on the folder rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_racing_folder_deletes_leave_every_file_in_its_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    let deploys = (0..4).map(|w| {
        let (c, s) = (c.clone(), &s);
        async move {
            for i in 0..40 {
                let r = put(&c, s, &format!("/r/a/b{}/f{w}-{i}", i % 3), vec![b'x'; 10]).await;
                assert!(
                    r.status() == StatusCode::CREATED
                        || r.status() == StatusCode::SERVICE_UNAVAILABLE,
                    "{}",
                    r.status()
                );
            }
        }
    });
    let deletes = async {
        for _ in 0..40 {
            let r = c.delete(s.url("/r/a")).send().await.expect("delete");
            assert!(
                [
                    StatusCode::NO_CONTENT,
                    StatusCode::NOT_FOUND,
                    StatusCode::SERVICE_UNAVAILABLE
                ]
                .contains(&r.status()),
                "{}",
                r.status()
            );
        }
    };
    futures::join!(futures::future::join_all(deploys), deletes);
    let list = json(
        c.get(s.url("/api/storage/r?list&deep=1&listFolders=1"))
            .send()
            .await
            .expect("list"),
    )
    .await;
    let entries = list["files"].as_array().expect("files");
    let folders: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|e| e["folder"] == true)
        .map(|e| e["uri"].as_str().expect("uri"))
        .collect();
    for file in entries.iter().filter(|e| e["folder"] == false) {
        let uri = file["uri"].as_str().expect("uri");
        let mut parent = uri.rsplit_once('/').map_or("", |(p, _)| p);
        while !parent.is_empty() {
            assert!(
                folders.contains(parent),
                "{uri} has no folder {parent}: {list}"
            );
            parent = parent.rsplit_once('/').map_or("", |(p, _)| p);
        }
    }
}
