//! [`KeyHierarchy`]: the one object an application holds to get keys.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::cache::{self, CacheConfig, CacheStats, KeyCache, Sweep};
use crate::crypto::hmac_sha256::HmacKey;
use crate::error::{Error, Result};
use crate::format::header::{KeyMode, RowHeader, HEADER_V1, HEADER_V2};
use crate::format::presence::FieldSet;
use crate::format::wrapped::WrappedKey;
use crate::keys::row::{check_presence, RecordSpec, RowKey, RowKeyFactory};
use crate::keys::scoped::{BlindIndexKey, IndexKey, RecordKeys, TenantKey};
use crate::provider::{EncryptionContext, KeyProvider};
use crate::secret::SecretKey;
use crate::store::{check_tenant_id, KeyPurpose, KeyRecord, KeyScope, KeyState, KeyStore, KeyUse};
use crate::telemetry::{self, provider_call, CacheExporter, ProviderOp};

/// The index-key versions of one scope that matter to writes and lookups,
/// from [`KeyHierarchy::index_key_versions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexKeyVersions {
    /// The highest active version: every write fills it.
    pub write: u32,
    /// A version being introduced: writes fill it too and lookups query it.
    pub pending: Option<u32>,
    /// Older versions still active (a rotation promoted but not yet seen
    /// everywhere, or keys from before pending states existed): lookups query
    /// them, writes do not fill them.
    pub older: Vec<u32>,
}

impl IndexKeyVersions {
    fn from_records(records: &[KeyRecord]) -> Option<Self> {
        let mut active: Vec<u32> = records
            .iter()
            .filter(|r| r.state == KeyState::Active)
            .map(|r| r.version)
            .collect();
        active.sort_unstable();
        let write = active.pop()?;
        let pending = records
            .iter()
            .filter(|r| r.state == KeyState::Pending && r.version > write)
            .map(|r| r.version)
            .max();
        active.reverse();
        Some(IndexKeyVersions {
            write,
            pending,
            older: active,
        })
    }

    /// The versions writes fill: the active one, then the pending one.
    pub fn written(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.write).chain(self.pending)
    }

    /// The versions lookups query: the written ones, then older active ones.
    pub fn queried(&self) -> impl Iterator<Item = u32> + '_ {
        self.written().chain(self.older.iter().copied())
    }
}

/// Root key provider, key store and key caches, together.
///
/// - Tenant keys: one per tenant and version, created on the first write for a
///   tenant, wrapped by the provider and kept in the [`KeyStore`]. Unwrapped
///   keys are cached, so in `derived` mode a workload over T tenants costs O(T)
///   provider calls per cache lifetime, whatever the number of rows.
/// - Record keys: what a tenant key derives for one record type
///   ([`record_keys`](Self::record_keys)), cached per tenant, version and
///   [`RecordSpec`]; an entry expires with the tenant key it came from.
/// - Index keys: the same, per tenant or global, for blind indexes.
/// - Per-row data keys (`kms` mode): one provider data key per new row; an
///   opened row's unwrapped key is cached by its wrapped form.
///
/// Every cache is single-flight: a burst of requests for one cold key makes one
/// provider call.
///
/// ```
/// # async fn demo() -> rowseal_core::Result<()> {
/// use std::sync::Arc;
/// use rowseal_core::{FieldName, FieldSet, KeyHierarchy, LocalKeyProvider, MemoryKeyStore, RecordSpec};
///
/// let provider = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?;
/// let keys = KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new()));
/// const USER: RecordSpec = RecordSpec::new("user", "users");
/// const EMAIL: FieldName = FieldName::new("email", "email");
///
/// // The row's non-NULL encrypted fields (say `phone` is NULL).
/// let present = FieldSet::new(["email"])?;
/// let row = keys.new_row_key(&USER, "tenant-1", None, &present).await?;
/// let header = row.header_bytes();
/// let email = row.seal(EMAIL, b"ada@example.com")?;
///
/// let row = keys.open_row_key(&USER, "tenant-1", None, &header, &present).await?;
/// assert_eq!(row.open(EMAIL, &email)?, b"ada@example.com");
/// // The same ciphertext read as another tenant's fails.
/// assert!(keys.open_row_key(&USER, "tenant-2", None, &header, &present).await.is_err());
/// // So does the row once `phone` was filled outside rowseal.
/// let now = FieldSet::new(["email", "phone"])?;
/// assert!(keys.open_row_key(&USER, "tenant-1", None, &header, &now).await.is_err());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct KeyHierarchy {
    provider: Arc<dyn KeyProvider>,
    store: Arc<dyn KeyStore>,
    caches: Arc<Caches>,
    cache_config: CacheConfig,
    /// When a failed unwrap was last recorded, per (tenant, root key): a
    /// revoked key fails at every request, and each failure must not become
    /// a write.
    key_use_errors:
        std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
}

/// How many failing (tenant, root key) pairs the rate limit remembers before
/// it drops those whose interval has passed.
const KEY_USE_ERRORS_KEPT: usize = 10_000;

/// How often a failing (tenant, root key) is recorded at most, per process.
const KEY_USE_ERROR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Every cache of unwrapped (or derived) keys. Shared with the sweeper thread
/// through a `Weak`, so the thread ends with the hierarchy.
///
/// Not a key, but cached the same way: `current` (the version new rows of a
/// tenant are written under) and `index_versions`.
struct Caches {
    current: KeyCache<(KeyPurpose, KeyScope), u32>,
    tenant_keys: KeyCache<(String, u32), TenantKey>,
    record_keys: KeyCache<(String, u32, RecordSpec), RecordKeys>,
    index_keys: KeyCache<(KeyScope, u32), IndexKey>,
    index_versions: KeyCache<KeyScope, IndexKeyVersions>,
    blind_keys: KeyCache<BlindKeySlot, BlindIndexKey>,
    /// Row data keys (`kms` mode), by tenant and [`data_key_slot`].
    data_keys: KeyCache<(String, [u8; 32]), SecretKey>,
    /// The counters already published to the `metrics` recorder.
    exported: CacheExporter,
}

/// (index-key scope, index-key version, table, column, index name).
type BlindKeySlot = (KeyScope, u32, String, String);

impl Caches {
    fn new(config: CacheConfig) -> Self {
        Caches {
            current: KeyCache::new(config),
            tenant_keys: KeyCache::new(config),
            record_keys: KeyCache::new(config),
            index_keys: KeyCache::new(config),
            index_versions: KeyCache::new(config),
            blind_keys: KeyCache::new(config),
            data_keys: KeyCache::new(config),
            exported: CacheExporter::default(),
        }
    }

    fn clear(&self) {
        self.current.clear();
        self.tenant_keys.clear();
        self.record_keys.clear();
        self.index_keys.clear();
        self.index_versions.clear();
        self.blind_keys.clear();
        self.data_keys.clear();
    }

    /// Each cache's counters, by name.
    fn stats(&self) -> Vec<(&'static str, CacheStats)> {
        vec![
            ("current_versions", self.current.stats()),
            ("tenant_keys", self.tenant_keys.stats()),
            ("record_keys", self.record_keys.stats()),
            ("index_keys", self.index_keys.stats()),
            ("index_versions", self.index_versions.stats()),
            ("blind_index_keys", self.blind_keys.stats()),
            ("row_data_keys", self.data_keys.stats()),
        ]
    }
}

impl Sweep for Caches {
    /// Runs every cache's maintenance: expired entries leave memory (their
    /// keys zeroized once no operation holds them), evictions are applied.
    fn sweep(&self) {
        self.current.sweep();
        self.tenant_keys.sweep();
        self.record_keys.sweep();
        self.index_keys.sweep();
        self.index_versions.sweep();
        self.blind_keys.sweep();
        self.data_keys.sweep();
        // The counters, as metrics (what grew since the last publication).
        self.exported.publish(&self.stats());
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.exported.retire(&self.stats());
    }
}

/// Which keys a [`KeyHierarchy`] holds in memory right now, for audits and
/// for checking that a shredded tenant left nothing behind. Names and
/// versions only. Expired entries are not listed: they are no longer
/// served, and leave memory within the bound stated at
/// [`KeyHierarchy::with_cache_config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedKeys {
    /// Tenant keys: (tenant, version).
    pub tenant_keys: Vec<(String, u32)>,
    /// Record keys derived from tenant keys: (tenant, version, record type).
    pub record_keys: Vec<(String, u32, String)>,
    /// Index keys: (scope, version).
    pub index_keys: Vec<(KeyScope, u32)>,
    /// Blind-index keys: (scope, version, record type, index name).
    pub blind_index_keys: Vec<(KeyScope, u32, String, String)>,
    /// Per-row data keys (`kms` mode), by tenant.
    pub row_data_keys: Vec<String>,
}

impl CachedKeys {
    /// Whether any cached key belongs to `tenant` (its tenant key, record
    /// keys, tenant-scoped index and blind-index keys, row data keys).
    pub fn holds_tenant(&self, tenant: &str) -> bool {
        let scoped = |s: &KeyScope| s.tenant() == Some(tenant);
        self.tenant_keys.iter().any(|(t, _)| t == tenant)
            || self.record_keys.iter().any(|(t, _, _)| t == tenant)
            || self.index_keys.iter().any(|(s, _)| scoped(s))
            || self.blind_index_keys.iter().any(|(s, ..)| scoped(s))
            || self.row_data_keys.iter().any(|t| t == tenant)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tenant_keys.is_empty()
            && self.record_keys.is_empty()
            && self.index_keys.is_empty()
            && self.blind_index_keys.is_empty()
            && self.row_data_keys.is_empty()
    }
}

impl KeyHierarchy {
    /// A hierarchy with the default cache configuration.
    pub fn new(provider: Arc<dyn KeyProvider>, store: Arc<dyn KeyStore>) -> Self {
        Self::with_cache_config(provider, store, CacheConfig::default())
    }

    /// A hierarchy with the given cache bounds and lifetime.
    ///
    /// Each cache holds at most `cache.max_entries` entries, evicted by
    /// recency and frequency (moka's TinyLFU; see [`CacheConfig`] for the
    /// memory an entry costs). An expired key is never served (lookups check
    /// its lifetime exactly), and it leaves memory (zeroized, once no
    /// operation holds it) even in an idle process: a background thread runs
    /// the caches' maintenance every quarter lifetime (between 10 ms and
    /// 1 s), and moka's expiry timer collects expired entries each time it
    /// passes one of its ticks (2^30 ns, about 1.07 s). So an entry is gone
    /// within about 1.1 s plus one sweep period of expiring (2.1 s at most,
    /// for the default five-minute lifetime). The thread ends with the
    /// hierarchy.
    pub fn with_cache_config(
        provider: Arc<dyn KeyProvider>,
        store: Arc<dyn KeyStore>,
        cache: CacheConfig,
    ) -> Self {
        let caches = Arc::new(Caches::new(cache));
        cache::start_sweeper(&caches, cache::sweep_period(cache.ttl));
        KeyHierarchy {
            provider,
            store,
            caches,
            cache_config: cache,
            key_use_errors: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The bounds and lifetime of this hierarchy's key caches.
    pub fn cache_config(&self) -> CacheConfig {
        self.cache_config
    }

    /// The root key provider.
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// The key store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Forgets every cached key, in every cache: tenant, record, index,
    /// blind-index and row data keys (each is zeroized once no operation in
    /// progress holds it).
    pub fn forget_cached_keys(&self) {
        self.caches.clear();
    }

    /// The counters of every cache of this hierarchy, summed: lookups
    /// answered from memory (`hits`), lookups that were not (`misses`), the
    /// fetches they ran (`loads`: key-store reads, provider calls and
    /// derivations), evictions, expirations and entries held. A cold
    /// `derived`-mode read misses three caches (current version, record keys,
    /// tenant key) for one provider call; see
    /// [`cache_stats_per_cache`](Self::cache_stats_per_cache) for each cache
    /// apart. The counters are atomics, cheap to read as often as a metrics
    /// exporter likes.
    pub fn cache_stats(&self) -> CacheStats {
        self.caches.stats().into_iter().map(|(_, s)| s).sum()
    }

    /// The counters of each cache, by name: `current_versions` (the key
    /// version new rows of a tenant or index scope are written under),
    /// `tenant_keys`, `record_keys`, `index_keys`, `index_versions`,
    /// `blind_index_keys` and `row_data_keys` (`kms` mode).
    pub fn cache_stats_per_cache(&self) -> Vec<(&'static str, CacheStats)> {
        self.caches.stats()
    }

    /// Publishes this hierarchy's cache counters to the installed `metrics`
    /// recorder now (`rowseal_key_cache_*`, by cache: what grew since the
    /// last publication), and describes every rowseal metric
    /// ([`telemetry::describe_metrics`]). The caches' background sweep
    /// publishes them too, about once a second; call this right before an
    /// exporter renders (a scrape) for figures exact to the moment. Cheap:
    /// a few atomic reads per cache. Key-provider calls need no call: they
    /// are recorded as they happen.
    pub fn export_metrics(&self) {
        telemetry::describe_metrics();
        self.caches.exported.publish(&self.caches.stats());
    }

    /// Which keys are cached right now (names and versions, never values).
    pub fn cached_keys(&self) -> CachedKeys {
        CachedKeys {
            tenant_keys: self.caches.tenant_keys.keys(),
            record_keys: self
                .caches
                .record_keys
                .keys()
                .into_iter()
                .map(|(t, v, spec)| (t, v, spec.record_type().to_owned()))
                .collect(),
            index_keys: self.caches.index_keys.keys(),
            blind_index_keys: self.caches.blind_keys.keys(),
            row_data_keys: self
                .caches
                .data_keys
                .keys()
                .into_iter()
                .map(|(t, _)| t)
                .collect(),
        }
    }

    /// The key of one blind index (record type, index name) under version `version` of `scope`'s index key: derived
    /// once, then cached with the index key's lifetime, and dropped by
    /// [`forget_cached_keys`](Self::forget_cached_keys) like every other key.
    pub async fn blind_index_key(
        &self,
        scope: &KeyScope,
        version: u32,
        record_type: &str,
        index: &str,
    ) -> Result<Arc<BlindIndexKey>> {
        self.blind_index_key_via(None, scope, version, record_type, index)
            .await
    }

    async fn blind_index_key_via(
        &self,
        reads: Reads<'_>,
        scope: &KeyScope,
        version: u32,
        record_type: &str,
        index: &str,
    ) -> Result<Arc<BlindIndexKey>> {
        let slot = (
            scope.clone(),
            version,
            record_type.to_owned(),
            index.to_owned(),
        );
        let (key, _) = self
            .through_cache(&self.caches.blind_keys, &slot, reads, || async {
                let (index_key, at) = self.index_key_dated(reads, scope, version).await?;
                Ok((index_key.blind_index_key(record_type, index)?, at))
            })
            .await?;
        Ok(key)
    }

    /// The tenant key new rows of `tenant` are written under; created (version 1)
    /// if the tenant has none.
    pub async fn current_tenant_key(&self, tenant: &str) -> Result<Arc<TenantKey>> {
        self.current_tenant_key_via(None, tenant).await
    }

    async fn current_tenant_key_via(
        &self,
        reads: Reads<'_>,
        tenant: &str,
    ) -> Result<Arc<TenantKey>> {
        let scope = KeyScope::Tenant(tenant.to_owned());
        let version = self
            .current_version(reads, KeyPurpose::Tenant, &scope)
            .await?;
        Ok(self.tenant_key_dated(reads, tenant, version).await?.0)
    }

    /// One version of a tenant's key.
    pub async fn tenant_key(&self, tenant: &str, version: u32) -> Result<Arc<TenantKey>> {
        Ok(self.tenant_key_dated(None, tenant, version).await?.0)
    }

    /// A tenant key with the moment its cache lifetime started.
    async fn tenant_key_dated(
        &self,
        reads: Reads<'_>,
        tenant: &str,
        version: u32,
    ) -> Result<(Arc<TenantKey>, Instant)> {
        let slot = (tenant.to_owned(), version);
        self.through_cache(&self.caches.tenant_keys, &slot, reads, || async {
            let scope = KeyScope::Tenant(tenant.to_owned());
            let key = self
                .unwrap_stored(reads, KeyPurpose::Tenant, &scope, version)
                .await?;
            Ok((TenantKey::new(tenant, version, &key), Instant::now()))
        })
        .await
    }

    /// The record keys of `spec` under version `version` of `tenant`'s key
    /// (`derived` mode): they open that version's rows, and make new rows'
    /// keys, with no I/O.
    ///
    /// Cached per tenant, version and spec (record type, table, key mode,
    /// primary-key binding): repeated calls return the same `Arc`, a burst of
    /// calls for a cold entry makes one provider call, and an entry expires
    /// with the tenant key it was derived from (so it never outlives the
    /// cache lifetime). [`forget_cached_keys`](Self::forget_cached_keys)
    /// drops them; they are zeroized once no caller holds them.
    pub async fn record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
        version: u32,
    ) -> Result<Arc<RecordKeys>> {
        self.record_keys_via(None, spec, tenant, version).await
    }

    async fn record_keys_via(
        &self,
        reads: Reads<'_>,
        spec: &RecordSpec,
        tenant: &str,
        version: u32,
    ) -> Result<Arc<RecordKeys>> {
        let slot = (tenant.to_owned(), version, spec.clone());
        let (keys, _) = self
            .through_cache(&self.caches.record_keys, &slot, reads, || async {
                let (tenant_key, at) = self.tenant_key_dated(reads, tenant, version).await?;
                Ok((tenant_key.record_keys(spec)?, at))
            })
            .await?;
        Ok(keys)
    }

    /// The record keys of `spec` under the tenant key new rows of `tenant`
    /// are written under (created, version 1, if the tenant has none). See
    /// [`record_keys`](Self::record_keys).
    pub async fn current_record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
    ) -> Result<Arc<RecordKeys>> {
        self.current_record_keys_via(None, spec, tenant).await
    }

    async fn current_record_keys_via(
        &self,
        reads: Reads<'_>,
        spec: &RecordSpec,
        tenant: &str,
    ) -> Result<Arc<RecordKeys>> {
        let scope = KeyScope::Tenant(tenant.to_owned());
        let version = self
            .current_version(reads, KeyPurpose::Tenant, &scope)
            .await?;
        self.record_keys_via(reads, spec, tenant, version).await
    }

    /// Creates the next version of a tenant's key and makes it current for new
    /// rows in this process. Returns the new version. Rows already written keep
    /// their version until re-encrypted (`rowseal rotate`).
    pub async fn rotate_tenant_key(&self, tenant: &str) -> Result<u32> {
        let scope = KeyScope::Tenant(tenant.to_owned());
        self.rotate(KeyPurpose::Tenant, &scope).await
    }

    /// The index key new index values of `scope` are computed under (the
    /// highest active version); created if none exists. During a rotation,
    /// writes also fill the pending version: see
    /// [`index_key_versions`](Self::index_key_versions).
    pub async fn current_index_key(&self, scope: &KeyScope) -> Result<Arc<IndexKey>> {
        let versions = self.index_key_versions(scope).await?;
        self.index_key(scope, versions.write).await
    }

    /// One version of an index key (active, pending or retired).
    pub async fn index_key(&self, scope: &KeyScope, version: u32) -> Result<Arc<IndexKey>> {
        Ok(self.index_key_dated(None, scope, version).await?.0)
    }

    /// An index key with the moment its cache lifetime started.
    async fn index_key_dated(
        &self,
        reads: Reads<'_>,
        scope: &KeyScope,
        version: u32,
    ) -> Result<(Arc<IndexKey>, Instant)> {
        let slot = (scope.clone(), version);
        self.through_cache(&self.caches.index_keys, &slot, reads, || async {
            let key = self
                .unwrap_stored(reads, KeyPurpose::Index, scope, version)
                .await?;
            Ok((IndexKey::new(scope.clone(), version, &key), Instant::now()))
        })
        .await
    }

    /// The index-key versions of `scope` that writes fill and lookups query;
    /// version 1 is created if the scope has none. Cached like keys, so a
    /// change of state reaches this process within one cache lifetime — which
    /// is why a rotation goes through a pending state first.
    pub async fn index_key_versions(&self, scope: &KeyScope) -> Result<Arc<IndexKeyVersions>> {
        self.index_key_versions_via(None, scope).await
    }

    async fn index_key_versions_via(
        &self,
        reads: Reads<'_>,
        scope: &KeyScope,
    ) -> Result<Arc<IndexKeyVersions>> {
        self.through_cache_undated(&self.caches.index_versions, scope, reads, || async {
            match self.load_index_versions(reads, scope).await? {
                Some(v) => Ok(v),
                None => {
                    self.create(reads, KeyPurpose::Index, scope, 1, KeyState::Active)
                        .await?;
                    // Read back where it was written (committed at once).
                    let written = self.writes(reads);
                    self.load_index_versions(Some(written), scope)
                        .await?
                        .ok_or_else(|| Error::KeyNotFound {
                            key: describe(KeyPurpose::Index, scope, 1),
                        })
                }
            }
        })
        .await
    }

    /// Like [`index_key_versions`](Self::index_key_versions), but never
    /// creates a key: `None` if `scope` has no index key yet (so it has no
    /// indexed rows). For lookups, which must stay read-only. A scope without
    /// a key is asked again each time (it is not cached), so its first key is
    /// seen at once.
    pub async fn lookup_index_key_versions(
        &self,
        scope: &KeyScope,
    ) -> Result<Option<Arc<IndexKeyVersions>>> {
        self.lookup_index_key_versions_via(None, scope).await
    }

    async fn lookup_index_key_versions_via(
        &self,
        reads: Reads<'_>,
        scope: &KeyScope,
    ) -> Result<Option<Arc<IndexKeyVersions>>> {
        if let Some(v) = self.caches.index_versions.get(scope) {
            return Ok(Some(v));
        }
        match self.load_index_versions(reads, scope).await? {
            Some(v) if self.reads_are_current(reads).await? => {
                Ok(Some(self.caches.index_versions.insert(scope.clone(), v)))
            }
            Some(v) => Ok(Some(Arc::new(v))),
            None => Ok(None),
        }
    }

    /// Starts an index-key rotation for `scope`: stores the next version as
    /// *pending* and returns it. If a version is already pending, returns it
    /// (re-running is safe).
    ///
    /// The rotation without downtime, as `rowseal reindex` runs it:
    /// 1. `begin_index_key_rotation`: from the moment each process sees the
    ///    pending version (within one cache lifetime), its writes fill both the
    ///    active and the pending index values, and its lookups query both;
    /// 2. after one cache lifetime, backfill the pending values of the rows
    ///    written before (`Encryptor::reindex_batch` in rowseal-sqlx);
    /// 3. [`promote_index_key`](Self::promote_index_key): the pending version
    ///    becomes the only one written and queried; processes that have not
    ///    seen it yet keep filling and querying both, which still finds every
    ///    row.
    ///
    /// Refused while an older rotation is unfinished (two active versions).
    pub async fn begin_index_key_rotation(&self, scope: &KeyScope) -> Result<u32> {
        scope.check()?;
        let records = self.store.versions(KeyPurpose::Index, scope).await?;
        if let Some(p) = records.iter().find(|r| r.state == KeyState::Pending) {
            return Ok(p.version);
        }
        let active = records
            .iter()
            .filter(|r| r.state == KeyState::Active)
            .count();
        if active == 0 {
            return Err(Error::InvalidInput {
                reason: "no active index key to rotate (write a row first)".into(),
            });
        }
        if active > 1 {
            return Err(Error::InvalidInput {
                reason: "an earlier index-key rotation is not finished (promote it first)".into(),
            });
        }
        let next = records
            .last()
            .map_or(Some(1), |r| r.version.checked_add(1))
            .ok_or(Error::InvalidInput {
                reason: "key version overflow".into(),
            })?;
        let v = self
            .create(None, KeyPurpose::Index, scope, next, KeyState::Pending)
            .await?;
        self.caches.index_versions.remove(scope);
        Ok(v)
    }

    /// Ends an index-key rotation: `version` (pending) becomes the active
    /// version and every older active version is retired (no longer written
    /// or queried). Call it once every row has its `version` value (after the
    /// backfill). Safe to call again.
    pub async fn promote_index_key(&self, scope: &KeyScope, version: u32) -> Result<()> {
        scope.check()?;
        let records = self.store.versions(KeyPurpose::Index, scope).await?;
        match records
            .iter()
            .find(|r| r.version == version)
            .map(|r| r.state)
        {
            Some(KeyState::Pending) => {
                self.store
                    .set_state(
                        KeyPurpose::Index,
                        scope,
                        version,
                        KeyState::Pending,
                        KeyState::Active,
                    )
                    .await?;
            }
            Some(KeyState::Active) => {}
            Some(_) => {
                return Err(Error::KeyDestroyed {
                    key: describe(KeyPurpose::Index, scope, version),
                })
            }
            None => {
                return Err(Error::KeyNotFound {
                    key: describe(KeyPurpose::Index, scope, version),
                })
            }
        }
        // The new version is active (and the highest) before any older one is
        // retired: a process reloading in between writes the new version and
        // queries both.
        for r in records
            .iter()
            .filter(|r| r.version < version && r.state == KeyState::Active)
        {
            self.store
                .set_state(
                    KeyPurpose::Index,
                    scope,
                    r.version,
                    KeyState::Active,
                    KeyState::Retired,
                )
                .await?;
        }
        self.caches.index_versions.remove(scope);
        Ok(())
    }

    async fn load_index_versions(
        &self,
        reads: Reads<'_>,
        scope: &KeyScope,
    ) -> Result<Option<IndexKeyVersions>> {
        scope.check()?;
        let records = self.read_versions(reads, KeyPurpose::Index, scope).await?;
        Ok(IndexKeyVersions::from_records(&records))
    }

    /// A row key for a new write of a row of `spec` in `tenant` (an insert,
    /// or an update, which re-keys the row), format 2. `present` names the
    /// encrypted fields the write seals (its non-NULL ones), by logical
    /// name. In `derived` mode this costs no provider call once the tenant
    /// key is cached; in `kms` mode it is one GenerateDataKey.
    pub async fn new_row_key(
        &self,
        spec: &RecordSpec,
        tenant: &str,
        primary_key: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        self.new_row_key_as(HEADER_V2, spec, tenant, primary_key, present)
            .await
    }

    /// A row key for a new row of format 1.
    ///
    /// Hidden, and not for applications: new rows are format 2. It exists
    /// because tests of reading old rows and of the v1 -> v2 upgrade
    /// (`rowseal rotate`) need real v1 rows.
    #[doc(hidden)]
    pub async fn new_row_key_v1(
        &self,
        spec: &RecordSpec,
        tenant: &str,
        primary_key: Option<&[u8]>,
    ) -> Result<RowKey> {
        self.new_row_key_as(HEADER_V1, spec, tenant, primary_key, &FieldSet::empty())
            .await
    }

    async fn new_row_key_as(
        &self,
        format: u8,
        spec: &RecordSpec,
        tenant: &str,
        primary_key: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        // In kms mode no key store is asked: refused here, before the provider.
        check_tenant_id(tenant)?;
        match self.new_rows_record_keys(spec, tenant).await? {
            Some(keys) if format == HEADER_V1 => keys.new_row_v1(primary_key),
            Some(keys) => keys.new_row(primary_key, present),
            None => {
                let ctx = EncryptionContext::row_data_key(spec.record_type(), tenant);
                let data_key = provider_call(
                    ProviderOp::GenerateDataKey,
                    self.provider.generate_data_key(&ctx),
                )
                .await?;
                let mac = HmacKey::new(data_key.plaintext.expose_secret());
                let row = RowKeyFactory::new(format, &mac, spec, tenant)?.new_row(
                    0,
                    Some(data_key.wrapped.clone()),
                    primary_key,
                    present,
                )?;
                self.caches.data_keys.insert(
                    (tenant.to_owned(), data_key_slot(&ctx, &data_key.wrapped)),
                    data_key.plaintext,
                );
                Ok(row)
            }
        }
    }

    /// How new rows of `spec` in `tenant` get their keys, decided by the key
    /// mode: in `derived` mode, `Some` record keys (the
    /// [`current_record_keys`](Self::current_record_keys)) whose
    /// [`RecordKeys::new_row`] makes any number of new row keys with no I/O,
    /// exactly as [`new_row_key`](Self::new_row_key) does; in `kms` mode,
    /// `None` and no I/O: each new row needs its own data key, from
    /// [`new_row_key`](Self::new_row_key) (one GenerateDataKey per row).
    ///
    /// For batches: ask once per tenant, then make the rows' keys without
    /// awaiting.
    pub async fn new_rows_record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
    ) -> Result<Option<Arc<RecordKeys>>> {
        self.through_own_store()
            .new_rows_record_keys(spec, tenant)
            .await
    }

    /// The row key of an existing row of `spec` in `tenant`, from its stored
    /// header (format 1 or 2). The key commitment is checked before any
    /// field can be opened: a header of another tenant, record type or key,
    /// or a changed one, is [`Error::Decrypt`].
    ///
    /// `present` names the row's non-NULL encrypted fields as read now, by
    /// logical name. A format 2 row binds the set it was written with: a
    /// field NULLed or filled since is [`Error::FieldPresence`] (checked
    /// before any key is fetched), another set of the same size
    /// [`Error::Decrypt`]. Format 1 rows did not bind presence; for them it
    /// is ignored.
    pub async fn open_row_key(
        &self,
        spec: &RecordSpec,
        tenant: &str,
        primary_key: Option<&[u8]>,
        header: &[u8],
        present: &FieldSet,
    ) -> Result<RowKey> {
        check_tenant_id(tenant)?;
        let header = RowHeader::from_bytes(header)?;
        if header.mode() != spec.key_mode() {
            return Err(Error::Decrypt);
        }
        check_presence(&header, present)?;
        match (header.tenant_key_version(), header.wrapped_data_key()) {
            (Some(version), _) => {
                let keys = self.record_keys(spec, tenant, version).await?;
                keys.open_parsed(primary_key, header, present)
            }
            (None, Some(wrapped)) => {
                let ctx = EncryptionContext::row_data_key(spec.record_type(), tenant);
                let key = self
                    .caches
                    .data_keys
                    .get_or_fetch(&(tenant.to_owned(), data_key_slot(&ctx, wrapped)), || {
                        provider_call(
                            ProviderOp::DecryptDataKey,
                            self.provider.decrypt_data_key(wrapped, &ctx),
                        )
                    })
                    .await?;
                let mac = HmacKey::new(key.expose_secret());
                let factory = RowKeyFactory::new(header.format_version(), &mac, spec, tenant)?;
                factory.open_row(header, primary_key, present)
            }
            (None, None) => Err(Error::Decrypt),
        }
    }

    // Every path to the key store goes through one of the functions below,
    // which refuse an over-long tenant id first (a cache hit needs no check:
    // nothing over-long is ever cached).
    async fn current_version(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> Result<u32> {
        scope.check()?;
        let slot = (purpose, scope.clone());
        let v = self
            .through_cache_undated(&self.caches.current, &slot, reads, || async {
                match self.read_latest(reads, purpose, scope).await? {
                    Some(rec) if rec.state == KeyState::Active => Ok(rec.version),
                    Some(rec) => Err(Error::KeyDestroyed {
                        key: describe(purpose, scope, rec.version),
                    }),
                    None => {
                        self.create(reads, purpose, scope, 1, KeyState::Active)
                            .await
                    }
                }
            })
            .await?;
        Ok(*v)
    }

    async fn rotate(&self, purpose: KeyPurpose, scope: &KeyScope) -> Result<u32> {
        scope.check()?;
        let next = match self.store.latest(purpose, scope).await? {
            Some(rec) => rec.version.checked_add(1).ok_or(Error::InvalidInput {
                reason: "key version overflow".into(),
            })?,
            None => 1,
        };
        let v = self
            .create(None, purpose, scope, next, KeyState::Active)
            .await?;
        self.caches.current.remove(&(purpose, scope.clone()));
        Ok(v)
    }

    /// Generates and stores version `version`. If another process stored that
    /// version first, uses theirs (one key per version, always).
    async fn create(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
        state: KeyState,
    ) -> Result<u32> {
        let ctx = EncryptionContext::stored_key(purpose, scope, version);
        let data_key = provider_call(
            ProviderOp::GenerateDataKey,
            self.provider.generate_data_key(&ctx),
        )
        .await?;
        let record = KeyRecord {
            purpose,
            scope: scope.clone(),
            version,
            wrapped: Some(data_key.wrapped),
            state,
        };
        let store = self.writes(reads);
        if store.insert(&record).await? {
            tracing::info!(
                purpose = purpose.as_str(),
                scope = %scope,
                version,
                root_key = self.provider.current_key_id(),
                "created key"
            );
            // Seed the cache: the first rows need no Decrypt call.
            match (purpose, scope) {
                (KeyPurpose::Tenant, KeyScope::Tenant(t)) => {
                    self.caches.tenant_keys.insert(
                        (t.clone(), version),
                        TenantKey::new(t, version, &data_key.plaintext),
                    );
                }
                (KeyPurpose::Index, _) => {
                    self.caches.index_keys.insert(
                        (scope.clone(), version),
                        IndexKey::new(scope.clone(), version, &data_key.plaintext),
                    );
                }
                _ => {}
            }
            return Ok(version);
        }
        // Lost the race: someone else's key for this version stands.
        match store.latest(purpose, scope).await? {
            Some(rec) if rec.state == state => Ok(rec.version),
            Some(rec) => Err(Error::KeyDestroyed {
                key: describe(purpose, scope, rec.version),
            }),
            None => Err(Error::Store {
                message: "key insert reported a conflict, but no key is stored".into(),
                source: None,
            }),
        }
    }

    async fn unwrap_stored(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> Result<SecretKey> {
        scope.check()?;
        let rec = self
            .read_get(reads, purpose, scope, version)
            .await?
            .ok_or_else(|| Error::KeyNotFound {
                key: describe(purpose, scope, version),
            })?;
        let wrapped = match (&rec.state, &rec.wrapped) {
            (KeyState::Active | KeyState::Pending | KeyState::Retired, Some(w)) => w,
            _ => {
                return Err(Error::KeyDestroyed {
                    key: describe(purpose, scope, version),
                })
            }
        };
        tracing::debug!(
            purpose = purpose.as_str(),
            scope = %scope,
            version,
            root_key = wrapped.key_id(),
            "unwrapping key"
        );
        let ctx = EncryptionContext::stored_key(purpose, scope, version);
        let unwrapped = provider_call(
            ProviderOp::DecryptDataKey,
            self.provider.decrypt_data_key(wrapped, &ctx),
        )
        .await;
        self.record_key_use(scope, wrapped.key_id(), &unwrapped)
            .await;
        unwrapped
    }

    /// Records the outcome of an unwrap in the own store (never the caller's
    /// transaction, which may roll back), for `rowseal status --keys`;
    /// failures at most once per [`KEY_USE_ERROR_INTERVAL`] per tenant and
    /// root key. In the background, on the current Tokio runtime (without
    /// one, nothing is recorded): the operation that needed the key must not
    /// wait for, or deadlock on, a second connection, e.g. a job whose
    /// workers hold every pooled connection in a transaction, or SQLite's
    /// one writer. A store error is logged, never returned.
    async fn record_key_use(
        &self,
        scope: &KeyScope,
        root_key_id: &str,
        outcome: &Result<SecretKey>,
    ) {
        let tenant = scope.tenant().unwrap_or("").to_owned();
        let slot = (tenant.clone(), root_key_id.to_owned());
        let failure: Option<(&'static str, String)> = match outcome {
            Ok(_) => {
                self.lock_key_use_errors().remove(&slot);
                None
            }
            Err(e) => {
                let now = std::time::Instant::now();
                {
                    let mut last = self.lock_key_use_errors();
                    if last
                        .get(&slot)
                        .is_some_and(|at| now.duration_since(*at) < KEY_USE_ERROR_INTERVAL)
                    {
                        return;
                    }
                    if last.len() >= KEY_USE_ERRORS_KEPT {
                        // An outage across many tenants: keep only the
                        // entries that still hold a write back.
                        last.retain(|_, at| now.duration_since(*at) < KEY_USE_ERROR_INTERVAL);
                    }
                    last.insert(slot, now);
                }
                let kind = match e {
                    Error::Provider(p) => telemetry::provider_error_kind_label(p.kind()),
                    other => telemetry::error_kind_label(other.kind()),
                };
                Some((kind, e.to_string()))
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let store = self.store.clone();
        let root_key_id = root_key_id.to_owned();
        runtime.spawn(async move {
            let key_use = match &failure {
                None => KeyUse::Unwrapped,
                Some((kind, message)) => KeyUse::Failed { kind, message },
            };
            if let Err(e) = store
                .record_key_use(&tenant, &root_key_id, at, key_use)
                .await
            {
                tracing::warn!(error = %e, root_key = %root_key_id, "could not record a key use");
            }
        });
    }

    fn lock_key_use_errors(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), std::time::Instant>>
    {
        self.key_use_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where an operation reads stored keys first: a store the caller gave
/// ([`KeyHierarchy::through`]), or `None`: the hierarchy's own.
type Reads<'a> = Option<&'a dyn KeyStore>;

impl KeyHierarchy {
    // The three reads of stored keys. A caller's store is asked first. If it
    // is inside the caller's transaction, the hierarchy's own store is asked
    // when it shows nothing: a key created (through the own store, committed
    // at once) after the transaction took its snapshot. A caller's store
    // outside a transaction sees every committed key: its answer stands.

    async fn read_latest(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> Result<Option<KeyRecord>> {
        if let Some(store) = reads {
            let found = store.latest(purpose, scope).await?;
            if found.is_some() || !store.in_caller_transaction() {
                return Ok(found);
            }
        }
        self.store.latest(purpose, scope).await
    }

    async fn read_get(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> Result<Option<KeyRecord>> {
        if let Some(store) = reads {
            let found = store.get(purpose, scope, version).await?;
            if found.is_some() || !store.in_caller_transaction() {
                return Ok(found);
            }
        }
        self.store.get(purpose, scope, version).await
    }

    async fn read_versions(
        &self,
        reads: Reads<'_>,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> Result<Vec<KeyRecord>> {
        if let Some(store) = reads {
            let records = store.versions(purpose, scope).await?;
            if !records.is_empty() || !store.in_caller_transaction() {
                return Ok(records);
            }
        }
        self.store.versions(purpose, scope).await
    }

    /// Whether what `reads` reads may be cached ([`KeyStore::reads_are_current`]).
    async fn reads_are_current(&self, reads: Reads<'_>) -> Result<bool> {
        match reads {
            Some(store) => store.reads_are_current().await,
            None => Ok(true),
        }
    }

    /// `cache`'s entry for `key`, or what `fetch` reads through `reads`:
    /// cached (single flight) when those reads are current, handed back
    /// once and not cached when they come from a transaction's snapshot
    /// ([`KeyCache::get_or_fetch_once`]). The store is asked only on a miss.
    async fn through_cache<K, V, F, Fut>(
        &self,
        cache: &KeyCache<K, V>,
        key: &K,
        reads: Reads<'_>,
        fetch: F,
    ) -> Result<(Arc<V>, Instant)>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(V, Instant)>>,
    {
        if let Some(store) = reads {
            if let Some(hit) = cache.hit(key) {
                return Ok(hit);
            }
            if !store.reads_are_current().await? {
                return cache.get_or_fetch_once(key, fetch).await;
            }
        }
        cache.get_or_fetch_dated(key, fetch).await
    }

    /// [`through_cache`](Self::through_cache) of a value whose lifetime
    /// starts when it is read.
    async fn through_cache_undated<K, V, F, Fut>(
        &self,
        cache: &KeyCache<K, V>,
        key: &K,
        reads: Reads<'_>,
        fetch: F,
    ) -> Result<Arc<V>>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V>>,
    {
        let (value, _) = self
            .through_cache(cache, key, reads, || async {
                fetch().await.map(|v| (v, Instant::now()))
            })
            .await?;
        Ok(value)
    }

    /// Where a new key is written: a caller's store outside a transaction
    /// (its writes commit at once), otherwise the hierarchy's own.
    fn writes<'a>(&'a self, reads: Reads<'a>) -> &'a dyn KeyStore {
        match reads {
            Some(store) if !store.in_caller_transaction() => store,
            _ => &*self.store,
        }
    }

    /// The same keys, with every read of a stored key that the caches miss
    /// made through `reads` first: for instance a key store on the
    /// connection of the caller's transaction (rowseal-sqlx does this for
    /// the operations that take a connection), so that a cache miss inside a
    /// transaction needs no second connection.
    ///
    /// A key that does not exist yet is created through `reads` too, unless
    /// `reads` is inside the caller's transaction
    /// ([`KeyStore::in_caller_transaction`]): then it is created through the
    /// hierarchy's own store, committed at once, since a key written in the
    /// transaction would vanish if it rolled back while this process kept it
    /// cached and other transactions wrote rows under it. Inside a
    /// transaction, a key `reads` does not show is also looked for in the
    /// own store (created since the transaction's snapshot). Keys read
    /// through `reads` are cached like any other (they are the same stored
    /// keys), unless `reads` reads a snapshot that may be older than other
    /// processes' changes ([`KeyStore::reads_are_current`]): then they serve
    /// the operation at hand and are not cached, so that a key shredded
    /// since the snapshot cannot outlive the transaction in the caches.
    ///
    /// ```
    /// # async fn demo() -> rowseal_core::Result<()> {
    /// use std::sync::Arc;
    /// use rowseal_core::{KeyHierarchy, KeyStore, LocalKeyProvider, MemoryKeyStore, RecordSpec};
    ///
    /// let provider = Arc::new(LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?);
    /// let own = Arc::new(MemoryKeyStore::new());
    /// let keys = KeyHierarchy::new(provider.clone(), own.clone());
    /// const NOTE: RecordSpec = RecordSpec::new("note", "notes");
    /// let written = keys.current_record_keys(&NOTE, "tenant-1").await?;
    ///
    /// // Another process (a fresh cache) reading through a store of its own
    /// // (here a copy of the stored keys) finds the same keys there.
    /// let theirs = MemoryKeyStore::new();
    /// for record in own.versions(rowseal_core::KeyPurpose::Tenant, &rowseal_core::KeyScope::Tenant("tenant-1".into())).await? {
    ///     theirs.insert(&record).await?;
    /// }
    /// let other = KeyHierarchy::new(provider, Arc::new(MemoryKeyStore::new()));
    /// let read = other.through(&theirs).current_record_keys(&NOTE, "tenant-1").await?;
    /// assert_eq!(read.tenant_key_version(), written.tenant_key_version());
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn through<'a>(&'a self, reads: &'a dyn KeyStore) -> KeysThrough<'a> {
        KeysThrough {
            keys: self,
            reads: Some(reads),
        }
    }

    /// This hierarchy as a [`KeysThrough`] that reads its own store only
    /// (the same as calling its methods): for code that takes a
    /// `KeysThrough` whether or not the caller has a store to offer.
    pub fn through_own_store(&self) -> KeysThrough<'_> {
        KeysThrough {
            keys: self,
            reads: None,
        }
    }
}

/// A [`KeyHierarchy`] whose reads of stored keys go through another
/// [`KeyStore`] first, from [`KeyHierarchy::through`]. Each method is the
/// hierarchy's method of the same name.
#[derive(Clone, Copy)]
pub struct KeysThrough<'a> {
    keys: &'a KeyHierarchy,
    reads: Reads<'a>,
}

impl KeysThrough<'_> {
    /// See [`KeyHierarchy::current_tenant_key`].
    pub async fn current_tenant_key(&self, tenant: &str) -> Result<Arc<TenantKey>> {
        self.keys.current_tenant_key_via(self.reads, tenant).await
    }

    /// See [`KeyHierarchy::tenant_key`].
    pub async fn tenant_key(&self, tenant: &str, version: u32) -> Result<Arc<TenantKey>> {
        Ok(self
            .keys
            .tenant_key_dated(self.reads, tenant, version)
            .await?
            .0)
    }

    /// See [`KeyHierarchy::record_keys`].
    pub async fn record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
        version: u32,
    ) -> Result<Arc<RecordKeys>> {
        self.keys
            .record_keys_via(self.reads, spec, tenant, version)
            .await
    }

    /// See [`KeyHierarchy::current_record_keys`].
    pub async fn current_record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
    ) -> Result<Arc<RecordKeys>> {
        self.keys
            .current_record_keys_via(self.reads, spec, tenant)
            .await
    }

    /// See [`KeyHierarchy::new_rows_record_keys`].
    pub async fn new_rows_record_keys(
        &self,
        spec: &RecordSpec,
        tenant: &str,
    ) -> Result<Option<Arc<RecordKeys>>> {
        match spec.key_mode() {
            KeyMode::Derived => Ok(Some(self.current_record_keys(spec, tenant).await?)),
            KeyMode::Kms => Ok(None),
        }
    }

    /// The hierarchy itself (for what needs no stored key: row keys of
    /// `kms` mode, rotations, the caches).
    pub fn hierarchy(&self) -> &KeyHierarchy {
        self.keys
    }

    /// See [`KeyHierarchy::index_key`].
    pub async fn index_key(&self, scope: &KeyScope, version: u32) -> Result<Arc<IndexKey>> {
        Ok(self
            .keys
            .index_key_dated(self.reads, scope, version)
            .await?
            .0)
    }

    /// See [`KeyHierarchy::index_key_versions`].
    pub async fn index_key_versions(&self, scope: &KeyScope) -> Result<Arc<IndexKeyVersions>> {
        self.keys.index_key_versions_via(self.reads, scope).await
    }

    /// See [`KeyHierarchy::lookup_index_key_versions`].
    pub async fn lookup_index_key_versions(
        &self,
        scope: &KeyScope,
    ) -> Result<Option<Arc<IndexKeyVersions>>> {
        self.keys
            .lookup_index_key_versions_via(self.reads, scope)
            .await
    }

    /// See [`KeyHierarchy::blind_index_key`].
    pub async fn blind_index_key(
        &self,
        scope: &KeyScope,
        version: u32,
        record_type: &str,
        index: &str,
    ) -> Result<Arc<BlindIndexKey>> {
        self.keys
            .blind_index_key_via(self.reads, scope, version, record_type, index)
            .await
    }
}

impl fmt::Debug for KeysThrough<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysThrough")
            .field("keys", self.keys)
            .field("reads", &self.reads)
            .finish()
    }
}

fn describe(purpose: KeyPurpose, scope: &KeyScope, version: u32) -> String {
    format!("{} key, {scope}, v{version}", purpose.as_str())
}

/// A row data key's cache slot: the wrapped bytes *and* the context they were
/// asked for under, so that a wrapped key copied into another tenant's or
/// record type's row is a cache miss, and goes to the provider, which checks
/// (and audits) the context, rather than being served from memory.
fn data_key_slot(ctx: &EncryptionContext, w: &WrappedKey) -> [u8; 32] {
    let mut h = Sha256::new();
    let ctx = ctx.canonical_bytes();
    h.update((ctx.len() as u64).to_be_bytes());
    h.update(&ctx);
    h.update(w.to_bytes());
    h.finalize().into()
}

impl fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHierarchy")
            .field("provider", &self.provider)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}
