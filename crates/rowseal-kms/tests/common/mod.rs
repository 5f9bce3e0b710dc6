//! Helpers shared by the KMS integration tests. The test server's endpoint,
//! the admin client, keys and the fault-injecting HTTP proxy come from
//! rowseal-test-support (also used by the end-to-end crate); here only what is
//! particular to the provider's own tests.
//!
//! Everything talks to 127.0.0.1 only.

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::time::Duration;

use rowseal_kms::{AwsKmsProvider, AwsKmsProviderBuilder, RetryPolicy};
pub use rowseal_test_support::kms::{
    admin_client, aws_detail, create_key, endpoint, key_id_of, sdk_config, unique_alias, REGION,
};
pub use rowseal_test_support::proxy;

/// Skips the test (returns) when no KMS test server is configured (a
/// failure under `CI=true`).
#[macro_export]
macro_rules! endpoint_or_skip {
    () => {
        match $crate::common::endpoint() {
            Some(url) => url,
            None => return,
        }
    };
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
