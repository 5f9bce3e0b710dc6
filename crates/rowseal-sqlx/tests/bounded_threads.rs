#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bounded threads under load: 64 concurrent requests, each decrypting 5,000
//! rows (half through `fetch_all`, half through `decrypt_all` of rows they
//! fetched), on a runtime of 2 workers with a crypto pool of 2 threads. The
//! process's thread count, read from `/proc/self/status` every millisecond
//! by a sampling thread, never passes what it was before the load plus the
//! pool's 2: no thread is started per call, none taken from the runtime's
//! blocking pool. (Before the load: the main and test threads, the sampler,
//! the runtime's 2 workers, one sqlx-sqlite thread per pooled connection, all
//! opened beforehand, and the key hierarchy's own thread: 10 here.) Every
//! row comes back as it was written. Then a panic inside the pool (a `sql_type`
//! field whose own decoding panics) is `Error::Worker`, and the pool goes on.
//!
//! The only test of its binary: the test harness runs the tests of one
//! binary on threads of their own, which would count here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Encrypted, Encryptor, Error, SqlxKeyStore};
use rowseal_test_support::db;
use sqlx::sqlite::SqliteJournalMode;
use sqlx::Sqlite;

const WORKERS: usize = 2;
const POOL_THREADS: usize = 2;
const CONNECTIONS: u32 = 4;
const TASKS: usize = 64;
const ROWS: usize = 5_000;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "bt_people", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(encrypt)]
    email: String,
    #[rowseal(encrypt)]
    note: Option<String>,
}

fn person(i: usize) -> Person {
    Person {
        id: i as i64,
        tenant_id: "acme".into(),
        name: format!("Person {i}"),
        email: format!("person.{i}@example.com"),
        note: i.is_multiple_of(3).then(|| format!("note {i}")),
    }
}

/// An integer whose decoding panics on [`TRIP`]: a stand-in for a
/// `sql_type` field's own (buggy) `sqlx::Decode`.
#[derive(Debug, Clone, PartialEq)]
struct Tripwire(i64);

const TRIP: i64 = -1;

impl sqlx::Type<Sqlite> for Tripwire {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <i64 as sqlx::Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <i64 as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, Sqlite> for Tripwire {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <i64 as sqlx::Encode<'q, Sqlite>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for Tripwire {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let v = <i64 as sqlx::Decode<'r, Sqlite>>::decode(value)?;
        if v == TRIP {
            panic!("tripwire decoded");
        }
        Ok(Tripwire(v))
    }
}

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "bt_tripped", record_type = "tripped", tenant = tenant_id, primary_key = id)]
struct Tripped {
    id: i64,
    tenant_id: String,
    #[rowseal(sql_type = "INTEGER", database = "sqlite")]
    wire: Tripwire,
    #[rowseal(encrypt)]
    body: String,
}

/// A field of `/proc/self/status`, as a number.
fn status(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

fn crypto_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("rowseal-crypto"))
        .count()
}

/// A thread that reads the thread count every millisecond and keeps the
/// highest, with the threads' names when it was reached.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    at_max: Arc<Mutex<Vec<String>>>,
    handle: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let at_max = Arc::new(Mutex::new(Vec::new()));
        let (s, m, a) = (stop.clone(), max.clone(), at_max.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n = status("Threads:");
                if n > m.load(Ordering::Relaxed) {
                    m.store(n, Ordering::Relaxed);
                    *a.lock().unwrap() = thread_names();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Sampler {
            stop,
            max,
            at_max,
            handle,
        }
    }

    fn reset(&self) {
        self.max.store(0, Ordering::Relaxed);
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        let names = self.at_max.lock().unwrap().clone();
        (self.max.load(Ordering::Relaxed), names)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
fn thread_count_stays_bounded_under_concurrent_decryption() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let db = db::sqlite_with(CONNECTIONS, |o| o.journal_mode(SqliteJournalMode::Wal)).await;
    let pool = db.pool.clone();
    schema::install(&pool).await.unwrap();
    schema::create_table::<Person, _>(&pool).await.unwrap();
    schema::create_table::<Tripped, _>(&pool).await.unwrap();
    let provider =
        LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
    let keys = Arc::new(KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    ));

    // Written on the calling thread (no batch reaches the threshold), so that
    // the crypto pool starts under the load.
    let people: Arc<Vec<Person>> = Arc::new((0..ROWS).map(person).collect());
    let inline = Encryptor::new(keys.clone()).with_parallel_threshold(usize::MAX);
    inline.insert_many(&pool, &people).await.unwrap();
    let tripped: Vec<Tripped> = (0..100)
        .map(|i| Tripped {
            id: i,
            tenant_id: "acme".into(),
            wire: Tripwire(if i == 42 { TRIP } else { i }),
            body: format!("body {i}"),
        })
        .collect();
    inline.insert_many(&pool, &tripped).await.unwrap();

    let enc = Encryptor::new(keys).with_threads(POOL_THREADS);
    let sql = format!(
        "SELECT {} FROM bt_people WHERE tenant_id = ? ORDER BY id",
        Encryptor::select_list::<Person, Sqlite>()
    );
    // Every connection open (sqlx-sqlite runs a thread per connection), the
    // tenant's keys cached, before counting; a batch under the threshold
    // stays on the calling thread.
    let conns = futures_util::future::join_all((0..CONNECTIONS).map(|_| pool.acquire())).await;
    drop(conns);
    let few: Vec<Person> = enc
        .fetch_all(
            "acme",
            sqlx::query(&format!("{sql} LIMIT 10")).bind("acme"),
            &pool,
        )
        .await
        .unwrap();
    assert_eq!(few[..], people[..10]);
    // usize::MAX: every batch on the calling thread (fetch_all's chunks too).
    let few: Vec<Person> = inline
        .fetch_all(
            "acme",
            sqlx::query(&format!("{sql} LIMIT 10")).bind("acme"),
            &pool,
        )
        .await
        .unwrap();
    assert_eq!(few[..], people[..10]);
    assert_eq!(crypto_threads(), 0, "{:?}", thread_names());

    let sampler = Sampler::start();
    tokio::time::sleep(Duration::from_millis(20)).await;
    sampler.reset();
    let before = status("Threads:");
    let names_before = thread_names();

    // A health check: a 10 ms timer, and how late it fires.
    let stop_health = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn({
        let stop = stop_health.clone();
        async move {
            let mut late = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                late.push(t.elapsed().saturating_sub(Duration::from_millis(10)));
            }
            late
        }
    });

    let t0 = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (enc, pool, sql, people) = (enc.clone(), pool.clone(), sql.clone(), people.clone());
            tokio::spawn(async move {
                let got: Vec<Person> = if i.is_multiple_of(2) {
                    enc.fetch_all("acme", sqlx::query(&sql).bind("acme"), &pool)
                        .await
                        .unwrap()
                } else {
                    let rows = sqlx::query(&sql)
                        .bind("acme")
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                    enc.decrypt_all("acme", &rows).await.unwrap()
                };
                assert_eq!(got.len(), ROWS);
                assert!(got[..] == people[..], "task {i}: rows differ");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    stop_health.store(true, Ordering::Relaxed);
    let mut late = health.await.unwrap();
    late.sort();
    let (max, at_max) = sampler.finish();

    let bound = before + POOL_THREADS;
    println!(
        "{TASKS} x {ROWS} rows in {elapsed:.2?}: threads before {before}, max {max} (bound {bound}); \
         health timer lateness p50 {:.2?}, p99 {:.2?}, max {:.2?} over {} ticks",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or_default(),
        late.len(),
    );
    assert!(
        max <= bound,
        "{max} threads at the peak, bound {bound}\nbefore: {names_before:?}\nat the peak: {at_max:?}"
    );
    assert_eq!(crypto_threads(), POOL_THREADS, "{:?}", thread_names());

    // A panic on the pool (here a sql_type field's own decoding, on rows
    // moved there by fetch_all) fails the call with Error::Worker.
    let enc = enc.with_parallel_threshold(16);
    let sql = format!(
        "SELECT {} FROM bt_tripped WHERE tenant_id = ? ORDER BY id",
        Encryptor::select_list::<Tripped, Sqlite>()
    );
    let r = enc
        .fetch_all::<Tripped, _, _>("acme", sqlx::query(&sql).bind("acme"), &pool)
        .await;
    assert!(matches!(r, Err(Error::Worker)), "{r:?}");
    // The pool goes on, with the same threads.
    let r: Vec<Tripped> = enc
        .fetch_all(
            "acme",
            sqlx::query(&sql.replace("ORDER BY", "AND id <> 42 ORDER BY")).bind("acme"),
            &pool,
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 99);
    assert_eq!(r[50], tripped[51]);
    assert_eq!(crypto_threads(), POOL_THREADS);

    db.finish().await;
}
