//! The HTTP contract of the embedded default (SQLite + filestore), over real sockets against
//! the real `stowage` binary: dedup, checksums, truncated bodies, traversal, concurrency,
//! authentication, ranges and restart.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{Options, Server, bytes, raw_request, sha256_hex};

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

#[tokio::test]
async fn same_bytes_in_two_repositories_are_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No grace period: garbage collection may remove bytes written a moment ago.
    let options = Options {
        config: Some("[gc]\norphan_grace_secs = 0\n".into()),
        ..Options::default()
    };
    let s = Server::start_with(dir.path(), options).await;
    let c = s.admin();
    s.create_repo("r1").await;
    s.create_repo("r2").await;
    let data = bytes(1, 300_000);
    for url in ["/r1/a/x.bin", "/r2/b/c/y.bin"] {
        let r = c
            .put(s.url(url))
            .body(data.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body = json(r).await;
        assert_eq!(body["checksums"]["sha256"], sha256_hex(&data));
        assert_eq!(body["size"], "300000");
    }
    assert_eq!(
        s.stored_binaries().len(),
        1,
        "one stored file for two paths"
    );
    let info = s.storage_info().await;
    assert_eq!(info["binariesSummary"]["binariesCountExact"], 1);
    assert_eq!(info["binariesSummary"]["artifactsCountExact"], 2);
    assert_eq!(info["binariesSummary"]["dedupRatio"], 2.0);

    // Deleting one path, emptying the trash and collecting garbage keeps the other readable.
    let r = c.delete(s.url("/r1/a/x.bin")).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(s.url("/r1/a/x.bin"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    c.post(s.url("/api/trash/empty"))
        .send()
        .await
        .expect("empty");
    let gc = json(
        c.post(s.url("/api/system/storage/gc"))
            .send()
            .await
            .expect("gc"),
    )
    .await;
    assert_eq!(gc["binariesRemoved"], 0);
    let r = c.get(s.url("/r2/b/c/y.bin")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body"), data);

    // Once nothing refers to the bytes, garbage collection removes them.
    c.delete(s.url("/r2/b"))
        .send()
        .await
        .expect("delete folder");
    c.post(s.url("/api/trash/empty"))
        .send()
        .await
        .expect("empty");
    let gc = json(
        c.post(s.url("/api/system/storage/gc"))
            .send()
            .await
            .expect("gc"),
    )
    .await;
    assert_eq!(gc["binariesRemoved"], 1);
    assert!(s.stored_binaries().is_empty());
}

#[tokio::test]
async fn storageinfo_shows_the_artifact_cache_of_the_only_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("r").await;
    let r = c
        .put(s.url("/r/x.bin"))
        .body(bytes(2, 1_000))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    for _ in 0..3 {
        let r = c.get(s.url("/r/x.bin")).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let cache = &s.storage_info().await["artifactCache"];
    if stowage_tests::engine() == "sqlite" {
        // The SQLite file in the data directory: serve is its only writer, so it caches.
        // The first read after the deploy asks the database, the next two do not.
        assert_eq!(cache["misses"], 1, "{cache}");
        assert_eq!(cache["hits"], 2, "{cache}");
        assert_eq!(cache["capacity"], 65_536, "{cache}");
        assert_eq!(cache["ttlSecs"], 5, "{cache}");
    } else {
        // A shared database: other writers would not be seen, so nothing is cached.
        assert!(cache.is_null(), "{cache}");
    }
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("libs").await;
    let data = bytes(2, 100_000);
    let other = bytes(3, 10);
    let wrong_sha256 = sha256_hex(&other);
    for (header, value) in [
        ("X-Checksum-Sha256", wrong_sha256.clone()),
        ("X-Checksum-Sha1", "0".repeat(40)),
        ("X-Checksum-Md5", "0".repeat(32)),
        ("X-Checksum", wrong_sha256.clone()),
    ] {
        let r = c
            .put(s.url("/libs/x.bin"))
            .header(header, &value)
            .body(data.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CONFLICT, "{header}");
        let body = json(r).await;
        assert_eq!(body["errors"][0]["status"], 409);
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(
            message.contains("checksum mismatch") && message.contains("nothing was stored"),
            "{message}"
        );
    }
    let r = c
        .put(s.url("/libs/x.bin"))
        .header("X-Checksum-Sha256", "xyz")
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        c.get(s.url("/libs/x.bin"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(s.stored_binaries().is_empty(), "no binary stored");
    assert!(s.staged_files().is_empty(), "no temp file left");
    let info = s.storage_info().await;
    assert_eq!(info["binariesSummary"]["binariesCountExact"], 0);
    assert_eq!(info["binariesSummary"]["artifactsCountExact"], 0);

    // The right checksums are accepted.
    let r = c
        .put(s.url("/libs/x.bin"))
        .header("X-Checksum-Sha256", sha256_hex(&data))
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_cut_short_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token);

    // Fewer bytes than Content-Length, then the client closes.
    let mut request =
        format!("PUT /libs/short.bin HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 200000\r\n\r\n")
            .into_bytes();
    request.extend(bytes(4, 100_000));
    let status = raw_request(&s.addr(), &request).await;
    assert!(status.is_none() || status == Some(400), "{status:?}");

    // A chunked body whose connection drops mid-chunk.
    let mut request = format!(
        "PUT /libs/chunked.bin HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n10000\r\n"
    )
    .into_bytes();
    request.extend(bytes(5, 30_000));
    let status = raw_request(&s.addr(), &request).await;
    assert!(status.is_none() || status == Some(400), "{status:?}");

    // The server notices the broken connection and cleans up; give it a moment.
    let c = s.admin();
    for _ in 0..50 {
        if s.staged_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        s.staged_files().is_empty(),
        "temp files left: {:?}",
        s.staged_files()
    );
    assert!(
        s.stored_binaries().is_empty(),
        "binaries stored: {:?}",
        s.stored_binaries()
    );
    for path in ["/libs/short.bin", "/libs/chunked.bin"] {
        assert_eq!(
            c.get(s.url(path)).send().await.expect("get").status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        s.storage_info().await["binariesSummary"]["artifactsCountExact"],
        0
    );
}

#[tokio::test]
async fn path_traversal_is_refused_in_every_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    // A file beside the data directory that a traversal would reach.
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, b"untouched").expect("sentinel");
    let auth = format!("Authorization: Bearer {}\r\n", s.token);
    let targets = [
        "/libs/../outside.txt",
        "/libs/../../outside.txt",
        "/libs/a/../../outside.txt",
        "/libs/%2e%2e/outside.txt",
        "/libs/%2E%2E/%2e%2e/outside.txt",
        "/libs/.%2e/outside.txt",
        "/libs/..%2foutside.txt",
        "/libs/..%2Foutside.txt",
        "/libs/a%2f..%2f..%2foutside.txt",
        "/libs/..%5coutside.txt",
        "/libs//etc/passwd",
        "/libs/%2fetc/passwd",
        "/libs/a/x%00.txt",
        "/libs/./x.txt",
        "/%2e%2e/outside.txt",
        "/api/storage/libs/../outside.txt",
        "/api/storage/libs/%2e%2e/outside.txt",
        "/api/trash/restore/libs/%2e%2e/x",
    ];
    for target in targets {
        for method in ["GET", "PUT", "DELETE"] {
            if target.starts_with("/api/") && method != "GET" && !target.starts_with("/api/trash") {
                continue;
            }
            let method = if target.starts_with("/api/trash") {
                "POST"
            } else {
                method
            };
            let request = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nConnection: close\r\n\r\nevil"
            );
            let status = raw_request(&s.addr(), request.as_bytes()).await;
            assert_eq!(status, Some(400), "{method} {target}");
        }
    }
    // A raw backslash or NUL never reaches a handler either.
    for target in ["/libs/..\\outside.txt", "/libs/a\0b"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        let status = raw_request(&s.addr(), request.as_bytes()).await;
        assert_eq!(status, Some(400), "{target:?}");
    }
    assert_eq!(std::fs::read(&outside).expect("sentinel"), b"untouched");
    let mut beside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["data", "database-url", "outside.txt", "server.log"],
        "nothing new beside the data dir"
    );
    assert!(s.stored_binaries().is_empty());
}

#[tokio::test]
async fn concurrent_deploys_end_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let same = bytes(6, 200_000);

    // 32 × the same bytes to the same path, and 32 × the same bytes to different paths.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (c, data) = (c.clone(), same.clone());
        let url = if i < 32 {
            s.url("/libs/same/path.bin")
        } else {
            s.url(&format!("/libs/many/{i}.bin"))
        };
        tasks.push(tokio::spawn(async move {
            c.put(url).body(data).send().await.expect("put").status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::CREATED);
    }
    assert_eq!(s.stored_binaries().len(), 1);
    let info = s.storage_info().await;
    assert_eq!(info["binariesSummary"]["binariesCountExact"], 1);
    assert_eq!(info["binariesSummary"]["artifactsCountExact"], 33);

    // 32 different bodies to one path: the survivor is one of them, whole and consistent.
    let bodies: Vec<Vec<u8>> = (0..32).map(|i| bytes(100 + i, 50_000)).collect();
    let tasks: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|data| {
            let (c, url) = (c.clone(), s.url("/libs/contended.bin"));
            tokio::spawn(async move { c.put(url).body(data).send().await.expect("put").status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::CREATED);
    }
    let r = c
        .get(s.url("/libs/contended.bin"))
        .send()
        .await
        .expect("get");
    let header = r.headers()["x-checksum-sha256"]
        .to_str()
        .expect("header")
        .to_string();
    let body = r.bytes().await.expect("body");
    assert_eq!(
        sha256_hex(&body),
        header,
        "bytes match their recorded checksum"
    );
    assert!(
        bodies.iter().any(|b| b[..] == body[..]),
        "the survivor is one of the uploads"
    );
    assert_eq!(s.stored_binaries().len(), 33);
    assert!(s.staged_files().is_empty());
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    assert!(
        s.banner.contains(&s.token),
        "the first start prints the token once"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.data_dir.join("admin.token"))
            .expect("token file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    s.create_repo("libs").await;
    s.admin()
        .put(s.url("/libs/a.txt"))
        .body("a")
        .send()
        .await
        .expect("put");
    let anon = reqwest::Client::new();
    assert_eq!(
        anon.get(s.url("/api/system/ping"))
            .send()
            .await
            .expect("ping")
            .status(),
        StatusCode::OK
    );
    for (name, request) in [
        ("anonymous read", anon.get(s.url("/libs/a.txt"))),
        ("anonymous deploy", anon.put(s.url("/libs/b.txt")).body("b")),
        (
            "wrong bearer",
            anon.get(s.url("/libs/a.txt")).bearer_auth("stw_wrong"),
        ),
        (
            "wrong password",
            anon.get(s.url("/libs/a.txt"))
                .basic_auth("admin", Some("nope")),
        ),
        (
            "wrong user",
            anon.get(s.url("/libs/a.txt"))
                .basic_auth("bob", Some(&s.token)),
        ),
        (
            "anonymous repo create",
            anon.put(s.url("/api/repositories/x")),
        ),
    ] {
        let r = request.send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(r.headers().contains_key("www-authenticate"), "{name}");
        assert_eq!(json(r).await["errors"][0]["status"], 401, "{name}");
    }
    let r = anon
        .get(s.url("/libs/a.txt"))
        .basic_auth("admin", Some(&s.token))
        .send()
        .await
        .expect("basic");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(s.stored_binaries().len() == 1);
    s.stop().await;

    // With anonymous read on, reads work without a token; writes and admin APIs still do not.
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some("anonymous_read = true\n".into()),
            ..Options::default()
        },
    )
    .await;
    assert!(!s.banner.contains("stw_"), "the token is not printed again");
    assert_eq!(
        anon.get(s.url("/libs/a.txt"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        anon.get(s.url("/api/storage/libs/a.txt"))
            .send()
            .await
            .expect("info")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        anon.put(s.url("/libs/b.txt"))
            .body("b")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        anon.get(s.url("/api/storageinfo"))
            .send()
            .await
            .expect("info")
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn downloads_honour_range_etag_and_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let data = bytes(7, 1000);
    c.put(s.url("/libs/org/app/1.0/app-1.0.jar"))
        .body(data.clone())
        .send()
        .await
        .expect("put");
    let url = s.url("/libs/org/app/1.0/app-1.0.jar");

    let r = c.get(&url).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/java-archive");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["x-checksum-sha256"], sha256_hex(&data).as_str());
    assert!(
        r.headers().contains_key("x-checksum-sha1") && r.headers().contains_key("x-checksum-md5")
    );
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(r.bytes().await.expect("body"), data);

    let r = c
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/1000");
    assert_eq!(r.bytes().await.expect("body"), data[100..200]);
    let r = c
        .get(&url)
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("suffix");
    assert_eq!(r.bytes().await.expect("body"), data[990..]);
    let r = c
        .get(&url)
        .header("Range", "bytes=1000-")
        .send()
        .await
        .expect("416");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1000");

    let r = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("304");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(&url)
        .header("If-None-Match", "\"other\"")
        .send()
        .await
        .expect("200");
    assert_eq!(r.status(), StatusCode::OK);

    let r = c.head(&url).send().await.expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "1000");

    // Folder info and search.
    let folder = json(
        c.get(s.url("/api/storage/libs/org/app"))
            .send()
            .await
            .expect("folder"),
    )
    .await;
    assert_eq!(folder["children"][0]["uri"], "/1.0");
    assert_eq!(folder["children"][0]["folder"], true);
    let file = json(
        c.get(s.url("/api/storage/libs/org/app/1.0/app-1.0.jar"))
            .send()
            .await
            .expect("file"),
    )
    .await;
    assert_eq!(file["checksums"]["sha256"], sha256_hex(&data));
    assert_eq!(file["size"], "1000");
    let found = json(
        c.get(s.url(&format!(
            "/api/search/checksum?sha256={}",
            sha256_hex(&data)
        )))
        .send()
        .await
        .expect("search"),
    )
    .await;
    assert_eq!(found["results"].as_array().expect("results").len(), 1);
    assert!(
        found["results"][0]["uri"]
            .as_str()
            .expect("uri")
            .ends_with("/api/storage/libs/org/app/1.0/app-1.0.jar")
    );
}

#[tokio::test]
async fn deploy_by_checksum_trash_and_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let data = bytes(8, 5000);
    let sha = sha256_hex(&data);
    c.put(s.url("/libs/a/one.bin"))
        .body(data.clone())
        .send()
        .await
        .expect("put");

    let r = c
        .put(s.url("/libs/b/two.bin"))
        .header("X-Checksum-Deploy", "true")
        .header("X-Checksum-Sha256", &sha)
        .send()
        .await
        .expect("by checksum");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(s.url("/libs/b/three.bin"))
        .header("X-Checksum-Deploy", "true")
        .header("X-Checksum-Sha256", "1".repeat(64))
        .send()
        .await
        .expect("unknown");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.body("/libs/b/two.bin").await, data);

    // A file where a folder is, and a folder where a file is.
    assert_eq!(
        c.put(s.url("/libs/a/one.bin/x"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        c.put(s.url("/libs/a"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::CONFLICT
    );
    // Unknown repository.
    let r = c.put(s.url("/nope/x")).body("x").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        json(r).await["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("PUT /api/repositories/nope")
    );

    // Trash and restore.
    assert_eq!(
        c.delete(s.url("/libs/a"))
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(s.url("/libs/a/one.bin"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    let trash = json(c.get(s.url("/api/trash")).send().await.expect("trash")).await;
    assert_eq!(trash["items"][0]["path"], "/a/one.bin");
    assert_eq!(
        c.post(s.url("/api/trash/restore/libs/a"))
            .send()
            .await
            .expect("restore")
            .status(),
        StatusCode::OK
    );
    assert_eq!(s.body("/libs/a/one.bin").await, data);
    assert_eq!(
        c.delete(s.url("/libs/a/missing"))
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn everything_survives_a_restart_and_shutdown_finishes_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let mut deployed = Vec::new();
    for i in 0..5u64 {
        let data = bytes(200 + i, 10_000 * (i as usize + 1));
        let r = c
            .put(s.url(&format!("/libs/v{i}/file.bin")))
            .body(data.clone())
            .send()
            .await
            .expect("put");
        let body = json(r).await;
        deployed.push((i, data, body["checksums"].clone()));
    }

    // An upload in flight when SIGTERM arrives is finished, then the server exits.
    let slow = bytes(300, 512 * 1024);
    let chunks: Vec<Vec<u8>> = slow.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let body = futures::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let upload = {
        let (c, url) = (c.clone(), s.url("/libs/slow.bin"));
        tokio::spawn(async move {
            c.put(url)
                .header("Content-Length", (512 * 1024).to_string())
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .expect("slow put")
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.terminate();
    assert_eq!(upload.await.expect("task"), StatusCode::CREATED);
    assert!(s.wait().await.success(), "clean exit after SIGTERM");

    let s = Server::start(dir.path()).await;
    let c = s.admin();
    for (i, data, checksums) in deployed {
        let r = c
            .get(s.url(&format!("/libs/v{i}/file.bin")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["x-checksum-sha256"],
            checksums["sha256"].as_str().expect("sha256")
        );
        assert_eq!(
            r.headers()["x-checksum-sha1"],
            checksums["sha1"].as_str().expect("sha1")
        );
        assert_eq!(
            r.headers()["x-checksum-md5"],
            checksums["md5"].as_str().expect("md5")
        );
        assert_eq!(r.bytes().await.expect("body"), data);
    }
    let r = c
        .get(s.url("/libs/slow.bin"))
        .send()
        .await
        .expect("get slow");
    assert_eq!(r.bytes().await.expect("body"), slow);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = Server::start(dir.path()).await;
    let out = tokio::process::Command::new(stowage_tests::stowage_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another stowage process"));
}

#[tokio::test]
async fn move_and_copy_touch_only_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    s.create_repo("release").await;
    let c = s.admin();
    let one = bytes(600, 3000);
    let two = bytes(601, 4000);
    c.put(s.url("/libs/app/1.0/app.jar;build=7"))
        .body(one.clone())
        .send()
        .await
        .expect("put");
    c.put(s.url("/libs/app/1.0/app.pom"))
        .body(two.clone())
        .send()
        .await
        .expect("put");
    let stored_before = s.stored_binaries();

    // Copy a folder to another repository; the source stays.
    let r = c
        .post(s.url("/api/copy/libs/app/1.0?to=/release/app/1.0"))
        .send()
        .await
        .expect("copy");
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert!(
        body["messages"][0]["message"]
            .as_str()
            .expect("message")
            .contains("2 artifacts")
    );
    assert_eq!(s.body("/release/app/1.0/app.jar").await, one);
    assert_eq!(s.body("/libs/app/1.0/app.jar").await, one);
    let props = json(
        c.get(s.url("/api/storage/release/app/1.0/app.jar?properties"))
            .send()
            .await
            .expect("props"),
    )
    .await;
    assert_eq!(
        props["properties"]["build"][0], "7",
        "properties travel with a copy"
    );

    // Move a file into a folder (trailing slash), and a dry run that changes nothing.
    let r = c
        .post(s.url("/api/move/libs/app/1.0/app.pom?to=/libs/poms/&dry=1"))
        .send()
        .await
        .expect("dry");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.get(s.url("/libs/poms/app.pom"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = c
        .post(s.url("/api/move/libs/app/1.0/app.pom?to=/libs/poms/"))
        .send()
        .await
        .expect("move");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.body("/libs/poms/app.pom").await, two);
    assert_eq!(
        c.get(s.url("/libs/app/1.0/app.pom"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );

    // Neither touched a binary.
    assert_eq!(s.stored_binaries(), stored_before);
    let info = s.storage_info().await;
    assert_eq!(info["binariesSummary"]["binariesCountExact"], 2);
    assert_eq!(info["binariesSummary"]["artifactsCountExact"], 4);

    // Errors: into itself, missing source, file onto a folder.
    let into_itself = c
        .post(s.url("/api/move/libs/app?to=/libs/app/sub"))
        .send()
        .await
        .expect("move");
    assert_eq!(into_itself.status(), StatusCode::BAD_REQUEST);
    let missing = c
        .post(s.url("/api/copy/libs/nope?to=/libs/x"))
        .send()
        .await
        .expect("copy");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let onto_folder = c
        .post(s.url("/api/copy/libs/poms/app.pom?to=/libs/app"))
        .send()
        .await
        .expect("copy");
    assert_eq!(onto_folder.status(), StatusCode::CONFLICT);
    let no_target = c
        .post(s.url("/api/copy/libs/poms/app.pom"))
        .send()
        .await
        .expect("copy");
    assert_eq!(no_target.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn properties_can_be_set_removed_and_searched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    s.create_repo("other").await;
    let c = s.admin();
    for path in [
        "/libs/a/x.bin",
        "/libs/a/y.bin",
        "/libs/b/z.bin",
        "/other/a/x.bin",
    ] {
        c.put(s.url(path))
            .body(path.to_string())
            .send()
            .await
            .expect("put");
    }
    // On a folder: every file below it.
    let r = c
        .put(s.url("/api/storage/libs/a?properties=os=linux,darwin;qa=done"))
        .send()
        .await
        .expect("set");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    c.put(s.url("/api/storage/libs/b/z.bin?properties=os=windows"))
        .send()
        .await
        .expect("set");
    c.put(s.url("/api/storage/other/a/x.bin?properties=os=linux"))
        .send()
        .await
        .expect("set");
    let props = json(
        c.get(s.url("/api/storage/libs/a/y.bin?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(
        props["properties"]["os"],
        serde_json::json!(["darwin", "linux"])
    );
    assert_eq!(props["properties"]["qa"][0], "done");

    let search = |query: &str| {
        let (c, url) = (c.clone(), s.url(&format!("/api/search/prop?{query}")));
        async move {
            let body = json(c.get(url).send().await.expect("search")).await;
            let mut uris: Vec<String> = body["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|r| {
                    r["uri"]
                        .as_str()
                        .expect("uri")
                        .rsplit("/api/storage")
                        .next()
                        .expect("path")
                        .to_string()
                })
                .collect();
            uris.sort();
            uris
        }
    };
    assert_eq!(
        search("os=linux").await,
        ["/libs/a/x.bin", "/libs/a/y.bin", "/other/a/x.bin"]
    );
    assert_eq!(
        search("os=linux&repos=libs").await,
        ["/libs/a/x.bin", "/libs/a/y.bin"]
    );
    assert_eq!(
        search("os=windows,darwin&qa=done").await,
        ["/libs/a/x.bin", "/libs/a/y.bin"]
    );
    assert_eq!(search("os=windows").await, ["/libs/b/z.bin"]);
    assert!(search("os=solaris").await.is_empty());

    let r = c
        .delete(s.url("/api/storage/libs/a/x.bin?properties=os"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(search("os=linux&repos=libs").await, ["/libs/a/y.bin"]);
    let r = c
        .put(s.url("/api/storage/libs/nope?properties=a=b"))
        .send()
        .await
        .expect("set");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .put(s.url("/api/storage/libs/a?properties=novalue"))
        .send()
        .await
        .expect("set");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let long = "v".repeat(256);
    let r = c
        .put(s.url(&format!("/api/storage/libs/a?properties=k={long}")))
        .send()
        .await
        .expect("set");
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "values are limited to 255 characters"
    );
}

/// The status of a GET of `url` with one conditional header.
async fn get_if(c: &reqwest::Client, url: &str, name: &str, value: &str) -> StatusCode {
    c.get(url)
        .header(name, value)
        .send()
        .await
        .expect("get")
        .status()
}

#[tokio::test]
async fn conditional_writes_and_reads_follow_their_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let url = s.url("/libs/release/app-1.0.jar");
    let first = bytes(40, 20_000);

    // Create only: the first If-None-Match: * creates, the next is refused and changes nothing.
    let put = |data: Vec<u8>, name: &'static str, value: String| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.put(url)
                .header(name, value)
                .body(data)
                .send()
                .await
                .expect("put")
        }
    };
    let r = put(first.clone(), "If-None-Match", "*".into()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put(bytes(41, 20_000), "If-None-Match", "*".into()).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let text = json(r).await.to_string();
    assert!(text.contains("not overwritten"), "{text}");
    let r = c.get(&url).send().await.expect("get");
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let modified = r.headers()["last-modified"]
        .to_str()
        .expect("date")
        .to_string();
    assert_eq!(
        r.bytes().await.expect("body"),
        first,
        "the first upload stays"
    );

    // Replace only the version the client holds.
    let r = put(bytes(42, 100), "If-Match", "\"another\"".into()).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = put(
        bytes(42, 100),
        "If-Unmodified-Since",
        "Mon, 01 Jan 2001 00:00:00 GMT".into(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let second = bytes(43, 100);
    let r = put(second.clone(), "If-Match", etag.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(s.url("/libs/release/nothing-here.jar"))
        .header("If-Match", "*")
        .body(second.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "If-Match: * needs a file"
    );

    // Reads: If-Match fails with 412, If-Modified-Since of the current version gives 304.
    assert_eq!(
        get_if(&c, &url, "If-Match", &etag).await,
        StatusCode::PRECONDITION_FAILED,
        "the old version is gone"
    );
    let r = c.get(&url).send().await.expect("get");
    let modified_now = r.headers()["last-modified"]
        .to_str()
        .expect("date")
        .to_string();
    assert_eq!(r.bytes().await.expect("body"), second);
    assert_eq!(
        get_if(&c, &url, "If-Modified-Since", &modified_now).await,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get_if(
            &c,
            &url,
            "If-Modified-Since",
            "Mon, 01 Jan 2001 00:00:00 GMT"
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        get_if(&c, &url, "If-Modified-Since", "not a date").await,
        StatusCode::OK,
        "a bad date is ignored"
    );
    assert!(!modified.is_empty());

    // 16 concurrent create-only deploys of different bytes to one path: exactly one wins.
    let bodies: Vec<Vec<u8>> = (0..16).map(|i| bytes(200 + i, 30_000)).collect();
    let race = s.url("/libs/release/raced.jar");
    let tasks: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|data| {
            let (c, url) = (c.clone(), race.clone());
            tokio::spawn(async move {
                let r = c
                    .put(url)
                    .header("If-None-Match", "*")
                    .body(data.clone())
                    .send()
                    .await
                    .expect("put");
                (r.status(), data)
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        let (status, data) = t.await.expect("task");
        match status {
            StatusCode::CREATED => won.push(data),
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("create-only deploy answered {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one create-only deploy wins");
    let r = c.get(&race).send().await.expect("get");
    assert_eq!(
        r.bytes().await.expect("body"),
        won[0],
        "and its bytes are there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some("[server]\nheader_timeout_secs = 1\nbody_timeout_secs = 1\n".into()),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    let c = s.admin();
    let kept = bytes(50, 10_000);
    let r = c
        .put(s.url("/libs/kept.bin"))
        .body(kept.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let addr = s.base.trim_start_matches("http://").to_string();

    // 100 connections that send their headers a byte at a time (a byte every 200 ms, so
    // only a deadline on the whole head stops them), 100 that announce a body and stop.
    let mut dribbling = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        if i % 2 == 0 {
            tcp.write_all(b"PUT /libs/dribble.bin HTTP/1.1\r\nX-Slow: ")
                .await
                .expect("write");
            dribbling.push(tcp);
        } else {
            let head = format!(
                "PUT /libs/stalled-{i}.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
                 Content-Length: 1000000\r\n\r\n0123456789",
                s.token
            );
            tcp.write_all(head.as_bytes()).await.expect("write");
            stalled.push(tcp);
        }
    }
    let started = std::time::Instant::now();
    let dribblers = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            closed = 0;
            for tcp in &mut dribbling {
                if tcp.write_all(b"a").await.is_err() {
                    closed += 1;
                }
            }
            if closed == dribbling.len() {
                break;
            }
        }
        (closed, dribbling.len())
    });

    // Meanwhile everyone else is served.
    let ping = c.get(s.url("/api/system/ping")).send().await.expect("ping");
    assert_eq!(ping.status(), StatusCode::OK);
    let r = c.get(s.url("/libs/kept.bin")).send().await.expect("get");
    assert_eq!(r.bytes().await.expect("body"), kept);
    let r = c
        .put(s.url("/libs/fresh.bin"))
        .body(bytes(51, 5_000))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);

    // Every stalled body is answered and its connection closed, after the body timeout.
    for mut tcp in stalled {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("the server closes a stalled upload's connection");
        assert!(read.is_ok() || !answer.is_empty(), "{read:?}");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.contains("body_timeout_secs"),
            "a stalled upload is told why: {text}"
        );
    }
    let (closed, total) = dribblers.await.expect("dribblers");
    assert_eq!(closed, total, "every dribbling head is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut off after the 1 s timeouts, not held: {:?}",
        started.elapsed()
    );
    // Nothing the stalled uploads staged is left, and nothing of theirs was recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.staged_files().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.staged_files().is_empty(), "{:?}", s.staged_files());
    let r = c
        .get(s.url("/libs/stalled-1.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Reads one HTTP/1.1 answer (head and a `Content-Length` body) from `tcp`: the head, lower-cased.
async fn read_answer(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("an answer within 10 s")
            .expect("read the head");
        assert_eq!(
            n,
            1,
            "the connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.expect("read the body");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_refused_before_its_body_was_read_leaves_the_connection_usable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // A 4 MiB deploy with a wrong token: refused before a byte of the body is read. The client
    // writes it all (more than the sockets buffer), reads the 401, and sends its next request
    // on the same connection, as every keep-alive client does.
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let body = bytes(70, 4 << 20);
    let head = format!(
        "PUT /libs/refused.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer wrong\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())
        .await
        .expect("write the head");
    tcp.write_all(&body)
        .await
        .expect("the server reads the refused body, rather than resetting the connection");
    let answer = read_answer(&mut tcp).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    let ping = format!("GET /api/system/ping HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(ping.as_bytes())
        .await
        .expect("write the next request");
    let answer = read_answer(&mut tcp).await;
    assert!(
        answer.starts_with("http/1.1 200"),
        "the connection serves on: {answer}"
    );

    // A body too large to wait for (1 GiB announced): the answer says the connection closes,
    // and it does, without the server reading what it would throw away.
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT /libs/huge.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer wrong\r\n\
         Content-Length: {}\r\n\r\n0123456789",
        1u64 << 30
    );
    tcp.write_all(head.as_bytes())
        .await
        .expect("write the head");
    let answer = read_answer(&mut tcp).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closes the connection");

    // Nothing of either was recorded.
    let c = s.admin();
    for path in ["/libs/refused.bin", "/libs/huge.bin"] {
        let r = c.get(s.url(path)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_leaves_no_staged_file_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    let c = s.admin();
    let kept = bytes(70, 300_000);
    let r = c
        .put(s.url("/libs/kept.bin"))
        .body(kept.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);

    // Four uploads in flight, each stopped half way, then kill -9.
    let mut uploads = Vec::new();
    for i in 0..4 {
        let (c, url) = (c.clone(), s.url(&format!("/libs/cut-{i}.bin")));
        uploads.push(tokio::spawn(async move {
            let half = futures::stream::iter([Ok::<_, std::io::Error>(bytes(80 + i, 1 << 20))])
                .chain(futures::stream::pending());
            let _ = c
                .put(url)
                .header("Content-Length", (4u64 << 20).to_string())
                .body(reqwest::Body::wrap_stream(half))
                .send()
                .await;
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.staged_files().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.staged_files().len(), 4, "the uploads are staged");
    s.crash().await;
    for upload in uploads {
        upload.abort();
    }

    // The next run of this node removes what the crashed one staged, whatever its age,
    // and everything acknowledged is there.
    let s = Server::start(dir.path()).await;
    assert!(s.staged_files().is_empty(), "{:?}", s.staged_files());
    let r = s
        .admin()
        .get(s.url("/libs/kept.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.bytes().await.expect("body"), kept);
    let r = s
        .admin()
        .get(s.url("/libs/cut-0.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "nothing half-sent was recorded"
    );
}

/// A repository's `immutablePaths` patterns make released files permanent: deployed once (and
/// again with the same bytes, a retried release), never overwritten with other bytes, moved
/// away or deleted, alone or with their folder; a 409 says which pattern holds the path. Paths
/// the patterns do not match change as usual, and a bad pattern is refused when it is set.
#[tokio::test]
async fn released_paths_are_immutable_by_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    let bad = c
        .put(s.url("/api/repositories/rel"))
        .json(&serde_json::json!({ "immutablePaths": ["releases/[a"] }))
        .send()
        .await
        .expect("put repo");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(bad).await["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("\"releases/[a\" is invalid")
    );
    let created = c
        .put(s.url("/api/repositories/rel"))
        .json(&serde_json::json!({ "immutablePaths": ["releases/**", "**/*-final.jar"] }))
        .send()
        .await
        .expect("put repo");
    assert!(created.status().is_success(), "{}", created.status());

    let (v1, v2) = (bytes(1, 5_000), bytes(2, 5_000));
    let put = |path: &str, data: &Vec<u8>| {
        c.put(s.url(&format!("/rel/{path}")))
            .body(data.clone())
            .send()
    };
    let status = |r: reqwest::Response| r.status();
    let refused = |r: reqwest::Response, pattern: &'static str| async move {
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let message = json(r).await["errors"][0]["message"]
            .as_str()
            .expect("message")
            .to_string();
        assert!(
            message.contains("is immutable") && message.contains(pattern),
            "{message}"
        );
    };
    let released = "releases/app/1.0/app.jar";
    assert_eq!(
        status(put(released, &v1).await.expect("put")),
        StatusCode::CREATED
    );
    assert_eq!(
        status(put(released, &v1).await.expect("put")),
        StatusCode::CREATED,
        "the same bytes again change nothing"
    );
    refused(put(released, &v2).await.expect("put"), "releases/**").await;
    // Declared other bytes are refused before they are sent.
    let declared = c
        .put(s.url(&format!("/rel/{released}")))
        .header("X-Checksum-Sha256", sha256_hex(&v2))
        .body(v2.clone())
        .send()
        .await
        .expect("put");
    refused(declared, "releases/**").await;
    refused(
        c.delete(s.url(&format!("/rel/{released}")))
            .send()
            .await
            .expect("delete"),
        "releases/**",
    )
    .await;
    refused(
        c.delete(s.url("/rel/releases/app"))
            .send()
            .await
            .expect("delete"),
        "releases/**",
    )
    .await;
    refused(
        c.post(s.url(&format!(
            "/api/move/rel/{released}?to=/rel/elsewhere/app.jar"
        )))
        .send()
        .await
        .expect("move"),
        "releases/**",
    )
    .await;
    // A copy onto the released file with other bytes is an overwrite; a copy of it is not.
    assert_eq!(
        status(put("work/app.jar", &v2).await.expect("put")),
        StatusCode::CREATED
    );
    refused(
        c.post(s.url(&format!("/api/copy/rel/work/app.jar?to=/rel/{released}")))
            .send()
            .await
            .expect("copy"),
        "releases/**",
    )
    .await;
    let copied = c
        .post(s.url(&format!("/api/copy/rel/{released}?to=/rel/work/copy.jar")))
        .send()
        .await
        .expect("copy");
    assert_eq!(copied.status(), StatusCode::OK);
    // Another pattern, anywhere in the tree.
    assert_eq!(
        status(put("x/lib-final.jar", &v1).await.expect("put")),
        StatusCode::CREATED
    );
    refused(
        put("x/lib-final.jar", &v2).await.expect("put"),
        "**/*-final.jar",
    )
    .await;

    // Everything released is still there, with its first bytes.
    assert_eq!(s.body(&format!("/rel/{released}")).await.as_ref(), &v1[..]);
    assert_eq!(s.body("/rel/x/lib-final.jar").await.as_ref(), &v1[..]);
    // Paths no pattern matches change as usual.
    assert_eq!(
        status(put("work/app.jar", &v1).await.expect("put")),
        StatusCode::CREATED
    );
    let deleted = c.delete(s.url("/rel/work")).send().await.expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    s.stop().await;
}

/// Artifactory's calls as its clients use them: `?properties=a,b` answers only the properties
/// named (404 when it has none of them), a checksum search honours `repos=`, and `POST
/// /api/repositories/{key}` changes the fields given and keeps the others.
#[tokio::test]
async fn named_properties_checksum_search_by_repository_and_repository_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    for repo in ["one", "two"] {
        s.create_repo(repo).await;
        let r = c
            .put(s.url(&format!("/{repo}/f.bin;os=linux;arch=x86;team=a")))
            .body(bytes(21, 500))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let props = json(
        c.get(s.url("/api/storage/one/f.bin?properties=os,arch"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    let names: Vec<&String> = props["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(names, vec!["arch", "os"], "{props}");
    let all = json(
        c.get(s.url("/api/storage/one/f.bin?properties"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(all["properties"].as_object().map(|p| p.len()), Some(3));
    let none = c
        .get(s.url("/api/storage/one/f.bin?properties=color"))
        .send()
        .await
        .expect("get");
    assert_eq!(none.status(), StatusCode::NOT_FOUND);

    let sha = sha256_hex(&bytes(21, 500));
    let found = |query: String| {
        let c = c.clone();
        let url = s.url(&format!("/api/search/checksum?sha256={sha}{query}"));
        async move {
            let v = json(c.get(url).send().await.expect("search")).await;
            v["results"].as_array().expect("results").len()
        }
    };
    assert_eq!(found(String::new()).await, 2);
    assert_eq!(found("&repos=two".into()).await, 1);
    assert_eq!(found("&repos=one,two".into()).await, 2);

    let update = c
        .post(s.url("/api/repositories/one"))
        .json(&serde_json::json!({"description": "the first"}))
        .send()
        .await
        .expect("post");
    assert_eq!(update.status(), StatusCode::OK);
    let shown = json(
        c.get(s.url("/api/repositories/one"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(shown["description"], "the first");
    assert_eq!(
        shown["rclass"], "local",
        "the other fields are kept: {shown}"
    );
    let missing = c
        .post(s.url("/api/repositories/nope"))
        .json(&serde_json::json!({"description": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn the_trash_restores_to_another_path_and_cleans_an_entry_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.create_repo("libs").await;
    s.create_repo("archive").await;
    let c = s.admin();
    let (one, two) = (bytes(901, 3_000), bytes(902, 4_000));
    for (path, data) in [
        ("/libs/app/1.0/one.jar;build=7", &one),
        ("/libs/app/1.0/sub/two.jar", &two),
    ] {
        let r = c
            .put(s.url(path))
            .body(data.clone())
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = c
        .delete(s.url("/libs/app/1.0"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A folder restored elsewhere keeps its files' places below the new folder, and their
    // properties.
    let r = c
        .post(s.url("/api/trash/restore/libs/app/1.0?to=archive/app-1.0"))
        .send()
        .await
        .expect("restore");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("text").contains("archive/app-1.0"));
    assert_eq!(s.body("/archive/app-1.0/one.jar").await, one);
    assert_eq!(s.body("/archive/app-1.0/sub/two.jar").await, two);
    let props = json(
        c.get(s.url("/api/storage/archive/app-1.0/one.jar?properties"))
            .send()
            .await
            .expect("props"),
    )
    .await;
    assert_eq!(props["properties"]["build"], serde_json::json!(["7"]));
    let r = c
        .get(s.url("/libs/app/1.0/one.jar"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "not where it was");

    // A file restored onto a file that exists is refused, and stays in the trash.
    let r = c
        .delete(s.url("/archive/app-1.0/sub/two.jar"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .post(s.url("/api/trash/restore/archive/app-1.0/sub/two.jar?to=archive/app-1.0/one.jar"))
        .send()
        .await
        .expect("restore");
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Cleaned for good: gone from the trash, nothing to restore any more.
    let r = c
        .delete(s.url("/api/trash/clean/archive/app-1.0/sub/two.jar"))
        .send()
        .await
        .expect("clean");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let trash = json(c.get(s.url("/api/trash")).send().await.expect("trash")).await;
    assert_eq!(trash["items"].as_array().map(Vec::len), Some(0), "{trash}");
    let r = c
        .post(s.url("/api/trash/restore/archive/app-1.0/sub/two.jar"))
        .send()
        .await
        .expect("restore");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(s.url("/api/trash/clean/archive/nothing"))
        .send()
        .await
        .expect("clean");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reqwest::Client::new()
        .delete(s.url("/api/trash/clean/archive/app-1.0"))
        .send()
        .await
        .expect("clean");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn prune_counts_in_a_dry_run_then_removes_only_unreferenced_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(
        dir.path(),
        Options {
            config: Some("[gc]\norphan_grace_secs = 0\n".into()),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    let c = s.admin();
    let kept = bytes(77, 5_000);
    let r = c
        .put(s.url("/libs/kept.bin"))
        .body(kept.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    // An object no binary row names, as a crash between storing and recording leaves one.
    let orphan = bytes(78, 3_000);
    let digest = sha256_hex(&orphan);
    let file = s
        .data_dir
        .join("filestore")
        .join(&digest[..2])
        .join(&digest);
    std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
    std::fs::write(&file, &orphan).expect("orphan");

    // The status's `last` is the previous run's until the new one has ended: wait for it to
    // change (each run below reports other figures than the one before it).
    let run = async |query: &str, previous: &Value| -> Value {
        let r = c
            .post(s.url(&format!("/api/system/storage/prune/start?{query}")))
            .send()
            .await
            .expect("prune");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        for _ in 0..300 {
            let status = json(
                c.get(s.url("/api/system/storage/prune/status"))
                    .send()
                    .await
                    .expect("status"),
            )
            .await;
            if status["running"] == false
                && !status["last"].is_null()
                && status["last"] != *previous
            {
                return status["last"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the prune did not finish");
    };
    let dry = run("dryRun=true", &Value::Null).await;
    assert_eq!(dry["ok"]["dryRun"], true, "{dry}");
    assert_eq!(dry["ok"]["unreferenced"], 1, "{dry}");
    assert_eq!(dry["ok"]["bytes"], 3_000);
    assert!(file.exists(), "a dry run removes nothing");
    // Younger than 30 days: left alone.
    let young = run("binaryOlderThanDays=30", &dry).await;
    assert_eq!(young["ok"]["unreferenced"], 0, "{young}");
    assert!(file.exists());
    let real = run("dryRun=false", &young).await;
    assert_eq!(real["ok"]["unreferenced"], 1, "{real}");
    assert!(!file.exists(), "the unreferenced object is gone");
    assert_eq!(
        s.body("/libs/kept.bin").await,
        kept,
        "the referenced one stays"
    );
    let r = c
        .post(s.url("/api/system/storage/prune/start?dryRun=maybe"))
        .send()
        .await
        .expect("prune");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
