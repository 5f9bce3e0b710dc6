//! `rowseal rotate`: new tenant-key versions, then re-encryption of the rows
//! still on older versions.
//!
//! - Rows to do are selected with an indexed predicate,
//!   `tenant = ? AND rowseal_key_version < target`, so the job needs no
//!   cursor: a row leaves the set when it is re-encrypted, and a resumed or
//!   second process simply runs the same predicate.
//! - A batch is one transaction: claim the rows (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL and MariaDB/MySQL, the write lock on SQLite), open each
//!   encrypted field with the old row key and seal it under a new one, write
//!   each row with a compare-and-swap on its old header, and add the count to
//!   `rowseal_jobs` — all committed together, so after `kill -9` nothing is
//!   counted that was not written, and nothing written is redone.
//! - A row whose header changed since it was read (the application wrote it)
//!   is never overwritten: the update matches nothing, and the row is read
//!   again by a later batch if it is still on an old version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rowseal_core::KeyHierarchy;
use rowseal_sqlx::{DbRow, SqlType, Value};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Ctx, RowOpener};
use crate::db::{ident, ph, read_i64, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, read_pk, TableDef, FIRST_ENCRYPTED};

/// What the user asked for.
pub struct Request {
    pub tenant: Option<String>,
    pub all_tenants: bool,
    pub job: Option<String>,
    pub dry_run: bool,
    pub tables: Vec<String>,
}

/// Failed rows beyond which a job stops.
const MAX_FAILURES: usize = 1000;

#[derive(Default)]
struct Shared {
    /// Rows that could not be opened, per (table, tenant): skipped by later
    /// batches of this process, reported at the end.
    failed: HashMap<(String, String), Vec<Value>>,
    failures: Vec<serde_json::Value>,
    reencrypted: u64,
    conflicts: u64,
}

pub async fn run<D: CliDb>(ctx: &Ctx<D>, req: Request) -> Result<ExitCode> {
    if req.tenant.is_none() && !req.all_tenants && req.job.is_none() {
        return Err(CliError::new(
            ExitCode::Usage,
            "rotate needs --tenant T, --all-tenants or --job ID",
        ));
    }
    let mut conn = ctx.conn().await?;
    // The scope of a job: the tenant(s) and, when named, the tables (a run
    // for other tables is another job).
    let mut wanted = req.tables.clone();
    wanted.sort();
    wanted.dedup();
    let (current, destroyed) = registry::tenant_versions::<D>(&mut conn).await?;
    let mut scope = match (&req.tenant, req.all_tenants) {
        (Some(t), _) => json!({"tenant": t}),
        _ => json!({"all_tenants": true}),
    };
    if !wanted.is_empty() {
        scope["tables"] = json!(wanted);
    }
    let tenants: Vec<String> = match &req.tenant {
        Some(t) => {
            if destroyed.contains(t) {
                return Err(CliError::new(
                    ExitCode::Refused,
                    format!("tenant {t} has been shredded"),
                ));
            }
            vec![t.clone()]
        }
        None => current.keys().cloned().collect(),
    };

    let (derived_wanted, kms_wanted) = scope_tables::<D>(&mut conn, &wanted).await?;
    // No derived-mode table in scope: no tenant key to create.
    let key_tenants: Vec<String> = if derived_wanted.is_empty() {
        Vec::new()
    } else {
        tenants.clone()
    };
    if req.dry_run {
        let tables = derived_wanted;
        let mut total = 0u64;
        let mut kms_rows = 0u64;
        for def in &kms_wanted {
            let n = kms_count::<D>(&mut conn, def, req.tenant.as_deref(), &destroyed, None).await?;
            kms_rows += n;
            ctx.out.emit(
                json!({"event": "plan", "table": def.table, "key_mode": "kms",
                       "tenant": req.tenant, "rows": n}),
                || {
                    format!(
                        "would give {n} rows of {} (kms mode) a new data key each",
                        def.table
                    )
                },
            );
        }
        total += kms_rows;
        for t in &tenants {
            let next = current.get(t).map_or(1, |v| v + 1);
            for def in &tables {
                let n = count::<D>(&mut conn, def, t, next, &[]).await?;
                total += n;
                ctx.out.emit(
                    json!({"event": "plan", "table": def.table, "tenant": t, "target_version": next, "rows": n}),
                    || format!("would re-encrypt {n} rows of {} for tenant {t} under key version {next}", def.table),
                );
            }
        }
        let calls = key_tenants.len() as u64 * 2 + kms_rows * 2;
        ctx.out.emit(
            json!({"event": "dry_run", "tenants": tenants.len(), "rows": total,
                   "kms_mode_rows": kms_rows, "estimated_provider_calls": calls}),
            || format!("dry run: {} tenants, {total} rows, about {calls} key-provider calls (one new key and one unwrap per tenant and old version; a GenerateDataKey and a Decrypt per kms-mode row)", tenants.len()),
        );
        return Ok(ExitCode::Ok);
    }

    let keys = ctx.keys().await?;

    // Find, join or start the job.
    let job = match &req.job {
        Some(id) => {
            let job = jobs::get::<D>(&mut conn, id)
                .await?
                .ok_or_else(|| CliError::new(ExitCode::Refused, format!("no job {id}")))?;
            if job.kind != "rotate" {
                return Err(CliError::new(
                    ExitCode::Refused,
                    format!("job {id} is a {} job", job.kind),
                ));
            }
            job
        }
        None => find_or_start::<D>(ctx, &mut conn, &keys, &scope, &key_tenants).await?,
    };
    if job.state != "running" {
        ctx.out.emit(
            json!({"event": "done", "job": job.id, "state": job.state, "rows_done": job.rows_done}),
            || format!("job {} is {} ({} rows)", job.id, job.state, job.rows_done),
        );
        return Ok(ExitCode::Ok);
    }
    // The job's own tables (its scope), whatever this command line names.
    let job_tables: Vec<String> = job
        .params
        .get("scope")
        .and_then(|s| s.get("tables"))
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let (tables, kms_tables) = scope_tables::<D>(&mut conn, &job_tables).await?;
    // kms-mode rows of the job's tenant (or all).
    let kms_tenant: Option<String> = job
        .params
        .get("scope")
        .and_then(|s| s.get("tenant"))
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    let targets: BTreeMap<String, u32> = job
        .params
        .get("targets")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .ok_or_else(|| {
            CliError::new(ExitCode::Internal, format!("job {} has no targets", job.id))
        })?;
    let created = targets.len();
    let all_tables: Vec<String> = tables
        .iter()
        .chain(&kms_tables)
        .map(|t| t.table.clone())
        .collect();
    ctx.out.emit(
        json!({"event": "start", "job": job.id, "tenants": targets.len(), "tenant_versions": targets,
               "tables": all_tables,
               "kms_mode_tables": kms_tables.iter().map(|t| t.table.clone()).collect::<Vec<_>>()}),
        || format!("rotate job {}: {} tenants, {} tables", job.id, created, all_tables.len()),
    );

    let mut total = 0u64;
    for (t, v) in &targets {
        for def in &tables {
            total += count::<D>(&mut conn, def, t, *v, &[]).await?;
        }
    }
    let cursors = kms_cursors::<D>(&mut conn, &job.id).await?;
    for def in &kms_tables {
        let Some(after) = kms_after(&cursors, def)? else {
            continue;
        };
        total += kms_count::<D>(
            &mut conn,
            def,
            kms_tenant.as_deref(),
            &destroyed,
            after.as_ref(),
        )
        .await?;
    }
    drop(conn);

    let (progress, handle) = Progress::start(ctx.out, job.id.clone(), total);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let workers = if D::CONCURRENT_WRITERS {
        ctx.settings.workers
    } else {
        1
    };
    let tables = Arc::new(tables);
    let kms_tables = Arc::new(kms_tables);
    let kms_tenant = Arc::new(kms_tenant);
    let shredded = Arc::new(destroyed);
    let targets = Arc::new(targets);
    let mut result = Ok(());
    // Sweep until nothing is left (rows the application wrote meanwhile on
    // an old version are picked up by the next pass).
    let mut left = 0;
    for _pass in 0..5 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let pool = ctx.pool.clone();
            let keys = keys.hierarchy.clone();
            let tables = tables.clone();
            let kms_tables = kms_tables.clone();
            let kms_tenant = kms_tenant.clone();
            let shredded = shredded.clone();
            let targets = targets.clone();
            let shared = shared.clone();
            let progress = progress.clone();
            let job_id = job.id.clone();
            let batch = ctx.settings.batch_size;
            let limit = ctx.settings.max_rows_per_second;
            set.spawn(async move {
                let work = Work {
                    tables: &tables,
                    kms_tables: &kms_tables,
                    kms_tenant: kms_tenant.as_deref(),
                    shredded: &shredded,
                    targets: &targets,
                    job_id: &job_id,
                    batch,
                    limit,
                };
                worker::<D>(pool, keys, work, shared, progress).await
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(CliError::new(ExitCode::Internal, "a worker panicked")),
            }
        }
        if result.is_err() {
            break;
        }
        let mut conn = ctx.conn().await?;
        left = 0;
        for (t, v) in targets.iter() {
            for def in tables.iter() {
                let failed = failed_of(&shared, def, t);
                left += count::<D>(&mut conn, def, t, *v, &failed).await?;
            }
        }
        if left == 0 {
            break;
        }
        progress.raise_total(progress.done() + left);
    }
    progress.finish(handle).await;
    result?;

    let (reencrypted, conflicts, failures) = {
        let s = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.reencrypted, s.conflicts, s.failures.clone())
    };
    for f in &failures {
        ctx.out.emit(f.clone(), || {
            format!(
                "FAILED {} primary key {}: {}",
                f["table"].as_str().unwrap_or(""),
                f["primary_key"].as_str().unwrap_or(""),
                f["error"].as_str().unwrap_or("")
            )
        });
    }
    let mut conn = ctx.conn().await?;
    if left > 0 {
        // The application keeps writing rows on old versions (its key cache
        // still names them): leave the job running, to be resumed.
        ctx.out.emit(
            json!({"event": "incomplete", "job": job.id, "rows_left": left,
                   "reencrypted": reencrypted, "provider_calls": keys.calls()}),
            || format!(
                "rotate job {} incomplete: {left} rows still on old key versions (the application may still write them with a cached key version); run the command again",
                job.id
            ),
        );
        return Ok(ExitCode::Failures);
    }
    let state = if failures.is_empty() {
        "done"
    } else {
        "failed"
    };
    let summary = json!({"reencrypted": reencrypted, "conflicts_retried": conflicts,
                         "failed": failures.len(), "provider_calls": keys.calls()});
    jobs::finish::<D>(&mut conn, &job.id, state, &summary).await?;
    let job_rows = jobs::get::<D>(&mut conn, &job.id)
        .await?
        .map_or(0, |j| j.rows_done);
    ctx.out.emit(
        json!({"event": "done", "job": job.id, "state": state, "reencrypted": reencrypted,
               "job_rows_done": job_rows, "conflicts_retried": conflicts, "failed": failures.len(),
               "seconds": progress.elapsed(), "rows_per_second": progress.rate().round(),
               "provider_calls": keys.calls()}),
        || format!(
            "rotate {state}: {reencrypted} rows re-encrypted by this process ({job_rows} by the job), {conflicts} concurrent writes retried, {} failed, {:.0} rows/s, {} key-provider calls",
            failures.len(), progress.rate(), keys.counter.counts().total()
        ),
    );
    Ok(if failures.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failures
    })
}

/// The registered tables among `only` (all if empty): `derived`-mode ones
/// (new tenant-key versions) and `kms`-mode ones (a new data key per row).
async fn scope_tables<D: CliDb>(
    conn: &mut D::Connection,
    only: &[String],
) -> Result<(Vec<TableDef>, Vec<TableDef>)> {
    let mut derived = Vec::new();
    let mut kms = Vec::new();
    for t in registry::tables::<D>(conn, only).await? {
        if t.key_mode == rowseal_core::KeyMode::Derived {
            derived.push(t);
        } else {
            kms.push(t);
        }
    }
    Ok((derived, kms))
}

/// The running rotate job of `scope`, if any.
async fn running_job<D: CliDb>(
    conn: &mut D::Connection,
    scope: &serde_json::Value,
) -> Result<Option<jobs::Job>> {
    Ok(jobs::running::<D>(conn, "rotate")
        .await?
        .into_iter()
        .find(|j| j.params.get("scope") == Some(scope)))
}

/// Resumes the running job of `scope`, joins the one another process is
/// starting at the same moment, or starts one: new key versions and the job
/// that records them, under the scope's start lock (so that two runs started
/// together create one version per tenant and one job).
async fn find_or_start<D: CliDb>(
    ctx: &Ctx<D>,
    conn: &mut D::Connection,
    keys: &super::Keys,
    scope: &serde_json::Value,
    tenants: &[String],
) -> Result<jobs::Job> {
    let resume = |j: &jobs::Job, joined: bool| {
        ctx.out.emit(
            json!({"event": "resume", "job": j.id, "rows_done": j.rows_done, "state": j.state,
                   "joined_start": joined}),
            || {
                format!(
                    "{} rotate job {} ({} rows done)",
                    if joined { "joining" } else { "resuming" },
                    j.id,
                    j.rows_done
                )
            },
        );
    };
    if let Some(j) = running_job::<D>(conn, scope).await? {
        resume(&j, false);
        return Ok(j);
    }
    match jobs::start_lock::<D>(conn, "rotate", scope).await? {
        jobs::Start::Join(id) => {
            let j = jobs::get::<D>(conn, &id)
                .await?
                .ok_or_else(|| CliError::new(ExitCode::Internal, format!("job {id} vanished")))?;
            resume(&j, true);
            Ok(j)
        }
        jobs::Start::Lead(mut lock) => {
            match lead_start::<D>(conn, keys, scope, tenants, &mut lock).await {
                Ok((j, existing)) => {
                    lock.release::<D>(conn, Some(&j.id)).await?;
                    if existing {
                        resume(&j, true);
                    }
                    Ok(j)
                }
                Err(e) => {
                    let _ = lock.release::<D>(conn, None).await;
                    Err(e)
                }
            }
        }
    }
}

/// Under the start lock: the job recorded meanwhile (`true`), or new key
/// versions and a new job (`false`). A start taken over from a process that
/// died reuses the key versions it had recorded; a kill between creating a
/// version and recording it leaves that version unused (never a job without
/// its targets).
async fn lead_start<D: CliDb>(
    conn: &mut D::Connection,
    keys: &super::Keys,
    scope: &serde_json::Value,
    tenants: &[String],
    lock: &mut jobs::StartLock,
) -> Result<(jobs::Job, bool)> {
    if let Some(j) = running_job::<D>(conn, scope).await? {
        return Ok((j, true));
    }
    let (current, _) = registry::tenant_versions::<D>(conn).await?;
    let planned: BTreeMap<String, u32> = lock
        .taken_over
        .as_ref()
        .and_then(|p| p.get("targets"))
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let mut targets = BTreeMap::new();
    for t in tenants {
        let v = match planned.get(t) {
            Some(&v) if current.get(t).is_some_and(|&c| c >= v) => v,
            _ => keys.hierarchy.rotate_tenant_key(t).await?,
        };
        targets.insert(t.clone(), v);
        lock.beat::<D>(conn, scope, &json!({ "targets": targets }))
            .await?;
    }
    // Still the holder? (A run on another host takes a start over after a
    // minute of silence; then it records the job, not this one.)
    lock.beat::<D>(conn, scope, &json!({ "targets": targets }))
        .await?;
    let params = json!({"scope": scope, "targets": targets});
    let id = jobs::create::<D>(conn, "rotate", &params).await?;
    let j = jobs::get::<D>(conn, &id)
        .await?
        .ok_or_else(|| CliError::new(ExitCode::Internal, "job vanished"))?;
    Ok((j, false))
}

fn failed_of(shared: &Mutex<Shared>, def: &TableDef, tenant: &str) -> Vec<Value> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .failed
        .get(&(def.table.clone(), tenant.to_owned()))
        .cloned()
        .unwrap_or_default()
}

/// `WHERE tenant = $1 AND version < $2 [AND pk NOT IN (...)]`.
fn predicate<D: CliDb>(
    def: &TableDef,
    tenant: &str,
    target: u32,
    failed: &[Value],
) -> (String, Vec<Value>) {
    let mut sql = format!(
        " WHERE {} = {} AND {} < {}",
        ident::<D>(&def.tenant),
        ph::<D>(1),
        ident::<D>(&def.key_version_column),
        ph::<D>(2)
    );
    let mut values = vec![
        Value::Text(tenant.to_owned()),
        Value::I64(i64::from(target)),
    ];
    if !failed.is_empty() {
        sql.push_str(&format!(" AND {} NOT IN (", ident::<D>(&def.primary_key)));
        for (i, v) in failed.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&ph::<D>(3 + i));
            values.push(v.clone());
        }
        sql.push(')');
    }
    (sql, values)
}

async fn count<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    tenant: &str,
    target: u32,
    failed: &[Value],
) -> Result<u64> {
    let (pred, values) = predicate::<D>(def, tenant, target, failed);
    let sql = format!("SELECT COUNT(*) FROM {}{pred}", ident::<D>(&def.table));
    let rows = D::fetch_all_on(conn, &sql, values).await?;
    let n = rows
        .first()
        .map(|r| read_i64(r, 0))
        .transpose()?
        .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What a worker does.
struct Work<'a> {
    tables: &'a [TableDef],
    kms_tables: &'a [TableDef],
    kms_tenant: Option<&'a str>,
    shredded: &'a [String],
    targets: &'a BTreeMap<String, u32>,
    job_id: &'a str,
    batch: usize,
    limit: Option<f64>,
}

async fn pace(progress: &Progress, limit: Option<f64>) {
    if let Some(rate) = limit {
        // Process-wide: wait until the rows written so far fit the rate.
        while progress.done() as f64 > rate * progress.elapsed() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

async fn worker<D: CliDb>(
    pool: sqlx::Pool<D>,
    keys: Arc<KeyHierarchy>,
    work: Work<'_>,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Progress>,
) -> Result<()> {
    let mut opener = RowOpener::new(keys.clone());
    for def in work.tables {
        for (tenant, target) in work.targets {
            loop {
                pace(&progress, work.limit).await;
                let started = std::time::Instant::now();
                let n = batch_once::<D>(
                    &pool,
                    &mut opener,
                    def,
                    tenant,
                    *target,
                    &shared,
                    &progress,
                    work.job_id,
                    work.batch,
                )
                .await?;
                if n == 0 {
                    break;
                }
                if !D::CONCURRENT_WRITERS {
                    // SQLite has one writer: leave the write lock free as
                    // long as the batch held it, so the application's writes
                    // are not starved.
                    tokio::time::sleep(started.elapsed()).await;
                }
            }
        }
    }
    for def in work.kms_tables {
        loop {
            pace(&progress, work.limit).await;
            let started = std::time::Instant::now();
            let n = kms_batch::<D>(
                &pool,
                &keys,
                &mut opener,
                def,
                work.kms_tenant,
                work.shredded,
                &shared,
                &progress,
                work.job_id,
                work.batch.min(KMS_BATCH),
            )
            .await?;
            if n == 0 {
                break;
            }
            if !D::CONCURRENT_WRITERS {
                tokio::time::sleep(started.elapsed()).await;
            }
        }
    }
    Ok(())
}

/// One batch; returns the rows claimed (0: nothing left for this worker).
#[allow(clippy::too_many_arguments)]
async fn batch_once<D: CliDb>(
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
    let (pred, values) = predicate::<D>(def, tenant, target, &failed);
    let select = format!(
        "SELECT {} FROM {}{pred} LIMIT {batch}{}",
        registry::select_list::<D>(def),
        ident::<D>(&def.table),
        D::CLAIM
    );
    let update = per_row_update::<D>(def, &enc_cols);

    let new_keys = opener.record_keys(def, tenant, target).await?;
    let mut tx = pool.begin_with(D::BEGIN).await?;
    let rows = D::fetch_all_on(&mut *tx, &select, values).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let mut done = 0u64;
    let mut conflicts = 0u64;
    let mut failures = Vec::new();
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let pk = read_pk(row, pk_type)?;
        let header = row.read_bytes(2)?.to_vec();
        let fail = |column: &str, e: &rowseal_core::Error| {
            json!({"event": "failure", "table": def.table, "tenant": tenant,
                   "primary_key": pk.key_display(), "column": column, "error": super::describe(e)})
        };
        let pkb = match def.primary_key_bytes(&pk) {
            Ok(b) => b,
            Err(e) => {
                failures.push((pk.clone(), fail(&def.header_column, &e)));
                continue;
            }
        };
        let old = match opener.open(def, tenant, pkb.as_deref(), &header).await {
            Ok(k) => k,
            Err(e) => {
                failures.push((pk.clone(), fail(&def.header_column, &e)));
                continue;
            }
        };
        let new = new_keys.new_row(pkb.as_deref())?;
        let mut values = Vec::with_capacity(enc_cols.len() + 5);
        let mut bad = None;
        for (i, col) in enc_cols.iter().enumerate() {
            match row.read_value(FIRST_ENCRYPTED + i, SqlType::Bytes)? {
                Value::Bytes(env) => match old.open(col, &env) {
                    Ok(pt) => {
                        let pt = Zeroizing::new(pt);
                        values.push(Value::Bytes(new.seal(col, &pt)?));
                    }
                    Err(e) => {
                        bad = Some(fail(col, &e));
                        break;
                    }
                },
                _ => values.push(Value::Null(SqlType::Bytes)),
            }
        }
        if let Some(f) = bad {
            failures.push((pk.clone(), f));
            continue;
        }
        pending.push(Pending {
            pk: pk.clone(),
            sealed: values,
            header: new.header_bytes(),
            old_header: header,
        });
    }
    // The application may have changed a row since it was read: the
    // compare-and-swap on the old header leaves it alone; a later batch
    // reads it again if it is still on an old version.
    let written =
        write_rows::<D>(&mut tx, def, &enc_cols, &update, tenant, target, pending).await?;
    done += written.0;
    conflicts += written.1;
    if done > 0 {
        jobs::add_progress::<D>(&mut *tx, job_id, done).await?;
    }
    tx.commit().await?;
    progress.add(done);
    let mut s = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.reencrypted += done;
    s.conflicts += conflicts;
    let seen: HashSet<String> = s
        .failures
        .iter()
        .filter_map(|f| {
            f["primary_key"]
                .as_str()
                .map(|p| format!("{}/{p}", f["table"]))
        })
        .collect();
    for (pk, f) in failures {
        let key = format!("{}/{}", f["table"], pk.key_display());
        if !seen.contains(&key) {
            s.failures.push(f);
        }
        s.failed
            .entry((def.table.clone(), tenant.to_owned()))
            .or_default()
            .push(pk);
    }
    if s.failures.len() > MAX_FAILURES {
        return Err(CliError::new(
            ExitCode::Failures,
            format!("more than {MAX_FAILURES} rows could not be opened; stopping (run verify)"),
        ));
    }
    Ok(rows.len())
}

/// `UPDATE t SET enc..., header = ?, version = ? WHERE pk = ? AND tenant = ?
/// AND header = ?` (a compare-and-swap on the old header).
fn per_row_update<D: CliDb>(def: &TableDef, enc_cols: &[&str]) -> String {
    let mut update = format!("UPDATE {} SET ", ident::<D>(&def.table));
    let mut n = 0;
    for c in enc_cols
        .iter()
        .copied()
        .chain([def.header_column.as_str(), def.key_version_column.as_str()])
    {
        if n > 0 {
            update.push_str(", ");
        }
        n += 1;
        update.push_str(&format!("{} = {}", ident::<D>(c), ph::<D>(n)));
    }
    update.push_str(&format!(
        " WHERE {} = {} AND {} = {} AND {} = {}",
        ident::<D>(&def.primary_key),
        ph::<D>(n + 1),
        ident::<D>(&def.tenant),
        ph::<D>(n + 2),
        ident::<D>(&def.header_column),
        ph::<D>(n + 3)
    ));
    update
}

/// A re-encrypted row waiting to be written.
struct Pending {
    pk: Value,
    sealed: Vec<Value>,
    header: Vec<u8>,
    old_header: Vec<u8>,
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
    tenant: &str,
    target: u32,
    pending: Vec<Pending>,
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
                let mut values = vec![
                    Value::I64(i64::from(target)),
                    Value::Text(tenant.to_owned()),
                ];
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
                    ph::<D>(2),
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
                sql.push_str(&format!(
                    ") AS v ON x.{} = v.k AND x.{} = v.oh SET {} WHERE x.{} = ?",
                    ident::<D>(&def.primary_key),
                    ident::<D>(&def.header_column),
                    sets.join(", "),
                    ident::<D>(&def.tenant),
                ));
                values.push(Value::I64(i64::from(target)));
                values.push(Value::Text(tenant.to_owned()));
                written += D::execute_on(&mut **tx, &sql, values).await?;
            }
        }
        _ => {
            for p in pending {
                let mut values = p.sealed;
                values.push(Value::Bytes(p.header));
                values.push(Value::I64(i64::from(target)));
                values.push(p.pk);
                values.push(Value::Text(tenant.to_owned()));
                values.push(Value::Bytes(p.old_header));
                written += D::execute_on(&mut **tx, per_row, values).await?;
            }
        }
    }
    let written = written.min(attempted);
    Ok((written, attempted - written))
}

// ---------------------------------------------------------------------------
// kms-mode tables: a new provider data key per row.
//
// kms-mode rows have no tenant-key version to select "rows still to do" by,
// so the job walks each table in primary-key order with a cursor kept in the
// job's `checkpoint` (`{"kms": {"<table>": {"after": <pk>, "done": bool}}}`).
// A batch is one transaction that locks the job row (`FOR UPDATE`; SQLite's
// write lock), reads the cursor, locks the next rows (`FOR UPDATE`, waiting
// for the application's locks rather than skipping them, since the cursor
// moves past every row it reads), opens each row with its old data key, seals
// its fields under a new data key (one GenerateDataKey, rate-limited by
// --kms-rate), writes it with a compare-and-swap on the old header, and moves
// the cursor and the job's count — committed together. Batches of one job are
// therefore serial (across workers and processes); kms-mode rotation is
// bounded by the provider's rate anyway.
// ---------------------------------------------------------------------------

/// Most rows per kms-mode batch: the batch holds its row locks while it
/// calls the provider once per row.
const KMS_BATCH: usize = 100;

/// A primary key as JSON, for the cursor.
fn pk_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::I16(i) => json!(i),
        Value::I32(i) => json!(i),
        Value::I64(i) => json!(i),
        Value::Text(s) => json!(s),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Bytes(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        _ => serde_json::Value::Null,
    }
}

/// A cursor's primary key back as a value of type `t`.
fn pk_from_json(j: &serde_json::Value, t: SqlType) -> Option<Value> {
    Some(match t {
        SqlType::I16 => Value::I16(i16::try_from(j.as_i64()?).ok()?),
        SqlType::I32 => Value::I32(i32::try_from(j.as_i64()?).ok()?),
        SqlType::I64 => Value::I64(j.as_i64()?),
        SqlType::Text => Value::Text(j.as_str()?.to_owned()),
        SqlType::Uuid => Value::Uuid(j.as_str()?.parse().ok()?),
        SqlType::Bytes => {
            let s = j.as_str()?;
            if s.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect();
            Value::Bytes(bytes?)
        }
        _ => return None,
    })
}

/// The job's checkpoint (the kms-mode cursors).
async fn kms_cursors<D: CliDb>(
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

/// Where a table's walk stands: `None` when done, else the last primary key
/// done (`Some(None)`: not started).
fn kms_after(cursors: &serde_json::Value, def: &TableDef) -> Result<Option<Option<Value>>> {
    let entry = &cursors["kms"][&def.table];
    if entry["done"] == json!(true) {
        return Ok(None);
    }
    if entry["after"].is_null() {
        return Ok(Some(None));
    }
    pk_from_json(&entry["after"], def.primary_key_type)
        .map(|v| Some(Some(v)))
        .ok_or_else(|| {
            CliError::new(
                ExitCode::Internal,
                format!("the job's cursor for {} is not understood", def.table),
            )
        })
}

/// ` WHERE header IS NOT NULL [AND tenant = ? | tenant NOT IN (shredded...)]
/// [AND pk > ?]` and its values (the rows of shredded tenants have no key
/// left to rotate).
fn kms_predicate<D: CliDb>(
    def: &TableDef,
    tenant: Option<&str>,
    shredded: &[String],
    after: Option<&Value>,
) -> (String, Vec<Value>) {
    // Legacy plaintext rows (`encrypt-column` not run yet) have no header
    // and no data key to rotate.
    let mut conds = vec![format!("{} IS NOT NULL", ident::<D>(&def.header_column))];
    let mut values = Vec::new();
    if let Some(t) = tenant {
        values.push(Value::Text(t.to_owned()));
        conds.push(format!(
            "{} = {}",
            ident::<D>(&def.tenant),
            ph::<D>(values.len())
        ));
    } else if !shredded.is_empty() {
        let mut list = Vec::new();
        for t in shredded {
            values.push(Value::Text(t.clone()));
            list.push(ph::<D>(values.len()));
        }
        conds.push(format!(
            "{} NOT IN ({})",
            ident::<D>(&def.tenant),
            list.join(", ")
        ));
    }
    if let Some(a) = after {
        values.push(a.clone());
        conds.push(format!(
            "{} > {}",
            ident::<D>(&def.primary_key),
            ph::<D>(values.len())
        ));
    }
    (format!(" WHERE {}", conds.join(" AND ")), values)
}

async fn kms_count<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    tenant: Option<&str>,
    shredded: &[String],
    after: Option<&Value>,
) -> Result<u64> {
    let (pred, values) = kms_predicate::<D>(def, tenant, shredded, after);
    let sql = format!("SELECT COUNT(*) FROM {}{pred}", ident::<D>(&def.table));
    let rows = D::fetch_all_on(conn, &sql, values).await?;
    let n = rows
        .first()
        .map(|r| read_i64(r, 0))
        .transpose()?
        .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// One kms-mode batch; returns the rows read (0: the table is done).
#[allow(clippy::too_many_arguments)]
async fn kms_batch<D: CliDb>(
    pool: &sqlx::Pool<D>,
    keys: &Arc<KeyHierarchy>,
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
    let spec = def.spec();
    let enc_cols = def.encrypted_columns();
    let update = per_row_update::<D>(def, &enc_cols);
    let lock = if D::CONCURRENT_WRITERS {
        " FOR UPDATE"
    } else {
        ""
    };
    let mut tx = pool.begin_with(D::BEGIN).await?;
    // The job row: serializes the batches of this job, holds the cursor.
    let sql = format!(
        "SELECT checkpoint FROM rowseal_jobs WHERE id = {}{lock}",
        ph::<D>(1)
    );
    let rows = D::fetch_all_on(&mut *tx, &sql, vec![Value::Text(job_id.to_owned())]).await?;
    let text = rows
        .first()
        .map(|r| crate::db::read_text(r, 0))
        .transpose()?
        .unwrap_or_default();
    let mut cursors: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({}));
    if !cursors.is_object() {
        cursors = json!({});
    }
    let Some(after) = kms_after(&cursors, def)? else {
        tx.commit().await?;
        return Ok(0);
    };
    let (pred, values) = kms_predicate::<D>(def, tenant, shredded, after.as_ref());
    let select = format!(
        "SELECT {} FROM {}{pred} ORDER BY {} LIMIT {batch}{lock}",
        registry::select_list::<D>(def),
        ident::<D>(&def.table),
        ident::<D>(&def.primary_key),
    );
    let rows = D::fetch_all_on(&mut *tx, &select, values).await?;
    let save = |cursors: &mut serde_json::Value, after: serde_json::Value, done: bool| {
        if !cursors["kms"].is_object() {
            cursors["kms"] = json!({});
        }
        cursors["kms"][&def.table] = json!({"after": after, "done": done});
    };
    let checkpoint_sql = format!(
        "UPDATE rowseal_jobs SET checkpoint = {}, rows_done = rows_done + {}, heartbeat_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP, worker = {} WHERE id = {}",
        ph::<D>(1),
        ph::<D>(2),
        ph::<D>(3),
        ph::<D>(4)
    );
    if rows.is_empty() {
        save(
            &mut cursors,
            after.as_ref().map_or(serde_json::Value::Null, pk_to_json),
            true,
        );
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
    let mut done = 0u64;
    let mut conflicts = 0u64;
    let mut failures = Vec::new();
    let mut last = None;
    for row in &rows {
        let pk = read_pk(row, pk_type)?;
        last = Some(pk_to_json(&pk));
        let row_tenant = crate::db::read_text(row, 1)?;
        let header = row.read_bytes(2)?.to_vec();
        let fail = |column: &str, e: &rowseal_core::Error| {
            json!({"event": "failure", "table": def.table, "tenant": row_tenant,
                   "primary_key": pk.key_display(), "column": column, "error": super::describe(e)})
        };
        let pkb = match def.primary_key_bytes(&pk) {
            Ok(b) => b,
            Err(e) => {
                failures.push(fail(&def.header_column, &e));
                continue;
            }
        };
        let old = match opener.open(def, &row_tenant, pkb.as_deref(), &header).await {
            Ok(k) => k,
            Err(e) => {
                failures.push(fail(&def.header_column, &e));
                continue;
            }
        };
        // A provider failure here ends the job's run (the transaction rolls
        // back: nothing is lost, the next run starts from the cursor).
        let new = keys.new_row_key(&spec, &row_tenant, pkb.as_deref()).await?;
        let mut values = Vec::with_capacity(enc_cols.len() + 5);
        let mut bad = None;
        for (i, col) in enc_cols.iter().enumerate() {
            match row.read_value(FIRST_ENCRYPTED + i, SqlType::Bytes)? {
                Value::Bytes(env) => match old.open(col, &env) {
                    Ok(pt) => {
                        let pt = Zeroizing::new(pt);
                        values.push(Value::Bytes(new.seal(col, &pt)?));
                    }
                    Err(e) => {
                        bad = Some(fail(col, &e));
                        break;
                    }
                },
                _ => values.push(Value::Null(SqlType::Bytes)),
            }
        }
        if let Some(f) = bad {
            failures.push(f);
            continue;
        }
        values.push(Value::Bytes(new.header_bytes()));
        values.push(Value::I64(0));
        values.push(pk.clone());
        values.push(Value::Text(row_tenant.clone()));
        values.push(Value::Bytes(header));
        match D::execute_on(&mut *tx, &update, values).await? {
            0 => conflicts += 1,
            _ => done += 1,
        }
    }
    save(&mut cursors, last.unwrap_or(serde_json::Value::Null), false);
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
    let mut s = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.reencrypted += done;
    s.conflicts += conflicts;
    s.failures.extend(failures);
    if s.failures.len() > MAX_FAILURES {
        return Err(CliError::new(
            ExitCode::Failures,
            format!("more than {MAX_FAILURES} rows could not be opened; stopping (run verify)"),
        ));
    }
    Ok(rows.len())
}
