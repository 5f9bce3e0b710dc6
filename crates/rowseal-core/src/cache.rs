//! A bounded, expiring, single-flight cache for unwrapped keys, on
//! [moka](https://docs.rs/moka).
//!
//! - Storage, bound and eviction are moka's `sync::Cache`: at most
//!   [`CacheConfig::max_entries`] entries, evicted by TinyLFU (an entry is
//!   admitted into a full cache only if it is used more often than the least
//!   recently used entry it would replace: recency and frequency together, so
//!   that a scan of one-off tenants does not flush the busy ones).
//! - Expiry is per entry, [`CacheConfig::ttl`] from the moment the value was
//!   fetched (or from its source's fetch time, for derived keys): checked
//!   exactly on every lookup, and applied to memory by moka's expiry timer
//!   wheel, whose tick is 2^30 ns (about 1.07 s).
//! - Single flight is ours, in front of moka: concurrent callers for one
//!   missing key share one fetch, and share its error; errors are not cached.
//! - Zeroizing: every value is an `Arc<V>` held in a slot that the cache
//!   empties the moment moka removes the entry (evicted, expired, replaced or
//!   invalidated), so that the cache's reference is dropped then and there,
//!   not whenever moka's lock-free map reclaims its memory. Moka does its
//!   maintenance (and so expiry) only when the cache is used; an idle process
//!   relies on [`start_sweeper`], which runs it on a timer.
//! - Statistics: atomic counters ([`CacheStats`]), cheap to read at any time.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::Expiry;
use tokio::sync::OnceCell;

use crate::error::Result;

/// How long unwrapped keys stay in memory, and how many.
///
/// Every cached key costs no provider call until it expires; a longer lifetime
/// means fewer KMS calls and a longer window in which a revoked KMS grant still
/// works in a running process.
///
/// Memory, measured with `cargo bench -p rowseal-core --bench cache_memory`
/// (1,000,000 tenants in a [`KeyHierarchy`](crate::KeyHierarchy), resident
/// memory gained, allocator overhead and moka's bookkeeping included): a
/// cached tenant key costs about 650 bytes, one record type's record keys
/// for it about 910, and its current key version about 520; a tenant that
/// is written and read costs about 2.1 KB across the three caches, so
/// 1,000,000 such tenants take about 2 GiB (a bare `HashMap` of their names
/// to 32-byte keys: 150 bytes each). A cache never holds more than
/// `max_entries` entries (moka enforces the bound at its maintenance, at
/// least once per sweep period, and whenever 64 writes are pending), so with
/// the default 2^20 entries the tenant-key cache stays under about 650 MiB,
/// the record-key cache under about 910 MiB and the current-version cache
/// under about 520 MiB. Caches allocate as they fill: a process with fewer
/// tenants pays for what it caches; lower `max_entries` to lower the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries kept per cache (tenant keys, record keys, index keys,
    /// blind-index keys and row data keys are cached separately; so are the
    /// current key versions). A full cache evicts by recency and frequency
    /// (moka's TinyLFU): a new entry replaces the least recently used one
    /// only if it has been asked for more often, so keys in steady use are
    /// kept over a scan of one-off tenants.
    pub max_entries: usize,
    /// Lifetime of an entry from the moment it was fetched. A key derived
    /// from another cached key (record keys from a tenant key, blind-index
    /// keys from an index key) expires with its source.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    /// 1,048,576 entries per cache (2^20: 1,000,000 tenants' keys fit), five
    /// minutes.
    fn default() -> Self {
        CacheConfig {
            max_entries: 1 << 20,
            ttl: Duration::from_secs(300),
        }
    }
}

/// Counters of one key cache, or the sum over several
/// ([`KeyHierarchy::cache_stats`](crate::KeyHierarchy::cache_stats)).
///
/// Every counter but `entries` only grows, from the cache's creation.
/// [`KeyHierarchy::forget_cached_keys`](crate::KeyHierarchy::forget_cached_keys)
/// and rotations remove entries without counting them as evictions or
/// expirations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no fresh entry: each ran a fetch, or joined one
    /// already in flight for the same key.
    pub misses: u64,
    /// Fetches run (from the key store and key provider, or derived from
    /// another cached key): misses less those that joined a flight.
    pub loads: u64,
    /// Entries dropped to stay within [`CacheConfig::max_entries`] (a new
    /// entry refused by the frequency filter counts too).
    pub evictions: u64,
    /// Entries dropped because their lifetime ended.
    pub expirations: u64,
    /// Entries held now. Moka counts them at its maintenance, which runs at
    /// least once per sweep period (see
    /// [`KeyHierarchy::with_cache_config`](crate::KeyHierarchy::with_cache_config)):
    /// the figure may be that much behind.
    pub entries: u64,
}

impl Add for CacheStats {
    type Output = CacheStats;

    fn add(self, other: CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits + other.hits,
            misses: self.misses + other.misses,
            loads: self.loads + other.loads,
            evictions: self.evictions + other.evictions,
            expirations: self.expirations + other.expirations,
            entries: self.entries + other.entries,
        }
    }
}

impl AddAssign for CacheStats {
    fn add_assign(&mut self, other: CacheStats) {
        *self = *self + other;
    }
}

impl std::iter::Sum for CacheStats {
    fn sum<I: Iterator<Item = CacheStats>>(iter: I) -> CacheStats {
        iter.fold(CacheStats::default(), Add::add)
    }
}

/// The counters behind [`CacheStats`], shared with moka's eviction listener.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where a cached value lives: emptied when moka lets go of the entry, so
/// that the cache's `Arc` is dropped at once (and the key zeroized, if no
/// caller still holds it), whenever moka frees the entry itself.
struct Slot<V>(Mutex<Option<Arc<V>>>);

impl<V> Slot<V> {
    fn get(&self) -> Option<Arc<V>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take(&self) {
        let taken = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(taken);
    }
}

/// Moka's value: the slot and the moment the entry's lifetime started.
struct Entry<V> {
    slot: Arc<Slot<V>>,
    at: Instant,
}

impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Entry {
            slot: self.slot.clone(),
            at: self.at,
        }
    }
}

/// Per-entry expiry: `ttl` after the entry's own start (its fetch, or its
/// source's fetch), however late it was inserted.
struct FromFetchTime {
    ttl: Duration,
}

impl FromFetchTime {
    fn remaining(&self, at: Instant, now: Instant) -> Option<Duration> {
        // No deadline: a lifetime past `Instant`'s range never ends.
        at.checked_add(self.ttl)
            .map(|deadline| deadline.saturating_duration_since(now))
    }
}

impl<K, V> Expiry<K, Entry<V>> for FromFetchTime {
    fn expire_after_create(
        &self,
        _: &K,
        entry: &Entry<V>,
        created_at: Instant,
    ) -> Option<Duration> {
        self.remaining(entry.at, created_at)
    }

    fn expire_after_update(
        &self,
        _: &K,
        entry: &Entry<V>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(entry.at, updated_at)
    }
}

type Flight<V> = Arc<OnceCell<Result<(Arc<V>, Instant)>>>;

/// Values are shared as `Arc<V>`: a key type that zeroizes on drop is wiped
/// when the last user and the cache have let go of it.
pub(crate) struct KeyCache<K, V> {
    ttl: Duration,
    entries: moka::sync::Cache<K, Entry<V>>,
    /// Fetches in progress, by key. A flight's result is stored in `entries`
    /// only if the flight is still registered here when it lands: `clear`,
    /// `remove` and `insert` unregister flights, so a fetch that started
    /// before a key was destroyed or replaced is not cached after.
    flights: Mutex<HashMap<K, Flight<V>>>,
    counters: Arc<Counters>,
}

impl<K, V> KeyCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(u64::try_from(config.max_entries.max(1)).unwrap_or(u64::MAX))
            .expire_after(FromFetchTime { ttl: config.ttl })
            .eviction_listener(move |_key, entry: Entry<V>, cause| {
                match cause {
                    RemovalCause::Size => bump(&listener_counters.evictions),
                    RemovalCause::Expired => bump(&listener_counters.expirations),
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                }
                entry.slot.take();
            })
            .build();
        KeyCache {
            ttl: config.ttl,
            entries,
            flights: Mutex::new(HashMap::new()),
            counters,
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
        if let Some(hit) = self.hit(key) {
            return Ok(hit);
        }
        let flight = {
            let mut flights = self.lock();
            // A flight may have landed since the lookup above: look again
            // (without counting a second read in moka's frequency sketch),
            // else join the flight in progress or start one.
            if self.entries.contains_key(key) {
                if let Some(hit) = self.hit(key) {
                    return Ok(hit);
                }
            }
            bump(&self.counters.misses);
            flights.entry(key.clone()).or_default().clone()
        };
        // Whoever gets here first runs its `fetch`; the others wait for it. If
        // that caller is cancelled, the next waiter runs its own.
        let result = flight
            .get_or_init(|| async {
                bump(&self.counters.loads);
                fetch().await.map(|(v, at)| (Arc::new(v), at))
            })
            .await;
        {
            let mut flights = self.lock();
            if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(key);
                if let Ok((value, at)) = result {
                    self.store(key.clone(), value.clone(), *at);
                }
            }
        }
        match result {
            Ok((value, at)) => Ok((value.clone(), *at)),
            Err(e) => Err(e.clone()),
        }
    }

    /// The cached value with its fetch time, if present and fresh, counted
    /// as a hit; a miss is not counted (the fetch that follows counts it).
    pub(crate) fn hit(&self, key: &K) -> Option<(Arc<V>, Instant)> {
        let hit = self.lookup(key)?;
        bump(&self.counters.hits);
        Some(hit)
    }

    /// Like [`get_or_fetch_dated`](Self::get_or_fetch_dated), but a value
    /// `fetch` returns is handed back without being cached, and no flight
    /// is joined or started: for a value read from a transaction's snapshot,
    /// which may predate other processes' changes (a key destroyed, a
    /// version added since) and so must not outlive the operation that read
    /// it, nor wait for another caller's fetch.
    pub(crate) async fn get_or_fetch_once<F, Fut>(
        &self,
        key: &K,
        fetch: F,
    ) -> Result<(Arc<V>, Instant)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Instant)>>,
    {
        if let Some(hit) = self.hit(key) {
            return Ok(hit);
        }
        bump(&self.counters.misses);
        bump(&self.counters.loads);
        let (value, at) = fetch().await?;
        Ok((Arc::new(value), at))
    }

    /// Inserts a value fetched elsewhere (a data key just generated). A fetch
    /// of the same key in progress is not cached when it lands.
    pub(crate) fn insert(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut flights = self.lock();
        flights.remove(&key);
        self.store(key, value.clone(), Instant::now());
        value
    }

    /// The cached value if present and fresh; never fetches.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<V>> {
        match self.lookup(key) {
            Some((value, _)) => {
                bump(&self.counters.hits);
                Some(value)
            }
            None => {
                bump(&self.counters.misses);
                None
            }
        }
    }

    /// Drops every entry (used after a key is destroyed or rotated): the
    /// cache lets go of every value at once, and fetches in progress are not
    /// cached when they land.
    pub(crate) fn clear(&self) {
        let mut flights = self.lock();
        flights.clear();
        // Moka's `invalidate_all` hides the entries at once but removes them
        // over its next maintenance runs: empty the slots now.
        for (_, entry) in self.entries.iter() {
            entry.slot.take();
        }
        self.entries.invalidate_all();
        drop(flights);
        self.entries.run_pending_tasks();
    }

    /// Runs moka's maintenance: drops expired entries (and evicts down to the
    /// bound), letting go of their values.
    ///
    /// Flights are left alone: a flight that has landed is unregistered by
    /// its caller, which stores the value only if the flight is still
    /// registered (removing it here, from the sweeper's thread, would lose
    /// that value); one whose callers were all cancelled before it landed
    /// holds nothing, and is taken over by the next caller for its key.
    pub(crate) fn sweep(&self) {
        self.entries.run_pending_tasks();
    }

    /// The keys of every entry holding a fresh value.
    pub(crate) fn keys(&self) -> Vec<K> {
        self.entries
            .iter()
            .filter(|(_, e)| e.at.elapsed() < self.ttl && e.slot.get().is_some())
            .map(|(k, _)| K::clone(&k))
            .collect()
    }

    /// Drops one entry; a fetch of it in progress is not cached when it lands.
    pub(crate) fn remove(&self, key: &K) {
        let mut flights = self.lock();
        flights.remove(key);
        self.entries.invalidate(key);
    }

    /// This cache's counters.
    pub(crate) fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.run_pending_tasks();
        usize::try_from(self.entries.entry_count()).unwrap_or(usize::MAX)
    }

    /// A fresh cached value with its start, from moka (which also records the
    /// read for its frequency estimate).
    fn lookup(&self, key: &K) -> Option<(Arc<V>, Instant)> {
        let entry = self.entries.get(key)?;
        if entry.at.elapsed() >= self.ttl {
            return None;
        }
        entry.slot.get().map(|value| (value, entry.at))
    }

    fn store(&self, key: K, value: Arc<V>, at: Instant) {
        let slot = Arc::new(Slot(Mutex::new(Some(value))));
        self.entries.insert(key, Entry { slot, at });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<V>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Something a sweeper thread keeps in shape: one cache, or all of a
/// hierarchy's.
pub(crate) trait Sweep: Send + Sync + 'static {
    /// Drops what has expired.
    fn sweep(&self);
}

impl<K, V> Sweep for KeyCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn sweep(&self) {
        KeyCache::sweep(self);
    }
}

/// How often the sweeper runs for a cache lifetime of `ttl`: a quarter of it,
/// between 10 ms and 1 s.
pub(crate) fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The longest an expired entry stays in memory in an idle process (no
/// cache call at all) for a cache lifetime of `ttl`: one tick of moka's
/// timer wheel (2^30 ns, about 1.07 s: expired entries are collected when
/// the wheel passes a tick), plus one sweep period (the wheel turns at
/// maintenance), plus 50 ms of slack for the maintenance run itself.
#[cfg(test)]
pub(crate) fn expiry_bound(ttl: Duration) -> Duration {
    sweep_period(ttl) + Duration::from_nanos(1 << 30) + Duration::from_millis(50)
}

/// Sweeps `target` every `period` until it is dropped, so that an idle process
/// does not keep keys past their lifetime (after a tenant is shredded, say).
/// A plain thread holding a `Weak`: a cache may be built outside any async
/// runtime, and the thread ends within one period of the cache.
pub(crate) fn start_sweeper<T: Sweep>(target: &Arc<T>, period: Duration) {
    let weak: Weak<T> = Arc::downgrade(target);
    let spawned = std::thread::Builder::new()
        .name("rowseal-key-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match weak.upgrade() {
                Some(target) => target.sweep(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        // Entries still expire on access; only idle eviction is lost.
        tracing::warn!(error = %e, "could not start the key cache sweeper");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

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
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Cached now: a failing fetch is not called.
        let v = c.get_or_fetch(&1, || async { Err(Error::Decrypt) }).await;
        assert_eq!(*v.unwrap(), 7);
    }

    /// Many keys, many callers each: one fetch per key, every caller gets it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_fetch_per_key() {
        let c = Arc::new(cache(10_000, 60_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for round in 0..4u32 {
            for k in 0..2_000u32 {
                let (c, calls) = (c.clone(), calls.clone());
                tasks.push(tokio::spawn(async move {
                    let v = c
                        .get_or_fetch(&k, || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok(k * 10)
                        })
                        .await
                        .unwrap();
                    assert_eq!(*v, k * 10, "round {round}");
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2_000);
        let s = c.stats();
        assert_eq!(s.loads, 2_000);
        assert_eq!(s.hits + s.misses, 8_000);
    }

    /// Maintenance on another thread, as the sweeper runs it, never loses a
    /// value that just landed: every key is fetched once, then served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_racing_with_landing_flights_loses_nothing() {
        const KEYS: u32 = 50_000;
        let c = Arc::new(cache(100_000, 60_000));
        let stop = Arc::new(AtomicBool::new(false));
        let sweeper = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.sweep();
                }
            })
        };
        for k in 0..KEYS {
            c.get_or_fetch(&k, || async move { Ok(k) }).await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sweeper.join().unwrap();
        for k in 0..KEYS {
            let v = c.get_or_fetch(&k, || async { Err(Error::Decrypt) }).await;
            assert_eq!(*v.unwrap(), k);
        }
        assert_eq!(c.stats().loads, u64::from(KEYS));
    }

    /// A fetch in flight when the cache is cleared (a key destroyed) is
    /// returned to its callers but not cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flight_landing_after_clear_is_not_cached() {
        let c = Arc::new(cache(10, 60_000));
        let c2 = c.clone();
        let slow = tokio::spawn(async move {
            c2.get_or_fetch(&1, || async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.clear();
        assert_eq!(*slow.await.unwrap().unwrap(), 1);
        let v = c.get_or_fetch(&1, || async { Ok(2) }).await.unwrap();
        assert_eq!(*v, 2, "fetched again after clear");
    }

    /// Sets its flag when dropped: a key's zeroizing drop, observed.
    struct Flagged(Arc<AtomicBool>);

    impl Drop for Flagged {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// An expired value is dropped by the sweeper's timer, with no further
    /// call on the cache, within `expiry_bound` of its expiry; not before.
    #[tokio::test]
    async fn an_expired_value_is_dropped_on_the_timer_alone() {
        let ttl = Duration::from_millis(300);
        let c = Arc::new(KeyCache::<u32, Flagged>::new(CacheConfig {
            max_entries: 100,
            ttl,
        }));
        start_sweeper(&c, sweep_period(ttl));
        let fresh = Arc::new(AtomicBool::new(false));
        let derived = Arc::new(AtomicBool::new(false));
        let seeded = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = fresh.clone();
        drop(
            c.get_or_fetch(&1, || async { Ok(Flagged(flag)) })
                .await
                .unwrap(),
        );
        // Derived from a source fetched 100 ms ago: it expires with it.
        let flag = derived.clone();
        let at = started.checked_sub(Duration::from_millis(100)).unwrap();
        drop(
            c.get_or_fetch_dated(&2, || async move { Ok((Flagged(flag), at)) })
                .await
                .unwrap(),
        );
        drop(c.insert(3, Flagged(seeded.clone())));
        tokio::time::sleep(ttl / 2).await;
        assert!(!fresh.load(Ordering::SeqCst), "dropped before its time");
        assert!(!derived.load(Ordering::SeqCst), "dropped before its time");
        assert!(!seeded.load(Ordering::SeqCst), "dropped before its time");

        // Poll the flags only: the cache is not touched again.
        let deadline = started + ttl + expiry_bound(ttl);
        while Instant::now() < deadline
            && !(fresh.load(Ordering::SeqCst)
                && derived.load(Ordering::SeqCst)
                && seeded.load(Ordering::SeqCst))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = started.elapsed();
        assert!(fresh.load(Ordering::SeqCst), "still held after {waited:?}");
        assert!(
            derived.load(Ordering::SeqCst),
            "still held after {waited:?}"
        );
        assert!(seeded.load(Ordering::SeqCst), "still held after {waited:?}");
        assert!(waited >= ttl - Duration::from_millis(100));
        let s = c.stats();
        assert_eq!(s.expirations, 3, "{s:?}");
        assert_eq!(s.entries, 0, "{s:?}");
    }

    /// A value a caller still holds outlives its entry, and is dropped when
    /// the caller lets go; `clear` lets go of every value at once.
    #[tokio::test]
    async fn clear_drops_values_at_once() {
        let c = KeyCache::<u32, Flagged>::new(CacheConfig {
            max_entries: 100,
            ttl: Duration::from_secs(60),
        });
        let flags: Vec<_> = (0..10).map(|_| Arc::new(AtomicBool::new(false))).collect();
        for (k, flag) in flags.iter().enumerate() {
            let flag = flag.clone();
            drop(
                c.get_or_fetch(&(k as u32), || async { Ok(Flagged(flag)) })
                    .await
                    .unwrap(),
            );
        }
        let held = c.get(&0).unwrap();
        c.clear();
        assert!(flags[1..].iter().all(|f| f.load(Ordering::SeqCst)));
        assert!(!flags[0].load(Ordering::SeqCst), "held by a caller");
        drop(held);
        assert!(flags[0].load(Ordering::SeqCst));
        assert!(c.get(&1).is_none());
        assert!(c.keys().is_empty());
    }

    /// Recency and frequency: keys in steady use survive a scan of ten times
    /// the capacity of one-off keys, which a FIFO or LRU cache would not.
    #[tokio::test]
    async fn frequently_used_entries_survive_a_scan_of_one_off_entries() {
        const CAP: u32 = 200;
        const HOT: u32 = 100;
        let c = cache(CAP as usize, 60_000);
        for _ in 0..10 {
            for k in 0..HOT {
                c.get_or_fetch(&k, || async move { Ok(k) }).await.unwrap();
            }
        }
        let before = c.stats();
        assert_eq!(before.loads, u64::from(HOT));
        for k in 1_000_000..1_000_000 + 10 * CAP {
            c.get_or_fetch(&k, || async move { Ok(k) }).await.unwrap();
            if k % 64 == 0 {
                c.sweep();
            }
        }
        c.sweep();
        assert!(c.len() <= CAP as usize, "bounded: {}", c.len());
        let hot_kept = (0..HOT).filter(|k| c.entries.contains_key(k)).count();
        let scan_kept = c.keys().iter().filter(|k| **k >= 1_000_000).count();
        // Only the scan's keys were dropped: the cache filled up with its
        // first ones, and the rest were refused or replaced one-off entries.
        assert!(
            hot_kept >= 95,
            "hot keys kept: {hot_kept} of {HOT}, scan keys kept: {scan_kept}"
        );
        let s = c.stats();
        assert!(s.evictions >= u64::from(9 * CAP), "{s:?}");
        // The hot keys are still answered without a fetch.
        for k in 0..HOT {
            if c.entries.contains_key(&k) {
                let v = c.get_or_fetch(&k, || async { Err(Error::Decrypt) }).await;
                assert_eq!(*v.unwrap(), k);
            }
        }
    }

    /// Every counter against a scripted sequence.
    #[tokio::test]
    async fn stats_count_a_scripted_sequence() {
        let ttl = Duration::from_millis(200);
        let c = KeyCache::<u32, u32>::new(CacheConfig {
            max_entries: 2,
            ttl,
        });
        assert_eq!(c.stats(), CacheStats::default());
        // A miss that loads, then two hits.
        c.get_or_fetch(&1, || async { Ok(1) }).await.unwrap();
        c.get_or_fetch(&1, || async { Ok(1) }).await.unwrap();
        assert_eq!(*c.get(&1).unwrap(), 1);
        // A miss with `get` (no load); a failed load (a miss, not cached).
        assert!(c.get(&2).is_none());
        assert!(c
            .get_or_fetch(&2, || async { Err(Error::Decrypt) })
            .await
            .is_err());
        // A seeded entry: neither hit nor miss.
        c.insert(2, 2);
        c.sweep();
        let s = c.stats();
        assert_eq!(
            (
                s.hits,
                s.misses,
                s.loads,
                s.evictions,
                s.expirations,
                s.entries
            ),
            (2, 3, 2, 0, 0, 2),
            "{s:?}"
        );
        // Full: each new key evicts one entry (or is refused itself).
        for k in 10..13 {
            c.get_or_fetch(&k, || async move { Ok(k) }).await.unwrap();
        }
        c.sweep();
        let s = c.stats();
        assert_eq!(
            (
                s.hits,
                s.misses,
                s.loads,
                s.evictions,
                s.expirations,
                s.entries
            ),
            (2, 6, 5, 3, 0, 2),
            "{s:?}"
        );
        // Removed entries are neither evicted nor expired.
        let kept = c.keys();
        assert_eq!(kept.len(), 2);
        c.remove(&kept[0]);
        c.sweep();
        assert_eq!(c.stats().entries, 1);
        // The last one expires, and leaves at a sweep within the bound.
        let deadline = Instant::now() + ttl + expiry_bound(ttl);
        tokio::time::sleep(ttl).await;
        while c.stats().expirations == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c.sweep();
        }
        let s = c.stats();
        assert_eq!(
            (
                s.hits,
                s.misses,
                s.loads,
                s.evictions,
                s.expirations,
                s.entries
            ),
            (2, 6, 5, 3, 1, 0),
            "{s:?}"
        );
        // An expired entry is a miss, and loads again.
        c.get_or_fetch(&kept[1], || async { Ok(0) }).await.unwrap();
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.loads), (2, 7, 6), "{s:?}");
    }

    /// A derived entry expires with its source's fetch time, not a lifetime
    /// after it was cached.
    #[tokio::test]
    async fn a_dated_entry_expires_from_its_start() {
        let ttl = Duration::from_millis(300);
        let c = KeyCache::<u32, u32>::new(CacheConfig {
            max_entries: 10,
            ttl,
        });
        let at = Instant::now()
            .checked_sub(Duration::from_millis(200))
            .unwrap();
        let (_, got) = c
            .get_or_fetch_dated(&1, || async { Ok((1, at)) })
            .await
            .unwrap();
        assert_eq!(got, at);
        assert_eq!(*c.get(&1).unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(c.get(&1).is_none(), "expired with its source");
        assert!(c.keys().is_empty());
    }
}
