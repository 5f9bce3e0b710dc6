//! The KMS test server (moto, started by `scripts/with-kms-server.sh`, which
//! exports `ROWSEAL_TEST_KMS_ENDPOINT`), an admin client for setting keys up
//! outside rowseal, and builders for the provider under test.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use rowseal_kms::{AwsKmsProvider, AwsKmsProviderBuilder, RetryPolicy};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// The KMS test server's endpoint. Unset: panics under `CI=true`, else prints
/// a loud skip message and returns `None`.
pub fn endpoint() -> Option<String> {
    match std::env::var("ROWSEAL_TEST_KMS_ENDPOINT") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            crate::unreachable(
                "the KMS test server",
                &"ROWSEAL_TEST_KMS_ENDPOINT is not set; run the tests via \
                  `bash scripts/with-kms-server.sh cargo test ...`",
            );
            None
        }
    }
}

/// A configuration with dummy static credentials (the test server accepts
/// anything).
pub fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "rowseal-test",
            "rowseal-test",
            None,
            None,
            "rowseal-test",
        )))
        .build()
}

/// A plain KMS client for setting keys up (create, disable, enable, policy),
/// straight to the server, not through rowseal or a proxy.
pub fn admin_client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_kms::config::Builder::from(&sdk_config())
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// Creates a symmetric encryption key; returns its ARN.
pub async fn create_key(admin: &Client) -> String {
    let out = admin
        .create_key()
        .key_usage(KeyUsageType::EncryptDecrypt)
        .key_spec(KeySpec::SymmetricDefault)
        .description("rowseal-e2e test root key")
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata()
        .and_then(|m| m.arn())
        .expect("key ARN")
        .to_owned()
}

/// A provider builder for `key` at `endpoint` on the test credentials, with
/// fast retries (4 attempts, 20-200 ms backoff) and short timeouts (attempt
/// 2 s, operation 6 s).
pub fn provider_builder(key: &str, endpoint: &str) -> AwsKmsProviderBuilder {
    AwsKmsProvider::builder(key)
        .sdk_config(sdk_config())
        .endpoint_url(endpoint)
        .connect_timeout(Duration::from_secs(1))
        .attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(6))
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
}

/// The AWS detail (`rowseal_kms::AwsKmsError`) a provider error carries as
/// its source.
pub fn aws_detail(e: &rowseal_core::ProviderError) -> &rowseal_kms::AwsKmsError {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<rowseal_kms::AwsKmsError>())
        .unwrap_or_else(|| panic!("no AwsKmsError source on {e}"))
}
