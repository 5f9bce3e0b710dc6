//! The command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rowseal: key rotation, re-encryption, verification, rewrap and
/// crypto-shredding for databases encrypted with rowseal.
///
/// Configuration comes from flags, then environment variables, then the
/// config file (`--config`). Output is JSON lines when stdout is not a
/// terminal (or with `--json`); on a terminal, a progress line with rate and
/// ETA. Exit codes: 0 ok, 1 rows failed, 2 usage, 3 configuration, 4
/// database, 5 key provider, 6 refused, 70 internal.
#[derive(Debug, Parser)]
#[command(name = "rowseal", version, max_term_width = 100)]
pub struct Cli {
    /// Connection, key provider and output options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML config file (keys: database_url, key_file, root_keys, kms_key_id,
    /// kms_allowed_keys, aws_region, kms_endpoint, kms_rate, batch_size,
    /// workers, max_rows_per_second).
    #[arg(long, global = true, env = "ROWSEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: postgres://, mysql:// (MariaDB too) or sqlite://.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Local keyring file (root keys, `v<N>:<base64>` per line). Without it
    /// and without a KMS key, the keyring is read from ROWSEAL_LOCAL_KEYS.
    #[arg(long, global = true, env = "ROWSEAL_LOCAL_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Root-keys file (TOML): named root keys at several providers (local,
    /// aws-kms, vault-transit) and which tenant uses which; the format
    /// applications read with `rowseal::root_keys` (docs/keys.md). Excludes
    /// --key-file and --kms-key-id.
    #[arg(long, global = true, env = "ROWSEAL_ROOT_KEYS")]
    pub root_keys: Option<PathBuf>,
    /// AWS KMS root key (ARN, key id or alias): use AWS KMS as key provider.
    #[arg(long, global = true, env = "ROWSEAL_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// Another KMS key (full key ARN) whose wrapped keys may be unwrapped and
    /// rewrapped from, besides --kms-key-id (repeatable, or comma-separated
    /// in the environment). Wrapped keys naming any other KMS key are
    /// refused: the database never chooses the root key. A multi-Region key
    /// also allows its replicas.
    #[arg(
        long = "kms-allow-key",
        value_name = "ARN",
        global = true,
        env = "ROWSEAL_KMS_ALLOWED_KEYS",
        value_delimiter = ','
    )]
    pub kms_allow_keys: Vec<String>,
    /// AWS region of the KMS key (else the standard AWS configuration).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// KMS endpoint URL (a local KMS-compatible server); the SDK also reads
    /// AWS_ENDPOINT_URL_KMS and AWS_ENDPOINT_URL.
    #[arg(long, global = true, env = "ROWSEAL_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Most key-provider (KMS) calls per second, for every command.
    #[arg(long, global = true, env = "ROWSEAL_KMS_RATE")]
    pub kms_rate: Option<f64>,
    /// JSON lines on stdout even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of the batch jobs.
#[derive(Debug, Args, Clone)]
pub struct JobArgs {
    /// Rows per batch (one transaction each).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Concurrent workers in this process (SQLite: always 1 writer).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Only these registered tables (repeatable); default: all.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Most rows per second this process writes (to spare a busy database).
    #[arg(long)]
    pub max_rows_per_second: Option<f64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade rowseal's own tables (rowseal_keys, rowseal_schema,
    /// rowseal_jobs): rowseal's migrations, recorded in rowseal_migrations.
    Init,
    /// Per registered table: rows per key mode and tenant-key version, rows
    /// still to rotate; root keys in use; running jobs.
    Status {
        /// Only these tables (repeatable).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Per tenant and root key: the provider, the key versions under it,
        /// and what applications last saw (last successful unwrap, last
        /// error), as they record it in rowseal_key_health.
        #[arg(long)]
        keys: bool,
    },
    /// Create a new tenant-key version and re-encrypt the rows under it.
    /// Batched, resumable (re-run the same command, or `--job ID`), safe
    /// while the application writes, and shareable by several processes.
    Rotate {
        /// One tenant.
        #[arg(long, conflicts_with = "all_tenants")]
        tenant: Option<String>,
        /// Every tenant that has a key.
        #[arg(long)]
        all_tenants: bool,
        /// Join or resume this job instead of starting one.
        #[arg(long)]
        job: Option<String>,
        /// Show what would be done; create no key, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Batch options.
        #[command(flatten)]
        job_args: JobArgs,
    },
    /// Open every row (key header commitment and every encrypted field) and
    /// report the primary keys of the rows that fail. Exit 1 on any failure.
    Verify {
        /// Batch options.
        #[command(flatten)]
        job_args: JobArgs,
    },
    /// Re-encrypt every wrapped tenant and index key (and the per-row data
    /// keys of kms-mode tables) under another root key, with the provider's
    /// ReEncrypt: no plaintext key leaves the provider.
    Rewrap {
        /// The destination root key: a KMS key ARN / id / alias, a Transit key
        /// name or id, `local:v<N>`, or (with --root-keys) a root key's name.
        #[arg(long)]
        to: String,
        /// Only this tenant's keys (repeatable): move a tenant to another
        /// root key; route it there in the root-keys file too, so that its
        /// new keys follow.
        #[arg(long = "tenant", value_name = "TENANT")]
        tenants: Vec<String>,
        /// Only keys now under this root key (a name in the root-keys file,
        /// or a key id): move every tenant off a provider.
        #[arg(long)]
        from: Option<String>,
        /// Also rewrap keys already under KEY: after a rotation inside the
        /// key service that keeps the key id (Vault/OpenBao Transit key
        /// versions), so that old versions can be retired. Each run rewraps
        /// every selected key again (one provider call per key).
        #[arg(long)]
        in_place: bool,
        /// Show what would be done; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Batch options.
        #[command(flatten)]
        job_args: JobArgs,
    },
    /// The way back to plaintext: copy the decrypted values of an encrypted
    /// column into a plaintext column you created (resumable; the encrypted
    /// column is left in place).
    DecryptColumn {
        /// The registered table.
        #[arg(long)]
        table: String,
        /// The encrypted column.
        #[arg(long)]
        column: String,
        /// The plaintext column to fill (create it first, with the type of
        /// the values).
        #[arg(long)]
        into: String,
        /// Count the values to decrypt; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rows per batch (one transaction each).
        #[arg(long)]
        batch_size: Option<usize>,
    },
    /// Encrypt the values still in a legacy plaintext column (a field
    /// declared with `plaintext_column`): seal each into the ciphertext
    /// column, fill its blind indexes, set the legacy column to NULL.
    /// Batched, resumable (run the same command again), safe while the
    /// application writes, shareable by several processes.
    EncryptColumn {
        /// The registered table.
        #[arg(long)]
        table: String,
        /// Only this field (its plaintext or its ciphertext column); default:
        /// every field of the table with a plaintext column.
        #[arg(long)]
        column: Option<String>,
        /// Count the values to encrypt; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rows per batch (one transaction each).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Concurrent workers in this process (SQLite: always 1 writer).
        #[arg(long)]
        workers: Option<usize>,
        /// Most rows per second this process writes.
        #[arg(long)]
        max_rows_per_second: Option<f64>,
    },
    /// Rotate blind-index keys and rebuild the blind indexes under the new
    /// version, without downtime: the new version becomes pending (each
    /// application process then writes and queries both versions), the job
    /// waits one cache lifetime, backfills the rows written before, then
    /// promotes the new version and retires the old one. Resumable (run the
    /// same command again); safe while the application writes.
    Reindex {
        /// Only this tenant's index key; default: every tenant with rows in a
        /// registered table, and the global key if a global index exists.
        #[arg(long)]
        tenant: Option<String>,
        /// Do not rotate: only fill the index values missing under the
        /// current version (rows written before an index existed).
        #[arg(long)]
        backfill_only: bool,
        /// Seconds to wait after the new version becomes pending, for every
        /// application's key cache to see it: at least the applications'
        /// cache lifetime (the library's default is 300).
        #[arg(long, default_value_t = 300)]
        cache_ttl: u64,
        /// Count the rows to index; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Batch size, rate limit, and (with --backfill-only) --table.
        #[command(flatten)]
        job_args: JobArgs,
    },
    /// Crypto-shred a tenant: destroy its tenant and index keys (and wipe the
    /// per-row wrapped data keys of its kms-mode rows). Irreversible.
    Shred {
        /// The tenant to destroy.
        #[arg(long)]
        tenant: String,
        /// Confirmation: must repeat the tenant id. Without it, rowseal asks
        /// on a terminal and refuses otherwise.
        #[arg(long, value_name = "TENANT")]
        yes_destroy_tenant: Option<String>,
        /// Show what would be destroyed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl Command {
    /// The batch options of the command (`None` for the commands that run no
    /// batch job), merged with the config file by
    /// [`Settings`](crate::config::Settings). The one place that maps the
    /// commands to their batch options: `rowseal` and
    /// [`check_config`](crate::check_config) both go through it.
    pub fn job_args(&self) -> Option<JobArgs> {
        match self {
            Command::Rotate { job_args, .. }
            | Command::Verify { job_args }
            | Command::Rewrap { job_args, .. }
            | Command::Reindex { job_args, .. } => Some(job_args.clone()),
            Command::DecryptColumn { batch_size, .. } => Some(JobArgs {
                batch_size: *batch_size,
                workers: None,
                tables: Vec::new(),
                max_rows_per_second: None,
            }),
            Command::EncryptColumn {
                batch_size,
                workers,
                max_rows_per_second,
                ..
            } => Some(JobArgs {
                batch_size: *batch_size,
                workers: *workers,
                tables: Vec::new(),
                max_rows_per_second: *max_rows_per_second,
            }),
            Command::Init | Command::Status { .. } | Command::Shred { .. } => None,
        }
    }
}
