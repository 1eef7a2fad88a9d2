//! The testcontainers switch (`STOWAGE_TEST_LOCALSTACK=container`, tests/src/localstack.rs).
//! These machines have no Docker engine, so the suites run LocalStack on the host; what is
//! checked here is the container path's failure: asked for a container where no Docker engine
//! answers, `localstack-container` (what localstack/lib.sh runs in that mode) stops at once with
//! a reason a person can act on, instead of hanging or leaving a half-started run.

use std::process::Output;
use std::time::Duration;

use stowage_tests::{free_port, workspace_bin};
use tokio::process::Command;

async fn localstack_container(args: &[String], docker_host: &str) -> Output {
    let run = Command::new(workspace_bin("localstack-container"))
        .args(args)
        .env("DOCKER_HOST", docker_host)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("localstack-container gave up within 60 s")
        .expect("run localstack-container")
}

#[tokio::test]
async fn container_mode_without_a_docker_engine_says_what_is_missing() {
    let docker_host = format!("tcp://127.0.0.1:{}", free_port());
    let output = localstack_container(&[free_port().to_string()], &docker_host).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not start LocalStack's container"),
        "{stderr}"
    );
    assert!(stderr.contains("needs a Docker engine"), "{stderr}");
    assert!(
        stderr.contains(&docker_host),
        "names where it looked: {stderr}"
    );
    assert!(
        stderr.contains("leave STOWAGE_TEST_LOCALSTACK unset"),
        "says how to run without Docker: {stderr}"
    );
    assert!(output.stdout.is_empty(), "reported no container");
}

#[tokio::test]
async fn a_bad_port_is_a_usage_error() {
    let output = localstack_container(&["4566x".to_string()], "tcp://127.0.0.1:1").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"4566x\" is not a port"), "{stderr}");
    assert!(
        stderr.contains("usage: localstack-container PORT"),
        "{stderr}"
    );
}
