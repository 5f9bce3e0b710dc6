//! Writing: insert, insert many, update, update chosen fields, delete, and
//! sealing rows into their column values.

use std::collections::HashMap;
use std::sync::Arc;

use rowseal_core::{FieldSet, RecordKeys, RowKey};

use super::{check_row_format, sqlx_col, Encryptor};
use crate::backend::{Backend, DbRow};
use crate::blind::{map_unique, plans, push_index_cells, IndexPlan, WriteKeys};
use crate::error::{Error, Result};
use crate::model::{Encrypted, Model, RowWriter, HEADER_COLUMN, KEY_VERSION_COLUMN};
use crate::value::{PrimaryKeyField, SqlType, Value};

impl Encryptor {
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

    /// A fresh row key under the tenant's current key (a new KMS data key in
    /// `kms` mode): the key hierarchy's choice.
    async fn new_row_key(&self, model: &Model, tenant: &str, pk: Option<&[u8]>) -> Result<RowKey> {
        Ok(self.keys.new_row_key_v1(&model.spec, tenant, pk).await?)
    }

    /// The record keys new rows of each tenant in `tenants` derive their keys
    /// from with no I/O (one cache lookup per tenant), or `None` if each row
    /// needs a key of its own (`kms` mode); the key hierarchy decides.
    async fn new_rows_record_keys<'a>(
        &self,
        model: &Model,
        tenants: impl Iterator<Item = &'a str>,
    ) -> Result<Option<HashMap<&'a str, Arc<RecordKeys>>>> {
        let mut out = HashMap::new();
        for t in tenants {
            if !out.contains_key(t) {
                match self.keys.new_rows_record_keys(&model.spec, t).await? {
                    Some(keys) => out.insert(t, keys),
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
        let rks = self
            .new_rows_record_keys(model, rows.iter().map(|r| r.tenant()))
            .await?;
        match rks {
            Some(rks) => {
                let seal_part = |part: &[T]| -> Result<Vec<Value>> {
                    let mut out = Vec::with_capacity(part.len() * cols);
                    let mut scratch = Vec::new();
                    for row in part {
                        let rk = rks.get(row.tenant()).ok_or(Error::Worker)?;
                        let pk = model.primary_key_bytes(&row.primary_key_value())?;
                        let key = rk.new_row_v1(pk.as_deref())?;
                        Self::seal_with(&key, row, index, &mut out, &mut scratch)?;
                    }
                    Ok(out)
                };
                self.par_chunks(rows, seal_part)
            }
            None => {
                let mut out = Vec::with_capacity(rows.len() * cols);
                let mut scratch = Vec::new();
                for row in rows {
                    let pk = model.primary_key_bytes(&row.primary_key_value())?;
                    let key = self.new_row_key(model, row.tenant(), pk.as_deref()).await?;
                    Self::seal_with(&key, row, index, &mut out, &mut scratch)?;
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
            let pk = model.primary_key_bytes(&pk_value)?;
            let key = match &h {
                Some(h) => async {
                    check_row_format(h)?;
                    self.keys
                        .open_row_key(
                            &model.spec,
                            row.tenant(),
                            pk.as_deref(),
                            h,
                            &FieldSet::empty(),
                        )
                        .await
                }
                .await
                .map_err(|e| Error::Decrypt {
                    table: model.table().to_owned(),
                    column: HEADER_COLUMN.to_owned(),
                    primary_key: pk_value.key_display(),
                    source: Box::new(e),
                })?,
                // Only a model adopted from plaintext columns has rows
                // without a header; elsewhere a NULL header is tampering,
                // and must not be made legitimate by a new one.
                None if model.has_legacy_rows() => {
                    self.new_row_key(model, row.tenant(), pk.as_deref()).await?
                }
                None => {
                    return Err(Error::Decrypt {
                        table: model.table().to_owned(),
                        column: HEADER_COLUMN.to_owned(),
                        primary_key: pk_value.key_display(),
                        source: Box::new(rowseal_core::Error::Decrypt),
                    })
                }
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
