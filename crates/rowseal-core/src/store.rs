//! Where wrapped tenant and index keys live: the [`KeyStore`] trait.
//!
//! The sqlx layer stores them in the `rowseal_keys` table; [`MemoryKeyStore`]
//! keeps them in memory for tests and demonstrations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::format::wrapped::WrappedKey;
use crate::provider::EncryptionContext;

/// What a stored key is for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// Derives row keys (`derived` mode).
    Tenant,
    /// Keys blind indexes.
    Index,
}

impl KeyPurpose {
    /// The name stored in `rowseal_keys.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Tenant => "tenant",
            KeyPurpose::Index => "index",
        }
    }
}

/// Whose key it is: one tenant's, or global (for lookups across tenants).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyScope {
    /// One tenant.
    Tenant(String),
    /// All tenants (global blind indexes only).
    Global,
}

/// The longest tenant id rowseal takes, in bytes (UTF-8): what every key
/// store holds the same way (`rowseal_keys.tenant` is a `VARCHAR(255)` on
/// PostgreSQL and MariaDB, and counts characters, which are never fewer
/// than bytes). A longer id is [`Error::InvalidInput`](crate::Error) before
/// any key is looked up or made, on every database and in every key mode.
pub const MAX_TENANT_ID_BYTES: usize = 255;

/// Refuses a tenant id longer than [`MAX_TENANT_ID_BYTES`].
pub(crate) fn check_tenant_id(tenant: &str) -> Result<()> {
    if tenant.len() > MAX_TENANT_ID_BYTES {
        return Err(crate::Error::InvalidInput {
            reason: "a tenant id is longer than 255 bytes (MAX_TENANT_ID_BYTES)".into(),
        });
    }
    Ok(())
}

impl KeyScope {
    /// The tenant, if tenant-scoped.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            KeyScope::Tenant(t) => Some(t),
            KeyScope::Global => None,
        }
    }

    /// A tenant scope's id must fit [`MAX_TENANT_ID_BYTES`].
    pub(crate) fn check(&self) -> Result<()> {
        self.tenant().map_or(Ok(()), check_tenant_id)
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyScope::Tenant(t) => write!(f, "tenant {t}"),
            KeyScope::Global => f.write_str("global"),
        }
    }
}

/// The life-cycle state of a stored key.
///
/// Tenant keys are `Active` or `Destroyed`. Index keys also go through
/// `Pending` and `Retired` during a rotation, so that every process fills and
/// queries a new index version before any process relies on it alone (see
/// [`KeyHierarchy::begin_index_key_rotation`](crate::KeyHierarchy::begin_index_key_rotation)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable. The highest active version is the one new rows are written under.
    Active,
    /// Index keys only: being introduced. Writes fill it next to the active
    /// version and lookups query it, but nothing relies on it alone yet.
    Pending,
    /// Index keys only: replaced. Neither written nor queried any more; the
    /// wrapped key is kept (it can still be unwrapped, e.g. to check old rows).
    Retired,
    /// Crypto-shredded: the wrapped key is gone and what it protected cannot be
    /// read.
    Destroyed,
}

impl KeyState {
    /// The name stored in `rowseal_keys.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Pending => "pending",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// The state named `name` (as stored in `rowseal_keys.state`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "active" => KeyState::Active,
            "pending" => KeyState::Pending,
            "retired" => KeyState::Retired,
            "destroyed" => KeyState::Destroyed,
            _ => return None,
        })
    }
}

/// One version of one tenant or index key, wrapped under a root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// What the key is for.
    pub purpose: KeyPurpose,
    /// Whose key it is.
    pub scope: KeyScope,
    /// Version, from 1, increasing by one at each rotation.
    pub version: u32,
    /// The wrapped key (`None` once destroyed).
    pub wrapped: Option<WrappedKey>,
    /// Life-cycle state.
    pub state: KeyState,
}

impl KeyRecord {
    /// The encryption context this record's key is wrapped under (see
    /// [`EncryptionContext::stored_key`]).
    pub fn encryption_context(&self) -> EncryptionContext {
        EncryptionContext::stored_key(self.purpose, &self.scope, self.version)
    }
}

/// The outcome of one unwrap of a stored key, as recorded by
/// [`KeyStore::record_key_use`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse<'a> {
    /// The provider unwrapped the key.
    Unwrapped,
    /// The provider refused or failed: its error kind
    /// ([`ProviderErrorKind`](crate::ProviderErrorKind) as a metric label,
    /// e.g. `access_denied`) and message (never key material).
    Failed {
        /// The error kind, as a metric label.
        kind: &'a str,
        /// The error's one-line message.
        message: &'a str,
    },
}

/// Storage for wrapped tenant and index keys.
///
/// Implementations must make `insert` atomic: of two processes inserting the same
/// (purpose, scope, version), exactly one succeeds and the other gets `false`,
/// which is how concurrent first writes for a new tenant agree on one key.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The highest version for `scope`, whatever its state.
    async fn latest(&self, purpose: KeyPurpose, scope: &KeyScope) -> Result<Option<KeyRecord>>;

    /// One version.
    async fn get(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> Result<Option<KeyRecord>>;

    /// Inserts a new version; `Ok(false)` if that version already exists.
    async fn insert(&self, record: &KeyRecord) -> Result<bool>;

    /// Every version of `scope`, oldest first.
    ///
    /// The default asks for each version from the latest down; stores that can
    /// list in one query should override it.
    async fn versions(&self, purpose: KeyPurpose, scope: &KeyScope) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        let Some(latest) = self.latest(purpose, scope).await? else {
            return Ok(out);
        };
        let mut v = latest.version;
        out.push(latest);
        while v > 1 {
            v -= 1;
            if let Some(r) = self.get(purpose, scope, v).await? {
                out.push(r);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Whether this store reads and writes inside a transaction that its
    /// caller may still roll back (a store over the connection of an open
    /// transaction). Default `false`: what it stores is committed at once.
    ///
    /// A [`KeyHierarchy`](crate::KeyHierarchy) given such a store
    /// ([`through`](crate::KeyHierarchy::through)) reads there first, but
    /// creates keys through its own store: a key that a rollback erased
    /// while a process kept it cached would leave rows no one could read.
    fn in_caller_transaction(&self) -> bool {
        false
    }

    /// Whether what this store reads now is the latest committed state.
    /// Default `true`. A store inside a transaction whose reads come from a
    /// snapshot taken at its start (PostgreSQL's `REPEATABLE READ` and
    /// `SERIALIZABLE`, MySQL's and MariaDB's default `REPEATABLE READ`,
    /// SQLite's read transactions) answers `false`: what the hierarchy reads
    /// through it is used for the operation at hand and never cached, so
    /// that a key destroyed (crypto-shredded) or a version added since the
    /// snapshot cannot outlive that transaction in the caches.
    async fn reads_are_current(&self) -> Result<bool> {
        Ok(true)
    }

    /// Records what a process saw when it unwrapped a stored key of `tenant`
    /// (`""` for global keys) under the root key `root_key_id`, at
    /// `at_unix_ms`: for `rowseal status --keys`, which reports per tenant
    /// the last successful unwrap and the last error. Best effort: the
    /// hierarchy ignores (and logs) a failure here. Default: records
    /// nothing.
    async fn record_key_use(
        &self,
        tenant: &str,
        root_key_id: &str,
        at_unix_ms: i64,
        outcome: KeyUse<'_>,
    ) -> Result<()> {
        let _ = (tenant, root_key_id, at_unix_ms, outcome);
        Ok(())
    }

    /// Moves one version from state `from` to state `to`, atomically:
    /// `Ok(false)` if the version does not exist or is not in state `from`
    /// (someone else moved it first). The wrapped key is kept.
    ///
    /// The default refuses: a store that cannot change states cannot rotate
    /// index keys.
    async fn set_state(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
        from: KeyState,
        to: KeyState,
    ) -> Result<bool> {
        let _ = (purpose, scope, version, from, to);
        Err(crate::Error::Store {
            message: "this key store cannot change key states".into(),
            source: None,
        })
    }
}

/// An in-memory [`KeyStore`], for tests and demonstrations. Everything is lost
/// when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    records: Mutex<BTreeMap<(KeyPurpose, KeyScope, u32), KeyRecord>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, for inspection.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.lock().values().cloned().collect()
    }

    /// Marks a version destroyed and forgets its wrapped key.
    pub fn destroy(&self, purpose: KeyPurpose, scope: &KeyScope, version: u32) -> bool {
        match self.lock().get_mut(&(purpose, scope.clone(), version)) {
            Some(r) => {
                r.wrapped = None;
                r.state = KeyState::Destroyed;
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(KeyPurpose, KeyScope, u32), KeyRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn latest(&self, purpose: KeyPurpose, scope: &KeyScope) -> Result<Option<KeyRecord>> {
        Ok(self
            .lock()
            .range((purpose, scope.clone(), 0)..=(purpose, scope.clone(), u32::MAX))
            .next_back()
            .map(|(_, r)| r.clone()))
    }

    async fn get(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> Result<Option<KeyRecord>> {
        Ok(self.lock().get(&(purpose, scope.clone(), version)).cloned())
    }

    async fn versions(&self, purpose: KeyPurpose, scope: &KeyScope) -> Result<Vec<KeyRecord>> {
        Ok(self
            .lock()
            .range((purpose, scope.clone(), 0)..=(purpose, scope.clone(), u32::MAX))
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn set_state(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
        from: KeyState,
        to: KeyState,
    ) -> Result<bool> {
        match self.lock().get_mut(&(purpose, scope.clone(), version)) {
            Some(r) if r.state == from => {
                r.state = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn insert(&self, record: &KeyRecord) -> Result<bool> {
        let mut records = self.lock();
        let key = (record.purpose, record.scope.clone(), record.version);
        if records.contains_key(&key) {
            return Ok(false);
        }
        records.insert(key, record.clone());
        Ok(true)
    }
}
