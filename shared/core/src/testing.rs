//! Test support for other crates' tests and this one's (behind the `testing` feature): a signer
//! that needs no store, and a wait for the eventual queue to empty.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::eventual::EventualProvider;
use crate::signing::{DownloadSigner, DownloadUrlRequest, SignedUrl};
use crate::{Result, Sha256};

/// Signs every binary as `https://store.example/<digest>`, valid for a minute.
#[derive(Debug)]
pub struct FixedSigner;

#[async_trait]
impl DownloadSigner for FixedSigner {
    async fn download_url(&self, digest: &Sha256, _: &DownloadUrlRequest) -> Result<SignedUrl> {
        Ok(SignedUrl {
            url: format!("https://store.example/{digest}"),
            expires_at: SystemTime::now() + Duration::from_secs(60),
            reusable_for: Duration::ZERO,
        })
    }
}

/// Runs `queue`'s dispatcher until nothing is queued, for at most 5 s.
pub async fn drain_queue(queue: &EventualProvider) {
    let dispatcher = queue.spawn_dispatcher();
    for _ in 0..500 {
        if queue.stats().await.is_ok_and(|s| s.depth == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dispatcher.abort();
}
