//! Test support: starts the real `stowage` binary on a loopback port with a fresh data
//! directory, and stops it by its PID. Integration tests talk to it over real sockets only.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod azure;
pub mod corrupting;
pub mod emulator;
pub mod flaky;
pub mod functions;
pub mod gcs;
pub mod localstack;
pub mod nginx;
pub mod postgres;
pub mod s3;

/// A setting scripts/test exports for the suites (a server's address, a tool's path); without
/// it a failure under CI and a loud skip (`None`) elsewhere. `what` names what is missing.
pub fn required_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {var} is not: run the tests through scripts/test"
            );
            eprintln!("!!! SKIPPED: this test needs {what} ({var}); run it through scripts/test");
            None
        }
    }
}

/// Sends SIGTERM to a child process by its PID; `false` when it was already reaped or the
/// signal could not be sent.
pub fn sigterm(child: &Child) -> bool {
    signal(child, rustix::process::Signal::TERM)
}

/// Sends `signal` to a child process by its PID; `false` as for [`sigterm`].
fn signal(child: &Child, signal: rustix::process::Signal) -> bool {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| rustix::process::kill_process(pid, signal).is_ok())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The database engine the suites run on: `STOWAGE_TEST_DATABASE` = `sqlite` (default),
/// `postgres` or `mysql` (then `STOWAGE_TEST_POSTGRES_URL` or `STOWAGE_TEST_MYSQL_URL` must name
/// a server; `scripts/test` starts both).
pub fn engine() -> String {
    std::env::var("STOWAGE_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into())
}

/// A fresh, empty database for one test, remembered in `dir/database-url` so that a restart
/// in the same `dir` finds the same database.
pub async fn database_url(dir: &Path) -> String {
    database_url_on(dir, &engine()).await
}

/// A fresh PostgreSQL database for a test that needs several processes on one database (the
/// cluster tests). Without `STOWAGE_TEST_POSTGRES_URL` that is a failure under `CI`, and a loud
/// skip (`None`) elsewhere.
pub async fn postgres_database(dir: &Path) -> Option<String> {
    if std::env::var_os("STOWAGE_TEST_POSTGRES_URL").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but STOWAGE_TEST_POSTGRES_URL is not: run the tests through scripts/test"
        );
        eprintln!("!!! SKIPPED: this test needs PostgreSQL; run it through scripts/test");
        return None;
    }
    Some(database_url_on(dir, "postgres").await)
}

/// Creates a database with a random name on the server whose admin URL is in `admin_var`,
/// and returns its URL.
async fn create_database(admin_var: &str) -> String {
    use sqlx::Connection;
    let admin = std::env::var(admin_var).unwrap_or_else(|_| {
        panic!(
            "{admin_var} is not set: run the tests through scripts/test, which starts the server"
        )
    });
    let name = format!("stowage_{:016x}", rand::random::<u64>());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// A fresh database on `engine` (`sqlite`, `postgres`, `mysql`), remembered in `dir`.
pub async fn database_url_on(dir: &Path, engine: &str) -> String {
    let remembered = dir.join("database-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return url;
    }
    let url = match engine {
        "sqlite" => format!("sqlite://{}", dir.join("data").join("stowage.db").display()),
        "postgres" => create_database("STOWAGE_TEST_POSTGRES_URL").await,
        "mysql" => create_database("STOWAGE_TEST_MYSQL_URL").await,
        other => panic!("unknown STOWAGE_TEST_DATABASE {other:?}: use sqlite, postgres or mysql"),
    };
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::write(&remembered, &url).expect("remember the database URL");
    url
}

/// The `stowage` binary: `STOWAGE_BIN`, or the one cargo built beside this test.
pub fn stowage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STOWAGE_BIN") {
        return PathBuf::from(bin);
    }
    workspace_bin("stowage")
}

/// A binary of the workspace (`stowage`, `upload`, `download`, `metadata`) that cargo built
/// beside this test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>; a bin of this crate runs from
    // target/<profile>/ itself.
    let profile_dir = exe
        .parent()
        .map(|dir| {
            if dir.ends_with("deps") {
                dir.parent().unwrap_or(dir)
            } else {
                dir
            }
        })
        .expect("target directory");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running `stowage serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    /// The metadata database it uses.
    pub database_url: String,
    /// What the server printed on standard output before it listened (the token banner).
    pub banner: String,
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// A configuration file's content.
    pub config: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The admin token, for a node joining a cluster whose first node created it.
    pub token: Option<String>,
    /// The database, for a node joining a cluster (default: a fresh one for `dir`).
    pub database_url: Option<String>,
}

impl Server {
    /// Starts a server on a fresh data directory inside `dir`.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, Options::default()).await
    }

    /// Starts a server whose data directory is `dir/data` (reused if it exists).
    pub async fn start_with(dir: &Path, options: Options) -> Self {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => database_url(dir).await,
        };
        let mut cmd = Command::new(stowage_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&database_url)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env_remove("STOWAGE_CONFIG")
            .env("STOWAGE_LOG", "info,stowage=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join("server.log"))
                    .expect("log file"),
            )
            .kill_on_drop(true);
        if let Some(config) = &options.config {
            let path = dir.join("stowage.toml");
            std::fs::write(&path, config).expect("config file");
            cmd.arg("--config").arg(path);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stowage");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = String::new();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(addr) = line.strip_prefix("stowage listening on ") {
                    return addr.trim().to_string();
                }
                banner.push_str(&line);
                banner.push('\n');
            }
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("stowage exited before listening; its log:\n{log}");
        })
        .await
        .expect("stowage did not listen within 60 s");
        // Keep draining standard output so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let token = match &options.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(data_dir.join("admin.token"))
                .expect("admin.token")
                .trim()
                .to_string(),
        };
        Server {
            child,
            base,
            token,
            data_dir,
            database_url,
            banner,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `host:port` the server listens on.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// A client that sends the admin token.
    pub fn admin(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().expect("header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// `GET /api/storageinfo`.
    pub async fn storage_info(&self) -> serde_json::Value {
        self.admin()
            .get(self.url("/api/storageinfo"))
            .send()
            .await
            .expect("storageinfo")
            .json()
            .await
            .expect("storageinfo JSON")
    }

    /// How many binaries its eventual queue holds (`GET /api/storageinfo`).
    pub async fn queue_depth(&self) -> u64 {
        let info = self.storage_info().await;
        info["eventualQueue"]["depth"]
            .as_u64()
            .unwrap_or_else(|| panic!("no queue depth in {info}"))
    }

    /// Waits (up to 60 s) until its eventual queue is empty.
    pub async fn wait_for_empty_queue(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let depth = self.queue_depth().await;
            if depth == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the queue still holds {depth} binaries"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Raises a balancing pass of a sharded store (`POST /api/system/storage/optimize`) and
    /// waits for it to finish; returns its report.
    pub async fn balance(&self) -> serde_json::Value {
        // A mount that came back is noticed after its check period (the tests use 200 ms).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = self.storage_info().await["shards"]["balancing"]["last"].clone();
        let r = self
            .admin()
            .post(self.url("/api/system/storage/optimize"))
            .send()
            .await
            .expect("optimize");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::ACCEPTED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        for _ in 0..600 {
            let info = self.storage_info().await;
            let balancing = &info["shards"]["balancing"];
            if balancing["running"] == false
                && balancing["last"] != before
                && !balancing["last"].is_null()
            {
                return balancing["last"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("balancing did not finish: {}", self.storage_info().await);
    }

    /// GETs a path with the admin token and returns its body (any status).
    pub async fn body(&self, path: &str) -> bytes::Bytes {
        self.admin()
            .get(self.url(path))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
    }

    /// Creates a generic local repository.
    pub async fn create_repo(&self, key: &str) {
        let r = self
            .admin()
            .put(self.url(&format!("/api/repositories/{key}")))
            .send()
            .await
            .expect("create repo");
        assert!(r.status().is_success(), "create repo {key}: {}", r.status());
    }

    /// Creates a local repository whose downloads redirect to signed URLs, whatever their size
    /// (`downloadRedirect`, `downloadRedirectMinSize = 0`).
    pub async fn create_redirecting_repo(&self, key: &str) {
        let r = self
            .admin()
            .put(self.url(&format!("/api/repositories/{key}")))
            .body(r#"{"rclass":"local","downloadRedirect":true,"downloadRedirectMinSize":0}"#)
            .send()
            .await
            .expect("create repo");
        assert!(r.status().is_success(), "create repo {key}: {}", r.status());
    }

    /// The PID, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    pub async fn stop(mut self) -> ExitStatus {
        assert!(sigterm(&self.child), "SIGTERM to stowage");
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                self.child.kill().await.expect("SIGKILL");
                panic!("stowage did not stop within 30 s of SIGTERM");
            }
        }
    }

    /// SIGKILL, as a crash: no cleanup, locks and leases left behind.
    pub async fn crash(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Runs `stowage ARGS` against this server's database and data directory (while it
    /// runs), with `stdin` as standard input: its exit status, stdout and stderr.
    pub async fn run_cli(&self, args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = Command::new(stowage_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--database-url")
            .arg(&self.database_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run stowage");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        let out = child.wait_with_output().await.expect("wait");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// [`Self::run_cli`], failing unless it succeeds: stdout and stderr.
    pub async fn cli(&self, args: &[&str], stdin: &str) -> (String, String) {
        let (status, stdout, stderr) = self.run_cli(args, stdin).await;
        assert!(status.success(), "stowage {args:?}: {stderr}");
        (stdout, stderr)
    }

    /// Freezes the process (SIGSTOP), as a long pause of its machine or runtime would.
    pub fn pause(&self) {
        assert!(
            signal(&self.child, rustix::process::Signal::STOP),
            "SIGSTOP to stowage"
        );
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        assert!(
            signal(&self.child, rustix::process::Signal::CONT),
            "SIGCONT to stowage"
        );
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        assert!(sigterm(&self.child), "SIGTERM to stowage");
    }

    /// Waits for the process to exit.
    pub async fn wait(mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stowage did not exit within 30 s")
            .expect("wait")
    }

    /// Files stored in the server's default filestore (binaries only, not staged uploads).
    pub fn stored_binaries(&self) -> Vec<PathBuf> {
        stored_binaries_in(&self.data_dir.join("filestore"))
    }

    /// Staged uploads in `_pre`.
    pub fn staged_files(&self) -> Vec<PathBuf> {
        files_below(&self.data_dir.join("filestore").join("_pre"))
    }
}

/// Binaries stored in a filestore directory (staged uploads in `_pre` left out).
pub fn stored_binaries_in(filestore: &Path) -> Vec<PathBuf> {
    files_below(filestore)
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_pre"))
        .collect()
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Runs `stowage serve` with this configuration, expecting it to refuse to start; returns
/// what it printed on standard error.
pub async fn serve_refused(dir: &Path, config: &str) -> String {
    let path = dir.join("refused.toml");
    std::fs::write(&path, config).expect("config file");
    let out = Command::new(stowage_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve started anyway: {stderr}");
    stderr
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Sends raw bytes on a new connection and returns the status code of the response (or `None`
/// if the server closed the connection without answering).
pub async fn raw_request(addr: &str, request: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}
