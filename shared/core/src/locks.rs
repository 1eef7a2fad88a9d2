//! In-process exclusive locks by key (a binary's digest, an artifact path). They order the
//! steps of one node; locks shared by a cluster live in the metadata database instead.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Table<K> = Mutex<HashMap<K, Arc<AsyncMutex<()>>>>;

/// A table of async mutexes created on demand and dropped when nobody holds or waits for them.
pub struct KeyedLocks<K> {
    table: Arc<Table<K>>,
}

impl<K> fmt::Debug for KeyedLocks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLocks").finish_non_exhaustive()
    }
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            table: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> KeyedLocks<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock on `key`; it is held until the guard is dropped.
    pub async fn lock(&self, key: K) -> KeyedLockGuard<K> {
        let mutex = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(table.entry(key.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        KeyedLockGuard {
            table: Arc::clone(&self.table),
            key: Some(key),
            guard: Some(guard),
        }
    }

    /// Number of keys currently locked or awaited (for tests and metrics).
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is locked or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Holds one key's lock; dropping it releases the lock.
pub struct KeyedLockGuard<K: Eq + Hash> {
    table: Arc<Table<K>>,
    key: Option<K>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash> fmt::Debug for KeyedLockGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLockGuard").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash> Drop for KeyedLockGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let Some(key) = self.key.take() else { return };
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // Only the table still refers to the mutex: nobody holds or awaits it.
        if table.get(&key).is_some_and(|m| Arc::strong_count(m) == 1) {
            table.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn excludes_per_key_and_cleans_up() {
        let locks = Arc::new(KeyedLocks::<u32>::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(7).await;
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert!(locks.is_empty());
        let a = locks.lock(1).await;
        let b = locks.lock(2).await; // another key is not blocked
        assert_eq!(locks.len(), 2);
        drop((a, b));
        assert!(locks.is_empty());
    }
}
