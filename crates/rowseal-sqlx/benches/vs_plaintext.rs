//! Encrypted vs plaintext sqlx, side by side in one run, on SQLite and
//! PostgreSQL: bulk insert, select + decrypt, and peak memory while streaming.
//!
//! ```text
//! cargo bench -p rowseal-sqlx --features postgres,sqlite --bench vs_plaintext -- \
//!     [--rows 100000] [--stream-rows 1000000] [--db sqlite|postgres|both] [--rounds 2]
//! ```
//! The encrypted table has three encrypted fields and one 64-bit HMAC blind
//! index (computed per row with `IndexKey::blind_index_key(..).compute(..)`,
//! inside the timed insert), the plaintext table the same columns in the
//! clear; both get the same rows, in the same batches (one multi-row INSERT of
//! the same number of rows per round trip). PostgreSQL:
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`),
//! a fresh database dropped at the end (rowseal-test-support; unreachable: a
//! loud skip, a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rowseal_core::{BlindIndexKey, KeyHierarchy, KeyScope, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, Encrypted, Encryptor, ReadModel, SqlxKeyStore};
use rowseal_test_support::db;

#[derive(Encrypted, Clone)]
#[rowseal(table = "bench_enc", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(encrypt)]
    email: String,
    #[rowseal(encrypt)]
    ssn: String,
    email_bidx: i64,
}

type PlainRow = (i64, String, String, String, String, i64);

const TENANTS: usize = 10;

struct Args {
    rows: usize,
    stream_rows: usize,
    db: String,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        rows: 100_000,
        stream_rows: 1_000_000,
        db: "both".into(),
        rounds: 2,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--rows" => a.rows = next.parse().expect("--rows N"),
            "--stream-rows" => a.stream_rows = next.parse().expect("--stream-rows N"),
            "--db" => a.db = next,
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            _ => {
                i += 1; // `--bench` and the like
                continue;
            }
        }
        i += 2;
    }
    a
}

fn data(from: usize, n: usize) -> Vec<PlainRow> {
    (from..from + n)
        .map(|i| {
            (
                i as i64,
                format!("tenant-{}", i % TENANTS),
                format!("Person Number {i} Lastname"),
                format!("person.{i}@example.com"),
                format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
                0,
            )
        })
        .collect()
}

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak-RSS counter (VmHWM) of this process.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The median of per-round ratios (rounds alternate plaintext and
/// encrypted, so slow phases of the machine hit both sides).
fn median(mut ratios: Vec<f64>) -> f64 {
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

struct BlindIndexes {
    keys: Vec<(String, BlindIndexKey)>,
}

impl BlindIndexes {
    async fn new(keys: &KeyHierarchy) -> Self {
        let mut out = Vec::new();
        for t in 0..TENANTS {
            let tenant = format!("tenant-{t}");
            let ik = keys
                .current_index_key(&KeyScope::Tenant(tenant.clone()))
                .await
                .unwrap();
            out.push((tenant, ik.blind_index_key("person", "email").unwrap()));
        }
        BlindIndexes { keys: out }
    }

    fn compute(&self, tenant: &str, email: &str) -> i64 {
        let key = &self
            .keys
            .iter()
            .find(|(t, _)| t == tenant)
            .expect("tenant")
            .1;
        let mac = key.compute(email.trim().to_lowercase().as_bytes());
        i64::from_be_bytes(mac[..8].try_into().unwrap())
    }
}

fn to_people(rows: &[PlainRow], bidx: &BlindIndexes) -> Vec<Person> {
    rows.iter()
        .map(|(id, t, n, e, s, _)| Person {
            id: *id,
            tenant_id: t.clone(),
            name: n.clone(),
            email: e.clone(),
            ssn: s.clone(),
            email_bidx: bidx.compute(t, e),
        })
        .collect()
}

macro_rules! run_db {
    ($db:ty, $pool:expr, $args:expr, $label:expr) => {{
        let pool: sqlx::Pool<$db> = $pool;
        let args: &Args = $args;
        type DB = $db;
        println!("\n=== {} ({} rows, {} tenants) ===", $label, args.rows, TENANTS);
        schema::install(&pool).await.unwrap();
        schema::create_table::<Person, _>(&pool).await.unwrap();
        let mut ddl = String::from("CREATE TABLE IF NOT EXISTS bench_plain (id BIGINT PRIMARY KEY, tenant_id ");
        ddl.push_str(<DB as Backend>::column_type(rowseal_sqlx::SqlType::Text, true));
        ddl.push_str(" NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, ssn TEXT NOT NULL, email_bidx BIGINT NOT NULL)");
        sqlx::query(&ddl).execute(&pool).await.unwrap();
        let sized_ddl = schema::create_table_sql::<Person, DB>()[0].replace("bench_enc", "bench_sized");
        sqlx::query(&sized_ddl).execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX IF NOT EXISTS bench_sized_kv ON bench_sized (tenant_id, rowseal_key_version)")
            .execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX IF NOT EXISTS bench_plain_tenant ON bench_plain (tenant_id)")
            .execute(&pool).await.unwrap();
        for t in ["bench_enc", "bench_plain", "bench_sized"] {
            sqlx::query(&format!("CREATE INDEX IF NOT EXISTS {t}_bidx ON {t} (email_bidx)"))
                .execute(&pool).await.unwrap();
        }

        let provider = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
        let keys = Arc::new(KeyHierarchy::new(Arc::new(provider), Arc::new(SqlxKeyStore::new(pool.clone()))));
        let enc = Encryptor::new(keys.clone());
        let bidx = BlindIndexes::new(&keys).await;
        for t in 0..TENANTS {
            keys.current_tenant_key(&format!("tenant-{t}")).await.unwrap();
        }

        // Streaming first, before the other phases grow the heap: fill the
        // encrypted table with --stream-rows rows (in small chunks), then
        // stream a tenth of it and all of it, resetting the peak RSS before each.
        let sel_enc = format!("SELECT {} FROM bench_enc", Encryptor::select_list::<Person, DB>());
        let mut have = 0;
        while have < args.stream_rows {
            let n = (args.stream_rows - have).min(20_000);
            let people = to_people(&data(have, n), &bidx);
            enc.insert_many(&pool, &people).await.unwrap();
            have += n;
        }
        let mut peaks = Vec::new();
        for limit in [args.stream_rows / 10, args.stream_rows] {
            reset_peak();
            let before = status("VmRSS:");
            let sql = format!("{sel_enc} WHERE id < {limit}");
            let t0 = Instant::now();
            let mut stream = enc.fetch_stream::<Person, DB, _>(rowseal_sqlx::TenantScope::Any, sqlx::query::<DB>(&sql), &pool);
            let mut n = 0usize;
            let mut bytes = 0usize;
            while let Some(p) = stream.try_next().await.unwrap() {
                n += 1;
                bytes += p.name.len();
            }
            let d = t0.elapsed();
            assert_eq!(n, limit);
            assert!(bytes > 0 || n == 0);
            let peak = status("VmHWM:");
            println!(
                "stream {n:>8} rows: {:>9.0} rows/s, RSS before {:.1} MiB, peak {:.1} MiB",
                rate(n, d), mib(before), mib(peak)
            );
            peaks.push(peak);
        }
        let rows = data(0, args.rows);
        // Same rows per INSERT statement for both sides.
        let batch = <DB as Backend>::MAX_PARAMS / (Person::model().fields.len() + 2);
        let mut insert_ratios = Vec::new();
        for round in 0..args.rounds {
            sqlx::query("DELETE FROM bench_plain").execute(&pool).await.unwrap();
            sqlx::query("DELETE FROM bench_enc").execute(&pool).await.unwrap();

            let t0 = Instant::now();
            let mut conn = pool.acquire().await.unwrap();
            for chunk in rows.chunks(batch) {
                let mut qb = sqlx::QueryBuilder::<DB>::new(
                    "INSERT INTO bench_plain (id, tenant_id, name, email, ssn, email_bidx) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.0).push_bind(&r.1).push_bind(&r.2).push_bind(&r.3).push_bind(&r.4).push_bind(r.5);
                });
                qb.build().execute(&mut *conn).await.unwrap();
            }
            drop(conn);
            let plain = t0.elapsed();

            // The application holds its structs already; the blind index is
            // computed in the timed part.
            let mut people = to_people(&rows, &bidx);
            let t0 = Instant::now();
            for p in &mut people {
                p.email_bidx = bidx.compute(&p.tenant_id, &p.email);
            }
            let n = enc.insert_many(&pool, &people).await.unwrap();
            let encd = t0.elapsed();
            assert_eq!(n as usize, args.rows);

            // The database's share: rows of the encrypted sizes (random bytes,
            // no crypto) inserted the same way into a copy of the table.
            let sealed_like: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> = people
                .iter()
                .map(|p| {
                    let f = |s: &str| vec![0x5a_u8; s.len() + 31];
                    (f(&p.name), f(&p.email), f(&p.ssn), vec![0xa5_u8; 71])
                })
                .collect();
            sqlx::query("DELETE FROM bench_sized").execute(&pool).await.unwrap();
            let t0 = Instant::now();
            let mut conn = pool.acquire().await.unwrap();
            for (chunk, rows_chunk) in sealed_like.chunks(batch).zip(people.chunks(batch)) {
                let mut qb = sqlx::QueryBuilder::<DB>::new(
                    "INSERT INTO bench_sized (id, tenant_id, name, email, ssn, email_bidx, rowseal_header, rowseal_key_version) ",
                );
                qb.push_values(chunk.iter().zip(rows_chunk), |mut b, (c, p)| {
                    b.push_bind(p.id).push_bind(&p.tenant_id).push_bind(&c.0).push_bind(&c.1)
                        .push_bind(&c.2).push_bind(p.email_bidx).push_bind(&c.3).push_bind(1_i64);
                });
                qb.build().execute(&mut *conn).await.unwrap();
            }
            drop(conn);
            let sized = t0.elapsed();
            println!(
                "insert round {round}: rows of encrypted size without crypto {:>9.0} rows/s",
                rate(args.rows, sized)
            );
            println!(
                "insert round {round}: plaintext {:>9.0} rows/s, encrypted {:>9.0} rows/s, ratio {:.2}x",
                rate(args.rows, plain), rate(args.rows, encd), plain.as_secs_f64() / encd.as_secs_f64()
            );
            insert_ratios.push(plain.as_secs_f64() / encd.as_secs_f64());
        }
        let insert_ratio = median(insert_ratios);

        let mut select_ratios = Vec::new();
        for round in 0..args.rounds.max(1) + 1 {
            let t0 = Instant::now();
            let got: Vec<PlainRow> = sqlx::query_as("SELECT id, tenant_id, name, email, ssn, email_bidx FROM bench_plain")
                .fetch_all(&pool).await.unwrap();
            let plain = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            drop(got);
            let t0 = Instant::now();
            let got: Vec<Person> = enc.fetch_all(rowseal_sqlx::TenantScope::Any, sqlx::query::<DB>(&sel_enc), &pool).await.unwrap();
            let encd = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            drop(got);
            // The same encrypted rows fetched without decrypting: how much of
            // the gap is the database moving bigger rows, how much is crypto.
            let t0 = Instant::now();
            type Raw = (i64, String, Vec<u8>, Vec<u8>, Vec<u8>, i64, Vec<u8>, i64);
            let raw: Vec<Raw> = sqlx::query_as(&sel_enc).fetch_all(&pool).await.unwrap();
            let raw_t = t0.elapsed();
            assert_eq!(raw.len(), args.rows);
            drop(raw);
            println!(
                "select round {round}: encrypted rows fetched without decrypting {:>9.0} rows/s",
                rate(args.rows, raw_t)
            );
            println!(
                "select round {round}: plaintext {:>9.0} rows/s, select+decrypt {:>9.0} rows/s, ratio {:.2}x",
                rate(args.rows, plain), rate(args.rows, encd), plain.as_secs_f64() / encd.as_secs_f64()
            );
            select_ratios.push(plain.as_secs_f64() / encd.as_secs_f64());
        }
        let select_ratio = median(select_ratios);

        // CPU cost of decryption alone (rows already fetched), one thread and all.
        let fetched = <DB as Backend>::fetch_all(&pool, &sel_enc, vec![]).await.unwrap();
        for threads in [1, 2] {
            let e = enc.clone().with_threads(threads);
            let t0 = Instant::now();
            let got: Vec<Person> = e.decrypt_all(rowseal_sqlx::TenantScope::Any, &fetched).await.unwrap();
            let d = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            println!(
                "decrypt only ({threads} thread{}): {:.2} us/row",
                if threads > 1 { "s" } else { "" },
                d.as_secs_f64() * 1e6 / args.rows as f64
            );
        }
        drop(fetched);

        println!(
            "SUMMARY {}: insert {:.2}x plaintext (median of rounds; target >= 0.80), select+decrypt {:.2}x plaintext (median; target >= 0.60), \
             streaming peak RSS {:.1} MiB at {} rows vs {:.1} MiB at {} rows",
            $label, insert_ratio, select_ratio,
            mib(peaks[0]), args.stream_rows / 10, mib(peaks[1]), args.stream_rows
        );
        pool.close().await;
    }};
}

async fn sqlite(args: &Args) {
    use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let db = db::sqlite_with(4, |o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    })
    .await;
    run_db!(sqlx::Sqlite, db.pool.clone(), args, "SQLite");
    db.finish().await;
}

async fn postgres(args: &Args) {
    let Some(db) = db::postgres(4).await else {
        return;
    };
    run_db!(sqlx::Postgres, db.pool.clone(), args, "PostgreSQL");
    db.finish().await;
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "rowseal vs plaintext sqlx: {} cores available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    rt.block_on(async {
        if args.db == "sqlite" || args.db == "both" {
            sqlite(&args).await;
        }
        if args.db == "postgres" || args.db == "both" {
            postgres(&args).await;
        }
    });
}
