//! The cluster's load balancer as a developer runs it: `infra/nginx/run PORT NODE_PORT…`
//! (nginx from Debian's packages, `STOWAGE_TEST_NGINX`, which scripts/test provides), stopped by
//! the script's PID with SIGTERM, on which the script stops nginx by its PID and removes its
//! files. Dropped without [`Balancer::stop`] (a failing test), it still gets that SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running `infra/nginx/run`.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    pub port: u16,
    /// nginx's own PID (the master process), as the script reports it.
    pub nginx_pid: u32,
    log: PathBuf,
}

impl Balancer {
    /// Starts nginx in front of the nodes on `node_ports`; `None` (a loud skip, or a failure
    /// under CI) without an nginx.
    pub async fn start(dir: &Path, node_ports: &[u16]) -> Option<Self> {
        let nginx = crate::required_env("STOWAGE_TEST_NGINX", "nginx")?;
        let port = crate::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/nginx/run");
        let log = dir.join(format!("nginx-{port}.log"));
        let file = std::fs::File::create(&log).expect("nginx log");
        let child = Command::new(script)
            .arg(port.to_string())
            .args(node_ports.iter().map(u16::to_string))
            .env("NGINX", nginx)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("run infra/nginx/run");
        let mut balancer = Self {
            child,
            port,
            nginx_pid: 0,
            log,
        };
        for _ in 0..100 {
            if let Some(pid) = balancer.reported_pid()
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                balancer.nginx_pid = pid;
                return Some(balancer);
            }
            if let Ok(Some(status)) = balancer.child.try_wait() {
                panic!(
                    "infra/nginx/run exited with {status}: {}",
                    balancer.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nginx was not listening within 10 s: {}",
            balancer.log_text()
        );
    }

    /// A URL through the balancer.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the script and nginx wrote.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the script, and waits for it to stop nginx and remove its files.
    pub async fn stop(mut self) {
        crate::sigterm(&self.child);
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("infra/nginx/run stopped within 15 s of SIGTERM")
            .expect("wait for infra/nginx/run");
        assert!(status.success(), "infra/nginx/run: {status}");
    }

    /// nginx's PID from the script's "nginx (pid N)" line.
    fn reported_pid(&self) -> Option<u32> {
        self.log_text()
            .split("nginx (pid ")
            .nth(1)?
            .split(')')
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::sigterm(&self.child);
        }
    }
}
