//! The Transit provider against a real OpenBao server: the dev server that
//! `scripts/with-vault-server.sh` starts, and servers of a test's own for
//! sealing, SIGKILL and restart, and TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use rowseal_core::{
    EncryptionContext, Error, KeyHierarchy, KeyProvider, MemoryKeyStore, ProviderError,
    ProviderErrorKind, RetryPolicy, WrappedKey,
};
use rowseal_test_support::proxy::{Fault, FaultProxy};
use rowseal_test_support::vault::{bao_bin, BaoServer};
use rowseal_vault::{TransitAuth, TransitError, TransitOperation, TransitProvider};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn provider_error(e: &Error) -> &ProviderError {
    match e {
        Error::Provider(p) => p,
        other => panic!("expected a provider error, got {other:?}"),
    }
}

fn kind(e: &Error) -> ProviderErrorKind {
    provider_error(e).kind()
}

fn detail(e: &Error) -> &TransitError {
    provider_error(e)
        .source()
        .and_then(|s| s.downcast_ref::<TransitError>())
        .expect("a TransitError source")
}

/// A derived key on the shared server and a token that may use only it.
fn key_and_token(bao: &BaoServer) -> (String, String) {
    let key = unique("k");
    bao.create_key(&key);
    let token = bao.token_with_policy(&unique("p"), &BaoServer::key_user_policy(&[&key]));
    (key, token)
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(50))
}

async fn provider(bao: &BaoServer, key: &str, token: &str) -> TransitProvider {
    TransitProvider::builder(&bao.addr, key)
        .auth(TransitAuth::token(token))
        .retry_policy(quick_retries())
        .build()
        .await
        .unwrap()
}

fn ctx(tenant: &str) -> EncryptionContext {
    EncryptionContext::tenant_key(tenant, 1)
}

#[tokio::test]
async fn round_trip_under_the_context_it_was_made_with() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = provider(&bao, &key, &token).await;
    assert!(p.key_id().starts_with("vault-transit:"), "{}", p.key_id());
    assert!(
        p.key_id().ends_with(&format!("::transit:{key}")),
        "{}",
        p.key_id()
    );

    let dk = p.generate_data_key(&ctx("tenant-a")).await.unwrap();
    assert_eq!(dk.wrapped.key_id(), p.key_id());
    assert!(dk.wrapped.ciphertext().starts_with(b"vault:v1:"));
    // Stored and read back as bytes, as the key store does.
    let stored = WrappedKey::from_bytes(&dk.wrapped.to_bytes()).unwrap();
    let back = p.decrypt_data_key(&stored, &ctx("tenant-a")).await.unwrap();
    assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());

    let counts = p.call_counts();
    assert_eq!(counts.get(TransitOperation::DataKey).calls, 1);
    assert_eq!(counts.get(TransitOperation::Decrypt).calls, 1);
    assert_eq!(counts.get(TransitOperation::ReadKey).calls, 1);
    assert_eq!(counts.key_calls(), 2);
}

#[tokio::test]
async fn another_context_is_refused_and_not_retried() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = provider(&bao, &key, &token).await;
    let dk = p.generate_data_key(&ctx("tenant-a")).await.unwrap();
    for other in [
        ctx("tenant-b"),
        EncryptionContext::tenant_key("tenant-a", 2),
        EncryptionContext::index_key(Some("tenant-a"), 1),
    ] {
        let err = p.decrypt_data_key(&dk.wrapped, &other).await.unwrap_err();
        assert_eq!(kind(&err), ProviderErrorKind::InvalidCiphertext, "{err}");
        assert_eq!(detail(&err).attempts(), 1, "a final error is not retried");
        assert!(
            err.to_string().contains("message authentication failed"),
            "{err}"
        );
    }
    // A changed ciphertext, and bytes that are not a Transit ciphertext.
    let mut text = String::from_utf8(dk.wrapped.ciphertext().to_vec()).unwrap();
    let last = text.pop().unwrap();
    text.push(if last == 'A' { 'B' } else { 'A' });
    let changed = WrappedKey::new(p.key_id(), text.into_bytes()).unwrap();
    let err = p
        .decrypt_data_key(&changed, &ctx("tenant-a"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::InvalidCiphertext, "{err}");
    let before = p.call_counts().get(TransitOperation::Decrypt).requests;
    let junk = WrappedKey::new(p.key_id(), vec![0xff, 0x00, 0x13]).unwrap();
    let err = p
        .decrypt_data_key(&junk, &ctx("tenant-a"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::InvalidCiphertext, "{err}");
    assert_eq!(
        p.call_counts().get(TransitOperation::Decrypt).requests,
        before,
        "refused before any request"
    );
}

#[tokio::test]
async fn a_key_off_the_allow_list_is_refused_before_any_request() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = provider(&bao, &key, &token).await;
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    let other_id = p.key_id().replace(&key, "someone-elses-key");
    let moved = WrappedKey::new(other_id, dk.wrapped.ciphertext().to_vec()).unwrap();
    let before = p.call_counts();
    let err = p.decrypt_data_key(&moved, &ctx("t")).await.unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyNotAllowed, "{err}");
    let err = p
        .reencrypt_data_key(&moved, &ctx("t"), p.key_id())
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyNotAllowed, "{err}");
    assert_eq!(p.call_counts(), before, "nothing was sent to Vault");
}

#[tokio::test]
async fn rewrap_after_a_transit_key_rotation_and_retiring_old_versions() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = provider(&bao, &key, &token).await;
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    bao.bao(&["write", "-f", &format!("transit/keys/{key}/rotate")]);

    let rewrapped = p
        .reencrypt_data_key(&dk.wrapped, &ctx("t"), p.key_id())
        .await
        .unwrap();
    assert_eq!(rewrapped.key_id(), p.key_id());
    assert!(rewrapped.ciphertext().starts_with(b"vault:v2:"));
    assert_eq!(p.call_counts().get(TransitOperation::Rewrap).calls, 1);
    assert_eq!(
        p.call_counts().get(TransitOperation::Decrypt).calls,
        0,
        "rewrap happens inside Vault"
    );
    let back = p.decrypt_data_key(&rewrapped, &ctx("t")).await.unwrap();
    assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
    // The rewrapped key is still bound to its context.
    let err = p.decrypt_data_key(&rewrapped, &ctx("u")).await.unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::InvalidCiphertext);

    // Once every key is rewrapped, the operator retires version 1: what was
    // not rewrapped fails as a disabled key, never as tampering.
    bao.bao(&[
        "write",
        &format!("transit/keys/{key}/config"),
        "min_decryption_version=2",
    ]);
    let err = p
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyDisabled, "{err}");
    p.decrypt_data_key(&rewrapped, &ctx("t")).await.unwrap();
}

#[tokio::test]
async fn moving_a_data_key_to_another_transit_key() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let from = unique("from");
    let to = unique("to");
    bao.create_key(&from);
    bao.create_key(&to);
    let token = bao.token_with_policy(&unique("p"), &BaoServer::key_user_policy(&[&from, &to]));
    let old = provider(&bao, &from, &token).await;
    let dk = old.generate_data_key(&ctx("t")).await.unwrap();

    let moved = old
        .reencrypt_data_key(&dk.wrapped, &ctx("t"), &to)
        .await
        .unwrap();
    assert!(moved.key_id().ends_with(&format!(":transit:{to}")));
    let new = provider(&bao, &to, &token).await;
    assert_eq!(moved.key_id(), new.key_id());
    let back = new.decrypt_data_key(&moved, &ctx("t")).await.unwrap();
    assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
    let counts = old.call_counts();
    assert_eq!(counts.get(TransitOperation::Encrypt).calls, 1);
    // The old provider does not read the moved key unless told to.
    let err = old.decrypt_data_key(&moved, &ctx("t")).await.unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyNotAllowed);
    // A provider for the new key that still allows the old one reads both.
    let both = TransitProvider::builder(&bao.addr, &to)
        .auth(TransitAuth::token(&token))
        .allow_key(&from)
        .build()
        .await
        .unwrap();
    both.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
    both.decrypt_data_key(&moved, &ctx("t")).await.unwrap();
}

#[tokio::test]
async fn a_key_that_is_not_derived_is_refused_at_start() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let key = unique("plain");
    bao.bao(&["write", "-f", &format!("transit/keys/{key}")]);
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .build()
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Config, "{err}");
    assert!(err.to_string().contains("derived=true"), "{err}");

    let err = TransitProvider::builder(&bao.addr, unique("missing"))
        .auth(TransitAuth::token(&bao.root_token))
        .build()
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyNotFound, "{err}");
}

#[tokio::test]
async fn denied_policy_revocation_and_restoring_access() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, _) = key_and_token(&bao);
    // A token whose policy names another key: refused at start.
    let elsewhere = bao.token_with_policy(&unique("p"), &BaoServer::key_user_policy(&["nope"]));
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&elsewhere))
        .build()
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::AccessDenied, "{err}");
    assert!(err.to_string().contains("needs `read`"), "{err}");

    // The customer revokes access through the policy, then restores it.
    let policy = unique("p");
    let token = bao.token_with_policy(&policy, &BaoServer::key_user_policy(&[&key]));
    let p = provider(&bao, &key, &token).await;
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    bao.bao_stdin(
        &["policy", "write", &policy, "-"],
        Some(&BaoServer::key_user_policy(&["nope"])),
    );
    for err in [
        p.generate_data_key(&ctx("t")).await.unwrap_err(),
        p.decrypt_data_key(&dk.wrapped, &ctx("t"))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(kind(&err), ProviderErrorKind::AccessDenied, "{err}");
        assert_eq!(detail(&err).attempts(), 1, "never retried");
        assert_eq!(detail(&err).http_status(), Some(403));
        assert!(!Error::Provider(provider_error(&err).clone()).is_retryable());
    }
    bao.bao_stdin(
        &["policy", "write", &policy, "-"],
        Some(&BaoServer::key_user_policy(&[&key])),
    );
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
}

#[tokio::test]
async fn approle_logs_in_and_again_when_its_token_expires() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, _) = key_and_token(&bao);
    let policy = unique("p");
    bao.bao_stdin(
        &["policy", "write", &policy, "-"],
        Some(&BaoServer::key_user_policy(&[&key])),
    );
    let mount = unique("approle");
    bao.bao(&["auth", "enable", &format!("-path={mount}"), "approle"]);
    let role = format!("auth/{mount}/role/rowseal");
    bao.bao(&[
        "write",
        &role,
        &format!("token_policies={policy}"),
        "token_ttl=3s",
        "token_max_ttl=3s",
    ]);
    let role_id = bao.bao(&["read", "-field=role_id", &format!("{role}/role-id")]);
    let secret_id = bao.bao(&[
        "write",
        "-f",
        "-field=secret_id",
        &format!("{role}/secret-id"),
    ]);
    let auth = TransitAuth::approle(role_id.trim(), secret_id.trim()).with_mount(&mount);
    assert!(!format!("{auth:?}").contains(secret_id.trim()));

    let p = TransitProvider::builder(&bao.addr, &key)
        .auth(auth)
        .build()
        .await
        .unwrap();
    assert!(!format!("{p:?}").contains(secret_id.trim()));
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    assert_eq!(p.call_counts().get(TransitOperation::Login).calls, 1);
    // Past the token's TTL: the provider logs in again before using it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
    assert_eq!(p.call_counts().get(TransitOperation::Login).calls, 2);

    // A wrong secret id fails at start, as denied.
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::approle(role_id.trim(), "wrong").with_mount(&mount))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            kind(&err),
            ProviderErrorKind::AccessDenied | ProviderErrorKind::Config
        ),
        "{err}"
    );
}

#[tokio::test]
async fn namespaces_separate_keys_of_the_same_name() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let ns = unique("ns");
    bao.bao(&["namespace", "create", &ns]);
    let key = unique("k");
    bao.create_key(&key);
    let in_ns = format!("-namespace={ns}");
    bao.bao(&["secrets", "enable", &in_ns, "transit"]);
    bao.bao(&[
        "write",
        &in_ns,
        "-f",
        &format!("transit/keys/{key}"),
        "derived=true",
    ]);

    let root = provider(&bao, &key, &bao.root_token).await;
    let scoped = TransitProvider::builder(&bao.addr, &key)
        .namespace(&ns)
        .auth(TransitAuth::token(&bao.root_token))
        .build()
        .await
        .unwrap();
    assert_ne!(root.key_id(), scoped.key_id());
    assert!(scoped.key_id().contains(&format!(":{ns}:transit:{key}")));
    let dk = scoped.generate_data_key(&ctx("t")).await.unwrap();
    scoped
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap();
    // The same key name outside the namespace is another key.
    let err = root
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::KeyNotAllowed);
}

#[tokio::test]
async fn throttled_by_a_rate_limit_quota_then_served() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&token))
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(8)
                .with_initial_backoff(Duration::from_millis(300))
                .with_max_backoff(Duration::from_millis(1200)),
        )
        .build()
        .await
        .unwrap();
    // A real 429 from the server: one request a second on this key's data
    // keys.
    let quota = unique("q");
    bao.bao(&[
        "write",
        &format!("sys/quotas/rate-limit/{quota}"),
        "rate=1",
        "interval=1s",
        &format!("path=transit/datakey/plaintext/{key}"),
    ]);
    for i in 0..3 {
        p.generate_data_key(&ctx(&format!("t{i}"))).await.unwrap();
    }
    let c = p.call_counts().get(TransitOperation::DataKey);
    assert_eq!(c.calls, 3);
    assert!(c.requests > 3, "throttled requests were retried: {c:?}");

    // With no retries, throttling surfaces as the typed, retryable error.
    let impatient = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&token))
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .await
        .unwrap();
    let mut saw = None;
    for i in 0..5 {
        if let Err(e) = impatient.generate_data_key(&ctx(&format!("u{i}"))).await {
            saw = Some(e);
            break;
        }
    }
    bao.bao(&["delete", &format!("sys/quotas/rate-limit/{quota}")]);
    let err = saw.expect("a throttled call within 5 back-to-back calls");
    assert_eq!(kind(&err), ProviderErrorKind::Throttled, "{err}");
    assert_eq!(detail(&err).http_status(), Some(429));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn sealed_then_killed_then_restarted() {
    let Some(bin) = bao_bin() else { return };
    let mut bao = BaoServer::persistent(&bin);
    let key = unique("k");
    bao.create_key(&key);
    let p = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .retry_policy(quick_retries())
        .operation_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let patient = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(100)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .operation_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();

    bao.seal();
    let err = p
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Sealed, "{err}");
    assert_eq!(detail(&err).attempts(), 3, "retried as transient");
    assert!(err.is_retryable());
    bao.unseal();
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();

    // SIGKILL: the server is gone.
    bao.kill();
    let err = p.generate_data_key(&ctx("t")).await.unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());

    // Restarted, it comes up sealed: a provider is refused at start...
    bao.start_again();
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .build()
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Sealed, "{err}");
    // ...and a running one, with a patient retry policy, is served once the
    // operator unseals, with the key written before the SIGKILL.
    let wrapped = dk.wrapped.clone();
    let call = tokio::spawn(async move { patient.decrypt_data_key(&wrapped, &ctx("t")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    bao.unseal();
    let back = call.await.unwrap().unwrap();
    assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
}

#[tokio::test]
async fn tls_with_the_servers_ca_and_refused_without_it() {
    let Some(bin) = bao_bin() else { return };
    let bao = BaoServer::dev_tls(&bin);
    let key = unique("k");
    bao.create_key(&key);
    let p = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .ca_file(bao.ca_file.clone().unwrap())
        .build()
        .await
        .unwrap();
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();

    // The system's roots do not trust the throw-away CA: a configuration
    // error at once, not an outage retried.
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .build()
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Config, "{err}");
    assert_eq!(detail(&err).attempts(), 1);
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_and_refused_without() {
    let Some(bin) = bao_bin() else { return };
    let Some(bao) = BaoServer::mutual_tls(&bin) else {
        return;
    };
    let key = unique("k");
    bao.create_key(&key);
    let (cert, client_key) = bao.client_cert.clone().unwrap();
    let p = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .ca_file(bao.ca_file.clone().unwrap())
        .client_cert(cert, client_key)
        .build()
        .await
        .unwrap();
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();

    // Without the client certificate the server refuses the handshake:
    // an error at start, never a plaintext fallback.
    let err = TransitProvider::builder(&bao.addr, &key)
        .auth(TransitAuth::token(&bao.root_token))
        .ca_file(bao.ca_file.clone().unwrap())
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            kind(&err),
            ProviderErrorKind::Config | ProviderErrorKind::Unavailable
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_hierarchy_calls_transit_once_per_tenant_key() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let p = Arc::new(provider(&bao, &key, &token).await);
    let keys = KeyHierarchy::new(p.clone(), Arc::new(MemoryKeyStore::new()));
    for round in 0..3 {
        for t in 0..10 {
            keys.current_tenant_key(&format!("tenant-{t}"))
                .await
                .unwrap();
        }
        if round == 0 {
            keys.forget_cached_keys();
        }
    }
    let c = p.call_counts();
    assert_eq!(
        c.get(TransitOperation::DataKey).calls,
        10,
        "one new key per tenant"
    );
    assert_eq!(
        c.get(TransitOperation::Decrypt).calls,
        10,
        "one unwrap per tenant after the cache was emptied, then cached"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let auth = TransitAuth::token("hvs.very-secret");
    assert!(!format!("{auth:?}").contains("very-secret"));
}

#[tokio::test]
async fn throttling_and_outages_through_the_fault_proxy() {
    let Some(bao) = BaoServer::shared() else {
        return;
    };
    let (key, token) = key_and_token(&bao);
    let proxy = FaultProxy::start(&bao.addr).await;
    let p = TransitProvider::builder(&proxy.url, &key)
        .auth(TransitAuth::token(&token))
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .attempt_timeout(Duration::from_millis(400))
        .operation_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let throttled = || Fault::Error {
        status: 429,
        code: "throttled",
    };

    // Two 429s, then served: three requests, one call, no failure.
    proxy.reset_log();
    proxy.fail_next(2, throttled());
    let dk = p.generate_data_key(&ctx("t")).await.unwrap();
    assert_eq!(proxy.count(None), 3);
    let c = p.call_counts().get(TransitOperation::DataKey);
    assert_eq!((c.calls, c.requests, c.failures), (1, 3, 0));

    // Throttled at every attempt: the typed, retryable error after 4.
    proxy.fail_always(None, throttled());
    let err = p
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Throttled, "{err}");
    assert_eq!(detail(&err).attempts(), 4);
    assert!(err.is_retryable());
    proxy.clear_faults();

    // A 502 from a load balancer in front of Vault: an outage, retried.
    proxy.reset_log();
    proxy.fail_next(
        1,
        Fault::Error {
            status: 502,
            code: "bad-gateway",
        },
    );
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
    assert_eq!(proxy.count(None), 2);

    // A server that accepts and never answers: a timeout within the
    // operation budget.
    proxy.fail_always(None, Fault::Hang);
    let started = std::time::Instant::now();
    let err = p
        .decrypt_data_key(&dk.wrapped, &ctx("t"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ProviderErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    proxy.clear_faults();
    p.decrypt_data_key(&dk.wrapped, &ctx("t")).await.unwrap();
}
