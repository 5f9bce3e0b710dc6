#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `Encryptor::from_env`: a service configured by its environment only. One
//! test in its binary, as it sets process-wide environment variables.

use std::time::Duration;

use rowseal_core::{ErrorKind, LocalKeyProvider};
use rowseal_sqlx::{
    schema, Encrypted, Encryptor, CACHE_MAX_ENTRIES_ENV, CACHE_TTL_SECS_ENV, CRYPTO_THREADS_ENV,
    KMS_KEY_ID_ENV,
};
use rowseal_test_support::db;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "env_notes", record_type = "note", tenant = tenant_id, primary_key = id)]
struct Note {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    body: String,
}

const VARS: [&str; 7] = [
    "ROWSEAL_LOCAL_KEYS",
    "ROWSEAL_LOCAL_KEY_FILE",
    KMS_KEY_ID_ENV,
    CACHE_MAX_ENTRIES_ENV,
    CACHE_TTL_SECS_ENV,
    CRYPTO_THREADS_ENV,
    "ROWSEAL_KMS_ENDPOINT",
];

fn clear() {
    for v in VARS {
        std::env::remove_var(v);
    }
}

#[tokio::test]
async fn an_encryptor_from_the_environment() {
    let test_db = db::sqlite(2).await;
    let pool = test_db.pool.clone();
    schema::install(&pool).await.unwrap();
    schema::create_table::<Note, _>(&pool).await.unwrap();

    // Nothing configured: a configuration error naming the variables.
    clear();
    let e = Encryptor::from_env(&pool).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    let text = e.to_string();
    for name in [
        "ROWSEAL_KMS_KEY_ID",
        "ROWSEAL_LOCAL_KEYS",
        "ROWSEAL_LOCAL_KEY_FILE",
    ] {
        assert!(text.contains(name), "{text}");
    }

    // A local keyring and tuning: the settings reach the encryptor, its keys
    // go to the pool's rowseal_keys table, and a second process configured
    // the same way reads what the first wrote.
    let keyring = LocalKeyProvider::generate_keyring();
    std::env::set_var("ROWSEAL_LOCAL_KEYS", keyring.as_str());
    std::env::set_var(CACHE_MAX_ENTRIES_ENV, "4321");
    std::env::set_var(CACHE_TTL_SECS_ENV, "42");
    std::env::set_var(CRYPTO_THREADS_ENV, "1");
    let enc = Encryptor::from_env(&pool).await.unwrap();
    assert_eq!(enc.keys().cache_config().max_entries, 4321);
    assert_eq!(enc.keys().cache_config().ttl, Duration::from_secs(42));
    assert_eq!(enc.crypto_pool().threads(), 1);
    let note = Note {
        id: 1,
        tenant_id: "acme".into(),
        body: "from the environment".into(),
    };
    enc.insert(&pool, &note).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rowseal_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored >= 1, "the tenant key is in the pool's key store");
    let other = Encryptor::from_env(&pool).await.unwrap();
    assert_eq!(
        other.fetch::<Note, _>(&pool, "acme", &1).await.unwrap(),
        Some(note)
    );

    // A number that does not parse names its variable, not its value.
    std::env::set_var(CRYPTO_THREADS_ENV, "lots-and-lots");
    let e = Encryptor::from_env(&pool).await.unwrap_err();
    assert!(e.to_string().contains(CRYPTO_THREADS_ENV), "{e}");
    assert!(!e.to_string().contains("lots-and-lots"), "{e}");
    std::env::remove_var(CRYPTO_THREADS_ENV);

    // A keyring that is not one: the error never quotes it.
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1uZXZlci1wcmludGVk";
    std::env::set_var("ROWSEAL_LOCAL_KEYS", secret);
    let e = Encryptor::from_env(&pool).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");

    // A KMS key in a build without the AWS provider is refused, not
    // silently replaced by the local keyring.
    std::env::set_var("ROWSEAL_LOCAL_KEYS", keyring.as_str());
    std::env::set_var(KMS_KEY_ID_ENV, "alias/rowseal");
    // Nothing listens there: with the provider built in (feature `kms`),
    // the key is resolved at start-up and fails here, typed.
    std::env::set_var("ROWSEAL_KMS_ENDPOINT", "http://127.0.0.1:9");
    let e = Encryptor::from_env(&pool).await.unwrap_err();
    if cfg!(feature = "kms") {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::ProviderUnavailable | ErrorKind::Configuration | ErrorKind::AccessDenied
            ),
            "{e}"
        );
    } else {
        assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
        assert!(e.to_string().contains("`kms` feature"), "{e}");
    }
    clear();
    test_db.finish().await;
}
