//! The database going away mid-flight: requests fail with a clear 503 (not a hang, not a crash),
//! the process stays up, and it recovers by itself when the database is back. Uses a private
//! PostgreSQL that the test stops and restarts (by PID and data directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stowage_tests::{Options, Server};

/// A PostgreSQL server owned by this test.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    pid: Option<i32>,
}

fn as_postgres(program: &str) -> Command {
    if rustix::process::getuid().is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    /// `None` (a loud skip) when PostgreSQL is not installed, outside CI; a failure under CI.
    fn start(dir: &Path) -> Option<Self> {
        if Command::new("initdb").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but initdb is not installed"
            );
            eprintln!("!!! SKIPPED: this test needs PostgreSQL's initdb and pg_ctl");
            return None;
        }
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).expect("pg dir");
        if rustix::process::getuid().is_root() {
            run(Command::new("chown").arg("postgres").arg(&dir));
        }
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data")));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut pg = Self {
            dir,
            port,
            pid: None,
        };
        pg.start_server();
        Some(pg)
    }

    fn start_server(&mut self) {
        run(as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .arg("start"));
        let pidfile =
            std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        self.pid = pidfile.lines().next().and_then(|l| l.trim().parse().ok());
    }

    /// Immediate shutdown by PID, as a crash or a failover would look.
    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let pid = rustix::process::Pid::from_raw(pid).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while rustix::process::test_kill_process(pid).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            // pg_ctl refuses to start while a stale pid file names a live process; ours is dead.
            let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
        }
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_heals_itself() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(mut pg) = PrivatePostgres::start(root.path()) else {
        return;
    };
    let config = "[database]\nacquire_timeout_secs = 2\n\n[cluster]\nheartbeat_secs = 1\n";
    let s = Server::start_with(
        root.path(),
        Options {
            config: Some(config.into()),
            database_url: Some(pg.url("postgres")),
            ..Options::default()
        },
    )
    .await;
    s.create_repo("libs").await;
    let c = s.admin();
    assert_eq!(
        c.put(s.url("/libs/a.txt"))
            .body("before")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::CREATED
    );

    pg.stop();
    for request in [
        c.get(s.url("/libs/a.txt")),
        c.put(s.url("/libs/b.txt")).body("during"),
    ] {
        let started = Instant::now();
        let r = request.send().await.expect("the server still answers");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
        // Within acquire_timeout_secs (2) and a second: a 503 that names the database,
        // not a wait for locks that blames another operation.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a 503 within the acquire timeout, not a hang: {:?}",
            started.elapsed()
        );
        let body: Value = r.json().await.expect("json");
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(
            message.contains("database") && message.contains("retry"),
            "{message}"
        );
    }
    let ping = reqwest::get(s.url("/api/system/ping")).await.expect("ping");
    assert_eq!(ping.status(), StatusCode::OK, "the process stays up");

    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.get(s.url("/libs/a.txt")).send().await.expect("get");
        if r.status() == StatusCode::OK {
            assert_eq!(r.text().await.expect("body"), "before");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover within 60 s: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        c.put(s.url("/libs/b.txt"))
            .body("after")
            .send()
            .await
            .expect("put")
            .status(),
        StatusCode::CREATED
    );
}
