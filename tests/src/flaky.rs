//! A TCP proxy in front of a real server that closes the next N connections it accepts at
//! once, as a load balancer or a network blip would: what a backend must retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy on a loopback port to `target` (`host:port`).
#[derive(Debug)]
pub struct FlakyProxy {
    pub port: u16,
    to_fail: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (to_fail, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (fail, count, target) = (to_fail.clone(), failed.clone(), target.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let failing = fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            port,
            to_fail,
            failed,
            task,
        }
    }

    /// Closes the next `n` connections as soon as they are accepted.
    pub fn fail_next(&self, n: u32) {
        self.to_fail.store(n, Ordering::SeqCst);
    }

    /// Connections closed so far.
    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
