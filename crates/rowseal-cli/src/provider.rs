//! The key provider: local keyring, AWS KMS, or a root-keys file routing
//! tenants to local, KMS and Vault Transit root keys; rate-limited, counted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rowseal_core::{
    CountingKeyProvider, DataKey, EncryptionContext, KeyProvider, LocalKeyProvider, SecretKey,
    WrappedKey,
};
use tokio::time::Instant;

use crate::config::{KeySource, Settings};
use crate::error::Result;

/// Builds the configured provider, wrapped in the rate limiter (if any) and
/// in a call counter (reported by every command); with a root-keys file,
/// also the routing itself (for names given on the command line).
pub async fn build(
    settings: &Settings,
) -> Result<(Arc<CountingKeyProvider>, Option<Arc<rowseal::RootKeys>>)> {
    let mut routing = None;
    let base: Arc<dyn KeyProvider> = match &settings.keys {
        KeySource::RootKeys(path) => {
            let keys = Arc::new(
                rowseal::root_keys::RootKeysConfig::from_file(path)?
                    .build()
                    .await?,
            );
            routing = Some(keys.clone());
            keys
        }
        KeySource::LocalFile(p) => Arc::new(LocalKeyProvider::from_file(p)?),
        KeySource::LocalEnv => Arc::new(LocalKeyProvider::from_env()?),
        KeySource::Kms {
            key_id,
            allowed_keys,
            region,
            endpoint,
        } => {
            let mut b = rowseal_kms::AwsKmsProvider::builder(key_id.clone())
                .allow_keys(allowed_keys.iter().cloned());
            if let Some(r) = region {
                b = b.region(r.clone());
            }
            if let Some(e) = endpoint {
                b = b.endpoint_url(e.clone());
            }
            Arc::new(b.build().await?)
        }
    };
    let limited: Arc<dyn KeyProvider> = match settings.kms_rate {
        Some(rate) => Arc::new(RateLimited::new(base, rate)),
        None => base,
    };
    Ok((Arc::new(CountingKeyProvider::new(limited)), routing))
}

/// Spaces provider calls at least `1/rate` seconds apart (all calls of the
/// process share the budget).
#[derive(Debug)]
pub struct RateLimited {
    inner: Arc<dyn KeyProvider>,
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimited {
    /// At most `per_second` calls per second.
    pub fn new(inner: Arc<dyn KeyProvider>, per_second: f64) -> Self {
        RateLimited {
            inner,
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[async_trait]
impl KeyProvider for RateLimited {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn current_key_id(&self) -> &str {
        self.inner.current_key_id()
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> rowseal_core::Result<DataKey> {
        self.wait().await;
        self.inner.generate_data_key(context).await
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> rowseal_core::Result<SecretKey> {
        self.wait().await;
        self.inner.decrypt_data_key(wrapped, context).await
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> rowseal_core::Result<WrappedKey> {
        self.wait().await;
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
    ) -> rowseal_core::Result<WrappedKey> {
        self.wait().await;
        self.inner.wrap_data_key(key, context).await
    }
}
