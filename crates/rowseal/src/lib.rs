//! rowseal: field-level encryption for Rust applications that use sqlx.
//!
//! This facade is the crate applications depend on. It re-exports the core (the
//! envelope format, the key hierarchy, the local key provider); the AWS KMS
//! provider, the derive macro and the sqlx layer join it behind features as
//! they land.
//!
//! ```
//! # async fn demo() -> rowseal::Result<()> {
//! use std::sync::Arc;
//! use rowseal::{FieldName, FieldSet, KeyHierarchy, LocalKeyProvider, MemoryKeyStore, RecordSpec};
//!
//! let provider = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?;
//! let keys = KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new()));
//! const NOTE: RecordSpec = RecordSpec::new("note", "notes");
//! // A row whose one encrypted field, `body`, is set (format 2 binds the
//! // set of present fields into the row key).
//! let present = FieldSet::new(["body"])?;
//! let row = keys.new_row_key(&NOTE, "acme", None, &present).await?;
//! let sealed = row.seal(FieldName::same("body"), b"secret")?;
//! assert_eq!(row.open(FieldName::same("body"), &sealed)?, b"secret");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```

#[doc = include_str!("../../../README.md")]
#[cfg(all(doctest, feature = "derive", feature = "sqlite"))]
pub struct ReadmeDoctests;

// Every page of docs/ is a doctest module too: its `rust` blocks compile (and
// run unless `no_run`), and an unlabelled fence would fail as Rust
// (crates/rowseal-cli/tests/doc_commands.rs checks the other languages).
#[doc = include_str!("../../../docs/blind-indexes.md")]
#[cfg(all(doctest, feature = "derive", feature = "sqlite"))]
pub struct BlindIndexesDoctests;

#[doc = include_str!("../../../docs/kms.md")]
#[cfg(all(doctest, feature = "kms"))]
pub struct KmsDoctests;

#[doc = include_str!("../../../docs/keys.md")]
#[cfg(all(doctest, feature = "vault"))]
pub struct KeysDoctests;

#[doc = include_str!("../../../docs/format.md")]
#[cfg(doctest)]
pub struct FormatDoctests;

#[doc = include_str!("../../../docs/cli.md")]
#[cfg(doctest)]
pub struct CliDoctests;

#[doc = include_str!("../../../docs/threat-model.md")]
#[cfg(doctest)]
pub struct ThreatModelDoctests;

#[doc = include_str!("../../../docs/runbook.md")]
#[cfg(doctest)]
pub struct RunbookDoctests;

pub use rowseal_core::{
    BlindIndexKey, CacheConfig, CacheStats, CachedKeys, CountingKeyProvider, DataKey,
    EncryptionContext, Error, ErrorKind, FieldName, FieldSet, IndexKey, KeyHierarchy, KeyMode,
    KeyProvider, KeyPurpose, KeyRecord, KeyScope, KeyState, KeyStore, KeysThrough,
    LocalKeyProvider, MemoryKeyStore, OperationCounts, ProviderCallCounts, ProviderError,
    ProviderErrorKind, RecordKeys, RecordSpec, Result, RetryPolicy, RootKeys, RootKeysBuilder,
    RowHeader, RowKey, SecretKey, TenantKey, WrappedKey, KEY_LEN, LOCAL_KEYS_ENV,
    LOCAL_KEY_FILE_ENV, MAX_TENANT_ID_BYTES,
};

pub mod root_keys;
pub mod testing;

/// The names of rowseal's metrics (for dashboards and alerts), their
/// descriptions (`telemetry::describe_metrics()`), and the labels error
/// kinds are recorded under; `docs/observability.md` lists them all.
pub use rowseal_core::telemetry;

/// The AWS KMS key provider (feature `kms`).
#[cfg(feature = "kms")]
pub mod kms {
    pub use rowseal_kms::*;
}

/// The HashiCorp Vault / OpenBao Transit key provider (feature `vault`).
#[cfg(feature = "vault")]
pub mod vault {
    pub use rowseal_vault::*;
}

/// The sqlx layer (feature `sqlx`, on with any database feature): encrypted
/// models on PostgreSQL, MySQL/MariaDB and SQLite.
#[cfg(feature = "sqlx")]
pub use rowseal_sqlx::{
    schema, sqlx, Backend, CryptoPool, Encrypted, EncryptedField, Encryptor, EncryptorBuilder,
    IndexCondition, Lookup, Order, PlainField, PrimaryKeyField, ReadModel, Sealed, SqlType,
    SqlxKeyStore, TenantField, TenantScope, Value,
};

/// rowseal's own tables, created and upgraded by numbered migrations
/// recorded in `rowseal_migrations`, beside your own `sqlx::migrate!`
/// history: `rowseal::migrate::run(&pool)` at start-up.
#[cfg(feature = "sqlx")]
pub use rowseal_sqlx::migrate;

#[doc(hidden)]
#[cfg(feature = "sqlx")]
pub use rowseal_sqlx as __sqlx;
