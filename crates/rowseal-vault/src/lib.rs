//! HashiCorp Vault and OpenBao Transit root keys for rowseal: a
//! [`TransitProvider`] that implements [`rowseal_core::KeyProvider`] on the
//! Transit secrets engine's HTTP API.
//!
//! - **Operations**: `datakey/plaintext` for new data keys, `decrypt` to
//!   unwrap, `rewrap` after a Transit key rotation (inside Vault), and
//!   `encrypt` to move a data key to another Transit key.
//! - **Encryption context**: bound by Transit key derivation (the key must be
//!   created with `derived=true`); see [`TransitProvider`] for why not
//!   `associated_data`.
//! - **Authentication**: a token, or AppRole with automatic re-login
//!   ([`TransitAuth`]); namespaces (Vault Enterprise, OpenBao); TLS with the
//!   system roots, a CA file, and client certificates (rustls).
//! - **Errors** map onto [`ProviderErrorKind`](rowseal_core::ProviderErrorKind)
//!   (`AccessDenied`, `Sealed`, `Throttled`, `Unavailable`,
//!   `InvalidCiphertext`, `KeyNotFound`, ...), with a [`TransitError`] source;
//!   transient ones are retried per [`RetryPolicy`](rowseal_core::RetryPolicy),
//!   the policy the AWS provider uses.
//! - **Counting and audit**: [`TransitProvider::call_counts`], and a `tracing`
//!   event per call on [`AUDIT_TARGET`].
//!
//! ```no_run
//! # async fn demo() -> rowseal_core::Result<()> {
//! use std::sync::Arc;
//! use rowseal_core::{KeyHierarchy, MemoryKeyStore};
//! use rowseal_vault::{TransitAuth, TransitProvider};
//!
//! // vault secrets enable transit
//! // vault write -f transit/keys/orders derived=true
//! let transit = TransitProvider::builder("https://vault.example:8200", "orders")
//!     .auth(TransitAuth::approle("0b5c…role-id", "6a1e…secret-id"))
//!     .ca_file("/etc/ssl/vault-ca.pem")
//!     .build()
//!     .await?;
//! let keys = KeyHierarchy::new(Arc::new(transit), Arc::new(MemoryKeyStore::new()));
//! # let _ = keys; Ok(()) }
//! ```
//!
//! See `docs/keys.md` for the Vault policy, choosing a provider and
//! per-tenant root keys.

mod auth;
mod builder;
mod counts;
mod error;
mod http;
mod provider;

pub use auth::TransitAuth;
pub use builder::TransitProviderBuilder;
pub use counts::{TransitCallCounts, TransitOperation};
pub use error::TransitError;
pub use provider::TransitProvider;

/// The `tracing` target of the audit events, one per Transit call (level
/// `INFO` on success, `WARN` on failure).
pub const AUDIT_TARGET: &str = "rowseal_vault::audit";
