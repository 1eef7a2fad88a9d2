//! The storage dashboard (`/ui/storage`, issue 24) in headless Chromium: Debian's browser,
//! driven by playwright-core (tests/dashboard/check.cjs). The page must show the repositories
//! and sizes `/api/storageinfo` reports, draw the deploys made while it is open, raise no
//! error in the browser, and render to a full screenshot; without credentials it is refused.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{Server, bytes, required_env};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Width and height of a PNG file, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_storageinfo_reports() {
    let (Some(chromium), Some(node)) = (
        required_env("STOWAGE_TEST_CHROMIUM", "Debian's chromium"),
        required_env(
            "STOWAGE_TEST_NODE",
            "node with tests/dashboard's playwright-core",
        ),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let c = s.admin();
    s.create_repo("libs").await;
    s.create_repo("docs").await;
    for (path, seed, len) in [
        ("/libs/a/one.jar", 1, 10_000),
        ("/libs/a/two.jar", 2, 20_000),
        ("/libs/b/three.jar", 3, 30_000),
        ("/docs/guide.pdf", 4, 5_000),
        // The same bytes again: logical size grows, physical does not.
        ("/docs/copy-of-one.jar", 1, 10_000),
    ] {
        let r = c
            .put(s.url(path))
            .body(bytes(seed, len))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }

    // Without credentials the page is refused with a challenge a browser answers.
    let r = reqwest::get(s.url("/ui/storage")).await.expect("page");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = reqwest::get(s.url("/ui/assets/no-such.js"))
        .await
        .expect("asset");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Under the context path Artifactory's clients use, too.
    let r = c
        .get(s.url("/artifactory/ui/storage"))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), StatusCode::OK);

    let screenshot = dir.path().join("dashboard.png");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard/check.cjs");
    let mut browser = tokio::process::Command::new(&node)
        .arg(&script)
        .arg(s.url("/ui/storage?every=1"))
        .arg(&s.token)
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut lines = BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the browser answers within 60 s")
            .expect("read")
            .expect("a line from the browser")
    };
    assert_eq!(next().await, "READY");
    // Deploys while the page is open: its deploy rate must show them.
    for i in 0..5 {
        let r = c
            .put(s.url(&format!("/libs/c/{i}.bin")))
            .body(bytes(10 + i, 1_000))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let mut stdin = browser.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").await.expect("go");
    drop(stdin);
    let report: Value = serde_json::from_str(&next().await).expect("the browser's report");
    let status = tokio::time::timeout(Duration::from_secs(30), browser.wait())
        .await
        .expect("the browser exits")
        .expect("wait");
    assert!(status.success(), "{status}");

    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "no error in the page"
    );
    let policy = report["headers"]["content-security-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(policy.contains("script-src 'self'"), "{policy}");

    // The repositories and sizes, as /api/storageinfo reports them now.
    let info = s.storage_info().await;
    let mut expected: Vec<(String, u64, u64, String)> = info["repositoriesSummaryList"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| {
            (
                r["repoKey"].as_str().expect("key").to_string(),
                r["filesCount"].as_u64().expect("files"),
                r["usedSpaceInBytes"].as_u64().expect("bytes"),
                r["usedSpace"].as_str().expect("size").to_string(),
            )
        })
        .collect();
    let mut shown: Vec<(String, u64, u64, String)> = report["repositories"]
        .as_array()
        .expect("the page's repositories")
        .iter()
        .map(|r| {
            (
                r["repoKey"].as_str().expect("key").to_string(),
                r["files"].as_u64().expect("files"),
                r["bytes"].as_u64().expect("bytes"),
                r["shown"].as_str().expect("shown").to_string(),
            )
        })
        .collect();
    expected.sort();
    shown.sort();
    assert_eq!(shown, expected, "{report}");
    assert_eq!(expected.len(), 2);
    assert_eq!(
        shown.iter().find(|r| r.0 == "libs").map(|r| (r.1, r.2)),
        Some((8, 65_000))
    );
    let summary = &info["binariesSummary"];
    assert_eq!(
        report["summary"]["artifacts-count"],
        summary["artifactsCount"]
    );
    assert_eq!(
        report["summary"]["artifacts-size"],
        summary["artifactsSize"]
    );
    assert_eq!(
        report["summary"]["binaries-count"],
        summary["binariesCount"]
    );
    assert_eq!(report["summary"]["binaries-size"], summary["binariesSize"]);
    assert_eq!(
        report["summary"]["dedup-ratio"],
        format!(
            "{:.2}×",
            summary["dedupRatio"].as_f64().expect("dedup ratio")
        )
    );

    // The deploys made while it was open are in its deploy rate, and the chart drew them.
    let rates: Vec<f64> = report["series"]["deploys"]
        .as_array()
        .expect("deploy rates")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(rates.iter().any(|r| *r > 0.0), "{rates:?}");
    let deploys_chart = report["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .find(|c| c["id"] == "rates-chart")
        .expect("the rates chart");
    assert!(
        deploys_chart["painted"].as_u64() > Some(50),
        "the deploy line is drawn: {deploys_chart}"
    );

    // A full-page screenshot of the rendered page.
    let png = std::fs::read(&screenshot).expect("screenshot");
    let (width, height) = png_size(&png);
    assert_eq!(width, 1280);
    assert!(height >= 1000, "{height}");
    assert!(
        png.len() > 30_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
}
