//! LocalStack as a container, through testcontainers' LocalStack module: what
//! `localstack/lib.sh` runs instead of the host process when `STOWAGE_TEST_LOCALSTACK=container`.
//!
//!   localstack-container PORT [SERVICES]     (default SERVICES: s3,secretsmanager,ssm)
//!
//! Publishes LocalStack on 127.0.0.1:PORT, prints the container's id, and keeps it until
//! SIGTERM or SIGINT, then removes it (a static handle in the test processes would never be
//! dropped, and the container would outlive the run). Exits non-zero, with the reason, when the
//! container cannot start (no Docker engine, say).

use std::process::ExitCode;

use stowage_tests::localstack::{SERVICES, start_container};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: localstack-container PORT [SERVICES]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port, services) = match args.as_slice() {
        [port] => (port, SERVICES),
        [port, services] => (port, services.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("localstack-container: {port:?} is not a port\n{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        eprintln!("localstack-container: cannot listen for SIGTERM");
        return ExitCode::FAILURE;
    };
    let container = match start_container(port, services).await {
        Ok(container) => container,
        Err(message) => {
            eprintln!("localstack-container: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "LocalStack container {} ({services}) on 127.0.0.1:{port}",
        container.id()
    );
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    match container.rm().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("localstack-container: could not remove the container: {e}");
            ExitCode::FAILURE
        }
    }
}
