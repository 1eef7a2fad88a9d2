//! `stowage bench`: upload and download throughput through a real `stowage serve` (embedded
//! default) compared, in the same run and on the same disk, with the raw limits: writing the
//! bytes with fsync, reading them back cold, and hashing them. Also the server's peak RSS during
//! a large upload, which must not grow with the file size. It measures; it does not judge
//! beyond printing the goals next to the figures.

use std::io::{Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use futures::StreamExt;
use rand::RngCore;
use stowage_core::{ChecksumHasher, Error, KeyLayout};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Chunk size of generated bodies and raw I/O.
const CHUNK: usize = 1 << 20;
/// Distinct random bytes, repeated to make the body (disks do not compress).
pub(crate) const PATTERN: usize = 8 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Size of the upload/download and raw-limit runs.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Size of the upload whose peak RSS is reported.
    #[arg(long, default_value = "2GiB")]
    rss_size: ByteSize,
    /// Rounds of the read measurements (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Directory on the disk to measure (a fresh sub-directory is made and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

pub(crate) fn fail(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Unavailable(format!("bench: {what}: {e}"))
}

pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

pub(crate) fn random_pattern() -> Bytes {
    let mut buf = vec![0u8; PATTERN];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

/// `size` bytes as 1 MiB slices of the pattern (no copies).
pub(crate) fn body(pattern: &Bytes, size: u64) -> impl Iterator<Item = Bytes> + use<> {
    let pattern = pattern.clone();
    let chunks_per_pattern = PATTERN / CHUNK;
    let mut left = size;
    (0..).map_while(move |i: usize| {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK as u64) as usize;
        left -= n as u64;
        let start = (i % chunks_per_pattern) * CHUNK;
        Some(pattern.slice(start..start + n))
    })
}

/// Drops a file's pages from the page cache, so the next read comes from the disk.
pub(crate) fn evict(path: &Path) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(fail("open for eviction"))?;
    file.sync_all().map_err(fail("fsync before eviction"))?;
    rustix::fs::fadvise(&file, 0, None::<NonZeroU64>, rustix::fs::Advice::DontNeed)
        .map_err(|e| Error::Unavailable(format!("bench: fadvise: {e}")))
}

fn raw_write(path: &Path, pattern: &Bytes, size: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut file = std::fs::File::create(path).map_err(fail("create"))?;
    for chunk in body(pattern, size) {
        file.write_all(&chunk).map_err(fail("write"))?;
    }
    file.sync_all().map_err(fail("fsync"))?;
    Ok(start.elapsed())
}

/// Read-ahead window of the hinted raw read (the filesystem provider's value).
const READ_AHEAD: u64 = 8 << 20;

/// Reads a file in 1 MiB reads; with `hints`, also asks the kernel to read 8 MiB ahead, as the
/// filesystem provider does.
pub(crate) fn raw_read(path: &Path, hints: bool) -> Result<(u64, Duration), Error> {
    let start = Instant::now();
    let mut file = std::fs::File::open(path).map_err(fail("open"))?;
    let mut buf = vec![0u8; CHUNK];
    let (mut total, mut hinted_until) = (0u64, 0u64);
    loop {
        if hints && total + READ_AHEAD / 2 >= hinted_until {
            let from = hinted_until.max(total);
            let _ = rustix::fs::fadvise(
                &file,
                from,
                NonZeroU64::new(READ_AHEAD),
                rustix::fs::Advice::WillNeed,
            );
            hinted_until = from + READ_AHEAD;
        }
        let n = file.read(&mut buf).map_err(fail("read"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok((total, start.elapsed()))
}

pub(crate) fn raw_hash(pattern: &Bytes, size: u64) -> Duration {
    let start = Instant::now();
    let mut hasher = ChecksumHasher::new();
    for chunk in body(pattern, size) {
        hasher.update(&chunk);
    }
    std::hint::black_box(hasher.finish());
    start.elapsed()
}

pub(crate) async fn pipelined_hash(pattern: &Bytes, size: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let chunks = futures::stream::iter(body(pattern, size).map(Ok)).boxed();
    let (mut stream, task) = stowage_core::hash_stream(chunks);
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    std::hint::black_box(task.finish().await?);
    Ok(start.elapsed())
}

pub(crate) fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) the process `pid` has used so far, from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// The `stowage` binary built beside this one (same target directory and profile).
fn stowage_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(fail("find the stowage-bench binary"))?;
    let stowage = exe.with_file_name("stowage");
    if stowage.is_file() {
        Ok(stowage)
    } else {
        Err(Error::InvalidInput(format!(
            "no stowage binary at {}: build it with the same profile first \
             (cargo build --release -p stowage -p stowage-bench)",
            stowage.display()
        )))
    }
}

pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub(crate) base: String,
    pub(crate) token: String,
}

pub(crate) async fn start_server(data_dir: &Path, config: Option<&Path>) -> Result<Server, Error> {
    let mut command = tokio::process::Command::new(stowage_binary()?);
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("STOWAGE_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(fail("start stowage serve"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Unavailable("bench: no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut base = None;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(fail("read server output"))?
    {
        if let Some(addr) = line.strip_prefix("stowage listening on ") {
            base = Some(addr.trim().to_string());
            break;
        }
    }
    let base =
        base.ok_or_else(|| Error::Unavailable("bench: the server exited before listening".into()))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .map_err(fail("read admin.token"))?
        .trim()
        .to_string();
    Ok(Server { child, base, token })
}

/// `stowage serve` on a configuration of `filestore` TOML in `dir/name`, with a repository
/// `bench`; returns the server and its PID.
pub(crate) async fn start_with_config(
    dir: &Path,
    name: &str,
    filestore: &str,
) -> Result<(Server, u32), Error> {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).map_err(fail("create data dir"))?;
    let config = data_dir.join("stowage.toml");
    std::fs::write(&config, filestore).map_err(fail("write config"))?;
    let server = start_server(&data_dir, Some(&config)).await?;
    let pid = bench_repository(&server).await?;
    Ok((server, pid))
}

/// Creates the repository `bench` on a started server; returns the server's PID.
pub(crate) async fn bench_repository(server: &Server) -> Result<u32, Error> {
    let pid = server
        .child
        .id()
        .ok_or_else(|| Error::Unavailable("bench: the server exited".into()))?;
    let r = reqwest::Client::new()
        .put(format!("{}/api/repositories/bench", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("bench: create repository: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Unavailable(format!(
            "bench: create repository answered {}",
            r.status()
        )));
    }
    Ok(pid)
}

/// Sends a deploy and returns its answer, or an error naming `what` unless it answered 201.
pub(crate) async fn expect_created(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, Error> {
    let response = request
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("{what}: {e}")))?;
    if response.status() != reqwest::StatusCode::CREATED {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(Error::Unavailable(format!(
            "{what} answered {status}: {text}"
        )));
    }
    Ok(response)
}

pub(crate) async fn upload(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    pattern: &Bytes,
    size: u64,
) -> Result<(Duration, String), Error> {
    let start = Instant::now();
    let stream = futures::stream::iter(body(pattern, size).map(Ok::<_, std::io::Error>));
    let request = client
        .put(format!("{}/bench/{path}", server.base))
        .bearer_auth(&server.token)
        .header("Content-Length", size.to_string())
        .body(reqwest::Body::wrap_stream(stream));
    let response = expect_created(request, "bench: upload").await?;
    let json: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Error::Unavailable(format!("bench: upload response: {e}")))?;
    let elapsed = start.elapsed();
    let sha256 = json["checksums"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((elapsed, sha256))
}

/// Downloads with a minimal HTTP/1.1 client (one request, a 1 MiB read buffer, bytes counted and
/// dropped), so the figure is the server's, not a client library's.
pub(crate) async fn download(server: &Server, path: &str) -> Result<(u64, Duration), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(fail("connect"))?;
    let request = format!(
        "GET /bench/{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.token
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(fail("send request"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = stream.read(&mut buf).await.map_err(fail("read response"))?;
        if n == 0 {
            break;
        }
        if body == 0 && !head.ends_with(b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body = (head.len() - end - 4) as u64;
                head.truncate(end + 4);
                if !head.starts_with(b"HTTP/1.1 200") {
                    let status = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
                    return Err(Error::Unavailable(format!(
                        "bench: download answered {status}"
                    )));
                }
            }
            continue;
        }
        body += n as u64;
    }
    Ok((body, start.elapsed()))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) async fn run(args: &BenchArgs) -> Result<(), Error> {
    let size = args.size.as_u64();
    let rss_size = args.rss_size.as_u64();
    let work = tempfile::Builder::new()
        .prefix("stowage-bench-")
        .tempdir_in(&args.dir)
        .map_err(fail("create the bench directory"))?;
    let pattern = random_pattern();
    let gib = |n: u64| format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64);
    println!(
        "# stowage bench: {} on {}",
        gib(size),
        work.path().display()
    );

    // Raw limits of hashing.
    let p = pattern.clone();
    let hash_serial = tokio::task::spawn_blocking(move || raw_hash(&p, size))
        .await
        .map_err(|e| Error::Unavailable(format!("bench: {e}")))?;
    let hash_pipelined = pipelined_hash(&pattern, size).await?;

    // Through the server.
    let data_dir = work.path().join("data");
    let mut server = start_server(&data_dir, None).await?;
    let pid = bench_repository(&server).await?;
    let client = reqwest::Client::new();
    // Writes vary with the host too: interleave raw writes and uploads, each of new bytes
    // (so nothing is deduplicated), and compare medians.
    let raw_file = work.path().join("raw.bin");
    let (mut writes, mut uploads, mut first) = (Vec::new(), Vec::new(), None);
    let mut up_cpu = Vec::new();
    for round in 0..args.rounds {
        let (p, f) = (random_pattern(), raw_file.clone());
        let t = tokio::task::spawn_blocking(move || raw_write(&f, &p, size))
            .await
            .map_err(|e| Error::Unavailable(format!("bench: {e}")))??;
        std::fs::remove_file(&raw_file).map_err(fail("remove raw file"))?;
        writes.push(mb_per_s(size, t));
        let p = if round == 0 {
            pattern.clone()
        } else {
            random_pattern()
        };
        let before = cpu_time(pid).unwrap_or_default();
        let (t, sha256) = upload(&client, &server, &format!("up-{round}.bin"), &p, size).await?;
        up_cpu.push(crate::cpu::per_gib(
            cpu_time(pid).unwrap_or_default().saturating_sub(before),
            size,
        ));
        uploads.push(mb_per_s(size, t));
        first.get_or_insert(sha256);
    }
    let sha256 = first.unwrap_or_default();
    let stored = data_dir
        .join("filestore")
        .join(KeyLayout::default().key(&sha256.parse()?).as_str());
    // Cold reads vary with the host: interleave raw reads and downloads of the same stored
    // file, and compare medians.
    let (mut raw_reads, mut hinted_reads) = (Vec::new(), Vec::new());
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let (mut cold_cpu, mut warm_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        for (hints, rates) in [(false, &mut raw_reads), (true, &mut hinted_reads)] {
            evict(&stored)?;
            let f = stored.clone();
            let (n, t) = tokio::task::spawn_blocking(move || raw_read(&f, hints))
                .await
                .map_err(|e| Error::Unavailable(format!("bench: {e}")))??;
            rates.push(mb_per_s(n, t));
        }
        evict(&stored)?;
        let before = cpu_time(pid).unwrap_or_default();
        let (n, t) = download(&server, "up-0.bin").await?;
        if n != size {
            return Err(Error::Unavailable(format!(
                "bench: downloaded {n} of {size} bytes"
            )));
        }
        cold_cpu.push(crate::cpu::per_gib(
            cpu_time(pid).unwrap_or_default().saturating_sub(before),
            n,
        ));
        cold.push(mb_per_s(n, t));
        let before = cpu_time(pid).unwrap_or_default();
        let (n, t) = download(&server, "up-0.bin").await?;
        warm_cpu.push(crate::cpu::per_gib(
            cpu_time(pid).unwrap_or_default().saturating_sub(before),
            n,
        ));
        warm.push(mb_per_s(n, t));
    }
    // The bounds, on the same bytes and disk, in the same run (medians of the rounds).
    let (mut digest_b, mut copy_up_b, mut copy_down_b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        digest_b.push(crate::cpu::per_gib(
            crate::cpu::digest_bound(&pattern, size).await?,
            size,
        ));
        copy_up_b.push(crate::cpu::per_gib(
            crate::cpu::socket_to_file(&pattern, size, &work.path().join("copy.bin")).await?,
            size,
        ));
        let (cpu, n) = crate::cpu::file_to_socket(&stored).await?;
        copy_down_b.push(crate::cpu::per_gib(cpu, n));
    }
    let rss_before = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let (up_large, _) = upload(&client, &server, "large.bin", &pattern, rss_size).await?;
    let peak = rss_kib(pid, "VmHWM:").unwrap_or(0);
    if let Some(id) = server.child.id() {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(id as i32)
                .ok_or_else(|| Error::Unavailable("bench: bad pid".into()))?,
            rustix::process::Signal::TERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await;

    let rate_write = median(writes);
    let rate_plain_read = median(raw_reads);
    let rate_hinted_read = median(hinted_reads);
    let rate_read = rate_plain_read.max(rate_hinted_read);
    let rate_up = median(uploads);
    let rate_down = median(cold);
    println!();
    println!("| measurement | MB/s | ratio |");
    println!("|---|---:|---:|");
    println!(
        "| raw disk write + fsync (median of {}) | {rate_write:.0} | 1.00 |",
        args.rounds
    );
    println!(
        "| raw disk read, cold cache, 1 MiB reads (median of {}) | {rate_plain_read:.0} | {:.2} |",
        args.rounds,
        rate_plain_read / rate_read
    );
    println!(
        "| raw disk read, cold cache, with read-ahead hints (median) | {rate_hinted_read:.0} | {:.2} |",
        rate_hinted_read / rate_read
    );
    println!(
        "| hash SHA-256+SHA-1+MD5, one thread | {:.0} | |",
        mb_per_s(size, hash_serial)
    );
    println!(
        "| hash, Stowage's pipeline (2 threads) | {:.0} | |",
        mb_per_s(size, hash_pipelined)
    );
    println!(
        "| upload through stowage serve (median) | {rate_up:.0} | {:.2} of disk write (goal ≥ 0.70) |",
        rate_up / rate_write
    );
    println!(
        "| download, cold cache (median) | {rate_down:.0} | {:.2} of disk read (goal ≥ 0.80) |",
        rate_down / rate_read
    );
    println!("| download, warm cache (median) | {:.0} | |", median(warm));
    println!(
        "| upload of {} | {:.0} | |",
        gib(rss_size),
        mb_per_s(rss_size, up_large)
    );
    println!();
    println!("Read ratios compare with the faster of the two raw reads.");
    let (digest, copy_up, copy_down) = (median(digest_b), median(copy_up_b), median(copy_down_b));
    let (up, cold_c, warm_c) = (median(up_cpu), median(cold_cpu), median(warm_cpu));
    println!();
    println!(
        "CPU per GiB (s; the stowage process from /proc/PID/stat; bounds in this run, medians of {}):",
        args.rounds
    );
    println!("| path | CPU s/GiB | bound s/GiB | ratio | goal |");
    println!("|---|---:|---:|---:|---|");
    println!("| digest bound (SHA-256+SHA-1+MD5, one thread) | | {digest:.3} | | |");
    println!("| copy bound, socket → file + fsync | | {copy_up:.3} | | |");
    println!("| copy bound, file → socket | | {copy_down:.3} | | |");
    println!(
        "| upload (filesystem) | {up:.3} | {:.3} (digest + copy) | {:.2} | ≤ 1.3 |",
        digest + copy_up,
        up / (digest + copy_up)
    );
    println!(
        "| download, cold cache | {cold_c:.3} | {copy_down:.3} (copy) | {:.2} | ≤ 2 |",
        cold_c / copy_down
    );
    println!(
        "| download, warm cache | {warm_c:.3} | {copy_down:.3} (copy) | {:.2} | ≤ 2 |",
        warm_c / copy_down
    );
    println!(
        "server peak RSS: {:.1} MiB after the {} upload ({:.1} MiB before it; goal < 100 MiB)",
        peak as f64 / 1024.0,
        gib(rss_size),
        rss_before as f64 / 1024.0
    );
    Ok(())
}
