//! `rowseal rotate`: new tenant-key versions, then re-encryption of the rows
//! still on older versions.
//!
//! - `derived`-mode rows to do are selected with an indexed predicate,
//!   `tenant = ? AND rowseal_key_version < target`, so the job needs no
//!   cursor: a row leaves the set when it is re-encrypted, and a resumed or
//!   second process simply runs the same predicate ([`derived`]). `kms`-mode
//!   rows have no such version: the job walks each table with a cursor kept
//!   in the job ([`kms`]).
//! - A batch is one transaction: claim the rows (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL and MariaDB/MySQL, the write lock on SQLite), open each
//!   encrypted field with the old row key and seal it under a new one (one
//!   loop for both key modes, [`reseal`]), write each row with a
//!   compare-and-swap on its old header, and add the count to
//!   `rowseal_jobs` — all committed together, so after `kill -9` nothing is
//!   counted that was not written, and nothing written is redone.
//! - A row whose header changed since it was read (the application wrote it)
//!   is never overwritten: the update matches nothing, and the row is read
//!   again by a later batch if it is still on an old version.
//! - Tenants are canonical ids (the text `rowseal_keys` keys them by): each
//!   table binds a tenant as its tenant column holds it (text, UUID or
//!   integer), and has no row of a tenant its column cannot hold.

mod derived;
mod kms;
mod reseal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rowseal_core::KeyHierarchy;
use serde_json::json;

use super::{Ctx, RowOpener};
use crate::db::CliDb;
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, TableDef};
use crate::scan::RowId;

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
    failed: HashMap<(String, String), Vec<RowId>>,
    failures: Vec<serde_json::Value>,
    reencrypted: u64,
    conflicts: u64,
}

impl Shared {
    /// Counts a committed batch of `table`, and records its failed rows:
    /// each reported once, and left out of this process's later batches.
    /// An error once more than [`MAX_FAILURES`] rows failed.
    fn record(
        &mut self,
        table: &str,
        done: u64,
        conflicts: u64,
        failures: Vec<reseal::Failed>,
    ) -> Result<()> {
        self.reencrypted += done;
        self.conflicts += conflicts;
        // A row is its table, tenant and key (under a composite primary key
        // several tenants share a key).
        let row = |f: &serde_json::Value| {
            format!(
                "{}/{}/{}",
                f["table"],
                f["tenant"],
                f["primary_key"].as_str().unwrap_or("")
            )
        };
        let seen: HashSet<String> = self.failures.iter().map(row).collect();
        for f in failures {
            if !seen.contains(&row(&f.event)) {
                self.failures.push(f.event);
            }
            self.failed
                .entry((table.to_owned(), f.tenant))
                .or_default()
                .push(f.id);
        }
        if self.failures.len() > MAX_FAILURES {
            return Err(CliError::new(
                ExitCode::Failures,
                format!("more than {MAX_FAILURES} rows could not be opened; stopping (run verify)"),
            ));
        }
        Ok(())
    }
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
    if let Some(t) = &req.tenant {
        // A tenant is named by its canonical id; one no table in scope can
        // hold and without keys is a mistyped id, not a tenant to rotate.
        let in_scope: Vec<TableDef> = derived_wanted.iter().chain(&kms_wanted).cloned().collect();
        registry::check_tenant_arg::<D>(&mut conn, &in_scope, t).await?;
    }
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
            let n =
                kms::count::<D>(&mut conn, def, req.tenant.as_deref(), &destroyed, None).await?;
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
                let n = derived::count::<D>(&mut conn, def, t, next, &[]).await?;
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
            total += derived::count::<D>(&mut conn, def, t, *v, &[]).await?;
        }
    }
    let cursors = kms::cursors::<D>(&mut conn, &job.id).await?;
    for def in &kms_tables {
        let Some(after) = kms::after(&cursors, def)? else {
            continue;
        };
        total += kms::count::<D>(
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
                left += derived::count::<D>(&mut conn, def, t, *v, &failed).await?;
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

fn failed_of(shared: &Mutex<Shared>, def: &TableDef, tenant: &str) -> Vec<RowId> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .failed
        .get(&(def.table.clone(), tenant.to_owned()))
        .cloned()
        .unwrap_or_default()
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
                let n = derived::batch_once::<D>(
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
            let n = kms::batch_once::<D>(
                &pool,
                &keys,
                &mut opener,
                def,
                work.kms_tenant,
                work.shredded,
                &shared,
                &progress,
                work.job_id,
                work.batch.min(kms::KMS_BATCH),
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
