//! Reading 100,000 rows with your own `sqlx::query_as!`: into sealed rows
//! and opened (`query_as!` + `Encryptor::open_all`), against the existing
//! path (`Encryptor::fetch_all` over a `select_list` query) and against the
//! best plaintext path (`query_as!` of the same patients in the clear), in
//! one run, on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench -p own-queries --bench query_as -- [--rows 100000] [--rounds 5] [--db sqlite|postgres|both]
//! ```
//! Rounds alternate the paths; each ratio printed is the median of the
//! per-round ratios. A control reads the same sealed rows without opening
//! them (`query_as!` alone): how much of the gap is the database moving
//! bigger rows, how much is decryption. All rows belong to one clinic, as a
//! tenant-scoped listing would; the encryptor uses both cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// A build with neither database (preparing the MariaDB queries) runs nothing.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused)
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use own_queries::{Patient, PatientSealed, PlainPatient};
use rowseal::{schema, Backend, Encryptor, KeyHierarchy, LocalKeyProvider, SqlxKeyStore};
use rowseal_test_support::db;
use uuid::Uuid;

struct Args {
    rows: usize,
    rounds: usize,
    db: String,
}

fn args() -> Args {
    let mut a = Args {
        rows: 100_000,
        rounds: 5,
        db: "both".into(),
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--rows" => a.rows = next.parse().expect("--rows N"),
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            "--db" => a.db = next,
            _ => {
                i += 1; // `--bench` and the like
                continue;
            }
        }
        i += 2;
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn patients(clinic: Uuid, n: usize) -> Vec<Patient> {
    (0..n)
        .map(|i| Patient {
            id: Uuid::new_v4(),
            clinic_id: clinic,
            name: format!("Patient Number {i} Lastname"),
            birth_date: NaiveDate::from_ymd_opt(1950 + (i % 60) as i32, 1 + (i % 12) as u32, 1),
            visits: (i % 50) as i64,
        })
        .collect()
}

/// Times of one round: plaintext query_as!, query_as! + open_all,
/// fetch_all, and query_as! of the sealed rows alone.
struct Round {
    plain: Duration,
    sealed_open: Duration,
    fetch_all: Duration,
    sealed_only: Duration,
}

macro_rules! run_db {
    ($db:ty, $pool:expr, $args:expr, $label:expr, $plain:ident, $sealed:ident) => {{
        type DB = $db;
        let pool: sqlx::Pool<DB> = $pool;
        let args: &Args = $args;
        schema::install(&pool).await.unwrap();
        schema::create_table::<Patient, _>(&pool).await.unwrap();
        sqlx::query(&own_queries::plain_patients_sql::<DB>())
            .execute(&pool)
            .await
            .unwrap();
        let keyring = LocalKeyProvider::generate_keyring().to_string();
        let keys = KeyHierarchy::new(
            Arc::new(LocalKeyProvider::from_keyring_str(&keyring).unwrap()),
            Arc::new(SqlxKeyStore::new(pool.clone())),
        );
        let enc = Encryptor::new(Arc::new(keys));
        let clinic = Uuid::new_v4();
        let tenant = clinic.to_string();
        let rows = patients(clinic, args.rows);
        for chunk in rows.chunks(5_000) {
            enc.insert_many(&pool, chunk).await.unwrap();
            let mut qb = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO plain_patients (id, clinic_id, name, birth_date, visits) ",
            );
            qb.push_values(chunk, |mut b, p| {
                b.push_bind(p.id)
                    .push_bind(p.clinic_id)
                    .push_bind(&p.name)
                    .push_bind(p.birth_date)
                    .push_bind(p.visits);
            });
            qb.build().execute(&pool).await.unwrap();
        }
        let list_sql = format!(
            "SELECT {} FROM patients WHERE clinic_id = {}",
            Encryptor::select_list::<Patient, DB>(),
            { let mut s = String::new(); <DB as Backend>::push_placeholder(&mut s, 1); s }
        );
        println!("\n=== {} ({} rows, one clinic) ===", $label, args.rows);
        let mut rounds = Vec::new();
        for round in 0..args.rounds + 1 {
            let t0 = Instant::now();
            let got: Vec<PlainPatient> = $plain(&pool, clinic).await;
            let plain = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            drop(got);

            let t0 = Instant::now();
            let sealed: Vec<PatientSealed> = $sealed(&pool, clinic).await;
            let got = enc.open_all(sealed, &*tenant).await.unwrap();
            let sealed_open = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            drop(got);

            let t0 = Instant::now();
            let got: Vec<Patient> = enc
                .fetch_all(&*tenant, sqlx::query::<DB>(&list_sql).bind(clinic), &pool)
                .await
                .unwrap();
            let fetch_all = t0.elapsed();
            assert_eq!(got.len(), args.rows);
            drop(got);

            let t0 = Instant::now();
            let sealed: Vec<PatientSealed> = $sealed(&pool, clinic).await;
            let sealed_only = t0.elapsed();
            assert_eq!(sealed.len(), args.rows);
            drop(sealed);

            println!(
                "round {round}: plaintext query_as! {:>8.0} rows/s | query_as! + open_all {:>8.0} rows/s | \
                 fetch_all {:>8.0} rows/s | sealed query_as! alone {:>8.0} rows/s",
                rate(args.rows, plain),
                rate(args.rows, sealed_open),
                rate(args.rows, fetch_all),
                rate(args.rows, sealed_only),
            );
            // Round 0 warms the caches (statement, pages, keys) and is not counted.
            if round > 0 {
                rounds.push(Round { plain, sealed_open, fetch_all, sealed_only });
            }
        }
        let ratio = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "SUMMARY {}: query_as!+open_all {:.2}x plaintext query_as!, {:.2}x fetch_all (above 1: faster); \
             sealed query_as! alone {:.2}x plaintext (the database's share); open_all {:.2} us/row",
            $label,
            ratio(&|r| r.plain.as_secs_f64() / r.sealed_open.as_secs_f64()),
            ratio(&|r| r.fetch_all.as_secs_f64() / r.sealed_open.as_secs_f64()),
            ratio(&|r| r.plain.as_secs_f64() / r.sealed_only.as_secs_f64()),
            ratio(&|r| (r.sealed_open.as_secs_f64() - r.sealed_only.as_secs_f64()) * 1e6 / args.rows as f64),
        );
        pool.close().await;
    }};
}

#[cfg(feature = "sqlite")]
async fn sqlite_plain(pool: &sqlx::SqlitePool, clinic: Uuid) -> Vec<PlainPatient> {
    sqlx::query_as!(
        PlainPatient,
        r#"SELECT id AS "id!: Uuid", clinic_id AS "clinic_id!: Uuid", name AS "name!",
                  birth_date AS "birth_date: NaiveDate", visits AS "visits!"
           FROM plain_patients WHERE clinic_id = ?"#,
        clinic
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[cfg(feature = "sqlite")]
async fn sqlite_sealed(pool: &sqlx::SqlitePool, clinic: Uuid) -> Vec<PatientSealed> {
    sqlx::query_as!(
        PatientSealed,
        r#"SELECT id AS "id!: Uuid", clinic_id AS "clinic_id!: Uuid", name, birth_date,
                  visits AS "visits!", rowseal_header
           FROM patients WHERE clinic_id = ?"#,
        clinic
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[cfg(feature = "postgres")]
async fn pg_plain(pool: &sqlx::PgPool, clinic: Uuid) -> Vec<PlainPatient> {
    sqlx::query_as!(
        PlainPatient,
        r#"SELECT id, clinic_id, name, birth_date AS "birth_date: NaiveDate", visits
           FROM plain_patients WHERE clinic_id = $1"#,
        clinic
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[cfg(feature = "postgres")]
async fn pg_sealed(pool: &sqlx::PgPool, clinic: Uuid) -> Vec<PatientSealed> {
    sqlx::query_as!(
        PatientSealed,
        "SELECT id, clinic_id, name, birth_date, visits, rowseal_header FROM patients WHERE clinic_id = $1",
        clinic
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "query_as! + open vs fetch_all vs plaintext query_as!: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    rt.block_on(async {
        #[cfg(feature = "sqlite")]
        if args.db == "sqlite" || args.db == "both" {
            let db = db::sqlite(4).await;
            run_db!(
                sqlx::Sqlite,
                db.pool.clone(),
                &args,
                "SQLite",
                sqlite_plain,
                sqlite_sealed
            );
            db.finish().await;
        }
        #[cfg(feature = "postgres")]
        if args.db == "postgres" || args.db == "both" {
            if let Some(db) = db::postgres(4).await {
                run_db!(
                    sqlx::Postgres,
                    db.pool.clone(),
                    &args,
                    "PostgreSQL",
                    pg_plain,
                    pg_sealed
                );
                db.finish().await;
            }
        }
    });
}
