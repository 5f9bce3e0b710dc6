//! `kms`-mode rows (a data key of their own each) against a KMS server 20 ms
//! away: rowseal's writes and cold reads of 1,000 rows, against what the same
//! server answers to 32 concurrent calls under the same delay, measured side
//! by side in one run (medians of alternating rounds).
//!
//! ```text
//! bash scripts/with-kms-server.sh cargo bench -p rowseal-e2e --bench kms_concurrency -- \
//!     [--rows 1000] [--rounds 3] [--delay-ms 20]
//! ```
//!
//! The delay is injected by the test proxy (rowseal-test-support) before it
//! forwards each request to the local KMS server (moto), so that the
//! provider's calls pay a network round trip as they would to AWS. The
//! baseline is the SDK's own client with 32 requests in flight
//! (`GenerateDataKey` for writes, `Decrypt` for reads) through the same
//! proxy, run before rowseal on even rounds and after it on odd ones;
//! rowseal's figures are printed at its default concurrency and at 1
//! (one row after another, as before). SQLite holds the rows: the database is
//! not what is measured here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use futures_util::StreamExt;
use rowseal::sqlx;
use rowseal::{schema, CacheConfig, Encrypted, Encryptor, KeyHierarchy, SqlxKeyStore, TenantScope};
use rowseal_e2e::kms::{admin_client, create_key, provider_builder, REGION};
use rowseal_e2e::proxy::FaultProxy;

#[derive(Encrypted, Clone)]
#[rowseal(
    table = "secrets",
    record_type = "secret",
    tenant = tenant_id,
    primary_key = id,
    key_mode = "kms"
)]
struct Secret {
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
    note: String,
}

struct Args {
    rows: usize,
    rounds: usize,
    delay: Duration,
}

fn args() -> Args {
    let mut a = Args {
        rows: 1000,
        rounds: 3,
        delay: Duration::from_millis(20),
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--rows" => a.rows = next.parse().expect("--rows N"),
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            "--delay-ms" => a.delay = Duration::from_millis(next.parse().expect("--delay-ms N")),
            _ => {
                i += 1;
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

/// `n` rows with ids from `first`.
fn rows(first: usize, n: usize) -> Vec<Secret> {
    (0..n)
        .map(|i| Secret {
            id: (first + i) as i64,
            tenant_id: format!("tenant-{}", i % 20),
            name: format!("Person Number {i} Lastname"),
            email: format!("person.{i}@example.com"),
            note: format!("{:03}-{:02}-{:04}", i % 1000, i % 100, i % 10_000),
        })
        .collect()
}

/// `calls` calls of `op` through the proxy with 32 in flight: calls/s.
async fn sdk_baseline(client: &aws_sdk_kms::Client, key: &str, calls: usize, decrypt: bool) -> f64 {
    let blob = if decrypt {
        let out = client
            .generate_data_key()
            .key_id(key)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await
            .unwrap();
        Some(out.ciphertext_blob.unwrap())
    } else {
        None
    };
    let t = Instant::now();
    futures_util::stream::iter(0..calls)
        .map(|_| {
            let blob: Option<Blob> = blob.clone();
            async move {
                match blob {
                    Some(b) => {
                        client
                            .decrypt()
                            .key_id(key)
                            .ciphertext_blob(b)
                            .send()
                            .await
                            .unwrap();
                    }
                    None => {
                        client
                            .generate_data_key()
                            .key_id(key)
                            .key_spec(DataKeySpec::Aes256)
                            .send()
                            .await
                            .unwrap();
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    rate(calls, t.elapsed())
}

async fn encryptor(
    pool: &sqlx::SqlitePool,
    key: &str,
    proxy: &str,
    concurrency: usize,
) -> Encryptor {
    let kms = provider_builder(key, proxy).build().await.unwrap();
    // A fresh cache per encryptor: every read is cold.
    let keys = KeyHierarchy::with_cache_config(
        Arc::new(kms),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 100_000,
            ttl: Duration::from_secs(600),
        },
    );
    Encryptor::new(Arc::new(keys)).with_provider_concurrency(concurrency)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args = args();
    let Some(endpoint) = rowseal_e2e::kms::endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint, REGION);
    let key = create_key(&admin, false).await;
    let proxy = FaultProxy::start(&endpoint).await;
    proxy.set_delay(args.delay);
    // The SDK's own client, through the same proxy (the same delay).
    let client = admin_client(&proxy.url, REGION);
    let db = rowseal_e2e::db::sqlite(4).await;
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Secret, _>(&db.pool).await.unwrap();
    let default = rowseal_sqlx::DEFAULT_PROVIDER_CONCURRENCY;
    println!(
        "kms mode, {} rows, {} ms before every KMS request, {} rounds; rowseal at {default} calls in flight (default) and at 1",
        args.rows,
        args.delay.as_millis(),
        args.rounds
    );

    let (mut write_ratio, mut read_ratio) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // The baseline first on even rounds, rowseal first on odd ones, so
        // that a slow phase of the machine (or of moto) hits both sides.
        let baseline_first = round % 2 == 0;
        let enc = encryptor(&db.pool, &key, &proxy.url, default).await;
        let batch = rows(round * args.rows, args.rows);
        let mut gen_base = 0.0;
        if baseline_first {
            gen_base = sdk_baseline(&client, &key, args.rows, false).await;
        }
        let t = Instant::now();
        enc.insert_many(&db.pool, &batch).await.unwrap();
        let write = rate(args.rows, t.elapsed());
        if !baseline_first {
            gen_base = sdk_baseline(&client, &key, args.rows, false).await;
        }

        let cold = encryptor(&db.pool, &key, &proxy.url, default).await;
        let sql = format!(
            "SELECT {} FROM secrets WHERE id >= {} AND id < {}",
            Encryptor::select_list::<Secret, sqlx::Sqlite>(),
            round * args.rows,
            (round + 1) * args.rows
        );
        let mut dec_base = 0.0;
        if baseline_first {
            dec_base = sdk_baseline(&client, &key, args.rows, true).await;
        }
        let t = Instant::now();
        let got: Vec<Secret> = cold
            .fetch_all(TenantScope::Any, sqlx::query(&sql), &db.pool)
            .await
            .unwrap();
        let read = rate(args.rows, t.elapsed());
        assert_eq!(got.len(), args.rows);
        if !baseline_first {
            dec_base = sdk_baseline(&client, &key, args.rows, true).await;
        }
        println!(
            "round {round}: GenerateDataKey x32 in flight {gen_base:>6.0}/s, rowseal writes {write:>6.0} rows/s ({:.2}x); \
             Decrypt x32 in flight {dec_base:>6.0}/s, rowseal cold reads {read:>6.0} rows/s ({:.2}x)",
            write / gen_base,
            read / dec_base
        );
        write_ratio.push(write / gen_base);
        read_ratio.push(read / dec_base);
    }

    // One row after another, as before bounded concurrency (a few rows: at
    // 20 ms a call it is slow by construction).
    let few = (args.rows / 10).max(10);
    let serial = encryptor(&db.pool, &key, &proxy.url, 1).await;
    let batch = rows(args.rounds * args.rows, few);
    let t = Instant::now();
    serial.insert_many(&db.pool, &batch).await.unwrap();
    let serial_write = rate(few, t.elapsed());
    println!("one call at a time: rowseal writes {serial_write:.0} rows/s ({few} rows)");

    println!(
        "SUMMARY kms mode ({} ms round trip): writes {:.2}x, cold reads {:.2}x of the server's 32-in-flight rate \
         (medians of {} rounds; target >= 0.50)",
        args.delay.as_millis(),
        median(write_ratio),
        median(read_ratio),
        args.rounds
    );
    db.finish().await;
}
