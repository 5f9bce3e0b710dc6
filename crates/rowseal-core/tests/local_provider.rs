//! The local key provider: configuration errors at start-up, wrapping bound to
//! the context, root-key rotation, and nothing secret in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::{email_set, EMAIL};
use rowseal_core::{
    EncryptionContext, Error, KeyHierarchy, KeyProvider, LocalKeyProvider, MemoryKeyStore,
    ProviderErrorKind, RecordSpec, SecretKey,
};

fn config_error(text: &str) -> String {
    match LocalKeyProvider::from_keyring_str(text) {
        Err(Error::KeyConfig { reason }) => reason,
        other => panic!("expected a KeyConfig error, got {other:?}"),
    }
}

#[test]
fn bad_keyrings_fail_at_start_up_with_a_clear_error() {
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    assert!(config_error("").contains("no key"));
    assert!(config_error("# only a comment\n").contains("no key"));
    assert!(config_error(&format!("v1:{}", b64(16))).contains("32 bytes, found 16"));
    assert!(config_error(&format!("v1:{}", b64(33))).contains("32 bytes, found 33"));
    assert!(config_error("v1:not*base64!").contains("not base64"));
    assert!(config_error(&b64(32)).contains("expected v<N>:<base64 key>"));
    assert!(config_error(&format!("x1:{}", b64(32))).contains("version"));
    assert!(config_error(&format!("v0:{}", b64(32))).contains("version"));
    assert!(config_error(&format!("v1:{0}\nv1:{0}", b64(32))).contains("twice"));
}

#[test]
fn errors_never_quote_key_material() {
    // A key that is one character short of valid base64 for 32 bytes.
    let secretish = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZn*";
    let reason = config_error(&format!("v1:{secretish}"));
    assert!(!reason.contains("QUJD"), "{reason}");
    assert!(!reason.contains('*'), "{reason}");
}

#[test]
fn env_and_file_sources() {
    let dir = std::env::temp_dir().join(format!("rowseal-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys");
    std::fs::write(&path, LocalKeyProvider::generate_keyring()).unwrap();
    assert_eq!(
        LocalKeyProvider::from_file(&path).unwrap().current_key_id(),
        "local:v1"
    );
    let missing = LocalKeyProvider::from_file(dir.join("nope")).unwrap_err();
    assert!(matches!(missing, Error::KeyConfig { .. }), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_wrapped_key_only_unwraps_under_its_context_and_root_key() {
    let p = common::local_provider();
    let ctx = EncryptionContext::tenant_key("a", 1);
    let dk = p.generate_data_key(&ctx).await.unwrap();
    assert_eq!(
        p.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        dk.plaintext
    );
    let err = p
        .decrypt_data_key(&dk.wrapped, &EncryptionContext::tenant_key("b", 1))
        .await
        .unwrap_err();
    assert_eq!(
        err.provider_error().map(|e| e.kind()),
        Some(ProviderErrorKind::InvalidCiphertext)
    );
    // Another keyring cannot unwrap it.
    let other = common::local_provider();
    assert!(other.decrypt_data_key(&dk.wrapped, &ctx).await.is_err());
}

#[tokio::test]
async fn root_key_rotation_by_rewrap() {
    let v1 = LocalKeyProvider::generate_keyring();
    let v2 = LocalKeyProvider::keyring_entry(2, &SecretKey::generate()).replace('#', "\n#");
    let both = format!("{}\n{}", v1.as_str(), v2.as_str());
    let old = LocalKeyProvider::from_keyring_str(&v1).unwrap();
    let new = LocalKeyProvider::from_keyring_str(&both).unwrap();
    assert_eq!(new.current_key_id(), "local:v2");

    let ctx = EncryptionContext::tenant_key("a", 1);
    let dk = old.generate_data_key(&ctx).await.unwrap();
    let rewrapped = new
        .reencrypt_data_key(&dk.wrapped, &ctx, "local:v2")
        .await
        .unwrap();
    assert_eq!(rewrapped.key_id(), "local:v2");
    // Unwraps with only v2 in the keyring.
    let only_v2 = LocalKeyProvider::from_keyring_str(&both)
        .unwrap()
        .with_current_version(2)
        .unwrap();
    assert_eq!(
        only_v2.decrypt_data_key(&rewrapped, &ctx).await.unwrap(),
        dk.plaintext
    );
    let err = new
        .reencrypt_data_key(&dk.wrapped, &ctx, "local:v9")
        .await
        .unwrap_err();
    assert_eq!(
        err.provider_error().map(|e| e.kind()),
        Some(ProviderErrorKind::KeyNotFound)
    );
}

#[tokio::test]
async fn debug_output_holds_no_key_or_plaintext() {
    let text = LocalKeyProvider::generate_keyring();
    let b64 = text
        .lines()
        .nth(1)
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let provider = LocalKeyProvider::from_keyring_str(&text).unwrap();
    let ctx = EncryptionContext::tenant_key("a", 1);
    let dk = provider.generate_data_key(&ctx).await.unwrap();
    let dk_hex: String = dk
        .plaintext
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let keys = KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new()));
    const SPEC: RecordSpec = RecordSpec::new("user", "users");
    let row = keys
        .new_row_key(&SPEC, "a", None, &email_set())
        .await
        .unwrap();
    let tenant_key = keys.current_tenant_key("a").await.unwrap();
    let index_key = keys
        .current_index_key(&rowseal_core::KeyScope::Global)
        .await
        .unwrap();
    let err = row.open(EMAIL, &[1; 40]).unwrap_err();
    let printed = format!(
        "{keys:?} {row:?} {tenant_key:?} {index_key:?} {:?} {dk:?} {err:?} {err}",
        index_key.blind_index_key("user", "e").unwrap()
    );
    assert!(!printed.contains(&b64), "{printed}");
    assert!(!printed.contains(&dk_hex), "{printed}");
    assert!(printed.contains("SecretKey(..)"));
}
