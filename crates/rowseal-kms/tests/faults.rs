//! Faults through the real SDK and real HTTP: a fault-injecting proxy in front
//! of moto answers chosen requests with KMS JSON error bodies, or never
//! answers; a dead endpoint accepts connections and says nothing. Every
//! request is counted at the proxy.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test -p rowseal-kms`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::proxy::{DeadEndpoint, Fault, FaultProxy};
use common::{admin_client, aws_detail, builder, create_key, provider_error, REGION};
use rowseal_core::{EncryptionContext, KeyProvider, ProviderErrorKind};
use rowseal_kms::{AwsKmsProvider, RetryPolicy};

fn ctx() -> EncryptionContext {
    EncryptionContext::tenant_key("tenant-faults", 1)
}

/// A key in moto and a provider for it that talks through a fresh proxy.
async fn through_proxy(endpoint: &str, policy: RetryPolicy) -> (FaultProxy, AwsKmsProvider) {
    let admin = admin_client(endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let proxy = FaultProxy::start(endpoint).await;
    let kms = builder(&arn, &proxy.url)
        .retry_policy(policy)
        .build()
        .await
        .unwrap();
    proxy.reset_log();
    (proxy, kms)
}

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(100))
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let endpoint = endpoint_or_skip!();
    let (proxy, kms) = through_proxy(&endpoint, fast_retries(4)).await;

    proxy.fail_next(2, Fault::throttling());
    let dk = kms.generate_data_key(&ctx()).await.unwrap();
    assert_eq!(
        proxy.count(Some("GenerateDataKey")),
        3,
        "2 throttled + 1 forwarded"
    );
    let c = kms.call_counts().generate_data_key;
    assert_eq!((c.calls, c.requests, c.failures), (1, 3, 0));

    // Decrypt too, and 5xx answers the same way.
    proxy.fail_next(1, Fault::throttling());
    proxy.fail_next(1, Fault::code("KMSInternalException"));
    let key = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap();
    assert_eq!(key, dk.plaintext);
    assert_eq!(proxy.count(Some("Decrypt")), 3);
}

#[tokio::test]
async fn persistent_throttling_and_5xx_stop_at_max_attempts() {
    let endpoint = endpoint_or_skip!();
    let (proxy, kms) = through_proxy(&endpoint, fast_retries(3)).await;

    proxy.fail_always(Some("GenerateDataKey"), Fault::throttling());
    let err = kms.generate_data_key(&ctx()).await.unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Throttled, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 3);
    assert_eq!(aws_detail(pe).code(), Some("ThrottlingException"));
    assert_eq!(proxy.count(Some("GenerateDataKey")), 3);

    proxy.clear_faults();
    proxy.reset_log();
    proxy.fail_always(
        None,
        Fault::Error {
            status: 503,
            code: "ServiceUnavailableException",
        },
    );
    let err = kms.generate_data_key(&ctx()).await.unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Unavailable, "{err}");
    assert_eq!(aws_detail(pe).http_status(), Some(503));
    assert_eq!(proxy.count(None), 3);
}

#[tokio::test]
async fn final_errors_fail_at_once_with_exactly_one_request() {
    let endpoint = endpoint_or_skip!();
    let (proxy, kms) = through_proxy(&endpoint, fast_retries(5)).await;
    let dk = kms.generate_data_key(&ctx()).await.unwrap();

    for (code, kind) in [
        ("AccessDeniedException", ProviderErrorKind::AccessDenied),
        ("DisabledException", ProviderErrorKind::KeyDisabled),
        ("KMSInvalidStateException", ProviderErrorKind::KeyDisabled),
        ("NotFoundException", ProviderErrorKind::KeyNotFound),
        (
            "InvalidCiphertextException",
            ProviderErrorKind::InvalidCiphertext,
        ),
        (
            "IncorrectKeyException",
            ProviderErrorKind::InvalidCiphertext,
        ),
    ] {
        // GenerateDataKey
        proxy.reset_log();
        proxy.fail_next(1, Fault::code(code));
        let started = Instant::now();
        let err = kms.generate_data_key(&ctx()).await.unwrap_err();
        let pe = provider_error(&err);
        assert_eq!(pe.kind(), kind, "{code}: {err}");
        assert!(!pe.kind().is_retryable());
        assert_eq!(proxy.count(None), 1, "{code}: exactly one HTTP request");
        let aws = aws_detail(pe);
        assert_eq!(aws.code(), Some(code));
        assert_eq!(aws.attempts(), 1);
        assert!(
            aws.request_id()
                .is_some_and(|id| id.starts_with("rowseal-proxy-")),
            "the AWS request id travels with the error: {aws:?}"
        );
        assert_eq!(pe.key_id(), Some(kms.key_arn()));
        assert!(started.elapsed() < Duration::from_secs(2), "no backoff");

        // Decrypt
        proxy.reset_log();
        proxy.fail_next(1, Fault::code(code));
        let err = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap_err();
        assert_eq!(provider_error(&err).kind(), kind, "{code}: {err}");
        assert_eq!(proxy.count(None), 1, "{code}: exactly one HTTP request");
    }
    // Nothing left queued: the next call goes through.
    proxy.reset_log();
    kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap();
    assert_eq!(proxy.count(None), 1);
}

#[tokio::test]
async fn dead_endpoint_fails_within_the_configured_timeout() {
    endpoint_or_skip!();
    let dead = DeadEndpoint::start().await;
    let attempt_timeout = Duration::from_millis(400);
    let attempts = 3;
    let policy = fast_retries(attempts);
    let started = Instant::now();
    let err = AwsKmsProvider::builder("alias/anything")
        .sdk_config(common::sdk_config(REGION))
        .endpoint_url(&dead.url)
        .connect_timeout(Duration::from_millis(400))
        .attempt_timeout(attempt_timeout)
        .retry_policy(policy)
        .build()
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Timeout, "{err}");
    assert_eq!(aws_detail(pe).attempts(), attempts);
    // attempts * attempt timeout + backoff (at most 3 x 100 ms) + generous slack.
    let bound = attempt_timeout * attempts + Duration::from_millis(300) + Duration::from_secs(3);
    eprintln!("dead endpoint: {err} after {elapsed:?} (bound {bound:?})");
    assert!(elapsed >= attempt_timeout * attempts, "{elapsed:?}");
    assert!(elapsed < bound, "{elapsed:?} >= {bound:?}");
}

#[tokio::test]
async fn hung_server_is_bounded_by_the_operation_timeout() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let proxy = FaultProxy::start(&endpoint).await;
    let kms = builder(&arn, &proxy.url)
        .attempt_timeout(Duration::from_millis(500))
        .operation_timeout(Duration::from_millis(1200))
        .retry_policy(fast_retries(100))
        .build()
        .await
        .unwrap();
    proxy.reset_log();
    proxy.fail_always(Some("GenerateDataKey"), Fault::Hang);
    let started = Instant::now();
    let err = kms.generate_data_key(&ctx()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::Timeout,
        "{err}"
    );
    let requests = proxy.count(Some("GenerateDataKey"));
    eprintln!("hung server: {err} after {elapsed:?}, {requests} requests");
    assert!(
        (2..=4).contains(&requests),
        "{requests} attempts of 500 ms in 1.2 s"
    );
    assert!(
        elapsed < Duration::from_millis(1200) + Duration::from_secs(3),
        "{elapsed:?}"
    );
    let c = kms.call_counts().generate_data_key;
    assert_eq!(c.requests as usize, requests);
    assert_eq!(c.failures, 1);
}

#[tokio::test]
async fn connection_refused_is_unavailable_after_retries() {
    endpoint_or_skip!();
    // Bind then drop: nothing listens on that port any more.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let err = AwsKmsProvider::builder("alias/anything")
        .sdk_config(common::sdk_config(REGION))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_policy(fast_retries(2))
        .build()
        .await
        .unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Unavailable, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 2);
}

/// A key in moto's us-east-1, presented by the proxies as a multi-Region
/// key: returns (real key id, shown `mrk-` id).
///
/// moto 5.2 cannot decrypt under its own multi-Region keys (its ciphertext
/// format keeps 36 characters of key id and truncates the 40-character
/// `mrk-...` ids, so every Decrypt is refused), and its ReplicateKey fails for
/// single-Region keys. So the proxies stand in for the replication: each shows
/// the key as `mrk-<32 hex>`, and the proxies of the replica regions serve
/// their region from moto's us-east-1 (see `FaultProxy::serve_region_from`).
/// Everything else is real: the SDK, HTTP, one client per region signing for
/// its region, the ARN pinned per region, moto's crypto.
async fn multi_region_key(endpoint: &str) -> (String, String) {
    let admin = admin_client(endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let real = common::key_id_of(&arn).to_owned();
    let shown = format!("mrk-{}", real.replace('-', ""));
    assert_eq!(shown.len(), 36);
    (real, shown)
}

/// A proxy showing the key of [`multi_region_key`], serving `replica` (if
/// any) from moto's us-east-1; requests for a replica region that name the
/// primary region's ARN are refused.
async fn mrk_proxy(endpoint: &str, key: &(String, String), replica: Option<&str>) -> FaultProxy {
    let proxy = FaultProxy::start(endpoint).await;
    proxy.rename_key(&key.0, &key.1);
    if let Some(region) = replica {
        proxy.serve_region_from(region, REGION);
    }
    proxy
}

#[tokio::test]
async fn multi_region_decrypt_falls_back_to_replicas_in_order() {
    let endpoint = endpoint_or_skip!();
    let key = multi_region_key(&endpoint).await;
    let primary = mrk_proxy(&endpoint, &key, None).await;
    let west = mrk_proxy(&endpoint, &key, Some("us-west-2")).await;
    let eu = mrk_proxy(&endpoint, &key, Some("eu-west-1")).await;
    let kms = builder(&key.1, &primary.url)
        .retry_policy(fast_retries(2))
        .replica_client(admin_client(&west.url, "us-west-2"))
        .replica_client(admin_client(&eu.url, "eu-west-1"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        kms.replica_regions().collect::<Vec<_>>(),
        ["us-west-2", "eu-west-1"]
    );
    let arn = kms.key_arn().to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:") && arn.ends_with(&key.1),
        "{arn}"
    );
    let dk = kms.generate_data_key(&ctx()).await.unwrap();
    assert_eq!(dk.wrapped.key_id(), arn);

    // Primary region down (5xx), us-west-2 does not know the key: eu-west-1
    // answers, with the replica ARN pinned.
    primary.fail_always(Some("Decrypt"), Fault::code("KMSInternalException"));
    west.fail_always(Some("Decrypt"), Fault::code("NotFoundException"));
    let key = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap();
    assert_eq!(key, dk.plaintext);
    assert_eq!(
        primary.count(Some("Decrypt")),
        2,
        "primary: retried up to max attempts"
    );
    assert_eq!(
        west.count(Some("Decrypt")),
        1,
        "NotFound: no retry, next region"
    );
    assert_eq!(eu.count(Some("Decrypt")), 1);
    assert_eq!(
        kms.call_counts().decrypt.calls,
        3,
        "one call per region tried"
    );

    // A healthy primary is asked first and alone.
    primary.clear_faults();
    west.clear_faults();
    primary.reset_log();
    west.reset_log();
    eu.reset_log();
    kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap();
    assert_eq!(
        (primary.count(None), west.count(None), eu.count(None)),
        (1, 0, 0)
    );

    // Final errors do not fall back: access denied, wrong context.
    primary.fail_always(Some("Decrypt"), Fault::code("AccessDeniedException"));
    let err = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap_err();
    assert_eq!(provider_error(&err).kind(), ProviderErrorKind::AccessDenied);
    assert_eq!((west.count(None), eu.count(None)), (0, 0));
    primary.clear_faults();
    let err = kms
        .decrypt_data_key(&dk.wrapped, &EncryptionContext::tenant_key("other", 1))
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::InvalidCiphertext
    );
    assert_eq!((west.count(None), eu.count(None)), (0, 0));

    // Every region down: each is tried (with retries), the last error is reported.
    primary.reset_log();
    primary.fail_always(None, Fault::code("KMSInternalException"));
    west.fail_always(None, Fault::code("KMSInternalException"));
    eu.fail_always(None, Fault::throttling());
    let err = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::Throttled,
        "{err}"
    );
    assert_eq!(aws_detail(provider_error(&err)).region(), "eu-west-1");
    assert_eq!(
        (primary.count(None), west.count(None), eu.count(None)),
        (2, 2, 2)
    );
}

/// The allow-list and multi-Region keys: a multi-Region key allowed in one
/// region (as the configured key, or by `allow_key`) also allows its replicas
/// in other regions, and nothing else.
#[tokio::test]
async fn replicas_of_an_allowed_multi_region_key_are_allowed() {
    let endpoint = endpoint_or_skip!();
    let key = multi_region_key(&endpoint).await;
    let primary = mrk_proxy(&endpoint, &key, None).await;
    let west = mrk_proxy(&endpoint, &key, Some("us-west-2")).await;

    // An application in us-west-2 wraps under the replica there.
    let west_app = builder(&key.1, &west.url)
        .region("us-west-2")
        .build()
        .await
        .unwrap();
    let west_arn = west_app.key_arn().to_owned();
    assert!(west_arn.starts_with("arn:aws:kms:us-west-2:"), "{west_arn}");
    let dk = west_app.generate_data_key(&ctx()).await.unwrap();
    assert_eq!(dk.wrapped.key_id(), west_arn);

    // The us-east-1 application (configured with the key there) reads it,
    // through its us-west-2 client: the replica of its own key is allowed.
    let east_app = builder(&key.1, &primary.url)
        .retry_policy(fast_retries(1))
        .replica_client(admin_client(&west.url, "us-west-2"))
        .build()
        .await
        .unwrap();
    assert_ne!(east_app.key_arn(), west_arn);
    assert_eq!(east_app.allowed_keys(), [east_app.key_arn().to_owned()]);
    assert_eq!(
        east_app
            .decrypt_data_key(&dk.wrapped, &ctx())
            .await
            .unwrap(),
        dk.plaintext
    );
    assert_eq!(west.count(Some("Decrypt")), 1);

    // Allowed by `allow_key` (the us-west-2 ARN) on a provider whose own key
    // is another one: the us-east-1 replica is allowed too.
    let other = create_key(&admin_client(&endpoint, REGION), false).await;
    let east_dk = east_app.generate_data_key(&ctx()).await.unwrap();
    let kms = builder(&other, &primary.url)
        .allow_key(&west_arn)
        .build()
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt_data_key(&east_dk.wrapped, &ctx())
            .await
            .unwrap(),
        east_dk.plaintext
    );

    // A multi-Region key id in another account is another key: refused.
    let foreign = west_arn.replacen(
        &west_arn.split(':').nth(4).unwrap().to_owned(),
        "444455556666",
        1,
    );
    let forged = rowseal_core::WrappedKey::new(foreign, dk.wrapped.ciphertext().to_vec()).unwrap();
    primary.reset_log();
    west.reset_log();
    let err = east_app
        .decrypt_data_key(&forged, &ctx())
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed
    );
    assert_eq!((primary.count(None), west.count(None)), (0, 0));
}

#[tokio::test]
async fn single_region_keys_do_not_fall_back() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let primary = FaultProxy::start(&endpoint).await;
    let west = FaultProxy::start(&endpoint).await;
    let kms = builder(&arn, &primary.url)
        .retry_policy(fast_retries(2))
        .replica_client(admin_client(&west.url, "us-west-2"))
        .build()
        .await
        .unwrap();
    let dk = kms.generate_data_key(&ctx()).await.unwrap();
    primary.fail_always(None, Fault::code("KMSInternalException"));
    let err = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap_err();
    assert_eq!(provider_error(&err).kind(), ProviderErrorKind::Unavailable);
    assert_eq!(west.count(None), 0);
}

#[tokio::test]
async fn replica_region_shares_the_primary_configuration() {
    let endpoint = endpoint_or_skip!();
    let key = multi_region_key(&endpoint).await;
    // Both regions through one proxy (as with one local endpoint): the
    // fallback region must be signed for us-west-2 and pin that region's ARN.
    let proxy = mrk_proxy(&endpoint, &key, Some("us-west-2")).await;
    let kms = builder(&key.1, &proxy.url)
        .retry_policy(fast_retries(1))
        .replica_region("us-west-2")
        .build()
        .await
        .unwrap();
    let arn = kms.key_arn().to_owned();
    let dk = kms.generate_data_key(&ctx()).await.unwrap();
    proxy.reset_log();
    // Fail only requests that pin the primary ARN: the fallback succeeds only
    // if it pinned the us-west-2 replica's ARN instead.
    proxy.fail_if_body_contains(
        &format!("\"KeyId\":\"{arn}\""),
        Fault::code("KMSInternalException"),
    );
    let key = kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap();
    assert_eq!(key, dk.plaintext);
    assert_eq!(proxy.faulted().len(), 1);
    assert_eq!(proxy.count(Some("Decrypt")), 2);
}

/// Grant tokens go with every request (the proxy refuses any request whose
/// body carries the token, so each operation failing proves it was sent),
/// and a key moved in from another provider is wrapped with Encrypt.
#[tokio::test]
async fn grant_tokens_go_with_every_request_and_encrypt_wraps_a_moved_key() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let other = create_key(&admin, false).await;
    let proxy = FaultProxy::start(&endpoint).await;
    let token = "rowseal-test-grant-token-7f3a";
    let kms = builder(&arn, &proxy.url)
        .grant_token(token)
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .await
        .unwrap();
    assert!(!format!("{kms:?}").contains(token));
    let dk = kms.generate_data_key(&ctx()).await.unwrap();

    proxy.fail_if_body_contains(token, Fault::code("AccessDeniedException"));
    let denied =
        |e: &rowseal_core::Error| provider_error(e).kind() == ProviderErrorKind::AccessDenied;
    assert!(denied(&kms.generate_data_key(&ctx()).await.unwrap_err()));
    assert!(denied(
        &kms.decrypt_data_key(&dk.wrapped, &ctx()).await.unwrap_err()
    ));
    assert!(denied(
        &kms.reencrypt_data_key(&dk.wrapped, &ctx(), &other)
            .await
            .unwrap_err()
    ));
    assert!(denied(
        &kms.wrap_data_key(&dk.plaintext, &ctx()).await.unwrap_err()
    ));
    proxy.clear_faults();

    let wrapped = kms.wrap_data_key(&dk.plaintext, &ctx()).await.unwrap();
    assert_eq!(wrapped.key_id(), arn);
    let back = kms.decrypt_data_key(&wrapped, &ctx()).await.unwrap();
    assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
    assert_eq!(kms.call_counts().encrypt.calls, 2);
    assert!(kms.allows_key(&arn) && !kms.allows_key(&other));
}
