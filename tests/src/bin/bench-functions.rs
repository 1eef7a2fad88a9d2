//! `cargo run --release -p stowage-tests --bin bench-functions`: the function binaries' cold
//! start (process start to first answer: under cargo-lambda's Lambda Runtime API emulation and
//! in container mode), their binary and zip sizes, and warm request latency through the Lambda
//! emulation against container mode, in one run. Needs LocalStack and cargo-lambda as the
//! tests do (`STOWAGE_TEST_S3_ENDPOINT`, `STOWAGE_TEST_CARGO_LAMBDA`); measures the binaries
//! built beside it (so `--release` measures release binaries: `cargo build --release --bins`
//! first), or with `--binaries DIR` those in DIR (the Lambda zips' own builds, which
//! `infra/package-lambdas` leaves in target/x86_64-unknown-linux-gnu/lambda-zip), and the zips it
//! left in target/lambda.

use std::time::{Duration, Instant};

use stowage_tests::functions::{self, Deployment, FUNCTIONS, Mode};
use stowage_tests::{bytes, s3, sha256_hex};

const TOKEN: &str = "stw_bench-functions-token-0123456789abcdef";
const COLD_STARTS: usize = 5;
const WARM_REQUESTS: usize = 300;
/// The warm proxied download. Small on purpose: cargo-lambda 1.9.2's emulator answers the
/// runtime's `POST .../response` before it has read the body, and the function's HTTP client
/// may then stop sending a body larger than one socket write (about 16 KiB here), so the
/// emulator now and then loses the answer. 4 KiB (about 5.5 KiB of base64 in the event) is
/// sent in one write. Lambda itself reads the whole body first. docs/benchmarks.md has more.
const WARM_DOWNLOAD: usize = 4 * 1024;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and 95th percentile in ms.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        ms(samples[i])
    };
    (at(0.5), at(0.95))
}

/// `WARM_REQUESTS` timed GETs of `url`. A failed answer stops the run with its status, headers
/// and body: a benchmark of errors measures nothing.
async fn warm(client: &reqwest::Client, url: &str) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(WARM_REQUESTS);
    for i in 0..WARM_REQUESTS {
        let started = Instant::now();
        let response = client
            .get(url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}, request {i}: {e:?}"));
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let body = response.bytes().await.expect("body");
        samples.push(started.elapsed());
        assert!(
            status.is_success(),
            "{url}, request {i}: {status}\n{headers}\n{}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
    }
    samples
}

#[tokio::main]
async fn main() {
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let Some(cargo_lambda) = functions::cargo_lambda() else {
        return;
    };
    let binaries = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => None,
        [flag, dir] if flag == "--binaries" => Some(std::path::PathBuf::from(dir)),
        _ => {
            eprintln!("usage: bench-functions [--binaries DIR]");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket_name();
    s3::create_bucket(&endpoint, &bucket, dir.path()).await;
    let measured = binaries.as_ref().map_or_else(
        || {
            if cfg!(debug_assertions) {
                "debug binaries".to_string()
            } else {
                "release binaries".to_string()
            }
        },
        |dir| format!("binaries in {}", dir.display()),
    );
    println!(
        "# bench-functions ({measured}; {COLD_STARTS} cold starts and {WARM_REQUESTS} warm requests per case)\n"
    );

    println!(
        "## Sizes\n\n| function | binary | stripped zip (infra/package-lambdas) |\n|---|---|---|"
    );
    for name in FUNCTIONS {
        let binary =
            std::fs::metadata(functions::binary(binaries.as_deref(), name)).map_or(0, |m| m.len());
        let zip = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/lambda")
            .join(name)
            .join("bootstrap.zip");
        let zip = std::fs::metadata(&zip).map_or_else(
            |_| "not built".to_string(),
            |m| format!("{:.1} MiB", m.len() as f64 / 1_048_576.0),
        );
        println!(
            "| {name} | {:.1} MiB | {zip} |",
            binary as f64 / 1_048_576.0
        );
    }

    let mut deployments = Vec::new();
    let mut envs = Vec::new();
    for (mode, name) in [(Mode::Lambda, "lambda"), (Mode::Container, "container")] {
        let root = dir.path().join(name);
        let database_url = stowage_tests::database_url(&root).await;
        let data_dir = root.join("data").display().to_string();
        let mut env = functions::environment(&endpoint, &bucket, &database_url, &data_dir, TOKEN);
        env.push(("STOWAGE_LOG".into(), "warn".into()));
        functions::migrate(&env).await;
        deployments.push(
            Deployment::start_from(mode, &root, &env, Some(&cargo_lambda), binaries.as_deref())
                .await,
        );
        envs.push(env);
    }

    println!(
        "\n## Cold start: process start to the first answer (ms, median / max of {COLD_STARTS})\n"
    );
    println!("| function | Lambda emulation | container |\n|---|---|---|");
    for name in FUNCTIONS {
        let mut row = Vec::new();
        for (deployment, env) in deployments.iter_mut().zip(&envs) {
            let mut samples = Vec::new();
            for _ in 0..COLD_STARTS {
                samples.push(deployment.restart(name, env).await);
            }
            samples.sort();
            row.push(format!(
                "{:.0} / {:.0}",
                ms(samples[samples.len() / 2]),
                ms(samples[samples.len() - 1])
            ));
        }
        println!("| {name} | {} | {} |", row[0], row[1]);
    }

    // Warm: a small artifact, deployed in both, then the same GETs to each.
    let client = reqwest::Client::new();
    let data = bytes(7, WARM_DOWNLOAD);
    for deployment in &deployments {
        let r = client
            .put(deployment.url("metadata", "/api/repositories/libs"))
            .bearer_auth(TOKEN)
            .body("{}")
            .send()
            .await
            .expect("repo");
        assert!(r.status().is_success());
        let r = client
            .put(deployment.url("upload", "/libs/warm.bin"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/octet-stream")
            .header("x-checksum-sha256", sha256_hex(&data))
            .body(data.clone())
            .send()
            .await
            .expect("deploy");
        assert!(r.status().is_success(), "{}", r.status());
    }
    println!("\n## Warm requests (ms, median / p95)\n");
    println!("| request | Lambda emulation | container | ratio of medians |\n|---|---|---|---|");
    let download = format!("download {} KiB (proxied)", WARM_DOWNLOAD / 1024);
    for (label, function, path) in [
        ("ping (metadata)", "metadata", "/api/system/ping"),
        (
            "storage info (metadata, one SQL query)",
            "metadata",
            "/api/storage/libs/warm.bin",
        ),
        (download.as_str(), "download", "/libs/warm.bin"),
    ] {
        let lambda = summary(warm(&client, &deployments[0].url(function, path)).await);
        let container = summary(warm(&client, &deployments[1].url(function, path)).await);
        println!(
            "| {label} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}× |",
            lambda.0,
            lambda.1,
            container.0,
            container.1,
            lambda.0 / container.0
        );
    }
    for deployment in deployments {
        deployment.stop().await;
    }
}
