//! rowseal's cryptographic core: the envelope format, the key hierarchy, the
//! [`KeyProvider`] trait with its local implementation, and the key cache. No
//! database code lives here; the sqlx layer builds on it.
//!
//! Most applications use the `rowseal` facade crate rather than this one.
//!
//! # The hierarchy
//! ```text
//! root key (KMS or local keyring)
//!   └─ wraps ─> tenant key (per tenant and version, stored wrapped)
//!                 └─ derives ─> row key (per write of a row: a random salt and
//!                                         the set of the row's present fields)
//!                                 └─ encrypts each field once (AES-256-GCM-SIV)
//!   └─ wraps ─> index key (per tenant or global) ─> blind index keys (HMAC-SHA256)
//! ```
//! See [`KeyHierarchy`] for an end-to-end example, and `docs/format.md` for the
//! bytes.

mod blind;
mod cache;
mod crypto;
mod error;
mod format;
mod keys;
mod local;
mod provider;
mod retry;
mod routing;
mod secret;
mod store;
pub mod telemetry;

pub use blind::{plan_bits, BitsPlan, BlindIndexValue, IndexBits, Normalization, Normalizer};
pub use cache::{CacheConfig, CacheStats};
pub use error::{DatabaseError, Error, ErrorKind, ProviderError, ProviderErrorKind, Result};
pub use format::header::{KeyMode, RowHeader};
pub use format::presence::FieldSet;
pub use format::wrapped::WrappedKey;
pub use keys::hierarchy::{CachedKeys, IndexKeyVersions, KeyHierarchy, KeysThrough};
pub use keys::row::{FieldName, RecordSpec, RowKey};
pub use keys::scoped::{BlindIndexKey, IndexKey, RecordKeys, TenantKey};
pub use local::{LocalKeyProvider, LOCAL_KEYS_ENV, LOCAL_KEY_FILE_ENV};
pub use provider::{
    CountingKeyProvider, DataKey, EncryptionContext, KeyProvider, OperationCounter,
    OperationCounts, ProviderCallCounts,
};
pub use retry::RetryPolicy;
pub use routing::{RootKeys, RootKeysBuilder};
pub use secret::{SecretKey, KEY_LEN};
pub use store::{
    KeyPurpose, KeyRecord, KeyScope, KeyState, KeyStore, KeyUse, MemoryKeyStore,
    MAX_TENANT_ID_BYTES,
};
