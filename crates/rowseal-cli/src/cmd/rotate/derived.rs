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
use crate::db::{ident, ph, CliDb};
use crate::error::Result;
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, TableDef};
use crate::scan::{BatchScanner, RowId};

/// The rows of `tenant` not on key version `target` yet but those in
/// `failed`: `tenant = $1 AND version < $2 [AND <not failed>]` (the rows
/// skipped by their identity, [`crate::scan::among`]). `None` when the
/// table's tenant column cannot hold `tenant` (no row to do).
fn rows_to_do<'a, D: CliDb>(
    def: &'a TableDef,
    tenant: &str,
    target: u32,
    failed: Vec<RowId>,
    batch: usize,
) -> Option<BatchScanner<'a, D>> {
    let (is_tenant, tenant_value) = registry::tenant_filter::<D>(def, tenant, 1)?;
    let filter = format!(
        "{is_tenant} AND {} < {}",
        ident::<D>(&def.key_version_column),
        ph::<D>(2)
    );
    let binds = vec![tenant_value, Value::I64(i64::from(target))];
    let mut scan = BatchScanner::new(def, registry::select_list::<D>(def), batch)
        .filter(filter, binds)
        .draining();
    scan.skip(failed);
    Some(scan)
}

/// The rows of `tenant` still to re-encrypt under `target`, but `failed`.
pub(super) async fn count<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    tenant: &str,
    target: u32,
    failed: &[RowId],
) -> Result<u64> {
    match rows_to_do::<D>(def, tenant, target, failed.to_vec(), 0) {
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
        rows_to_do::<D>(def, tenant, target, failed, batch),
    ) else {
        return Ok(0);
    };
    let mut scan = scan.claim(D::CLAIM);
    let update = per_row_update::<D>(def, &enc_cols);

    let new_keys = NewKeys::Derived {
        tenant,
        keys: opener.record_keys(def, tenant, target).await?,
    };
    let mut tx = pool.begin_with(D::BEGIN).await?;
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

/// Writes re-encrypted rows with a compare-and-swap on each old header: one
/// statement per batch on PostgreSQL (`UPDATE … FROM (VALUES …)`) and
/// MySQL/MariaDB (`UPDATE … JOIN (SELECT … UNION ALL …)`), one per row on
/// SQLite (in-process, and already holding the write lock). Returns (rows
/// written, rows changed meanwhile and left alone).
async fn write_rows<D: CliDb>(
    tx: &mut sqlx::Transaction<'static, D>,
    def: &TableDef,
    enc_cols: &[&str],
    per_row: &str,
    tenant: &Value,
    target: u32,
    pending: Vec<Resealed>,
) -> Result<(u64, u64)> {
    let attempted = pending.len() as u64;
    if pending.is_empty() {
        return Ok((0, 0));
    }
    let per = enc_cols.len() + 3;
    // Stay well below every database's bind-parameter limit.
    let chunk = (30_000 / per).max(1);
    let mut written = 0u64;
    match D::DIALECT {
        "postgres" => {
            for part in pending.chunks(chunk) {
                let mut sql = format!("UPDATE {} AS x SET ", ident::<D>(&def.table));
                let sets: Vec<String> = enc_cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} = v.e{i}", ident::<D>(c)))
                    .chain([
                        format!("{} = v.h", ident::<D>(&def.header_column)),
                        format!("{} = {}", ident::<D>(&def.key_version_column), ph::<D>(1)),
                    ])
                    .collect();
                sql.push_str(&sets.join(", "));
                sql.push_str(" FROM (VALUES ");
                let mut values = vec![Value::I64(i64::from(target)), tenant.clone()];
                let mut n = 2;
                for (r, p) in part.iter().enumerate() {
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    let cells: Vec<String> = (0..per)
                        .map(|_| {
                            n += 1;
                            ph::<D>(n)
                        })
                        .collect();
                    sql.push('(');
                    sql.push_str(&cells.join(", "));
                    sql.push(')');
                    values.push(p.pk.clone());
                    values.extend(p.sealed.iter().cloned());
                    values.push(Value::Bytes(p.header.clone()));
                    values.push(Value::Bytes(p.old_header.clone()));
                }
                let names: Vec<String> = (0..enc_cols.len()).map(|i| format!("e{i}")).collect();
                sql.push_str(&format!(
                    ") AS v(k, {}{}h, oh) WHERE x.{} = v.k AND x.{} = {} AND x.{} = v.oh",
                    names.join(", "),
                    if names.is_empty() { "" } else { ", " },
                    ident::<D>(&def.primary_key),
                    ident::<D>(&def.tenant),
                    registry::tenant_ph::<D>(def, 2),
                    ident::<D>(&def.header_column),
                ));
                written += D::execute_on(&mut **tx, &sql, values).await?;
            }
        }
        "mysql" => {
            for part in pending.chunks(chunk) {
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
