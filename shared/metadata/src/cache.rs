//! An in-process cache of artifact lookups (`repo + path → record`, "not found" included), for
//! a process that is its database's only writer: `stowage serve` on the SQLite file inside the
//! data directory whose lock it holds. Every other process (the functions, the nodes of a
//! cluster on PostgreSQL or MySQL) reads the database each time, because writes of other
//! processes would not be seen.
//!
//! Correctness rests on one counter, the *generation*. Every write that can change a lookup's
//! answer moves it on when it ends (committed, failed or cancelled: the `Writes` guard in
//! `store.rs` does it on drop). A lookup reads the generation *before* it queries and stores its
//! answer tagged with it; an entry is served only while the generation is unchanged. So an
//! answer read before a write (or while it ran) is never served after that write ended, and a
//! write is acknowledged to its client only after it ended. The price: any write makes every
//! entry stale, which is cheap (one more query per lookup) and keeps the rule simple.
//!
//! A write the counter cannot see — a statement that the database still runs after its caller
//! was cancelled, or someone editing the file by hand — is served stale for at most [`TTL`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::model::ArtifactRecord;

/// How many lookups are kept (a record is a few hundred bytes).
pub const CAPACITY: u64 = 65_536;

/// The longest an entry is served, whatever the generation says.
pub const TTL: Duration = Duration::from_secs(5);

/// The artifact cache's figures, for `/api/storageinfo` (`artifactCache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArtifactCacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that queried the database: never asked before, evicted, or stale after a write.
    pub misses: u64,
    /// Answers kept now (moka's estimate; stale ones count until they are replaced).
    pub entries: u64,
    /// At most this many answers are kept ([`CAPACITY`])…
    pub capacity: u64,
    /// …each for at most this many seconds ([`TTL`]).
    pub ttl_secs: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    generation: u64,
    record: Option<ArtifactRecord>,
}

/// The generation counter (always kept) and, once enabled, the entries.
#[derive(Debug, Default)]
pub(crate) struct ArtifactCache {
    generation: AtomicU64,
    entries: OnceLock<Cache<String, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn key(repo: &str, path: &str) -> String {
    // A repository key never holds a NUL; the path is checked the same way.
    format!("{repo}\0{path}")
}

impl ArtifactCache {
    pub(crate) fn enable(&self) {
        self.entries.get_or_init(|| {
            Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TTL)
                .build()
        });
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.entries.get().is_some()
    }

    /// The generation now. A lookup takes it before it queries.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A cached answer still valid now: `Some(None)` is a cached "not found".
    pub(crate) fn get(&self, repo: &str, path: &str) -> Option<Option<ArtifactRecord>> {
        let entries = self.entries.get()?;
        let valid = entries
            .get(&key(repo, path))
            .filter(|entry| entry.generation == self.generation());
        let counter = if valid.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        valid.map(|entry| entry.record)
    }

    /// Its figures, once enabled.
    pub(crate) fn stats(&self) -> Option<ArtifactCacheStats> {
        let entries = self.entries.get()?;
        Some(ArtifactCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: entries.entry_count(),
            capacity: CAPACITY,
            ttl_secs: TTL.as_secs(),
        })
    }

    /// Keeps an answer read under `generation` (taken before the query), unless a write ended
    /// since: then it may already be stale.
    pub(crate) fn put(
        &self,
        repo: &str,
        path: &str,
        generation: u64,
        record: Option<ArtifactRecord>,
    ) {
        if let Some(entries) = self.entries.get()
            && generation == self.generation()
        {
            entries.insert(key(repo, path), Entry { generation, record });
        }
    }

    /// A write ended: every answer read before now is stale.
    pub(crate) fn written(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}
