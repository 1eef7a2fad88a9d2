//! A TCP proxy in front of a real HTTP/1.1 server that damages one request body on the way,
//! as a faulty NIC, proxy or memory would: armed with [`CorruptingProxy::corrupt_next_upload`],
//! it flips one byte inside the body of the next request that sends at least a few KiB, and
//! passes everything else through untouched. The server then answers what it answers to
//! damaged bytes (S3: a checksum error) — the answer a store must not take as proof that its
//! own copy is corrupt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bodies shorter than this are never damaged (they carry no upload worth the name).
const MIN_BODY: usize = 4096;
/// Where in the body the byte is flipped: past any chunk header (aws-chunked encoding).
const FLIP_AT: usize = 1024;

/// A proxy on a loopback port to `target` (`host:port`).
#[derive(Debug)]
pub struct CorruptingProxy {
    pub port: u16,
    armed: Arc<AtomicBool>,
    corrupted: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl CorruptingProxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (armed, corrupted) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
        );
        let task = tokio::spawn({
            let (armed, corrupted, target) = (
                Arc::clone(&armed),
                Arc::clone(&corrupted),
                target.to_string(),
            );
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (armed, corrupted, target) =
                        (Arc::clone(&armed), Arc::clone(&corrupted), target.clone());
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            relay(client, server, &armed, &corrupted).await;
                        }
                    });
                }
            }
        });
        Self {
            port,
            armed,
            corrupted,
            task,
        }
    }

    /// Damages the body of the next request with a body of at least 4 KiB.
    pub fn corrupt_next_upload(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Request bodies damaged so far.
    pub fn corrupted(&self) -> u32 {
        self.corrupted.load(Ordering::SeqCst)
    }
}

impl Drop for CorruptingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the client's bytes are, in the request being relayed.
enum At {
    /// Reading a request's head (kept until its blank line).
    Head(Vec<u8>),
    /// In a body: bytes left, and the offset into it to flip, if this one is damaged.
    Body { left: usize, flip: Option<usize> },
    /// A body of unknown length (chunked): the rest of the connection passes as it is.
    Raw,
}

/// Relays one connection: responses as they are, requests through [`At`]'s state machine.
async fn relay(
    mut client: TcpStream,
    server: TcpStream,
    armed: &AtomicBool,
    corrupted: &AtomicU32,
) {
    let (mut from_server, mut to_server) = server.into_split();
    let (mut from_client, mut to_client) = client.split();
    let responses = tokio::io::copy(&mut from_server, &mut to_client);
    let requests = async {
        let mut at = At::Head(Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut out = Vec::with_capacity(n);
            let mut input = &buf[..n];
            while !input.is_empty() {
                let (next, used) = step(at, input, &mut out, armed, corrupted);
                at = next;
                input = &input[used..];
            }
            if to_server.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let _ = tokio::join!(responses, requests);
}

/// The state after a request head: its body, damaged if armed and long enough.
fn body_of(head: &[u8], armed: &AtomicBool, corrupted: &AtomicU32) -> At {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let length = header("content-length:").and_then(|v| v.parse::<usize>().ok());
    let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
    let damage = |len: usize| {
        (len >= MIN_BODY && armed.swap(false, Ordering::SeqCst)).then(|| {
            corrupted.fetch_add(1, Ordering::SeqCst);
            FLIP_AT
        })
    };
    match (length, chunked) {
        (_, true) => {
            // No length to go by: damage is left out, and the connection passes raw.
            At::Raw
        }
        (Some(0) | None, false) => At::Head(Vec::new()),
        (Some(len), false) => At::Body {
            left: len,
            flip: damage(len),
        },
    }
}

/// Relays what `input` holds of the current state into `out`; returns the next state and
/// how many bytes of `input` it used.
fn step(
    at: At,
    input: &[u8],
    out: &mut Vec<u8>,
    armed: &AtomicBool,
    corrupted: &AtomicU32,
) -> (At, usize) {
    match at {
        At::Raw => {
            out.extend_from_slice(input);
            (At::Raw, input.len())
        }
        At::Head(mut head) => {
            head.extend_from_slice(input);
            match head.windows(4).position(|w| w == b"\r\n\r\n") {
                None => (At::Head(head), input.len()),
                Some(end) => {
                    // The head ends inside `input`: use only up to its end.
                    let before = head.len() - input.len();
                    let used = end + 4 - before;
                    head.truncate(end + 4);
                    out.extend_from_slice(&head);
                    (body_of(&head, armed, corrupted), used)
                }
            }
        }
        At::Body { left, flip } => {
            let take = left.min(input.len());
            let start = out.len();
            out.extend_from_slice(&input[..take]);
            let flip = match flip {
                Some(offset) if offset < take => {
                    out[start + offset] ^= 0xff;
                    None
                }
                Some(offset) => Some(offset - take),
                None => None,
            };
            let left = left - take;
            if left == 0 {
                (At::Head(Vec::new()), take)
            } else {
                (At::Body { left, flip }, take)
            }
        }
    }
}
