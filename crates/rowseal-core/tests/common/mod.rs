//! Shared by the integration tests.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rowseal_core::{
    CacheConfig, CountingKeyProvider, DataKey, EncryptionContext, FieldName, FieldSet,
    KeyHierarchy, KeyProvider, LocalKeyProvider, MemoryKeyStore, Result, SecretKey, WrappedKey,
};

/// The `email` field (stored in an `email` column), which most tests seal.
pub const EMAIL: FieldName = FieldName::same("email");

/// The present set of a row whose only encrypted field is `email`.
pub fn email_set() -> FieldSet {
    FieldSet::new(["email"]).unwrap()
}

pub fn local_provider() -> LocalKeyProvider {
    LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap()
}

/// The local provider behind a network-like delay, so that concurrent
/// requests really overlap.
#[derive(Debug)]
pub struct SlowProvider {
    pub inner: LocalKeyProvider,
    pub delay: Duration,
}

#[async_trait]
impl KeyProvider for SlowProvider {
    fn name(&self) -> &'static str {
        "slow-local"
    }
    fn current_key_id(&self) -> &str {
        self.inner.current_key_id()
    }
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        tokio::time::sleep(self.delay).await;
        self.inner.generate_data_key(context).await
    }
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        tokio::time::sleep(self.delay).await;
        self.inner.decrypt_data_key(wrapped, context).await
    }
    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        tokio::time::sleep(self.delay).await;
        self.inner
            .reencrypt_data_key(wrapped, context, destination_key_id)
            .await
    }
}

pub struct Fixture {
    pub keys: Arc<KeyHierarchy>,
    pub counting: Arc<CountingKeyProvider>,
    pub store: Arc<MemoryKeyStore>,
}

pub fn fixture_with(provider: Arc<dyn KeyProvider>, cache: CacheConfig) -> Fixture {
    let counting = Arc::new(CountingKeyProvider::new(provider));
    let store = Arc::new(MemoryKeyStore::new());
    let keys = Arc::new(KeyHierarchy::with_cache_config(
        counting.clone(),
        store.clone(),
        cache,
    ));
    Fixture {
        keys,
        counting,
        store,
    }
}

pub fn fixture() -> Fixture {
    fixture_with(Arc::new(local_provider()), CacheConfig::default())
}
