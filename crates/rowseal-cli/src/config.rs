//! Settings: flags, then environment (both through clap), then the optional
//! TOML config file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::cli::{Cli, GlobalArgs, JobArgs};
use crate::db::Kind;
use crate::error::{CliError, Result};

/// The config file. Every key is optional; flags and environment win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    database_url: Option<String>,
    key_file: Option<PathBuf>,
    root_keys: Option<PathBuf>,
    kms_key_id: Option<String>,
    kms_allowed_keys: Option<Vec<String>>,
    aws_region: Option<String>,
    kms_endpoint: Option<String>,
    kms_rate: Option<f64>,
    batch_size: Option<usize>,
    workers: Option<usize>,
    max_rows_per_second: Option<f64>,
}

impl FileConfig {
    /// Reads and parses the config file at `path` (`None`: no config file,
    /// every key unset).
    pub fn read(path: Option<&std::path::Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::config(format!(
                "cannot read config file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        Self::parse(path, &text)
    }

    /// Parses a config file's text (`path` only names it in errors).
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self> {
        toml::from_str::<FileConfig>(text).map_err(|e| {
            // toml's Display quotes the offending line, and its message
            // quotes string values ("invalid type: string \"postgres://u:pw@
            // ...\", expected usize"); a config file may hold a database
            // password, so say where and what, never the value.
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
            CliError::config(format!(
                "invalid config file {}{line}: {}",
                path.display(),
                redact_strings(e.message())
            ))
        })
    }
}

/// `message` with the contents of every double-quoted string replaced by
/// `…` (an unterminated one runs to the end).
fn redact_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            out.push('…');
            let mut escaped = false;
            for c in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    out.push('"');
                    break;
                }
            }
        }
    }
    out
}

/// Where root keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A local keyring file.
    LocalFile(PathBuf),
    /// The local keyring from `ROWSEAL_LOCAL_KEYS` / `ROWSEAL_LOCAL_KEY_FILE`.
    LocalEnv,
    /// A root-keys file: several root keys, routed per tenant.
    RootKeys(PathBuf),
    /// AWS KMS.
    Kms {
        key_id: String,
        /// More KMS key ARNs on the provider's allow-list (the configured
        /// key is always on it).
        allowed_keys: Vec<String>,
        region: Option<String>,
        endpoint: Option<String>,
    },
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<String>,
    pub keys: KeySource,
    pub kms_rate: Option<f64>,
    pub batch_size: usize,
    pub workers: usize,
    pub max_rows_per_second: Option<f64>,
    pub json: bool,
}

/// Default rows per batch.
pub const DEFAULT_BATCH: usize = 500;

impl Settings {
    /// The settings of a command line: its flags and environment over the
    /// config file `file`, checked. `rowseal` and
    /// [`check_config`](crate::check_config) both resolve settings here.
    pub fn of(cli: &Cli, file: FileConfig) -> Result<Self> {
        Self::merge(&cli.global, cli.command.job_args().as_ref(), file)
    }

    /// The database to connect to: its kind and the URL as sqlx wants it.
    /// An error when none is configured or its scheme is not supported (the
    /// URL is never echoed).
    pub fn database(&self) -> Result<(Kind, String)> {
        let url = self.database_url.as_deref().ok_or_else(|| {
            CliError::config(
                "no database: set DATABASE_URL, --database-url or database_url in the config file",
            )
        })?;
        crate::db::kind(url)
    }

    /// Merges flags/environment with an already parsed config file, and
    /// checks the values.
    fn merge(g: &GlobalArgs, jobs: Option<&JobArgs>, file: FileConfig) -> Result<Self> {
        let kms_key_id = g.kms_key_id.clone().or(file.kms_key_id);
        // Flags (or the environment) replace the config file's list, as for
        // every other key; the two are not merged.
        let (allowed_keys, source) = if g.kms_allow_keys.is_empty() {
            (
                file.kms_allowed_keys.unwrap_or_default(),
                "kms_allowed_keys entry",
            )
        } else {
            (g.kms_allow_keys.clone(), "--kms-allow-key value")
        };
        for (i, key) in allowed_keys.iter().enumerate() {
            // Said by position, never quoted: like any config value it could
            // be a misplaced database URL with its password.
            if rowseal_kms::check_allowed_key(key).is_err() {
                return Err(CliError::config(format!(
                    "{source} {} is not a KMS key ARN \
                     (arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID): wrapped keys record the \
                     key ARN, so an alias or a bare key id would never match",
                    i + 1
                )));
            }
        }
        let root_keys = g.root_keys.clone().or(file.root_keys);
        let key_file = g.key_file.clone().or(file.key_file);
        if root_keys.is_some() && (kms_key_id.is_some() || key_file.is_some()) {
            return Err(CliError::config(
                "root_keys (--root-keys) names every root key: do not set key_file or \
                 kms_key_id with it",
            ));
        }
        let keys = match kms_key_id {
            _ if root_keys.is_some() => {
                if !allowed_keys.is_empty() {
                    return Err(CliError::config(
                        "with root_keys, allowed keys go in the root-keys file (allow_keys)",
                    ));
                }
                KeySource::RootKeys(root_keys.clone().unwrap_or_default())
            }
            Some(key_id) => KeySource::Kms {
                key_id,
                allowed_keys,
                region: g.aws_region.clone().or(file.aws_region),
                endpoint: g.kms_endpoint.clone().or(file.kms_endpoint),
            },
            None if !allowed_keys.is_empty() => {
                return Err(CliError::config(
                    "kms_allowed_keys (--kms-allow-key) is for AWS KMS: set kms_key_id \
                     (--kms-key-id) too",
                ))
            }
            None => match key_file {
                Some(p) => KeySource::LocalFile(p),
                None => KeySource::LocalEnv,
            },
        };
        let kms_rate = g.kms_rate.or(file.kms_rate);
        if let Some(r) = kms_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(CliError::config("kms_rate must be a positive number"));
            }
        }
        let batch_size = jobs
            .and_then(|j| j.batch_size)
            .or(file.batch_size)
            .unwrap_or(DEFAULT_BATCH);
        if batch_size == 0 || batch_size > 10_000 {
            return Err(CliError::config("batch size must be between 1 and 10000"));
        }
        let workers = jobs.and_then(|j| j.workers).or(file.workers).unwrap_or(1);
        if workers == 0 || workers > 64 {
            return Err(CliError::config("workers must be between 1 and 64"));
        }
        let max_rows_per_second = jobs
            .and_then(|j| j.max_rows_per_second)
            .or(file.max_rows_per_second);
        if let Some(r) = max_rows_per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(CliError::config(
                    "max_rows_per_second must be a positive number",
                ));
            }
        }
        let json = g.json || !std::io::IsTerminal::is_terminal(&std::io::stdout());
        Ok(Settings {
            database_url: g.database_url.clone().or(file.database_url),
            keys,
            kms_rate,
            batch_size,
            workers,
            max_rows_per_second,
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_never_quote_string_values() {
        let path = std::path::Path::new("rowseal.toml");
        for text in [
            "workers = \"postgres://u:pw-SECRET@h/d\"\n",
            "batch_size = \"\"\"\ndatabase_url = \"postgres://u:pw-SECRET@h/d\"\n\"\"\"\n",
            "database_url = \"postgres://u:pw-SECRET@h/d\"\nworkers = [\"x\\\"pw-SECRET\"]\n",
            "kms_rate = 'pw-SECRET'\n",
        ] {
            let e = FileConfig::parse(path, text).expect_err(text);
            assert!(!e.message.contains("pw-SECRET"), "{}", e.message);
            assert!(
                e.message
                    .starts_with("invalid config file rowseal.toml, line "),
                "{}",
                e.message
            );
        }
        assert_eq!(redact_strings(r#"a "b\"c" d "e"#), r#"a "…" d "…"#);
    }
}
