//! Blind-index lookup (including decryption and the false-positive re-check)
//! vs a plaintext indexed equality lookup, side by side in one run on
//! PostgreSQL.
//!
//! ```text
//! cargo bench -p rowseal-sqlx --features postgres --bench blind_lookup -- \
//!     [--rows 1000000] [--lookups 2000]
//! ```
//! Both tables get the same rows (ten tenants, unique e-mail addresses); the
//! encrypted one has three encrypted fields and a 32-bit tenant-scoped blind
//! index on `email`, the plaintext one a B-tree index on (tenant, email).
//! Lookups alternate between the two (same random addresses, one at a time,
//! on a pool of one connection) so that both see the same cache state; the
//! report gives p50, p99 and their ratio. `ROWSEAL_TEST_POSTGRES_URL`
//! (default `postgres://root@127.0.0.1:5432/test`); a fresh database is made
//! and dropped (rowseal-test-support; unreachable: a loud skip, a failure
//! under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Encrypted, Encryptor, SqlxKeyStore};

#[derive(Encrypted, Clone)]
#[rowseal(table = "bench_people", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(encrypt)]
    ssn: String,
}

const TENANTS: usize = 10;

fn person(i: usize) -> Person {
    Person {
        id: i as i64,
        tenant_id: format!("tenant-{}", i % TENANTS),
        name: format!("Person Number {i}"),
        email: format!("person{i}@example.com"),
        ssn: format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: usize| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = get("--rows", 1_000_000);
    let lookups = get("--lookups", 2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(rows, lookups));
}

async fn run(rows: usize, lookups: usize) {
    let Some(db) = rowseal_test_support::db::postgres(2).await else {
        return;
    };
    let pool = db.pool.clone();
    schema::install(&pool).await.unwrap();
    schema::create_table::<Person, _>(&pool).await.unwrap();
    sqlx::query(
        "CREATE TABLE bench_plain (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, \
         name TEXT NOT NULL, email TEXT NOT NULL, ssn TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE INDEX bench_plain_email ON bench_plain (tenant_id, email)")
        .execute(&pool)
        .await
        .unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let keys = KeyHierarchy::new(
        Arc::new(LocalKeyProvider::from_keyring_str(&keyring).unwrap()),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    let enc = Encryptor::new(Arc::new(keys));

    let t = Instant::now();
    let chunk = 50_000;
    let mut from = 0;
    while from < rows {
        let n = chunk.min(rows - from);
        let people: Vec<Person> = (from..from + n).map(person).collect();
        enc.insert_many(&pool, &people).await.unwrap();
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO bench_plain (id, tenant_id, name, email, ssn) ",
        );
        for part in people.chunks(10_000) {
            qb.reset();
            qb.push_values(part, |mut b, p| {
                b.push_bind(p.id)
                    .push_bind(p.tenant_id.clone())
                    .push_bind(p.name.clone())
                    .push_bind(p.email.clone())
                    .push_bind(p.ssn.clone());
            });
            qb.build().execute(&pool).await.unwrap();
        }
        from += n;
    }
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    println!(
        "PostgreSQL: {rows} rows in each table, loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut enc_t = Vec::with_capacity(lookups);
    let mut plain_t = Vec::with_capacity(lookups);
    let warmup = lookups / 10;
    for k in 0..lookups + warmup {
        let i = rand::random::<u64>() as usize % rows;
        let p = person(i);
        let query = format!("  {}", p.email.to_uppercase());

        let t = Instant::now();
        let found = Person::find_by_email(&enc, &pool, &p.tenant_id, &query)
            .await
            .unwrap();
        let de = t.elapsed();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ssn, p.ssn);

        let t = Instant::now();
        let row: (i64, String, String, String, String) = sqlx::query_as(
            "SELECT id, tenant_id, name, email, ssn FROM bench_plain WHERE tenant_id = $1 AND email = $2",
        )
        .bind(&p.tenant_id)
        .bind(&p.email)
        .fetch_one(&pool)
        .await
        .unwrap();
        let dp = t.elapsed();
        assert_eq!(row.4, p.ssn);
        if k >= warmup {
            enc_t.push(de);
            plain_t.push(dp);
        }
    }
    enc_t.sort();
    plain_t.sort();
    let (e50, e99, p50, p99) = (
        pct(&enc_t, 0.5),
        pct(&enc_t, 0.99),
        pct(&plain_t, 0.5),
        pct(&plain_t, 0.99),
    );
    println!("{lookups} lookups each (after {warmup} warm-up), one at a time:");
    println!(
        "  blind index + decrypt + re-check: p50 {:.3} ms  p99 {:.3} ms",
        ms(e50),
        ms(e99)
    );
    println!(
        "  plaintext indexed equality:       p50 {:.3} ms  p99 {:.3} ms",
        ms(p50),
        ms(p99)
    );
    println!(
        "  ratio: p50 {:.2}x  p99 {:.2}x  (target <= 1.3x)",
        ms(e50) / ms(p50),
        ms(e99) / ms(p99)
    );

    db.finish().await;
}
