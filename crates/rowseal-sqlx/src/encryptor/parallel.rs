//! The crypto pool: one shared, bounded set of threads on which large
//! batches are sealed and opened (from [`Encryptor::with_parallel_threshold`]
//! rows on), awaited without blocking the async runtime's thread, results
//! kept in order. No thread is started per call.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use futures_core::future::BoxFuture;
use futures_util::FutureExt as _;
use rayon::iter::{
    IndexedParallelIterator as _, IntoParallelIterator as _, IntoParallelRefMutIterator as _,
    ParallelIterator as _,
};
use tokio::sync::oneshot;

use super::Encryptor;
use crate::error::{Error, Result};

/// Fewest items one rayon task takes: below it, splitting costs more than
/// it saves (an item is a row, a few microseconds of work).
const MIN_ITEMS_PER_TASK: usize = 32;

/// A bounded pool of threads for rowseal's crypto work: sealing and opening
/// batches of at least [`Encryptor::with_parallel_threshold`] rows
/// ([`DEFAULT_PARALLEL_THRESHOLD`](crate::DEFAULT_PARALLEL_THRESHOLD) by
/// default).
///
/// Such a batch is handed to the pool and awaited: the async runtime's
/// thread goes on with other tasks meanwhile, and the process runs the
/// runtime's threads plus the pool's, however many requests are in flight.
/// No thread is started per call, none is taken from the runtime's blocking
/// pool. Smaller batches (microseconds of work) stay on the calling thread.
///
/// - [`CryptoPool::global`], the default of every [`Encryptor`]: one per
///   process, one thread per available core.
/// - [`CryptoPool::shared`]`(n)`, what [`Encryptor::with_threads`]`(n)` uses:
///   the process-wide pool of `n` threads, one per size, so that encryptors
///   made per request never add threads.
/// - [`CryptoPool::new`]`(n)`: a pool of its own, for
///   [`Encryptor::with_crypto_pool`] (say, to keep a background job's
///   batches off the threads that serve requests).
///
/// A pool starts its threads (named `rowseal-crypto-N`) on its first large
/// batch; clones share them. A pool of [`CryptoPool::new`] stops its threads
/// when its last clone is dropped, the process-wide ones never do. A panic
/// inside the pool (a bug, or a `sql_type` field's own decoding) fails that
/// row or batch with [`Error::Worker`]; the pool goes on.
///
/// ```
/// use std::sync::Arc;
/// use rowseal_core::{KeyHierarchy, LocalKeyProvider, MemoryKeyStore};
/// use rowseal_sqlx::{CryptoPool, Encryptor};
///
/// let provider = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
/// let keys = Arc::new(KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new())));
///
/// // The default: the process-wide pool, one thread per core.
/// let enc = Encryptor::new(keys.clone());
/// // At most 2 threads, shared with every other encryptor of 2 threads.
/// let two = Encryptor::new(keys.clone()).with_threads(2);
/// assert_eq!(two.crypto_pool().threads(), 2);
/// // A pool of its own, for a background job.
/// let jobs = Encryptor::new(keys).with_crypto_pool(CryptoPool::new(1));
/// # let _ = (enc, jobs);
/// ```
#[derive(Clone)]
pub struct CryptoPool {
    inner: Arc<Inner>,
}

struct Inner {
    threads: usize,
    pool: OnceLock<rayon::ThreadPool>,
    /// Held while the threads start (once; again after a failed start).
    starting: Mutex<()>,
}

/// The process-wide pools of [`CryptoPool::shared`], one per size.
static SHARED: Mutex<Vec<CryptoPool>> = Mutex::new(Vec::new());
/// [`CryptoPool::global`].
static GLOBAL: OnceLock<CryptoPool> = OnceLock::new();

impl CryptoPool {
    /// A pool of its own of `threads` threads (at least 1), started on its
    /// first large batch and stopped when its last clone is dropped.
    pub fn new(threads: usize) -> Self {
        CryptoPool {
            inner: Arc::new(Inner {
                threads: threads.max(1),
                pool: OnceLock::new(),
                starting: Mutex::new(()),
            }),
        }
    }

    /// The process-wide pool of `threads` threads (at least 1): every call
    /// with the same number gives the same pool, started once and kept for
    /// the life of the process. [`Encryptor::with_threads`] uses it.
    pub fn shared(threads: usize) -> Self {
        let threads = threads.max(1);
        let mut pools = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pools.iter().find(|p| p.threads() == threads) {
            return p.clone();
        }
        let p = CryptoPool::new(threads);
        pools.push(p.clone());
        p
    }

    /// The process-wide default pool: [`shared`](Self::shared) with one
    /// thread per available core ([`std::thread::available_parallelism`]).
    /// Every [`Encryptor`] uses it unless given another.
    pub fn global() -> Self {
        GLOBAL
            .get_or_init(|| {
                CryptoPool::shared(std::thread::available_parallelism().map_or(1, |n| n.get()))
            })
            .clone()
    }

    /// How many threads the pool runs (once started).
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Whether `self` and `other` are the same pool (clones of one another).
    pub fn same_pool(&self, other: &CryptoPool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Runs `job` on the pool's threads and awaits it without blocking the
    /// async runtime's thread: for an application's own CPU-heavy work next
    /// to rowseal's, such as serializing a large decrypted list, so that it
    /// neither stalls the runtime's threads (and every request waiting on
    /// them) nor takes a thread of the runtime's blocking pool. A panic in
    /// `job` is [`Error::Worker`].
    ///
    /// ```
    /// # async fn demo() -> rowseal_sqlx::Result<()> {
    /// let pool = rowseal_sqlx::CryptoPool::new(1);
    /// let rows = vec![1u64; 10_000];
    /// let sum = pool.run(move || rows.iter().sum::<u64>()).await?;
    /// assert_eq!(sum, 10_000);
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn run<R, F>(&self, job: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.submit(job).await
    }

    /// The rayon pool, started on first use. A failed start (the system
    /// refused a thread) is [`Error::Worker`] for this call; the next one
    /// tries again.
    fn started(&self) -> Result<&rayon::ThreadPool> {
        if let Some(p) = self.inner.pool.get() {
            return Ok(p);
        }
        let _starting = self
            .inner
            .starting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = self.inner.pool.get() {
            return Ok(p);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.inner.threads)
            .thread_name(|i| format!("rowseal-crypto-{i}"))
            // Every job catches its panics (see `submit`); were one to
            // escape, rayon would abort the process without a handler.
            .panic_handler(|_| {})
            .build()
            .map_err(|_| Error::Worker)?;
        Ok(self.inner.pool.get_or_init(|| pool))
    }

    /// Runs `job` on the pool, started at once; the returned task resolves
    /// to its result without blocking the thread that awaits it, or to
    /// [`Error::Worker`] if `job` panicked (or the pool could not start).
    /// A job whose task was dropped before it began is skipped.
    pub(crate) fn submit<R, F>(&self, job: F) -> PoolTask<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let Ok(pool) = self.started() else {
            return PoolTask(None);
        };
        let (tx, rx) = oneshot::channel();
        pool.spawn(move || {
            if tx.is_closed() {
                return; // nobody waits for it any more
            }
            let out = std::panic::catch_unwind(AssertUnwindSafe(job)).ok();
            let _ = tx.send(out);
        });
        PoolTask(Some(rx))
    }
}

impl fmt::Debug for CryptoPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoPool")
            .field("threads", &self.inner.threads)
            .field("started", &self.inner.pool.get().is_some())
            .finish()
    }
}

/// A job running on a [`CryptoPool`]: resolves to its result, or to
/// [`Error::Worker`] if it panicked or never ran.
#[must_use = "the job's result comes through the task"]
pub(crate) struct PoolTask<R>(Option<oneshot::Receiver<Option<R>>>);

impl<R> Future for PoolTask<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        match self.0.as_mut() {
            None => Poll::Ready(Err(Error::Worker)),
            // The sender dropped without a result (the job unwound past its
            // catch, or the pool went away): Error::Worker, never a hang.
            Some(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.ok().flatten().ok_or(Error::Worker)),
        }
    }
}

/// Maps `f` over `items` on the pool this job runs on, keeping order. Only
/// for jobs of [`CryptoPool::submit`]: on any other thread rayon would start
/// its own global pool.
fn par_map<I: Send, O: Send>(items: Vec<I>, f: impl Fn(I) -> O + Sync + Send) -> Vec<O> {
    debug_assert!(
        rayon::current_thread_index().is_some(),
        "par_map outside the crypto pool"
    );
    items
        .into_par_iter()
        .with_min_len(MIN_ITEMS_PER_TASK)
        .map(f)
        .collect()
}

/// [`par_map`] of a fallible `f`, one result per item: an item whose `f`
/// panicked is [`Error::Worker`], the others' results stand.
fn par_map_each<I: Send, O: Send>(
    items: Vec<I>,
    f: impl Fn(I) -> Result<O> + Sync + Send,
) -> Vec<Result<O>> {
    par_map(items, |item| catch_item(|| f(item)))
}

/// [`par_map_each`] of an `f` that only borrows each item; the items are
/// dropped together, once all are done.
///
/// (Dropping each row as soon as it is decrypted, on the thread that
/// decrypted it, mixes its frees with the allocations of the decrypted
/// values: with glibc's allocator that cost a third more CPU in all, most
/// of it in the threads that make the rows, in `benches/concurrency.rs`.)
fn par_map_each_mut<I: Send, O: Send>(
    mut items: Vec<I>,
    f: impl Fn(&mut I) -> Result<O> + Sync + Send,
) -> Vec<Result<O>> {
    debug_assert!(
        rayon::current_thread_index().is_some(),
        "par_map outside the crypto pool"
    );
    let out = items
        .par_iter_mut()
        .with_min_len(MIN_ITEMS_PER_TASK)
        .map(|item| catch_item(|| f(item)))
        .collect();
    drop(items);
    out
}

/// `f()`, or [`Error::Worker`] if it panicked.
fn catch_item<O>(f: impl FnOnce() -> Result<O>) -> Result<O> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Error::Worker))
}

impl Encryptor {
    /// Whether a batch of `rows` rows goes to the crypto pool.
    pub(super) fn pooled(&self, rows: usize) -> bool {
        rows >= self.parallel_threshold
    }

    /// Maps `f` over owned `items`, one result per item, in order: on the
    /// calling thread for a batch under the threshold, else on the crypto
    /// pool, awaited without blocking the calling thread. The outer error
    /// is the pool's ([`Error::Worker`]).
    pub(super) async fn map_each<I, O, F>(&self, items: Vec<I>, f: F) -> Result<Vec<Result<O>>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(I) -> Result<O> + Send + Sync + 'static,
    {
        if !self.pooled(items.len()) {
            return Ok(items.into_iter().map(f).collect());
        }
        self.pool.submit(move || par_map_each(items, f)).await
    }

    /// [`map_each`](Self::map_each) of an `f` that only borrows each item
    /// (the items are dropped together at the end).
    pub(super) async fn map_each_mut<I, O, F>(
        &self,
        mut items: Vec<I>,
        f: F,
    ) -> Result<Vec<Result<O>>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(&mut I) -> Result<O> + Send + Sync + 'static,
    {
        if !self.pooled(items.len()) {
            return Ok(items.iter_mut().map(f).collect());
        }
        self.pool.submit(move || par_map_each_mut(items, f)).await
    }

    /// [`map_each_mut`](Self::map_each_mut), started at once: a large batch
    /// runs on the pool while the caller goes on (to receive the next chunk,
    /// say) until it awaits the result; a small one is done before this
    /// returns. One result per item, so that the caller can count what
    /// opened and what failed before it fails the whole on the first error.
    pub(super) fn spawn_map_each_mut<I, O, F>(
        &self,
        mut items: Vec<I>,
        f: F,
    ) -> BoxFuture<'static, Result<Vec<Result<O>>>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(&mut I) -> Result<O> + Send + Sync + 'static,
    {
        if !self.pooled(items.len()) {
            let out = items.iter_mut().map(f).collect::<Vec<Result<O>>>();
            return futures_util::future::ready(Ok(out)).boxed();
        }
        self.pool.submit(move || par_map_each_mut(items, f)).boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn keeps_order_and_runs_on_the_pool() {
        let pool = CryptoPool::new(2);
        let out = rt()
            .block_on(pool.submit(|| {
                par_map((0..10_000u32).collect(), |i| {
                    let name = std::thread::current().name().map(str::to_owned);
                    (i * 2, name)
                })
            }))
            .unwrap();
        assert_eq!(out.len(), 10_000);
        for (i, (v, name)) in out.iter().enumerate() {
            assert_eq!(*v, i as u32 * 2);
            assert!(name.as_deref().unwrap().starts_with("rowseal-crypto-"));
        }
    }

    #[test]
    fn a_panicking_job_is_a_worker_error_and_the_pool_goes_on() {
        let pool = CryptoPool::new(1);
        let rt = rt();
        let r = rt.block_on(pool.submit(|| -> u32 { panic!("boom") }));
        assert!(matches!(r, Err(Error::Worker)), "{r:?}");
        // A panic inside a parallel iterator, past the per-item catch.
        let r = rt.block_on(pool.submit(|| {
            par_map((0..1000u32).collect(), |i| {
                if i == 500 {
                    panic!("boom")
                } else {
                    i
                }
            })
        }));
        assert!(matches!(r, Err(Error::Worker)), "{r:?}");
        assert_eq!(rt.block_on(pool.submit(|| 7)).unwrap(), 7);
    }

    #[test]
    fn a_panicking_item_fails_alone() {
        let pool = CryptoPool::new(2);
        let out = rt()
            .block_on(pool.submit(|| {
                par_map_each((0..1000u32).collect(), |i| {
                    if i % 100 == 7 {
                        panic!("item {i}")
                    }
                    Ok(i)
                })
            }))
            .unwrap();
        assert_eq!(out.len(), 1000);
        for (i, r) in out.into_iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(v as usize, i),
                Err(Error::Worker) => assert_eq!(i % 100, 7),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn shared_pools_are_one_per_size() {
        assert!(CryptoPool::shared(3).same_pool(&CryptoPool::shared(3)));
        assert!(!CryptoPool::shared(3).same_pool(&CryptoPool::shared(4)));
        assert!(!CryptoPool::new(3).same_pool(&CryptoPool::new(3)));
        assert!(CryptoPool::global().same_pool(&CryptoPool::global()));
        assert_eq!(CryptoPool::new(0).threads(), 1);
        // Nothing starts before a batch needs it.
        assert!(format!("{:?}", CryptoPool::new(2)).contains("started: false"));
    }
}
