//! Helpers for your own tests: keys that live in memory (a fresh local root
//! key and an in-memory key store, [`keys`]), an [`Encryptor`] over them
//! ([`encryptor`], feature `sqlx`), and the same with every key-provider
//! call counted ([`counted_keys`]). Nothing here touches KMS, a key file
//! or the `rowseal_keys` table; the keys are gone when the test ends. Use
//! them in tests only: a restarted process cannot read what they sealed.
//!
//! With `#[sqlx::test]` (sqlx's `migrate` and `macros` features), each test
//! gets a fresh database; install rowseal's tables and yours in it and
//! encrypt with in-memory keys:
//!
//! ```rust,ignore
//! // Needs sqlx's `macros` + `migrate` features and DATABASE_URL for PostgreSQL.
//! #[sqlx::test]
//! async fn patients_round_trip(pool: sqlx::PgPool) -> rowseal::sqlx::Result<()> {
//!     rowseal::schema::install(&pool).await.unwrap();
//!     rowseal::schema::create_table::<Patient, _>(&pool).await.unwrap();
//!     let enc = rowseal::testing::encryptor();
//!     enc.insert(&pool, &patient).await.unwrap();
//!     assert_eq!(enc.fetch::<Patient, _>(&pool, "acme", &patient.id).await.unwrap(), Some(patient));
//!     Ok(())
//! }
//! ```
//!
//! Without sqlx's test macro, an in-memory SQLite pool does the same (this
//! example runs as a doctest):
//!
//! ```
//! # #[cfg(all(feature = "sqlite", feature = "derive"))]
//! # async fn demo() {
//! use rowseal::{schema, sqlx::SqlitePool, Encrypted};
//!
//! #[derive(Encrypted, Debug, PartialEq)]
//! #[rowseal(table = "notes", record_type = "note", tenant = tenant_id, primary_key = id)]
//! struct Note {
//!     id: i64,
//!     tenant_id: String,
//!     #[rowseal(encrypt)]
//!     body: String,
//! }
//!
//! let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
//! schema::install(&pool).await.unwrap();
//! schema::create_table::<Note, _>(&pool).await.unwrap();
//! let enc = rowseal::testing::encryptor();
//! let note = Note { id: 1, tenant_id: "acme".into(), body: "secret".into() };
//! enc.insert(&pool, &note).await.unwrap();
//! assert_eq!(enc.fetch::<Note, _>(&pool, "acme", &1).await.unwrap(), Some(note));
//! # }
//! # #[cfg(all(feature = "sqlite", feature = "derive"))]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
//! ```

use std::sync::Arc;

use rowseal_core::{CountingKeyProvider, KeyHierarchy, LocalKeyProvider, MemoryKeyStore};

/// A key hierarchy whose root key is generated now and whose tenant and
/// index keys are stored in memory.
pub fn keys() -> Arc<KeyHierarchy> {
    Arc::new(KeyHierarchy::new(
        Arc::new(LocalKeyProvider::generate()),
        Arc::new(MemoryKeyStore::new()),
    ))
}

/// [`keys`], with every call to the root-key provider counted: assert how
/// many keys your code makes and unwraps (`provider.counts()`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use rowseal::{FieldSet, RecordSpec};
/// const NOTE: RecordSpec = RecordSpec::new("note", "notes");
/// let (keys, provider) = rowseal::testing::counted_keys();
/// let present = FieldSet::new(["body"]).unwrap();
/// for _ in 0..100 {
///     keys.new_row_key(&NOTE, "acme", None, &present).await.unwrap();
/// }
/// // Derived mode: one tenant key made (and cached), no call per row.
/// assert_eq!(provider.counts().generate, 1);
/// assert_eq!(provider.counts().total(), 1);
/// # });
/// ```
pub fn counted_keys() -> (Arc<KeyHierarchy>, Arc<CountingKeyProvider>) {
    let provider = Arc::new(CountingKeyProvider::new(Arc::new(
        LocalKeyProvider::generate(),
    )));
    let keys = KeyHierarchy::new(provider.clone(), Arc::new(MemoryKeyStore::new()));
    (Arc::new(keys), provider)
}

/// An [`Encryptor`](crate::Encryptor) over [`keys`] (feature `sqlx`).
#[cfg(feature = "sqlx")]
pub fn encryptor() -> crate::Encryptor {
    crate::Encryptor::new(keys())
}
