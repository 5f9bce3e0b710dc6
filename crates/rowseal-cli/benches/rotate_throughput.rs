#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `rowseal rotate` throughput on PostgreSQL: seeds a table (default 100,000
//! rows over 20 tenants, `ROWSEAL_BENCH_ROWS`), runs the built binary with
//! `--workers 2` (`ROWSEAL_BENCH_WORKERS`), and prints rows per second.
//! `ROWSEAL_TEST_POSTGRES_URL`; a fresh database, dropped at the end
//! (rowseal-test-support; unreachable: a loud skip, a failure under
//! `CI=true`).
//!
//! ```text
//! cargo bench -p rowseal-cli --bench rotate_throughput
//! ```

use std::sync::Arc;
use std::time::Instant;

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Encrypted, Encryptor, SqlxKeyStore};

#[derive(Encrypted, Debug, Clone)]
#[rowseal(table = "people", record_type = "person", tenant = tenant_id, primary_key = id, bind_primary_key)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(encrypt)]
    email: Option<String>,
    visits: i64,
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = env_num("ROWSEAL_BENCH_ROWS", 100_000) as i64;
    let workers = env_num("ROWSEAL_BENCH_WORKERS", 2);
    let batch = env_num("ROWSEAL_BENCH_BATCH", 1000);
    let Some(db) = rowseal_test_support::db::postgres(4).await else {
        return;
    };
    let (url, pool) = (db.url.clone(), db.pool.clone());
    schema::install(&pool).await.unwrap();
    schema::create_table::<Person, _>(&pool).await.unwrap();
    schema::register::<Person, _>(&pool).await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let keys = KeyHierarchy::new(
        Arc::new(LocalKeyProvider::from_keyring_str(&keyring).unwrap()),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    let enc = Encryptor::new(Arc::new(keys));
    let t = Instant::now();
    let mut chunk = Vec::with_capacity(5000);
    for id in 1..=rows {
        chunk.push(Person {
            id,
            tenant_id: format!("tenant-{}", id % 20),
            name: format!("Person number {id}"),
            email: Some(format!("person{id}@example.com")),
            visits: id,
        });
        if chunk.len() == 5000 || id == rows {
            enc.insert_many(&pool, &chunk).await.unwrap();
            chunk.clear();
        }
    }
    sqlx::query("VACUUM ANALYZE people")
        .execute(&pool)
        .await
        .unwrap();
    eprintln!("seeded {rows} rows in {:.1}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rowseal"))
        .args([
            "rotate",
            "--all-tenants",
            "--workers",
            &workers.to_string(),
            "--batch-size",
            &batch.to_string(),
            "--json",
        ])
        .env("DATABASE_URL", &url)
        .env("ROWSEAL_LOCAL_KEYS", &keyring)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|e| e["event"] == "done");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = done.unwrap();
    assert_eq!(done["reencrypted"], rows);
    println!(
        "rotate throughput (PostgreSQL, {workers} workers, batch {batch}): {rows} rows in {secs:.2}s \
         wall = {:.0} rows/s (job-internal rate {} rows/s)",
        rows as f64 / secs,
        done["rows_per_second"]
    );
    db.finish().await;
}
