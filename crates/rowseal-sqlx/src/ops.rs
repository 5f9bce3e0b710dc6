//! [`Encryptor`]: insert, fetch, update, delete and decrypt encrypted models
//! through any sqlx executor.

use std::collections::HashMap;
use std::sync::Arc;

use futures_core::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rowseal_core::{KeyHierarchy, KeyMode, RecordKeys, RowHeader, RowKey};

use crate::backend::{Backend, DbRow};
use crate::blind::{map_unique, plans, push_index_cells, IndexPlan, WriteKeys};
use crate::error::{Error, Result};
use crate::model::{
    Cell, Encrypted, Model, RowReader, RowWriter, HEADER_COLUMN, KEY_VERSION_COLUMN,
};
use crate::value::{PrimaryKeyField, SqlType, Value};

/// Rows at or above which sealing and opening are spread over threads.
pub const DEFAULT_PARALLEL_THRESHOLD: usize = 512;
/// Rows decrypted at a time by [`Encryptor::fetch_stream`].
pub const DEFAULT_STREAM_CHUNK: usize = 1024;

/// Reads and writes encrypted models through sqlx.
///
/// Holds the [`KeyHierarchy`]; cheap to clone and share. Every operation takes
/// anything that is an sqlx executor for a supported database: `&Pool`,
/// `&mut PgConnection` (and the MySQL and SQLite ones), or `&mut *transaction`.
/// Operations of several statements ([`insert_many`](Self::insert_many),
/// [`update_fields`](Self::update_fields)) take an [`sqlx::Acquire`] instead:
/// `&Pool`, `&mut connection` or `&mut transaction`.
///
/// On SQLite, create a tenant's key before writing to it inside a long
/// transaction (for example with `keys().current_tenant_key(tenant)`): the key
/// store writes through its own connection, and SQLite has one writer.
#[derive(Clone, Debug)]
pub struct Encryptor {
    keys: Arc<KeyHierarchy>,
    parallel_threshold: usize,
    threads: usize,
    stream_chunk: usize,
    index_versions: Arc<std::sync::Mutex<IndexVersions>>,
}

/// Blind-index keys per (index-key scope, table, index, index-key version),
/// derived once. Which versions are used comes from the key hierarchy each
/// time (cached there with a lifetime), so a retired or destroyed version is
/// never used from here.
type IndexVersions =
    HashMap<(rowseal_core::KeyScope, &'static str, &'static str, u32), rowseal_core::BlindIndexKey>;

/// Column positions of a model in a result row.
struct ColumnMap {
    fields: Vec<usize>,
    header: usize,
    /// Per field: the position of its legacy plaintext column, if it has one.
    plaintext: Vec<Option<usize>>,
}

impl ColumnMap {
    fn resolve<R: DbRow>(model: &Model, row: &R) -> Result<Self> {
        let find = |name: &str| {
            row.column_index(name).ok_or_else(|| Error::Schema {
                table: model.table().to_owned(),
                column: name.to_owned(),
                reason: "the query did not select this column".into(),
            })
        };
        Ok(ColumnMap {
            fields: model
                .fields
                .iter()
                .map(|f| find(f.column))
                .collect::<Result<_>>()?,
            header: find(HEADER_COLUMN)?,
            plaintext: model
                .fields
                .iter()
                .map(|f| f.plaintext_column.map(|(c, _)| find(c)).transpose())
                .collect::<Result<_>>()?,
        })
    }
}

type KeyTable = HashMap<String, HashMap<u32, std::result::Result<RecordKeys, rowseal_core::Error>>>;

fn sqlx_col(model: &Model, column: &str, e: sqlx::Error) -> Error {
    Error::Schema {
        table: model.table().to_owned(),
        column: column.to_owned(),
        reason: e.to_string(),
    }
}

impl Encryptor {
    /// An encryptor over a key hierarchy.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Encryptor {
            keys,
            parallel_threshold: DEFAULT_PARALLEL_THRESHOLD,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stream_chunk: DEFAULT_STREAM_CHUNK,
            index_versions: Arc::default(),
        }
    }

    pub(crate) fn cached_blind_key(
        &self,
        key: &(rowseal_core::KeyScope, &'static str, &'static str, u32),
    ) -> Option<rowseal_core::BlindIndexKey> {
        let map = self.index_versions.lock().ok()?;
        map.get(key).cloned()
    }

    pub(crate) fn cache_blind_key(
        &self,
        key: (rowseal_core::KeyScope, &'static str, &'static str, u32),
        value: rowseal_core::BlindIndexKey,
    ) {
        if let Ok(mut map) = self.index_versions.lock() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(key, value);
        }
    }

    /// The columns every write fills: the fields, the header, the key
    /// version, then each blind index's value and version columns.
    fn write_columns<T: Encrypted>() -> Vec<&'static str> {
        let model = T::model();
        let mut cols: Vec<&'static str> = model.fields.iter().map(|f| f.column).collect();
        cols.push(HEADER_COLUMN);
        cols.push(KEY_VERSION_COLUMN);
        for i in model.indexes {
            cols.extend(i.columns());
        }
        // Legacy plaintext columns: every write sets them to NULL.
        cols.extend(
            model
                .fields
                .iter()
                .filter_map(|f| f.plaintext_column.map(|(c, _)| c)),
        );
        cols
    }

    /// Rows per pipelined chunk of `fetch_all`.
    fn fetch_chunk(&self) -> usize {
        self.parallel_threshold.max(self.stream_chunk).max(1024)
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    /// Batches of at least `rows` rows are sealed and opened on several threads.
    pub fn with_parallel_threshold(mut self, rows: usize) -> Self {
        self.parallel_threshold = rows.max(1);
        self
    }

    /// How many threads large batches use (default: the available cores).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// How many rows [`fetch_stream`](Self::fetch_stream) decrypts at a time
    /// (its memory bound).
    pub fn with_stream_chunk(mut self, rows: usize) -> Self {
        self.stream_chunk = rows.max(1);
        self
    }

    /// The columns of `T`, quoted for `DB` and comma-separated, to put in your
    /// own `SELECT` so that its rows can be decrypted.
    pub fn select_list<T: Encrypted, DB: Backend>() -> String {
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
        sql
    }

    fn pk_bytes(model: &Model, pk: &Value) -> Result<Option<Vec<u8>>> {
        if !model.spec.binds_primary_key() {
            return Ok(None);
        }
        pk.key_bytes().map(Some).ok_or_else(|| Error::InvalidInput {
            reason: "the primary key has a type that cannot be bound".into(),
        })
    }

    // ---- writing --------------------------------------------------------

    /// A fresh row key under the tenant's current key (a new KMS data key in
    /// `kms` mode).
    async fn new_row_key(&self, model: &Model, tenant: &str, pk: Option<&[u8]>) -> Result<RowKey> {
        Ok(match model.spec.key_mode() {
            KeyMode::Derived => self
                .keys
                .current_tenant_key(tenant)
                .await?
                .record_keys(&model.spec)?
                .new_row(pk)?,
            _ => self.keys.new_row_key(&model.spec, tenant, pk).await?,
        })
    }

    /// Record keys under the current tenant key of each tenant in `tenants`.
    async fn current_record_keys<'a>(
        &self,
        model: &Model,
        tenants: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<&'a str, RecordKeys>> {
        let mut out = HashMap::new();
        for t in tenants {
            if !out.contains_key(t) {
                let tk = self.keys.current_tenant_key(t).await?;
                out.insert(t, tk.record_keys(&model.spec)?);
            }
        }
        Ok(out)
    }

    /// Appends a row's column values (fields, header, key version) to `out`.
    fn seal_with<T: Encrypted>(
        key: &RowKey,
        row: &T,
        index: (&[IndexPlan], &WriteKeys),
        out: &mut Vec<Value>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        row.write_row(&mut RowWriter::new(Some(key), None, out, scratch))?;
        out.push(Value::Bytes(key.header_bytes()));
        out.push(Value::I64(i64::from(
            key.header().tenant_key_version().unwrap_or(0),
        )));
        push_index_cells(index.0, index.1, row, None, out)?;
        push_plaintext_nulls(T::model(), None, out);
        Ok(())
    }

    /// Seals rows into their column values (fields, header, key version),
    /// row after row in one flat vector.
    async fn seal_rows<T: Encrypted>(&self, rows: &[T]) -> Result<Vec<Value>> {
        let model = T::model();
        let cols = Self::write_columns::<T>().len();
        let plans = plans(model)?;
        let ikeys = self.write_index_keys(&plans, rows.iter(), None).await?;
        let index = (&plans[..], &ikeys);
        match model.spec.key_mode() {
            KeyMode::Derived => {
                let rks = self
                    .current_record_keys(model, rows.iter().map(|r| r.tenant()))
                    .await?;
                let seal_part = |part: &[T]| -> Result<Vec<Value>> {
                    let mut out = Vec::with_capacity(part.len() * cols);
                    let mut scratch = Vec::new();
                    for row in part {
                        let rk = rks.get(row.tenant()).ok_or(Error::Worker)?;
                        let pk = Self::pk_bytes(model, &row.primary_key_value())?;
                        let key = rk.new_row(pk.as_deref())?;
                        Self::seal_with(&key, row, index, &mut out, &mut scratch)?;
                    }
                    Ok(out)
                };
                self.par_chunks(rows, seal_part)
            }
            _ => {
                let mut out = Vec::with_capacity(rows.len() * cols);
                let mut scratch = Vec::new();
                for row in rows {
                    let pk = Self::pk_bytes(model, &row.primary_key_value())?;
                    let key = self
                        .keys
                        .new_row_key(&model.spec, row.tenant(), pk.as_deref())
                        .await?;
                    Self::seal_with(&key, row, index, &mut out, &mut scratch)?;
                }
                Ok(out)
            }
        }
    }

    /// Runs `f` on contiguous parts of `items` (one per thread for large
    /// inputs) and concatenates the results in order.
    fn par_chunks<I: Sync, O: Send>(
        &self,
        items: &[I],
        f: impl Fn(&[I]) -> Result<Vec<O>> + Sync,
    ) -> Result<Vec<O>> {
        if items.len() < self.parallel_threshold || self.threads < 2 {
            return f(items);
        }
        let chunk = items.len().div_ceil(self.threads);
        let f = &f;
        std::thread::scope(|s| {
            let mut parts = items.chunks(chunk);
            let first = parts.next().unwrap_or(&[]);
            let handles: Vec<_> = parts.map(|part| s.spawn(move || f(part))).collect();
            let mut out = f(first)?;
            for h in handles {
                out.extend(h.join().map_err(|_| Error::Worker)??);
            }
            Ok(out)
        })
    }

    /// Maps `f` over `items`, on several threads for large inputs, keeping
    /// order; one result per item.
    fn par_map_each<I: Sync, O: Send>(
        &self,
        items: &[I],
        f: impl Fn(&I) -> Result<O> + Sync,
    ) -> Vec<Result<O>> {
        if items.len() < self.parallel_threshold || self.threads < 2 {
            return items.iter().map(&f).collect();
        }
        let chunk = items.len().div_ceil(self.threads);
        let f = &f;
        std::thread::scope(|s| {
            let mut parts = items.chunks(chunk);
            let first = parts.next().unwrap_or(&[]);
            let handles: Vec<_> = parts
                .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
                .collect();
            let mut out: Vec<Result<O>> = first.iter().map(f).collect();
            for h in handles {
                match h.join() {
                    Ok(v) => out.extend(v),
                    Err(_) => out.push(Err(Error::Worker)),
                }
            }
            out
        })
    }

    fn insert_sql<T: Encrypted, DB: Backend>(rows: usize) -> String {
        let model = T::model();
        let columns = Self::write_columns::<T>();
        let cols = columns.len();
        let mut sql = String::with_capacity(64 + cols * 16 + rows * cols * 4);
        sql.push_str("INSERT INTO ");
        DB::push_ident(&mut sql, model.table());
        sql.push_str(" (");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            DB::push_ident(&mut sql, c);
        }
        sql.push_str(") VALUES ");
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..cols {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                DB::push_placeholder(&mut sql, n);
            }
            sql.push(')');
        }
        sql
    }

    /// Inserts one row.
    pub async fn insert<'c, T, E>(&self, executor: E, row: &T) -> Result<()>
    where
        T: Encrypted,
        E: sqlx::Executor<'c>,
        E::Database: Backend,
    {
        let values = self.seal_rows(std::slice::from_ref(row)).await?;
        let sql = Self::insert_sql::<T, E::Database>(1);
        <E::Database as Backend>::execute(executor, &sql, values)
            .await
            .map_err(|e| map_unique(T::model(), e))?;
        Ok(())
    }

    /// Inserts many rows, one statement (one round trip) per batch of as many
    /// rows as the database takes bind parameters for. Encryption of large
    /// batches is spread over the cores. Pass a transaction to make the whole
    /// insert atomic. Returns the number of rows inserted.
    pub async fn insert_many<'a, T, A>(&self, conn: A, rows: &[T]) -> Result<u64>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        if rows.is_empty() {
            return Ok(0);
        }
        let cols = Self::write_columns::<T>().len();
        let per_batch = (<A::Database as Backend>::MAX_PARAMS / cols).max(1);
        let mut conn = conn.acquire().await?;
        let mut done = 0;
        let mut full_sql: Option<String> = None;
        let mut batches = rows.chunks(per_batch);
        let Some(first) = batches.next() else {
            return Ok(0);
        };
        let mut sealed = self.seal_rows(first).await?;
        // Pipelined: the next batch is sealed while the database inserts this
        // one. A batch whose values exceed MAX_STATEMENT_BYTES is sent as
        // several statements (MySQL's max_allowed_packet).
        loop {
            let groups = split_by_bytes(sealed, cols);
            let next = batches.next();
            let conn_ref = &mut conn;
            let full_sql = &mut full_sql;
            let insert = async move {
                let mut n_done = 0;
                for values in groups {
                    let n = values.len() / cols;
                    let sql = if n == per_batch {
                        full_sql
                            .get_or_insert_with(|| Self::insert_sql::<T, A::Database>(per_batch))
                            .clone()
                    } else {
                        Self::insert_sql::<T, A::Database>(n)
                    };
                    n_done += <A::Database as Backend>::execute_on(&mut *conn_ref, &sql, values)
                        .await
                        .map_err(|e| map_unique(T::model(), e))?;
                }
                Ok::<u64, Error>(n_done)
            };
            let seal_next = async {
                match next {
                    Some(batch) => Some(self.seal_rows(batch).await),
                    None => None,
                }
            };
            let (inserted, next_sealed) = futures_util::future::join(insert, seal_next).await;
            done += inserted?;
            match next_sealed {
                Some(s) => sealed = s?,
                None => break,
            }
        }
        Ok(done)
    }

    fn where_pk<T: Encrypted, DB: Backend>(sql: &mut String, first_param: usize) {
        let model = T::model();
        sql.push_str(" WHERE ");
        DB::push_ident(sql, model.primary_key_field().column);
        sql.push_str(" = ");
        DB::push_placeholder(sql, first_param);
        sql.push_str(" AND ");
        DB::push_ident(sql, model.tenant_field().column);
        sql.push_str(" = ");
        DB::push_placeholder(sql, first_param + 1);
    }

    /// Replaces every column of a stored row (found by primary key and tenant)
    /// with `row`, re-encrypted under a fresh row key on the tenant's current
    /// key version. [`Error::NotFound`] if there is no such row.
    pub async fn update<'c, T, E>(&self, executor: E, row: &T) -> Result<()>
    where
        T: Encrypted,
        E: sqlx::Executor<'c>,
        E::Database: Backend,
    {
        let model = T::model();
        let mut values = self.seal_rows(std::slice::from_ref(row)).await?;
        let mut sql = String::from("UPDATE ");
        E::Database::push_ident(&mut sql, model.table());
        sql.push_str(" SET ");
        let mut n = 0;
        for c in Self::write_columns::<T>() {
            if n > 0 {
                sql.push_str(", ");
            }
            n += 1;
            E::Database::push_ident(&mut sql, c);
            sql.push_str(" = ");
            E::Database::push_placeholder(&mut sql, n);
        }
        Self::where_pk::<T, E::Database>(&mut sql, n + 1);
        values.push(row.primary_key_value());
        values.push(Value::Text(row.tenant().to_owned()));
        let affected = <E::Database as Backend>::execute(executor, &sql, values)
            .await
            .map_err(|e| map_unique(model, e))?;
        if affected == 0 {
            return Err(Error::NotFound {
                table: model.table().to_owned(),
                primary_key: row.primary_key_value().key_display(),
            });
        }
        Ok(())
    }

    /// Writes only the chosen fields (by Rust field name) of a stored row.
    /// Encrypted ones are re-encrypted under the row's existing key; the write
    /// is conditional on the row's key header being unchanged since it was read
    /// (so it never mixes keys with a concurrent re-encryption), and
    /// [`Error::NotFound`] reports a missing row or a lost race.
    pub async fn update_fields<'a, T, A>(&self, conn: A, row: &T, fields: &[&str]) -> Result<()>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let model = T::model();
        let mut columns = Vec::with_capacity(fields.len());
        for name in fields {
            let f = model.field(name).ok_or_else(|| Error::InvalidInput {
                reason: format!("{} has no field `{name}`", model.table()),
            })?;
            if f.name == model.primary_key_field().name || f.name == model.tenant_field().name {
                return Err(Error::InvalidInput {
                    reason: "the primary key and the tenant cannot be updated in place".into(),
                });
            }
            columns.push(f.column);
        }
        // Field order, as the writer emits them.
        let ordered: Vec<&str> = model
            .fields
            .iter()
            .map(|f| f.column)
            .filter(|c| columns.contains(c))
            .collect();
        if ordered.is_empty() {
            return Ok(());
        }
        // Blind indexes covering an updated field are recomputed from `row`.
        let touched: Vec<usize> = model
            .indexes
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.fields.iter().any(|&f| {
                    model
                        .fields
                        .get(f)
                        .is_some_and(|fd| ordered.contains(&fd.column))
                })
            })
            .map(|(n, _)| n)
            .collect();
        let plans = plans(model)?;
        let ikeys = self
            .write_index_keys(&plans, std::iter::once(row), Some(&touched))
            .await?;
        let mut set_columns: Vec<&str> = ordered.clone();
        for &n in &touched {
            if let Some(i) = model.indexes.get(n) {
                set_columns.extend(i.columns());
            }
        }
        // The legacy plaintext columns of the updated fields become NULL.
        set_columns.extend(plaintext_columns(model, Some(&ordered)).map(|(c, _)| c));
        let any_encrypted = model
            .fields
            .iter()
            .any(|f| f.is_encrypted() && ordered.contains(&f.column));
        let mut conn = conn.acquire().await?;
        let pk_value = row.primary_key_value();
        let not_found = || Error::NotFound {
            table: model.table().to_owned(),
            primary_key: pk_value.key_display(),
        };

        // `Some(None)`: a legacy row without a key header, which gets one.
        let mut header: Option<Option<Vec<u8>>> = None;
        let key = if any_encrypted {
            let mut sql = String::from("SELECT ");
            A::Database::push_ident(&mut sql, HEADER_COLUMN);
            sql.push_str(" FROM ");
            A::Database::push_ident(&mut sql, model.table());
            Self::where_pk::<T, A::Database>(&mut sql, 1);
            let found = <A::Database as Backend>::fetch_optional_on(
                &mut conn,
                &sql,
                vec![pk_value.clone(), Value::Text(row.tenant().to_owned())],
            )
            .await?
            .ok_or_else(not_found)?;
            let h = found
                .read_opt_bytes(0)
                .map_err(|e| sqlx_col(model, HEADER_COLUMN, e))?
                .map(<[u8]>::to_vec);
            let pk = Self::pk_bytes(model, &pk_value)?;
            let key = match &h {
                Some(h) => self
                    .keys
                    .open_row_key(&model.spec, row.tenant(), pk.as_deref(), h)
                    .await
                    .map_err(|e| Error::Decrypt {
                        table: model.table().to_owned(),
                        column: HEADER_COLUMN.to_owned(),
                        primary_key: pk_value.key_display(),
                        source: Box::new(e),
                    })?,
                None => self.new_row_key(model, row.tenant(), pk.as_deref()).await?,
            };
            header = Some(h);
            Some(key)
        } else {
            None
        };

        let mut values = Vec::with_capacity(ordered.len() + 3);
        let mut scratch = Vec::new();
        row.write_row(&mut RowWriter::new(
            key.as_ref(),
            Some(&ordered),
            &mut values,
            &mut scratch,
        ))?;
        push_index_cells(&plans, &ikeys, row, Some(&touched), &mut values)?;
        push_plaintext_nulls(model, Some(&ordered), &mut values);
        if let (Some(None), Some(key)) = (&header, &key) {
            set_columns.push(HEADER_COLUMN);
            set_columns.push(KEY_VERSION_COLUMN);
            values.push(Value::Bytes(key.header_bytes()));
            values.push(Value::I64(i64::from(
                key.header().tenant_key_version().unwrap_or(0),
            )));
        }
        let ordered = set_columns;
        let mut sql = String::from("UPDATE ");
        A::Database::push_ident(&mut sql, model.table());
        sql.push_str(" SET ");
        for (i, c) in ordered.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            A::Database::push_ident(&mut sql, c);
            sql.push_str(" = ");
            A::Database::push_placeholder(&mut sql, i + 1);
        }
        Self::where_pk::<T, A::Database>(&mut sql, ordered.len() + 1);
        values.push(pk_value.clone());
        values.push(Value::Text(row.tenant().to_owned()));
        match header {
            Some(Some(h)) => {
                sql.push_str(" AND ");
                A::Database::push_ident(&mut sql, HEADER_COLUMN);
                sql.push_str(" = ");
                A::Database::push_placeholder(&mut sql, ordered.len() + 3);
                values.push(Value::Bytes(h));
            }
            Some(None) => {
                sql.push_str(" AND ");
                A::Database::push_ident(&mut sql, HEADER_COLUMN);
                sql.push_str(" IS NULL");
            }
            None => {}
        }
        let affected = <A::Database as Backend>::execute_on(&mut conn, &sql, values)
            .await
            .map_err(|e| map_unique(model, e))?;
        if affected == 0 {
            return Err(not_found());
        }
        Ok(())
    }

    /// Deletes a row by primary key within a tenant. Returns whether a row was
    /// deleted.
    pub async fn delete<'c, T, E>(
        &self,
        executor: E,
        tenant: &str,
        primary_key: &T::PrimaryKey,
    ) -> Result<bool>
    where
        T: Encrypted,
        E: sqlx::Executor<'c>,
        E::Database: Backend,
    {
        let mut sql = String::from("DELETE FROM ");
        E::Database::push_ident(&mut sql, T::model().table());
        Self::where_pk::<T, E::Database>(&mut sql, 1);
        let values = vec![primary_key.key_value(), Value::Text(tenant.to_owned())];
        Ok(<E::Database as Backend>::execute(executor, &sql, values).await? > 0)
    }

    // ---- reading --------------------------------------------------------

    /// Fetches and decrypts one row by primary key within a tenant.
    pub async fn fetch<'c, T, E>(
        &self,
        executor: E,
        tenant: &str,
        primary_key: &T::PrimaryKey,
    ) -> Result<Option<T>>
    where
        T: Encrypted,
        E: sqlx::Executor<'c>,
        E::Database: Backend,
    {
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, E::Database>());
        sql.push_str(" FROM ");
        E::Database::push_ident(&mut sql, T::model().table());
        Self::where_pk::<T, E::Database>(&mut sql, 1);
        let values = vec![primary_key.key_value(), Value::Text(tenant.to_owned())];
        match <E::Database as Backend>::fetch_optional(executor, &sql, values).await? {
            Some(row) => Ok(Some(self.decrypt(&row).await?)),
            None => Ok(None),
        }
    }

    /// Runs your query (which must select the model's columns, see
    /// [`select_list`](Self::select_list)) and decrypts every row.
    pub async fn fetch_all<'q, 'c, T, DB, E>(
        &self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        DB: Backend,
        E: 'q + sqlx::Executor<'c, Database = DB>,
        'c: 'q,
    {
        let mut out = Vec::new();
        let mut chunks =
            self.pipeline::<T, DB::Row>(DB::query_stream(query, executor), self.fetch_chunk());
        while let Some(mut v) = chunks.try_next().await? {
            out.append(&mut v);
        }
        Ok(out)
    }

    /// Runs your query and decrypts the row it returns, if any.
    pub async fn fetch_optional<'q, 'c, T, DB, E>(
        &self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> Result<Option<T>>
    where
        T: Encrypted,
        DB: Backend,
        E: 'q + sqlx::Executor<'c, Database = DB>,
        'c: 'q,
    {
        match DB::query_optional(query, executor).await? {
            Some(row) => Ok(Some(self.decrypt(&row).await?)),
            None => Ok(None),
        }
    }

    /// Runs your query and yields decrypted rows as a stream, decrypting
    /// [`with_stream_chunk`](Self::with_stream_chunk) rows at a time (on all
    /// cores for large chunks): memory stays bounded whatever the row count.
    pub fn fetch_stream<'e, 'q, 'c, T, DB, E>(
        &'e self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> BoxStream<'e, Result<T>>
    where
        T: Encrypted,
        DB: Backend,
        E: 'e + sqlx::Executor<'c, Database = DB>,
        'q: 'e,
        'c: 'e,
    {
        self.pipeline::<T, DB::Row>(DB::query_stream(query, executor), self.stream_chunk)
            .map_ok(|v| futures_util::stream::iter(v.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Decrypts one row of your own query.
    pub async fn decrypt<T: Encrypted, R: DbRow>(&self, row: &R) -> Result<T> {
        self.decrypt_all(std::slice::from_ref(row))
            .await?
            .pop()
            .ok_or(Error::Worker)
    }

    /// Decrypts rows of your own query; the first failing row fails the call
    /// (see [`decrypt_each`](Self::decrypt_each) to keep the others). Large
    /// batches are decrypted on all cores.
    pub async fn decrypt_all<T: Encrypted, R: DbRow>(&self, rows: &[R]) -> Result<Vec<T>> {
        self.decrypt_each(rows).await?.into_iter().collect()
    }

    /// Decrypts rows of your own query, one result per row: a tampered row
    /// fails alone. The outer error is for what fails the whole batch (a
    /// column missing from the query, the key store).
    pub async fn decrypt_each<T: Encrypted, R: DbRow>(&self, rows: &[R]) -> Result<Vec<Result<T>>> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let model = T::model();
        let map = ColumnMap::resolve(model, first)?;
        match model.spec.key_mode() {
            KeyMode::Derived => {
                let table = self.key_table(model, &map, rows).await?;
                Ok(self.decrypt_derived::<T, R>(&map, &table, rows))
            }
            _ => {
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let key = self.kms_row_key(model, &map, row).await;
                    out.push(decrypt_row::<T, R>(model, &map, row, move |_, _, _| key));
                }
                Ok(out)
            }
        }
    }

    /// The record keys of every (tenant, key version) the rows name.
    async fn key_table<R: DbRow>(
        &self,
        model: &Model,
        map: &ColumnMap,
        rows: &[R],
    ) -> Result<KeyTable> {
        let tenant_idx = map.fields[model.tenant];
        let mut table: KeyTable = HashMap::new();
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for row in rows {
            let (Ok(tenant), Ok(header)) = (row.read_str(tenant_idx), row.read_bytes(map.header))
            else {
                continue; // reported per row
            };
            let Some(version) = header_version(header) else {
                continue;
            };
            let known = table.get(tenant).is_some_and(|m| m.contains_key(&version));
            if !known {
                table
                    .entry(tenant.to_owned())
                    .or_default()
                    .insert(version, Err(rowseal_core::Error::Decrypt));
                wanted.push((tenant.to_owned(), version));
            }
        }
        for (tenant, version) in wanted {
            let r = match self.keys.tenant_key(&tenant, version).await {
                Ok(tk) => tk.record_keys(&model.spec),
                Err(e @ rowseal_core::Error::Store { .. }) => return Err(e.into()),
                Err(e) => Err(e),
            };
            if let Some(m) = table.get_mut(&tenant) {
                m.insert(version, r);
            }
        }
        Ok(table)
    }

    /// Decrypts `derived`-mode rows with their keys at hand (no I/O), on
    /// several threads for large batches.
    fn decrypt_derived<T: Encrypted, R: DbRow>(
        &self,
        map: &ColumnMap,
        table: &KeyTable,
        rows: &[R],
    ) -> Vec<Result<T>> {
        let model = T::model();
        self.par_map_each(rows, |row| {
            decrypt_row::<T, R>(model, map, row, |tenant, pk, header| {
                let version = header_version(header).ok_or(rowseal_core::Error::Decrypt)?;
                match table.get(tenant).and_then(|m| m.get(&version)) {
                    Some(Ok(rk)) => rk.open_row(pk, header),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(rowseal_core::Error::Decrypt),
                }
            })
        })
    }

    /// Pipelined decryption of a row stream: while one chunk is decrypted on
    /// a blocking thread (and its helpers), the next chunk is received.
    /// Yields one `Vec` of results per chunk.
    fn pipeline<'e, T, R>(
        &'e self,
        rows: BoxStream<'e, Result<R>>,
        chunk: usize,
    ) -> BoxStream<'e, Result<Vec<T>>>
    where
        T: Encrypted,
        R: DbRow,
    {
        let model = T::model();
        if model.spec.key_mode() != KeyMode::Derived {
            return rows
                .try_chunks(chunk)
                .map_err(|e| e.1)
                .and_then(move |rows| async move { self.decrypt_all::<T, R>(&rows).await })
                .boxed();
        }
        type Pending<T> = tokio::task::JoinHandle<Result<Vec<T>>>;
        let state: (BoxStream<'e, Result<R>>, Option<Pending<T>>, bool) = (rows, None, false);
        futures_util::stream::try_unfold(state, move |(mut rows, pending, done)| async move {
            let mut next_pending = None;
            if !done {
                let mut buf = Vec::with_capacity(chunk);
                while buf.len() < chunk {
                    match rows.try_next().await? {
                        Some(r) => buf.push(r),
                        None => break,
                    }
                }
                let finished = buf.len() < chunk;
                if let Some(first) = buf.first() {
                    let map = ColumnMap::resolve(model, first)?;
                    let table = self.key_table(model, &map, &buf).await?;
                    let this = self.clone();
                    next_pending = Some(tokio::task::spawn_blocking(move || {
                        this.decrypt_derived::<T, R>(&map, &table, &buf)
                            .into_iter()
                            .collect::<Result<Vec<T>>>()
                    }));
                }
                if finished {
                    // Drain what is pending, then stop.
                    let out = match pending {
                        Some(p) => Some(p.await.map_err(|_| Error::Worker)??),
                        None => None,
                    };
                    return match (out, next_pending) {
                        (Some(out), next) => Ok(Some((out, (rows, next, true)))),
                        (None, Some(next)) => {
                            let out = next.await.map_err(|_| Error::Worker)??;
                            Ok(Some((out, (rows, None, true))))
                        }
                        (None, None) => Ok(None),
                    };
                }
            }
            match pending {
                Some(p) => {
                    let out = p.await.map_err(|_| Error::Worker)??;
                    Ok(Some((out, (rows, next_pending, done))))
                }
                None if next_pending.is_some() => {
                    Ok(Some((Vec::new(), (rows, next_pending, done))))
                }
                None => Ok(None),
            }
        })
        .boxed()
    }

    async fn kms_row_key<R: DbRow>(
        &self,
        model: &Model,
        map: &ColumnMap,
        row: &R,
    ) -> std::result::Result<RowKey, rowseal_core::Error> {
        let tenant = row
            .read_str(map.fields[model.tenant])
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let header = row
            .read_bytes(map.header)
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let pk_field = model.primary_key_field();
        let pk = row
            .read_value(map.fields[model.primary_key], pk_field.sql_type)
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let pk = if model.spec.binds_primary_key() {
            pk.key_bytes()
        } else {
            None
        };
        self.keys
            .open_row_key(&model.spec, tenant, pk.as_deref(), header)
            .await
    }
}

/// Most bytes of bound values one multi-row INSERT carries (MySQL's default
/// `max_allowed_packet` is 16 to 64 MiB).
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// Splits a flat batch of row values (`cols` per row) into groups of whole
/// rows of at most [`MAX_STATEMENT_BYTES`] (at least one row each).
fn split_by_bytes(values: Vec<Value>, cols: usize) -> Vec<Vec<Value>> {
    let size = |v: &Value| match v {
        Value::Bytes(b) => b.len() + 8,
        Value::Text(t) => t.len() + 8,
        _ => 16,
    };
    let total: usize = values.iter().map(size).sum();
    if total <= MAX_STATEMENT_BYTES || cols == 0 {
        return vec![values];
    }
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    let mut row = Vec::with_capacity(cols);
    for v in values {
        row.push(v);
        if row.len() == cols {
            let row_bytes: usize = row.iter().map(size).sum();
            if !current.is_empty() && current_bytes + row_bytes > MAX_STATEMENT_BYTES {
                groups.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += row_bytes;
            current.append(&mut row);
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The legacy plaintext columns (and their types) of the model's fields, or
/// of those whose column is in `only`.
fn plaintext_columns<'m>(
    model: &'m Model,
    only: Option<&'m [&str]>,
) -> impl Iterator<Item = (&'static str, SqlType)> + 'm {
    model
        .fields
        .iter()
        .filter(move |f| only.map_or(true, |o| o.contains(&f.column)))
        .filter_map(|f| f.plaintext_column)
}

/// Appends a NULL for each legacy plaintext column (see
/// [`plaintext_columns`]): writes never leave plaintext behind.
fn push_plaintext_nulls(model: &Model, only: Option<&[&str]>, out: &mut Vec<Value>) {
    out.extend(plaintext_columns(model, only).map(|(_, t)| Value::Null(t)));
}

/// The tenant-key version a header names, without a full parse.
fn header_version(header: &[u8]) -> Option<u32> {
    RowHeader::peek_tenant_key_version(header)
}

/// Reads one row: plain values and borrowed ciphertexts, then the row key
/// from `open_key(tenant, pk bytes, header)`, then the model.
fn decrypt_row<T: Encrypted, R: DbRow>(
    model: &Model,
    map: &ColumnMap,
    row: &R,
    open_key: impl FnOnce(
        &str,
        Option<&[u8]>,
        &[u8],
    ) -> std::result::Result<RowKey, rowseal_core::Error>,
) -> Result<T> {
    let mut cells = Vec::with_capacity(model.fields.len());
    let mut any_sealed = false;
    for ((f, &idx), legacy) in model.fields.iter().zip(&map.fields).zip(&map.plaintext) {
        let cell = if f.is_encrypted() {
            let sealed = row
                .read_opt_bytes(idx)
                .map_err(|e| sqlx_col(model, f.column, e))?;
            any_sealed |= sealed.is_some();
            match (legacy, f.plaintext_column) {
                (Some(l), Some((c, t))) => Cell::SealedOr(
                    sealed,
                    row.read_value(*l, t).map_err(|e| sqlx_col(model, c, e))?,
                ),
                _ => Cell::Sealed(sealed),
            }
        } else {
            Cell::Plain(
                row.read_value(idx, f.sql_type)
                    .map_err(|e| sqlx_col(model, f.column, e))?,
            )
        };
        cells.push(cell);
    }
    let pk_value = match &cells[model.primary_key] {
        Cell::Plain(v) => v.clone(),
        Cell::Sealed(_) | Cell::SealedOr(..) => Value::Null(SqlType::Bytes),
    };
    let tenant = row
        .read_str(map.fields[model.tenant])
        .map_err(|e| sqlx_col(model, model.tenant_field().column, e))?;
    let header = row
        .read_opt_bytes(map.header)
        .map_err(|e| sqlx_col(model, HEADER_COLUMN, e))?;
    let pk = if model.spec.binds_primary_key() {
        pk_value.key_bytes()
    } else {
        None
    };
    let decrypt_err = |e| Error::Decrypt {
        table: model.table().to_owned(),
        column: HEADER_COLUMN.to_owned(),
        primary_key: pk_value.key_display(),
        source: Box::new(e),
    };
    let key = match header {
        Some(header) => Some(open_key(tenant, pk.as_deref(), header).map_err(decrypt_err)?),
        // A legacy row (from before the table was adopted): no key header,
        // so no ciphertext either; its values are in the plaintext columns.
        None if !any_sealed => None,
        None => return Err(decrypt_err(rowseal_core::Error::Decrypt)),
    };
    T::read_row(&mut RowReader::new(
        key.as_ref(),
        cells,
        model.table(),
        &pk_value,
    ))
}

#[allow(dead_code)]
fn _assert_types() {
    fn send<T: Send + Sync>() {}
    send::<Encryptor>();
    let _ = SqlType::Bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_large_batches_by_bytes() {
        let row = |n: usize| vec![Value::I64(1), Value::Bytes(vec![0; n])];
        let small: Vec<Value> = (0..10).flat_map(|_| row(10)).collect();
        assert_eq!(split_by_bytes(small, 2).len(), 1);
        let big: Vec<Value> = (0..5).flat_map(|_| row(3 * 1024 * 1024)).collect();
        let groups = split_by_bytes(big, 2);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 10);
        assert!(groups.len() >= 2);
        assert!(groups.iter().all(|g| g.len() % 2 == 0 && !g.is_empty()));
        let huge = row(MAX_STATEMENT_BYTES * 2);
        assert_eq!(split_by_bytes(huge, 2).len(), 1);
    }
}
