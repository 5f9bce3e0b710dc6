//! The door to root keys: the [`KeyProvider`] trait and what crosses it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::format::canonical::push_lp;
use crate::format::wrapped::WrappedKey;
use crate::secret::SecretKey;
use crate::store::{KeyPurpose, KeyScope};

/// The non-secret key/value pairs bound to every wrapped key: the KMS
/// encryption context.
///
/// A wrapped key only unwraps under the context it was made with. The context is
/// written to the KMS audit log (CloudTrail) in clear, so it must never hold
/// secret values: rowseal puts only the purpose, the tenant id, the key version
/// and the record type in it. Keep tenant ids non-secret (an id, not a name or
/// an email).
///
/// A stored key's context names its version, so a wrapped key only unwraps as
/// the version it was made for: a destroyed version kept from a backup cannot
/// be put back as a new version to undo a rotation.
///
/// ```
/// use rowseal_core::EncryptionContext;
/// let ctx = EncryptionContext::tenant_key("tenant-42", 3);
/// assert_eq!(ctx.get("rowseal:purpose"), Some("tenant-key"));
/// assert_eq!(ctx.get("rowseal:tenant"), Some("tenant-42"));
/// assert_eq!(ctx.get("rowseal:key-version"), Some("3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct EncryptionContext {
    pairs: BTreeMap<String, String>,
}

/// Key of the purpose entry.
const PURPOSE: &str = "rowseal:purpose";
const TENANT: &str = "rowseal:tenant";
const RECORD_TYPE: &str = "rowseal:record-type";
const SCOPE: &str = "rowseal:scope";
const KEY_VERSION: &str = "rowseal:key-version";

impl EncryptionContext {
    /// The context of version `version` of a tenant key.
    pub fn tenant_key(tenant: &str, version: u32) -> Self {
        Self::default()
            .with(PURPOSE, "tenant-key")
            .with(TENANT, tenant)
            .with(KEY_VERSION, version.to_string())
    }

    /// The context of version `version` of a blind-index key: per tenant, or
    /// global (`tenant = None`).
    pub fn index_key(tenant: Option<&str>, version: u32) -> Self {
        let ctx = Self::default()
            .with(PURPOSE, "index-key")
            .with(KEY_VERSION, version.to_string());
        match tenant {
            Some(t) => ctx.with(SCOPE, "tenant").with(TENANT, t),
            None => ctx.with(SCOPE, "global"),
        }
    }

    /// The context of a key stored in the key store (`rowseal_keys`): the one
    /// place that maps a stored key's purpose, scope and version to its
    /// context, for the hierarchy and for tools that rewrap stored keys.
    ///
    /// ```
    /// use rowseal_core::{EncryptionContext, KeyPurpose, KeyScope};
    /// assert_eq!(
    ///     EncryptionContext::stored_key(KeyPurpose::Index, &KeyScope::Global, 2),
    ///     EncryptionContext::index_key(None, 2),
    /// );
    /// ```
    pub fn stored_key(purpose: KeyPurpose, scope: &KeyScope, version: u32) -> Self {
        match purpose {
            KeyPurpose::Tenant => Self::tenant_key(scope.tenant().unwrap_or(""), version),
            KeyPurpose::Index => Self::index_key(scope.tenant(), version),
        }
    }

    /// The context of a per-row data key (`kms` key mode).
    pub fn row_data_key(record_type: &str, tenant: &str) -> Self {
        Self::default()
            .with(PURPOSE, "row-data-key")
            .with(RECORD_TYPE, record_type)
            .with(TENANT, tenant)
    }

    /// Adds or replaces an entry.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.pairs.insert(key.into(), value.into());
        self
    }

    /// The tenant the context names, if any (global index keys name none).
    pub fn tenant(&self) -> Option<&str> {
        self.get(TENANT)
    }

    /// The value of an entry.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A canonical byte encoding (sorted, length-prefixed), for providers that
    /// bind the context themselves, like the local provider.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.pairs {
            // Lengths beyond 4 GiB cannot occur in a context built from ids.
            let _ = push_lp(&mut out, k.as_bytes());
            let _ = push_lp(&mut out, v.as_bytes());
        }
        out
    }
}

/// `{key=value, key=value}`, sorted: how providers log a context in their
/// audit events (it is not secret by design).
impl fmt::Display for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

/// A fresh data key: its plaintext, for immediate use, and its wrapped form, for
/// storage.
#[derive(Debug)]
pub struct DataKey {
    /// The key itself (zeroized on drop, never printed).
    pub plaintext: SecretKey,
    /// The key wrapped under the provider's current root key.
    pub wrapped: WrappedKey,
}

/// A source of root keys: AWS KMS, the local keyring, or your own.
///
/// Object-safe, so the provider can be chosen at run time
/// (`Arc<dyn KeyProvider>`). Implementations must:
/// - bind `context` to every wrapped key, so that unwrapping under another
///   context fails with [`ProviderErrorKind::InvalidCiphertext`](crate::ProviderErrorKind);
/// - unwrap only with the root key named by [`WrappedKey::key_id`], never with
///   whatever key a ciphertext claims;
/// - never log or return key bytes in errors;
/// - report permission errors at once and retry only transient ones.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and status output (`"local"`, `"aws-kms"`).
    fn name(&self) -> &'static str;

    /// The root key new data keys are wrapped under, as configured.
    fn current_key_id(&self) -> &str;

    /// Generates a 256-bit data key, wrapped under the current root key.
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey>;

    /// Unwraps a data key made under `context`.
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey>;

    /// Rewraps a data key under the root key `destination_key_id`, without the
    /// plaintext key reaching the caller (KMS ReEncrypt).
    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey>;

    /// Whether this provider unwraps data keys recorded under the root key
    /// `key_id` (its allow-list). Used to route a stored key to the provider
    /// that serves it ([`RootKeys`](crate::RootKeys)); the default allows
    /// the current key only.
    fn allows_key(&self, key_id: &str) -> bool {
        key_id == self.current_key_id()
    }

    /// Wraps an existing data key under the current root key, bound to
    /// `context`: how a key moves from one provider to another (the source
    /// unwraps it, this provider wraps it). The default refuses (`Config`):
    /// a provider that cannot take a key in only serves as a source.
    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let _ = (key, context);
        Err(crate::ProviderError::new(
            crate::ProviderErrorKind::Config,
            format!(
                "the {} provider cannot wrap an existing data key",
                self.name()
            ),
        )
        .with_key_id(self.current_key_id())
        .into())
    }
}

/// Calls, HTTP requests and failures of one provider operation: what the
/// AWS KMS and Vault Transit providers report per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Calls, whatever the number of attempts (a multi-Region fallback counts
    /// one call per region tried).
    pub calls: u64,
    /// HTTP requests sent (attempts, retries included): what a key service
    /// bills and throttles.
    pub requests: u64,
    /// Calls that ended in an error (after retries).
    pub failures: u64,
}

/// The live counters behind an [`OperationCounts`], for provider
/// implementations: updated with relaxed atomics from any task.
#[derive(Default)]
pub struct OperationCounter {
    calls: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl OperationCounter {
    /// One call begins.
    pub fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// One HTTP request (attempt) is sent.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// One call ended in an error.
    pub fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn get(&self) -> OperationCounts {
        OperationCounts {
            calls: self.calls.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for OperationCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// Calls made through a [`CountingKeyProvider`], by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderCallCounts {
    /// `generate_data_key` calls.
    pub generate: u64,
    /// `decrypt_data_key` calls.
    pub decrypt: u64,
    /// `reencrypt_data_key` calls.
    pub reencrypt: u64,
}

impl ProviderCallCounts {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.generate + self.decrypt + self.reencrypt
    }
}

/// Wraps a provider and counts its calls (successful or not), so that an
/// application or a test can see what its workload costs in KMS requests.
///
/// ```
/// # async fn demo() -> rowseal_core::Result<()> {
/// use std::sync::Arc;
/// use rowseal_core::{CountingKeyProvider, EncryptionContext, KeyProvider, LocalKeyProvider};
/// let local = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?;
/// let counting = CountingKeyProvider::new(Arc::new(local));
/// counting.generate_data_key(&EncryptionContext::tenant_key("t1", 1)).await?;
/// assert_eq!(counting.counts().generate, 1);
/// # Ok(()) }
/// # tokio_test_block_on(demo()).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct CountingKeyProvider {
    inner: Arc<dyn KeyProvider>,
    generate: AtomicU64,
    decrypt: AtomicU64,
    reencrypt: AtomicU64,
}

impl CountingKeyProvider {
    /// Counts the calls made to `inner`.
    pub fn new(inner: Arc<dyn KeyProvider>) -> Self {
        CountingKeyProvider {
            inner,
            generate: AtomicU64::new(0),
            decrypt: AtomicU64::new(0),
            reencrypt: AtomicU64::new(0),
        }
    }

    /// The calls so far.
    pub fn counts(&self) -> ProviderCallCounts {
        ProviderCallCounts {
            generate: self.generate.load(Ordering::Relaxed),
            decrypt: self.decrypt.load(Ordering::Relaxed),
            reencrypt: self.reencrypt.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl KeyProvider for CountingKeyProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn current_key_id(&self) -> &str {
        self.inner.current_key_id()
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        self.generate.fetch_add(1, Ordering::Relaxed);
        self.inner.generate_data_key(context).await
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        self.decrypt.fetch_add(1, Ordering::Relaxed);
        self.inner.decrypt_data_key(wrapped, context).await
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        self.reencrypt.fetch_add(1, Ordering::Relaxed);
        self.inner
            .reencrypt_data_key(wrapped, context, destination_key_id)
            .await
    }

    fn allows_key(&self, key_id: &str) -> bool {
        self.inner.allows_key(key_id)
    }

    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        // Counted with the calls that make a wrapped key.
        self.generate.fetch_add(1, Ordering::Relaxed);
        self.inner.wrap_data_key(key, context).await
    }
}
