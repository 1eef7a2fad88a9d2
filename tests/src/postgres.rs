//! A PostgreSQL server owned by one test (its own data directory and port, stopped by its
//! postmaster's PID): a fresh cluster the test can stop and restart (the outage tests), or a
//! hot standby of the shared test server, made with `pg_basebackup -R` (the standby tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL server owned by a test.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
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

/// `dir/pg`, made and given to the postgres user when this is root.
fn server_dir(dir: &Path) -> PathBuf {
    let dir = dir.join("pg");
    std::fs::create_dir_all(&dir).expect("pg dir");
    if rustix::process::getuid().is_root() {
        run(Command::new("chown").arg("postgres").arg(&dir));
    }
    dir
}

impl PrivatePostgres {
    /// A fresh cluster under `dir`, started. `None` (a loud skip) when PostgreSQL is not
    /// installed, outside CI; a failure under CI.
    pub fn start(dir: &Path) -> Option<Self> {
        if Command::new("initdb").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but initdb is not installed"
            );
            eprintln!("!!! SKIPPED: this test needs PostgreSQL's initdb and pg_ctl");
            return None;
        }
        let dir = server_dir(dir);
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data")));
        Some(Self::started(dir))
    }

    /// A hot standby of the server at `host_port` (a copy by `pg_basebackup -R`, streaming
    /// from it), under `dir`, started.
    pub fn replica_of(host_port: &str, dir: &Path) -> Self {
        let (host, port) = host_port.split_once(':').expect("host:port");
        let dir = server_dir(dir);
        run(as_postgres("pg_basebackup")
            .args([
                "-h", host, "-p", port, "-U", "postgres", "-R", "-X", "stream",
            ])
            .args(["-c", "fast", "-D"])
            .arg(dir.join("data")));
        Self::started(dir)
    }

    fn started(dir: PathBuf) -> Self {
        let mut pg = Self {
            dir,
            port: crate::free_port(),
            pid: None,
        };
        pg.start_server();
        pg
    }

    /// Starts the server (again) on its port; returns once it takes connections.
    pub fn start_server(&mut self) {
        run(as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            // A standby needs at least its primary's max_connections (scripts/lib/postgres.sh
            // gives the shared server 300).
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=300",
                self.port,
                self.dir.display()
            ))
            .arg("start"));
        let pidfile =
            std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        self.pid = pidfile.lines().next().and_then(|l| l.trim().parse().ok());
    }

    /// Immediate shutdown by PID, as a crash or a failover would look.
    pub fn stop(&mut self) {
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

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
