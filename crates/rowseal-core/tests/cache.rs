//! The key cache, counted: single flight for cold keys, expiry, KMS cost per
//! tenant rather than per row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{email_set, fixture, fixture_with, local_provider, SlowProvider, EMAIL};
use rowseal_core::{CacheConfig, KeyMode, KeyStore, LocalKeyProvider, RecordSpec};

const SPEC: RecordSpec = RecordSpec::new("user", "users");

fn slow() -> Arc<SlowProvider> {
    Arc::new(SlowProvider {
        inner: local_provider(),
        delay: Duration::from_millis(50),
    })
}

fn slow_from(keyring: &str) -> Arc<SlowProvider> {
    Arc::new(SlowProvider {
        inner: LocalKeyProvider::from_keyring_str(keyring).unwrap(),
        delay: Duration::from_millis(50),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_requests_for_a_cold_key_make_one_provider_call() {
    // Write the tenant key in one process, read it cold in another: same root
    // keyring, same key store, separate caches.
    let keyring = LocalKeyProvider::generate_keyring();
    let writer = fixture_with(slow_from(&keyring), CacheConfig::default());
    let row = writer
        .keys
        .new_row_key(&SPEC, "acme", None, &email_set())
        .await
        .unwrap();
    let header = row.header_bytes();
    let sealed = row.seal(EMAIL, b"ada@example.com").unwrap();

    let reader = fixture_with(slow_from(&keyring), CacheConfig::default());
    for rec in writer.store.records() {
        reader.store.insert(&rec).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let keys = reader.keys.clone();
        let (header, sealed) = (header.clone(), sealed.clone());
        tasks.push(tokio::spawn(async move {
            let row = keys
                .open_row_key(&SPEC, "acme", None, &header, &email_set())
                .await?;
            row.open(EMAIL, &sealed)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b"ada@example.com");
    }
    assert_eq!(reader.counting.counts().decrypt, 1);
    assert_eq!(reader.counting.counts().total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_first_writes_create_one_tenant_key() {
    let f = fixture_with(slow(), CacheConfig::default());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let keys = f.keys.clone();
        tasks.push(tokio::spawn(async move {
            keys.new_row_key(&SPEC, "fresh", None, &email_set())
                .await
                .map(|r| r.header_bytes())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.counting.counts().generate, 1);
    assert_eq!(f.counting.counts().total(), 1);
    assert_eq!(f.store.records().len(), 1);
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again() {
    let f = fixture_with(
        Arc::new(local_provider()),
        CacheConfig {
            max_entries: 100,
            ttl: Duration::from_millis(100),
        },
    );
    let row = f
        .keys
        .new_row_key(&SPEC, "acme", None, &email_set())
        .await
        .unwrap();
    let header = row.header_bytes();
    f.keys.forget_cached_keys();
    f.keys
        .open_row_key(&SPEC, "acme", None, &header, &email_set())
        .await
        .unwrap();
    f.keys
        .open_row_key(&SPEC, "acme", None, &header, &email_set())
        .await
        .unwrap();
    assert_eq!(f.counting.counts().decrypt, 1, "second read is cached");
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.keys
        .open_row_key(&SPEC, "acme", None, &header, &email_set())
        .await
        .unwrap();
    assert_eq!(
        f.counting.counts().decrypt,
        2,
        "expired entry fetched again"
    );
}

#[tokio::test]
async fn derived_mode_costs_provider_calls_per_tenant_not_per_row() {
    let f = fixture();
    let mut rows = Vec::new();
    for i in 0..10_000u32 {
        let tenant = format!("tenant-{}", i % 10);
        let row = f
            .keys
            .new_row_key(&SPEC, &tenant, None, &email_set())
            .await
            .unwrap();
        rows.push((
            tenant,
            row.header_bytes(),
            row.seal(EMAIL, &i.to_be_bytes()).unwrap(),
        ));
    }
    for (i, (tenant, header, sealed)) in rows.iter().enumerate() {
        let row = f
            .keys
            .open_row_key(&SPEC, tenant, None, header, &email_set())
            .await
            .unwrap();
        assert_eq!(row.open(EMAIL, sealed).unwrap(), (i as u32).to_be_bytes());
    }
    // One GenerateDataKey per tenant; reads hit the key seeded at creation.
    assert_eq!(f.counting.counts().generate, 10);
    assert_eq!(f.counting.counts().total(), 10);
}

#[tokio::test]
async fn kms_mode_costs_one_data_key_per_row() {
    const PER_ROW: RecordSpec = RecordSpec::new("user", "users").with_key_mode(KeyMode::Kms);
    let f = fixture();
    let mut rows = Vec::new();
    for _ in 0..100 {
        let row = f
            .keys
            .new_row_key(&PER_ROW, "acme", None, &email_set())
            .await
            .unwrap();
        rows.push((row.header_bytes(), row.seal(EMAIL, b"x").unwrap()));
    }
    assert_eq!(f.counting.counts().generate, 100);
    f.keys.forget_cached_keys();
    for (header, sealed) in &rows {
        let row = f
            .keys
            .open_row_key(&PER_ROW, "acme", None, header, &email_set())
            .await
            .unwrap();
        assert_eq!(row.open(EMAIL, sealed).unwrap(), b"x");
    }
    assert_eq!(
        f.counting.counts().decrypt,
        100,
        "one Decrypt per uncached row"
    );
}
