//! [`Encryptor`]: insert, fetch, update, delete and decrypt encrypted models
//! through any sqlx executor.
//!
//! This module holds the struct, its configuration and the helpers every
//! operation shares (blind-index keys, the primary-key condition); the
//! operations are in `write` (insert, update, delete: sealing), `read`
//! (fetch and decrypt, the stream pipeline), `lookup` (blind-index lookups
//! and backfill) and `parallel` (the crypto pool large batches run on). The
//! blind-index computation itself is pure, in `crate::blind`.

mod builder;
mod lookup;
mod parallel;
mod read;
mod write;

use std::collections::HashSet;
use std::sync::Arc;

use rowseal_core::{BlindIndexKey, KeyHierarchy, KeyScope, KeysThrough};

use crate::backend::Backend;
use crate::blind::{IndexPlan, WriteKeys};
use crate::error::{Error, Result};
use crate::model::{
    Encrypted, IndexDef, Model, ReadModel, HEADER_COLUMN, KEY_VERSION_COLUMN, PRESENT_PREFIX,
};
use crate::value::SqlType;

pub use builder::{
    EncryptorBuilder, CACHE_MAX_ENTRIES_ENV, CACHE_TTL_SECS_ENV, CRYPTO_THREADS_ENV,
    KMS_ALLOWED_KEYS_ENV, KMS_ENDPOINT_ENV, KMS_KEY_ID_ENV,
};
pub use parallel::CryptoPool;
pub use write::MAX_STATEMENT_BYTES;

/// Rows at or above which a batch is sealed or opened on the
/// [`CryptoPool`] (below it, on the calling thread).
pub const DEFAULT_PARALLEL_THRESHOLD: usize = 512;
/// Rows decrypted at a time by [`Encryptor::fetch_stream`].
pub const DEFAULT_STREAM_CHUNK: usize = 1024;
/// Key-provider calls one batch keeps in flight in `kms` mode (a data key
/// per row): [`Encryptor::with_provider_concurrency`]. 32 calls of ~20 ms
/// each are ~1,600 requests per second, well below AWS KMS's smallest
/// shared quota for cryptographic operations (5,500 per second per account
/// and region), so that several processes doing batches at once still fit.
pub const DEFAULT_PROVIDER_CONCURRENCY: usize = 32;
/// Most rows a pipelined chunk of `fetch_all` is made of to reach the
/// parallel threshold.
const MAX_FETCH_CHUNK: usize = 1 << 16;

/// Reads and writes encrypted models through sqlx.
///
/// Holds the [`KeyHierarchy`] and the [`CryptoPool`] large batches run on;
/// cheap to clone and share (build it once, clone it per request).
///
/// The operations by primary key and by blind index (`insert`, `update`,
/// `fetch`, `find_by`, their many-row and `_with` forms, `update_fields`,
/// `reindex_batch`) take an [`sqlx::Acquire`]: `&Pool`, `&mut connection`
/// (`&mut *conn` of a pool connection) or `&mut transaction`. They run all
/// their statements on that one connection, and so do their reads of
/// stored keys: a key missing from the cache inside a transaction is read
/// in the transaction, on a pool of one connection as on any other, never
/// on a second connection that a saturated pool could not give
/// (`PoolTimedOut`). Keys read in a transaction that reads a snapshot
/// (`REPEATABLE READ`, MySQL's and MariaDB's default; SQLite's
/// transactions) serve that operation and are not cached: a tenant shredded
/// since the snapshot stays readable to that transaction, as its rows do,
/// and to nothing else. The operations on a query of yours (`fetch_all`,
/// `fetch_optional`, `fetch_stream`, `delete`) take any executor, and read
/// missing keys through the key store's own pool.
///
/// A new key (a tenant's first write) is created on that connection too
/// when it is not in a transaction (each statement commits at once), and
/// otherwise through the key store's own pool, committed at once, never in
/// the caller's transaction: a key that a rollback removed while this
/// process kept it cached would leave rows no one could read. So on a pool
/// of one connection, or on SQLite (one writer), create a new tenant's key
/// before a transaction that writes its first rows:
/// `keys().current_tenant_key(tenant)`.
#[derive(Clone, Debug)]
pub struct Encryptor {
    keys: Arc<KeyHierarchy>,
    parallel_threshold: usize,
    /// Where batches of at least `parallel_threshold` rows are sealed and
    /// opened.
    pool: CryptoPool,
    stream_chunk: usize,
    /// Key-provider calls a `kms`-mode batch keeps in flight.
    provider_concurrency: usize,
    /// The row format new writes use: 2, or 1 in tests that need rows of an
    /// older writer.
    write_format: u8,
    /// Whether operation spans record the tenant id (off by default).
    tenant_in_traces: bool,
}

/// Whether this layer (and the `rowseal` tool, which calls this) reads a row
/// with this key header: formats 1 and 2 (every write is format 2). Any other
/// first byte is refused by name ([`rowseal_core::Error::UnsupportedFormat`]),
/// never taken for a tampered row, so that rows of a newer writer are
/// reported for what they are.
///
/// ```
/// assert!(rowseal_sqlx::check_row_format(&[1, 1, 1]).is_ok());
/// assert!(rowseal_sqlx::check_row_format(&[2, 1, 2]).is_ok());
/// assert!(matches!(
///     rowseal_sqlx::check_row_format(&[3, 1, 1]),
///     Err(rowseal_core::Error::UnsupportedFormat { version: 3, .. })
/// ));
/// ```
pub fn check_row_format(header: &[u8]) -> std::result::Result<(), rowseal_core::Error> {
    match header.first() {
        Some(1 | 2) => Ok(()),
        Some(&version) => Err(rowseal_core::Error::UnsupportedFormat {
            what: "row header",
            version,
        }),
        None => Err(rowseal_core::Error::Malformed {
            what: "row header",
            reason: "empty",
        }),
    }
}

/// Appends `<tenant column> = <placeholder n>`, a text tenant compared byte
/// for byte whatever the column's collation.
fn push_tenant_condition<DB: Backend>(model: &Model, sql: &mut String, n: usize) {
    DB::push_ident(sql, model.tenant_field().column);
    sql.push_str(" = ");
    if model.tenant_field().sql_type == SqlType::Text {
        DB::push_exact_text_placeholder(sql, n);
    } else {
        DB::push_placeholder(sql, n);
    }
}

/// A column the query did not return as expected.
fn sqlx_col(model: &Model, column: &str, e: sqlx::Error) -> Error {
    Error::Schema {
        table: model.table().to_owned(),
        column: column.to_owned(),
        reason: e.to_string(),
    }
}

impl Encryptor {
    /// An encryptor over a key hierarchy, its large batches on the
    /// process-wide [`CryptoPool::global`] (one thread per core, started on
    /// the first large batch).
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Encryptor {
            keys,
            parallel_threshold: DEFAULT_PARALLEL_THRESHOLD,
            pool: CryptoPool::global(),
            stream_chunk: DEFAULT_STREAM_CHUNK,
            provider_concurrency: DEFAULT_PROVIDER_CONCURRENCY,
            write_format: 2,
            tenant_in_traces: false,
        }
    }

    /// Whether each operation's tracing span (`rowseal.insert`,
    /// `rowseal.fetch`, ...) records the tenant id in its `tenant` field.
    /// Off by default: tenant ids then stay out of traces (metrics never
    /// carry them). Turn it on where traces may name tenants; they are ids,
    /// never values, but a trace store is one more place that keeps them.
    pub fn with_tenant_in_traces(mut self, on: bool) -> Self {
        self.tenant_in_traces = on;
        self
    }

    /// Writes format 1 rows, as builds before format 2 did: for tests of the
    /// upgrade path only (`rowseal rotate` moves such rows to format 2).
    #[doc(hidden)]
    pub fn __writing_format_1(mut self) -> Self {
        self.write_format = 1;
        self
    }

    /// Rows per pipelined chunk of `fetch_all`: enough for a chunk to go to
    /// the crypto pool, unless the threshold is so high (`usize::MAX`: never)
    /// that chunks of it would hold the whole result twice.
    fn fetch_chunk(&self) -> usize {
        let pooled = if self.parallel_threshold <= MAX_FETCH_CHUNK {
            self.parallel_threshold
        } else {
            0
        };
        pooled.max(self.stream_chunk).max(1024)
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    /// Batches of at least `rows` rows (default
    /// [`DEFAULT_PARALLEL_THRESHOLD`]) are sealed and opened on the
    /// [`CryptoPool`], awaited without blocking the calling thread; smaller
    /// ones on the calling thread. `usize::MAX` keeps every batch on the
    /// calling thread.
    pub fn with_parallel_threshold(mut self, rows: usize) -> Self {
        self.parallel_threshold = rows.max(1);
        self
    }

    /// Large batches use at most `threads` threads (at least 1; default: one
    /// per core): those of the process-wide pool of that size,
    /// [`CryptoPool::shared`]`(threads)`, which every encryptor given the same
    /// number shares, so that however many encryptors and requests there
    /// are, the process runs `threads` crypto threads. No thread is started
    /// per call. For a pool of its own, see
    /// [`with_crypto_pool`](Self::with_crypto_pool).
    pub fn with_threads(self, threads: usize) -> Self {
        self.with_crypto_pool(CryptoPool::shared(threads))
    }

    /// Runs large batches on `pool` (shared by this encryptor's clones and
    /// whatever else holds `pool`): for instance a [`CryptoPool::new`] of its
    /// own for a background job, so that its batches never wait behind
    /// requests' (or the other way round).
    pub fn with_crypto_pool(mut self, pool: CryptoPool) -> Self {
        self.pool = pool;
        self
    }

    /// The pool large batches run on.
    pub fn crypto_pool(&self) -> &CryptoPool {
        &self.pool
    }

    /// How many rows [`fetch_stream`](Self::fetch_stream) decrypts at a time
    /// (its memory bound).
    pub fn with_stream_chunk(mut self, rows: usize) -> Self {
        self.stream_chunk = rows.max(1);
        self
    }

    /// How many key-provider calls (KMS `GenerateDataKey` on write,
    /// `Decrypt` on a cold read) one batch of a `kms`-mode model keeps in
    /// flight, where each row has a data key of its own (at least 1; default
    /// [`DEFAULT_PROVIDER_CONCURRENCY`]). The rows' results keep their
    /// order; the provider's own retry policy applies to each call. Lower it
    /// where many processes share one KMS request quota.
    pub fn with_provider_concurrency(mut self, calls: usize) -> Self {
        self.provider_concurrency = calls.max(1);
        self
    }

    /// The columns of `T`, quoted for `DB` and comma-separated, to put in your
    /// own `SELECT` so that its rows can be decrypted.
    pub fn select_list<T: ReadModel, DB: Backend>() -> String {
        let model = T::model();
        let mut sql = String::new();
        for f in model.fields {
            DB::push_ident(&mut sql, f.column);
            sql.push_str(", ");
        }
        DB::push_ident(&mut sql, HEADER_COLUMN);
        sql.push_str(", ");
        DB::push_ident(&mut sql, KEY_VERSION_COLUMN);
        for (c, _) in model.fields.iter().filter_map(|f| f.plaintext_column) {
            sql.push_str(", ");
            DB::push_ident(&mut sql, c);
        }
        // A partial view: whether each encrypted field it does not read is
        // present (the row key binds the set), never its ciphertext.
        for f in model.absent {
            sql.push_str(", (");
            DB::push_ident(&mut sql, f.column);
            sql.push_str(" IS NOT NULL) AS ");
            DB::push_ident(&mut sql, &format!("{PRESENT_PREFIX}{}", f.column));
        }
        sql
    }

    /// The columns a sealed row of `T` reads (every field's column and
    /// `rowseal_header`), each taken from table or alias `table` and named
    /// `prefix` + column, for a join of several models: read each model's
    /// part with its sealed type's `from_row_prefixed(&row, prefix)`.
    ///
    /// ```ignore
    /// let sql = format!(
    ///     "SELECT {}, {} FROM visits v JOIN patients p ON p.id = v.patient_id WHERE v.tenant_id = $1",
    ///     Encryptor::select_list_as::<Visit, Postgres>("v", "v_"),
    ///     Encryptor::select_list_as::<Patient, Postgres>("p", "p_"),
    /// );
    /// for row in sqlx::query(&sql).bind(tenant).fetch_all(&pool).await? {
    ///     let visit = enc.open(VisitSealed::from_row_prefixed(&row, "v_")?, tenant).await?;
    ///     let patient = enc.open(PatientSealed::from_row_prefixed(&row, "p_")?, tenant).await?;
    /// }
    /// ```
    pub fn select_list_as<T: Encrypted, DB: Backend>(table: &str, prefix: &str) -> String {
        let model = T::model();
        let mut sql = String::new();
        let columns = model.fields.iter().map(|f| f.column).chain([HEADER_COLUMN]);
        for (i, c) in columns.enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            DB::push_ident(&mut sql, table);
            sql.push('.');
            DB::push_ident(&mut sql, c);
            sql.push_str(" AS ");
            DB::push_ident(&mut sql, &format!("{prefix}{c}"));
        }
        sql
    }

    /// Appends ` WHERE <pk> = $n AND <tenant> = $n+1`, the tenant (and a
    /// text primary key) compared byte for byte whatever the column's
    /// collation: fetch, update and delete by primary key never reach
    /// another tenant's row. (MariaDB still uses the primary-key and tenant
    /// indexes for `col = BINARY ?`.)
    fn where_pk<T: ReadModel, DB: Backend>(sql: &mut String, first_param: usize) {
        let model = T::model();
        sql.push_str(" WHERE ");
        DB::push_ident(sql, model.primary_key_field().column);
        sql.push_str(" = ");
        if model.primary_key_field().sql_type == SqlType::Text {
            DB::push_exact_text_placeholder(sql, first_param);
        } else {
            DB::push_placeholder(sql, first_param);
        }
        sql.push_str(" AND ");
        push_tenant_condition::<DB>(model, sql, first_param + 1);
    }

    /// The blind-index keys of every written index-key version, for every
    /// index (or only those in `only`) and scope the rows need.
    async fn write_index_keys<'r, T: Encrypted>(
        keys: KeysThrough<'_>,
        plans: &[IndexPlan],
        rows: impl Iterator<Item = &'r T>,
        only: Option<&[usize]>,
    ) -> Result<WriteKeys> {
        let mut out = WriteKeys::default();
        if plans.is_empty() {
            return Ok(out);
        }
        let model = T::model();
        let tenants: HashSet<std::borrow::Cow<'_, str>> = rows.map(|r| r.tenant()).collect();
        for (i, plan) in plans.iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            if plan.def.global {
                let bks = Self::written_keys(keys, model, plan.def, &KeyScope::Global).await?;
                out.insert_global(i, bks);
            } else {
                for t in &tenants {
                    let scope = KeyScope::Tenant(t.to_string());
                    let bks = Self::written_keys(keys, model, plan.def, &scope).await?;
                    out.insert_tenant(i, t, bks);
                }
            }
        }
        Ok(out)
    }

    async fn written_keys(
        keys: KeysThrough<'_>,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
    ) -> Result<Vec<BlindIndexKey>> {
        let versions = keys.index_key_versions(scope).await?;
        let mut out = Vec::with_capacity(2);
        for v in versions.written() {
            out.push(Self::blind_key(keys, model, def, scope, v).await?);
        }
        Ok(out)
    }

    /// The blind-index key of one index and index-key version (derived once
    /// and cached by the key hierarchy, with its lifetime).
    async fn blind_key(
        keys: KeysThrough<'_>,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
        version: u32,
    ) -> Result<BlindIndexKey> {
        let k = keys
            .blind_index_key(scope, version, model.spec.record_type(), def.name)
            .await?;
        Ok(BlindIndexKey::clone(&k))
    }

    /// The blind-index keys lookups query for `scope` (the written versions,
    /// then older active ones); empty if the scope never had an index key (no
    /// key is created: a lookup with an unknown tenant stays read-only).
    async fn lookup_index_keys(
        keys: KeysThrough<'_>,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
    ) -> Result<Vec<BlindIndexKey>> {
        let Some(versions) = keys.lookup_index_key_versions(scope).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(2);
        for v in versions.queried() {
            out.push(Self::blind_key(keys, model, def, scope, v).await?);
        }
        Ok(out)
    }
}

#[allow(dead_code)]
fn _assert_types() {
    fn send<T: Send + Sync>() {}
    send::<Encryptor>();
}
