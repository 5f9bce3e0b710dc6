//! The record-keys cache of `KeyHierarchy`: shared `Arc`s, single flight,
//! expiry with the tenant key, `forget_cached_keys`, one entry per spec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{email_set, fixture, fixture_with, local_provider, SlowProvider, EMAIL};
use rowseal_core::{CacheConfig, KeyMode, KeyStore, LocalKeyProvider, RecordSpec};

const SPEC: RecordSpec = RecordSpec::new("user", "users");

fn short_ttl(ms: u64) -> CacheConfig {
    CacheConfig {
        max_entries: 100,
        ttl: Duration::from_millis(ms),
    }
}

#[tokio::test]
async fn repeated_calls_return_the_same_arc() {
    let f = fixture();
    let a = f.keys.current_record_keys(&SPEC, "acme").await.unwrap();
    let b = f.keys.current_record_keys(&SPEC, "acme").await.unwrap();
    let c = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    let d = f
        .keys
        .new_rows_record_keys(&SPEC, "acme")
        .await
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &c));
    assert!(Arc::ptr_eq(&a, &d));
    assert_eq!(a.tenant_key_version(), 1);
    // One GenerateDataKey (the tenant key), nothing else.
    assert_eq!(f.counting.counts().total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_cold_calls_make_one_provider_call() {
    let keyring = LocalKeyProvider::generate_keyring();
    let slow = |k: &str| {
        Arc::new(SlowProvider {
            inner: LocalKeyProvider::from_keyring_str(k).unwrap(),
            delay: Duration::from_millis(50),
        })
    };
    let writer = fixture_with(slow(&keyring), CacheConfig::default());
    let row = writer
        .keys
        .new_row_key(&SPEC, "acme", None, &email_set())
        .await
        .unwrap();
    let header = row.header_bytes();
    let sealed = row.seal(EMAIL, b"ada@example.com").unwrap();

    let reader = fixture_with(slow(&keyring), CacheConfig::default());
    for rec in writer.store.records() {
        reader.store.insert(&rec).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let keys = reader.keys.clone();
        tasks.push(tokio::spawn(async move {
            keys.record_keys(&SPEC, "acme", 1).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap().unwrap());
    }
    assert!(all.iter().all(|k| Arc::ptr_eq(k, &all[0])));
    let row = all[0].open_row(None, &header, &email_set()).unwrap();
    assert_eq!(row.open(EMAIL, &sealed).unwrap(), b"ada@example.com");
    assert_eq!(reader.counting.counts().decrypt, 1);
    assert_eq!(reader.counting.counts().total(), 1);
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again() {
    let f = fixture_with(Arc::new(local_provider()), short_ttl(100));
    f.keys
        .new_row_key(&SPEC, "acme", None, &email_set())
        .await
        .unwrap();
    f.keys.forget_cached_keys();
    let a = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    let b = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(f.counting.counts().decrypt, 1, "second call is cached");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let c = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(
        f.counting.counts().decrypt,
        2,
        "expired entry fetched again"
    );
}

#[tokio::test]
async fn an_entry_expires_with_the_tenant_key_it_came_from() {
    let f = fixture_with(Arc::new(local_provider()), short_ttl(400));
    f.keys
        .new_row_key(&SPEC, "acme", None, &email_set())
        .await
        .unwrap();
    f.keys.forget_cached_keys();
    f.keys.tenant_key("acme", 1).await.unwrap();
    assert_eq!(f.counting.counts().decrypt, 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Derived from the cached tenant key: no provider call...
    let a = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    assert_eq!(f.counting.counts().decrypt, 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // ...and gone when that tenant key expires, not a lifetime after.
    let b = f.keys.record_keys(&SPEC, "acme", 1).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(f.counting.counts().decrypt, 2);
}

#[tokio::test]
async fn forget_cached_keys_clears_them() {
    let f = fixture();
    let a = f.keys.current_record_keys(&SPEC, "acme").await.unwrap();
    f.keys.forget_cached_keys();
    let b = f.keys.current_record_keys(&SPEC, "acme").await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(f.counting.counts().generate, 1);
    assert_eq!(f.counting.counts().decrypt, 1, "fetched again after forget");
    // Same tenant key, so the same keys.
    let row = a.new_row(None, &email_set()).unwrap();
    let sealed = row.seal(EMAIL, b"x").unwrap();
    let opened = b.open_row(None, &row.header_bytes(), &email_set()).unwrap();
    assert_eq!(opened.open(EMAIL, &sealed).unwrap(), b"x");
}

#[tokio::test]
async fn different_specs_get_different_keys() {
    let f = fixture();
    let specs = [
        SPEC,
        RecordSpec::new("admin", "users"),
        RecordSpec::new("user", "people"),
        RecordSpec::new("user", "users").with_primary_key_bound(true),
        RecordSpec::owned("user".into(), "users2".into()),
    ];
    let mut keys = Vec::new();
    for s in &specs {
        keys.push(f.keys.current_record_keys(s, "acme").await.unwrap());
    }
    for i in 0..keys.len() {
        for j in 0..keys.len() {
            assert_eq!(Arc::ptr_eq(&keys[i], &keys[j]), i == j, "{i} {j}");
        }
    }
    // An equal spec built another way shares the entry.
    let again = f
        .keys
        .current_record_keys(&RecordSpec::owned("user".into(), "users".into()), "acme")
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&again, &keys[0]));
    // A row of one record type does not open under another's keys.
    let row = keys[0].new_row(None, &email_set()).unwrap();
    let sealed = row.seal(EMAIL, b"x").unwrap();
    let other = keys[1].open_row(None, &row.header_bytes(), &email_set());
    assert!(other.map_or(true, |r| r.open(EMAIL, &sealed).is_err()));
    // Another table of the same record type: a format 2 row opens (tables
    // may be renamed), a format 1 row, which bound its table, does not.
    let renamed = keys[2]
        .open_row(None, &row.header_bytes(), &email_set())
        .unwrap();
    assert_eq!(renamed.open(EMAIL, &sealed).unwrap(), b"x");
    let v1 = keys[0].new_row_v1(None).unwrap();
    let sealed_v1 = v1.seal(EMAIL, b"x").unwrap();
    let other = keys[2].open_row(None, &v1.header_bytes(), &email_set());
    assert!(other.map_or(true, |r| r.open(EMAIL, &sealed_v1).is_err()));
    // Another tenant: other keys.
    let other_tenant = f.keys.current_record_keys(&SPEC, "globex").await.unwrap();
    assert!(!Arc::ptr_eq(&other_tenant, &keys[0]));
    assert!(other_tenant
        .open_row(None, &row.header_bytes(), &email_set())
        .is_err());
    // One tenant key per tenant, whatever the number of specs.
    assert_eq!(f.counting.counts().generate, 2);
    assert_eq!(f.counting.counts().total(), 2);
}

#[tokio::test]
async fn kms_mode_has_no_record_keys_and_costs_nothing_to_ask() {
    const PER_ROW: RecordSpec = RecordSpec::new("user", "users").with_key_mode(KeyMode::Kms);
    let f = fixture();
    assert!(f
        .keys
        .new_rows_record_keys(&PER_ROW, "acme")
        .await
        .unwrap()
        .is_none());
    assert_eq!(f.counting.counts().total(), 0);
    f.keys
        .new_row_key(&PER_ROW, "acme", None, &email_set())
        .await
        .unwrap();
    assert_eq!(f.counting.counts().generate, 1);
}

/// Finding 6 of the v1 review: every cache (tenant, record, index,
/// blind-index and row data keys) is cleared by `forget_cached_keys`, and
/// expired entries leave an idle process on their own, seen through the
/// caches' own introspection.
#[tokio::test]
async fn every_key_cache_is_cleared_and_swept() {
    use rowseal_core::KeyScope;
    let ttl = Duration::from_millis(150);
    let f = fixture_with(Arc::new(local_provider()), short_ttl(150));
    let kms = RecordSpec::new("audit", "audit_log").with_key_mode(KeyMode::Kms);
    let fill = || async {
        f.keys.current_record_keys(&SPEC, "acme").await.unwrap();
        let scope = KeyScope::Tenant("acme".into());
        let index = f.keys.current_index_key(&scope).await.unwrap();
        f.keys
            .blind_index_key(&scope, index.version(), "user", "email_idx")
            .await
            .unwrap();
        let row = f
            .keys
            .new_row_key(&kms, "acme", None, &email_set())
            .await
            .unwrap();
        f.keys
            .open_row_key(&kms, "acme", None, &row.header_bytes(), &email_set())
            .await
            .unwrap();
    };
    fill().await;
    let cached = f.keys.cached_keys();
    assert!(cached.holds_tenant("acme"), "{cached:?}");
    assert!(!cached.holds_tenant("other"));
    assert_eq!(cached.tenant_keys, vec![("acme".to_owned(), 1)]);
    assert_eq!(cached.record_keys.len(), 1);
    assert_eq!(cached.index_keys.len(), 1);
    assert_eq!(cached.blind_index_keys.len(), 1);
    assert_eq!(cached.row_data_keys, vec!["acme".to_owned()]);

    f.keys.forget_cached_keys();
    assert!(f.keys.cached_keys().is_empty());

    // Idle: no call touches the caches; the sweeper empties them within a
    // quarter lifetime of expiry.
    fill().await;
    assert!(f.keys.cached_keys().holds_tenant("acme"));
    tokio::time::sleep(ttl + ttl / 2).await;
    let cached = f.keys.cached_keys();
    assert!(cached.is_empty(), "after one lifetime: {cached:?}");
}

/// A kms-mode row data key is cached per context: the same wrapped key
/// presented for another tenant is not served from the cache but sent to
/// the provider, which refuses it (and would log the attempt).
#[tokio::test]
async fn a_row_data_key_is_cached_per_tenant_and_context() {
    let f = fixture();
    let kms = RecordSpec::new("audit", "audit_log").with_key_mode(KeyMode::Kms);
    let row = f
        .keys
        .new_row_key(&kms, "acme", None, &email_set())
        .await
        .unwrap();
    let header = row.header_bytes();
    f.keys
        .open_row_key(&kms, "acme", None, &header, &email_set())
        .await
        .unwrap();
    let before = f.counting.counts();
    assert!(f
        .keys
        .open_row_key(&kms, "other", None, &header, &email_set())
        .await
        .is_err());
    let after = f.counting.counts();
    assert_eq!(
        after.decrypt,
        before.decrypt + 1,
        "the other tenant's request went to the provider"
    );
}
