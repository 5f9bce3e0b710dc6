//! kms-mode tables: a new provider data key per row.
//!
//! kms-mode rows have no tenant-key version to select "rows still to do" by,
//! so the job walks each table in primary-key order with a cursor kept in the
//! job's `checkpoint` (`{"kms": {"<table>": {"after": <pk>, "done": bool}}}`;
//! for a table whose primary key is `(tenant, key)`, the walk is in
//! `(tenant, key)` order and the cursor also holds the tenant's canonical id,
//! `"after_tenant": "<id>"`, see [`crate::scan`]).
//! A batch is one transaction that locks the job row (`FOR UPDATE`; SQLite's
//! write lock), reads the cursor, locks the next rows (`FOR UPDATE`, waiting
//! for the application's locks rather than skipping them, since the cursor
//! moves past every row it reads), opens each row with its old data key, seals
//! its fields under a new data key (one GenerateDataKey, rate-limited by
//! --kms-rate), writes it with a compare-and-swap on the old header, and moves
//! the cursor and the job's count — committed together. Batches of one job are
//! therefore serial (across workers and processes); kms-mode rotation is
//! bounded by the provider's rate anyway.

use std::sync::Mutex;

use rowseal_core::KeyHierarchy;
use rowseal_sqlx::Value;
use serde_json::json;

use super::reseal::{reseal, row_write, NewKeys};
use super::Shared;
use crate::cmd::RowOpener;
use crate::db::{ident, ph, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, TableDef};
use crate::scan::{cursor_from_json, cursor_to_json, BatchScanner, CursorError, RowId};

/// Most rows per kms-mode batch: the batch holds its row locks while it
/// calls the provider once per row.
pub(super) const KMS_BATCH: usize = 100;

/// The job's checkpoint (the kms-mode cursors).
pub(super) async fn cursors<D: CliDb>(
    conn: &mut D::Connection,
    job_id: &str,
) -> Result<serde_json::Value> {
    let sql = format!(
        "SELECT checkpoint FROM rowseal_jobs WHERE id = {}",
        ph::<D>(1)
    );
    let rows = D::fetch_all_on(conn, &sql, vec![Value::Text(job_id.to_owned())]).await?;
    let text = rows
        .first()
        .map(|r| crate::db::read_text(r, 0))
        .transpose()?
        .unwrap_or_default();
    Ok(serde_json::from_str(&text).unwrap_or_else(|_| json!({})))
}

/// Where a table's walk stands: `None` when done, else the last row done
/// (`Some(None)`: not started). A cursor of a table whose primary key is
/// `(tenant, key)` that lacks its tenant is refused: resuming from the key
/// alone would skip the rows of other tenants sharing it, or redo some.
pub(super) fn after(cursors: &serde_json::Value, def: &TableDef) -> Result<Option<Option<RowId>>> {
    let entry = &cursors["kms"][&def.table];
    if entry["done"] == json!(true) {
        return Ok(None);
    }
    match cursor_from_json(def, entry) {
        Ok(cursor) => Ok(Some(cursor)),
        Err(CursorError::NoTenant) => Err(CliError::new(
            ExitCode::Refused,
            format!(
                "the job's cursor for {} has no tenant (\"after_tenant\"), but the table's primary key is (tenant, key): resuming from the key alone would skip or redo rows. The table's model changed while the job ran; mark the job failed in rowseal_jobs and run rotate again",
                def.table
            ),
        )),
        Err(CursorError::NotUnderstood) => Err(CliError::new(
            ExitCode::Internal,
            format!("the job's cursor for {} is not understood", def.table),
        )),
    }
}

/// The rows with a data key to rotate after row `after`, in primary-key
/// order: `header IS NOT NULL [AND tenant = ? | tenant NOT IN
/// (shredded...)]` (the rows of shredded tenants have no key left to rotate).
fn rows_to_do<'a, D: CliDb>(
    def: &'a TableDef,
    tenant: Option<&str>,
    shredded: &[String],
    after: Option<RowId>,
    batch: usize,
) -> BatchScanner<'a, D> {
    // Legacy plaintext rows (`encrypt-column` not run yet) have no header
    // and no data key to rotate.
    let mut conds = vec![format!("{} IS NOT NULL", ident::<D>(&def.header_column))];
    let mut values = Vec::new();
    // Tenants are canonical ids, bound as the tenant column holds them.
    if let Some(t) = tenant {
        match registry::tenant_filter::<D>(def, t, values.len() + 1) {
            Some((is_tenant, v)) => {
                values.push(v);
                conds.push(is_tenant);
            }
            // A column that cannot hold the tenant has none of its rows:
            // the walk finds nothing and records the table done.
            None => conds.push("1 = 0".to_owned()),
        }
    } else {
        // Shredded tenants the column cannot hold have no rows here.
        let mut list = Vec::new();
        for v in shredded.iter().filter_map(|t| def.tenant_value(t)) {
            values.push(v);
            list.push(registry::tenant_ph::<D>(def, values.len()));
        }
        if !list.is_empty() {
            conds.push(format!(
                "{} NOT IN ({})",
                ident::<D>(&def.tenant),
                list.join(", ")
            ));
        }
    }
    BatchScanner::new(def, registry::select_list::<D>(def), batch)
        .filter(conds.join(" AND "), values)
        .after(after)
}

/// The kms-mode rows still to rotate after `after`.
pub(super) async fn count<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    tenant: Option<&str>,
    shredded: &[String],
    after: Option<&RowId>,
) -> Result<u64> {
    rows_to_do::<D>(def, tenant, shredded, after.cloned(), 0)
        .remaining(conn)
        .await
}

/// One kms-mode batch; returns the rows read (0: the table is done).
#[allow(clippy::too_many_arguments)]
pub(super) async fn batch_once<D: CliDb>(
    pool: &sqlx::Pool<D>,
    keys: &KeyHierarchy,
    opener: &mut RowOpener,
    def: &TableDef,
    tenant: Option<&str>,
    shredded: &[String],
    shared: &Mutex<Shared>,
    progress: &Progress,
    job_id: &str,
    batch: usize,
) -> Result<usize> {
    let pk_type = def.primary_key_type;
    let new_keys = NewKeys::Kms {
        hierarchy: keys,
        spec: def.spec(),
    };
    let enc_cols = def.encrypted_columns();
    let lock = if D::CONCURRENT_WRITERS {
        " FOR UPDATE"
    } else {
        ""
    };
    let mut tx = pool.begin_with(D::BEGIN).await?;
    // The job row: serializes the batches of this job, holds the cursor.
    let sql = format!(
        "SELECT checkpoint, state FROM rowseal_jobs WHERE id = {}{lock}",
        ph::<D>(1)
    );
    let rows = D::fetch_all_on(&mut *tx, &sql, vec![Value::Text(job_id.to_owned())]).await?;
    // A job another process has ended (its checkpoint is now the summary,
    // with no cursor) is not walked again: that would give every kms-mode
    // row a second data key.
    let ended = rows
        .first()
        .map(|r| crate::db::read_text(r, 1))
        .transpose()?
        .is_some_and(|state| state == "done" || state == "failed");
    if ended {
        tx.commit().await?;
        return Ok(0);
    }
    let text = rows
        .first()
        .map(|r| crate::db::read_text(r, 0))
        .transpose()?
        .unwrap_or_default();
    let mut cursors: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({}));
    if !cursors.is_object() {
        cursors = json!({});
    }
    let Some(start) = after(&cursors, def)? else {
        tx.commit().await?;
        return Ok(0);
    };
    let mut scan = rows_to_do::<D>(def, tenant, shredded, start, batch).claim(lock);
    let rows = scan.next(&mut *tx).await?;
    let save = |cursors: &mut serde_json::Value, scan: &BatchScanner<'_, D>, done: bool| {
        if !cursors["kms"].is_object() {
            cursors["kms"] = json!({});
        }
        let mut entry = cursor_to_json(def, scan.last());
        entry["done"] = json!(done);
        cursors["kms"][&def.table] = entry;
    };
    let checkpoint_sql = format!(
        "UPDATE rowseal_jobs SET checkpoint = {}, rows_done = rows_done + {}, heartbeat_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP, worker = {} WHERE id = {}",
        ph::<D>(1),
        ph::<D>(2),
        ph::<D>(3),
        ph::<D>(4)
    );
    if rows.is_empty() {
        save(&mut cursors, &scan, true);
        D::execute_on(
            &mut *tx,
            &checkpoint_sql,
            vec![
                Value::Text(cursors.to_string()),
                Value::I64(0),
                Value::Text(jobs::worker_name()),
                Value::Text(job_id.to_owned()),
            ],
        )
        .await?;
        tx.commit().await?;
        return Ok(0);
    }
    let (resealed, failures) = reseal::<D>(&rows, def, pk_type, opener, &new_keys).await?;
    // kms-mode rows have no tenant-key version: 0.
    let writes = resealed
        .into_iter()
        .map(|r| row_write(def, &enc_cols, r, 0))
        .collect();
    let (done, conflicts) = crate::write::write_counted::<D>(&mut *tx, def, writes).await?;
    save(&mut cursors, &scan, false);
    D::execute_on(
        &mut *tx,
        &checkpoint_sql,
        vec![
            Value::Text(cursors.to_string()),
            Value::I64(i64::try_from(done).unwrap_or(i64::MAX)),
            Value::Text(jobs::worker_name()),
            Value::Text(job_id.to_owned()),
        ],
    )
    .await?;
    tx.commit().await?;
    progress.add(done);
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(&def.table, done, conflicts, failures)?;
    Ok(rows.len())
}
