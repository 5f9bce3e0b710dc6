//! The standard AWS configuration chain: credentials, region and the SDK's
//! endpoint variables (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`), and the
//! explicit endpoint winning over them.
//!
//! The only test in this binary (its own process), because it changes
//! environment variables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{admin_client, create_key, provider_error, REGION};
use rowseal_core::{EncryptionContext, KeyProvider, ProviderErrorKind};
use rowseal_kms::{AwsKmsProvider, RetryPolicy};

async fn round_trip(kms: &AwsKmsProvider) {
    let ctx = EncryptionContext::tenant_key("tenant-env", 1);
    let dk = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(
        kms.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        dk.plaintext
    );
}

#[tokio::test]
async fn standard_chain_and_endpoint_variables() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;

    // A self-contained environment: credentials and region from variables,
    // no profile files, no instance metadata.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "rowseal-test"),
        ("AWS_SECRET_ACCESS_KEY", "rowseal-test"),
        ("AWS_REGION", REGION),
        ("AWS_CONFIG_FILE", "/nonexistent/rowseal-test/config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/rowseal-test/credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        std::env::set_var(k, v);
    }
    for k in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
    ] {
        std::env::remove_var(k);
    }
    let refused = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    // The service-specific variable.
    std::env::set_var("AWS_ENDPOINT_URL_KMS", &endpoint);
    let kms = AwsKmsProvider::builder(&arn).build().await.unwrap();
    assert_eq!(kms.key_arn(), arn);
    assert_eq!(kms.region(), REGION);
    round_trip(&kms).await;

    // The generic variable.
    std::env::remove_var("AWS_ENDPOINT_URL_KMS");
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    let kms = AwsKmsProvider::builder(&arn).build().await.unwrap();
    round_trip(&kms).await;

    // The service-specific variable wins over the generic one...
    std::env::set_var("AWS_ENDPOINT_URL_KMS", &refused);
    let err = AwsKmsProvider::builder(&arn)
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::Unavailable,
        "{err}"
    );

    // ...and the explicit setting wins over both.
    let kms = AwsKmsProvider::builder(&arn)
        .endpoint_url(&endpoint)
        .build()
        .await
        .unwrap();
    round_trip(&kms).await;

    // The explicit region wins over AWS_REGION (the key is not in eu-west-1).
    let err = AwsKmsProvider::builder(common::key_id_of(&arn))
        .endpoint_url(&endpoint)
        .region("eu-west-1")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            provider_error(&err).kind(),
            ProviderErrorKind::KeyNotFound | ProviderErrorKind::AccessDenied
        ),
        "{err}"
    );

    // No credentials anywhere in the chain: a configuration error, after one
    // attempt (the chain's "not loaded" error is never retried).
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let err = AwsKmsProvider::builder(&arn)
        .endpoint_url(&endpoint)
        .build()
        .await
        .unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Config, "{err}");
    assert_eq!(common::aws_detail(pe).attempts(), 1, "{err}");
}
