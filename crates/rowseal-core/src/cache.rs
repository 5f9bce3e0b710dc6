//! A bounded, expiring, single-flight cache for unwrapped keys.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::error::Result;

/// How long unwrapped keys stay in memory, and how many.
///
/// Every cached key costs no provider call until it expires; a longer lifetime
/// means fewer KMS calls and a longer window in which a revoked KMS grant still
/// works in a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries kept per cache (tenant keys, record keys, index keys, row
    /// data keys are cached separately). The oldest entry is evicted first.
    pub max_entries: usize,
    /// Lifetime of an entry from the moment it was fetched.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            ttl: Duration::from_secs(300),
        }
    }
}

type Flight<V> = Arc<OnceCell<Result<(Arc<V>, Instant)>>>;

/// Values are shared as `Arc<V>`: a key type that zeroizes on drop is wiped
/// when the last user and the cache have let go of it.
pub(crate) struct KeyCache<K, V> {
    config: CacheConfig,
    slots: Mutex<HashMap<K, Flight<V>>>,
}

impl<K: Eq + Hash + Clone, V> KeyCache<K, V> {
    pub(crate) fn new(config: CacheConfig) -> Self {
        KeyCache {
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value, or the result of `fetch`. Concurrent callers for the
    /// same missing key share one `fetch` (single flight), and share its error
    /// too: a denied key costs one provider call, not one per waiter. Errors are
    /// not cached.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> Result<Arc<V>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let (value, _) = self
            .get_or_fetch_dated(key, || async { fetch().await.map(|v| (v, Instant::now())) })
            .await?;
        Ok(value)
    }

    /// Like [`get_or_fetch`](Self::get_or_fetch), for a value derived from
    /// another cached one: `fetch` returns the value with the moment its
    /// lifetime starts (the source's fetch time, so the derived entry never
    /// outlives its source), and the caller gets that moment back.
    pub(crate) async fn get_or_fetch_dated<F, Fut>(
        &self,
        key: &K,
        fetch: F,
    ) -> Result<(Arc<V>, Instant)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Instant)>>,
    {
        let flight = self.flight(key);
        let result = flight
            .get_or_init(|| async { fetch().await.map(|(v, at)| (Arc::new(v), at)) })
            .await;
        match result {
            Ok((value, at)) => Ok((value.clone(), *at)),
            Err(e) => {
                let e = e.clone();
                self.remove_if_same(key, &flight);
                Err(e)
            }
        }
    }

    /// Inserts a value fetched elsewhere (a data key just generated).
    pub(crate) fn insert(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let cell = OnceCell::new_with(Some(Ok((value.clone(), Instant::now()))));
        let mut slots = self.lock();
        self.make_room(&mut slots);
        slots.insert(key, Arc::new(cell));
        value
    }

    /// The cached value if present and fresh; never fetches.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<V>> {
        let slots = self.lock();
        match slots.get(key)?.get() {
            Some(Ok((v, at))) if at.elapsed() < self.config.ttl => Some(v.clone()),
            _ => None,
        }
    }

    /// Drops every entry (used after a key is destroyed or rotated).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Drops every expired entry (and failed ones), keeping flights in
    /// progress.
    pub(crate) fn sweep(&self) {
        retain_fresh(&mut self.lock(), self.config.ttl);
    }

    /// The keys of every entry holding a value (fresh or not yet swept).
    pub(crate) fn keys(&self) -> Vec<K> {
        self.lock()
            .iter()
            .filter(|(_, f)| matches!(f.get(), Some(Ok(_))))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<V>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flight(&self, key: &K) -> Flight<V> {
        let mut slots = self.lock();
        if let Some(f) = slots.get(key) {
            match f.get() {
                None => return f.clone(), // in flight: join it
                Some(Ok((_, at))) if at.elapsed() < self.config.ttl => return f.clone(),
                Some(_) => {
                    slots.remove(key);
                }
            }
        }
        self.make_room(&mut slots);
        let f: Flight<V> = Arc::new(OnceCell::new());
        slots.insert(key.clone(), f.clone());
        f
    }

    fn make_room(&self, slots: &mut HashMap<K, Flight<V>>) {
        if slots.len() < self.config.max_entries.max(1) {
            return;
        }
        retain_fresh(slots, self.config.ttl);
        while slots.len() >= self.config.max_entries.max(1) {
            let oldest = slots
                .iter()
                .filter_map(|(k, f)| match f.get() {
                    Some(Ok((_, at))) => Some((k.clone(), *at)),
                    _ => None,
                })
                .min_by_key(|(_, at)| *at)
                .map(|(k, _)| k);
            match oldest {
                Some(k) => {
                    slots.remove(&k);
                }
                // Only flights in progress: let the map grow past the bound
                // briefly rather than cancel someone's fetch.
                None => break,
            }
        }
    }

    fn remove_if_same(&self, key: &K, flight: &Flight<V>) {
        let mut slots = self.lock();
        if slots.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            slots.remove(key);
        }
    }
}

/// Keeps flights in progress and fresh values; drops expired and failed ones.
fn retain_fresh<K, V>(slots: &mut HashMap<K, Flight<V>>, ttl: Duration) {
    slots.retain(|_, f| match f.get() {
        None => true,
        Some(Ok((_, at))) => at.elapsed() < ttl,
        Some(Err(_)) => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache(max_entries: usize, ttl_ms: u64) -> KeyCache<u32, u32> {
        KeyCache::new(CacheConfig {
            max_entries,
            ttl: Duration::from_millis(ttl_ms),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn errors_are_shared_by_the_flight_and_not_cached() {
        let c = Arc::new(cache(10, 60_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (c, calls) = (c.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_fetch(&1, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<u32, _>(Error::Decrypt)
                })
                .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(Error::Decrypt)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let v = c.get_or_fetch(&1, || async { Ok(7) }).await.unwrap();
        assert_eq!(*v, 7);
    }

    #[tokio::test]
    async fn bounded_by_entry_count_evicting_the_oldest() {
        let c = cache(3, 60_000);
        for k in 0..5u32 {
            c.get_or_fetch(&k, || async move { Ok(k) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(c.len(), 3);
        // 4 is still cached: a failing fetch is not called.
        let v = c.get_or_fetch(&4, || async { Err(Error::Decrypt) }).await;
        assert_eq!(*v.unwrap(), 4);
        // 0 was evicted.
        let v = c.get_or_fetch(&0, || async { Ok(100) }).await.unwrap();
        assert_eq!(*v, 100);
    }
}
