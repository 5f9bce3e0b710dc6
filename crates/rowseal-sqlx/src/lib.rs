//! rowseal's sqlx layer: models whose fields are encrypted per row, read and
//! written through sqlx on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! Most applications use it through the `rowseal` facade. The pieces:
//! - [`Encrypted`], implemented by `#[derive(Encrypted)]` (feature `derive`);
//! - [`Encryptor`]: insert, insert many (one round trip per batch), fetch by
//!   primary key within a tenant, update a row or chosen fields, delete, and
//!   decrypt the rows of your own queries (`fetch_all`, `fetch_optional`, a
//!   bounded-memory stream), large batches on the shared [`CryptoPool`];
//! - [`SqlxKeyStore`]: the key store over the `rowseal_keys` table;
//! - [`schema`]: rowseal's own tables, the DDL of a model's table, and the
//!   schema registry.
//!
//! # A model
//! ```ignore
//! #[derive(Encrypted)]
//! #[rowseal(table = "patients", record_type = "patient", tenant = tenant_id,
//!           primary_key = id, key_mode = "derived", bind_primary_key)]
//! struct Patient {
//!     id: uuid::Uuid,
//!     tenant_id: String,
//!     #[rowseal(encrypt)]
//!     name: String,
//!     #[rowseal(encrypt, column = "dob")]
//!     birth_date: Option<chrono::NaiveDate>,
//!     visits: i64,
//! }
//! ```
//! Container attributes: `table` (required), `record_type` (default: the
//! struct name in snake case), `tenant` and `primary_key` (required: field
//! names), `key_mode` (`"derived"`, the default, or `"kms"`),
//! `bind_primary_key` (bind each row's primary key into its ciphertexts; the
//! key must then be chosen by the application, not a database serial), and
//! `crate = "path"` to name this crate's path if it is renamed. Field
//! attributes: `encrypt`, `column = "name"`, and `json` (with `encrypt`: any
//! `Serialize + DeserializeOwned` type, JSON-encoded),
//! `plaintext_column = "name"` (with `encrypt`: the legacy plaintext column
//! the field migrates from, see below), `blind_index(...)`, and
//! `sql_type = "INTEGER"` (a plain field of any type sqlx encodes and
//! decodes on every enabled database — a `sqlx::Type` enum or newtype, an
//! `Option` of one — passed through untouched, in a column of that SQL
//! type; see [`PassthroughField`]; add `database = "postgres"` (or
//! `"mysql"`, `"sqlite"`) for a type only that database has, such as a
//! PostgreSQL array, enum type or `Decimal`),
//! `generated` (a plain column the database fills: an identity primary key,
//! a `DEFAULT now()` timestamp, or `generated = "<SQL default>"`; rowseal
//! never writes it, and [`Encryptor::insert_returning`] reads it back); on
//! the struct, `compound_index(...)`.
//!
//! # Partial views
//! `#[rowseal(partial_of = Patient)]` on a struct of some of `Patient`'s
//! fields (same names and types; `encrypt`/`json` as `Patient` has them,
//! checked at compile time) makes a read-only view: [`Encryptor::fetch`],
//! `fetch_all`, `fetch_stream` and `decrypt_*` select and decrypt only its
//! fields, and only whether each other encrypted field is present (the row
//! key binds the set). It implements [`ReadModel`], not [`Encrypted`]: it
//! can never be written.
//!
//! # Sealed rows: your own queries
//! The derive also generates `<Model>Sealed`, the row as stored (one field
//! per column; encrypted ones as their bytes), which implements
//! `sqlx::FromRow` and fits `sqlx::query_as!`; [`Encryptor::open`] and
//! [`Encryptor::open_all`] decrypt it for one tenant. See
//! `docs/own-queries.md`.
//!
//! # Adopting a table of plaintext rows
//! Mark each field `#[rowseal(encrypt, column = "email_ct", plaintext_column
//! = "email")]`, run [`schema::adopt_table_sql`] once (it adds rowseal's
//! columns to the existing table, all nullable) and register the model.
//! Reads then return the ciphertext when present, else the legacy column;
//! writes encrypt and set the legacy column to NULL; `rowseal
//! encrypt-column` encrypts the rest. Legacy rows are found by blind-index
//! lookups once encrypted. See `docs/cli.md`.
//!
//! # Blind indexes
//! ```ignore
//! #[derive(Encrypted)]
//! #[rowseal(table = "users", record_type = "user", tenant = tenant_id, primary_key = id,
//!           compound_index(name = "name_city_idx", fields(last_name, city),
//!                          bits = 32, normalize = "trim,lowercase"))]
//! struct User {
//!     id: i64,
//!     tenant_id: String,
//!     #[rowseal(encrypt,
//!               blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase", unique),
//!               blind_index(name = "login_idx", column = "login_bidx", bits = 64,
//!                           normalize = "trim,lowercase", scope = "global"))]
//!     email: String,
//!     #[rowseal(encrypt, blind_index(name = "ssn_idx", bits = 16, normalize = "digits"))]
//!     ssn: Option<String>,
//!     #[rowseal(encrypt)] last_name: String,
//!     #[rowseal(encrypt)] city: String,
//! }
//!
//! let users = User::find_by_email(&enc, &pool, "acme", " Ada@Example.com").await?;
//! let users = User::find_by_email_in(&enc, &pool, "acme", &[["a@x.com"], ["b@x.com"]]).await?;
//! let users = User::find_by_login(&enc, &pool, "ada@example.com").await?;   // global: no tenant
//! let users = User::find_by_name_city(&enc, &pool, "acme", "Lovelace", "London").await?;
//! // Your own query: bind the index value (an i64 up to 64 bits, else bytes).
//! let v = enc.blind_index_value::<User>("email_idx", "acme", &["ada@example.com"]).await?;
//! // Bounded: at most 10 true matches, ordered by a plain column, with a condition.
//! let opts = Lookup::new().limit(10).order_by("id", Order::Desc).filter("id > {}", vec![Value::I64(7)]);
//! let users = User::find_by_ssn_with(&enc, &pool, "acme", "123-45-6789", &opts).await?;
//! let n: u64 = User::count_by_ssn(&enc, &pool, "acme", "123-45-6789").await?;    // exact
//! let any: bool = User::exists_by_email(&enc, &pool, "acme", "ada@example.com").await?;
//! let some: Vec<User> = enc.fetch_many(&pool, "acme", &[1, 2, 3]).await?;      // one statement per chunk
//! // The index condition in your own SQL, and the re-check after decryption.
//! let cond = enc.index_condition::<User, Postgres>(Some("acme"), "ssn_idx", &[&["123-45-6789"]], 2).await?;
//! ```
//! Each index is two columns: the truncated HMAC-SHA256 of the normalized
//! value (named after the index, or `column = "..."`) and `<column>_kv`, the
//! index-key version. Lookups decrypt the candidate rows and drop those whose
//! normalized fields do not match (false positives of a truncated index). A
//! `unique` index makes the database reject duplicates, reported as
//! [`Error::UniqueViolation`]. [`Encryptor::find_by`] is the generic lookup
//! behind the generated methods; [`Encryptor::blind_index_values`] gives the
//! values to bind while an index key is being rotated; and
//! [`Encryptor::reindex_batch`] rebuilds index columns after
//! `rotate_index_key` (or for rows from before the index).
//! [`Encryptor::find_by_with`] bounds a lookup with a [`Lookup`] (a limit
//! that counts true matches, reading candidates page by page until enough
//! survive the false-positive check; an [`Order`] over plain columns;
//! conditions of your own); [`Encryptor::count_by`] and
//! [`Encryptor::exists_by`] are exact (they decrypt the candidates);
//! [`Encryptor::fetch_many`] reads many primary keys in one statement per
//! chunk; and [`Encryptor::index_condition`] gives the lookup's SQL
//! condition and binds for your own query, with the re-check
//! ([`IndexCondition::retain_matches`]). See `docs/blind-indexes.md` for what an index
//! reveals, choosing bits and scope, and index-key rotation.
//!
//! Each encrypted field is its own bytes column holding the field envelope;
//! NULL (`None`) stays NULL and is not encrypted. Each row also has
//! `rowseal_header` (its key header) and `rowseal_key_version`. The value
//! encoding before encryption is described in [`encoding`].
//!
//! # Using it
//! ```ignore
//! use std::sync::Arc;
//! use rowseal_core::{KeyHierarchy, LocalKeyProvider};
//! use rowseal_sqlx::{schema, Encryptor, SqlxKeyStore};
//!
//! schema::install(&pool).await?;                       // rowseal_keys, rowseal_schema, rowseal_jobs
//! schema::create_table::<Patient, _>(&pool).await?;    // or create_table_sql::<Patient, Postgres>()
//! schema::register::<Patient, _>(&pool).await?;        // for the command-line tool
//!
//! let keys = KeyHierarchy::new(Arc::new(LocalKeyProvider::from_env()?),
//!                              Arc::new(SqlxKeyStore::new(pool.clone())));
//! let enc = Encryptor::new(Arc::new(keys));
//! enc.insert(&pool, &patient).await?;
//! enc.insert_many(&mut tx, &patients).await?;          // one round trip per batch
//! let p: Option<Patient> = enc.fetch(&pool, "tenant-1", &id).await?;
//! enc.update_fields(&pool, &p, &["name"]).await?;
//! let sql = format!("SELECT {} FROM patients WHERE tenant_id = $1 AND visits > $2",
//!                   Encryptor::select_list::<Patient, Postgres>());
//! // Every row must belong to the tenant named (TenantScope::Any to opt out):
//! let q = sqlx::query(&sql).bind("tenant-1").bind(3);
//! let rows: Vec<Patient> = enc.fetch_all("tenant-1", q, &pool).await?;
//! let q = sqlx::query(&sql).bind("tenant-1").bind(3);
//! let mut stream = enc.fetch_stream::<Patient, _, _>("tenant-1", q, &pool);
//! ```
//!
//! # Performance
//! Batches use the core's fast path: the tenant key is fetched once per
//! tenant and batch, then each row costs one row-key derivation and one AEAD
//! operation per encrypted field, with no key-provider call. `insert_many`
//! seals the next batch while the database inserts the current one;
//! `fetch_all` and `fetch_stream` decrypt one chunk while the next chunk
//! arrives. Batches of [`DEFAULT_PARALLEL_THRESHOLD`] rows or more are sealed
//! and opened on one shared, bounded [`CryptoPool`] (one thread per core by
//! default; [`Encryptor::with_threads`], [`Encryptor::with_crypto_pool`]),
//! awaited without blocking the async runtime's thread: no thread is started
//! per call, whatever the number of requests in flight. Smaller batches stay
//! on the calling thread.
//!
//! # Features
//! `postgres`, `mysql`, `sqlite` (the sqlx drivers), `uuid`, `chrono`, `time`,
//! `json` (field types), `derive` (default).
//!
//! # Tests
//! The same suite runs on each database (each test makes and drops its own
//! database; an unreachable server is a loud skip, or a failure when
//! `CI=true`):
//! ```text
//! cargo test -p rowseal-sqlx --features sqlite,uuid,chrono,time,json   --test sqlite
//! cargo test -p rowseal-sqlx --features postgres,uuid,chrono,time,json --test postgres
//! cargo test -p rowseal-sqlx --features mysql,uuid,chrono,time,json    --test mysql
//! cargo test -p rowseal-sqlx --test compile_fail
//! ```
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`),
//! `ROWSEAL_TEST_POSTGRES_SOCKET` (default `/var/run/postgresql`),
//! `ROWSEAL_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).

mod backend;
mod blind;
pub mod encoding;
mod encryptor;
mod error;
mod index_source;
mod keystore;
mod layout;
mod lookup_options;
pub mod migrate;
mod model;
pub mod schema;
mod sealed;
mod telemetry;
mod tenant_scope;
mod value;

#[doc(hidden)]
pub use backend::{AnyArguments, AnyRow, OnMySql, OnPostgres, OnSqlite};
pub use backend::{Backend, DbRow};
pub use blind::IndexCondition;
pub use encoding::{DecodedValue, EncryptedField, EncryptedValue, ValueType};
pub use encryptor::{
    check_row_format, CryptoPool, Encryptor, EncryptorBuilder, CACHE_MAX_ENTRIES_ENV,
    CACHE_TTL_SECS_ENV, CRYPTO_THREADS_ENV, DEFAULT_PARALLEL_THRESHOLD,
    DEFAULT_PROVIDER_CONCURRENCY, DEFAULT_STREAM_CHUNK, KMS_ALLOWED_KEYS_ENV, KMS_ENDPOINT_ENV,
    KMS_KEY_ID_ENV, MAX_STATEMENT_BYTES,
};
pub use error::{Error, Result};
pub use index_source::IndexSource;
pub use keystore::SqlxKeyStore;
pub use lookup_options::{Lookup, Order};
#[doc(hidden)]
pub use model::{__generated_value, __not_generated};
pub use model::{
    CustomNormalizer, Encrypted, FieldDef, IndexDef, Model, ReadModel, RowReader, RowWriter,
    HEADER_COLUMN, KEY_VERSION_COLUMN, PRESENT_PREFIX,
};
pub use rowseal_core::BlindIndexValue;
pub use rowseal_core::ErrorKind;
#[doc(hidden)]
pub use sealed::__sealed_column;
pub use sealed::{Sealed, SealedReader};
pub use tenant_scope::TenantScope;
pub use value::{
    CustomValue, PassthroughField, PlainField, PrimaryKeyField, SqlType, TenantField, Value,
};

#[doc(hidden)]
pub use rowseal_core::{KeyMode, RecordSpec};

/// The sqlx this crate is built against (use it to name `sqlx::Postgres` and
/// the like with the matching version).
pub use sqlx;

/// `#[derive(Encrypted)]` (feature `derive`).
#[cfg(feature = "derive")]
pub use rowseal_derive::Encrypted;
