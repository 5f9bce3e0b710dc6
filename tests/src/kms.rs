//! The KMS test server (from rowseal-test-support: moto, started by
//! `scripts/with-kms-server.sh`, which exports `ROWSEAL_TEST_KMS_ENDPOINT`),
//! and the builder of the provider under test with this crate's settings.

use std::time::Duration;

use rowseal_kms::{AwsKmsProvider, AwsKmsProviderBuilder, RetryPolicy};
pub use rowseal_test_support::kms::{
    admin_client, aws_detail, create_key, endpoint, sdk_config, REGION,
};

/// A provider builder for `key` at `endpoint` on the test credentials, with
/// fast retries (4 attempts, 20-200 ms backoff) and short timeouts (attempt
/// 2 s, operation 6 s).
pub fn provider_builder(key: &str, endpoint: &str) -> AwsKmsProviderBuilder {
    AwsKmsProvider::builder(key)
        .sdk_config(sdk_config(REGION))
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
