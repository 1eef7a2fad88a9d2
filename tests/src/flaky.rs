//! A TCP proxy in front of a real server that closes the next N connections it accepts at
//! once, as a load balancer or a network blip would: what a backend must retry. It can also
//! take the server away altogether ([`FlakyProxy::go_down`]: every connection cut, every new
//! one closed) and bring it back, as an outage of the server would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy on a loopback port to `target` (`host:port`).
#[derive(Debug)]
pub struct FlakyProxy {
    pub port: u16,
    to_fail: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
    down: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (to_fail, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (down, cut) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (fail, count, target) = (to_fail.clone(), failed.clone(), target.to_string());
        let (is_down, cutting) = (down.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let failing = fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let (target, cutting) = (target.clone(), cutting.clone());
                tokio::spawn(async move {
                    let cut = cutting.notified();
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = cut => {}
                        }
                    }
                });
            }
        });
        Self {
            port,
            to_fail,
            failed,
            down,
            cut,
            task,
        }
    }

    /// Takes the server away: open connections are cut, new ones closed at once.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Brings the server back.
    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
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
