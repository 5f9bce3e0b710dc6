//! Helpers shared by the KMS integration tests: the test server's endpoint, an
//! admin client for setting keys up, and a fault-injecting HTTP proxy.
//!
//! Everything talks to 127.0.0.1 only.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod proxy;

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use rowseal_kms::{AwsKmsProvider, AwsKmsProviderBuilder, RetryPolicy};

pub const REGION: &str = "us-east-1";

/// The KMS test server's endpoint (`ROWSEAL_TEST_KMS_ENDPOINT`, set by
/// `scripts/with-kms-server.sh`). Unset: fails under `CI=true`, else the
/// caller skips.
pub fn endpoint() -> Option<String> {
    match std::env::var("ROWSEAL_TEST_KMS_ENDPOINT") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "ROWSEAL_TEST_KMS_ENDPOINT is not set and CI=true: run the KMS tests via \
                     `bash scripts/with-kms-server.sh cargo test -p rowseal-kms`"
                );
            }
            eprintln!(
                "SKIPPED: ROWSEAL_TEST_KMS_ENDPOINT is not set; run \
                 `bash scripts/with-kms-server.sh cargo test -p rowseal-kms`"
            );
            None
        }
    }
}

/// Skips the test (returns) when no KMS test server is configured.
#[macro_export]
macro_rules! endpoint_or_skip {
    () => {
        match $crate::common::endpoint() {
            Some(url) => url,
            None => return,
        }
    };
}

/// A shared configuration with dummy static credentials (the test server
/// accepts anything).
pub fn sdk_config(region: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "rowseal-test",
            "rowseal-test",
            None,
            None,
            "rowseal-test",
        )))
        .build()
}

/// A plain KMS client for setting keys up (not through the provider).
pub fn admin_client(endpoint: &str, region: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_kms::config::Builder::from(&sdk_config(region))
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// Creates a symmetric encryption key; returns its ARN.
pub async fn create_key(admin: &Client, multi_region: bool) -> String {
    let out = admin
        .create_key()
        .key_usage(KeyUsageType::EncryptDecrypt)
        .key_spec(KeySpec::SymmetricDefault)
        .multi_region(multi_region)
        .description("rowseal-kms test key")
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata()
        .and_then(|m| m.arn())
        .expect("key ARN")
        .to_owned()
}

/// A unique alias name.
pub fn unique_alias(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "alias/rowseal-test-{prefix}-{nanos}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The key id (last ARN component).
pub fn key_id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// A provider builder on static test credentials, fast retries.
pub fn builder(key: &str, endpoint: &str) -> AwsKmsProviderBuilder {
    AwsKmsProvider::builder(key)
        .sdk_config(sdk_config(REGION))
        .endpoint_url(endpoint)
        .retry_policy(
            RetryPolicy::default()
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
}

/// The provider error inside a core error.
pub fn provider_error(e: &rowseal_core::Error) -> &rowseal_core::ProviderError {
    e.provider_error()
        .unwrap_or_else(|| panic!("expected a provider error, got {e}"))
}

/// The AWS detail attached to a provider error.
pub fn aws_detail(e: &rowseal_core::ProviderError) -> &rowseal_kms::AwsKmsError {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<rowseal_kms::AwsKmsError>())
        .unwrap_or_else(|| panic!("no AwsKmsError source on {e}"))
}
