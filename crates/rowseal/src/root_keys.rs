//! The root-keys file: named root keys at any provider, and which tenant uses
//! which. One format, read by applications ([`RootKeysConfig::build`]) and by
//! the `rowseal` tool (`--root-keys FILE`), so that both route a tenant to the
//! same key.
//!
//! ```toml
//! [root_keys.ours]
//! provider = "aws-kms"
//! key = "alias/rowseal-prod"
//! region = "eu-west-1"
//! replica_regions = ["eu-central-1"]   # multi-Region key replicas, in order
//! grant_tokens = []                    # for keys used through fresh grants
//!
//! [root_keys.acme]              # the customer's own Vault
//! provider = "vault-transit"
//! address = "https://vault.acme.example:8200"
//! key = "rowseal"
//! namespace = "acme"
//! approle_role_id = "0b5c4f0e-…"
//! approle_secret_id_file = "/run/secrets/acme-secret-id"
//! ca_file = "/etc/ssl/acme-vault-ca.pem"
//!
//! [root_keys.dev]
//! provider = "local"
//! keyring_file = "rowseal-local.keys"
//!
//! [routing]
//! default = "ours"
//! tenants = { "tenant-acme" = "acme" }
//! ```
//!
//! Secrets never sit in this file: Vault tokens and AppRole secret ids are
//! named by environment variable (`token_env`, `approle_secret_id_env`) or
//! file (`token_file`, `approle_secret_id_file`), AWS credentials come from
//! the standard AWS chain, and a local keyring from its file or
//! `ROWSEAL_LOCAL_KEYS`. Unknown keys are errors, and an error names the file
//! and line, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rowseal_core::{
    KeyProvider, LocalKeyProvider, ProviderError, ProviderErrorKind, Result, RootKeys,
};
use serde::Deserialize;

/// The environment variable that names the root-keys file, for applications
/// ([`RootKeysConfig::from_env`]) and the `rowseal` tool alike.
pub const ROOT_KEYS_ENV: &str = "ROWSEAL_ROOT_KEYS";

/// A parsed root-keys file. See the [module docs](self) for the format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKeysConfig {
    root_keys: BTreeMap<String, RootKeyConfig>,
    #[serde(default)]
    routing: Routing,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Routing {
    default: Option<String>,
    #[serde(default)]
    tenants: BTreeMap<String, String>,
}

/// One root key. Every provider's entries parse in every build, so that a
/// file is checked the same way everywhere; a build without a provider's
/// feature refuses to connect it (and never reads its fields).
#[cfg_attr(not(all(feature = "kms", feature = "vault")), allow(dead_code))]
// Parsed once at start-up, a handful of entries: boxing the large variant
// would only complicate the serde shape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "kebab-case", deny_unknown_fields)]
enum RootKeyConfig {
    Local {
        /// A keyring file; without it, `ROWSEAL_LOCAL_KEYS`.
        keyring_file: Option<PathBuf>,
    },
    AwsKms {
        key: String,
        region: Option<String>,
        endpoint: Option<String>,
        #[serde(default)]
        allow_keys: Vec<String>,
        #[serde(default)]
        replica_regions: Vec<String>,
        #[serde(default)]
        grant_tokens: Vec<String>,
    },
    VaultTransit {
        address: String,
        key: String,
        mount: Option<String>,
        namespace: Option<String>,
        token_env: Option<String>,
        token_file: Option<PathBuf>,
        approle_role_id: Option<String>,
        approle_secret_id_env: Option<String>,
        approle_secret_id_file: Option<PathBuf>,
        approle_mount: Option<String>,
        ca_file: Option<PathBuf>,
        client_cert: Option<PathBuf>,
        client_key: Option<PathBuf>,
        #[serde(default)]
        allow_keys: Vec<String>,
    },
}

fn config(reason: String) -> rowseal_core::Error {
    ProviderError::new(ProviderErrorKind::Config, reason).into()
}

/// A secret from a file (trimmed), zeroized when dropped.
#[cfg(feature = "vault")]
fn read_secret_file(what: &str, path: &Path) -> Result<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        config(format!(
            "cannot read the {what} file {}: {}",
            path.display(),
            e.kind()
        ))
    })?);
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

#[cfg(feature = "vault")]
fn read_secret_env(what: &str, var: &str) -> Result<zeroize::Zeroizing<String>> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| config(format!("the {what} variable {var} is not set")))
}

impl RootKeysConfig {
    /// Parses the text of a root-keys file (`origin` names it in errors).
    pub fn from_toml_str(origin: &str, text: &str) -> Result<Self> {
        toml::from_str::<RootKeysConfig>(text).map_err(|e| {
            // toml's Display quotes the offending line: say where and what,
            // never the value.
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ", line {}",
                        text.as_bytes()[..s.start.min(text.len())]
                            .iter()
                            .filter(|b| **b == b'\n')
                            .count()
                            + 1
                    )
                })
                .unwrap_or_default();
            let what = e.message().split(", found").next().unwrap_or("invalid");
            config(format!("root-keys file {origin}{line}: {what}"))
        })
    }

    /// Reads and parses a root-keys file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            config(format!(
                "cannot read the root-keys file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        Self::from_toml_str(&path.display().to_string(), &text)
    }

    /// The file named by `ROWSEAL_ROOT_KEYS`, the variable the `rowseal`
    /// tool reads too; `Ok(None)` when it is not set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(ROOT_KEYS_ENV) {
            Some(path) if !path.is_empty() => Self::from_file(path).map(Some),
            _ => Ok(None),
        }
    }

    /// The names of the configured root keys, in order.
    pub fn root_key_names(&self) -> impl Iterator<Item = &str> {
        self.root_keys.keys().map(String::as_str)
    }

    /// Connects every root key's provider (each checks its key at start) and
    /// returns the routing provider.
    pub async fn build(&self) -> Result<RootKeys> {
        let mut b = RootKeys::builder();
        for (name, key) in &self.root_keys {
            let provider = build_one(name, key).await.map_err(|e| match e {
                rowseal_core::Error::Provider(p) => rowseal_core::Error::Provider(
                    ProviderError::new(p.kind(), format!("root key {name:?}: {}", p)),
                ),
                other => other,
            })?;
            b = b.root_key(name.clone(), provider);
        }
        if let Some(d) = &self.routing.default {
            b = b.default_root_key(d.clone());
        }
        for (tenant, name) in &self.routing.tenants {
            b = b.route_tenant(tenant.clone(), name.clone());
        }
        b.build()
    }
}

#[allow(unused_variables)]
async fn build_one(name: &str, key: &RootKeyConfig) -> Result<Arc<dyn KeyProvider>> {
    match key {
        RootKeyConfig::Local { keyring_file } => Ok(Arc::new(match keyring_file {
            Some(path) => LocalKeyProvider::from_file(path)?,
            None => LocalKeyProvider::from_env()?,
        })),
        #[cfg(feature = "kms")]
        RootKeyConfig::AwsKms {
            key,
            region,
            endpoint,
            allow_keys,
            replica_regions,
            grant_tokens,
        } => {
            let mut b = rowseal_kms::AwsKmsProvider::builder(key.clone())
                .allow_keys(allow_keys.iter().cloned())
                .grant_tokens(grant_tokens.iter().cloned());
            if let Some(r) = region {
                b = b.region(r.clone());
            }
            if let Some(e) = endpoint {
                b = b.endpoint_url(e.clone());
            }
            for r in replica_regions {
                b = b.replica_region(r.clone());
            }
            Ok(Arc::new(b.build().await?))
        }
        #[cfg(feature = "vault")]
        RootKeyConfig::VaultTransit {
            address,
            key,
            mount,
            namespace,
            token_env,
            token_file,
            approle_role_id,
            approle_secret_id_env,
            approle_secret_id_file,
            approle_mount,
            ca_file,
            client_cert,
            client_key,
            allow_keys,
        } => {
            use rowseal_vault::{TransitAuth, TransitProvider};
            let auth = match (token_env, token_file, approle_role_id) {
                (Some(var), None, None) => {
                    TransitAuth::token(read_secret_env("token", var)?.as_str())
                }
                (None, Some(path), None) => {
                    TransitAuth::token(read_secret_file("token", path)?.as_str())
                }
                (None, None, Some(role_id)) => {
                    let secret = match (approle_secret_id_env, approle_secret_id_file) {
                        (Some(var), None) => read_secret_env("AppRole secret id", var)?,
                        (None, Some(path)) => read_secret_file("AppRole secret id", path)?,
                        _ => {
                            return Err(config(
                                "AppRole needs one of approle_secret_id_env and \
                                 approle_secret_id_file"
                                    .into(),
                            ))
                        }
                    };
                    let mut auth = TransitAuth::approle(role_id.clone(), secret.as_str());
                    if let Some(m) = approle_mount {
                        auth = auth.with_mount(m.clone());
                    }
                    auth
                }
                _ => {
                    return Err(config(
                        "set exactly one of token_env, token_file and approle_role_id".into(),
                    ))
                }
            };
            let mut b = TransitProvider::builder(address.clone(), key.clone()).auth(auth);
            if let Some(m) = mount {
                b = b.mount(m.clone());
            }
            if let Some(ns) = namespace {
                b = b.namespace(ns.clone());
            }
            if let Some(ca) = ca_file {
                b = b.ca_file(ca.clone());
            }
            match (client_cert, client_key) {
                (Some(c), Some(k)) => b = b.client_cert(c.clone(), k.clone()),
                (None, None) => {}
                _ => return Err(config("client_cert and client_key go together".into())),
            }
            for k in allow_keys {
                b = b.allow_key(k.clone());
            }
            Ok(Arc::new(b.build().await?))
        }
        #[allow(unreachable_patterns)]
        other => Err(config(format!(
            "this build of rowseal has no {} provider (enable the facade feature {})",
            match other {
                RootKeyConfig::AwsKms { .. } => "aws-kms",
                _ => "vault-transit",
            },
            match other {
                RootKeyConfig::AwsKms { .. } => "`kms`",
                _ => "`vault`",
            },
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file() {
        let text = r#"
[root_keys.ours]
provider = "aws-kms"
key = "alias/rowseal-prod"
region = "eu-west-1"

[root_keys.acme]
provider = "vault-transit"
address = "https://vault.acme.example:8200"
key = "rowseal"
namespace = "acme"
approle_role_id = "role"
approle_secret_id_file = "/run/secrets/acme-secret-id"

[root_keys.dev]
provider = "local"
keyring_file = "rowseal-local.keys"

[routing]
default = "ours"
tenants = { "tenant-acme" = "acme" }
"#;
        let cfg = RootKeysConfig::from_toml_str("keys.toml", text).unwrap();
        assert_eq!(
            cfg.root_key_names().collect::<Vec<_>>(),
            ["acme", "dev", "ours"]
        );
        assert_eq!(cfg.routing.tenants["tenant-acme"], "acme");
    }

    #[test]
    fn errors_name_the_line_never_the_value() {
        let text = "[root_keys.x]\nprovider = \"vault-transit\"\naddress = \"a\"\nkey = \"k\"\ntoken = \"hvs.SECRET\"\n";
        let err = RootKeysConfig::from_toml_str("keys.toml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.toml"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        let err = RootKeysConfig::from_toml_str("k", "[root_keys.x]\nprovider = \"gcp\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn builds_local_root_keys_and_routes() {
        let dir = std::env::temp_dir().join(format!("rowseal-rk-{:016x}", rand_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.keys");
        LocalKeyProvider::create_keyring_file(&file).unwrap();
        let text = format!(
            "[root_keys.a]\nprovider = \"local\"\nkeyring_file = \"{}\"\n[routing]\ndefault = \"a\"\ntenants = {{ t1 = \"a\" }}\n",
            file.display()
        );
        let cfg = RootKeysConfig::from_toml_str("k", &text).unwrap();
        let keys = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(cfg.build())
            .unwrap();
        assert_eq!(keys.root_key_for(Some("t1")).0, "a");
        let bad = text.replace("default = \"a\"", "default = \"b\"");
        let cfg = RootKeysConfig::from_toml_str("k", &bad).unwrap();
        assert!(tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(cfg.build())
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    }
}
