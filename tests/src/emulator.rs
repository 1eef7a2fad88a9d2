//! A server process of a test's own (a private fake-gcs-server or Azurite that an outage test
//! stops and starts again): spawned with its output in a log file, ready when its address
//! answers HTTP, stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Emulator {
    /// Spawns `program args…` (logging to `dir/<name>-<port>.log`) and waits until
    /// `http://127.0.0.1:<port><probe>` answers at all.
    pub async fn start(
        dir: &Path,
        name: &str,
        port: u16,
        program: &str,
        args: &[String],
        probe: &str,
    ) -> Self {
        let url = format!("http://127.0.0.1:{port}{probe}");
        Self::start_until(dir, name, port, program, args, || async {
            reqwest::get(&url).await.is_ok()
        })
        .await
    }

    /// Like [`Emulator::start`], ready once the port accepts connections: for a server every
    /// path of which does work (the Lambda emulator invokes a function on any path).
    pub async fn start_listening(
        dir: &Path,
        name: &str,
        port: u16,
        program: &str,
        args: &[String],
    ) -> Self {
        Self::start_until(dir, name, port, program, args, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
    }

    async fn start_until<F, Fut>(
        dir: &Path,
        name: &str,
        port: u16,
        program: &str,
        args: &[String],
        ready: F,
    ) -> Self
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let log = dir.join(format!("{name}-{port}.log"));
        let file = std::fs::File::create(&log).expect("emulator log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let mut emulator = Self { child, port, log };
        for _ in 0..300 {
            if ready().await {
                return emulator;
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                panic!(
                    "{name} exited with {status}; see {}",
                    emulator.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{name} was not ready within 30 s; see {}",
            emulator.log.display()
        );
    }

    /// Stops it at once (SIGKILL, by PID).
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill emulator");
    }
}
