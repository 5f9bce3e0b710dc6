//! `derived`-mode tables: rows re-sealed under the record keys of their
//! tenant's new tenant-key version.
//!
//! Rows to do are selected with an indexed predicate, `tenant = ? AND
//! rowseal_key_version < target`, so the job needs no cursor: a row leaves
//! the set when it is re-encrypted (a draining [`BatchScanner`]), and a
//! resumed or second process simply runs the same predicate. Workers and
//! processes claim their batches with `FOR UPDATE SKIP LOCKED`.
//!
//! The tenant is a canonical id (from `rowseal_keys`), bound as the table's
//! tenant column holds it (text, UUID or integer); a table whose column
//! cannot hold it has no row of that tenant and is skipped.

use std::sync::Mutex;

use rowseal_sqlx::Value;

use super::reseal::{per_row_update, reseal, NewKeys, Resealed};
use super::{failed_of, Shared};
use crate::cmd::RowOpener;
use crate::db::{ident, ph, CliDb, Column};
use crate::error::Result;
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, TableDef};
use crate::scan::RowId;

/// The rows of `tenant` still to re-encrypt under `target`, but `failed`.
pub(super) async fn count<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    tenant: &str,
    target: u32,
    failed: &[RowId],
) -> Result<u64> {
    match crate::scan::rotation_scan::<D>(def, tenant, target, failed.to_vec(), 0) {
        Some(scan) => scan.remaining(conn).await,
        None => Ok(0),
    }
}

/// One batch; returns the rows claimed (0: nothing left for this worker).
#[allow(clippy::too_many_arguments)]
pub(super) async fn batch_once<D: CliDb>(
    pool: &sqlx::Pool<D>,
    opener: &mut RowOpener,
    def: &TableDef,
    tenant: &str,
    target: u32,
    shared: &Mutex<Shared>,
    progress: &Progress,
    job_id: &str,
    batch: usize,
) -> Result<usize> {
    let failed = failed_of(shared, def, tenant);
    let pk_type = def.primary_key_type;
    let enc_cols = def.encrypted_columns();
    // The tenant as this table's column holds it: a column that cannot hold
    // it has no row of it.
    let (Some(tenant_value), Some(scan)) = (
        def.tenant_value(tenant),
        crate::scan::rotation_scan::<D>(def, tenant, target, failed, batch),
    ) else {
        return Ok(0);
    };
    let mut scan = scan.claim(D::CLAIM);
    let update = per_row_update::<D>(def, &enc_cols);

    let new_keys = NewKeys::Derived {
        tenant,
        keys: opener.record_keys(def, tenant, target).await?,
    };
    let mut tx = pool.begin_with(D::BEGIN_BATCH).await?;
    let rows = scan.next(&mut *tx).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let (pending, failures) = reseal::<D>(&rows, def, pk_type, opener, &new_keys).await?;
    // The application may have changed a row since it was read: the
    // compare-and-swap on the old header leaves it alone; a later batch
    // reads it again if it is still on an old version.
    let (done, conflicts) = write_rows::<D>(
        &mut tx,
        def,
        &enc_cols,
        &update,
        &tenant_value,
        target,
        batch,
        pending,
    )
    .await?;
    if done > 0 {
        jobs::add_progress::<D>(&mut *tx, job_id, done).await?;
    }
    tx.commit().await?;
    progress.add(done);
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(&def.table, done, conflicts, failures)?;
    Ok(rows.len())
}

/// Writes re-encrypted rows with a compare-and-swap on each old header, each
/// database its fastest way: one statement per batch on PostgreSQL
/// (`UPDATE … FROM UNNEST(<one array per column>)`, the same prepared
/// statement for every batch of a table), statements of many rows on
/// MySQL/MariaDB (`UPDATE … JOIN (SELECT … UNION ALL …)`, of a few fixed
/// sizes, [`chunk_sizes`]), one per row on SQLite (in-process, and already
/// holding the write lock). Returns (rows written, rows changed meanwhile and
/// left alone).
#[allow(clippy::too_many_arguments)]
async fn write_rows<D: CliDb>(
    tx: &mut sqlx::Transaction<'static, D>,
    def: &TableDef,
    enc_cols: &[&str],
    per_row: &str,
    tenant: &Value,
    target: u32,
    batch: usize,
    pending: Vec<Resealed>,
) -> Result<(u64, u64)> {
    let attempted = pending.len() as u64;
    if pending.is_empty() {
        return Ok((0, 0));
    }
    let mut written = 0u64;
    match D::DIALECT {
        "postgres" => {
            written += write_unnest::<D>(tx, def, enc_cols, tenant, target, pending).await?;
        }
        "mysql" => {
            let per = enc_cols.len() + 3;
            // Stay well below MySQL's 65,535 bind parameters.
            let most = (30_000 / per).clamp(1, batch.max(1));
            let mut rest = pending.as_slice();
            for size in chunk_sizes(rest.len(), most) {
                let (part, tail) = rest.split_at(size);
                rest = tail;
                let (sql, values) = mysql_update::<D>(def, enc_cols, tenant, target, part);
                written += D::execute_on(&mut **tx, &sql, values).await?;
            }
        }
        _ => {
            for p in pending {
                let values = p.update_values(i64::from(target));
                written += D::execute_on(&mut **tx, per_row, values).await?;
            }
        }
    }
    let written = written.min(attempted);
    Ok((written, attempted - written))
}

/// The sizes to cut `n` rows into: as many of `most` as fit, then the rest
/// as powers of two (largest first). A statement's text depends on its row
/// count only, so a table has at most one statement per size (about a dozen,
/// each prepared once and kept in the connection's statement cache) rather
/// than one per batch length seen.
fn chunk_sizes(n: usize, most: usize) -> Vec<usize> {
    let most = most.max(1);
    let mut sizes = vec![most; n / most];
    let mut rest = n % most;
    while rest > 0 {
        let p = 1usize << (usize::BITS - 1 - rest.leading_zeros());
        sizes.push(p);
        rest -= p;
    }
    sizes
}

/// PostgreSQL: every row of the batch in one statement whose text depends
/// on the table only,
///
/// ```text
/// UPDATE t AS x SET e0 = v.e0, …, header = v.h, version = $1
///   FROM UNNEST($3::<key>[], $4::bytea[], …, <new headers>, <old headers>)
///     AS v(k, e0, …, h, oh)
///  WHERE x.pk = v.k AND x.tenant = $2 AND x.header = v.oh
/// ```
///
/// (the row by its key and tenant, and the compare-and-swap on its old
/// header). A key type without an array form writes row by row.
async fn write_unnest<D: CliDb>(
    tx: &mut sqlx::Transaction<'static, D>,
    def: &TableDef,
    enc_cols: &[&str],
    tenant: &Value,
    target: u32,
    pending: Vec<Resealed>,
) -> Result<u64> {
    let n = pending.len();
    let Some(keys) = Column::of(def.primary_key_type, n) else {
        let per_row = per_row_update::<D>(def, enc_cols);
        let mut written = 0;
        for p in pending {
            let values = p.update_values(i64::from(target));
            written += D::execute_on(&mut **tx, &per_row, values).await?;
        }
        return Ok(written);
    };
    let sql = unnest_update::<D>(def, enc_cols, keys.pg_type());
    let mut columns = Vec::with_capacity(enc_cols.len() + 3);
    columns.push(keys);
    columns.extend((0..enc_cols.len() + 2).map(|_| Column::Bytes(Vec::with_capacity(n))));
    let (h, oh) = (enc_cols.len() + 1, enc_cols.len() + 2);
    for p in pending {
        columns[0].push(p.pk)?;
        for (i, v) in p.sealed.into_iter().enumerate() {
            columns[1 + i].push(v)?;
        }
        columns[h].push(Value::Bytes(p.header))?;
        columns[oh].push(Value::Bytes(p.old_header))?;
    }
    let scalars = vec![Value::I64(i64::from(target)), tenant.clone()];
    D::execute_columns(&mut **tx, &sql, scalars, columns).await
}

/// The statement of [`write_unnest`]; `key_array` is the key column's array
/// type.
fn unnest_update<D: CliDb>(def: &TableDef, enc_cols: &[&str], key_array: &str) -> String {
    let sets: Vec<String> = enc_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = v.e{i}", ident::<D>(c)))
        .chain([
            format!("{} = v.h", ident::<D>(&def.header_column)),
            format!("{} = {}", ident::<D>(&def.key_version_column), ph::<D>(1)),
        ])
        .collect();
    let arrays: Vec<String> = std::iter::once(format!("{}::{key_array}", ph::<D>(3)))
        .chain((0..enc_cols.len() + 2).map(|i| format!("{}::bytea[]", ph::<D>(4 + i))))
        .collect();
    let names: Vec<String> = std::iter::once("k".to_owned())
        .chain((0..enc_cols.len()).map(|i| format!("e{i}")))
        .chain(["h".to_owned(), "oh".to_owned()])
        .collect();
    format!(
        "UPDATE {} AS x SET {} FROM UNNEST({}) AS v({}) WHERE x.{} = v.k AND x.{} = {} AND x.{} = v.oh",
        ident::<D>(&def.table),
        sets.join(", "),
        arrays.join(", "),
        names.join(", "),
        ident::<D>(&def.primary_key),
        ident::<D>(&def.tenant),
        registry::tenant_ph::<D>(def, 2),
        ident::<D>(&def.header_column),
    )
}

/// MySQL/MariaDB: the rows of `part` in one statement (its text depends on
/// the table and the number of rows only), and its binds.
fn mysql_update<D: CliDb>(
    def: &TableDef,
    enc_cols: &[&str],
    tenant: &Value,
    target: u32,
    part: &[Resealed],
) -> (String, Vec<Value>) {
    let per = enc_cols.len() + 3;
    let mut sql = format!("UPDATE {} AS x JOIN (", ident::<D>(&def.table));
    let mut values = Vec::with_capacity(part.len() * per + 2);
    for (r, p) in part.iter().enumerate() {
        if r == 0 {
            let names: Vec<String> = std::iter::once("? AS k".to_owned())
                .chain((0..enc_cols.len()).map(|i| format!("? AS e{i}")))
                .chain(["? AS h".to_owned(), "? AS oh".to_owned()])
                .collect();
            sql.push_str("SELECT ");
            sql.push_str(&names.join(", "));
        } else {
            sql.push_str(" UNION ALL SELECT ");
            sql.push_str(&vec!["?"; per].join(", "));
        }
        values.push(p.pk.clone());
        values.extend(p.sealed.iter().cloned());
        values.push(Value::Bytes(p.header.clone()));
        values.push(Value::Bytes(p.old_header.clone()));
    }
    let sets: Vec<String> = enc_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("x.{} = v.e{i}", ident::<D>(c)))
        .chain([
            format!("x.{} = v.h", ident::<D>(&def.header_column)),
            format!("x.{} = ?", ident::<D>(&def.key_version_column)),
        ])
        .collect();
    values.push(Value::I64(i64::from(target)));
    values.push(tenant.clone());
    sql.push_str(&format!(
        ") AS v ON x.{} = v.k AND x.{} = v.oh SET {} WHERE x.{} = {}",
        ident::<D>(&def.primary_key),
        ident::<D>(&def.header_column),
        sets.join(", "),
        ident::<D>(&def.tenant),
        registry::tenant_ph::<D>(def, values.len()),
    ));
    (sql, values)
}

#[cfg(test)]
mod tests {
    use rowseal_sqlx::{schema, DbRow, SqlType};

    use super::*;

    #[derive(rowseal_sqlx::Encrypted)]
    #[rowseal(table = "people", record_type = "person", tenant = tenant_id, primary_key = id, bind_primary_key)]
    #[allow(dead_code)]
    struct Person {
        id: i64,
        tenant_id: String,
        #[rowseal(encrypt)]
        name: String,
        #[rowseal(encrypt)]
        email: Option<String>,
    }

    fn byte(id: i64) -> u8 {
        u8::try_from(id).unwrap()
    }

    /// A row changed since it was read (its header is no longer the one the
    /// batch read) and a row of another tenant are left alone by the batch
    /// write of every database; the others are written whole.
    async fn compare_and_swap<D: CliDb>(db: rowseal_test_support::db::TestDb<D>)
    where
        for<'e> &'e sqlx::Pool<D>: sqlx::Executor<'e, Database = D>,
    {
        schema::install(&db.pool).await.unwrap();
        schema::create_table::<Person, _>(&db.pool).await.unwrap();
        schema::register::<Person, _>(&db.pool).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let def = registry::tables::<D>(&mut conn, &["people".to_owned()])
            .await
            .unwrap()
            .remove(0);
        drop(conn);
        let enc_cols = def.encrypted_columns();
        let mut insert = format!(
            "INSERT INTO people (id, tenant_id, {}, {}, {}, {}) VALUES ",
            enc_cols[0], enc_cols[1], def.header_column, def.key_version_column
        );
        let mut values = Vec::new();
        for id in 1..=6i64 {
            if id > 1 {
                insert.push_str(", ");
            }
            insert.push('(');
            for k in 0..6 {
                if k > 0 {
                    insert.push_str(", ");
                }
                D::push_placeholder(&mut insert, values.len() + k + 1);
            }
            insert.push(')');
            let tenant = if id == 6 { "other" } else { "acme" };
            values.extend([
                Value::I64(id),
                Value::Text(tenant.into()),
                Value::Bytes(vec![1, byte(id)]),
                Value::Bytes(vec![2, byte(id)]),
                Value::Bytes(vec![9, byte(id)]),
                Value::I64(1),
            ]);
        }
        D::execute(&db.pool, &insert, values).await.unwrap();

        let resealed = |id: i64, old: Vec<u8>| Resealed {
            pk: Value::I64(id),
            tenant: Value::Text("acme".into()),
            sealed: vec![
                Value::Bytes(vec![11, byte(id)]),
                if id == 3 {
                    Value::Null(SqlType::Bytes)
                } else {
                    Value::Bytes(vec![12, byte(id)])
                },
            ],
            header: vec![19, byte(id)],
            old_header: old,
        };
        let pending = vec![
            resealed(1, vec![9, 1]),
            // Written by the application since the batch read it.
            resealed(2, vec![9, 99]),
            resealed(3, vec![9, 3]),
            resealed(4, vec![9, 4]),
            // Another tenant's row: never written by this tenant's batch.
            resealed(6, vec![9, 6]),
        ];
        let update = per_row_update::<D>(&def, &enc_cols);
        let tenant = Value::Text("acme".into());
        let mut tx = db.pool.begin().await.unwrap();
        // Batches of 2: full statements and a remainder on MySQL/MariaDB.
        let (done, conflicts) =
            write_rows::<D>(&mut tx, &def, &enc_cols, &update, &tenant, 7, 2, pending)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        assert_eq!((done, conflicts), (3, 2), "{}", db.kind);

        let select = format!(
            "SELECT id, {}, {}, {}, {} FROM people ORDER BY id",
            enc_cols[0], enc_cols[1], def.header_column, def.key_version_column
        );
        let rows = D::fetch_all(&db.pool, &select, vec![]).await.unwrap();
        let mut seen = Vec::new();
        for r in &rows {
            let id = crate::db::read_i64(r, 0).unwrap();
            let bytes = |i| r.read_opt_bytes(i).unwrap().map(<[u8]>::to_vec);
            seen.push((
                id,
                bytes(1),
                bytes(2),
                bytes(3),
                crate::db::read_i64(r, 4).unwrap(),
            ));
        }
        let b = |a: u8, id: i64| Some(vec![a, byte(id)]);
        let old = |id| (id, b(1, id), b(2, id), b(9, id), 1);
        assert_eq!(
            seen,
            vec![
                (1, b(11, 1), b(12, 1), b(19, 1), 7),
                old(2),
                (3, b(11, 3), None, b(19, 3), 7),
                (4, b(11, 4), b(12, 4), b(19, 4), 7),
                old(5),
                old(6),
            ],
            "{}",
            db.kind
        );
        db.finish().await;
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_postgres() {
        if let Some(db) = rowseal_test_support::db::postgres(2).await {
            compare_and_swap(db).await;
        }
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_mariadb() {
        if let Some(db) = rowseal_test_support::db::mysql(2).await {
            compare_and_swap(db).await;
        }
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_sqlite() {
        compare_and_swap(rowseal_test_support::db::sqlite(2).await).await;
    }

    #[test]
    fn chunks_are_full_batches_then_powers_of_two() {
        assert_eq!(chunk_sizes(2000, 1000), vec![1000, 1000]);
        assert_eq!(chunk_sizes(1000, 1000), vec![1000]);
        assert_eq!(chunk_sizes(13, 1000), vec![8, 4, 1]);
        assert_eq!(chunk_sizes(1005, 1000), vec![1000, 4, 1]);
        assert_eq!(chunk_sizes(0, 1000), Vec::<usize>::new());
        assert_eq!(chunk_sizes(3, 0), vec![1, 1, 1]);
        for n in 0..300 {
            assert_eq!(chunk_sizes(n, 100).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn one_unnest_statement_per_table() {
        let entry = serde_json::json!({
            "format": 1, "record_type": "person", "table": "people", "key_mode": "derived",
            "bind_primary_key": true, "tenant": "tenant_id", "primary_key": "id",
            "primary_key_type": "i64",
            "fields": [
                {"name": "id", "column": "id", "sql_type": "i64", "nullable": false},
                {"name": "tenant_id", "column": "tenant_id", "sql_type": "text", "nullable": false}
            ]
        });
        let def = TableDef::from_registry_json("people", &entry.to_string()).unwrap();
        let sql = unnest_update::<sqlx::Postgres>(&def, &["name", "email"], "int8[]");
        assert_eq!(
            sql,
            format!(
                "UPDATE \"people\" AS x SET \"name\" = v.e0, \"email\" = v.e1, \"{h}\" = v.h, \"{kv}\" = $1 \
                 FROM UNNEST($3::int8[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[]) AS v(k, e0, e1, h, oh) \
                 WHERE x.\"id\" = v.k AND x.\"tenant_id\" = $2 AND x.\"{h}\" = v.oh",
                h = def.header_column,
                kv = def.key_version_column
            )
        );
    }
}
