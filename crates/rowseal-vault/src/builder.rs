//! [`TransitProviderBuilder`]: where the server, key, authentication, TLS,
//! namespace, allow-list, timeouts and retries are chosen.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rowseal_core::{Error, ProviderError, ProviderErrorKind, Result, RetryPolicy};
use zeroize::Zeroizing;

use crate::auth::{Session, TransitAuth};
use crate::counts::Counters;
use crate::http::{Http, TlsFiles};
use crate::provider::{key_id_of, TransitProvider, KEY_ID_PREFIX};
use crate::AUDIT_TARGET;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Configures and builds a [`TransitProvider`]. Made by
/// [`TransitProvider::builder`] or [`from_env`](Self::from_env).
///
/// Building checks the server before any data is touched: it reads the
/// cluster id and seal state (`sys/health`), logs in (AppRole), and reads
/// the configuration of the Transit key and of every allowed key, refusing a
/// key that is not derived (see [`TransitProvider`]).
#[must_use]
pub struct TransitProviderBuilder {
    address: String,
    key: String,
    mount: String,
    namespace: Option<String>,
    auth: Option<TransitAuth>,
    tls: TlsFiles,
    allowed: Vec<String>,
    retry: RetryPolicy,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    operation_timeout: Duration,
    cluster_id: Option<String>,
}

fn config(reason: impl Into<String>) -> Error {
    ProviderError::new(ProviderErrorKind::Config, reason).into()
}

/// Transit key names: Vault's `GenericNameRegex` (word characters, `-` and
/// `.`, starting and ending with a word character).
fn valid_key_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !name.is_empty()
        && name.chars().all(|c| word(c) || c == '-' || c == '.')
        && name.starts_with(word)
        && name.ends_with(word)
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl TransitProviderBuilder {
    pub(crate) fn new(address: String, key: String) -> Self {
        TransitProviderBuilder {
            address,
            key,
            mount: "transit".into(),
            namespace: None,
            auth: None,
            tls: TlsFiles::default(),
            allowed: Vec::new(),
            retry: RetryPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            cluster_id: None,
        }
    }

    /// A builder from the environment, with Vault's own variable names (and
    /// OpenBao's `BAO_*` twins):
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `VAULT_ADDR` | the server (`https://vault.example:8200`) |
    /// | `ROWSEAL_VAULT_TRANSIT_KEY` | the Transit key's name (required) |
    /// | `ROWSEAL_VAULT_TRANSIT_MOUNT` | the Transit mount (default `transit`) |
    /// | `VAULT_NAMESPACE` | the namespace |
    /// | `VAULT_TOKEN` | a token, or else: |
    /// | `VAULT_ROLE_ID`, `VAULT_SECRET_ID` or `VAULT_SECRET_ID_FILE` | AppRole |
    /// | `ROWSEAL_VAULT_APPROLE_MOUNT` | the AppRole auth mount (default `approle`) |
    /// | `VAULT_CACERT` | a PEM CA file that replaces the system's roots |
    /// | `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY` | a client certificate (PEM) |
    pub fn from_env() -> Result<Self> {
        let address = env(&["VAULT_ADDR", "BAO_ADDR"])
            .ok_or_else(|| config("VAULT_ADDR (or BAO_ADDR) is not set"))?;
        let key = env(&["ROWSEAL_VAULT_TRANSIT_KEY"])
            .ok_or_else(|| config("ROWSEAL_VAULT_TRANSIT_KEY is not set"))?;
        let mut b = Self::new(address, key);
        if let Some(mount) = env(&["ROWSEAL_VAULT_TRANSIT_MOUNT"]) {
            b = b.mount(mount);
        }
        if let Some(ns) = env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]) {
            b = b.namespace(ns);
        }
        if let Some(token) = env(&["VAULT_TOKEN", "BAO_TOKEN"]) {
            b = b.auth(TransitAuth::token(token));
        } else if let Some(role_id) = env(&["VAULT_ROLE_ID", "BAO_ROLE_ID"]) {
            let secret_id = match env(&["VAULT_SECRET_ID", "BAO_SECRET_ID"]) {
                Some(s) => Zeroizing::new(s),
                None => {
                    let path = env(&["VAULT_SECRET_ID_FILE", "BAO_SECRET_ID_FILE"]).ok_or_else(
                        || config("VAULT_ROLE_ID is set but neither VAULT_SECRET_ID nor VAULT_SECRET_ID_FILE"),
                    )?;
                    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                        config(format!("cannot read VAULT_SECRET_ID_FILE {path}: {e}"))
                    })?);
                    Zeroizing::new(text.trim().to_owned())
                }
            };
            let mut auth = TransitAuth::approle(role_id, secret_id.as_str());
            if let Some(mount) = env(&["ROWSEAL_VAULT_APPROLE_MOUNT"]) {
                auth = auth.with_mount(mount);
            }
            b = b.auth(auth);
        }
        if let Some(ca) = env(&["VAULT_CACERT", "BAO_CACERT"]) {
            b = b.ca_file(ca);
        }
        match (
            env(&["VAULT_CLIENT_CERT", "BAO_CLIENT_CERT"]),
            env(&["VAULT_CLIENT_KEY", "BAO_CLIENT_KEY"]),
        ) {
            (Some(cert), Some(key)) => b = b.client_cert(cert, key),
            (None, None) => {}
            _ => {
                return Err(config(
                    "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together",
                ))
            }
        }
        Ok(b)
    }

    /// The Transit mount path (default `transit`).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into().trim_matches('/').to_owned();
        self
    }

    /// The Vault namespace (sent as `X-Vault-Namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let ns = namespace.into().trim_matches('/').to_owned();
        self.namespace = (!ns.is_empty()).then_some(ns);
        self
    }

    /// How to authenticate (required).
    pub fn auth(mut self, auth: TransitAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// A PEM file of CA certificates that replaces the system's roots (as
    /// `VAULT_CACERT` does).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// A client certificate chain and its private key (PEM files), for Vault
    /// listeners that require one or for the `cert` auth method.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Also unwraps (and rewraps from) data keys wrapped under another Transit
    /// key on the same mount, by name, or under a key id this provider
    /// recorded earlier: a key id that differs only in its cluster id is
    /// taken as the same key on a cluster restored under a new id. Keys
    /// elsewhere are refused when the provider is built.
    pub fn allow_key(mut self, key: impl Into<String>) -> Self {
        self.allowed.push(key.into());
        self
    }

    /// How transient failures (throttling, a sealed server, 5xx, timeouts)
    /// are retried (default: [`RetryPolicy::default`], as for AWS KMS).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The TCP connect timeout (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The limit on one HTTP request (default 5 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The limit on one call, retries included (default 15 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The cluster id to record in key ids, instead of the one `sys/health`
    /// reports (for a server that hides it).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = Some(id.into());
        self
    }

    fn check_names(&self) -> Result<()> {
        if !valid_key_name(&self.key) {
            return Err(config(format!(
                "{:?} is not a Transit key name (letters, digits, _, - and .)",
                self.key
            )));
        }
        if self.mount.is_empty() || self.mount.contains(':') {
            return Err(config(format!(
                "{:?} is not a usable Transit mount (empty, or contains ':')",
                self.mount
            )));
        }
        if self.namespace.as_deref().is_some_and(|ns| ns.contains(':')) {
            return Err(config("a Vault namespace with ':' cannot be used"));
        }
        Ok(())
    }

    /// The allow-list entries as (key id, key name); the configured key first.
    fn allowed(&self, cluster: &str) -> Result<Vec<(String, String)>> {
        let ns = self.namespace.as_deref();
        let mut out = vec![(
            key_id_of(cluster, ns, &self.mount, &self.key),
            self.key.clone(),
        )];
        for entry in &self.allowed {
            let (id, name) = match entry.strip_prefix(KEY_ID_PREFIX) {
                Some(rest) => {
                    // <cluster>:<namespace>:<mount>:<name>
                    let parts: Vec<&str> = rest.splitn(4, ':').collect();
                    let [_, entry_ns, entry_mount, name] = parts[..] else {
                        return Err(config(format!("{entry:?} is not a Transit key id")));
                    };
                    if entry_ns != ns.unwrap_or("") || entry_mount != self.mount {
                        return Err(config(format!(
                            "allowed key {entry} is in another namespace or mount than this \
                             provider's: configure a provider for it"
                        )));
                    }
                    (entry.clone(), name.to_owned())
                }
                None => (key_id_of(cluster, ns, &self.mount, entry), entry.clone()),
            };
            if !valid_key_name(&name) {
                return Err(config(format!("{name:?} is not a Transit key name")));
            }
            if !out.iter().any(|(i, _)| *i == id) {
                out.push((id, name));
            }
        }
        Ok(out)
    }

    /// Connects, checks the server and the keys, and returns the provider.
    pub async fn build(self) -> Result<TransitProvider> {
        self.check_names()?;
        let auth = self
            .auth
            .clone()
            .ok_or_else(|| config("no Vault authentication: set a token or AppRole credentials"))?;
        let http = Http::new(
            &self.address,
            self.namespace.clone(),
            &self.tls,
            self.connect_timeout,
        )
        .map_err(|f| Error::from(ProviderError::new(f.kind, f.message)))?;
        if http.base().starts_with("http://") {
            let loopback = ["http://127.", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| http.base().starts_with(p));
            if !loopback {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    address = %http.base(),
                    "Vault address is http://: tokens and data keys cross the network in plaintext"
                );
            }
        }
        let session = match &auth {
            TransitAuth::Token(t) => Session::from_token(t.clone()),
            TransitAuth::AppRole { .. } => Session::from_token(Zeroizing::new(String::new())),
        };
        let mut provider = TransitProvider {
            http,
            auth,
            session: Mutex::new(session),
            login: tokio::sync::Mutex::new(()),
            namespace: self.namespace.clone(),
            mount: self.mount.clone(),
            key_name: self.key.clone(),
            key_id: String::new(),
            cluster_id: String::new(),
            allowed: Vec::new(),
            destinations: Mutex::new(HashMap::new()),
            retry: self.retry,
            attempt_timeout: self.attempt_timeout,
            operation_timeout: self.operation_timeout,
            counters: Counters::default(),
        };
        let health = provider.health().await?;
        if health.sealed {
            return Err(ProviderError::new(ProviderErrorKind::Sealed, "Vault is sealed").into());
        }
        let cluster = match self.cluster_id.clone().or(health.cluster_id) {
            Some(c) if !c.is_empty() && !c.contains(':') => c,
            _ => {
                return Err(config(
                    "sys/health reports no usable cluster id: set one with cluster_id()",
                ))
            }
        };
        if matches!(provider.auth, TransitAuth::AppRole { .. }) {
            provider.relogin(0).await?;
        }
        let allowed = self.allowed(&cluster)?;
        let mut checked: Vec<&str> = Vec::new();
        for (id, name) in &allowed {
            if !checked.contains(&name.as_str()) {
                provider.check_key(name, id).await?;
                checked.push(name);
            }
        }
        provider.key_id = allowed[0].0.clone();
        provider.cluster_id = cluster;
        provider.allowed = allowed;
        tracing::info!(
            target: AUDIT_TARGET,
            address = %provider.http.base(),
            namespace = provider.namespace.as_deref().unwrap_or(""),
            key_id = %provider.key_id,
            allowed_keys = ?provider.allowed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            auth = provider.auth.method(),
            "Transit key provider ready"
        );
        Ok(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_carry_credentials_or_another_scheme() {
        for bad in [
            "ftp://vault:8200",
            "vault:8200",
            "https://u:pw-SECRET@vault:8200",
        ] {
            let err = Http::new(bad, None, &TlsFiles::default(), DEFAULT_CONNECT_TIMEOUT)
                .err()
                .expect(bad);
            assert_eq!(err.kind, ProviderErrorKind::Config);
            assert!(!err.message.contains("SECRET"), "{}", err.message);
        }
        assert!(Http::new(
            "https://vault.example:8200/",
            None,
            &TlsFiles::default(),
            DEFAULT_CONNECT_TIMEOUT
        )
        .is_ok());
    }

    #[test]
    fn key_names_follow_vaults_rule() {
        assert!(valid_key_name("tenant-a.v2_x"));
        assert!(valid_key_name("k"));
        assert!(!valid_key_name(""));
        assert!(!valid_key_name("-k"));
        assert!(!valid_key_name("a/b"));
        assert!(!valid_key_name("a:b"));
    }

    #[test]
    fn allow_list_takes_names_and_own_ids() {
        let b = TransitProvider::builder("http://127.0.0.1:1", "main")
            .namespace("team/")
            .allow_key("old")
            .allow_key("vault-transit:previous-cluster:team:transit:main");
        let allowed = b.allowed("c1").unwrap();
        assert_eq!(
            allowed,
            vec![
                ("vault-transit:c1:team:transit:main".into(), "main".into()),
                ("vault-transit:c1:team:transit:old".into(), "old".into()),
                (
                    "vault-transit:previous-cluster:team:transit:main".into(),
                    "main".into()
                ),
            ]
        );
        let elsewhere = TransitProvider::builder("http://127.0.0.1:1", "main")
            .allow_key("vault-transit:c1::other-mount:main");
        assert!(elsewhere.allowed("c1").is_err());
    }
}
