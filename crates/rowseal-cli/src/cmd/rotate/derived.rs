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

use super::reseal::{reseal, row_write, NewKeys};
use super::{failed_of, Shared};
use crate::cmd::RowOpener;
use crate::db::CliDb;
use crate::error::Result;
use crate::jobs;
use crate::output::Progress;
use crate::registry::TableDef;
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
    let (Some(_), Some(scan)) = (
        def.tenant_value(tenant),
        crate::scan::rotation_scan::<D>(def, tenant, target, failed, batch),
    ) else {
        return Ok(0);
    };
    let mut scan = scan.claim(D::CLAIM);

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
    let writes = pending
        .into_iter()
        .map(|r| row_write(def, &enc_cols, r, target))
        .collect();
    let (done, conflicts) = crate::write::write_counted::<D>(&mut *tx, def, writes).await?;
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
