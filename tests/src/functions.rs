//! The function binaries (`upload`, `download`, `metadata`) as a test or a benchmark deploys
//! them: under the real Lambda Runtime API emulation of `cargo lambda watch --only-lambda-apis`
//! (requests go to its function URLs `/lambda-url/<function>/…`, which it turns into API
//! Gateway v2 / function URL events), or in container mode, each on a port of its own. Every
//! process is started here and stopped by its PID (killed on drop).
//!
//! In Lambda mode each function has an emulator of its own, replaced with it when the function
//! is restarted: a killed runtime's pending `GET /runtime/invocation/next` can stay queued in
//! the emulator, which then hands the next request to the dead process (it answers 500 much
//! later). Lambda itself never kills a runtime that way.

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

/// A function's binary: in `binaries` when given, else the one cargo built beside this test.
pub fn binary(binaries: Option<&Path>, name: &str) -> PathBuf {
    binaries.map_or_else(|| crate::workspace_bin(name), |dir| dir.join(name))
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
    /// Lambda mode: its emulator (`cargo lambda watch`).
    watch: Option<Emulator>,
    /// `http://127.0.0.1:PORT` in container mode; the function URL
    /// `http://127.0.0.1:PORT/lambda-url/<name>` of its emulator in Lambda mode.
    base: String,
    /// From spawn to the first answer of its ping.
    cold_start: Duration,
}

/// The three functions in one mode, sharing one database and one bucket prefix.
#[derive(Debug)]
pub struct Deployment {
    pub mode: Mode,
    functions: Vec<Function>,
    /// Lambda mode: `cargo-lambda`.
    cargo_lambda: Option<String>,
    log_dir: PathBuf,
    /// Where the function binaries are (default: beside this test, `workspace_bin`).
    binaries: Option<PathBuf>,
}

impl Function {
    /// Stops the function and its emulator (by PID).
    async fn kill(mut self) {
        let _ = self.child.kill().await;
        if let Some(watch) = self.watch {
            watch.kill().await;
        }
    }
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
        let cargo_lambda = (mode == Mode::Lambda).then(|| {
            cargo_lambda
                .expect("cargo-lambda for Lambda mode")
                .to_string()
        });
        let mut deployment = Deployment {
            mode,
            functions: Vec::new(),
            cargo_lambda,
            log_dir: dir.to_path_buf(),
            binaries: binaries.map(Path::to_path_buf),
        };
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
        let program = binary(self.binaries.as_deref(), name);
        // Lambda mode: a fresh emulator, started before the clock runs (Lambda's own service
        // is there before a cold start begins).
        let watch = match &self.cargo_lambda {
            Some(cargo_lambda) => {
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
                let name = format!("cargo-lambda-{name}");
                Some(
                    Emulator::start_listening(&self.log_dir, &name, port, cargo_lambda, &args)
                        .await,
                )
            }
            None => None,
        };
        let mut cmd = Command::new(program);
        cmd.env_remove("STOWAGE_CONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        if let Some(watch) = &watch {
            // What Lambda sets for a function; the runtime API path names the function.
            let runtime_api = format!("http://127.0.0.1:{}/.rt/{name}", watch.port);
            cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
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
        let base = if let Some(watch) = &watch {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            format!("http://127.0.0.1:{}/lambda-url/{name}", watch.port)
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
            announced.unwrap_or_else(|| {
                panic!(
                    "{name} did not listen; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
        };
        let mut function = Function {
            name,
            child,
            watch,
            base,
            cold_start: Duration::ZERO,
        };
        let ping = format!("{}/api/system/ping", function.base);
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

    /// The URL of `path` on `function` (`upload`, `download` or `metadata`).
    pub fn url(&self, function: &str, path: &str) -> String {
        let f = self
            .functions
            .iter()
            .find(|f| f.name == function)
            .unwrap_or_else(|| panic!("no function {function}"));
        format!("{}{path}", f.base)
    }

    /// Invokes `function` with `event` the way a schedule or `aws lambda invoke` does (the
    /// Invoke API of the function's emulator): Lambda mode only. The status and the body.
    pub async fn invoke(&self, function: &str, event: &serde_json::Value) -> (u16, String) {
        let f = self
            .functions
            .iter()
            .find(|f| f.name == function)
            .unwrap_or_else(|| panic!("no function {function}"));
        let watch = f.watch.as_ref().expect("invoke needs Lambda mode");
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            watch.port
        );
        let answer = reqwest::Client::new()
            .post(&url)
            .json(event)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke {function}: {e}"));
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
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
        let old = self.functions.remove(index);
        let name = old.name;
        old.kill().await;
        let function = self.spawn(name, env).await;
        let cold = function.cold_start;
        self.functions.insert(index, function);
        cold
    }

    /// Stops every process (by PID).
    pub async fn stop(self) {
        for f in self.functions {
            f.kill().await;
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
