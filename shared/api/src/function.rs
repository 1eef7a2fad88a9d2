//! The one `main` of the function binaries (`functions/upload`, `functions/download`,
//! `functions/metadata`): configuration from the environment, clients and pools built once per
//! cold start, then either the AWS Lambda runtime (when `AWS_LAMBDA_RUNTIME_API` is set, as
//! Lambda sets it) or an HTTP server on a port (container mode). Both serve the same router, so
//! one request gets one response either way.
//!
//! A function is not a cluster node: it never registers, heart-beats or takes the primary
//! lease, so it runs no garbage collection or balancing of its own (`stowage gc`, a scheduled
//! task or an all-in-one container does). It applies no migrations: `stowage migrate` does,
//! once per release, and creates the admin token the functions check requests against.
//!
//! Environment, besides the `STOWAGE_*` settings of [`Config::apply_env`]:
//!
//! | variable                      | meaning                                                  |
//! |-------------------------------|----------------------------------------------------------|
//! | `STOWAGE_CONFIG`              | a TOML file (optional; the environment alone suffices)   |
//! | `STOWAGE_MAX_REQUEST_BODY`    | deploys above this many bytes get a 413 (Lambda default [`LAMBDA_MAX_BODY`]; `none` for no limit) |
//! | `STOWAGE_MAX_RESPONSE_BODY`   | downloads above this many bytes always redirect (same defaults) |
//! | `AWS_LAMBDA_RUNTIME_API`      | set by Lambda: run under the Lambda runtime              |

mod maintenance;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use stowage_core::Error;
use stowage_metadata::Metadata;
use tracing_subscriber::EnvFilter;

use stowage_config::Config;
use stowage_config::secrets::Secrets;
use stowage_service::auth::Auth;
use stowage_service::{Cluster, Stowage};

use crate::http::{AppState, Limits, Part, router_for};

/// The largest body a Lambda function takes or returns here: invocation payloads are capped
/// at 6 MB (6,291,456 bytes) each way, binary bodies travel base64-encoded (4/3 larger) inside
/// a JSON event with headers, which leaves about 4.5 MiB; 4 MiB keeps a margin.
pub const LAMBDA_MAX_BODY: u64 = 4 * 1024 * 1024;

/// Where a function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Under the Lambda runtime API.
    Lambda,
    /// An HTTP server on `listen` (a container, a developer's shell).
    Server,
}

impl Mode {
    /// Lambda when the Lambda runtime API is there.
    pub fn detect(env: &impl Fn(&str) -> Option<String>) -> Self {
        if env("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty()) {
            Mode::Lambda
        } else {
            Mode::Server
        }
    }
}

/// A size limit from the environment: bytes, `none`, or the mode's default.
fn limit(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    mode: Mode,
) -> Result<Option<u64>, Error> {
    match env(name) {
        None => Ok((mode == Mode::Lambda).then_some(LAMBDA_MAX_BODY)),
        Some(v) if v.eq_ignore_ascii_case("none") => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::InvalidInput(format!("{name}={v:?} must be a number of bytes or `none`"))
        }),
    }
}

/// Everything a function decides from its environment before it connects anywhere.
#[derive(Debug)]
pub struct FunctionConfig {
    pub part: Part,
    pub mode: Mode,
    pub limits: Limits,
    pub config: Config,
}

impl FunctionConfig {
    /// Reads `STOWAGE_CONFIG` (if set) and the environment; no I/O beyond that file.
    pub fn load(part: Part, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mode = Mode::detect(&env);
        let path = env("STOWAGE_CONFIG").map(PathBuf::from);
        let mut config = Config::load(path.as_deref(), &env)?;
        if mode == Mode::Lambda
            && env("STOWAGE_DATA_DIR").is_none()
            && config.data_dir.is_relative()
        {
            // The function's code directory is read-only; /tmp is what Lambda lets a function write.
            config.data_dir = PathBuf::from("/tmp/stowage-data");
        }
        if mode == Mode::Lambda && config.filestore.template.is_cluster() {
            return Err(Error::InvalidInput(format!(
                "filestore template \"{}\" keeps copies on the nodes' own disks and serves \
                 them to peers, which a Lambda function can neither keep nor serve: use a \
                 direct template, or run stowage serve as a container",
                config.filestore.template
            )));
        }
        if mode == Mode::Lambda && config.filestore.template.has_eventual_queue() {
            return Err(Error::InvalidInput(format!(
                "filestore template \"{}\" keeps a local upload queue, which a Lambda function \
                 loses when it is frozen or recycled: use a direct template \
                 (s3-storage-v3-direct, google-storage-direct, azure-blob-storage-direct, \
                 s3-sharding) or run the upload function as a container",
                config.filestore.template
            )));
        }
        let limits = Limits {
            max_request_body: limit(&env, "STOWAGE_MAX_REQUEST_BODY", mode)?,
            max_response_body: limit(&env, "STOWAGE_MAX_RESPONSE_BODY", mode)?,
        };
        Ok(Self {
            part,
            mode,
            limits,
            config,
        })
    }
}

/// A name for this instance in logs and `createdBy`-style records.
fn instance_id(part: Part, env: &impl Fn(&str) -> Option<String>) -> String {
    let instance = env("AWS_LAMBDA_LOG_STREAM_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| format!("{:08x}", rand::random::<u32>()));
    format!("{}-{instance}", part.name())
}

/// The whole `main` of a function binary: logging (`STOWAGE_LOG` filter; JSON under Lambda,
/// or with `STOWAGE_LOG_FORMAT=json`), the async runtime, [`run`], and an exit code.
pub fn main(part: Part) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let listen = env("STOWAGE_LISTEN").unwrap_or_else(|| "127.0.0.1:8081".into());
        return healthcheck(&listen);
    }
    let json = match env("STOWAGE_LOG_FORMAT").as_deref() {
        Some(f) => f.eq_ignore_ascii_case("json"),
        None => Mode::detect(&env) == Mode::Lambda,
    };
    init_tracing(json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "stowage {}: cannot start the async runtime: {e}",
                part.name()
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(part)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("stowage {}: {e}", part.name());
            ExitCode::FAILURE
        }
    }
}

/// `<binary> healthcheck`: asks the server on `listen` (a wildcard address means this host)
/// whether it is ready (`/api/v1/system/readiness`: the database, the backend, the locks, the
/// queue); exit status 0 when it answers 200. For container health checks in images that carry
/// no HTTP client: a node whose database is away is taken out of service.
pub fn healthcheck(listen: &str) -> ExitCode {
    use std::io::{Read, Write};
    let target = match listen.parse::<std::net::SocketAddr>() {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr
        }
        Err(_) => {
            eprintln!("healthcheck: STOWAGE_LISTEN={listen:?} is not an address");
            return ExitCode::FAILURE;
        }
    };
    // Readiness gives each part 2 s.
    let timeout = std::time::Duration::from_secs(4);
    let answer = std::net::TcpStream::connect_timeout(&target, timeout).and_then(|mut stream| {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /api/v1/system/readiness HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head)
    });
    match answer {
        Ok(head) if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!(
                "healthcheck: {target} answered {:?}",
                String::from_utf8_lossy(&head)
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {target}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `STOWAGE_LOG` (default `info`), as text or JSON lines; text
/// is coloured only on a terminal (a log file or a pipe gets no terminal codes).
pub fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("STOWAGE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Builds the clients and pools once, then serves `part` until the runtime or a signal ends it.
pub async fn run(part: Part) -> Result<(), Error> {
    let env = |k: &str| std::env::var(k).ok();
    let FunctionConfig {
        part,
        mode,
        limits,
        mut config,
    } = FunctionConfig::load(part, env)?;
    config.resolve_secrets(&Secrets::default()).await?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let metadata = Metadata::connect(&config.database_url(), &config.pool_settings()).await?;
    let filestore = stowage_config::filestore::build(&config).await?;
    let node_id = instance_id(part, &env);
    let stowage = Arc::new(Stowage::new(
        filestore.clone(),
        metadata.clone(),
        &config.service_settings(),
        &node_id,
    ));
    stowage
        .security()
        .admit_admin_token(Auth::load(&metadata).await?);
    // Not registered: a function answers cluster calls as a node that is not the primary.
    let cluster = Arc::new(Cluster::new(
        metadata.clone(),
        &config.cluster_settings(),
        node_id,
        part.name().to_string(),
    ));
    let (stowage_for_tasks, cluster_for_tasks) = (Arc::clone(&stowage), Arc::clone(&cluster));
    let state = AppState {
        stowage,
        cluster,
        base_url: config.base_url.clone(),
        // A function runs no backups: its run time is capped and it has no disk to work on.
        backups: None,
        context_path: config.server.context_path()?,
        // A Lambda function's memory is not scraped: only a container records metrics.
        metrics: (config.metrics.enabled && mode == Mode::Server)
            .then(crate::http::metrics::install)
            .flatten(),
        limits,
    };
    let scrape = match mode {
        Mode::Server => spawn_metrics_listener(&state, &config).await?,
        Mode::Lambda => None,
    };
    let app = router_for(state, part);
    tracing::info!(function = part.name(), ?mode, ?limits, database = %config.database_url_for_display(), "stowage function ready");
    match mode {
        Mode::Lambda if part == Part::Metadata => {
            let handler = maintenance::Handler::new(app, stowage_for_tasks, cluster_for_tasks);
            lambda_http::lambda_runtime::run(handler)
                .await
                .map_err(|e| Error::Unavailable(format!("the Lambda runtime stopped: {e}")))
        }
        Mode::Lambda => lambda_http::run(app)
            .await
            .map_err(|e| Error::Unavailable(format!("the Lambda runtime stopped: {e}"))),
        Mode::Server => {
            let dispatcher = filestore.eventual.as_ref().map(|e| e.spawn_dispatcher());
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| {
                    Error::InvalidInput(format!("cannot listen on {}: {e}", config.listen))
                })?;
            let addr = listener.local_addr().map_err(|e| {
                Error::InvalidInput(format!("cannot read the listening address: {e}"))
            })?;
            println!(
                "stowage {} function listening on http://{addr}",
                part.name()
            );
            let served = serve_until_signal(listener, app, Timeouts::of(&config)).await;
            stop_dispatcher(filestore.eventual.as_ref(), dispatcher, &config).await;
            if let Some(task) = scrape {
                task.abort();
            }
            metadata.close().await;
            served
        }
    }
}

/// Serves `[metrics] listen` (if set): `GET /metrics` without credentials, for a scraper in
/// the node's own task. Announces `metrics listening on http://ADDR` on stdout.
pub async fn spawn_metrics_listener(
    state: &AppState,
    config: &Config,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some(listen) = config.metrics.listen else {
        return Ok(None);
    };
    if state.metrics.is_none() {
        return Err(Error::InvalidInput(format!(
            "[metrics] listen = \"{listen}\" needs metrics on ([metrics] enabled = true, and a \
             server, not a Lambda function)"
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::InvalidInput(format!("cannot listen on {listen} ([metrics] listen): {e}"))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::InvalidInput(format!("cannot read the metrics address: {e}")))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the metrics listener takes no credentials and is not on a loopback address");
    }
    println!("metrics listening on http://{addr}");
    let app = crate::http::metrics::scrape_router(state.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    })))
}

/// Stops the eventual queue's dispatcher once the last request is answered, after it had
/// `[filestore.eventual] drainOnShutdownSecs` to upload what the queue holds. What it did not
/// finish stays queued on disk for the next start.
pub async fn stop_dispatcher(
    queue: Option<&stowage_core::eventual::EventualProvider>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    config: &Config,
) {
    let Some(dispatcher) = dispatcher else { return };
    let within = std::time::Duration::from_secs(config.filestore.eventual.drain_on_shutdown_secs);
    if let Some(queue) = queue
        && !within.is_zero()
    {
        tracing::info!(
            within_secs = within.as_secs(),
            "uploading the queue before exiting"
        );
        match queue.drain(within).await {
            Ok(left) if left.depth == 0 => tracing::info!("the queue is empty"),
            Ok(left) => tracing::warn!(
                binaries = left.depth,
                bytes = left.bytes,
                last_error = left.last_error.as_deref().unwrap_or("-"),
                "binaries stay queued on this node's disk: they are uploaded when it starts again"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read the queue while draining it"),
        }
    }
    dispatcher.abort();
}

/// How long the server waits for a slow client (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must have arrived, whole, within this; else the connection closes.
    pub header: std::time::Duration,
    /// A request body that sends nothing for this long fails the request (whatever it staged
    /// is removed); the client is told so, and the connection closes.
    pub body_idle: std::time::Duration,
}

impl Timeouts {
    /// The timeouts `[server]` sets.
    pub fn of(config: &Config) -> Self {
        let (header, body_idle) = config.server.timeouts();
        Self { header, body_idle }
    }
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then finishes in-flight requests.
/// Connections get TCP_NODELAY: a streamed body's last small write must not wait for the
/// client's delayed ACK (40 ms per small download otherwise). hyper's connection builder is
/// used directly (as `axum::serve` does inside) for what `axum::serve` does not offer: a
/// deadline on request headers, and an idle timeout on request bodies, so that a client that
/// sends a byte at a time, or announces a body and stops, cannot hold a connection for good.
pub async fn serve_until_signal(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    timeouts: Timeouts,
) -> Result<(), Error> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let body_idle = timeouts.body_idle;
        let service =
            app.clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    // Who is calling, for the failed-login throttle.
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    // A request without a body (GET, HEAD) has nothing to stall: no timer.
                    req.map(|body| {
                        if http_body::Body::is_end_stream(&body) {
                            axum::body::Body::new(body)
                        } else {
                            idle_timeout(axum::body::Body::new(body), body_idle)
                        }
                    })
                });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `body`, failing once it has sent nothing for `idle` (a reset timer, not one per chunk).
fn idle_timeout(body: axum::body::Body, idle: std::time::Duration) -> axum::body::Body {
    use futures::StreamExt as _;
    struct Idle {
        body: axum::body::BodyDataStream,
        timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    }
    let state = Idle {
        body: body.into_data_stream(),
        timer: Box::pin(tokio::time::sleep(idle)),
    };
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        tokio::select! {
            item = state.body.next() => match item {
                Some(Ok(chunk)) => {
                    state.timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    Some((Ok(chunk), Some(state)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
                None => None,
            },
            () = state.timer.as_mut() => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client sent no part of the body for {} s ([server] body_timeout_secs)",
                        idle.as_secs()
                    ),
                )),
                None,
            )),
        }
    });
    axum::body::Body::from_stream(stream)
}

/// Resolves on SIGINT or SIGTERM (what a container runtime sends), after which a server
/// finishes its in-flight requests.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn lambda_gets_the_payload_limits_and_a_writable_data_dir() {
        let lambda = FunctionConfig::load(
            Part::Upload,
            env(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]),
        )
        .expect("config");
        assert_eq!(lambda.mode, Mode::Lambda);
        assert_eq!(lambda.limits.max_request_body, Some(LAMBDA_MAX_BODY));
        assert_eq!(lambda.limits.max_response_body, Some(LAMBDA_MAX_BODY));
        assert_eq!(lambda.config.data_dir, PathBuf::from("/tmp/stowage-data"));

        let server = FunctionConfig::load(
            Part::Download,
            env(&[("STOWAGE_MAX_RESPONSE_BODY", "1000")]),
        )
        .expect("config");
        assert_eq!(server.mode, Mode::Server);
        assert_eq!(
            server.limits,
            Limits {
                max_request_body: None,
                max_response_body: Some(1000)
            }
        );

        let none = FunctionConfig::load(
            Part::Upload,
            env(&[
                ("AWS_LAMBDA_RUNTIME_API", "x"),
                ("STOWAGE_MAX_REQUEST_BODY", "none"),
            ]),
        )
        .expect("config");
        assert_eq!(none.limits.max_request_body, None);

        let bad = FunctionConfig::load(Part::Upload, env(&[("STOWAGE_MAX_REQUEST_BODY", "6MB")]))
            .expect_err("bad limit");
        assert!(bad.to_string().contains("STOWAGE_MAX_REQUEST_BODY"));
    }

    #[test]
    fn lambda_refuses_a_local_upload_queue() {
        let e = FunctionConfig::load(
            Part::Upload,
            env(&[
                ("AWS_LAMBDA_RUNTIME_API", "x"),
                ("STOWAGE_FILESTORE_TEMPLATE", "s3-storage-v3"),
            ]),
        )
        .expect_err("eventual under Lambda");
        let message = e.to_string();
        assert!(message.contains("local upload queue"), "{message}");
        assert!(
            !message.contains('\\') && !message.contains("  "),
            "one line, no escapes or indentation: {message}"
        );
    }
}
