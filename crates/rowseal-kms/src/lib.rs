//! AWS KMS root keys for rowseal: an [`AwsKmsProvider`] that implements
//! [`rowseal_core::KeyProvider`] on `aws-sdk-kms`.
//!
//! - **Keys** are named by key id, key ARN or alias (`alias/prod-orders-db`).
//!   The name is resolved to the key ARN once, when the provider is built
//!   (`DescribeKey`), and that ARN is recorded in every
//!   [`WrappedKey`](rowseal_core::WrappedKey). Unwrapping always pins `KeyId` to
//!   the recorded ARN, so data written before an alias was re-pointed still
//!   decrypts, and a ciphertext can never choose its own key.
//! - **Operations**: `GenerateDataKey` (`AES_256`), `Decrypt` and `ReEncrypt`,
//!   each with rowseal's encryption context (purpose, tenant, record type).
//!   The context is logged by KMS (CloudTrail) and by this crate **in clear**:
//!   it never holds secrets.
//! - **Errors** map onto [`ProviderErrorKind`](rowseal_core::ProviderErrorKind):
//!   access denied, disabled or pending-deletion key, key not found and invalid
//!   ciphertext (a wrong encryption context looks like that) are final and
//!   never retried; throttling, server errors and timeouts are retried with
//!   exponential backoff and jitter, within [`RetryPolicy`] and the operation
//!   timeout. The AWS error code and request id travel with the error as an
//!   [`AwsKmsError`] source.
//! - **The database never chooses the KMS key**: the key ARN recorded in a
//!   wrapped key is read from the database, so `Decrypt` and `ReEncrypt`
//!   refuse, before any request, a wrapped key whose key is not on the
//!   provider's allow-list (the configured key and those added with
//!   [`AwsKmsProviderBuilder::allow_key`]), with
//!   [`ProviderErrorKind::KeyNotAllowed`](rowseal_core::ProviderErrorKind::KeyNotAllowed)
//!   and a `WARN` audit event. Restrict the IAM policy to the same keys too
//!   (`docs/kms.md`).
//! - **Multi-Region keys**: `Decrypt` can fall back to replica keys in other
//!   regions, in the configured order.
//! - **Counting and audit**: every KMS request is counted per operation
//!   ([`AwsKmsProvider::call_counts`]) and every call emits a `tracing` event on
//!   the target [`AUDIT_TARGET`] with the operation, key ARN, region, encryption
//!   context and AWS request id. Key material never appears in events, `Debug`,
//!   `Display` or errors.
//!
//! ```no_run
//! # async fn demo() -> rowseal_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rowseal_core::{KeyHierarchy, MemoryKeyStore};
//! use rowseal_kms::AwsKmsProvider;
//!
//! // Standard AWS configuration (environment, profile, IMDS, ...), one key by
//! // alias, and the previous key (by ARN) still readable until data is rewrapped.
//! let kms = AwsKmsProvider::builder("alias/prod-orders-db")
//!     .allow_key("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
//!     .operation_timeout(Duration::from_secs(10))
//!     .replica_region("us-west-2")
//!     .build()
//!     .await?;
//! println!("new keys are wrapped under {}", rowseal_core::KeyProvider::current_key_id(&kms));
//! let keys = KeyHierarchy::new(Arc::new(kms), Arc::new(MemoryKeyStore::new()));
//! # let _ = keys; Ok(()) }
//! ```
//!
//! See `docs/kms.md` for IAM permissions, retries and multi-Region setups.

mod arn;
mod builder;
mod counts;
mod error;
mod provider;

pub use builder::{check_allowed_key, AwsKmsProviderBuilder};
pub use counts::{KmsCallCounts, KmsOperation};
pub use error::AwsKmsError;
pub use provider::AwsKmsProvider;
/// Counts of one operation (shared with every provider; it lives in rowseal-core).
pub use rowseal_core::OperationCounts;
/// The retry policy (shared with every provider; it lives in rowseal-core).
pub use rowseal_core::RetryPolicy;

/// The `tracing` target of the audit events, one per KMS call (level `INFO` on
/// success, `WARN` on failure). Filter on it to route or silence them, e.g.
/// `RUST_LOG=rowseal_kms::audit=info`.
pub const AUDIT_TARGET: &str = "rowseal_kms::audit";

/// Re-exported so that applications can build a client or a config without
/// depending on the SDK crates themselves.
pub use aws_config;
pub use aws_sdk_kms;
