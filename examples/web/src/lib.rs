//! rowseal in a multi-tenant REST API: clinics (tenants) keep patients and
//! their medical records; names, e-mails, SSNs, birth dates and notes are
//! encrypted per row, bound to the clinic and the row, and patients can be
//! looked up by e-mail and SSN through blind indexes.
//!
//! - [`config`]: PostgreSQL and an AWS KMS key when the environment names
//!   them, else an SQLite file and a generated local keyring.
//! - [`models`]: the encrypted models (tenants are UUIDs) and the JSON views.
//! - [`schema`]: the tables and indexes, created at start-up.
//! - [`queries`]: the app's own reads, `sqlx::query_as!` into the sealed row
//!   types, checked at compile time (offline, from the committed `.sqlx/`).
//! - [`routes`]: the endpoints; the tenant comes from the `X-Tenant-Id`
//!   header (a real application takes it from its authentication instead).
//! - [`error`]: HTTP statuses and JSON error bodies that never hold a value.
//! - [`metrics`]: `GET /metrics`, rowseal's metrics in the Prometheus text
//!   format.
//!
//! See the example's README for the endpoints and curl commands.

pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod queries;
pub mod routes;
pub mod schema;

use std::fmt;
use std::sync::Arc;

use rowseal::sqlx::postgres::{PgPool, PgPoolOptions};
use rowseal::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use rowseal::{Encryptor, KeyProvider, KeyStore, LocalKeyProvider, SqlxKeyStore};

pub use config::{Config, DatabaseConfig, KeyConfig};
pub use error::ApiError;

/// The database pool: the same code runs on either.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$DB` to its sqlx
/// database type.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident, $DB:ident| $body:expr) => {
        match $db {
            $crate::Db::Postgres($pool) => {
                #[allow(dead_code)]
                type $DB = ::rowseal::sqlx::Postgres;
                $body
            }
            $crate::Db::Sqlite($pool) => {
                #[allow(dead_code)]
                type $DB = ::rowseal::sqlx::Sqlite;
                $body
            }
        }
    };
}

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// rowseal: the key hierarchy (with its key cache) and the encrypted
    /// operations.
    pub rowseal: Encryptor,
    /// Admission to the lists' database reads: at most half the runtime's
    /// threads (at least one) decode a list's rows at once, so that a burst
    /// of large lists leaves a thread free for every other request
    /// (`/health` included). sqlx decodes rows on the runtime's thread,
    /// thousands per poll when they are already buffered; the lists' crypto
    /// and JSON run on rowseal's crypto pool, outside this bound.
    pub list_reads: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Permits of [`AppState::list_reads`]: half the current runtime's worker
/// threads, at least one.
pub fn list_read_permits() -> usize {
    let workers = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1);
    (workers / 2).max(1)
}

/// Start-up failed. Never quotes the database URL or key material.
#[derive(Debug)]
pub enum StartupError {
    /// The database could not be opened or prepared.
    Database(rowseal::sqlx::Error),
    /// rowseal failed: its tables or the models' tables could not be
    /// created, or the root key could not be loaded (keyring file, KMS key).
    /// The error's own line says which.
    Rowseal(rowseal::Error),
    /// This build has no queries for the configured database (built without
    /// its cargo feature, `sqlite` or `postgres`).
    NotBuilt(&'static str),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Database(e) => write!(f, "database: {e}"),
            StartupError::Rowseal(e) => write!(f, "{e}"),
            StartupError::NotBuilt(db) => write!(
                f,
                "this build has no {db} queries: build with its cargo feature"
            ),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<rowseal::sqlx::Error> for StartupError {
    fn from(e: rowseal::sqlx::Error) -> Self {
        StartupError::Database(e)
    }
}

impl From<rowseal::Error> for StartupError {
    fn from(e: rowseal::Error) -> Self {
        StartupError::Rowseal(e)
    }
}

/// Opens the database, creates rowseal's tables, the models' tables and the
/// app's indexes if they do not exist (and registers the tables for the
/// `rowseal` command-line tool: [`schema::create`]), loads the root key, and
/// returns the state the routes need.
pub async fn connect(config: &Config) -> Result<AppState, StartupError> {
    // Each database's queries are compiled with its cargo feature.
    match &config.database {
        DatabaseConfig::Postgres(_) if !cfg!(feature = "postgres") => {
            return Err(StartupError::NotBuilt("PostgreSQL"));
        }
        DatabaseConfig::Sqlite(_) if !cfg!(feature = "sqlite") => {
            return Err(StartupError::NotBuilt("SQLite"));
        }
        _ => {}
    }
    let db = match &config.database {
        DatabaseConfig::Postgres(url) => Db::Postgres(
            PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect(url)
                .await?,
        ),
        DatabaseConfig::Sqlite(path) => Db::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect_with(
                    SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true)
                        .journal_mode(rowseal::sqlx::sqlite::SqliteJournalMode::Wal)
                        .busy_timeout(std::time::Duration::from_secs(5)),
                )
                .await?,
        ),
    };
    with_db!(&db, |pool, DB| schema::create::<DB>(pool).await?);
    let provider = key_provider(&config.keys).await?;
    // Wrapped tenant and index keys live in rowseal_keys, beside the data.
    let store: Arc<dyn KeyStore> =
        with_db!(&db, |pool, DB| Arc::new(SqlxKeyStore::new(pool.clone()))
            as Arc<dyn KeyStore>);
    // The key cache and the crypto pool's threads from the environment
    // (`ROWSEAL_CRYPTO_THREADS`, `ROWSEAL_KEY_CACHE_MAX_ENTRIES`,
    // `ROWSEAL_KEY_CACHE_TTL_SECS`; see [`config`]).
    let rowseal = Encryptor::builder()
        .shared_provider(provider)
        .shared_key_store(store)
        .tuning_from_env()?
        .build()?;
    Ok(AppState {
        db,
        rowseal,
        list_reads: std::sync::Arc::new(tokio::sync::Semaphore::new(list_read_permits())),
    })
}

async fn key_provider(keys: &KeyConfig) -> Result<Arc<dyn KeyProvider>, rowseal::Error> {
    match keys {
        KeyConfig::Kms {
            key_id,
            allowed_keys,
            region,
            endpoint,
        } => {
            // Wrapped keys naming any other KMS key are refused: the
            // database never chooses the root key.
            let mut builder = rowseal::kms::AwsKmsProvider::builder(key_id.clone())
                .allow_keys(allowed_keys.iter().cloned());
            if let Some(r) = region {
                builder = builder.region(r.clone());
            }
            if let Some(e) = endpoint {
                builder = builder.endpoint_url(e.clone());
            }
            // Resolves the key (DescribeKey): a wrong key fails here, at
            // start-up, not at the first request.
            Ok(Arc::new(builder.build().await?))
        }
        KeyConfig::LocalFile(path) => {
            if !path.exists() {
                LocalKeyProvider::create_keyring_file(path)?;
            }
            Ok(Arc::new(LocalKeyProvider::from_file(path)?))
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
