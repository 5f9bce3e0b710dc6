//! Concurrent requests against the crypto pool, on SQLite: `--tasks`
//! requests at once (64), each decrypting `--rows` rows (5,000; half through
//! `fetch_all`, half through `decrypt_all` of rows they fetched), on a
//! runtime of 2 workers, while a health check wakes every 10 ms and a
//! thread reads the process's thread count from `/proc/self/status` every
//! millisecond. Prints, for each configuration, the time taken, the thread
//! count before and at its peak, and how late the health check's timer
//! fired (p50, p99, max; a health endpoint on the same runtime answers that
//! much later than it would idle). The configurations alternate, round
//! after round (`--rounds`, 5), each round printing its own line; at the
//! end, the medians across rounds of each figure, per configuration.
//! Asserts nothing.
//!
//! ```text
//! cargo bench -p rowseal-sqlx --features sqlite --bench concurrency -- \
//!     [--tasks 64] [--rows 5000] [--rounds 5] [--mix both|fetch_all|decrypt_all] [--threads N]
//!     [--modes inline,pool]
//! ```
//! Configurations: `pool`, the default encryptor (the process-wide crypto
//! pool, one thread per core); `inline`, every batch on the calling thread
//! (`with_parallel_threshold(usize::MAX)`), for comparison.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Encrypted, Encryptor, SqlxKeyStore};
use rowseal_test_support::db;
use sqlx::sqlite::SqliteJournalMode;
use sqlx::Sqlite;

const WORKERS: usize = 2;
const CONNECTIONS: u32 = 4;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "cc_people", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(encrypt)]
    email: String,
    #[rowseal(encrypt)]
    ssn: String,
}

struct Args {
    tasks: usize,
    rows: usize,
    rounds: usize,
    /// `both` (half and half), `fetch_all` or `decrypt_all`.
    mix: String,
    /// The pool's threads (default: one per core).
    threads: Option<usize>,
    /// Which configurations to run, comma-separated (`inline,pool`).
    modes: String,
}

fn args() -> Args {
    let mut a = Args {
        tasks: 64,
        rows: 5_000,
        rounds: 5,
        mix: "both".into(),
        threads: None,
        modes: "inline,pool".into(),
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--tasks" => a.tasks = next.parse().expect("--tasks N"),
            "--rows" => a.rows = next.parse().expect("--rows N"),
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            "--mix" => a.mix = next,
            "--modes" => a.modes = next,
            "--threads" => a.threads = Some(next.parse().expect("--threads N")),
            _ => {
                i += 1; // `--bench` and the like
                continue;
            }
        }
        i += 2;
    }
    a
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11) // utime and stime are fields 14 and 15
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One round of one configuration.
#[derive(Clone, Copy)]
struct Sample {
    elapsed: Duration,
    cpu: Duration,
    peak_threads: usize,
    p99: Duration,
    max: Duration,
}

/// The median of `f` over `samples` (the upper one of an even count).
fn median<T: Ord + Copy>(samples: &[Sample], f: impl Fn(&Sample) -> T) -> Option<T> {
    let mut v: Vec<T> = samples.iter().map(f).collect();
    v.sort();
    v.get(v.len() / 2).copied()
}

/// One configuration under the load.
async fn measure(label: &str, enc: &Encryptor, pool: &sqlx::SqlitePool, args: &Args) -> Sample {
    let sql = format!(
        "SELECT {} FROM cc_people WHERE tenant_id = ? ORDER BY id",
        Encryptor::select_list::<Person, Sqlite>()
    );
    // The thread sampler.
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let sampler = std::thread::spawn({
        let (stop, max) = (stop.clone(), max.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(threads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = threads();
    max.store(before, Ordering::Relaxed);

    let health_stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn({
        let stop = health_stop.clone();
        async move {
            let mut late = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                late.push((
                    t.elapsed().saturating_sub(Duration::from_millis(10)),
                    Instant::now(),
                ));
            }
            late
        }
    });

    let t0 = Instant::now();
    let cpu0 = cpu_time();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|i| {
            let (enc, pool, sql) = (enc.clone(), pool.clone(), sql.clone());
            let fetch_all = match args.mix.as_str() {
                "fetch_all" => true,
                "decrypt_all" => false,
                _ => i.is_multiple_of(2),
            };
            tokio::spawn(async move {
                let got: Vec<Person> = if fetch_all {
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
                got.len()
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    health_stop.store(true, Ordering::Relaxed);
    let ticks = health.await.unwrap();
    // When the latest tick fired, from the start of the load.
    let worst_at = ticks
        .iter()
        .max_by_key(|(d, _)| *d)
        .map_or(Duration::ZERO, |(_, at)| at.saturating_duration_since(t0));
    let mut late: Vec<Duration> = ticks.into_iter().map(|(d, _)| d).collect();
    late.sort();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(total, args.tasks * args.rows);
    let over = late
        .iter()
        .filter(|d| **d > Duration::from_millis(50))
        .count();
    println!(
        "{label:<7} {:>6.0} ms ({:>6.0} rows/s, CPU {:>5.0} ms)  threads before {before:>3}, peak {:>3}  \
         health lateness p50 {:>6.2} ms, p99 {:>6.2} ms, max {:>6.2} ms at {:>5.0} ms ({} of {} ticks over 50 ms)",
        ms(elapsed),
        total as f64 / elapsed.as_secs_f64(),
        ms(cpu),
        max.load(Ordering::Relaxed),
        ms(percentile(&late, 0.5)),
        ms(percentile(&late, 0.99)),
        ms(late.last().copied().unwrap_or_default()),
        ms(worst_at),
        over,
        late.len(),
    );
    Sample {
        elapsed,
        cpu,
        peak_threads: max.load(Ordering::Relaxed),
        p99: percentile(&late, 0.99),
        max: late.last().copied().unwrap_or_default(),
    }
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = db::sqlite_with(CONNECTIONS, |o| o.journal_mode(SqliteJournalMode::Wal)).await;
        let pool = db.pool.clone();
        schema::install(&pool).await.unwrap();
        schema::create_table::<Person, _>(&pool).await.unwrap();
        let provider =
            LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
        let keys = Arc::new(KeyHierarchy::new(
            Arc::new(provider),
            Arc::new(SqlxKeyStore::new(pool.clone())),
        ));
        let inline = Encryptor::new(keys.clone()).with_parallel_threshold(usize::MAX);
        let people: Vec<Person> = (0..args.rows)
            .map(|i| Person {
                id: i as i64,
                tenant_id: "acme".into(),
                name: format!("Person Number {i} Lastname"),
                email: format!("person.{i}@example.com"),
                ssn: format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
            })
            .collect();
        inline.insert_many(&pool, &people).await.unwrap();
        // Every connection open and the tenant's keys cached before counting.
        let conns = futures_util::future::join_all((0..CONNECTIONS).map(|_| pool.acquire())).await;
        drop(conns);
        let pooled = match args.threads {
            Some(n) => Encryptor::new(keys).with_threads(n),
            None => Encryptor::new(keys),
        };
        println!(
            "=== {} requests x {} rows ({}), {WORKERS} runtime workers, {} cores, \
             {CONNECTIONS} SQLite connections, crypto pool of {} threads ===",
            args.tasks,
            args.rows,
            args.mix,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            pooled.crypto_pool().threads(),
        );
        let modes: Vec<&str> = args.modes.split(',').collect();
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
        for _ in 0..args.rounds {
            for (mode, out) in modes.iter().zip(&mut samples) {
                let enc = match *mode {
                    "inline" => &inline,
                    "pool" => &pooled,
                    other => panic!("--modes: {other}?"),
                };
                out.push(measure(mode, enc, &pool, &args).await);
            }
        }
        println!("--- medians of {} alternating rounds ---", args.rounds);
        for (mode, s) in modes.iter().zip(&samples) {
            let d = |f: fn(&Sample) -> Duration| ms(median(s, f).unwrap_or_default());
            println!(
                "{mode:<7} {:>6.0} ms (CPU {:>5.0} ms)  peak threads {:>3}  health lateness p99 {:>6.2} ms, max {:>6.2} ms",
                d(|x| x.elapsed),
                d(|x| x.cpu),
                median(s, |x| x.peak_threads).unwrap_or(0),
                d(|x| x.p99),
                d(|x| x.max),
            );
        }
        db.finish().await;
    });
}
