#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Index-key rotation through a pending state: what writes fill and lookups
//! query at each step, seen by a fresh process and by one whose cache is
//! stale, and the refusals that keep two rotations from overlapping.

use std::sync::Arc;
use std::time::Duration;

use rowseal_core::{
    CacheConfig, Error, KeyHierarchy, KeyPurpose, KeyScope, KeyState, KeyStore, LocalKeyProvider,
    MemoryKeyStore,
};

fn hierarchy(store: &Arc<MemoryKeyStore>, keyring: &str, ttl: Duration) -> KeyHierarchy {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    KeyHierarchy::with_cache_config(
        Arc::new(provider),
        store.clone(),
        CacheConfig {
            max_entries: 100,
            ttl,
        },
    )
}

fn written(v: &rowseal_core::IndexKeyVersions) -> Vec<u32> {
    v.written().collect()
}

fn queried(v: &rowseal_core::IndexKeyVersions) -> Vec<u32> {
    v.queried().collect()
}

#[tokio::test]
async fn pending_version_is_written_and_queried_then_promoted_alone() {
    let keyring = LocalKeyProvider::generate_keyring();
    let store = Arc::new(MemoryKeyStore::new());
    let admin = hierarchy(&store, &keyring, Duration::from_secs(300));
    let scope = KeyScope::Tenant("acme".into());

    // A lookup never creates a key.
    assert!(admin
        .lookup_index_key_versions(&scope)
        .await
        .unwrap()
        .is_none());
    assert!(store.records().is_empty());
    // A write does (version 1).
    let v = admin.index_key_versions(&scope).await.unwrap();
    assert_eq!((written(&v), queried(&v)), (vec![1], vec![1]));

    // An app process that has already cached version 1 alone.
    let stale = hierarchy(&store, &keyring, Duration::from_secs(300));
    assert_eq!(
        written(&stale.index_key_versions(&scope).await.unwrap()),
        vec![1]
    );

    let p = admin.begin_index_key_rotation(&scope).await.unwrap();
    assert_eq!(p, 2);
    // Re-running begin returns the same pending version, creates nothing.
    assert_eq!(admin.begin_index_key_rotation(&scope).await.unwrap(), 2);
    assert_eq!(store.records().len(), 2);

    let fresh = hierarchy(&store, &keyring, Duration::from_secs(300));
    let v = fresh.index_key_versions(&scope).await.unwrap();
    assert_eq!(written(&v), vec![1, 2]);
    assert_eq!(queried(&v), vec![1, 2]);
    // The pending key is usable and distinct.
    let k1 = fresh.index_key(&scope, 1).await.unwrap();
    let k2 = fresh.index_key(&scope, 2).await.unwrap();
    let mac = |k: &rowseal_core::IndexKey| {
        k.blind_index_key("user", "email_idx")
            .unwrap()
            .compute(b"ada@example.com")
    };
    assert_ne!(mac(&k1), mac(&k2));
    // The stale process still sees version 1 alone until its cache expires.
    assert_eq!(
        written(&stale.index_key_versions(&scope).await.unwrap()),
        vec![1]
    );

    admin.promote_index_key(&scope, 2).await.unwrap();
    let after = hierarchy(&store, &keyring, Duration::from_secs(300));
    let v = after.index_key_versions(&scope).await.unwrap();
    assert_eq!((written(&v), queried(&v)), (vec![2], vec![2]));
    let states: Vec<(u32, KeyState)> = store
        .versions(KeyPurpose::Index, &scope)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.version, r.state))
        .collect();
    assert_eq!(states, vec![(1, KeyState::Retired), (2, KeyState::Active)]);
    // A retired key can still be unwrapped (to check old rows), and
    // promoting again is a no-op.
    assert_eq!(mac(&after.index_key(&scope, 1).await.unwrap()), mac(&k1));
    admin.promote_index_key(&scope, 2).await.unwrap();
    // The next rotation starts from version 2.
    assert_eq!(admin.begin_index_key_rotation(&scope).await.unwrap(), 3);
}

#[tokio::test]
async fn a_stale_cache_learns_the_pending_version_within_its_lifetime() {
    let keyring = LocalKeyProvider::generate_keyring();
    let store = Arc::new(MemoryKeyStore::new());
    let admin = hierarchy(&store, &keyring, Duration::from_secs(300));
    let app = hierarchy(&store, &keyring, Duration::from_millis(200));
    let scope = KeyScope::Global;
    assert_eq!(
        written(&app.index_key_versions(&scope).await.unwrap()),
        vec![1]
    );
    admin.begin_index_key_rotation(&scope).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        written(&app.index_key_versions(&scope).await.unwrap()),
        vec![1, 2]
    );
    // Lookups use the same cache: they also query the pending version now.
    let seen = app
        .lookup_index_key_versions(&scope)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queried(&seen), vec![1, 2]);
}

#[tokio::test]
async fn rotations_cannot_overlap_or_start_from_nothing() {
    let keyring = LocalKeyProvider::generate_keyring();
    let store = Arc::new(MemoryKeyStore::new());
    let keys = hierarchy(&store, &keyring, Duration::from_secs(300));
    let scope = KeyScope::Tenant("t".into());
    assert!(matches!(
        keys.begin_index_key_rotation(&scope).await,
        Err(Error::InvalidInput { .. })
    ));
    keys.index_key_versions(&scope).await.unwrap();
    // Two active versions (an unfinished promotion): refused until promoted.
    let provider = LocalKeyProvider::from_keyring_str(&keyring).unwrap();
    let wrapped = rowseal_core::KeyProvider::generate_data_key(
        &provider,
        &rowseal_core::EncryptionContext::index_key(Some("t"), 1),
    )
    .await
    .unwrap()
    .wrapped;
    assert!(store
        .insert(&rowseal_core::KeyRecord {
            purpose: KeyPurpose::Index,
            scope: scope.clone(),
            version: 2,
            wrapped: Some(wrapped),
            state: KeyState::Active,
        })
        .await
        .unwrap());
    keys.forget_cached_keys();
    let v = keys.index_key_versions(&scope).await.unwrap();
    assert_eq!((written(&v), queried(&v)), (vec![2], vec![2, 1]));
    assert!(matches!(
        keys.begin_index_key_rotation(&scope).await,
        Err(Error::InvalidInput { .. })
    ));
    keys.promote_index_key(&scope, 2).await.unwrap();
    assert_eq!(keys.begin_index_key_rotation(&scope).await.unwrap(), 3);
    // Promoting a version that does not exist is a typed error.
    assert!(matches!(
        keys.promote_index_key(&scope, 9).await,
        Err(Error::KeyNotFound { .. })
    ));
}

#[tokio::test]
async fn lookups_see_index_keys_with_caching_off() {
    let keyring = LocalKeyProvider::generate_keyring();
    let store = Arc::new(MemoryKeyStore::new());
    let keys = hierarchy(&store, &keyring, Duration::ZERO);
    let scope = KeyScope::Tenant("t".into());
    assert!(keys
        .lookup_index_key_versions(&scope)
        .await
        .unwrap()
        .is_none());
    keys.index_key_versions(&scope).await.unwrap();
    let seen = keys.lookup_index_key_versions(&scope).await.unwrap();
    assert_eq!(seen.map(|v| queried(&v)), Some(vec![1]));
}
