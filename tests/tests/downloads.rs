//! Download redirects through `stowage serve` on S3 (LocalStack, which checks presigned
//! signatures and expiry): the 302 to a presigned GET that an HTTP client follows to the right
//! bytes and file name, tampered and expired URLs refused by LocalStack, and the cases that
//! must not redirect (HEAD, `?redirect=false`, listed User-Agents, small binaries, repositories
//! without `downloadRedirect`).

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use stowage_tests::s3;
use stowage_tests::{Options, Server, bytes};

/// A server on `s3-storage-v3-direct` with a redirecting repository `dist` (no minimum size)
/// and a plain one `libs`.
async fn server(dir: &Path, extra_s3: &str) -> Option<Server> {
    let endpoint = s3::endpoint()?;
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir).await;
    let config = format!(
        "[filestore]\ntemplate = \"s3-storage-v3-direct\"\n\n[downloads]\nproxy_user_agents = [\"NoRedirect-Tool\"]\n\n{}{extra_s3}",
        s3::toml_section(&endpoint, &bucket)
    );
    let server = Server::start_with(
        dir,
        Options {
            config: Some(config),
            ..Options::default()
        },
    )
    .await;
    server.create_redirecting_repo("dist").await;
    server.create_repo("libs").await;
    Some(server)
}

/// A client that does not follow redirects and sends the admin token.
fn no_follow(server: &Server) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Bearer {}", server.token).parse().expect("header"),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_redirect_to_a_presigned_get_serves_the_bytes_and_a_tampered_or_expired_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(server) = server(dir.path(), "").await else {
        return;
    };
    let data = bytes(1, 3 * 1024 * 1024 + 5);
    for repo in ["dist", "libs"] {
        let r = server
            .admin()
            .put(server.url(&format!("/{repo}/app/app-1.0.jar")))
            .body(data.clone())
            .send()
            .await
            .expect("deploy");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let client = no_follow(&server);
    let r = client
        .get(server.url("/dist/app/app-1.0.jar"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        !location.contains(&server.token),
        "the caller's token never reaches the Location"
    );
    let parsed = reqwest::Url::parse(&location).expect("url");
    assert!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "no credentials in {location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");

    // A plain HTTP client (no Stowage token) follows it to the bytes, saved under the right name.
    let plain = reqwest::Client::new();
    let r = plain.get(&location).send().await.expect("follow");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[CONTENT_DISPOSITION],
        "attachment; filename=\"app-1.0.jar\""
    );
    assert_eq!(r.headers()[CONTENT_TYPE], "application/java-archive");
    assert_eq!(r.bytes().await.expect("body"), data);
    // reqwest following the redirect itself gets the same bytes.
    assert_eq!(server.body("/dist/app/app-1.0.jar").await, data);

    // Tampered: another key, or another signature.
    let other_key = location.replacen("/filestore/", "/filestore/0", 1);
    let signature = parsed
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Signature")
        .expect("signature")
        .1
        .to_string();
    let flipped: String = signature.chars().rev().collect();
    for bad in [other_key, location.replace(&signature, &flipped)] {
        let r = plain.get(&bad).send().await.expect("tampered");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
    }

    // HEAD answers the headers itself; ?redirect=false, a listed User-Agent and a repository
    // without downloadRedirect get the bytes.
    let r = client
        .head(server.url("/dist/app/app-1.0.jar"))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
    for (path, agent) in [
        ("/dist/app/app-1.0.jar?redirect=false", "curl/8"),
        ("/dist/app/app-1.0.jar", "NoRedirect-Tool/2.1"),
        ("/libs/app/app-1.0.jar", "curl/8"),
    ] {
        let r = client
            .get(server.url(path))
            .header("user-agent", agent)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path} {agent}");
        assert_eq!(r.bytes().await.expect("body"), data);
    }
    server.stop().await;
}

#[tokio::test]
async fn an_expired_url_is_refused_and_small_binaries_are_served_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(server) = server(
        dir.path(),
        "signedUrlExpirySeconds = 1\nsignedUrlSlowClientRate = \"1TB\"\n",
    )
    .await
    else {
        return;
    };
    let data = bytes(2, 1000);
    let r = server
        .admin()
        .put(server.url("/dist/small.txt"))
        .body(data.clone())
        .send()
        .await
        .expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);
    let client = no_follow(&server);
    let r = client
        .get(server.url("/dist/small.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = reqwest::get(&location).await.expect("expired");
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an expired URL is refused"
    );

    // With the default minimum (1 MiB), a small binary is served, not redirected.
    let r = server
        .admin()
        .put(server.url("/api/repositories/dist2"))
        .body(r#"{"downloadRedirect":true}"#)
        .send()
        .await
        .expect("repo");
    assert!(r.status().is_success());
    server
        .admin()
        .put(server.url("/dist2/small.txt"))
        .body(data.clone())
        .send()
        .await
        .expect("deploy");
    let r = client
        .get(server.url("/dist2/small.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r = server
        .admin()
        .put(server.url("/api/repositories/bad"))
        .body(r#"{"downloadRedirect":"yes"}"#)
        .send()
        .await
        .expect("repo");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// A CI token scoped to read one repository: its download of a redirecting repository's file
/// gets the signed URL (issued only after the read check) and, followed, the bytes; it cannot
/// deploy, see other repositories, or find their artifacts by search.
#[tokio::test]
async fn a_token_scoped_to_reading_one_repository_downloads_through_a_redirect_and_nothing_more() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(server) = server(dir.path(), "").await else {
        return;
    };
    let admin = server.admin();
    let data = bytes(11, 2 * 1024 * 1024);
    for repo in ["dist", "libs"] {
        let r = admin
            .put(server.url(&format!("/{repo}/tool.bin")))
            .body(data.clone())
            .send()
            .await
            .expect("deploy");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for (path, body) in [
        ("/api/security/groups/ci-readers", json!({})),
        ("/api/security/users/ci", json!({"groups": ["ci-readers"]})),
        (
            "/api/v2/security/permissions/dist-read",
            json!({"repo": {"repositories": ["dist"], "actions": {"groups": {"ci-readers": ["read"]}}}}),
        ),
    ] {
        let r = admin
            .put(server.url(path))
            .json(&body)
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    let token: Value = admin
        .post(server.url("/access/api/v1/tokens"))
        .json(&json!({"username": "ci", "scope": "applied-permissions/groups:ci-readers"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("secret").to_string();
    let ci = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = ci
        .get(server.url("/dist/tool.bin"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        !location.contains(&token),
        "the signed URL carries no credentials of the caller"
    );
    let followed = reqwest::get(&location).await.expect("follow");
    assert_eq!(followed.bytes().await.expect("bytes").as_ref(), &data[..]);
    for (method, path, expected) in [
        (reqwest::Method::PUT, "/dist/new.bin", StatusCode::FORBIDDEN),
        (
            reqwest::Method::GET,
            "/libs/tool.bin",
            StatusCode::FORBIDDEN,
        ),
        (
            reqwest::Method::GET,
            "/api/storage/libs",
            StatusCode::FORBIDDEN,
        ),
    ] {
        let r = ci
            .request(method.clone(), server.url(path))
            .bearer_auth(&token)
            .body(vec![1u8; 10])
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), expected, "{method} {path}");
    }
    let repos: Value = ci
        .get(server.url("/api/repositories"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        repos.as_array().map(Vec::len),
        Some(1),
        "only dist: {repos}"
    );
    let sha = stowage_tests::sha256_hex(&data);
    let found: Value = ci
        .get(server.url(&format!("/api/search/checksum?sha256={sha}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let uris: Vec<&str> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(
        uris.len() == 1 && uris[0].contains("/dist/"),
        "only dist's copy is found: {uris:?}"
    );
    server.stop().await;
}
