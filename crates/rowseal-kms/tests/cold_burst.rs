//! A burst over more than 10,000 cold tenants against a KMS server, counted
//! at the server: every tenant's key is stored (wrapped by KMS), a fresh
//! `KeyHierarchy` (cold caches, as in a process just started) reads each
//! tenant's row from several tasks at once, and the counting proxy in front
//! of moto sees exactly one Decrypt per tenant, and nothing else.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test -p rowseal-kms --test cold_burst`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::FaultProxy;
use common::{admin_client, builder, create_key, REGION};
use rowseal_core::{
    FieldName, FieldSet, KeyHierarchy, KeyStore, MemoryKeyStore, RecordSpec, MAX_TENANT_ID_BYTES,
};
use tokio::sync::Semaphore;

const SPEC: RecordSpec = RecordSpec::new("user", "users");
const EMAIL: FieldName = FieldName::same("email");
const TENANTS: usize = 10_240;
const READERS_PER_TENANT: usize = 3;
/// Tenants read at once (each by `READERS_PER_TENANT` tasks); also the
/// set-up's parallelism. Moto answers one request at a time or so: more
/// only queues at the server.
const IN_FLIGHT: usize = 64;

fn email_only() -> FieldSet {
    FieldSet::new(["email"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_ten_thousand_cold_tenants_makes_one_kms_call_per_tenant() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let store = Arc::new(MemoryKeyStore::new());

    // Set-up, straight to the server: another process wrote one row per
    // tenant, creating each tenant's key (one GenerateDataKey each).
    let started = Instant::now();
    let kms = Arc::new(builder(&arn, &endpoint).build().await.unwrap());
    let writer = Arc::new(KeyHierarchy::new(kms, store.clone()));
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("tenant-{i:05}");
            assert!(tenant.len() <= MAX_TENANT_ID_BYTES);
            let row = writer
                .new_row_key(&SPEC, &tenant, None, &email_only())
                .await
                .unwrap();
            let sealed = row.seal(EMAIL, tenant.as_bytes()).unwrap();
            drop(permit);
            (tenant, row.header_bytes(), sealed)
        }));
    }
    let mut rows = Vec::with_capacity(TENANTS);
    for t in tasks {
        rows.push(t.await.unwrap());
    }
    drop(writer);
    assert_eq!(store.records().len(), TENANTS);
    eprintln!(
        "set-up: {TENANTS} tenant keys created in {:?}",
        started.elapsed()
    );

    // This process reaches KMS through the counting proxy.
    let proxy = FaultProxy::start(&endpoint).await;
    let kms = Arc::new(builder(&arn, &proxy.url).build().await.unwrap());
    let reader = Arc::new(KeyHierarchy::new(
        kms.clone(),
        store.clone() as Arc<dyn KeyStore>,
    ));
    proxy.reset_log();

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
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
                        .open_row_key(&SPEC, &tenant, None, &header, &email_only())
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
    let decrypts = proxy.count(Some("Decrypt"));
    let all = proxy.count(None);
    eprintln!(
        "burst: {TENANTS} cold tenants x {READERS_PER_TENANT} readers: {all} requests at the \
         server ({decrypts} Decrypt) in {took:?}"
    );
    // Each tenant was cold, so at least one Decrypt each; no more than one
    // each in all (no retry, no second fetch): exactly one per tenant.
    assert_eq!(decrypts, TENANTS);
    assert_eq!(all, TENANTS, "nothing but Decrypt");
    assert!(proxy.faulted().is_empty());
    let c = kms.call_counts().decrypt;
    assert_eq!(
        (c.calls, c.requests, c.failures),
        (TENANTS as u64, TENANTS as u64, 0)
    );

    // Warm now: another pass over some tenants reaches no server.
    proxy.reset_log();
    for i in (0..TENANTS).step_by(101) {
        reader
            .tenant_key(&format!("tenant-{i:05}"), 1)
            .await
            .unwrap();
    }
    assert_eq!(proxy.count(None), 0);
    let s = reader.cache_stats();
    assert_eq!(s.evictions, 0, "{s:?}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let tenant_keys = reader
        .cache_stats_per_cache()
        .into_iter()
        .find(|(name, _)| *name == "tenant_keys")
        .unwrap()
        .1;
    assert_eq!(tenant_keys.loads, TENANTS as u64, "{tenant_keys:?}");
    assert_eq!(tenant_keys.entries, TENANTS as u64, "{tenant_keys:?}");
}
