//! Root keys per tenant: [`RootKeys`] routes each tenant's keys to the root
//! key (and provider) configured for it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, ProviderError, ProviderErrorKind, Result};
use crate::format::wrapped::WrappedKey;
use crate::provider::{
    CountingKeyProvider, DataKey, EncryptionContext, KeyProvider, ProviderCallCounts,
};
use crate::secret::SecretKey;

/// Several named root keys, possibly at different providers, and which
/// tenant uses which: a [`KeyProvider`] for a [`KeyHierarchy`](crate::KeyHierarchy)
/// whose tenants bring their own keys.
///
/// - **New keys** of a tenant (its tenant keys and per-tenant index keys) are
///   generated under the root key routed to it, or the default root key.
///   Global index keys use the default.
/// - **Stored keys** are unwrapped by the root key whose provider allows the
///   key id recorded with them (see [`KeyProvider::allows_key`]), wherever
///   the routing now points: routing a tenant elsewhere changes where its
///   *new* keys go, and `rowseal rewrap --tenant` moves its existing ones.
///   A key id no configured root key allows is refused
///   ([`ProviderErrorKind::KeyNotAllowed`]) before any provider is asked.
/// - **Rewrapping** to a destination given by root-key name or key id: within
///   one provider it is that provider's rewrap (KMS ReEncrypt, Transit
///   rewrap or encrypt); across providers the source unwraps and the
///   destination wraps ([`KeyProvider::wrap_data_key`]), the data key in
///   this process's memory for that moment, zeroized after.
///
/// ```
/// # async fn demo() -> rowseal_core::Result<()> {
/// use std::sync::Arc;
/// use rowseal_core::{EncryptionContext, KeyProvider, LocalKeyProvider, RootKeys};
/// // In production: an AwsKmsProvider (rowseal-kms) and a TransitProvider per
/// // customer Vault (rowseal-vault); see docs/keys.md.
/// let ours = Arc::new(LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?);
/// let keys = RootKeys::builder()
///     .root_key("ours", ours)
///     .default_root_key("ours")
///     .route_tenant("tenant-acme", "ours")
///     .build()?;
/// let dk = keys.generate_data_key(&EncryptionContext::tenant_key("tenant-acme", 1)).await?;
/// assert_eq!(keys.root_key_of(dk.wrapped.key_id()).map(|(name, _)| name), Some("ours"));
/// # Ok(()) }
/// # tokio_test_block_on(demo()).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct RootKeys {
    /// Each root key's provider behind a call counter (the same object
    /// twice: once to count, once as the trait object handed out).
    keys: Vec<(String, Arc<dyn KeyProvider>)>,
    counters: Vec<Arc<CountingKeyProvider>>,
    default: usize,
    tenants: HashMap<String, usize>,
}

/// Configures [`RootKeys`]; made by [`RootKeys::builder`].
#[derive(Default)]
#[must_use]
pub struct RootKeysBuilder {
    keys: Vec<(String, Arc<dyn KeyProvider>)>,
    default: Option<String>,
    tenants: Vec<(String, String)>,
}

fn config(reason: String) -> Error {
    ProviderError::new(ProviderErrorKind::Config, reason).into()
}

impl RootKeysBuilder {
    /// Adds a root key under `name` (a label of the configuration, e.g.
    /// `acme-vault`; what is recorded with wrapped keys is the provider's
    /// key id).
    pub fn root_key(mut self, name: impl Into<String>, provider: Arc<dyn KeyProvider>) -> Self {
        self.keys.push((name.into(), provider));
        self
    }

    /// The root key of tenants without a route, and of global keys.
    pub fn default_root_key(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Routes `tenant`'s new keys to the root key `name`.
    pub fn route_tenant(mut self, tenant: impl Into<String>, name: impl Into<String>) -> Self {
        self.tenants.push((tenant.into(), name.into()));
        self
    }

    /// Checks the configuration: names unique and known, a default, and no
    /// key id claimed by two root keys (a stored key must have exactly one
    /// place to go).
    pub fn build(self) -> Result<RootKeys> {
        let index = |name: &str| self.keys.iter().position(|(n, _)| n == name);
        for (i, (name, _)) in self.keys.iter().enumerate() {
            if name.is_empty() {
                return Err(config("a root key needs a name".into()));
            }
            if index(name) != Some(i) {
                return Err(config(format!("root key {name:?} is configured twice")));
            }
        }
        let default = match (&self.default, self.keys.len()) {
            (Some(d), _) => index(d)
                .ok_or_else(|| config(format!("the default root key {d:?} is not configured")))?,
            (None, 1) => 0,
            (None, _) => {
                return Err(config(
                    "several root keys and no default: name one with default_root_key".into(),
                ))
            }
        };
        // Only current key ids can be compared (an allow-list is not
        // enumerable): a root key whose provider also accepts another root
        // key's current id would make stored keys ambiguous.
        for (owner, p) in &self.keys {
            let id = p.current_key_id();
            if let Some((other, _)) = self
                .keys
                .iter()
                .find(|(n, q)| n != owner && q.allows_key(id))
            {
                return Err(config(format!(
                    "root keys {owner:?} and {other:?} both serve the key id {id}: \
                     a stored key must have one place to go"
                )));
            }
        }
        let mut tenants = HashMap::with_capacity(self.tenants.len());
        for (tenant, name) in self.tenants {
            let i = index(&name).ok_or_else(|| {
                config(format!(
                    "tenant {tenant:?} is routed to {name:?}, which is not configured"
                ))
            })?;
            if tenants
                .insert(tenant.clone(), i)
                .is_some_and(|prev| prev != i)
            {
                return Err(config(format!("tenant {tenant:?} is routed twice")));
            }
        }
        let counters: Vec<Arc<CountingKeyProvider>> = self
            .keys
            .iter()
            .map(|(_, p)| Arc::new(CountingKeyProvider::new(p.clone())))
            .collect();
        let keys = self
            .keys
            .into_iter()
            .zip(&counters)
            .map(|((name, _), c)| (name, c.clone() as Arc<dyn KeyProvider>))
            .collect();
        Ok(RootKeys {
            keys,
            counters,
            default,
            tenants,
        })
    }
}

impl RootKeys {
    /// Starts a configuration.
    pub fn builder() -> RootKeysBuilder {
        RootKeysBuilder::default()
    }

    /// The root key (name, provider) that `tenant`'s new keys go to; global
    /// keys (`None`) go to the default.
    pub fn root_key_for(&self, tenant: Option<&str>) -> (&str, &Arc<dyn KeyProvider>) {
        let i = tenant
            .and_then(|t| self.tenants.get(t).copied())
            .unwrap_or(self.default);
        let (name, p) = &self.keys[i];
        (name, p)
    }

    /// The root key (name, provider) that serves stored keys recorded under
    /// `key_id`, if one does.
    pub fn root_key_of(&self, key_id: &str) -> Option<(&str, &Arc<dyn KeyProvider>)> {
        self.keys
            .iter()
            .find(|(_, p)| p.allows_key(key_id))
            .map(|(n, p)| (n.as_str(), p))
    }

    /// The root key named `name`.
    pub fn root_key_named(&self, name: &str) -> Option<&Arc<dyn KeyProvider>> {
        self.keys.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The configured root keys, in order.
    pub fn root_keys(&self) -> impl Iterator<Item = (&str, &Arc<dyn KeyProvider>)> {
        self.keys.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// Provider calls so far per root key, in configuration order: what
    /// each key service (and each customer's) sees of this process.
    pub fn call_counts(&self) -> Vec<(&str, ProviderCallCounts)> {
        self.keys
            .iter()
            .zip(&self.counters)
            .map(|((n, _), c)| (n.as_str(), c.counts()))
            .collect()
    }

    /// The name of the default root key.
    pub fn default_root_key(&self) -> &str {
        &self.keys[self.default].0
    }

    /// The tenants with a route of their own, and their root key's name.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tenants
            .iter()
            .map(|(t, i)| (t.as_str(), self.keys[*i].0.as_str()))
    }

    fn source(&self, wrapped: &WrappedKey) -> Result<&Arc<dyn KeyProvider>> {
        self.root_key_of(wrapped.key_id())
            .map(|(_, p)| p)
            .ok_or_else(|| {
                ProviderError::new(
                    ProviderErrorKind::KeyNotAllowed,
                    "the wrapped key names a root key that no configured root key serves; \
                     nothing was sent to any provider",
                )
                .with_key_id(wrapped.key_id())
                .into()
            })
    }

    /// A rewrap destination: a root key's name (its current key), or a key
    /// id (the root key that serves it; else the source's provider, which
    /// may rewrap to keys off its allow-list, such as a new KMS key).
    fn destination<'a>(
        &'a self,
        destination: &'a str,
        source: &'a Arc<dyn KeyProvider>,
    ) -> (&'a Arc<dyn KeyProvider>, &'a str) {
        if let Some(p) = self.root_key_named(destination) {
            return (p, p.current_key_id());
        }
        match self.root_key_of(destination) {
            Some((_, p)) => (p, destination),
            None => (source, destination),
        }
    }
}

#[async_trait]
impl KeyProvider for RootKeys {
    fn name(&self) -> &'static str {
        "root-keys"
    }

    /// The default root key's current key id.
    fn current_key_id(&self) -> &str {
        self.keys[self.default].1.current_key_id()
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let (_, p) = self.root_key_for(context.tenant());
        p.generate_data_key(context).await
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        self.source(wrapped)?
            .decrypt_data_key(wrapped, context)
            .await
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        let source = self.source(wrapped)?;
        let (dest, dest_id) = self.destination(destination_key_id, source);
        if Arc::ptr_eq(source, dest) {
            // One provider: its own rewrap (the key stays inside the service
            // where it can).
            return source.reencrypt_data_key(wrapped, context, dest_id).await;
        }
        if dest_id != dest.current_key_id() {
            return Err(config(format!(
                "moving a key to another provider wraps it under that provider's current \
                 key ({}), not {dest_id}",
                dest.current_key_id()
            )));
        }
        let key = source.decrypt_data_key(wrapped, context).await?;
        dest.wrap_data_key(&key, context).await
    }

    fn allows_key(&self, key_id: &str) -> bool {
        self.root_key_of(key_id).is_some()
    }

    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let (_, p) = self.root_key_for(context.tenant());
        p.wrap_data_key(key, context).await
    }
}

impl fmt::Debug for RootKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeys")
            .field(
                "root_keys",
                &self
                    .keys
                    .iter()
                    .map(|(n, p)| (n, p.current_key_id()))
                    .collect::<Vec<_>>(),
            )
            .field("default", &self.keys[self.default].0)
            .field("routed_tenants", &self.tenants.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalKeyProvider;

    /// A local keyring whose key ids carry a prefix, standing in for a
    /// second provider.
    #[derive(Debug)]
    struct Elsewhere {
        prefix: &'static str,
        id: String,
        inner: LocalKeyProvider,
    }

    impl Elsewhere {
        fn new(prefix: &'static str) -> Self {
            let inner =
                LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
            let id = format!("{prefix}/{}", inner.current_key_id());
            Elsewhere { prefix, id, inner }
        }
        fn inner_wrapped(&self, w: &WrappedKey) -> Result<WrappedKey> {
            let id = w
                .key_id()
                .strip_prefix(self.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or("none");
            WrappedKey::new(id, w.ciphertext().to_vec())
        }
        fn outer(&self, w: WrappedKey) -> Result<WrappedKey> {
            WrappedKey::new(
                format!("{}/{}", self.prefix, w.key_id()),
                w.ciphertext().to_vec(),
            )
        }
    }

    #[async_trait]
    impl KeyProvider for Elsewhere {
        fn name(&self) -> &'static str {
            "elsewhere"
        }
        fn current_key_id(&self) -> &str {
            &self.id
        }
        async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
            let dk = self.inner.generate_data_key(context).await?;
            Ok(DataKey {
                plaintext: dk.plaintext,
                wrapped: self.outer(dk.wrapped)?,
            })
        }
        async fn decrypt_data_key(
            &self,
            wrapped: &WrappedKey,
            context: &EncryptionContext,
        ) -> Result<SecretKey> {
            self.inner
                .decrypt_data_key(&self.inner_wrapped(wrapped)?, context)
                .await
        }
        async fn reencrypt_data_key(
            &self,
            wrapped: &WrappedKey,
            context: &EncryptionContext,
            destination_key_id: &str,
        ) -> Result<WrappedKey> {
            let dest = destination_key_id
                .strip_prefix(self.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(destination_key_id);
            let w = self
                .inner
                .reencrypt_data_key(&self.inner_wrapped(wrapped)?, context, dest)
                .await?;
            self.outer(w)
        }
        fn allows_key(&self, key_id: &str) -> bool {
            key_id == self.id
        }
        async fn wrap_data_key(
            &self,
            key: &SecretKey,
            context: &EncryptionContext,
        ) -> Result<WrappedKey> {
            self.outer(self.inner.wrap_data_key(key, context).await?)
        }
    }

    fn three() -> RootKeys {
        RootKeys::builder()
            .root_key("a", Arc::new(Elsewhere::new("a")))
            .root_key("b", Arc::new(Elsewhere::new("b")))
            .root_key("c", Arc::new(Elsewhere::new("c")))
            .default_root_key("a")
            .route_tenant("t-b", "b")
            .route_tenant("t-c", "c")
            .build()
            .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn tenants_get_their_root_key_and_stored_keys_find_theirs() {
        block_on(async {
            let keys = three();
            for (tenant, root) in [("t-b", "b"), ("t-c", "c"), ("other", "a")] {
                let ctx = EncryptionContext::tenant_key(tenant, 1);
                let dk = keys.generate_data_key(&ctx).await.unwrap();
                assert_eq!(keys.root_key_of(dk.wrapped.key_id()).unwrap().0, root);
                let back = keys.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap();
                assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
            }
            let global = keys
                .generate_data_key(&EncryptionContext::index_key(None, 1))
                .await
                .unwrap();
            assert_eq!(keys.root_key_of(global.wrapped.key_id()).unwrap().0, "a");
        });
    }

    #[test]
    fn a_key_moves_between_providers_and_keeps_its_context() {
        block_on(async {
            let keys = three();
            let ctx = EncryptionContext::tenant_key("t-b", 1);
            let dk = keys.generate_data_key(&ctx).await.unwrap();
            let moved = keys
                .reencrypt_data_key(&dk.wrapped, &ctx, "c")
                .await
                .unwrap();
            assert_eq!(keys.root_key_of(moved.key_id()).unwrap().0, "c");
            let back = keys.decrypt_data_key(&moved, &ctx).await.unwrap();
            assert_eq!(back.expose_secret(), dk.plaintext.expose_secret());
            let other = EncryptionContext::tenant_key("t-c", 1);
            let err = keys.decrypt_data_key(&moved, &other).await.unwrap_err();
            assert!(matches!(
                err,
                Error::Provider(ref p) if p.kind() == ProviderErrorKind::InvalidCiphertext
            ));
            // Back again, by key id this time.
            let a_id = keys
                .root_key_named("b")
                .unwrap()
                .current_key_id()
                .to_owned();
            let home = keys.reencrypt_data_key(&moved, &ctx, &a_id).await.unwrap();
            assert_eq!(home.key_id(), a_id);
        });
    }

    #[test]
    fn an_unknown_key_id_is_refused_before_any_provider() {
        block_on(async {
            let keys = three();
            let w = WrappedKey::new("z/local:v1", vec![1, 2, 3]).unwrap();
            let err = keys
                .decrypt_data_key(&w, &EncryptionContext::tenant_key("t", 1))
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                Error::Provider(ref p) if p.kind() == ProviderErrorKind::KeyNotAllowed
            ));
        });
    }

    #[test]
    fn configurations_that_cannot_route_are_refused() {
        let a = || Arc::new(Elsewhere::new("a")) as Arc<dyn KeyProvider>;
        assert!(RootKeys::builder().build().is_err(), "nothing configured");
        assert!(
            RootKeys::builder()
                .root_key("a", a())
                .root_key("b", Arc::new(Elsewhere::new("b")))
                .build()
                .is_err(),
            "no default"
        );
        assert!(
            RootKeys::builder()
                .root_key("a", a())
                .route_tenant("t", "nope")
                .build()
                .is_err(),
            "unknown root key"
        );
        assert!(
            RootKeys::builder()
                .root_key("a", a())
                .root_key("a", a())
                .default_root_key("a")
                .build()
                .is_err(),
            "a name twice"
        );
        assert!(
            RootKeys::builder()
                .root_key("one", a())
                .root_key("two", a())
                .default_root_key("one")
                .build()
                .is_err(),
            "one key id served twice"
        );
        let only = RootKeys::builder().root_key("a", a()).build().unwrap();
        assert_eq!(only.default_root_key(), "a");
    }
}
