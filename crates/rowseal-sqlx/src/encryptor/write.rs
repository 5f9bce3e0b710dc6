//! Writing: insert, insert many, update, update chosen fields, delete, and
//! sealing rows into their column values.

use std::collections::HashMap;
use std::sync::Arc;

use rowseal_core::{FieldSet, KeyMode, KeysThrough, RecordKeys, RowKey};

use super::{sqlx_col, Encryptor};
use crate::backend::{Backend, DbRow};
use crate::blind::{map_unique, plans, push_index_cells, IndexPlan, WriteKeys};
use crate::error::{Error, Result};
use crate::keystore::ConnKeyStore;
use crate::model::{CollectedRow, Encrypted, Model, HEADER_COLUMN, KEY_VERSION_COLUMN};
use crate::telemetry::{op, rows_sealed};
use crate::tenant_scope::TenantScope;
use crate::value::{PrimaryKeyField, SqlType, Value};

impl Encryptor {
    /// The columns every write fills: the fields (but generated ones), the header, the key
    /// version, then each blind index's value and version columns.
    fn write_columns<T: Encrypted>() -> Vec<&'static str> {
        let model = T::model();
        let mut cols: Vec<&'static str> = model
            .fields
            .iter()
            .filter(|f| !f.generated)
            .map(|f| f.column)
            .collect();
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

    /// A fresh row key under the tenant's current key (a new KMS data key in
    /// `kms` mode): the key hierarchy's choice. `present` is the set of
    /// encrypted fields the write seals (bound by format 2).
    async fn new_row_key(
        &self,
        model: &Model,
        tenant: &str,
        pk: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        Ok(if self.write_format == 1 {
            self.keys.new_row_key_v1(&model.spec, tenant, pk).await?
        } else {
            self.keys
                .new_row_key(&model.spec, tenant, pk, present)
                .await?
        })
    }

    /// A fresh row key from record keys at hand (no I/O).
    fn new_row(
        &self,
        keys: &RecordKeys,
        pk: Option<&[u8]>,
        present: &FieldSet,
    ) -> rowseal_core::Result<RowKey> {
        new_row_of_format(self.write_format, keys, pk, present)
    }

    /// The record keys new rows of each tenant in `tenants` derive their keys
    /// from with no I/O (one cache lookup per tenant), or `None` if each row
    /// needs a key of its own (`kms` mode); the key hierarchy decides.
    async fn new_rows_record_keys<'a>(
        keys: KeysThrough<'_>,
        model: &Model,
        tenants: impl Iterator<Item = &'a str>,
    ) -> Result<Option<HashMap<&'a str, Arc<RecordKeys>>>> {
        let mut out = HashMap::new();
        for t in tenants {
            if !out.contains_key(t) {
                match keys.new_rows_record_keys(&model.spec, t).await? {
                    Some(rks) => out.insert(t, rks),
                    None => return Ok(None),
                };
            }
        }
        Ok(Some(out))
    }

    /// Appends a row's column values (fields, header, key version) to `out`.
    fn seal_with<T: Encrypted>(
        key: &RowKey,
        row: &T,
        collected: CollectedRow,
        index: (&[IndexPlan], &WriteKeys),
        out: &mut Vec<Value>,
    ) -> Result<()> {
        collected.seal_into(T::model(), Some(key), None, out)?;
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
    async fn seal_rows<T: Encrypted>(
        &self,
        keys: KeysThrough<'_>,
        rows: &[T],
    ) -> Result<Vec<Value>> {
        let model = T::model();
        let cols = Self::write_columns::<T>().len();
        let plans = plans(model)?;
        let ikeys = Self::write_index_keys(keys, &plans, rows.iter(), None).await?;
        let index = (&plans[..], &ikeys);
        let tenants: Vec<_> = rows.iter().map(|r| r.tenant()).collect();
        let rks = Self::new_rows_record_keys(keys, model, tenants.iter().map(|t| &**t)).await?;
        match rks {
            Some(rks) => {
                // Each row read on this thread (its plaintext encoded, its
                // blind-index cells computed: `rows` is only borrowed), then
                // the keys derived and the fields sealed: here for a small
                // batch, on the crypto pool for a large one.
                let mut scratch = Vec::new();
                let prepared: Vec<Result<Prepared>> = rows
                    .iter()
                    .map(|row| {
                        let keys = rks.get(&*row.tenant()).ok_or(Error::Worker)?.clone();
                        let pk = model.primary_key_bytes(&row.primary_key_value())?;
                        let collected = CollectedRow::of(row, &mut scratch)?;
                        let present = collected.present(model)?;
                        let mut index_cells = Vec::new();
                        push_index_cells(index.0, index.1, row, None, &mut index_cells)?;
                        Ok(Prepared {
                            keys,
                            pk,
                            collected,
                            present,
                            index_cells,
                        })
                    })
                    .collect();
                let format = self.write_format;
                let sealed = self
                    .map_each(prepared, move |p| {
                        let mut out = Vec::with_capacity(cols);
                        p?.seal(format, model, &mut out)?;
                        Ok(out)
                    })
                    .await?;
                let mut out = Vec::with_capacity(rows.len() * cols);
                for row in sealed {
                    out.extend(row?);
                }
                Ok(out)
            }
            None => {
                // A data key per row from the provider: up to
                // `provider_concurrency` calls in flight, the rows sealed in
                // their order once their keys are here.
                use futures_util::StreamExt as _;
                let mut scratch = Vec::new();
                let mut prepared = Vec::with_capacity(rows.len());
                let mut collected_rows = Vec::with_capacity(rows.len());
                for row in rows {
                    let pk = model.primary_key_bytes(&row.primary_key_value())?;
                    let collected = CollectedRow::of(row, &mut scratch)?;
                    let present = collected.present(model)?;
                    prepared.push((row.tenant().into_owned(), pk, present));
                    collected_rows.push(collected);
                }
                let mut keys = Vec::with_capacity(rows.len());
                {
                    let mut pending = futures_util::stream::FuturesOrdered::new();
                    let mut next = prepared.iter();
                    loop {
                        while pending.len() < self.provider_concurrency {
                            let Some((tenant, pk, present)) = next.next() else {
                                break;
                            };
                            pending.push_back(self.new_row_key(
                                model,
                                tenant,
                                pk.as_deref(),
                                present,
                            ));
                        }
                        match pending.next().await {
                            Some(key) => keys.push(key?),
                            None => break,
                        }
                    }
                }
                let mut out = Vec::with_capacity(rows.len() * cols);
                for ((row, key), collected) in rows.iter().zip(keys).zip(collected_rows) {
                    Self::seal_with(&key, row, collected, index, &mut out)?;
                }
                Ok(out)
            }
        }
    }

    /// `INSERT INTO <table> (<write columns>) VALUES (...), ...` for `rows` rows.
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

    /// `INSERT INTO <table> (<write columns>) SELECT * FROM UNNEST($1, …)`:
    /// PostgreSQL's bulk insert, each column bound as one array (see
    /// [`Backend::execute_column_arrays_on`]).
    fn insert_arrays_sql<T: Encrypted, DB: Backend>() -> String {
        let model = T::model();
        let columns = Self::write_columns::<T>();
        let mut sql = String::from("INSERT INTO ");
        DB::push_ident(&mut sql, model.table());
        sql.push_str(" (");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            DB::push_ident(&mut sql, c);
        }
        sql.push_str(") SELECT * FROM UNNEST(");
        for i in 0..columns.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            DB::push_placeholder(&mut sql, i + 1);
        }
        sql.push(')');
        sql
    }

    /// Inserts one row.
    ///
    /// Takes an [`sqlx::Acquire`] (`&Pool`, `&mut connection`, `&mut
    /// transaction`): a key missing from the cache is read on that
    /// connection (see [`Encryptor`] on keys inside transactions).
    pub async fn insert<'a, T, A>(&self, conn: A, row: &T) -> Result<()>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "insert", T::model().table(), Some(&*row.tenant()));
        op.run(
            async move {
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let values = self
                    .seal_rows(self.keys.through(&reads), std::slice::from_ref(row))
                    .await?;
                let sql = Self::insert_sql::<T, A::Database>(1);
                <A::Database as Backend>::execute_on(&mut conn, &sql, values)
                    .await
                    .map_err(|e| map_unique(T::model(), e))?;
                rows_sealed(T::model(), 1);
                Ok(())
            },
            |_| 1,
        )
        .await
    }

    /// Inserts one row and returns it with the values the database gave its
    /// generated fields (`#[rowseal(generated)]`: an identity primary key, a
    /// `DEFAULT now()` timestamp), read back in the same statement with
    /// `INSERT ... RETURNING` (PostgreSQL, SQLite 3.35+, MariaDB 10.5+;
    /// MySQL has no `RETURNING`). The values `row` holds in its generated
    /// fields are ignored. Without generated fields, the same as
    /// [`insert`](Self::insert).
    ///
    /// ```ignore
    /// let note = enc.insert_returning(&pool, Note { id: 0, created_at: Utc::now(), .. }).await?;
    /// println!("{} at {}", note.id, note.created_at); // the database's id and time
    /// ```
    pub async fn insert_returning<'a, T, A>(&self, conn: A, mut row: T) -> Result<T>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(
            self,
            "insert_returning",
            T::model().table(),
            Some(&*row.tenant())
        );
        op.run(
            async move {
                let model = T::model();
                let generated: Vec<usize> = (0..model.fields.len())
                    .filter(|&i| model.fields[i].generated)
                    .collect();
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let values = self
                    .seal_rows(self.keys.through(&reads), std::slice::from_ref(&row))
                    .await?;
                let mut sql = Self::insert_sql::<T, A::Database>(1);
                if generated.is_empty() {
                    <A::Database as Backend>::execute_on(&mut conn, &sql, values)
                        .await
                        .map_err(|e| map_unique(model, e))?;
                    rows_sealed(model, 1);
                    return Ok(row);
                }
                sql.push_str(" RETURNING ");
                for (k, &i) in generated.iter().enumerate() {
                    if k > 0 {
                        sql.push_str(", ");
                    }
                    A::Database::push_ident(&mut sql, model.fields[i].column);
                }
                let returned = <A::Database as Backend>::fetch_optional_on(&mut conn, &sql, values)
                    .await
                    .map_err(|e| map_unique(model, e))?
                    .ok_or_else(|| Error::Schema {
                        table: model.table().to_owned(),
                        column: String::new(),
                        reason: "INSERT ... RETURNING returned no row".into(),
                    })?;
                rows_sealed(model, 1);
                for (k, &i) in generated.iter().enumerate() {
                    let f = &model.fields[i];
                    let value = returned
                        .read_value(k, f.sql_type)
                        .map_err(|e| sqlx_col(model, f.column, e))?;
                    row.set_generated(i, value)?;
                }
                Ok(row)
            },
            |_| 1,
        )
        .await
    }

    /// Inserts many rows, one statement (one round trip) per batch of as many
    /// rows as the database takes bind parameters for. On PostgreSQL the
    /// statement is `INSERT … SELECT * FROM UNNEST($1, …)` with each column
    /// bound as one array (one prepared statement for every batch size, a
    /// parameter per column rather than per cell); elsewhere a multi-row
    /// `VALUES` list, the same text (so prepared once) for every full batch.
    /// The rows of a large
    /// batch are read here (`rows` is borrowed) and sealed on the
    /// [`CryptoPool`](crate::CryptoPool), awaited without blocking the
    /// calling thread, while the database inserts the batch before. Pass a
    /// transaction to make the whole insert atomic. Returns the number of
    /// rows inserted.
    pub async fn insert_many<'a, T, A>(&self, conn: A, rows: &[T]) -> Result<u64>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "insert_many", T::model().table(), None);
        op.run(
            async move {
                if rows.is_empty() {
                    return Ok(0);
                }
                let cols = Self::write_columns::<T>().len();
                let per_batch = (<A::Database as Backend>::MAX_PARAMS / cols).max(1);
                let mut conn = conn.acquire().await?;
                // Keys are read on the connection the rows are inserted on;
                // a batch being sealed waits for the statement before it.
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let keys = self.keys.through(&reads);
                let mut done = 0;
                let mut full_sql: Option<String> = None;
                let arrays_sql = (<A::Database as Backend>::DIALECT == "postgres")
                    .then(Self::insert_arrays_sql::<T, A::Database>);
                let mut batches = rows.chunks(per_batch);
                let Some(first) = batches.next() else {
                    return Ok(0);
                };
                let mut sealed = self.seal_rows(keys, first).await?;
                // Pipelined: the next batch is sealed while the database inserts this
                // one. A batch whose values exceed MAX_STATEMENT_BYTES is sent as
                // several statements (MySQL's max_allowed_packet).
                loop {
                    let groups = split_by_bytes(sealed, cols);
                    let next = batches.next();
                    let reads = &reads;
                    let full_sql = &mut full_sql;
                    let arrays_sql = arrays_sql.as_deref();
                    let insert = async move {
                        let mut n_done = 0;
                        for values in groups {
                            let values = match arrays_sql {
                                Some(sql) => {
                                    let mut conn = reads.lock().await;
                                    let tried = <A::Database as Backend>::execute_column_arrays_on(
                                        &mut conn, sql, values, cols,
                                    );
                                    match tried {
                                        Ok(insert) => {
                                            let inserted = insert
                                                .await
                                                .map_err(|e| map_unique(T::model(), e))?;
                                            rows_sealed(T::model(), inserted);
                                            n_done += inserted;
                                            continue;
                                        }
                                        Err(values) => values,
                                    }
                                }
                                None => values,
                            };
                            let n = values.len() / cols;
                            let sql = if n == per_batch {
                                full_sql
                                    .get_or_insert_with(|| {
                                        Self::insert_sql::<T, A::Database>(per_batch)
                                    })
                                    .clone()
                            } else {
                                Self::insert_sql::<T, A::Database>(n)
                            };
                            let mut conn = reads.lock().await;
                            let inserted =
                                <A::Database as Backend>::execute_on(&mut conn, &sql, values)
                                    .await
                                    .map_err(|e| map_unique(T::model(), e))?;
                            rows_sealed(T::model(), inserted);
                            n_done += inserted;
                        }
                        Ok::<u64, Error>(n_done)
                    };
                    let seal_next = async {
                        match next {
                            Some(batch) => Some(self.seal_rows(keys, batch).await),
                            None => None,
                        }
                    };
                    let (inserted, next_sealed) =
                        futures_util::future::join(insert, seal_next).await;
                    done += inserted?;
                    match next_sealed {
                        Some(s) => sealed = s?,
                        None => break,
                    }
                }
                Ok(done)
            },
            |n| *n,
        )
        .await
    }

    /// Replaces every column of a stored row (found by primary key and tenant)
    /// with `row`, re-encrypted under a fresh row key on the tenant's current
    /// key version. [`Error::NotFound`] if there is no such row.
    ///
    /// Takes an [`sqlx::Acquire`], like [`insert`](Self::insert).
    pub async fn update<'a, T, A>(&self, conn: A, row: &T) -> Result<()>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "update", T::model().table(), Some(&*row.tenant()));
        op.run(
            async move {
                let model = T::model();
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let mut values = self
                    .seal_rows(self.keys.through(&reads), std::slice::from_ref(row))
                    .await?;
                let mut sql = String::from("UPDATE ");
                A::Database::push_ident(&mut sql, model.table());
                sql.push_str(" SET ");
                let mut n = 0;
                for c in Self::write_columns::<T>() {
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    A::Database::push_ident(&mut sql, c);
                    sql.push_str(" = ");
                    A::Database::push_placeholder(&mut sql, n);
                }
                Self::where_pk::<T, A::Database>(&mut sql, n + 1);
                values.push(row.primary_key_value());
                values.push(model.tenant_value(&row.tenant())?);
                let affected = <A::Database as Backend>::execute_on(&mut conn, &sql, values)
                    .await
                    .map_err(|e| map_unique(model, e))?;
                if affected == 0 {
                    return Err(Error::NotFound {
                        table: model.table().to_owned(),
                        primary_key: row.primary_key_value().key_display(),
                    });
                }
                rows_sealed(model, affected);
                Ok(())
            },
            |_| 1,
        )
        .await
    }

    /// Writes only the chosen fields (by Rust field name) of a stored row.
    ///
    /// When an encrypted field is among them, the stored row is read and
    /// decrypted (it must belong to `row`'s tenant), and the whole row is
    /// re-sealed under a fresh row key (on the tenant-key version the row
    /// already has; [`update`](Self::update) takes the current one): a write
    /// binds all of a row's
    /// encrypted fields together, so no ciphertext of an earlier write can
    /// ever be mixed in. The write is conditional on the row's key header
    /// being unchanged since it was read; every write changes the header, so
    /// a concurrent write is never overwritten half-way:
    /// [`Error::NotFound`] reports a missing row, [`Error::Conflict`] a row
    /// that changed between the read and the write (read it again and
    /// retry). Plain fields alone are written as they are.
    pub async fn update_fields<'a, T, A>(&self, conn: A, row: &T, fields: &[&str]) -> Result<()>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(
            self,
            "update_fields",
            T::model().table(),
            Some(&*row.tenant())
        );
        op.run(
            async move {
                let model = T::model();
                let mut columns = Vec::with_capacity(fields.len());
                for name in fields {
                    let f = model.field(name).ok_or_else(|| Error::InvalidInput {
                        reason: format!("{} has no field `{name}`", model.table()).into(),
                    })?;
                    if f.name == model.primary_key_field().name
                        || f.name == model.tenant_field().name
                    {
                        return Err(Error::InvalidInput {
                            reason: "the primary key and the tenant cannot be updated in place"
                                .into(),
                        });
                    }
                    if f.generated {
                        return Err(Error::InvalidInput {
                            reason: format!(
                            "`{name}` is generated: the database fills it, rowseal never writes it"
                        )
                            .into(),
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
                let any_encrypted = model
                    .fields
                    .iter()
                    .any(|f| f.is_encrypted() && ordered.contains(&f.column));
                // Blind indexes covering an updated field are recomputed from `row`;
                // all of them when a row of a model adopted from plaintext columns
                // is re-sealed, since its other fields may move from a legacy
                // column (never indexed) into their ciphertexts now.
                let touched: Vec<usize> = model
                    .indexes
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| {
                        (any_encrypted && model.has_legacy_rows())
                            || i.fields.iter().any(|&f| {
                                model
                                    .fields
                                    .get(f)
                                    .is_some_and(|fd| ordered.contains(&fd.column))
                            })
                    })
                    .map(|(n, _)| n)
                    .collect();
                let plans = plans(model)?;
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let keys = self.keys.through(&reads);
                let ikeys =
                    Self::write_index_keys(keys, &plans, std::iter::once(row), Some(&touched))
                        .await?;
                let pk_value = row.primary_key_value();
                let not_found = || Error::NotFound {
                    table: model.table().to_owned(),
                    primary_key: pk_value.key_display(),
                };

                let mut scratch = Vec::new();
                let mut values = Vec::with_capacity(model.fields.len() + 8);
                let mut set_columns: Vec<&str>;
                // The header read, for the compare-and-swap (`Some(None)`: a legacy
                // row without one).
                let mut read_header: Option<Option<Vec<u8>>> = None;
                if any_encrypted {
                    let mut sql = String::from("SELECT ");
                    sql.push_str(&Self::select_list::<T, A::Database>());
                    sql.push_str(" FROM ");
                    A::Database::push_ident(&mut sql, model.table());
                    Self::where_pk::<T, A::Database>(&mut sql, 1);
                    let found = <A::Database as Backend>::fetch_optional_on(
                        &mut **reads.lock().await,
                        &sql,
                        vec![pk_value.clone(), model.tenant_value(&row.tenant())?],
                    )
                    .await?
                    .ok_or_else(not_found)?;
                    let at = found
                        .column_index(HEADER_COLUMN)
                        .ok_or_else(|| Error::Schema {
                            table: model.table().to_owned(),
                            column: HEADER_COLUMN.to_owned(),
                            reason: "the query did not select this column".into(),
                        })?;
                    read_header = Some(
                        found
                            .read_opt_bytes(at)
                            .map_err(|e| sqlx_col(model, HEADER_COLUMN, e))?
                            .map(<[u8]>::to_vec),
                    );
                    let stored: T = self
                        .decrypt_quiet(keys, TenantScope::One(&row.tenant()), &found)
                        .await?;
                    let merged = CollectedRow::of(&stored, &mut scratch)?.merged(
                        model,
                        CollectedRow::of(row, &mut scratch)?,
                        |f| ordered.contains(&f.column),
                    );
                    drop(stored);
                    let present = merged.present(model)?;
                    let pk = model.primary_key_bytes(&pk_value)?;
                    // A fresh row key under the tenant-key version the row already
                    // has (derived mode): moving rows between versions is the
                    // rotation's job, so a writer with an older cached version never
                    // moves a rotated row back.
                    let version = read_header
                        .as_ref()
                        .and_then(|h| h.as_deref())
                        .and_then(rowseal_core::RowHeader::peek_tenant_key_version);
                    let tenant = row.tenant();
                    let key = match (model.spec.key_mode(), version) {
                        (KeyMode::Derived, Some(v)) => {
                            let rks = keys.record_keys(&model.spec, &tenant, v).await?;
                            self.new_row(&rks, pk.as_deref(), &present)?
                        }
                        (KeyMode::Derived, None) => {
                            let rks = keys.current_record_keys(&model.spec, &tenant).await?;
                            self.new_row(&rks, pk.as_deref(), &present)?
                        }
                        // A data key of its own from the provider: no stored key.
                        _ => {
                            self.new_row_key(model, &tenant, pk.as_deref(), &present)
                                .await?
                        }
                    };
                    // Every encrypted column (re-sealed), and the plain ones updated.
                    set_columns = model
                        .fields
                        .iter()
                        .filter(|f| f.is_encrypted() || ordered.contains(&f.column))
                        .map(|f| f.column)
                        .collect();
                    merged.seal_into(model, Some(&key), Some(&set_columns), &mut values)?;
                    set_columns.push(HEADER_COLUMN);
                    set_columns.push(KEY_VERSION_COLUMN);
                    values.push(Value::Bytes(key.header_bytes()));
                    values.push(Value::I64(i64::from(
                        key.header().tenant_key_version().unwrap_or(0),
                    )));
                } else {
                    set_columns = ordered.clone();
                    CollectedRow::of(row, &mut scratch)?.seal_into(
                        model,
                        None,
                        Some(&ordered),
                        &mut values,
                    )?;
                }
                for &n in &touched {
                    if let Some(i) = model.indexes.get(n) {
                        set_columns.extend(i.columns());
                    }
                }
                push_index_cells(&plans, &ikeys, row, Some(&touched), &mut values)?;
                // A re-sealed row holds every value encrypted: no legacy plaintext
                // column keeps one.
                let nulled: Option<&[&str]> = if any_encrypted { None } else { Some(&ordered) };
                set_columns.extend(plaintext_columns(model, nulled).map(|(c, _)| c));
                push_plaintext_nulls(model, nulled, &mut values);

                let mut sql = String::from("UPDATE ");
                A::Database::push_ident(&mut sql, model.table());
                sql.push_str(" SET ");
                for (i, c) in set_columns.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    A::Database::push_ident(&mut sql, c);
                    sql.push_str(" = ");
                    A::Database::push_placeholder(&mut sql, i + 1);
                }
                Self::where_pk::<T, A::Database>(&mut sql, set_columns.len() + 1);
                values.push(pk_value.clone());
                values.push(model.tenant_value(&row.tenant())?);
                let compared = read_header.is_some();
                match read_header {
                    Some(Some(h)) => {
                        sql.push_str(" AND ");
                        A::Database::push_ident(&mut sql, HEADER_COLUMN);
                        sql.push_str(" = ");
                        A::Database::push_placeholder(&mut sql, set_columns.len() + 3);
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
                    // Read a moment ago, gone or re-sealed now: a lost race (a
                    // rotation, another writer), which a retry resolves.
                    if compared {
                        return Err(Error::Conflict {
                            table: model.table().to_owned(),
                            primary_key: pk_value.key_display(),
                        });
                    }
                    return Err(not_found());
                }
                if any_encrypted {
                    rows_sealed(model, affected);
                }
                Ok(())
            },
            |_| 1,
        )
        .await
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
        let op = op!(self, "delete", T::model().table(), Some(tenant));
        op.run(
            async move {
                let mut sql = String::from("DELETE FROM ");
                E::Database::push_ident(&mut sql, T::model().table());
                Self::where_pk::<T, E::Database>(&mut sql, 1);
                let values = vec![primary_key.key_value(), T::model().tenant_value(tenant)?];
                Ok(<E::Database as Backend>::execute(executor, &sql, values).await? > 0)
            },
            |deleted| u64::from(*deleted),
        )
        .await
    }
}

/// Most bytes of bound values one multi-row INSERT carries (MySQL's default
/// `max_allowed_packet` is 16 to 64 MiB).
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// A fresh row key from record keys at hand, in row format `format` (1 or 2).
fn new_row_of_format(
    format: u8,
    keys: &RecordKeys,
    pk: Option<&[u8]>,
    present: &FieldSet,
) -> rowseal_core::Result<RowKey> {
    if format == 1 {
        keys.new_row_v1(pk)
    } else {
        keys.new_row(pk, present)
    }
}

/// A row read for sealing (`derived` mode): what sealing needs, owned, so
/// that it can be sealed on the crypto pool. The encoded plaintext is
/// zeroized on drop.
struct Prepared {
    keys: Arc<RecordKeys>,
    pk: Option<Vec<u8>>,
    collected: CollectedRow,
    present: FieldSet,
    index_cells: Vec<Value>,
}

impl Prepared {
    /// Appends the row's column values (fields, header, key version, index
    /// cells, NULLed plaintext columns) to `out`, under a fresh row key.
    fn seal(self, format: u8, model: &Model, out: &mut Vec<Value>) -> Result<()> {
        let key = new_row_of_format(format, &self.keys, self.pk.as_deref(), &self.present)?;
        self.collected.seal_into(model, Some(&key), None, out)?;
        out.push(Value::Bytes(key.header_bytes()));
        out.push(Value::I64(i64::from(
            key.header().tenant_key_version().unwrap_or(0),
        )));
        out.extend(self.index_cells);
        push_plaintext_nulls(model, None, out);
        Ok(())
    }
}

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
        .filter(move |f| only.is_none_or(|o| o.contains(&f.column)))
        .filter_map(|f| f.plaintext_column)
}

/// Appends a NULL for each legacy plaintext column (see
/// [`plaintext_columns`]): writes never leave plaintext behind.
fn push_plaintext_nulls(model: &Model, only: Option<&[&str]>, out: &mut Vec<Value>) {
    out.extend(plaintext_columns(model, only).map(|(_, t)| Value::Null(t)));
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
