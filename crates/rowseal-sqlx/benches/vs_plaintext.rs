//! rowseal against what a user would otherwise write, side by side in one
//! run, on SQLite and PostgreSQL: bulk insert and select + decrypt.
//!
//! ```text
//! cargo bench -p rowseal-sqlx --features postgres,sqlite,derive --bench vs_plaintext -- \
//!     [--rows 50000] [--db sqlite|postgres|both] [--rounds 3]
//! ```
//!
//! The model is shaped like a real one: three encrypted fields, one of them
//! with a declared 64-bit blind index, in the table (and database indexes)
//! rowseal's own `schema::create_table` makes. Each round times, one after
//! another (the order alternates between rounds, so that slow phases of the
//! machine hit every side), the same rows inserted four ways:
//!
//! - **plaintext**: the best path a user would write for a plaintext table
//!   with the same lookup index (`(tenant_id, email)`): PostgreSQL
//!   `INSERT … SELECT * FROM UNNEST($1, …)`, SQLite multi-row `VALUES`,
//!   1,000 rows a statement;
//! - **control**: rows of exactly the encrypted sizes (fixed bytes, no
//!   crypto at all) through rowseal's statement shape (its columns, its
//!   table and indexes, its rows per statement): what the database costs;
//! - **naive**: the encryption a user might hand-write: AES-256-GCM-SIV per
//!   field under one application key (random nonce) and an HMAC-SHA256 blind
//!   index, through the same statement;
//! - **rowseal**: `Encryptor::insert_many`.
//!
//! Every side inserts a round's rows in one transaction (how a bulk load is
//! written). Reads: `fetch_all` (select + decrypt) against the same rows
//! fetched without decrypting (the control) and against the plaintext
//! select. Ratios are throughput ratios (rowseal / baseline: above 1 is
//! faster than the baseline), medians of the rounds. PostgreSQL:
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`),
//! a fresh database dropped at the end (rowseal-test-support; unreachable: a
//! loud skip, a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, Encrypted, Encryptor, SqlxKeyStore, TenantScope};
use rowseal_test_support::db;
use sha2::Sha256;

#[derive(Encrypted, Clone)]
#[rowseal(table = "bench_enc", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 64, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(encrypt)]
    ssn: String,
}

const TENANTS: usize = 10;
/// Rows per statement of the plaintext best path.
const PLAIN_BATCH: usize = 1000;

struct Args {
    rows: usize,
    db: String,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        rows: 50_000,
        db: "both".into(),
        rounds: 3,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--rows" => a.rows = next.parse().expect("--rows N"),
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

fn people(n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| Person {
            id: i as i64,
            tenant_id: format!("tenant-{}", i % TENANTS),
            name: format!("Person Number {i} Lastname"),
            email: format!("person.{i}@example.com"),
            ssn: format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
        })
        .collect()
}

/// The median of per-round ratios.
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

/// One row as rowseal's statement takes it, built outside rowseal: the
/// control (sizes only) and the naive encryption.
struct RawRow {
    id: i64,
    tenant: String,
    name: Vec<u8>,
    email: Vec<u8>,
    ssn: Vec<u8>,
    header: Vec<u8>,
    index: i64,
}

/// How much bigger than its plaintext a stored value is (per field: the
/// envelope), and the key header's size, read from a row rowseal wrote.
struct Sizes {
    field_overhead: [usize; 3],
    header: usize,
}

/// The hand-written encryption of the naive baseline.
struct Naive {
    aead: Aes256GcmSiv,
    mac: Hmac<Sha256>,
}

impl Naive {
    fn new() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let aead = Aes256GcmSiv::new_from_slice(&key).unwrap();
        rand::thread_rng().fill_bytes(&mut key);
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        Naive { aead, mac }
    }

    fn seal(&self, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(
            self.aead
                .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
                .unwrap(),
        );
        out
    }

    fn index(&self, tenant: &str, email: &str) -> i64 {
        let mut mac = self.mac.clone();
        mac.update(tenant.as_bytes());
        mac.update(&[0]);
        mac.update(email.trim().to_lowercase().as_bytes());
        i64::from_be_bytes(mac.finalize().into_bytes()[..8].try_into().unwrap())
    }

    fn row(&self, p: &Person, header: usize) -> RawRow {
        RawRow {
            id: p.id,
            tenant: p.tenant_id.clone(),
            name: self.seal(&p.name),
            email: self.seal(&p.email),
            ssn: self.seal(&p.ssn),
            header: vec![0xa5; header],
            index: self.index(&p.tenant_id, &p.email),
        }
    }
}

fn sized_row(p: &Person, s: &Sizes) -> RawRow {
    RawRow {
        id: p.id,
        tenant: p.tenant_id.clone(),
        name: vec![0x5a; p.name.len() + s.field_overhead[0]],
        email: vec![0x5a; p.email.len() + s.field_overhead[1]],
        ssn: vec![0x5a; p.ssn.len() + s.field_overhead[2]],
        header: vec![0xa5; s.header],
        index: (p.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as i64,
    }
}

/// The statements that bind a column as one array: PostgreSQL's
/// (`UNNEST`); SQLite takes the `VALUES` form, never these.
trait Unnest: Backend {
    /// The plaintext best path: a batch of rows, a column an array.
    async fn plain(conn: &mut <Self as sqlx::Database>::Connection, rows: &[Person]);
    /// A batch of raw rows through rowseal's statement shape.
    async fn raw(
        conn: &mut <Self as sqlx::Database>::Connection,
        table: &str,
        columns: &str,
        rows: &[RawRow],
    );
}

impl Unnest for sqlx::Postgres {
    async fn plain(conn: &mut sqlx::PgConnection, rows: &[Person]) {
        sqlx::query(
            "INSERT INTO bench_plain (id, tenant_id, name, email, ssn) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(rows.iter().map(|p| p.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.tenant_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.email.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.ssn.clone()).collect::<Vec<_>>())
        .execute(conn)
        .await
        .unwrap();
    }

    async fn raw(conn: &mut sqlx::PgConnection, table: &str, columns: &str, rows: &[RawRow]) {
        sqlx::query(&format!(
            "INSERT INTO {table} ({columns}) \
             SELECT * FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(rows.iter().map(|r| Some(r.id)).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| Some(r.tenant.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| Some(r.name.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| Some(r.email.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| Some(r.ssn.clone())).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| Some(r.header.clone()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|_| Some(1_i64)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| Some(r.index)).collect::<Vec<_>>())
        .bind(rows.iter().map(|_| Some(1_i64)).collect::<Vec<_>>())
        .bind(rows.iter().map(|_| None::<i64>).collect::<Vec<_>>())
        .bind(rows.iter().map(|_| None::<i64>).collect::<Vec<_>>())
        .execute(conn)
        .await
        .unwrap();
    }
}

impl Unnest for sqlx::Sqlite {
    async fn plain(_: &mut sqlx::SqliteConnection, _: &[Person]) {
        unreachable!("SQLite has no array parameters")
    }

    async fn raw(_: &mut sqlx::SqliteConnection, _: &str, _: &str, _: &[RawRow]) {
        unreachable!("SQLite has no array parameters")
    }
}

macro_rules! run_db {
    ($db:ty, $pool:expr, $args:expr, $label:expr) => {{
        let pool: sqlx::Pool<$db> = $pool;
        let args: &Args = $args;
        type DB = $db;
        let pg = <DB as Backend>::DIALECT == "postgres";
        println!("\n=== {} ({} rows, {} tenants) ===", $label, args.rows, TENANTS);
        schema::install(&pool).await.unwrap();
        schema::create_table::<Person, _>(&pool).await.unwrap();
        // The control and the naive baseline get rowseal's own table and
        // indexes under other names.
        for t in ["bench_sized", "bench_naive"] {
            for stmt in schema::create_table_sql::<Person, DB>() {
                sqlx::query(&stmt.replace("bench_enc", t)).execute(&pool).await.unwrap();
            }
        }
        let mut ddl = String::from("CREATE TABLE IF NOT EXISTS bench_plain (id BIGINT PRIMARY KEY, tenant_id ");
        ddl.push_str(<DB as Backend>::column_type(rowseal_sqlx::SqlType::Text, true));
        ddl.push_str(" NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, ssn TEXT NOT NULL)");
        sqlx::query(&ddl).execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX IF NOT EXISTS bench_plain_email ON bench_plain (tenant_id, email)")
            .execute(&pool).await.unwrap();

        let provider = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
        let keys = Arc::new(KeyHierarchy::new(Arc::new(provider), Arc::new(SqlxKeyStore::new(pool.clone()))));
        let enc = Encryptor::new(keys.clone());
        let rows = people(args.rows);

        // Every tenant's keys made (outside the timed transactions: on
        // SQLite a key is created through the key store's own connection,
        // which cannot write while a transaction holds the write lock), and
        // the envelope's sizes read from a row rowseal wrote.
        enc.insert_many(&pool, &rows[..TENANTS]).await.unwrap();
        let (n, e, s, h): (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) =
            sqlx::query_as("SELECT name, email, ssn, rowseal_header FROM bench_enc WHERE id = 0")
                .fetch_one(&pool).await.unwrap();
        let sizes = Sizes {
            field_overhead: [
                n.len() - rows[0].name.len(),
                e.len() - rows[0].email.len(),
                s.len() - rows[0].ssn.len(),
            ],
            header: h.len(),
        };
        // rowseal's write columns, in its statement's order (its table's:
        // fields, header, key version, each blind-index slot's value and
        // version), and its rows per statement.
        let names: Vec<(String,)> = sqlx::query_as(if pg {
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'bench_enc' ORDER BY ordinal_position"
        } else {
            "SELECT name FROM pragma_table_info('bench_enc')"
        })
        .fetch_all(&pool).await.unwrap();
        let names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
        assert_eq!(names.len(), 11, "{names:?}");
        assert_eq!(&names[5..7], ["rowseal_header", "rowseal_key_version"], "{names:?}");
        let raw_columns = names.join(", ");
        let raw_batch = <DB as Backend>::MAX_PARAMS / names.len();
        let naive = Naive::new();

        // Each side's insert of every row, in one transaction.
        async fn clear(pool: &sqlx::Pool<DB>) {
            for t in ["bench_plain", "bench_enc", "bench_sized", "bench_naive"] {
                sqlx::query(&format!("DELETE FROM {t}")).execute(pool).await.unwrap();
            }
            if <DB as Backend>::DIALECT == "postgres" {
                sqlx::query("VACUUM").execute(pool).await.unwrap();
            }
        }
        async fn plain_insert(pool: &sqlx::Pool<DB>, rows: &[Person]) -> Duration {
            let t0 = Instant::now();
            let mut tx = pool.begin().await.unwrap();
            for chunk in rows.chunks(PLAIN_BATCH) {
                if <DB as Backend>::DIALECT == "postgres" {
                    <DB as Unnest>::plain(&mut *tx, chunk).await;
                } else {
                    let mut qb = sqlx::QueryBuilder::<DB>::new(
                        "INSERT INTO bench_plain (id, tenant_id, name, email, ssn) ",
                    );
                    qb.push_values(chunk, |mut b, p| {
                        b.push_bind(p.id).push_bind(&p.tenant_id).push_bind(&p.name)
                            .push_bind(&p.email).push_bind(&p.ssn);
                    });
                    qb.build().execute(&mut *tx).await.unwrap();
                }
            }
            tx.commit().await.unwrap();
            t0.elapsed()
        }
        /// Rows built by `make` (timed: the naive side encrypts here)
        /// through rowseal's statement shape into `table`.
        async fn raw_insert(
            pool: &sqlx::Pool<DB>,
            table: &str,
            columns: &str,
            batch: usize,
            rows: &[Person],
            make: &(dyn Fn(&Person) -> RawRow + Sync),
        ) -> Duration {
            let t0 = Instant::now();
            let mut tx = pool.begin().await.unwrap();
            for chunk in rows.chunks(batch) {
                let raw: Vec<RawRow> = chunk.iter().map(make).collect();
                if <DB as Backend>::DIALECT == "postgres" {
                    <DB as Unnest>::raw(&mut *tx, table, columns, &raw).await;
                } else {
                    let mut qb = sqlx::QueryBuilder::<DB>::new(format!("INSERT INTO {table} ({columns}) "));
                    qb.push_values(raw, |mut b, r| {
                        b.push_bind(r.id).push_bind(r.tenant).push_bind(r.name).push_bind(r.email)
                            .push_bind(r.ssn).push_bind(r.header).push_bind(1_i64).push_bind(r.index)
                            .push_bind(1_i64).push_bind(None::<i64>).push_bind(None::<i64>);
                    });
                    qb.build().execute(&mut *tx).await.unwrap();
                }
            }
            tx.commit().await.unwrap();
            t0.elapsed()
        }

        let (mut vs_plain, mut vs_control, mut vs_naive) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            clear(&pool).await;
            let mut times = [Duration::ZERO; 4];
            // Alternate the order: even rounds rowseal first, odd rounds last.
            let order: [usize; 4] = if round % 2 == 0 { [3, 0, 1, 2] } else { [0, 1, 2, 3] };
            for side in order {
                times[side] = match side {
                    0 => plain_insert(&pool, &rows).await,
                    1 => raw_insert(&pool, "bench_sized", &raw_columns, raw_batch, &rows, &|p| sized_row(p, &sizes)).await,
                    2 => raw_insert(&pool, "bench_naive", &raw_columns, raw_batch, &rows, &|p| naive.row(p, sizes.header)).await,
                    _ => {
                        let t0 = Instant::now();
                        let mut tx = pool.begin().await.unwrap();
                        let n = enc.insert_many(&mut *tx, &rows).await.unwrap();
                        tx.commit().await.unwrap();
                        assert_eq!(n as usize, args.rows);
                        t0.elapsed()
                    }
                };
            }
            let [plain, control, naive_t, ours] = times;
            println!(
                "insert round {round}: plaintext {:>7.0} rows/s, control {:>7.0}, naive {:>7.0}, rowseal {:>7.0} \
                 (rowseal/plaintext {:.2}x, /control {:.2}x, /naive {:.2}x)",
                rate(args.rows, plain), rate(args.rows, control), rate(args.rows, naive_t), rate(args.rows, ours),
                plain.as_secs_f64() / ours.as_secs_f64(),
                control.as_secs_f64() / ours.as_secs_f64(),
                naive_t.as_secs_f64() / ours.as_secs_f64(),
            );
            vs_plain.push(plain.as_secs_f64() / ours.as_secs_f64());
            vs_control.push(control.as_secs_f64() / ours.as_secs_f64());
            vs_naive.push(naive_t.as_secs_f64() / ours.as_secs_f64());
        }

        let sel_enc = format!("SELECT {} FROM bench_enc", Encryptor::select_list::<Person, DB>());
        let (mut sel_plain, mut sel_control) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let mut times = [Duration::ZERO; 3];
            let order: [usize; 3] = if round % 2 == 0 { [2, 0, 1] } else { [0, 1, 2] };
            for side in order {
                let t0 = Instant::now();
                match side {
                    0 => {
                        let got: Vec<(i64, String, String, String, String)> =
                            sqlx::query_as("SELECT id, tenant_id, name, email, ssn FROM bench_plain")
                                .fetch_all(&pool).await.unwrap();
                        assert_eq!(got.len(), args.rows);
                    }
                    1 => {
                        // rowseal's query, its rows fetched and their cells
                        // decoded into owned values, without decrypting.
                        type Raw = (i64, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64);
                        let got: Vec<Raw> = sqlx::query_as(
                            "SELECT id, tenant_id, name, email, ssn, rowseal_header, rowseal_key_version FROM bench_enc",
                        )
                        .fetch_all(&pool).await.unwrap();
                        assert_eq!(got.len(), args.rows);
                    }
                    _ => {
                        let got: Vec<Person> = enc
                            .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sel_enc), &pool)
                            .await.unwrap();
                        assert_eq!(got.len(), args.rows);
                    }
                }
                times[side] = t0.elapsed();
            }
            let [plain, control, ours] = times;
            println!(
                "select round {round}: plaintext {:>7.0} rows/s, fetch without decrypt {:>7.0}, select+decrypt {:>7.0} \
                 (/plaintext {:.2}x, /fetch without decrypt {:.2}x)",
                rate(args.rows, plain), rate(args.rows, control), rate(args.rows, ours),
                plain.as_secs_f64() / ours.as_secs_f64(),
                control.as_secs_f64() / ours.as_secs_f64(),
            );
            sel_plain.push(plain.as_secs_f64() / ours.as_secs_f64());
            sel_control.push(control.as_secs_f64() / ours.as_secs_f64());
        }

        // CPU cost of decryption alone (rows already fetched), one thread and all.
        let fetched = <DB as Backend>::fetch_all(&pool, &sel_enc, vec![]).await.unwrap();
        for threads in [1, 2] {
            let e = enc.clone().with_threads(threads);
            let t0 = Instant::now();
            let got: Vec<Person> = e.decrypt_all(TenantScope::Any, &fetched).await.unwrap();
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
            "SUMMARY {}: insert {:.2}x control (target >= 0.90), {:.2}x plaintext (target >= 0.60), {:.2}x naive (target > 1); \
             select+decrypt {:.2}x fetch without decrypt (PostgreSQL target >= 0.80), {:.2}x plaintext (SQLite target >= 0.80); \
             medians of {} rounds",
            $label, median(vs_control), median(vs_plain), median(vs_naive),
            median(sel_control), median(sel_plain), args.rounds
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
    if std::env::args().any(|a| a == "--list") {
        return;
    }
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
