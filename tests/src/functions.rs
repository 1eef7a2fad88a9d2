//! The function binaries (`upload`, `download`, `metadata`) as a test or a benchmark deploys
//! them: under the real Lambda Runtime API emulation of `cargo lambda watch --only-lambda-apis`
//! (requests go to its function URLs `/lambda-url/<function>/…`, which it turns into API
//! Gateway v2 / function URL events), or in container mode, each on a port of its own. Every
//! process is started here and stopped by its PID (killed on drop).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::emulator::Emulator;

/// The three functions.
pub const FUNCTIONS: [&str; 3] = ["upload", "download", "metadata"];

/// The `cargo-lambda` executable scripts/test installs; without it a failure under CI and a
/// loud skip (`None`) elsewhere.
pub fn cargo_lambda() -> Option<String> {
    crate::required_env("STOWAGE_TEST_CARGO_LAMBDA", "cargo-lambda")
}

/// How the functions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Lambda,
    Container,
}

/// One running function process.
#[derive(Debug)]
struct Function {
    name: &'static str,
    child: Child,
    /// Container mode: `http://127.0.0.1:PORT`.
    base: Option<String>,
    /// From spawn to the first answer of its ping.
    cold_start: Duration,
}

/// The three functions in one mode, sharing one database and one bucket prefix.
#[derive(Debug)]
pub struct Deployment {
    pub mode: Mode,
    functions: Vec<Function>,
    /// Lambda mode: the emulator (`cargo lambda watch`).
    watch: Option<Emulator>,
    watch_base: Option<String>,
    log_dir: PathBuf,
    /// Where the function binaries are (default: beside this test, `workspace_bin`).
    binaries: Option<PathBuf>,
}

impl Deployment {
    /// Starts the three functions in `mode` with `env` (their whole configuration: the
    /// environment is all a Lambda function gets). `cargo_lambda` is needed in Lambda mode.
    pub async fn start(
        mode: Mode,
        dir: &Path,
        env: &[(String, String)],
        cargo_lambda: Option<&str>,
    ) -> Self {
        Self::start_from(mode, dir, env, cargo_lambda, None).await
    }

    /// Like [`Deployment::start`], with the function binaries from `binaries` (a directory
    /// holding `upload`, `download` and `metadata`: the Lambda zips' own builds, say) when given.
    pub async fn start_from(
        mode: Mode,
        dir: &Path,
        env: &[(String, String)],
        cargo_lambda: Option<&str>,
        binaries: Option<&Path>,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let mut deployment = Deployment {
            mode,
            functions: Vec::new(),
            watch: None,
            watch_base: None,
            log_dir: dir.to_path_buf(),
            binaries: binaries.map(Path::to_path_buf),
        };
        if mode == Mode::Lambda {
            let program = cargo_lambda.expect("cargo-lambda for Lambda mode");
            let port = crate::free_port();
            let args: Vec<String> = [
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
            deployment.watch =
                Some(Emulator::start_listening(dir, "cargo-lambda", port, program, &args).await);
            deployment.watch_base = Some(format!("http://127.0.0.1:{port}"));
        }
        for name in FUNCTIONS {
            let function = deployment.spawn(name, env).await;
            deployment.functions.push(function);
        }
        deployment
    }

    async fn spawn(&self, name: &'static str, env: &[(String, String)]) -> Function {
        let log = self
            .log_dir
            .join(format!("{name}-{:?}.log", self.mode).to_lowercase());
        let program = self
            .binaries
            .as_ref()
            .map_or_else(|| crate::workspace_bin(name), |dir| dir.join(name));
        let mut cmd = Command::new(program);
        cmd.env_remove("STOWAGE_CONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        if let Some(watch) = &self.watch_base {
            // What Lambda sets for a function; the runtime API path names the function.
            cmd.env("AWS_LAMBDA_RUNTIME_API", format!("{watch}/.rt/{name}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024");
        } else {
            cmd.env("STOWAGE_LISTEN", "127.0.0.1:0");
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = if self.watch_base.is_some() {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            None
        } else {
            let announced = tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some((_, addr)) = line.split_once(" listening on ") {
                        return Some(addr.trim().to_string());
                    }
                }
                None
            })
            .await
            .ok()
            .flatten();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Some(announced.unwrap_or_else(|| {
                panic!(
                    "{name} did not listen; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            }))
        };
        let mut function = Function {
            name,
            child,
            base,
            cold_start: Duration::ZERO,
        };
        let ping = self.base_of(&function) + "/api/system/ping";
        let client = reqwest::Client::new();
        for _ in 0..600 {
            let answer = client
                .get(&ping)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                function.cold_start = started.elapsed();
                return function;
            }
            if let Ok(Some(status)) = function.child.try_wait() {
                panic!(
                    "{name} ({:?}) exited with {status}; its log:\n{}",
                    self.mode,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{name} ({:?}) did not answer its ping within 60 s; see {}",
            self.mode,
            log.display()
        );
    }

    fn base_of(&self, function: &Function) -> String {
        match (&function.base, &self.watch_base) {
            (Some(base), _) => base.clone(),
            (None, Some(watch)) => format!("{watch}/lambda-url/{}", function.name),
            (None, None) => unreachable!("a function has a port or the emulator"),
        }
    }

    /// The URL of `path` on `function` (`upload`, `download` or `metadata`).
    pub fn url(&self, function: &str, path: &str) -> String {
        let f = self
            .functions
            .iter()
            .find(|f| f.name == function)
            .unwrap_or_else(|| panic!("no function {function}"));
        format!("{}{path}", self.base_of(f))
    }

    /// Each function's cold start: from spawning the process to the first answer of its ping
    /// (through the emulator in Lambda mode).
    pub fn cold_starts(&self) -> Vec<(&'static str, Duration)> {
        self.functions
            .iter()
            .map(|f| (f.name, f.cold_start))
            .collect()
    }

    /// Stops one function and starts it again (a new cold start), returning the new cold start.
    pub async fn restart(&mut self, name: &str, env: &[(String, String)]) -> Duration {
        let index = self
            .functions
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("no function {name}"));
        let mut old = self.functions.remove(index);
        old.child.kill().await.expect("kill function");
        let name = old.name;
        let function = self.spawn(name, env).await;
        let cold = function.cold_start;
        self.functions.insert(index, function);
        cold
    }

    /// Stops every process (by PID).
    pub async fn stop(mut self) {
        for f in &mut self.functions {
            let _ = f.child.kill().await;
        }
        if let Some(watch) = self.watch.take() {
            watch.kill().await;
        }
    }
}

/// Runs `stowage migrate` with `env`, the way an operator prepares the database for the
/// functions; panics with its output if it fails.
pub async fn migrate(env: &[(String, String)]) {
    let output = Command::new(crate::stowage_bin())
        .arg("migrate")
        .env_remove("STOWAGE_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run stowage migrate");
    assert!(
        output.status.success(),
        "stowage migrate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The environment of a deployment on LocalStack (what the Terraform module gives each
/// function, with LocalStack's keys): the `s3-storage-v3-direct` template on `bucket`, the
/// database, the admin token (a token or a secret reference) for `stowage migrate`, and the
/// Lambda payload limits, set in container mode too so both modes answer alike.
pub fn environment(
    endpoint: &str,
    bucket: &str,
    database_url: &str,
    data_dir: &str,
    admin_token: &str,
) -> Vec<(String, String)> {
    [
        ("STOWAGE_DATABASE_URL", database_url),
        ("STOWAGE_DATA_DIR", data_dir),
        ("STOWAGE_FILESTORE_TEMPLATE", "s3-storage-v3-direct"),
        ("STOWAGE_S3_BUCKET", bucket),
        ("STOWAGE_S3_REGION", "us-east-1"),
        ("STOWAGE_S3_ENDPOINT", endpoint),
        ("STOWAGE_S3_PATH_STYLE", "true"),
        ("STOWAGE_ADMIN_TOKEN", admin_token),
        ("STOWAGE_MAX_REQUEST_BODY", "4194304"),
        ("STOWAGE_MAX_RESPONSE_BODY", "4194304"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect()
}
