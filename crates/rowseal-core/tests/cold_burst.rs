//! A burst over more than 10,000 cold tenants: every tenant's key is in the
//! key store, the hierarchy is fresh (cold caches, as in a process just
//! started), and each tenant's rows are read by several tasks at once. One
//! provider call per tenant, counted at the provider, and the cache's own
//! statistics agree. (The same burst against a KMS server, counted there:
//! crates/rowseal-kms/tests/cold_burst.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{email_set, local_provider, SlowProvider, EMAIL};
use rowseal_core::{
    CacheConfig, CountingKeyProvider, KeyHierarchy, KeyProvider, KeyStore, MemoryKeyStore,
    RecordSpec,
};
use tokio::sync::Semaphore;

const SPEC: RecordSpec = RecordSpec::new("user", "users");
const TENANTS: usize = 10_240;
const READERS_PER_TENANT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_ten_thousand_cold_tenants_makes_one_provider_call_per_tenant() {
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring();
    let provider = || rowseal_core::LocalKeyProvider::from_keyring_str(&keyring).unwrap();
    let store = Arc::new(MemoryKeyStore::new());

    // Another process wrote one row per tenant (and created the keys).
    let writer = KeyHierarchy::new(Arc::new(provider()), store.clone());
    let mut rows = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let tenant = format!("tenant-{i:05}");
        let row = writer
            .new_row_key(&SPEC, &tenant, None, &email_set())
            .await
            .unwrap();
        let sealed = row.seal(EMAIL, tenant.as_bytes()).unwrap();
        rows.push((tenant, row.header_bytes(), sealed));
    }
    drop(writer);
    assert_eq!(store.records().len(), TENANTS);

    // This process: cold caches, a provider with a network-like delay so that
    // each tenant's readers overlap, counted.
    let counting = Arc::new(CountingKeyProvider::new(Arc::new(SlowProvider {
        inner: provider(),
        delay: Duration::from_millis(5),
    })));
    let reader = Arc::new(KeyHierarchy::with_cache_config(
        counting.clone(),
        store.clone() as Arc<dyn KeyStore>,
        CacheConfig::default(),
    ));
    // Every tenant at once would be 40,960 tasks in flight; 512 tenants at a
    // time is burst enough, and keeps the test quick.
    let gate = Arc::new(Semaphore::new(512));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TENANTS);
    for (tenant, header, sealed) in rows {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let reader = reader.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = Arc::new(tenant);
            let mut readers = Vec::new();
            for _ in 0..READERS_PER_TENANT {
                let (reader, tenant) = (reader.clone(), tenant.clone());
                let (header, sealed) = (header.clone(), sealed.clone());
                readers.push(tokio::spawn(async move {
                    let row = reader
                        .open_row_key(&SPEC, &tenant, None, &header, &email_set())
                        .await
                        .unwrap();
                    assert_eq!(row.open(EMAIL, &sealed).unwrap(), tenant.as_bytes());
                }));
            }
            for r in readers {
                r.await.unwrap();
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();

    let calls = counting.counts();
    eprintln!(
        "{TENANTS} cold tenants x {READERS_PER_TENANT} readers: {} provider calls in {took:?}",
        calls.total()
    );
    // At least one call per tenant (each was cold), and no more than one in
    // all: exactly one each.
    assert_eq!(calls.decrypt, TENANTS as u64);
    assert_eq!(calls.total(), TENANTS as u64);

    // The caches saw the same: one tenant-key load per tenant; every other
    // lookup of a tenant key was a hit or joined that load.
    let per_cache = reader.cache_stats_per_cache();
    let tenant_keys = per_cache
        .iter()
        .find(|(name, _)| *name == "tenant_keys")
        .unwrap()
        .1;
    assert_eq!(tenant_keys.loads, TENANTS as u64, "{tenant_keys:?}");
    assert_eq!(tenant_keys.evictions, 0);
    let record_keys = per_cache
        .iter()
        .find(|(name, _)| *name == "record_keys")
        .unwrap()
        .1;
    assert_eq!(record_keys.loads, TENANTS as u64, "{record_keys:?}");
    assert_eq!(
        record_keys.hits + record_keys.misses,
        (TENANTS * READERS_PER_TENANT) as u64
    );
    let all = reader.cache_stats();
    assert!(all.hits + all.misses >= (TENANTS * READERS_PER_TENANT) as u64);

    // The entry counts settle at the next sweep (at most a second).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let per_cache = reader.cache_stats_per_cache();
    for (name, s) in &per_cache {
        if *name == "tenant_keys" || *name == "record_keys" {
            assert_eq!(s.entries, TENANTS as u64, "{name}: {s:?}");
        }
    }

    // A second pass is all hits: no provider call.
    for i in (0..TENANTS).step_by(97) {
        reader
            .tenant_key(&format!("tenant-{i:05}"), 1)
            .await
            .unwrap();
    }
    assert_eq!(counting.counts().total(), TENANTS as u64);
}

/// A small cache under a scan of cold tenants stays within its bound and
/// counts its evictions.
#[tokio::test]
async fn a_small_cache_stays_bounded_under_a_scan_of_tenants() {
    let store = Arc::new(MemoryKeyStore::new());
    let provider = Arc::new(local_provider());
    let writer = KeyHierarchy::new(provider.clone(), store.clone());
    for i in 0..2_000 {
        writer.current_tenant_key(&format!("t{i}")).await.unwrap();
    }
    let counting = Arc::new(CountingKeyProvider::new(provider as Arc<dyn KeyProvider>));
    let reader = KeyHierarchy::with_cache_config(
        counting.clone(),
        store.clone(),
        CacheConfig {
            max_entries: 100,
            ttl: Duration::from_secs(60),
        },
    );
    for i in 0..2_000 {
        reader.tenant_key(&format!("t{i}"), 1).await.unwrap();
    }
    assert_eq!(counting.counts().decrypt, 2_000);
    // Let the sweeper apply the evictions.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let s = reader.cache_stats();
    assert!(s.entries <= 100, "{s:?}");
    assert!(s.evictions >= 1_900, "{s:?}");
    assert!(reader.cached_keys().tenant_keys.len() <= 100);
}
