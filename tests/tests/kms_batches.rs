//! Batches of `kms`-mode rows (a KMS data key per row): the provider calls of
//! one batch run side by side, at most as many at once as the encryptor is
//! configured for, the rows keep their order, and a refused call loses
//! nothing.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test -p rowseal-e2e --test kms_batches`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rowseal::{schema, CacheConfig, Encrypted, Encryptor, KeyHierarchy, SqlxKeyStore, TenantScope};
use rowseal_e2e::kms::{admin_client, create_key, provider_builder, REGION};
use rowseal_e2e::proxy::{Fault, FaultProxy};

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "letters",
    record_type = "letter",
    tenant = tenant_id,
    primary_key = id,
    key_mode = "kms"
)]
struct Letter {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    body: String,
    #[rowseal(
        encrypt,
        blind_index(name = "to_idx", bits = 32, normalize = "trim,lowercase")
    )]
    recipient: String,
}

fn letters(from: i64, n: i64) -> Vec<Letter> {
    (from..from + n)
        .map(|id| Letter {
            id,
            tenant_id: format!("t{}", id % 3),
            body: format!("letter number {id}"),
            recipient: format!("r{id}@example.com"),
        })
        .collect()
}

/// An encryptor with a cold cache of its own, its provider through `proxy`.
async fn encryptor(
    pool: &sqlx::SqlitePool,
    arn: &str,
    proxy: &FaultProxy,
    calls: usize,
) -> Encryptor {
    let kms = provider_builder(arn, &proxy.url).build().await.unwrap();
    let keys = KeyHierarchy::with_cache_config(
        Arc::new(kms),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 10_000,
            ttl: Duration::from_secs(600),
        },
    );
    Encryptor::new(Arc::new(keys)).with_provider_concurrency(calls)
}

use rowseal::sqlx;

async fn all(enc: &Encryptor, pool: &sqlx::SqlitePool) -> Vec<rowseal::Result<Letter>> {
    let sql = format!(
        "SELECT {} FROM letters ORDER BY id",
        Encryptor::select_list::<Letter, sqlx::Sqlite>()
    );
    let rows = sqlx::query(&sql).fetch_all(pool).await.unwrap();
    enc.decrypt_each(TenantScope::Any, &rows).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_batches_call_the_provider_side_by_side_within_the_bound() {
    let Some(endpoint) = rowseal_e2e::kms::endpoint() else {
        return;
    };
    let db = rowseal_e2e::db::sqlite(4).await;
    let pool = &db.pool;
    schema::install(pool).await.unwrap();
    schema::create_table::<Letter, _>(pool).await.unwrap();
    let arn = create_key(&admin_client(&endpoint, REGION), false).await;
    let proxy = FaultProxy::start(&endpoint).await;
    // A remote service's round trip: calls overlap only if sent side by side.
    proxy.set_delay(Duration::from_millis(40));

    // Writes: one GenerateDataKey per row, at most 6 at once, more than one.
    let enc = encryptor(pool, &arn, &proxy, 6).await;
    let batch = letters(1, 40);
    proxy.reset_log();
    assert_eq!(enc.insert_many(pool, &batch).await.unwrap(), 40);
    // A call the SDK retries (an attempt timing out on a loaded machine) is
    // counted twice by the proxy.
    assert!(proxy.count(Some("GenerateDataKey")) >= 40);
    let seen = proxy.max_in_flight();
    assert!((2..=6).contains(&seen), "{seen} calls at once");

    // Cold reads: one Decrypt per row, within the bound, rows in order.
    let cold = encryptor(pool, &arn, &proxy, 6).await;
    proxy.reset_log();
    let got: Vec<Letter> = all(&cold, pool)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, batch);
    assert!(proxy.count(Some("Decrypt")) >= 40);
    let seen = proxy.max_in_flight();
    assert!((2..=6).contains(&seen), "{seen} calls at once");

    // A bound of 1 is one call after another.
    let serial = encryptor(pool, &arn, &proxy, 1).await;
    proxy.reset_log();
    let got: Vec<Letter> = all(&serial, pool)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, batch);
    assert_eq!(proxy.max_in_flight(), 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_in_a_kms_batch_loses_nothing() {
    let Some(endpoint) = rowseal_e2e::kms::endpoint() else {
        return;
    };
    let db = rowseal_e2e::db::sqlite(4).await;
    let pool = &db.pool;
    schema::install(pool).await.unwrap();
    schema::create_table::<Letter, _>(pool).await.unwrap();
    let arn = create_key(&admin_client(&endpoint, REGION), false).await;
    let proxy = FaultProxy::start(&endpoint).await;
    let enc = encryptor(pool, &arn, &proxy, 8).await;

    // One data key of the batch refused (a final error, never retried): the
    // batch fails with a typed error and writes no row.
    proxy.fail_next(1, Fault::code("AccessDeniedException"));
    let err = enc.insert_many(pool, &letters(1, 20)).await.unwrap_err();
    assert_eq!(err.kind(), rowseal::ErrorKind::AccessDenied, "{err}");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM letters")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Written whole once the provider answers again.
    let batch = letters(1, 20);
    assert_eq!(enc.insert_many(pool, &batch).await.unwrap(), 20);

    // A cold read with one Decrypt refused: that row fails alone, the others
    // open, in order.
    let cold = encryptor(pool, &arn, &proxy, 8).await;
    proxy.fail_next(1, Fault::code("AccessDeniedException"));
    let got = all(&cold, pool).await;
    assert_eq!(got.len(), 20);
    let failed: Vec<usize> = (0..20).filter(|&i| got[i].is_err()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    for (i, r) in got.iter().enumerate() {
        if let Ok(l) = r {
            assert_eq!(l, &batch[i]);
        }
    }
    db.finish().await;
}
