//! The function binaries end to end against LocalStack: each one under the real Lambda Runtime
//! API emulation (`cargo lambda watch`, function URL events) and in container mode on a port,
//! configured by the environment alone, with the admin token taken from Secrets Manager by
//! reference. Every request goes to both deployments and must get the same response (status,
//! headers, body), after the values that differ by nature are normalised: times, the presigned
//! URLs' signatures, a session's random id, and the emulator's own CORS headers.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stowage_tests::functions::{self, Deployment, Mode};
use stowage_tests::{bytes, s3, sha256_hex};

const TOKEN: &str = "stw_functions-test-token-0123456789abcdef";
const LIMIT: usize = 4 * 1024 * 1024;

/// What is compared of a response.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The Location as sent (the compared header has its signature normalised away).
    raw_location: Option<String>,
}

/// Headers the Lambda emulator adds on its own (CORS for browsers) and the date.
fn compared(name: &str) -> bool {
    !(name == "date" || name == "vary" || name.starts_with("access-control-"))
}

/// Replaces what differs between two deployments by nature: times (ISO 8601 in JSON, HTTP
/// dates in headers) and the per-signature values of presigned URLs.
fn normalise(text: &str) -> String {
    if text.ends_with(" GMT") && text.len() == 29 {
        return "<http-date>".into();
    }
    let mut out = mask_query_values(text, &["X-Amz-Date=", "X-Amz-Signature="]);
    // ISO 8601 times inside JSON strings: "2026-11-24T08:50:23.123Z".
    let mut masked = String::with_capacity(out.len());
    for (i, piece) in out.split('"').enumerate() {
        if i > 0 {
            masked.push('"');
        }
        let b = piece.as_bytes();
        if i % 2 == 1 && b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' {
            masked.push_str("<time>");
        } else {
            masked.push_str(piece);
        }
    }
    out = masked;
    out
}

/// `text` with the value after each `key` (up to `&`, `"` or the end) replaced by `<…>`.
fn mask_query_values(text: &str, keys: &[&str]) -> String {
    let mut out = text.to_string();
    for key in keys {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(key) {
            let (head, tail) = rest.split_at(at + key.len());
            result.push_str(head);
            result.push_str("<…>");
            let end = tail.find(['&', '"']).unwrap_or(tail.len());
            rest = &tail[end..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// The same JSON shape: the same keys, value kinds and array lengths (for bodies whose values
/// are random by design, like an upload session's id and staging key).
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
        }
        (Value::String(_), Value::String(_)) => true,
        _ => a == b,
    }
}

async fn send(
    deployment: &Deployment,
    function: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    send_as(deployment, TOKEN, function, method, path, headers, body).await
}

/// [`send`] with the bearer token `token`.
async fn send_as(
    deployment: &Deployment,
    token: &str,
    function: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut request = client
        .request(method, deployment.url(function, path))
        .bearer_auth(token)
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let raw_location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut headers = BTreeMap::new();
    for (name, value) in response.headers() {
        if compared(name.as_str()) {
            headers.insert(
                name.as_str().to_string(),
                normalise(value.to_str().unwrap_or("<binary>")),
            );
        }
    }
    let body = response.bytes().await.expect("body").to_vec();
    Answer {
        status,
        headers,
        body,
        raw_location,
    }
}

/// Sends one request to both deployments and checks the answers agree; returns the Lambda
/// one (and, for bodies that hold per-deployment values, the container one too).
async fn both(
    deployments: &[Deployment; 2],
    function: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Answer, Answer) {
    let lambda = send(
        &deployments[0],
        function,
        method.clone(),
        path,
        headers,
        body.to_vec(),
    )
    .await;
    let container = send(
        &deployments[1],
        function,
        method.clone(),
        path,
        headers,
        body.to_vec(),
    )
    .await;
    let text = |a: &Answer| normalise(&String::from_utf8_lossy(&a.body));
    let json = |a: &Answer| serde_json::from_slice::<Value>(&a.body).ok();
    let same_body = if lambda.body == container.body {
        true
    } else if path == "/api/uploads" {
        // A session's id and staging key are random by design.
        json(&lambda)
            .zip(json(&container))
            .is_some_and(|(l, c)| same_shape(&l, &c))
    } else {
        std::str::from_utf8(&lambda.body).is_ok() && text(&lambda) == text(&container)
    };
    assert!(
        lambda.status == container.status && same_headers(&lambda, &container, path) && same_body,
        "{method} {path} on {function} differs:\n  Lambda:    {} {:?} {}\n  container: {} {:?} {}",
        lambda.status,
        lambda.headers,
        text(&lambda),
        container.status,
        container.headers,
        text(&container),
    );
    (lambda, container)
}

/// The headers agree; a session's Location names its random id.
fn same_headers(lambda: &Answer, container: &Answer, path: &str) -> bool {
    if path == "/api/uploads" {
        let without = |a: &Answer| {
            let mut h = a.headers.clone();
            h.remove("location");
            h.remove("content-length");
            h
        };
        return without(lambda) == without(container);
    }
    lambda.headers == container.headers
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&answer.body)))
}

async fn aws(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

/// Stores the admin token in Secrets Manager, as the Terraform module does, and returns the
/// reference the functions and `stowage migrate` get.
async fn admin_token_secret(endpoint: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(&aws(endpoint).await);
    let name = format!("stowage/admin-token-{:08x}", rand::random::<u32>());
    client
        .create_secret()
        .name(&name)
        .secret_string(json!({ "token": TOKEN }).to_string())
        .send()
        .await
        .expect("create the secret in LocalStack");
    format!("secretsmanager:{name}#token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn functions_answer_alike_under_lambda_and_in_containers() {
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let Some(cargo_lambda) = functions::cargo_lambda() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("DIR {}", dir.path().display());
    let dir = Box::leak(Box::new(dir));
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let secret = admin_token_secret(&endpoint).await;

    let mut deployments = Vec::new();
    for (mode, name) in [(Mode::Lambda, "lambda"), (Mode::Container, "container")] {
        let root = dir.path().join(name);
        let database_url = stowage_tests::database_url(&root).await;
        let data_dir = root.join("data").display().to_string();
        // One bucket and prefix for both: the signed URLs name the same keys.
        let mut env = functions::environment(&endpoint, &bucket, &database_url, &data_dir, &secret);
        env.extend(
            [
                ("STOWAGE_S3_PATH", "binaries"),
                ("STOWAGE_BASE_URL", "https://artifacts.example.com"),
                ("STOWAGE_LOG", "info"),
                // Scheduled maintenance below collects a binary deployed a moment before.
                ("STOWAGE_CONFIG_TOML", "[gc]\norphan_grace_secs = 0\n"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        functions::migrate(&env).await;
        deployments.push(Deployment::start(mode, &root, &env, Some(&cargo_lambda)).await);
    }
    let deployments: [Deployment; 2] = deployments.try_into().expect("two deployments");
    let none: &[(&str, &str)] = &[];

    // Metadata: a repository that redirects downloads of 1 MiB and more.
    let (ping, _) = both(
        &deployments,
        "metadata",
        Method::GET,
        "/api/system/ping",
        none,
        b"",
    )
    .await;
    assert_eq!(
        (ping.status, ping.body.as_slice()),
        (StatusCode::OK, b"OK".as_slice())
    );
    let repo = br#"{"rclass":"local","downloadRedirect":true,"downloadRedirectMinSize":1048576}"#;
    let (created, _) = both(
        &deployments,
        "metadata",
        Method::PUT,
        "/api/repositories/libs",
        none,
        repo,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);

    // Uploads below the Lambda limit, with binary bytes (base64 in the Lambda events). The
    // proxied one is small: cargo-lambda's emulator answers the function's POST of its response
    // before reading it and loses answers larger than one socket write now and then
    // (docs/benchmarks.md, "Functions"); Lambda reads the whole answer first.
    let small = bytes(1, 4 * 1024);
    let mid = bytes(2, 2 * 1024 * 1024);
    for (path, data) in [("/libs/small.bin", &small), ("/libs/dir/mid.bin", &mid)] {
        let sha = sha256_hex(data);
        let (deployed, _) = both(
            &deployments,
            "upload",
            Method::PUT,
            path,
            // The emulator (unlike Lambda) fails on a binary body without a Content-Type;
            // real clients send one.
            &[
                ("x-checksum-sha256", &sha),
                ("content-type", "application/octet-stream"),
            ],
            data,
        )
        .await;
        assert_eq!(
            deployed.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&deployed.body)
        );
        let body = json_of(&deployed);
        assert_eq!(body["checksums"]["sha256"], sha);
        assert_eq!(
            body["downloadUri"],
            format!("https://artifacts.example.com{path}")
        );
    }

    // Downloads: proxied bytes below the repository's redirect size, a redirect above it.
    let (got, _) = both(
        &deployments,
        "download",
        Method::GET,
        "/libs/small.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        got.body == small,
        "the bytes through Lambda are the bytes deployed"
    );
    assert_eq!(got.headers["x-checksum-sha256"], sha256_hex(&small));
    let (range, _) = both(
        &deployments,
        "download",
        Method::GET,
        "/libs/small.bin",
        &[("range", "bytes=10-19")],
        b"",
    )
    .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.body, small[10..20]);
    let (head, _) = both(
        &deployments,
        "download",
        Method::HEAD,
        "/libs/dir/mid.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], mid.len().to_string());
    let (lambda_redirect, container_redirect) = both(
        &deployments,
        "download",
        Method::GET,
        "/libs/dir/mid.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(lambda_redirect.status, StatusCode::FOUND);
    for redirect in [&lambda_redirect, &container_redirect] {
        let location = reqwest::get(&redirect_location(redirect))
            .await
            .expect("follow");
        assert_eq!(location.status(), StatusCode::OK);
        assert!(
            location.bytes().await.expect("bytes") == mid,
            "the signed URL serves the bytes"
        );
    }

    // Metadata calls.
    let (info, _) = both(
        &deployments,
        "metadata",
        Method::GET,
        "/api/storage/libs/dir/mid.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(json_of(&info)["checksums"]["sha256"], sha256_hex(&mid));
    let search = format!("/api/search/checksum?sha256={}", sha256_hex(&small));
    let (found, _) = both(&deployments, "metadata", Method::GET, &search, none, b"").await;
    assert_eq!(
        json_of(&found)["results"][0]["uri"],
        "https://artifacts.example.com/api/storage/libs/small.bin"
    );

    // A call another function serves: told where it goes.
    let (wrong, _) = both(
        &deployments,
        "download",
        Method::PUT,
        "/libs/x.bin",
        none,
        b"x",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(String::from_utf8_lossy(&wrong.body).contains("upload function"));

    // Above the Lambda request limit: 413 naming presigned sessions, nothing stored …
    let big = bytes(3, LIMIT + 1024 * 1024);
    let big_sha = sha256_hex(&big);
    let (refused, _) = both(
        &deployments,
        "upload",
        Method::PUT,
        "/libs/big.bin",
        &[("content-type", "application/octet-stream")],
        &big,
    )
    .await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&refused.body).contains("POST /api/uploads"));
    let (missing, _) = both(
        &deployments,
        "metadata",
        Method::GET,
        "/api/storage/libs/big.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // … so the client opens a session, sends the bytes to S3, and completes.
    let open = json!({"repo": "libs", "path": "big.bin", "size": big.len(), "sha256": big_sha})
        .to_string();
    let (lambda_session, container_session) = both(
        &deployments,
        "upload",
        Method::POST,
        "/api/uploads",
        &[("content-type", "application/json")],
        open.as_bytes(),
    )
    .await;
    assert_eq!(lambda_session.status, StatusCode::CREATED);
    let mut completions = Vec::new();
    for (deployment, answer) in deployments
        .iter()
        .zip([&lambda_session, &container_session])
    {
        let session = json_of(answer);
        let statuses = s3::send_session_bytes(&session, &big).await;
        assert!(statuses.iter().all(StatusCode::is_success), "{statuses:?}");
        let id = session["id"].as_str().expect("session id");
        completions.push(
            send(
                deployment,
                "upload",
                Method::POST,
                &format!("/api/uploads/{id}/complete"),
                none,
                Vec::new(),
            )
            .await,
        );
    }
    assert_eq!(completions[0].status, StatusCode::CREATED);
    assert_eq!(completions[0].status, completions[1].status);
    assert_eq!(
        normalise(&String::from_utf8_lossy(&completions[0].body)),
        normalise(&String::from_utf8_lossy(&completions[1].body))
    );

    // Above the response limit a download always redirects, even when asked not to.
    let (forced, _) = both(
        &deployments,
        "download",
        Method::GET,
        "/libs/big.bin?redirect=false",
        none,
        b"",
    )
    .await;
    assert_eq!(forced.status, StatusCode::FOUND);
    let followed = reqwest::get(&redirect_location(&forced))
        .await
        .expect("follow");
    assert!(followed.bytes().await.expect("bytes") == big);

    // Deletes go to the metadata function.
    let (deleted, _) = both(
        &deployments,
        "metadata",
        Method::DELETE,
        "/libs/small.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let (gone, _) = both(
        &deployments,
        "download",
        Method::GET,
        "/libs/small.bin",
        none,
        b"",
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // The functions decide with the same permissions: a token scoped to a group that may
    // read libs downloads through the download function, and the upload function refuses it.
    for (path, body) in [
        ("/api/security/groups/ci-readers", json!({})),
        ("/api/security/users/ci", json!({"groups": ["ci-readers"]})),
        (
            "/api/v2/security/permissions/libs-read",
            json!({"repo": {"repositories": ["libs"], "actions": {"groups": {"ci-readers": ["read"]}}}}),
        ),
    ] {
        let body = body.to_string();
        let (put, _) = both(
            &deployments,
            "metadata",
            Method::PUT,
            path,
            none,
            body.as_bytes(),
        )
        .await;
        assert!(put.status.is_success(), "{path}: {}", put.status);
    }
    for deployment in &deployments {
        let json_type = [("content-type", "application/json")];
        let created = send(
            deployment,
            "metadata",
            Method::POST,
            "/access/api/v1/tokens",
            &json_type,
            br#"{"username":"ci","scope":"applied-permissions/groups:ci-readers"}"#.to_vec(),
        )
        .await;
        assert_eq!(created.status, StatusCode::OK);
        let created: Value = serde_json::from_slice(&created.body).expect("json");
        let token = created["access_token"].as_str().expect("secret");
        let read = send_as(
            deployment,
            token,
            "download",
            Method::GET,
            "/libs/dir/mid.bin",
            none,
            Vec::new(),
        )
        .await;
        // 2 MiB: redirected (the repository redirects from 1 MiB), after the read check.
        assert_eq!(
            read.status,
            StatusCode::FOUND,
            "the scoped token reads libs"
        );
        let followed = reqwest::get(&redirect_location(&read))
            .await
            .expect("follow");
        assert_eq!(
            sha256_hex(&followed.bytes().await.expect("bytes")),
            sha256_hex(&mid)
        );
        let write = send_as(
            deployment,
            token,
            "upload",
            Method::PUT,
            "/libs/ci.bin",
            none,
            vec![1; 10],
        )
        .await;
        assert_eq!(write.status, StatusCode::FORBIDDEN, "but may not deploy");
        let anonymous = send_as(
            deployment,
            "stwt_not-a-token",
            "download",
            Method::GET,
            "/libs/dir/mid.bin",
            none,
            Vec::new(),
        )
        .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }

    // Scheduled maintenance (the Terraform module's EventBridge schedules): the metadata
    // function, invoked with a maintenance event, collects a binary nothing refers to.
    let lambda = &deployments[0];
    let unreferenced = bytes(9, 8 * 1024);
    let deployed = send(
        lambda,
        "upload",
        Method::PUT,
        "/libs/collect-me.bin",
        &[
            ("x-checksum-sha256", sha256_hex(&unreferenced).as_str()),
            ("content-type", "application/octet-stream"),
        ],
        unreferenced,
    )
    .await;
    assert_eq!(deployed.status, StatusCode::CREATED);
    let deleted = send(
        lambda,
        "metadata",
        Method::DELETE,
        "/libs/collect-me.bin",
        none,
        Vec::new(),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let emptied = send(
        lambda,
        "metadata",
        Method::POST,
        "/api/trash/empty",
        none,
        Vec::new(),
    )
    .await;
    assert!(emptied.status.is_success(), "{}", emptied.status);
    let (status, body) = lambda
        .invoke("metadata", &json!({ "stowage_maintenance": "gc" }))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("a JSON report");
    assert_eq!(answer["task"], "gc", "{answer}");
    assert!(
        answer["report"]["binariesRemoved"].as_u64() >= Some(1),
        "the deleted binary is collected: {answer}"
    );
    let (_, refused) = lambda
        .invoke("metadata", &json!({ "stowage_maintenance": "defragment" }))
        .await;
    let refused: Value = serde_json::from_str(&refused).expect("a JSON error");
    let message = refused["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown maintenance task") && message.contains("\"gc\""),
        "an unknown task is refused with the ones there are: {refused}"
    );

    let [lambda, container] = deployments;
    lambda.stop().await;
    container.stop().await;
}

/// The Location of a redirect, as sent.
fn redirect_location(answer: &Answer) -> String {
    answer.raw_location.clone().expect("a Location header")
}

#[tokio::test]
async fn secrets_are_read_from_secrets_manager_and_ssm() {
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let config = aws(&endpoint).await;
    let suffix = format!("{:08x}", rand::random::<u32>());
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(format!("stowage/plain-{suffix}"))
        .secret_string("just-the-password")
        .send()
        .await
        .expect("create secret");
    aws_sdk_ssm::Client::new(&config)
        .put_parameter()
        .name(format!("/stowage/{suffix}/cloudfront-key"))
        .value("-----BEGIN PRIVATE KEY-----\nMII…")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter");

    // (The functions find LocalStack through AWS_ENDPOINT_URL, as the test above shows with
    // the admin token; here the resolver gets the same configuration directly.)
    let secrets = stowage_config::secrets::Secrets::with_aws(config.clone());
    let plain = secrets
        .resolve(
            "database.password",
            &format!("secretsmanager:stowage/plain-{suffix}"),
        )
        .await
        .expect("plain secret");
    assert_eq!(plain, "just-the-password");
    let key = secrets
        .resolve(
            "cloudFrontPrivateKey",
            &format!("ssm:/stowage/{suffix}/cloudfront-key"),
        )
        .await
        .expect("SecureString parameter");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let missing = secrets
        .resolve("database.password", "secretsmanager:stowage/no-such-secret")
        .await
        .expect_err("a missing secret");
    assert!(
        missing
            .to_string()
            .contains("cannot read database.password from secretsmanager:stowage/no-such-secret"),
        "{missing}"
    );
    let no_field = secrets
        .resolve(
            "database.password",
            &format!("secretsmanager:stowage/plain-{suffix}#password"),
        )
        .await
        .expect_err("a field of a secret that is not JSON");
    assert!(no_field.to_string().contains("not JSON"), "{no_field}");
}
