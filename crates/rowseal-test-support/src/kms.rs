//! The KMS test server: moto, started on a free loopback port by
//! `scripts/with-kms-server.sh`, which exports `ROWSEAL_TEST_KMS_ENDPOINT`
//! and dummy AWS credentials. An admin client to set keys up outside rowseal
//! (straight to the server, not through rowseal or a proxy).

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// The KMS test server's endpoint (`ROWSEAL_TEST_KMS_ENDPOINT`). Unset:
/// [`unreachable`](crate::unreachable) (panics under `CI=true`, else a loud
/// skip message) and `None`.
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

/// An SDK configuration for `region` with dummy static credentials (the
/// test server accepts anything).
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

/// A plain KMS client for setting keys up (create, disable, enable, policy)
/// at `endpoint` in `region`, over rustls with ring.
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
        .description("rowseal test key")
        .send()
        .await
        .expect("CreateKey on the KMS test server");
    out.key_metadata()
        .and_then(|m| m.arn())
        .expect("key ARN")
        .to_owned()
}

/// A unique alias name (`alias/rowseal-test-<prefix>-...`).
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

/// The AWS detail (`rowseal_kms::AwsKmsError`) a provider error carries as
/// its source.
pub fn aws_detail(e: &rowseal_core::ProviderError) -> &rowseal_kms::AwsKmsError {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<rowseal_kms::AwsKmsError>())
        .unwrap_or_else(|| panic!("no AwsKmsError source on {e}"))
}
