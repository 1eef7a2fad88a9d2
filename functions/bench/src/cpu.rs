//! CPU-per-byte figures (issue 25): the CPU the `stowage` process spends per GiB moved, next
//! to the CPU the work cannot avoid, measured in the same run on the same bytes:
//!
//! - the **digest bound**: SHA-256, SHA-1 and MD5 over the bytes, in-process, with the crates
//!   Stowage uses (one thread's CPU time);
//! - the **copy bound** of an upload: the bytes read from a loopback socket and written to a
//!   file, fsynced, by a minimal loop (the receiving thread's CPU time);
//! - the **copy bound** of a download: the bytes read from a file and written to a socket.
//!
//! Thread CPU time comes from `CLOCK_THREAD_CPUTIME_ID`, a process's from `/proc/PID/stat`
//! (`bench::cpu_time`): both count CPU, not waiting, so a co-located emulator or client slows
//! the wall clock without changing them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use stowage_core::Error;

use crate::bench::{body, fail};

/// This thread's CPU time so far.
pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Seconds of CPU per GiB.
pub(crate) fn per_gib(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes as f64 / (1u64 << 30) as f64)
}

const CHUNK: usize = 1 << 20;

/// The digest bound: the CPU of one thread hashing `size` bytes with the three digests.
pub(crate) async fn digest_bound(pattern: &Bytes, size: u64) -> Result<Duration, Error> {
    let pattern = pattern.clone();
    tokio::task::spawn_blocking(move || {
        let start = thread_cpu();
        crate::bench::raw_hash(&pattern, size);
        thread_cpu().saturating_sub(start)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("bench: {e}")))
}

/// The upload's copy bound: the receiving thread's CPU for `size` bytes from a loopback
/// socket into `file`, fsynced.
pub(crate) async fn socket_to_file(
    pattern: &Bytes,
    size: u64,
    file: &Path,
) -> Result<Duration, Error> {
    Ok(socket_to_file_both(pattern, size, file).await?.0)
}

/// [`socket_to_file`]'s receiving thread's CPU, and the sending thread's (what a node that
/// streams a copy to a peer spends at the least).
pub(crate) async fn socket_to_file_both(
    pattern: &Bytes,
    size: u64,
    file: &Path,
) -> Result<(Duration, Duration), Error> {
    socket_to_file_with(pattern, size, file, false).await
}

/// [`socket_to_file_both`], written around the page cache (`O_DIRECT`, as a cluster peer
/// writes its copy of a queued upload) when `uncached`.
pub(crate) async fn socket_to_file_with(
    pattern: &Bytes,
    size: u64,
    file: &Path,
    uncached: bool,
) -> Result<(Duration, Duration), Error> {
    let (pattern, file) = (pattern.clone(), file.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(fail("bind"))?;
        let addr = listener.local_addr().map_err(fail("addr"))?;
        let sender = std::thread::spawn(move || -> std::io::Result<Duration> {
            let mut s = TcpStream::connect(addr)?;
            let start = thread_cpu();
            for chunk in body(&pattern, size) {
                s.write_all(&chunk)?;
            }
            Ok(thread_cpu().saturating_sub(start))
        });
        let (mut conn, _) = listener.accept().map_err(fail("accept"))?;
        let start = thread_cpu();
        let out = std::fs::File::create(&file).map_err(fail("create"))?;
        let mut buf = vec![0u8; CHUNK];
        let mut receive = |write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| loop {
            let n = conn.read(&mut buf).map_err(fail("read"))?;
            if n == 0 {
                return Ok::<_, Error>(());
            }
            write(&buf[..n]).map_err(fail("write"))?;
        };
        let out = if uncached {
            let mut out = stowage_core::fs::UncachedWriter::new(out, CHUNK);
            receive(&mut |bytes| out.write_all(bytes))?;
            out.finish().map_err(fail("write"))?
        } else {
            let mut out = out;
            receive(&mut |bytes| out.write_all(bytes))?;
            out
        };
        out.sync_all().map_err(fail("fsync"))?;
        let cpu = thread_cpu().saturating_sub(start);
        let sent = sender
            .join()
            .map_err(|_| Error::Unavailable("bench: sender panicked".into()))?
            .map_err(fail("send"))?;
        let _ = std::fs::remove_file(&file);
        Ok((cpu, sent))
    })
    .await
    .map_err(|e| Error::Unavailable(format!("bench: {e}")))?
}

/// The download's copy bound: the sending thread's CPU for `file` read and written to a
/// loopback socket; returns the CPU and the bytes.
pub(crate) async fn file_to_socket(file: &Path) -> Result<(Duration, u64), Error> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(fail("bind"))?;
        let addr = listener.local_addr().map_err(fail("addr"))?;
        let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
            let (mut conn, _) = listener.accept()?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                total += n as u64;
            }
        });
        let mut s = TcpStream::connect(addr).map_err(fail("connect"))?;
        let start = thread_cpu();
        let mut input = std::fs::File::open(&file).map_err(fail("open"))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).map_err(fail("read"))?;
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).map_err(fail("send"))?;
        }
        let cpu = thread_cpu().saturating_sub(start);
        drop(s);
        let total = receiver
            .join()
            .map_err(|_| Error::Unavailable("bench: receiver panicked".into()))?
            .map_err(fail("receive"))?;
        Ok((cpu, total))
    })
    .await
    .map_err(|e| Error::Unavailable(format!("bench: {e}")))?
}
