//! Where the data and the root key live, read from the environment.
//!
//! | variable | effect |
//! |---|---|
//! | `DATABASE_URL` | `postgres://…` (or `postgresql://…`): PostgreSQL; `sqlite://path`: that SQLite file; unset: `sqlite://rowseal-web.db` |
//! | `ROWSEAL_KMS_KEY_ID` | an AWS KMS key (ARN, id or alias) as root key, with the standard AWS configuration (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, …, `AWS_ENDPOINT_URL_KMS`); unset: a local keyring file |
//! | `ROWSEAL_KMS_ALLOWED_KEYS` | more KMS key ARNs (comma-separated) whose wrapped keys may be unwrapped besides `ROWSEAL_KMS_KEY_ID`'s, e.g. the previous root key until everything is rewrapped |
//! | `ROWSEAL_KMS_ENDPOINT` | an explicit KMS endpoint (wins over `AWS_ENDPOINT_URL_KMS`) |
//! | `ROWSEAL_LOCAL_KEY_FILE` | the local keyring file (default `rowseal-web.keys`, generated with mode 0600 if missing) |
//! | `ROWSEAL_WEB_ADDR` | the address to listen on (default `127.0.0.1:3000`) |
//! | `ROWSEAL_CRYPTO_THREADS` | threads that decrypt and encrypt large batches (a list of 512 rows or more), shared by all requests (default: one per core); with tokio's `TOKIO_WORKER_THREADS` (the runtime's workers, default one per core) it bounds the process's threads. `ROWSEAL_KEY_CACHE_MAX_ENTRIES` and `ROWSEAL_KEY_CACHE_TTL_SECS` size the key cache. Read by `Encryptor::builder().tuning_from_env()` |
//!
//! Nothing here is ever printed in full: the database URL may hold a
//! password, so [`DatabaseConfig`]'s `Display` shows only the kind.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default SQLite file when `DATABASE_URL` is unset.
pub const DEFAULT_SQLITE_FILE: &str = "rowseal-web.db";
/// The default local keyring file when no KMS key is named.
pub const DEFAULT_KEY_FILE: &str = "rowseal-web.keys";
/// The default listening address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// The application's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The database.
    pub database: DatabaseConfig,
    /// The root key.
    pub keys: KeyConfig,
    /// Where to listen.
    pub addr: SocketAddr,
}

/// The database to use.
#[derive(Clone)]
pub enum DatabaseConfig {
    /// PostgreSQL, by connection URL.
    Postgres(String),
    /// An SQLite file (created if missing).
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseConfig {
    // The URL may hold a password: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseConfig::Postgres(_) => f.write_str("Postgres(..)"),
            DatabaseConfig::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
        }
    }
}

impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseConfig::Postgres(_) => f.write_str("PostgreSQL"),
            DatabaseConfig::Sqlite(p) => write!(f, "SQLite file {}", p.display()),
        }
    }
}

/// The root key that wraps the tenant and blind-index keys.
#[derive(Clone, Debug)]
pub enum KeyConfig {
    /// An AWS KMS key.
    Kms {
        /// Key ARN, key id or alias.
        key_id: String,
        /// More key ARNs on the provider's allow-list (checked when the
        /// provider is built).
        allowed_keys: Vec<String>,
        /// The key's region (else the standard AWS configuration's).
        region: Option<String>,
        /// An explicit KMS endpoint (a local KMS-compatible server).
        endpoint: Option<String>,
    },
    /// A local keyring file, generated if missing (development only).
    LocalFile(PathBuf),
}

impl fmt::Display for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyConfig::Kms { key_id, .. } => write!(f, "AWS KMS key {key_id}"),
            KeyConfig::LocalFile(p) => write!(f, "local keyring {}", p.display()),
        }
    }
}

/// A configuration value that cannot be used. Names the variable, never its
/// value.
#[derive(Debug)]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the configuration through `var` (the environment, or a map in
    /// tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let database = match var("DATABASE_URL") {
            None => DatabaseConfig::Sqlite(PathBuf::from(DEFAULT_SQLITE_FILE)),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres(url)
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => {
                    DatabaseConfig::Sqlite(PathBuf::from(path.split('?').next().unwrap_or(path)))
                }
                _ => {
                    return Err(ConfigError {
                        variable: "DATABASE_URL",
                        reason: "expected postgres://… or sqlite://<file>",
                    })
                }
            },
        };
        let keys = match var("ROWSEAL_KMS_KEY_ID") {
            Some(key_id) => KeyConfig::Kms {
                key_id,
                allowed_keys: var("ROWSEAL_KMS_ALLOWED_KEYS")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|k| !k.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                region: var("AWS_REGION"),
                endpoint: var("ROWSEAL_KMS_ENDPOINT"),
            },
            None => KeyConfig::LocalFile(PathBuf::from(
                var("ROWSEAL_LOCAL_KEY_FILE").unwrap_or_else(|| DEFAULT_KEY_FILE.to_owned()),
            )),
        };
        let addr = var("ROWSEAL_WEB_ADDR")
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
            .parse()
            .map_err(|_| ConfigError {
                variable: "ROWSEAL_WEB_ADDR",
                reason: "expected an address like 127.0.0.1:3000",
            })?;
        Ok(Config {
            database,
            keys,
            addr,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_sqlite_and_a_local_keyring() {
        let c = from(&[]).unwrap();
        assert!(
            matches!(c.database, DatabaseConfig::Sqlite(ref p) if p == std::path::Path::new(DEFAULT_SQLITE_FILE))
        );
        assert!(
            matches!(c.keys, KeyConfig::LocalFile(ref p) if p == std::path::Path::new(DEFAULT_KEY_FILE))
        );
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
    }

    #[test]
    fn postgres_and_kms_when_named() {
        let c = from(&[
            ("DATABASE_URL", "postgres://app:s3cret@db/app"),
            ("ROWSEAL_KMS_KEY_ID", "alias/rowseal-web"),
            ("AWS_REGION", "eu-west-1"),
            (
                "ROWSEAL_KMS_ALLOWED_KEYS",
                "arn:aws:kms:eu-west-1:111122223333:key/a, arn:aws:kms:eu-west-1:111122223333:key/b",
            ),
        ])
        .unwrap();
        assert!(matches!(c.database, DatabaseConfig::Postgres(_)));
        // The password never shows.
        assert!(!format!("{:?} {}", c.database, c.database).contains("s3cret"));
        assert!(matches!(
            c.keys,
            KeyConfig::Kms { ref key_id, ref region, endpoint: None, ref allowed_keys }
                if key_id == "alias/rowseal-web" && region.as_deref() == Some("eu-west-1")
                    && allowed_keys == &[
                        "arn:aws:kms:eu-west-1:111122223333:key/a",
                        "arn:aws:kms:eu-west-1:111122223333:key/b",
                    ]
        ));
    }

    #[test]
    fn a_bad_url_names_the_variable_not_the_value() {
        let e = from(&[("DATABASE_URL", "mysql://root:pw@db/app")]).unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        assert!(!e.to_string().contains("pw@db"));
        assert!(from(&[("ROWSEAL_WEB_ADDR", "nowhere")]).is_err());
    }
}
