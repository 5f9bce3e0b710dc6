//! [`EncryptorBuilder`]: an [`Encryptor`] from its parts (provider, key
//! store, cache, crypto pool), and [`Encryptor::from_env`].

use std::sync::Arc;
use std::time::Duration;

use rowseal_core::{
    CacheConfig, KeyHierarchy, KeyProvider, KeyStore, LocalKeyProvider, LOCAL_KEYS_ENV,
    LOCAL_KEY_FILE_ENV,
};

use super::{CryptoPool, Encryptor};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::keystore::SqlxKeyStore;

/// The AWS KMS key (ARN, id or alias) [`Encryptor::from_env`] uses as root
/// key; unset, it uses a local keyring ([`LOCAL_KEYS_ENV`],
/// [`LOCAL_KEY_FILE_ENV`]).
pub const KMS_KEY_ID_ENV: &str = "ROWSEAL_KMS_KEY_ID";
/// More KMS key ARNs (comma-separated) whose wrapped keys may be unwrapped
/// besides [`KMS_KEY_ID_ENV`]'s, e.g. the previous root key until every key
/// is rewrapped.
pub const KMS_ALLOWED_KEYS_ENV: &str = "ROWSEAL_KMS_ALLOWED_KEYS";
/// An explicit KMS endpoint (wins over the SDK's `AWS_ENDPOINT_URL_KMS`).
pub const KMS_ENDPOINT_ENV: &str = "ROWSEAL_KMS_ENDPOINT";
/// Most entries per key cache ([`CacheConfig::max_entries`]).
pub const CACHE_MAX_ENTRIES_ENV: &str = "ROWSEAL_KEY_CACHE_MAX_ENTRIES";
/// Lifetime of a cached key in seconds ([`CacheConfig::ttl`]).
pub const CACHE_TTL_SECS_ENV: &str = "ROWSEAL_KEY_CACHE_TTL_SECS";
/// Crypto threads for large batches ([`EncryptorBuilder::threads`]).
pub const CRYPTO_THREADS_ENV: &str = "ROWSEAL_CRYPTO_THREADS";

/// Builds an [`Encryptor`]: the root key provider and the key store are
/// required; the key cache, the crypto pool and the batch sizes have
/// defaults. Obtained from [`Encryptor::builder`].
///
/// ```
/// # async fn demo() -> rowseal_sqlx::Result<()> {
/// use std::time::Duration;
/// use rowseal_core::{LocalKeyProvider, MemoryKeyStore};
/// use rowseal_sqlx::Encryptor;
///
/// let encryptor = Encryptor::builder()
///     .provider(LocalKeyProvider::generate())
///     .key_store(MemoryKeyStore::new()) // SqlxKeyStore::new(pool) in a service
///     .cache_max_entries(100_000)
///     .cache_ttl(Duration::from_secs(60))
///     .threads(2)
///     .build()?;
/// assert_eq!(encryptor.keys().cache_config().max_entries, 100_000);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[must_use = "call .build() to get the Encryptor"]
pub struct EncryptorBuilder {
    provider: Option<Arc<dyn KeyProvider>>,
    store: Option<Arc<dyn KeyStore>>,
    keys: Option<Arc<KeyHierarchy>>,
    cache: CacheConfig,
    cache_set: bool,
    pool: Option<CryptoPool>,
    parallel_threshold: Option<usize>,
    stream_chunk: Option<usize>,
    provider_concurrency: Option<usize>,
}

impl std::fmt::Debug for EncryptorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Parts only by presence: a provider's Debug is its own business.
        f.debug_struct("EncryptorBuilder")
            .field("provider", &self.provider.is_some())
            .field("key_store", &self.store.is_some())
            .field("keys", &self.keys.is_some())
            .field("cache", &self.cache)
            .field("pool", &self.pool)
            .field("parallel_threshold", &self.parallel_threshold)
            .field("stream_chunk", &self.stream_chunk)
            .finish()
    }
}

impl Encryptor {
    /// A builder: set the provider and the key store, and optionally the
    /// cache, the crypto pool and the batch sizes.
    pub fn builder() -> EncryptorBuilder {
        EncryptorBuilder {
            provider: None,
            store: None,
            keys: None,
            cache: CacheConfig::default(),
            cache_set: false,
            pool: None,
            parallel_threshold: None,
            stream_chunk: None,
            provider_concurrency: None,
        }
    }

    /// An encryptor configured from the environment, its keys stored in
    /// `pool`'s `rowseal_keys` table:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `ROWSEAL_KMS_KEY_ID` | an AWS KMS root key (feature `kms`), with the standard AWS configuration (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_KMS`); its key is resolved now, so a wrong key fails at start-up |
    /// | `ROWSEAL_KMS_ALLOWED_KEYS` | more KMS key ARNs, comma-separated, whose wrapped keys may be unwrapped (a previous root key) |
    /// | `ROWSEAL_KMS_ENDPOINT` | an explicit KMS endpoint |
    /// | `ROWSEAL_LOCAL_KEYS`, `ROWSEAL_LOCAL_KEY_FILE` | without a KMS key: a local keyring, inline or in a file |
    /// | `ROWSEAL_KEY_CACHE_MAX_ENTRIES`, `ROWSEAL_KEY_CACHE_TTL_SECS` | the key cache ([`CacheConfig`]) |
    /// | `ROWSEAL_CRYPTO_THREADS` | threads for large batches (default: one per core) |
    ///
    /// No root key configured, a KMS key in a build without the `kms`
    /// feature, or a number that does not parse is
    /// [`Error::KeyConfig`](rowseal_core::Error::KeyConfig) naming the
    /// variable (never its value, which may be a key).
    pub async fn from_env<DB: Backend>(pool: &sqlx::Pool<DB>) -> Result<Encryptor> {
        Self::builder()
            .tuning_from_env()?
            .provider_from_env()
            .await?
            .key_store(SqlxKeyStore::new(pool.clone()))
            .build()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match env(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| Error::KeyConfig {
            reason: format!("{name} is not a number"),
        }),
    }
}

impl EncryptorBuilder {
    /// The root key provider (required, unless [`keys`](Self::keys) is
    /// given).
    pub fn provider(self, provider: impl KeyProvider + 'static) -> Self {
        self.shared_provider(Arc::new(provider))
    }

    /// The root key provider, shared with other holders.
    pub fn shared_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Where wrapped tenant and index keys are kept (required, unless
    /// [`keys`](Self::keys) is given): a [`SqlxKeyStore`] over the
    /// application's pool in a service.
    pub fn key_store(self, store: impl KeyStore + 'static) -> Self {
        self.shared_key_store(Arc::new(store))
    }

    /// The key store, shared with other holders.
    pub fn shared_key_store(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// An existing key hierarchy (its provider, store and caches), shared
    /// with another encryptor or the `rowseal` tool's code: instead of
    /// [`provider`](Self::provider), [`key_store`](Self::key_store) and the
    /// cache settings, which [`build`](Self::build) then refuses.
    pub fn keys(mut self, keys: Arc<KeyHierarchy>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The key cache's bounds and lifetime (default [`CacheConfig::default`]).
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self.cache_set = true;
        self
    }

    /// Most entries per key cache.
    pub fn cache_max_entries(mut self, entries: usize) -> Self {
        self.cache.max_entries = entries;
        self.cache_set = true;
        self
    }

    /// How long a fetched key stays cached.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self.cache_set = true;
        self
    }

    /// Large batches use at most `threads` threads, shared by every
    /// encryptor given the same number ([`Encryptor::with_threads`]).
    pub fn threads(mut self, threads: usize) -> Self {
        self.pool = Some(CryptoPool::shared(threads));
        self
    }

    /// Large batches run on `pool` ([`Encryptor::with_crypto_pool`]).
    pub fn crypto_pool(mut self, pool: CryptoPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Rows at or above which a batch goes to the crypto pool
    /// ([`Encryptor::with_parallel_threshold`]).
    pub fn parallel_threshold(mut self, rows: usize) -> Self {
        self.parallel_threshold = Some(rows);
        self
    }

    /// Rows decrypted at a time by a stream ([`Encryptor::with_stream_chunk`]).
    pub fn stream_chunk(mut self, rows: usize) -> Self {
        self.stream_chunk = Some(rows);
        self
    }

    /// Key-provider calls a `kms`-mode batch keeps in flight
    /// ([`Encryptor::with_provider_concurrency`]).
    pub fn provider_concurrency(mut self, calls: usize) -> Self {
        self.provider_concurrency = Some(calls);
        self
    }

    /// Reads the cache and thread settings from the environment
    /// (`ROWSEAL_KEY_CACHE_MAX_ENTRIES`, `ROWSEAL_KEY_CACHE_TTL_SECS`,
    /// `ROWSEAL_CRYPTO_THREADS`); unset variables keep what is set.
    pub fn tuning_from_env(mut self) -> Result<Self> {
        if let Some(n) = env_number::<usize>(CACHE_MAX_ENTRIES_ENV)? {
            self = self.cache_max_entries(n);
        }
        if let Some(s) = env_number::<u64>(CACHE_TTL_SECS_ENV)? {
            self = self.cache_ttl(Duration::from_secs(s));
        }
        if let Some(n) = env_number::<usize>(CRYPTO_THREADS_ENV)? {
            self = self.threads(n);
        }
        Ok(self)
    }

    /// The root key provider the environment names: an AWS KMS key
    /// (`ROWSEAL_KMS_KEY_ID`, feature `kms`), or else a local keyring
    /// (`ROWSEAL_LOCAL_KEYS`, `ROWSEAL_LOCAL_KEY_FILE`). See
    /// [`Encryptor::from_env`].
    pub async fn provider_from_env(self) -> Result<Self> {
        if let Some(key_id) = env(KMS_KEY_ID_ENV) {
            return self.kms_provider(key_id).await;
        }
        if env(LOCAL_KEYS_ENV).is_none() && env(LOCAL_KEY_FILE_ENV).is_none() {
            return Err(Error::KeyConfig {
                reason: format!(
                    "no root key configured: set {KMS_KEY_ID_ENV} (AWS KMS), or \
                     {LOCAL_KEYS_ENV} or {LOCAL_KEY_FILE_ENV} (a local keyring)"
                ),
            });
        }
        Ok(self.provider(LocalKeyProvider::from_env()?))
    }

    #[cfg(feature = "kms")]
    async fn kms_provider(self, key_id: String) -> Result<Self> {
        // Wrapped keys naming any other KMS key are refused: the database
        // never chooses the root key.
        let allowed: Vec<String> = env(KMS_ALLOWED_KEYS_ENV)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut builder = rowseal_kms::AwsKmsProvider::builder(key_id).allow_keys(allowed);
        if let Some(endpoint) = env(KMS_ENDPOINT_ENV) {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(self.provider(builder.build().await?))
    }

    #[cfg(not(feature = "kms"))]
    async fn kms_provider(self, _key_id: String) -> Result<Self> {
        Err(Error::KeyConfig {
            reason: format!(
                "{KMS_KEY_ID_ENV} is set, but this build has no AWS KMS provider \
                 (enable rowseal's `kms` feature)"
            ),
        })
    }

    /// The encryptor. A missing provider or key store, or a
    /// [`keys`](Self::keys) hierarchy given together with them or with cache
    /// settings, is [`Error::KeyConfig`](rowseal_core::Error::KeyConfig).
    pub fn build(self) -> Result<Encryptor> {
        let keys = match (self.keys, self.provider, self.store) {
            (Some(keys), None, None) if !self.cache_set => keys,
            (Some(_), ..) => {
                return Err(Error::KeyConfig {
                    reason: "an existing key hierarchy comes with its own provider, key store \
                             and cache; set either it or them"
                        .into(),
                })
            }
            (None, Some(provider), Some(store)) => {
                Arc::new(KeyHierarchy::with_cache_config(provider, store, self.cache))
            }
            (None, None, _) => {
                return Err(Error::KeyConfig {
                    reason: "no root key provider: call .provider(..)".into(),
                })
            }
            (None, Some(_), None) => {
                return Err(Error::KeyConfig {
                    reason: "no key store: call .key_store(..) (SqlxKeyStore::new(pool) for \
                             the rowseal_keys table)"
                        .into(),
                })
            }
        };
        let mut encryptor = Encryptor::new(keys);
        if let Some(pool) = self.pool {
            encryptor = encryptor.with_crypto_pool(pool);
        }
        if let Some(rows) = self.parallel_threshold {
            encryptor = encryptor.with_parallel_threshold(rows);
        }
        if let Some(rows) = self.stream_chunk {
            encryptor = encryptor.with_stream_chunk(rows);
        }
        if let Some(calls) = self.provider_concurrency {
            encryptor = encryptor.with_provider_concurrency(calls);
        }
        Ok(encryptor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rowseal_core::MemoryKeyStore;

    #[test]
    fn missing_parts_are_named() {
        let e = Encryptor::builder().build().unwrap_err();
        assert!(e.to_string().contains("no root key provider"), "{e}");
        let e = Encryptor::builder()
            .provider(LocalKeyProvider::generate())
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("no key store"), "{e}");
        assert_eq!(e.kind(), rowseal_core::ErrorKind::Configuration);
    }

    #[test]
    fn a_shared_hierarchy_excludes_its_parts() {
        let keys = Arc::new(KeyHierarchy::new(
            Arc::new(LocalKeyProvider::generate()),
            Arc::new(MemoryKeyStore::new()),
        ));
        let enc = Encryptor::builder().keys(keys.clone()).build().unwrap();
        assert!(Arc::ptr_eq(enc.keys(), &keys));
        let e = Encryptor::builder()
            .keys(keys.clone())
            .cache_max_entries(5)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("existing key hierarchy"), "{e}");
        let e = Encryptor::builder()
            .keys(keys)
            .key_store(MemoryKeyStore::new())
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("existing key hierarchy"), "{e}");
    }

    #[test]
    fn settings_reach_the_encryptor() {
        let pool = CryptoPool::new(1);
        let enc = Encryptor::builder()
            .provider(LocalKeyProvider::generate())
            .key_store(MemoryKeyStore::new())
            .cache(CacheConfig {
                max_entries: 7,
                ttl: Duration::from_secs(9),
            })
            .crypto_pool(pool.clone())
            .parallel_threshold(3)
            .stream_chunk(11)
            .build()
            .unwrap();
        assert_eq!(enc.keys().cache_config().max_entries, 7);
        assert_eq!(enc.keys().cache_config().ttl, Duration::from_secs(9));
        assert!(enc.crypto_pool().same_pool(&pool));
        assert_eq!(enc.parallel_threshold, 3);
        assert_eq!(enc.stream_chunk, 11);
    }
}
