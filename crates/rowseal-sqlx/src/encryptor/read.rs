//! Reading: fetch by primary key, run your query and decrypt its rows
//! (`fetch_all`, `fetch_optional`, `fetch_stream` and the pipeline behind
//! them), and decrypt rows you fetched yourself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rowseal_core::{FieldSet, KeyMode, KeysThrough, RecordKeys, RowHeader, RowKey};

use super::{check_row_format, sqlx_col, Encryptor};
use crate::backend::{AnyRow, Backend, DbRow};
use crate::error::{Error, Result};
use crate::keystore::ConnKeyStore;
use crate::model::{Cell, Encrypted, Model, ReadModel, RowReader, HEADER_COLUMN, PRESENT_PREFIX};
use crate::sealed::{Sealed, SealedReader};
use crate::telemetry::{op, rows_opened, scope_tenant};
use crate::tenant_scope::TenantScope;
use crate::value::{PrimaryKeyField, SqlType, Value};

/// Column positions of a model in a result row.
struct ColumnMap {
    fields: Vec<usize>,
    header: usize,
    /// Per absent field of a partial view: the position of its presence flag.
    absent: Vec<usize>,
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
            absent: model
                .absent
                .iter()
                .map(|f| find(&format!("{PRESENT_PREFIX}{}", f.column)))
                .collect::<Result<_>>()?,
            plaintext: model
                .fields
                .iter()
                .map(|f| f.plaintext_column.map(|(c, _)| find(c)).transpose())
                .collect::<Result<_>>()?,
        })
    }
}

/// The record keys of each (tenant, tenant-key version) a batch of rows names,
/// or why they could not be had (reported per row).
type KeyTable =
    HashMap<String, HashMap<u32, std::result::Result<Arc<RecordKeys>, rowseal_core::Error>>>;

impl Encryptor {
    /// Fetches and decrypts one row by primary key within a tenant. The
    /// row's tenant column must be byte-for-byte `tenant`
    /// ([`Error::TenantMismatch`] otherwise).
    ///
    /// Takes an [`sqlx::Acquire`] (`&Pool`, `&mut connection`, `&mut
    /// transaction`): a key missing from the cache is read on that
    /// connection (see [`Encryptor`] on keys inside transactions).
    pub async fn fetch<'a, T, A>(
        &self,
        conn: A,
        tenant: &str,
        primary_key: &T::PrimaryKey,
    ) -> Result<Option<T>>
    where
        T: ReadModel,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "fetch", T::model().table(), Some(tenant));
        op.run(
            async move {
                let sql = Self::__fetch_sql::<T, A::Database>();
                let values = vec![primary_key.key_value(), T::model().tenant_value(tenant)?];
                let mut conn = conn.acquire().await?;
                match <A::Database as Backend>::fetch_optional_on(&mut conn, &sql, values).await? {
                    Some(row) => {
                        let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                        let keys = self.keys.through(&reads);
                        Ok(Some(
                            self.decrypt_quiet(keys, TenantScope::One(tenant), &row)
                                .await?,
                        ))
                    }
                    None => Ok(None),
                }
            },
            |r| u64::from(r.is_some()),
        )
        .await
    }

    /// Fetches and decrypts the rows of `primary_keys` within a tenant, in
    /// the order of `primary_keys` (a key given twice: its row once; a key
    /// with no row in `tenant`: skipped). One statement (`WHERE <tenant> = ?
    /// AND <primary key> IN (...)`) per chunk of keys, each within the
    /// database's bind limit ([`Backend::MAX_PARAMS`]) and
    /// [`MAX_STATEMENT_BYTES`](crate::MAX_STATEMENT_BYTES) of keys. Text keys
    /// and the tenant are compared byte for byte whatever the collation, and
    /// every row's tenant is checked again before decryption
    /// ([`Error::TenantMismatch`]): a row of another tenant never comes back.
    ///
    /// Takes an [`sqlx::Acquire`] (`&Pool`, `&mut connection`, `&mut
    /// transaction`): the chunks run on one connection, each its own
    /// statement (use a transaction for one snapshot).
    pub async fn fetch_many<'a, T, A>(
        &self,
        conn: A,
        tenant: &str,
        primary_keys: &[T::PrimaryKey],
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        self.__fetch_many_in_chunks(conn, tenant, primary_keys, usize::MAX)
            .await
    }

    /// [`fetch_many`](Self::fetch_many) with at most `chunk` keys per
    /// statement (for tests of the chunking; `fetch_many` uses the
    /// database's limit).
    #[doc(hidden)]
    pub async fn __fetch_many_in_chunks<'a, T, A>(
        &self,
        conn: A,
        tenant: &str,
        primary_keys: &[T::PrimaryKey],
        chunk: usize,
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "fetch_many", T::model().table(), Some(tenant));
        op.run(
            async move {
                let model = T::model();
                let tenant_value = model.tenant_value(tenant)?;
                // Distinct keys, in first-seen order; a key's position by its
                // printable form (one per value of the key's type).
                let mut position: HashMap<String, usize> = HashMap::new();
                let mut keys: Vec<Value> = Vec::new();
                for pk in primary_keys {
                    let v = pk.key_value();
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        position.entry(v.key_display())
                    {
                        e.insert(keys.len());
                        keys.push(v);
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                // One bind is the tenant.
                let chunk = chunk.clamp(
                    1,
                    <A::Database as Backend>::MAX_PARAMS
                        .saturating_sub(1)
                        .max(1),
                );
                let size = |v: &Value| match v {
                    Value::Bytes(b) => b.len() + 8,
                    Value::Text(t) => t.len() + 8,
                    _ => 16,
                };
                let pk_field = model.primary_key_field();
                let exact = pk_field.sql_type == SqlType::Text;
                let mut found: Vec<Option<T>> =
                    std::iter::repeat_with(|| None).take(keys.len()).collect();
                let mut conn = conn.acquire().await?;
                let mut rest = keys.as_slice();
                while !rest.is_empty() {
                    let mut take = 0;
                    let mut bytes = 0;
                    for v in rest.iter().take(chunk) {
                        let s = size(v);
                        if take > 0 && bytes + s > crate::MAX_STATEMENT_BYTES {
                            break;
                        }
                        bytes += s;
                        take += 1;
                    }
                    let (group, tail) = rest.split_at(take);
                    rest = tail;
                    let mut sql = String::from("SELECT ");
                    sql.push_str(&Self::select_list::<T, A::Database>());
                    sql.push_str(" FROM ");
                    A::Database::push_ident(&mut sql, model.table());
                    sql.push_str(" WHERE ");
                    super::push_tenant_condition::<A::Database>(model, &mut sql, 1);
                    sql.push_str(" AND ");
                    A::Database::push_ident(&mut sql, pk_field.column);
                    sql.push_str(" IN (");
                    for i in 0..group.len() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        if exact {
                            A::Database::push_exact_text_placeholder(&mut sql, i + 2);
                        } else {
                            A::Database::push_placeholder(&mut sql, i + 2);
                        }
                    }
                    sql.push(')');
                    let mut binds = Vec::with_capacity(group.len() + 1);
                    binds.push(tenant_value.clone());
                    binds.extend(group.iter().cloned());
                    let rows =
                        <A::Database as Backend>::__fetch_all_on(&mut conn, &sql, binds).await?;
                    let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                    let decrypted = self
                        .decrypt_owned::<T, _>(self.keys.through(&reads), tenant.into(), rows)
                        .await?;
                    let decrypted = decrypted.into_iter().collect::<Result<Vec<T>>>()?;
                    for row in decrypted {
                        // Only rows of the keys asked for (byte for byte).
                        if let Some(&i) = position.get(&row.primary_key_value().key_display()) {
                            if let Some(slot) = found.get_mut(i) {
                                *slot = Some(row);
                            }
                        }
                    }
                }
                Ok(found.into_iter().flatten().collect())
            },
            |v| v.len() as u64,
        )
        .await
    }

    /// Runs your query (which must select the model's columns, see
    /// [`select_list`](Self::select_list)) and decrypts every row. Every row
    /// must belong to `tenant` (a [`TenantScope`]; a `&str` is one tenant).
    pub async fn fetch_all<'q, 'c, 't, T, DB, E>(
        &self,
        tenant: impl Into<TenantScope<'t>>,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> Result<Vec<T>>
    where
        T: ReadModel,
        DB: Backend,
        E: 'q + sqlx::Executor<'c, Database = DB>,
        'c: 'q,
    {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(self, "fetch_all", T::model().table(), scope_tenant(&scope));
        op.run(
            async move {
                let mut out = Vec::new();
                let mut chunks = self.pipeline::<T, DB::Row>(
                    scope,
                    DB::query_stream(query, executor),
                    self.fetch_chunk(),
                );
                while let Some(mut v) = chunks.try_next().await? {
                    out.append(&mut v);
                }
                Ok(out)
            },
            |v| v.len() as u64,
        )
        .await
    }

    /// Runs your query and decrypts the row it returns, if any (which must
    /// belong to `tenant`).
    pub async fn fetch_optional<'q, 'c, 't, T, DB, E>(
        &self,
        tenant: impl Into<TenantScope<'t>>,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> Result<Option<T>>
    where
        T: ReadModel,
        DB: Backend,
        E: 'q + sqlx::Executor<'c, Database = DB>,
        'c: 'q,
    {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "fetch_optional",
            T::model().table(),
            scope_tenant(&scope)
        );
        op.run(
            async move {
                match DB::query_optional(query, executor).await? {
                    Some(row) => Ok(Some(
                        self.decrypt_quiet(self.keys.through_own_store(), scope, &row)
                            .await?,
                    )),
                    None => Ok(None),
                }
            },
            |r| u64::from(r.is_some()),
        )
        .await
    }

    /// Runs your query and yields decrypted rows as a stream, decrypting
    /// [`with_stream_chunk`](Self::with_stream_chunk) rows at a time (on the
    /// [`CryptoPool`](crate::CryptoPool) for large chunks, while the next
    /// chunk is received): memory stays bounded whatever the row count.
    /// Every row must belong to `tenant`.
    pub fn fetch_stream<'e, 'q, 'c, T, DB, E>(
        &'e self,
        tenant: impl Into<TenantScope<'e>>,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
        executor: E,
    ) -> BoxStream<'e, Result<T>>
    where
        T: ReadModel,
        DB: Backend,
        E: 'e + sqlx::Executor<'c, Database = DB>,
        'q: 'e,
        'c: 'e,
    {
        let scope = tenant.into();
        let op = op!(
            self,
            "fetch_stream",
            T::model().table(),
            scope_tenant(&scope)
        );
        let rows = self
            .pipeline::<T, DB::Row>(scope, DB::query_stream(query, executor), self.stream_chunk)
            .map_ok(|v| futures_util::stream::iter(v.into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        op.stream(rows).boxed()
    }

    /// Decrypts one row of your own query, which must belong to `tenant`.
    pub async fn decrypt<'t, T: ReadModel, R: DbRow>(
        &self,
        tenant: impl Into<TenantScope<'t>>,
        row: &R,
    ) -> Result<T> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(self, "decrypt", T::model().table(), scope_tenant(&scope));
        op.run(
            async move {
                self.decrypt_quiet(self.keys.through_own_store(), scope, row)
                    .await
            },
            |_| 1,
        )
        .await
    }

    /// [`decrypt`](Self::decrypt) without a span of its own (inside
    /// another operation's).
    pub(super) async fn decrypt_quiet<T: ReadModel, R: DbRow>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        row: &R,
    ) -> Result<T> {
        self.decrypt_scoped(keys, scope, std::slice::from_ref(row))
            .await?
            .pop()
            .ok_or(Error::Worker)?
    }

    /// Decrypts rows of your own query; the first failing row fails the call
    /// (see [`decrypt_each`](Self::decrypt_each) to keep the others). Large
    /// batches are decrypted on the [`CryptoPool`](crate::CryptoPool),
    /// awaited without blocking the calling thread: each row's columns are
    /// copied out of `rows` here first (they are only borrowed; rows of a
    /// model with `sql_type` fields, which decode from the row itself, are
    /// decrypted on the calling thread instead: [`fetch_all`](Self::fetch_all)
    /// moves its rows to the pool whole). Every row must belong to `tenant`.
    pub async fn decrypt_all<'t, T: ReadModel, R: DbRow>(
        &self,
        tenant: impl Into<TenantScope<'t>>,
        rows: &[R],
    ) -> Result<Vec<T>> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "decrypt_all",
            T::model().table(),
            scope_tenant(&scope)
        );
        op.run(
            async move {
                self.decrypt_scoped(self.keys.through_own_store(), scope, rows)
                    .await?
                    .into_iter()
                    .collect()
            },
            |v: &Vec<T>| v.len() as u64,
        )
        .await
    }

    /// Decrypts rows of your own query, one result per row: a tampered row
    /// fails alone. The outer error is for what fails the whole batch (a
    /// column missing from the query, the key store). A row of another
    /// tenant than `tenant` is [`Error::TenantMismatch`], and no key of its
    /// tenant is fetched.
    pub async fn decrypt_each<'t, T: ReadModel, R: DbRow>(
        &self,
        tenant: impl Into<TenantScope<'t>>,
        rows: &[R],
    ) -> Result<Vec<Result<T>>> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "decrypt_each",
            T::model().table(),
            scope_tenant(&scope)
        );
        op.run(
            async move {
                self.decrypt_scoped(self.keys.through_own_store(), scope, rows)
                    .await
            },
            |v| v.len() as u64,
        )
        .await
    }

    /// Decrypts rows (one result per row), counting the rows opened and
    /// those that failed.
    pub(super) async fn decrypt_scoped<T: ReadModel, R: DbRow>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        rows: &[R],
    ) -> Result<Vec<Result<T>>> {
        let out = self.decrypt_uncounted(keys, scope, rows).await?;
        rows_opened(T::model(), &out);
        Ok(out)
    }

    async fn decrypt_uncounted<T: ReadModel, R: DbRow>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        rows: &[R],
    ) -> Result<Vec<Result<T>>> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let model = T::model();
        let map = ColumnMap::resolve(model, first)?;
        match model.spec.key_mode() {
            KeyMode::Derived => {
                let table = self.key_table(keys, scope, model, &map, rows).await?;
                let decrypt = |row: &R| decrypt_derived_row(scope, model, &map, &table, row);
                if !self.pooled(rows.len()) {
                    return Ok(rows.iter().map(decrypt).collect());
                }
                if reads_from_row(model) {
                    // A sql_type field decodes from the row itself, which
                    // cannot cross to the pool: here, a slice at a time,
                    // letting the runtime run other tasks in between.
                    let mut out = Vec::with_capacity(rows.len());
                    for part in rows.chunks(INLINE_SLICE) {
                        out.extend(part.iter().map(decrypt));
                        tokio::task::yield_now().await;
                    }
                    return Ok(out);
                }
                // The rows are borrowed: their cells are copied here (no
                // crypto; a slice at a time, letting the runtime run other
                // tasks in between), then opened on the crypto pool.
                let mut copies = CopiedRows::default();
                for part in rows.chunks(COPY_SLICE) {
                    copies.read(model, &map, part);
                    tokio::task::yield_now().await;
                }
                let CopiedRows { bytes, rows } = copies;
                let owned = OwnedScope::of(scope);
                self.map_each_mut(rows, move |copy| match copy {
                    Ok(copy) => copy.open(&bytes, owned.scope(), model, |t, pk, h, p| {
                        derived_row_key(&table, t, pk, h, p)
                    }),
                    Err(e) => Err(std::mem::replace(e, Error::Worker)),
                })
                .await
            }
            _ => {
                // A data key per row, unwrapped by the provider: up to
                // `provider_concurrency` calls in flight, results in row order
                // (one row after another, a 20 ms round trip is 50 rows a
                // second whatever the provider could answer).
                use futures_util::StreamExt as _;
                let map = &map;
                let mut keys = Vec::with_capacity(rows.len());
                let mut pending = futures_util::stream::FuturesOrdered::new();
                let mut next = rows.iter();
                loop {
                    while pending.len() < self.provider_concurrency {
                        let Some(row) = next.next() else { break };
                        pending.push_back(self.admitted_kms_row_key(scope, model, map, row));
                    }
                    match pending.next().await {
                        Some(key) => keys.push(key),
                        None => break,
                    }
                }
                Ok(rows
                    .iter()
                    .zip(keys)
                    .map(|(row, key)| {
                        decrypt_row::<T, R>(scope, model, map, row, move |_, _, _, _| key)
                    })
                    .collect())
            }
        }
    }

    /// The record keys of every (tenant, key version) the rows name.
    async fn key_table<R: DbRow>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        model: &Model,
        map: &ColumnMap,
        rows: &[R],
    ) -> Result<KeyTable> {
        let (tenant_idx, tenant_type) = (map.fields[model.tenant], model.tenant_field().sql_type);
        self.key_table_of(
            keys,
            scope,
            model,
            rows.iter().map(|row| {
                // Unreadable rows are reported per row.
                Some((
                    row.read_tenant(tenant_idx, tenant_type).ok()?,
                    row.read_bytes(map.header).ok()?,
                ))
            }),
        )
        .await
    }

    /// The record keys of every (tenant, key version) named by `heads`, each
    /// row's tenant and key header (`None`: a row reported on its own).
    async fn key_table_of<'a>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        model: &Model,
        heads: impl Iterator<Item = Option<(Cow<'a, str>, &'a [u8])>>,
    ) -> Result<KeyTable> {
        let mut table: KeyTable = HashMap::new();
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for (tenant, header) in heads.flatten() {
            if !scope.admits(&tenant) || check_row_format(header).is_err() {
                continue; // refused per row, with no key fetched
            }
            let Some(version) = header_version(header) else {
                continue;
            };
            let known = table
                .get(&*tenant)
                .is_some_and(|m| m.contains_key(&version));
            if !known {
                table
                    .entry(tenant.clone().into_owned())
                    .or_default()
                    .insert(version, Err(rowseal_core::Error::Decrypt));
                wanted.push((tenant.into_owned(), version));
            }
        }
        for (tenant, version) in wanted {
            let r = match keys.record_keys(&model.spec, &tenant, version).await {
                Err(e @ rowseal_core::Error::Store { .. }) => return Err(e),
                r => r,
            };
            if let Some(m) = table.get_mut(&tenant) {
                m.insert(version, r);
            }
        }
        Ok(table)
    }

    /// [`decrypt_each`](Self::decrypt_each) of rows the caller gives away:
    /// a large batch is moved whole to the crypto pool (no copy, `sql_type`
    /// fields included).
    pub(super) async fn decrypt_owned<T: ReadModel, R: DbRow>(
        &self,
        keys: KeysThrough<'_>,
        scope: TenantScope<'_>,
        rows: Vec<R>,
    ) -> Result<Vec<Result<T>>> {
        let model = T::model();
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        if model.spec.key_mode() != KeyMode::Derived || !self.pooled(rows.len()) {
            return self.decrypt_scoped(keys, scope, &rows).await;
        }
        let map = ColumnMap::resolve(model, first)?;
        let table = self.key_table(keys, scope, model, &map, &rows).await?;
        let owned = OwnedScope::of(scope);
        let out = self
            .map_each_mut(rows, move |row: &mut R| {
                decrypt_derived_row(owned.scope(), model, &map, &table, row)
            })
            .await?;
        rows_opened(model, &out);
        Ok(out)
    }

    /// Pipelined decryption of a row stream: while one chunk is decrypted
    /// (on the crypto pool, for a large chunk), the next chunk is received.
    /// Yields one `Vec` of results per chunk.
    fn pipeline<'e, T, R>(
        &'e self,
        scope: TenantScope<'e>,
        rows: BoxStream<'e, Result<R>>,
        chunk: usize,
    ) -> BoxStream<'e, Result<Vec<T>>>
    where
        T: ReadModel,
        R: DbRow,
    {
        let model = T::model();
        if model.spec.key_mode() != KeyMode::Derived {
            return rows
                .try_chunks(chunk)
                .map_err(|e| e.1)
                .and_then(move |rows| async move {
                    self.decrypt_scoped::<T, R>(self.keys.through_own_store(), scope, &rows)
                        .await?
                        .into_iter()
                        .collect()
                })
                .boxed();
        }
        type Pending<T> = BoxFuture<'static, Result<Vec<T>>>;
        let state: (BoxStream<'e, Result<R>>, Option<Pending<T>>, bool) = (rows, None, false);
        futures_util::stream::try_unfold(state, move |(mut rows, pending, done)| async move {
            let mut next_pending = None;
            if !done {
                // Grown as rows come: `chunk` may be far more than arrive.
                let mut buf = Vec::with_capacity(chunk.min(4096));
                while buf.len() < chunk {
                    match rows.try_next().await? {
                        Some(r) => buf.push(r),
                        None => break,
                    }
                }
                let finished = buf.len() < chunk;
                if let Some(first) = buf.first() {
                    let map = ColumnMap::resolve(model, first)?;
                    let table = self
                        .key_table(self.keys.through_own_store(), scope, model, &map, &buf)
                        .await?;
                    let owned = OwnedScope::of(scope);
                    // Started now: a large chunk runs on the crypto pool
                    // while the next one is received.
                    let task = self.spawn_map_each_mut(buf, move |row: &mut R| {
                        decrypt_derived_row(owned.scope(), model, &map, &table, row)
                    });
                    // Counted where the chunk is awaited (this task), then
                    // the first failure fails the chunk.
                    let chunk: Pending<T> = Box::pin(async move {
                        let out = task.await?;
                        rows_opened(model, &out);
                        out.into_iter().collect::<Result<Vec<T>>>()
                    });
                    next_pending = Some(chunk);
                }
                if finished {
                    // Drain what is pending, then stop.
                    let out = match pending {
                        Some(p) => Some(p.await?),
                        None => None,
                    };
                    return match (out, next_pending) {
                        (Some(out), next) => Ok(Some((out, (rows, next, true)))),
                        (None, Some(next)) => {
                            let out = next.await?;
                            Ok(Some((out, (rows, None, true))))
                        }
                        (None, None) => Ok(None),
                    };
                }
            }
            match pending {
                Some(p) => {
                    let out = p.await?;
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

    /// Opens a sealed row (from `sqlx::query_as!`, `query_as` or the
    /// generated type's `FromRow`) into its model. The row must belong to
    /// `tenant` (a [`TenantScope`]; a `&str` is one tenant, by canonical id):
    /// a row of another tenant is [`Error::TenantMismatch`] and no key of
    /// its tenant is fetched.
    ///
    /// ```ignore
    /// let rows = sqlx::query_as!(PatientSealed,
    ///         "SELECT id, tenant_id, name, dob, visits, rowseal_header
    ///          FROM patients WHERE tenant_id = $1 AND visits > $2", tenant, 3)
    ///     .fetch_all(&pool).await?;
    /// let patients: Vec<Patient> = enc.open_all(rows, &*tenant.to_string()).await?;
    /// ```
    pub async fn open<'t, S: Sealed>(
        &self,
        sealed: S,
        tenant: impl Into<TenantScope<'t>>,
    ) -> Result<S::Model> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "open",
            S::Model::model().table(),
            scope_tenant(&scope)
        );
        op.run(
            async move {
                self.open_quiet(vec![sealed], scope)
                    .await?
                    .pop()
                    .ok_or(Error::Worker)?
            },
            |_| 1,
        )
        .await
    }

    /// Opens sealed rows; the first failing row fails the call (see
    /// [`open_each`](Self::open_each) to keep the others). Large batches
    /// are opened on the [`CryptoPool`](crate::CryptoPool), awaited without
    /// blocking the calling thread, with each
    /// (tenant, key version) looked up once.
    pub async fn open_all<'t, S: Sealed>(
        &self,
        rows: Vec<S>,
        tenant: impl Into<TenantScope<'t>>,
    ) -> Result<Vec<S::Model>> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "open_all",
            S::Model::model().table(),
            scope_tenant(&scope)
        );
        op.run(
            async move { self.open_quiet(rows, scope).await?.into_iter().collect() },
            |v: &Vec<S::Model>| v.len() as u64,
        )
        .await
    }

    /// Opens sealed rows, one result per row: a tampered row, or a row of
    /// another tenant than `tenant` ([`Error::TenantMismatch`]), fails
    /// alone. The outer error is for what fails the whole batch (the key
    /// store).
    pub async fn open_each<'t, S: Sealed>(
        &self,
        rows: Vec<S>,
        tenant: impl Into<TenantScope<'t>>,
    ) -> Result<Vec<Result<S::Model>>> {
        let scope: TenantScope<'t> = tenant.into();
        let op = op!(
            self,
            "open_each",
            S::Model::model().table(),
            scope_tenant(&scope)
        );
        op.run(async move { self.open_quiet(rows, scope).await }, |v| {
            v.len() as u64
        })
        .await
    }

    /// [`open_each`](Self::open_each) without a span of its own, counting
    /// the rows opened and those that failed.
    async fn open_quiet<S: Sealed>(
        &self,
        rows: Vec<S>,
        scope: TenantScope<'_>,
    ) -> Result<Vec<Result<S::Model>>> {
        let out = self.open_uncounted(rows, scope).await?;
        rows_opened(S::Model::model(), &out);
        Ok(out)
    }

    async fn open_uncounted<S: Sealed>(
        &self,
        rows: Vec<S>,
        scope: TenantScope<'_>,
    ) -> Result<Vec<Result<S::Model>>> {
        let model = S::Model::model();
        if model.spec.key_mode() != KeyMode::Derived {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let key = if scope.admits(&row.tenant_id()) {
                    self.kms_sealed_key(model, &row).await
                } else {
                    Err(rowseal_core::Error::Decrypt) // refused below, by name
                };
                out.push(open_sealed(scope, model, row, move |_, _, _, _| key));
            }
            return Ok(out);
        }
        let table = self
            .key_table_of(
                self.keys.through_own_store(),
                scope,
                model,
                rows.iter().map(|r| Some((r.tenant_id(), r.header()?))),
            )
            .await?;
        if !self.pooled(rows.len()) {
            return Ok(rows
                .into_iter()
                .map(|row| {
                    open_sealed(scope, model, row, |t, pk, h, p| {
                        derived_row_key(&table, t, pk, h, p)
                    })
                })
                .collect());
        }
        let owned = OwnedScope::of(scope);
        self.map_each(rows, move |row| {
            open_sealed(owned.scope(), model, row, |t, pk, h, p| {
                derived_row_key(&table, t, pk, h, p)
            })
        })
        .await
    }

    /// The row key of a `kms`-mode sealed row (one key-provider call).
    async fn kms_sealed_key<S: Sealed>(
        &self,
        model: &Model,
        row: &S,
    ) -> std::result::Result<RowKey, rowseal_core::Error> {
        let header = row.header().ok_or(rowseal_core::Error::Decrypt)?;
        check_row_format(header)?;
        let pk = model.primary_key_bytes(&row.primary_key_value())?;
        let present = sealed_present(model, row)?;
        self.keys
            .open_row_key(
                &model.spec,
                &row.tenant_id(),
                pk.as_deref(),
                header,
                &present,
            )
            .await
    }

    /// [`kms_row_key`](Self::kms_row_key) of a row the scope admits; no
    /// provider call for one it refuses.
    async fn admitted_kms_row_key<R: DbRow>(
        &self,
        scope: TenantScope<'_>,
        model: &Model,
        map: &ColumnMap,
        row: &R,
    ) -> std::result::Result<RowKey, rowseal_core::Error> {
        let admitted = row
            .read_tenant(map.fields[model.tenant], model.tenant_field().sql_type)
            .is_ok_and(|t| scope.admits(&t));
        if !admitted {
            return Err(rowseal_core::Error::Decrypt);
        }
        self.kms_row_key(model, map, row).await
    }

    async fn kms_row_key<R: DbRow>(
        &self,
        model: &Model,
        map: &ColumnMap,
        row: &R,
    ) -> std::result::Result<RowKey, rowseal_core::Error> {
        let tenant = row
            .read_tenant(map.fields[model.tenant], model.tenant_field().sql_type)
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let header = row
            .read_bytes(map.header)
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let pk_field = model.primary_key_field();
        let pk = row
            .read_value(map.fields[model.primary_key], pk_field.sql_type)
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let pk = model.primary_key_bytes(&pk)?;
        check_row_format(header)?;
        let flags = map
            .absent
            .iter()
            .map(|&i| read_flag(row, i))
            .collect::<std::result::Result<Vec<bool>, _>>()
            .map_err(|_| rowseal_core::Error::Decrypt)?;
        let present = present_fields(
            model,
            model.fields.iter().zip(&map.fields).map(|(f, &idx)| {
                f.is_encrypted() && row.read_opt_bytes(idx).is_ok_and(|b| b.is_some())
            }),
            flags.into_iter(),
        )?;
        self.keys
            .open_row_key(&model.spec, &tenant, pk.as_deref(), header, &present)
            .await
    }
}

/// The logical names of the encrypted fields whose ciphertext is not NULL
/// (`sealed`: per model field, whether it holds one; `absent`: per absent
/// field of a partial view, whether it is present): what a format 2 header
/// was sealed with (format 1 ignores it).
fn present_fields(
    model: &Model,
    sealed: impl Iterator<Item = bool>,
    absent: impl Iterator<Item = bool>,
) -> std::result::Result<FieldSet, rowseal_core::Error> {
    FieldSet::new(
        model
            .fields
            .iter()
            .zip(sealed)
            .filter(|(f, sealed)| f.is_encrypted() && *sealed)
            .chain(model.absent.iter().zip(absent))
            .filter(|(_, present)| *present)
            .map(|(f, _)| f.logical),
    )
}

/// Whether an absent field of a partial view is present in `row` (its
/// `(<column> IS NOT NULL)` flag: a boolean on PostgreSQL, an integer on
/// MySQL/MariaDB and SQLite).
fn read_flag<R: DbRow>(row: &R, idx: usize) -> std::result::Result<bool, sqlx::Error> {
    match row.read_value(idx, SqlType::Bool) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(_) => Ok(false),
        Err(_) => match row.read_value(idx, SqlType::I64)? {
            Value::I64(v) => Ok(v != 0),
            _ => Ok(false),
        },
    }
}

/// [`Error::TenantMismatch`] unless `scope` admits a row of `tenant` (the
/// check every decryption makes before any key is fetched).
fn admit(scope: TenantScope<'_>, model: &Model, tenant: &str, pk: &Value) -> Result<()> {
    if scope.admits(tenant) {
        Ok(())
    } else {
        Err(Error::TenantMismatch {
            table: model.table().to_owned(),
            primary_key: pk.key_display(),
        })
    }
}

/// A row whose key could not be had from its header: the core's reason,
/// named by table and primary key.
fn header_failure(model: &Model, pk: &Value, e: rowseal_core::Error) -> Error {
    Error::Field {
        table: model.table().to_owned(),
        column: HEADER_COLUMN.to_owned(),
        primary_key: pk.key_display(),
        source: Box::new(e),
    }
}

/// The present encrypted fields of a sealed row.
fn sealed_present<S: Sealed>(
    model: &Model,
    row: &S,
) -> std::result::Result<FieldSet, rowseal_core::Error> {
    present_fields(
        model,
        (0..model.fields.len()).map(|i| row.ciphertext(i).is_some()),
        std::iter::empty(),
    )
}

/// Opens one sealed row: the tenant check, then the row key from
/// `open_key(tenant, pk bytes, header, present fields)`, then the model.
fn open_sealed<S: Sealed>(
    scope: TenantScope<'_>,
    model: &'static Model,
    row: S,
    open_key: impl OpenRowKey,
) -> Result<S::Model> {
    let pk_value = row.primary_key_value();
    let tenant = row.tenant_id();
    admit(scope, model, &tenant, &pk_value)?;
    let decrypt_err = |e| header_failure(model, &pk_value, e);
    // Sealed types exist only for models without legacy (header-less) rows:
    // a NULL header is tampering.
    let header = row
        .header()
        .ok_or_else(|| decrypt_err(rowseal_core::Error::Decrypt))?;
    let pk = model.primary_key_bytes(&pk_value).map_err(decrypt_err)?;
    let present = sealed_present(model, &row).map_err(decrypt_err)?;
    let key = open_key(&tenant, pk.as_deref(), header, &present).map_err(decrypt_err)?;
    drop(tenant);
    row.open_with(&SealedReader::new(Some(&key), model, &pk_value))
}

/// A `derived`-mode row key from the record keys at hand.
fn derived_row_key(
    table: &KeyTable,
    tenant: &str,
    pk: Option<&[u8]>,
    header: &[u8],
    present: &FieldSet,
) -> std::result::Result<RowKey, rowseal_core::Error> {
    // A header this build cannot peek at is reported for what it is
    // (another format version: UnsupportedFormat; cut short: Malformed), not
    // as tampering.
    check_row_format(header)?;
    let version = match header_version(header) {
        Some(v) => v,
        None => return Err(header_error(header)),
    };
    match table.get(tenant).and_then(|m| m.get(&version)) {
        Some(Ok(rk)) => rk.open_row(pk, header, present),
        Some(Err(e)) => Err(e.clone()),
        None => Err(rowseal_core::Error::Decrypt),
    }
}

/// Why a header has no tenant-key version to peek at: the full parse's
/// typed error (`UnsupportedFormat` for another format version,
/// `Malformed`), or the opaque `Decrypt` (a `kms`-mode header in a
/// `derived`-mode table).
fn header_error(header: &[u8]) -> rowseal_core::Error {
    match RowHeader::from_bytes(header) {
        Err(e) => e,
        Ok(_) => rowseal_core::Error::Decrypt,
    }
}

/// The tenant-key version a header names, without a full parse.
fn header_version(header: &[u8]) -> Option<u32> {
    RowHeader::peek_tenant_key_version(header)
}

/// How every read path finds a row's key once the row is admitted:
/// `open_key(tenant, primary-key bytes, header, present fields)` (from the
/// batch's key table in `derived` mode, from the provider in `kms` mode).
trait OpenRowKey:
    FnOnce(&str, Option<&[u8]>, &[u8], &FieldSet) -> std::result::Result<RowKey, rowseal_core::Error>
{
}

impl<F> OpenRowKey for F where
    F: FnOnce(
        &str,
        Option<&[u8]>,
        &[u8],
        &FieldSet,
    ) -> std::result::Result<RowKey, rowseal_core::Error>
{
}

/// Rows decrypted on the calling thread between two turns of the runtime
/// (a large batch that cannot go to the crypto pool).
const INLINE_SLICE: usize = 128;
/// Rows copied out of borrowed rows between two turns of the runtime.
const COPY_SLICE: usize = 1024;

/// Whether `model` has a plain field decoded from the row itself (a
/// `sql_type` field): its rows can only be decrypted where they are.
fn reads_from_row(model: &Model) -> bool {
    model
        .fields
        .iter()
        .any(|f| !f.is_encrypted() && f.sql_type == SqlType::Other)
}

/// Decrypts one `derived`-mode row with the record keys at hand (no I/O).
fn decrypt_derived_row<T: ReadModel, R: DbRow>(
    scope: TenantScope<'_>,
    model: &'static Model,
    map: &ColumnMap,
    table: &KeyTable,
    row: &R,
) -> Result<T> {
    decrypt_row::<T, R>(scope, model, map, row, |tenant, pk, header, present| {
        derived_row_key(table, tenant, pk, header, present)
    })
}

/// Reads one row: plain values and borrowed ciphertexts, then the row key
/// from `open_key(tenant, pk bytes, header, present fields)`, then the model.
fn decrypt_row<T: ReadModel, R: DbRow>(
    scope: TenantScope<'_>,
    model: &'static Model,
    map: &ColumnMap,
    row: &R,
    open_key: impl OpenRowKey,
) -> Result<T> {
    let cells = RowCells::read(model, map, row)?;
    cells.open(scope, model, Some(row.any_row()), open_key)
}

/// What decrypting a row reads from it before any key: the cells (plain
/// values, borrowed ciphertexts), the absent fields' presence flags, the
/// tenant and the key header.
struct RowCells<'r> {
    cells: Vec<Cell<'r>>,
    any_sealed: bool,
    flags: Vec<bool>,
    tenant: Cow<'r, str>,
    header: Option<&'r [u8]>,
}

impl<'r> RowCells<'r> {
    fn read<R: DbRow>(model: &'static Model, map: &ColumnMap, row: &'r R) -> Result<Self> {
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
            } else if f.sql_type == SqlType::Other {
                Cell::Raw(idx)
            } else {
                Cell::Plain(
                    row.read_value(idx, f.sql_type)
                        .map_err(|e| sqlx_col(model, f.column, e))?,
                )
            };
            cells.push(cell);
        }
        let flags = model
            .absent
            .iter()
            .zip(&map.absent)
            .map(|(f, &i)| read_flag(row, i).map_err(|e| sqlx_col(model, f.column, e)))
            .collect::<Result<Vec<bool>>>()?;
        let tenant = row
            .read_tenant(map.fields[model.tenant], model.tenant_field().sql_type)
            .map_err(|e| sqlx_col(model, model.tenant_field().column, e))?;
        let header = row
            .read_opt_bytes(map.header)
            .map_err(|e| sqlx_col(model, HEADER_COLUMN, e))?;
        Ok(RowCells {
            cells,
            any_sealed,
            flags,
            tenant,
            header,
        })
    }

    /// The tenant check, then the row key from `open_key(tenant, pk bytes,
    /// header, present fields)`, then the model (`row`: the row itself, for
    /// `sql_type` fields).
    fn open<T: ReadModel>(
        self,
        scope: TenantScope<'_>,
        model: &'static Model,
        row: Option<AnyRow<'_>>,
        open_key: impl OpenRowKey,
    ) -> Result<T> {
        let RowCells {
            cells,
            any_sealed,
            flags,
            tenant,
            header,
        } = self;
        let pk_value = match &cells[model.primary_key] {
            Cell::Plain(v) => v.clone(),
            Cell::Raw(_) => Value::Null(SqlType::Other),
            Cell::Sealed(_) | Cell::SealedOr(..) => Value::Null(SqlType::Bytes),
        };
        admit(scope, model, &tenant, &pk_value)?;
        let decrypt_err = |e| header_failure(model, &pk_value, e);
        let pk = model.primary_key_bytes(&pk_value).map_err(decrypt_err)?;
        let key = match header {
            Some(header) => {
                // Format 2 binds which encrypted fields are present: a field
                // NULLed or filled since the write fails here.
                // From the cells already read: no column is decoded twice.
                let present = present_fields(
                    model,
                    cells
                        .iter()
                        .map(|c| matches!(c, Cell::Sealed(Some(_)) | Cell::SealedOr(Some(_), _))),
                    flags.into_iter(),
                )
                .map_err(decrypt_err)?;
                Some(open_key(&tenant, pk.as_deref(), header, &present).map_err(decrypt_err)?)
            }
            // A legacy row (from before the table was adopted): no key header,
            // so no ciphertext either; its values are in the plaintext columns.
            // Only models adopted from plaintext columns have such rows: for any
            // other, a NULL header (with its ciphertexts NULLed too) is
            // tampering, not a row of NULL fields.
            None if !any_sealed && model.has_legacy_rows() => None,
            None => return Err(decrypt_err(rowseal_core::Error::Decrypt)),
        };
        T::read_row(&mut RowReader::new(
            key.as_ref(),
            row,
            cells,
            model,
            &pk_value,
        ))
    }
}

/// Rows' [`RowCells`] copied out of rows that are only borrowed, to be
/// opened on the crypto pool (never for a model with `sql_type` fields:
/// those decode from the row itself). The bytes of every row (ciphertexts,
/// headers, tenants) are in one buffer: a few allocations per batch rather
/// than several per row.
#[derive(Default)]
struct CopiedRows {
    bytes: Vec<u8>,
    rows: Vec<Result<CopiedRow>>,
}

/// One row of [`CopiedRows`]: its bytes as ranges of the buffer.
struct CopiedRow {
    cells: Vec<CopiedCell>,
    any_sealed: bool,
    flags: Vec<bool>,
    tenant: Range<usize>,
    header: Option<Range<usize>>,
}

/// A [`Cell`] of a [`CopiedRow`].
enum CopiedCell {
    Plain(Value),
    Raw(usize),
    Sealed(Option<Range<usize>>),
    SealedOr(Option<Range<usize>>, Value),
}

impl CopiedRows {
    /// Copies `rows` in, after those already there.
    fn read<R: DbRow>(&mut self, model: &'static Model, map: &ColumnMap, rows: &[R]) {
        let bytes = &mut self.bytes;
        let mut push = |b: &[u8]| {
            let start = bytes.len();
            bytes.extend_from_slice(b);
            start..bytes.len()
        };
        let copied = rows.iter().map(|row| {
            let c = RowCells::read(model, map, row)?;
            let cells = c
                .cells
                .into_iter()
                .map(|cell| match cell {
                    Cell::Plain(v) => CopiedCell::Plain(v),
                    Cell::Raw(i) => CopiedCell::Raw(i),
                    Cell::Sealed(b) => CopiedCell::Sealed(b.map(&mut push)),
                    Cell::SealedOr(b, v) => CopiedCell::SealedOr(b.map(&mut push), v),
                })
                .collect();
            Ok(CopiedRow {
                cells,
                any_sealed: c.any_sealed,
                flags: c.flags,
                tenant: push(c.tenant.as_bytes()),
                header: c.header.map(&mut push),
            })
        });
        self.rows.extend(copied);
    }
}

impl CopiedRow {
    /// [`RowCells::open`] of the copy, its bytes in `bytes` (with no row: a
    /// `sql_type` cell would be a schema error). Its plain values are moved
    /// out; the rest is dropped with the batch.
    fn open<T: ReadModel>(
        &mut self,
        bytes: &[u8],
        scope: TenantScope<'_>,
        model: &'static Model,
        open_key: impl OpenRowKey,
    ) -> Result<T> {
        // The ranges were made from this buffer: never out of it.
        let at = |r: &Range<usize>| bytes.get(r.clone()).ok_or(Error::Worker);
        let moved = || Value::Null(SqlType::Bytes);
        let mut cells = Vec::with_capacity(self.cells.len());
        for cell in &mut self.cells {
            cells.push(match cell {
                CopiedCell::Plain(v) => Cell::Plain(std::mem::replace(v, moved())),
                CopiedCell::Raw(i) => Cell::Raw(*i),
                CopiedCell::Sealed(b) => Cell::Sealed(b.as_ref().map(at).transpose()?),
                CopiedCell::SealedOr(b, v) => Cell::SealedOr(
                    b.as_ref().map(at).transpose()?,
                    std::mem::replace(v, moved()),
                ),
            });
        }
        let tenant = std::str::from_utf8(at(&self.tenant)?).map_err(|_| Error::Worker)?;
        RowCells {
            cells,
            any_sealed: self.any_sealed,
            flags: std::mem::take(&mut self.flags),
            tenant: Cow::Borrowed(tenant),
            header: self.header.as_ref().map(at).transpose()?,
        }
        .open(scope, model, None, open_key)
    }
}

/// A [`TenantScope`] that owns its tenant, to cross to the crypto pool.
enum OwnedScope {
    One(String),
    Any,
}

impl OwnedScope {
    fn of(scope: TenantScope<'_>) -> Self {
        match scope {
            TenantScope::One(t) => OwnedScope::One(t.to_owned()),
            TenantScope::Any => OwnedScope::Any,
        }
    }

    fn scope(&self) -> TenantScope<'_> {
        match self {
            OwnedScope::One(t) => TenantScope::One(t),
            OwnedScope::Any => TenantScope::Any,
        }
    }
}
