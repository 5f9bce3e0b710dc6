//! `rowseal reindex`: rotate blind-index keys and rebuild the blind indexes
//! under the new version, with the application serving traffic.
//!
//! Index keys belong to a scope (a tenant, or global) and are shared by every
//! table's indexes in that scope, so a rotation covers every registered table
//! with blind indexes. The steps, each safe to repeat (a killed run is resumed
//! by running the same command again):
//! 1. make the next version of each scope's index key *pending*
//!    (`KeyHierarchy::begin_index_key_rotation`): from the moment an
//!    application process sees it (within its key-cache lifetime), its writes
//!    fill both the active and the pending slot of every index and its lookups
//!    query both;
//! 2. wait `--cache-ttl` seconds from the moment the version became pending
//!    (recorded in the job, so a resumed run does not wait again), so that no
//!    process still writes the active version alone;
//! 3. backfill: for every row whose pending slot lacks the pending version,
//!    decrypt the covered fields, compute the value and write that slot only,
//!    conditionally on the row's key header and covered ciphertexts being
//!    unchanged (a row the application changed meanwhile already has it, or is
//!    picked up by the next sweep);
//! 4. promote the pending version and retire the old one
//!    (`KeyHierarchy::promote_index_key`): lookups query the new slot alone;
//! 5. wait `--cache-ttl` again (some processes still write the old slot until
//!    they see the promotion), then clear the retired version's values, whose
//!    slot the next rotation reuses.
//!
//! `--backfill-only` skips 1, 2 and 4: it fills the values missing under the
//! current version (rows written before an index existed).
//!
//! An index whose normalization includes the application's own function
//! (`normalize_with`) cannot be computed here: the rotation is refused, and
//! the application must backfill with `Encryptor::reindex_batch`.
//!
//! Tenants are canonical ids (read from the tables' tenant columns, whatever
//! their type, and named so in `rowseal_keys` and on the command line); a
//! table whose tenant column cannot hold a tenant has none of its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rowseal_core::KeyScope;
use rowseal_sqlx::schema::IndexScope;
use rowseal_sqlx::{DbRow, Value};
use serde_json::json;
use zeroize::Zeroizing;

use super::index_check::TableIndexes;
use super::{Ctx, RowOpener};
use crate::db::{ident, ph, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, TableDef, FIRST_ENCRYPTED};
use crate::scan::{among, BatchScanner, RowId};
use crate::write::RowWrite;

/// What to reindex.
pub struct Request {
    pub tenant: Option<String>,
    pub backfill_only: bool,
    pub cache_ttl: Duration,
    pub dry_run: bool,
    pub tables: Vec<String>,
}

/// Index-key versions per scope (`""`: global): the target of the backfill.
type Targets = BTreeMap<String, u32>;

/// Sweeps over a table before giving up on rows that keep changing.
const MAX_SWEEPS: usize = 5;

pub async fn run<D: CliDb>(ctx: &Ctx<D>, req: Request) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    if !req.backfill_only && !req.tables.is_empty() {
        return Err(CliError::config(
            "index keys are shared by every table of a tenant: a rotation covers all registered tables (drop --table, or use --backfill-only)",
        ));
    }
    let mut tables: Vec<(TableDef, TableIndexes)> = Vec::new();
    let mut refused = Vec::new();
    for def in registry::tables::<D>(&mut conn, &req.tables).await? {
        if def.blind_indexes.is_empty() {
            continue;
        }
        let first_extra = FIRST_ENCRYPTED + def.encrypted_columns().len();
        let indexes = TableIndexes::new(&def, first_extra);
        for n in &indexes.not_checked {
            refused.push(format!("{}.{}: {}", def.table, n.index, n.reason));
        }
        if !indexes.is_empty() {
            tables.push((def, indexes));
        }
    }
    if !refused.is_empty() {
        let list = refused.join("; ");
        ctx.out.emit(
            json!({"event": "refused", "command": "reindex", "indexes": refused}),
            || format!("reindex refused: these blind indexes cannot be computed by the command-line tool: {list}. Backfill them from the application with Encryptor::reindex_batch."),
        );
        return Ok(ExitCode::Refused);
    }

    if let Some(one) = &req.tenant {
        let defs: Vec<TableDef> = tables.iter().map(|(d, _)| d.clone()).collect();
        registry::check_tenant_arg::<D>(&mut conn, &defs, one).await?;
    }
    // The scopes: tenants with rows (or the one named), and global.
    let mut tenants: BTreeSet<String> = BTreeSet::new();
    let mut global = false;
    for (def, indexes) in &tables {
        let (g, t) = indexes.scopes();
        global |= g;
        if t {
            match &req.tenant {
                Some(one) => {
                    tenants.insert(one.clone());
                }
                None => {
                    let sql = format!(
                        "SELECT DISTINCT {} FROM {}",
                        ident::<D>(&def.tenant),
                        ident::<D>(&def.table)
                    );
                    for r in D::fetch_all_on(&mut conn, &sql, vec![]).await? {
                        tenants.insert(registry::read_tenant(def, &r, 0)?);
                    }
                }
            }
        }
    }
    // A shredded tenant's rows have no key left to read them by, and shred
    // cleared their global index values on purpose: nothing to index.
    let (_, shredded) = registry::tenant_versions::<D>(&mut conn).await?;
    for t in &shredded {
        tenants.remove(t);
    }
    // A named tenant rotates that tenant's key only, not the global one.
    let rotate_global = global && req.tenant.is_none();
    let mut scopes: Vec<(String, KeyScope)> = tenants
        .iter()
        .map(|t| (t.clone(), KeyScope::Tenant(t.clone())))
        .collect();
    if rotate_global {
        scopes.push((String::new(), KeyScope::Global));
    }

    let keys = ctx.keys().await?;
    if req.dry_run {
        let mut todo = 0u64;
        for (def, indexes) in &tables {
            for tenant in &tenants {
                let targets = current_targets(&keys.hierarchy, tenant, global).await?;
                todo += remaining::<D>(&mut conn, def, indexes, tenant, &targets).await?;
            }
        }
        ctx.out.emit(
            json!({"event": "plan", "command": "reindex", "tables": tables.len(),
                   "scopes": scopes.len(), "rotate": !req.backfill_only,
                   "rows_without_current_value": todo}),
            || {
                format!(
                    "would {} {} index-key scope(s) over {} table(s); {todo} rows lack a value under the current version",
                    if req.backfill_only { "backfill" } else { "rotate" },
                    scopes.len(),
                    tables.len()
                )
            },
        );
        return Ok(ExitCode::Ok);
    }

    // 1. Pending versions, and the job that remembers when they appeared.
    let scope_param = json!({"tenant": req.tenant, "backfill_only": req.backfill_only});
    let existing = jobs::running::<D>(&mut conn, "reindex")
        .await?
        .into_iter()
        .find(|j| j.params.get("scope") == Some(&scope_param));
    // A resumed job keeps the versions it started (a version it already
    // promoted is not rotated again); a new one makes them pending.
    let mut pending: Vec<(KeyScope, u32)> = Vec::new();
    let (job, pending_since) = match existing {
        Some(j) => {
            let since = j
                .params
                .get("pending_since")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_else(now_secs);
            let recorded = j
                .params
                .get("pending")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in recorded {
                let scope = match p.get("tenant").and_then(serde_json::Value::as_str) {
                    Some(t) => KeyScope::Tenant(t.to_owned()),
                    None => KeyScope::Global,
                };
                let Some(v) = p
                    .get("version")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                else {
                    continue;
                };
                pending.push((scope, v));
            }
            (j.id, since)
        }
        None => {
            if !req.backfill_only {
                for (_, scope) in &scopes {
                    match keys.hierarchy.begin_index_key_rotation(scope).await {
                        Ok(v) => pending.push((scope.clone(), v)),
                        // A scope that never had an index key has nothing
                        // indexed yet: the backfill gives it version 1.
                        Err(rowseal_core::Error::InvalidInput { reason })
                            if reason.starts_with("no active index key") => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let since = now_secs();
            let recorded: Vec<serde_json::Value> = pending
                .iter()
                .map(|(s, v)| json!({"tenant": s.tenant(), "version": v}))
                .collect();
            let id = jobs::create::<D>(
                &mut conn,
                "reindex",
                &json!({"scope": scope_param, "pending_since": since, "pending": recorded}),
            )
            .await?;
            (id, since)
        }
    };

    // 2. Wait until every application has seen the pending versions.
    if !pending.is_empty() {
        let ready_at = pending_since.saturating_add(req.cache_ttl.as_secs());
        let wait = ready_at.saturating_sub(now_secs());
        if wait > 0 {
            ctx.out.emit(
                json!({"event": "waiting", "job": job, "seconds": wait,
                       "reason": "application key caches must see the pending index-key versions"}),
                || format!("reindex: new index-key versions are pending; waiting {wait} s for application key caches (--cache-ttl)"),
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
        // This process's own view must include the pending versions.
        keys.hierarchy.forget_cached_keys();
    }

    // 3. Backfill.
    let mut total = 0u64;
    let mut per_tenant_targets: BTreeMap<String, Targets> = BTreeMap::new();
    for tenant in &tenants {
        per_tenant_targets.insert(
            tenant.clone(),
            current_targets(&keys.hierarchy, tenant, global).await?,
        );
    }
    for (def, indexes) in &tables {
        for tenant in &tenants {
            total += remaining::<D>(&mut conn, def, indexes, tenant, &per_tenant_targets[tenant])
                .await?;
        }
    }
    // The sweeps take their own connections (and the key store one more).
    drop(conn);
    let (progress, handle) = Progress::start(ctx.out, job.clone(), total);
    let mut opener = RowOpener::new(keys.hierarchy.clone());
    let (mut written, mut failed, mut left) = (0u64, 0u64, 0u64);
    for (def, indexes) in &mut tables {
        for tenant in &tenants {
            let targets = &per_tenant_targets[tenant];
            let mut changing = false;
            for _ in 0..MAX_SWEEPS {
                let s = backfill_sweep(
                    ctx,
                    &mut opener,
                    &keys,
                    &job,
                    def,
                    indexes,
                    tenant,
                    targets,
                    &progress,
                )
                .await?;
                written += s.written;
                failed += s.failed;
                changing = s.changed > 0;
                if !changing {
                    break;
                }
            }
            // Rows that kept changing through every sweep may still lack
            // their value (a tenant-key rotation rewrites the header without
            // touching index columns): count what is left.
            if changing {
                let mut conn = ctx.conn().await?;
                left += remaining::<D>(&mut conn, def, indexes, tenant, targets).await?;
            }
        }
    }
    progress.finish(handle).await;

    // 4. Promote, only when every row has its value.
    let mut promoted = Vec::new();
    let ok = failed == 0 && left == 0;
    if ok {
        for (scope, v) in &pending {
            keys.hierarchy.promote_index_key(scope, *v).await?;
            promoted.push(json!({"scope": scope.to_string(), "version": v}));
        }
    }
    let mut conn = ctx.conn().await?;

    // 5. Clear the retired versions' values, once every application has seen
    // the promotion (until then some still write and query both): the slot
    // is reused by the next rotation, where a stale value could collide with
    // a new one in a unique index.
    let mut cleared = 0u64;
    if ok && !pending.is_empty() {
        let wait = req.cache_ttl.as_secs();
        if wait > 0 {
            ctx.out.emit(
                json!({"event": "waiting", "job": job, "seconds": wait,
                       "reason": "application key caches must see the promotion before the retired values are cleared"}),
                || format!("reindex: promoted; waiting {wait} s for application key caches before clearing the retired index values"),
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
        for (def, _) in &tables {
            for (scope, v) in &pending {
                cleared += clear_retired::<D>(
                    &mut conn,
                    def,
                    scope,
                    v.saturating_sub(1),
                    ctx.settings.batch_size,
                )
                .await?;
            }
        }
    }
    let summary = json!({"written": written, "failed": failed, "left": left,
                         "promoted": promoted, "cleared": cleared});
    jobs::finish::<D>(
        &mut conn,
        &job,
        if ok { "done" } else { "failed" },
        &summary,
    )
    .await?;
    let n_promoted = promoted.len();
    ctx.out.emit(
        json!({"event": "done", "command": "reindex", "job": job, "rows_indexed": written,
               "failed": failed, "rows_left": left,
               "promoted": promoted, "retired_values_cleared": cleared,
               "provider_calls": keys.calls()}),
        || {
            if ok {
                format!("reindex: {written} rows indexed; {n_promoted} index-key version(s) promoted")
            } else {
                format!("reindex: {written} rows indexed, {failed} rows FAILED (listed above), {left} rows still without their value; nothing promoted: fix the failures and run again")
            }
        },
    );
    Ok(if ok { ExitCode::Ok } else { ExitCode::Failures })
}

/// Sets the values of index-key version `old` of `scope` to NULL in the
/// slot that version lives in, a batch of rows at a time. Returns the rows
/// changed.
async fn clear_retired<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    scope: &KeyScope,
    old: u32,
    batch: usize,
) -> Result<u64> {
    if old == 0 {
        return Ok(0);
    }
    let t = ident::<D>(&def.table);
    // The key, then the tenant: a row's identity (under a composite primary
    // key the key alone names a row per tenant only).
    let select = format!(
        "{}, {}",
        ident::<D>(&def.primary_key),
        ident::<D>(&def.tenant)
    );
    let mut cleared = 0u64;
    for idx in &def.blind_indexes {
        if (idx.scope == IndexScope::Global) != matches!(scope, KeyScope::Global) {
            continue;
        }
        let (column, version_column) = idx.slot(old);
        let (c, kv) = (ident::<D>(column), ident::<D>(version_column));
        let mut cond = format!("{kv} = {}", ph::<D>(1));
        let mut binds = vec![Value::I64(i64::from(old))];
        if let KeyScope::Tenant(tenant) = scope {
            // A table whose tenant column cannot hold the tenant has none
            // of its values.
            let Some((is_tenant, tenant_value)) = registry::tenant_filter::<D>(def, tenant, 2)
            else {
                return Ok(cleared);
            };
            binds.push(tenant_value);
            cond.push_str(&format!(" AND {is_tenant}"));
        }
        // Each batch's update takes its rows out of `cond`.
        let mut scan = BatchScanner::<D>::new(def, select.clone(), batch)
            .filter(cond.clone(), binds.clone())
            .draining();
        loop {
            let rows = scan.next(conn).await?;
            if rows.is_empty() {
                break;
            }
            let ids = rows
                .iter()
                .map(|r| RowId::read(def, r))
                .collect::<Result<Vec<_>>>()?;
            let mut values = binds.clone();
            // `<pk> IN (...)`, or the (key, tenant) pairs.
            let is_batch = among::<D>(def, &ids, &mut values, false);
            let sql = format!("UPDATE {t} SET {c} = NULL, {kv} = NULL WHERE {cond} AND {is_batch}");
            cleared += D::execute_on(conn, &sql, values).await?;
        }
    }
    Ok(cleared)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The backfill target of each scope a tenant's rows use: the pending version
/// if a rotation is under way, else the active one (created if none).
async fn current_targets(
    hierarchy: &std::sync::Arc<rowseal_core::KeyHierarchy>,
    tenant: &str,
    global: bool,
) -> Result<Targets> {
    let mut out = Targets::new();
    let v = hierarchy
        .index_key_versions(&KeyScope::Tenant(tenant.to_owned()))
        .await?;
    out.insert(tenant.to_owned(), v.pending.unwrap_or(v.write));
    if global {
        let g = hierarchy.index_key_versions(&KeyScope::Global).await?;
        out.insert(String::new(), g.pending.unwrap_or(g.write));
    }
    Ok(out)
}

fn target_of<'a>(targets: &'a Targets, tenant: &'a str) -> impl Fn(bool) -> u32 + 'a {
    move |global| {
        let scope = if global { "" } else { tenant };
        targets.get(scope).copied().unwrap_or(1)
    }
}

/// The rows of `tenant` still to do: `tenant = ? AND (<target version
/// column> IS NULL OR <> v OR ...)`, in primary-key order, selecting the
/// table's select list and `indexes`' extra columns. `None` when the table's
/// tenant column cannot hold `tenant` (none of its rows are here).
fn todo_scan<'a, D: CliDb>(
    def: &'a TableDef,
    indexes: &TableIndexes,
    tenant: &str,
    targets: &Targets,
    batch: usize,
) -> Option<BatchScanner<'a, D>> {
    let (is_tenant, tenant_value) = registry::tenant_filter::<D>(def, tenant, 1)?;
    let mut binds = vec![tenant_value];
    let mut sql = format!("{is_tenant} AND (");
    for (i, (kv, v)) in indexes
        .target_slots(target_of(targets, tenant))
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            sql.push_str(" OR ");
        }
        binds.push(Value::I64(i64::from(v)));
        sql.push_str(&format!(
            "{c} IS NULL OR {c} <> {}",
            ph::<D>(binds.len()),
            c = ident::<D>(&kv)
        ));
    }
    sql.push(')');
    let mut select = registry::select_list::<D>(def);
    for c in &indexes.extra_columns {
        select.push_str(", ");
        select.push_str(&ident::<D>(c));
    }
    Some(BatchScanner::new(def, select, batch).filter(sql, binds))
}

/// How many rows of `tenant` in `def`'s table are still to do.
async fn remaining<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    indexes: &TableIndexes,
    tenant: &str,
    targets: &Targets,
) -> Result<u64> {
    match todo_scan::<D>(def, indexes, tenant, targets, 0) {
        Some(scan) => scan.remaining(conn).await,
        None => Ok(0),
    }
}

#[derive(Default)]
struct Sweep {
    written: u64,
    failed: u64,
    changed: u64,
}

/// One pass over a tenant's rows still to do, in primary-key order.
#[allow(clippy::too_many_arguments)]
async fn backfill_sweep<D: CliDb>(
    ctx: &Ctx<D>,
    opener: &mut RowOpener,
    keys: &super::Keys,
    job: &str,
    def: &TableDef,
    indexes: &mut TableIndexes,
    tenant: &str,
    targets: &Targets,
    progress: &Progress,
) -> Result<Sweep> {
    let mut sweep = Sweep::default();
    let Some(mut scan) = todo_scan::<D>(def, indexes, tenant, targets, ctx.settings.batch_size)
    else {
        return Ok(sweep);
    };
    let mut conn = ctx.conn().await?;
    let enc: Vec<String> = def
        .encrypted_columns()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let names = def.encrypted_field_names();
    loop {
        let rows = scan.next(&mut conn).await?;
        if rows.is_empty() {
            break;
        }
        // Compute every write first (the key store needs a pooled
        // connection), then apply them in one transaction.
        let mut planned: Vec<RowWrite> = Vec::new();
        for row in &rows {
            let id = RowId::read(def, row)?;
            let pk = id.key.clone();
            let header = row.read_bytes(2)?.to_vec();
            let mut report = |error: String| {
                sweep.failed += 1;
                ctx.out.emit(
                    json!({"event": "failure", "table": def.table, "tenant": tenant,
                           "primary_key": pk.key_display(), "error": error}),
                    || {
                        format!(
                            "FAILED {} primary key {}: {error}",
                            def.table,
                            pk.key_display()
                        )
                    },
                );
            };
            let pkb = match def.primary_key_bytes(&pk) {
                Ok(b) => b,
                Err(e) => {
                    report(super::describe(&e));
                    continue;
                }
            };
            // Every ciphertext is kept for the compare-and-swap.
            let mut sealed = super::read_envelopes(def, row)?;
            let key = match opener
                .open_cells(def, tenant, pkb.as_deref(), &header, &sealed)
                .await
            {
                Ok(k) => k,
                Err(e) => {
                    report(super::describe(&e));
                    continue;
                }
            };
            // Decrypt the covered fields.
            let mut plain: Vec<Option<Zeroizing<Vec<u8>>>> = vec![None; enc.len()];
            let mut bad = None;
            for (i, (name, env)) in names.iter().zip(&sealed).enumerate() {
                if let (Some(env), true) = (env, indexes.covered_encrypted[i]) {
                    match rowseal_sqlx::encoding::open_encoded(&key, *name, env) {
                        Ok(p) => plain[i] = Some(Zeroizing::new(p)),
                        Err(e) => {
                            bad = Some(format!("{}: {}", name.column, super::describe(&e)));
                            break;
                        }
                    }
                }
            }
            if let Some(e) = bad {
                report(e);
                continue;
            }
            let writes = match indexes
                .reindex_writes(
                    &keys.hierarchy,
                    tenant,
                    row,
                    &plain,
                    target_of(targets, tenant),
                )
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    report(e);
                    continue;
                }
            };
            if writes.is_empty() {
                continue;
            }
            // The row by its identity (key and tenant), unchanged since read:
            // its header and every covered ciphertext.
            let [key, tenant_value] = id.match_binds()?;
            let mut write = RowWrite::new(key, tenant_value);
            for w in writes {
                write = write
                    .set(&w.column, w.value)
                    .set(&w.version_column, Value::I64(i64::from(w.version)));
            }
            write = write.expect(&def.header_column, Some(Value::Bytes(header)));
            for (i, col) in enc.iter().enumerate() {
                if indexes.covered_encrypted[i] {
                    write = write.expect(col, sealed[i].take().map(Value::Bytes));
                }
            }
            planned.push(write);
        }
        let mut tx = ctx.pool.begin_with(D::BEGIN).await?;
        let (batch_written, changed) =
            crate::write::write_counted::<D>(&mut *tx, def, planned).await?;
        // A row changed since it was read: its writer filled the slot, or
        // the next sweep does.
        sweep.changed += changed;
        if batch_written > 0 {
            jobs::add_progress::<D>(&mut *tx, job, batch_written).await?;
        }
        tx.commit().await?;
        sweep.written += batch_written;
        progress.add(batch_written);
    }
    Ok(sweep)
}
