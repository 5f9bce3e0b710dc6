//! `rowseal encrypt-column --table T [--column C]`: move the values still in
//! a legacy plaintext column into its encrypted form.
//!
//! The fields come from the schema registry: each encrypted field declared
//! with `plaintext_column = "..."` names its legacy column and that column's
//! type. For each row whose legacy column is not NULL, one transaction per
//! batch:
//! - claim the rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL and
//!   MariaDB/MySQL; the write lock on SQLite, one writer);
//! - take the row's key: opened from its header, or — for a legacy row
//!   without one — a new row key for its tenant (a new header and key
//!   version are written with the row);
//! - encode the value as the field's type would be (`rowseal_sqlx::encoding`)
//!   and seal it into the ciphertext column, fill the blind indexes covering
//!   the field, and set the legacy column to NULL. If the ciphertext column
//!   already holds a value (the application wrote the field since), that
//!   value is what the library reads, so it is kept and only the legacy
//!   column is cleared;
//! - write with a compare-and-swap on the legacy value and the header, so a
//!   concurrent application write is never overwritten (the row is read
//!   again by a later batch);
//! - add the count to `rowseal_jobs` in the same transaction, so after
//!   `kill -9` nothing is counted that was not written and nothing written
//!   is redone: a resumed run (the same command again) only sees the rows
//!   still in plaintext.
//!
//! Supported value types: text, bytes, booleans, signed integers up to 64
//! bits, floats and UUIDs. Blind indexes are filled under the current
//! index-key version of their scope (in that version's slot); an index whose
//! normalization is the application's own function cannot be computed here,
//! and the command refuses such a table (exit 6).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rowseal_core::{
    BlindIndexKey, IndexBits, KeyHierarchy, KeyMode, KeyScope, Normalization, RowKey,
};
use rowseal_sqlx::schema::{IndexScope, IndexSlot};
use rowseal_sqlx::{DbRow, SqlType, Value, ValueType};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Ctx, RowOpener};
use crate::db::{ident, read_i64, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry::{self, read_pk, TableDef};
use crate::scan::{BatchScanner, RowId};
use crate::write::RowWrite;

/// Failed rows beyond which the job stops.
const MAX_FAILURES: usize = 1000;
/// Passes over the table (rows written back in plaintext meanwhile by an old
/// application version are picked up by the next pass).
const PASSES: usize = 5;

/// What the user asked for.
pub struct Request {
    pub table: String,
    pub column: Option<String>,
    pub dry_run: bool,
}

/// One field to migrate.
#[derive(Debug, Clone)]
struct Target {
    /// Its position among the table's encrypted columns.
    at: usize,
    /// The ciphertext column.
    ct: String,
    /// The legacy plaintext column.
    legacy: String,
    /// Its SQL type.
    ty: SqlType,
    /// The field's value type.
    encoding: ValueType,
}

/// One blind index covering a target, ready to compute.
struct IndexPlan {
    name: String,
    global: bool,
    bits: IndexBits,
    norms: Vec<Normalization>,
    /// Covered columns, in order.
    columns: Vec<String>,
    /// (slot, value column, version column) of both slots.
    slots: Vec<(IndexSlot, String, String)>,
}

#[derive(Default)]
struct Shared {
    /// Rows that failed, by identity (key and tenant): skipped by this run.
    failed: Vec<RowId>,
    /// [`RowId::display`] of each failed row (each reported once).
    failed_keys: HashSet<String>,
    failures: Vec<serde_json::Value>,
    encrypted_values: u64,
    rows: u64,
    conflicts: u64,
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub async fn run<D: CliDb>(ctx: &Ctx<D>, req: Request) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let def = registry::tables::<D>(&mut conn, std::slice::from_ref(&req.table))
        .await?
        .pop()
        .ok_or_else(|| CliError::config(format!("table {} is not registered", req.table)))?;
    let mut targets = Vec::new();
    for (at, f) in def.fields.iter().filter(|f| f.is_encrypted()).enumerate() {
        let (Some(encoding), Some(legacy)) = (f.encoding, &f.plaintext_column) else {
            continue;
        };
        if let Some(c) = &req.column {
            if c != legacy && c != &f.column {
                continue;
            }
        }
        let ty = f.plaintext_type.ok_or_else(|| {
            CliError::config(format!(
                "{}.{legacy}: the registry gives no supported type for the plaintext column",
                def.table
            ))
        })?;
        targets.push(Target {
            at,
            ct: f.column.clone(),
            legacy: legacy.clone(),
            ty,
            encoding,
        });
    }
    if targets.is_empty() {
        return Err(CliError::config(match &req.column {
            Some(c) => format!(
                "{c} is not a legacy plaintext column of {} (declare the field with #[rowseal(encrypt, plaintext_column = \"...\")] and register the model)",
                def.table
            ),
            None => format!(
                "{} has no field with a legacy plaintext column (#[rowseal(encrypt, plaintext_column = \"...\")])",
                def.table
            ),
        }));
    }
    let plans = index_plans(&def, &targets)?;

    // Rows still in plaintext, per legacy column.
    let mut per_column = BTreeMap::new();
    for t in &targets {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {} IS NOT NULL",
            ident::<D>(&def.table),
            ident::<D>(&t.legacy)
        );
        let n = D::fetch_all_on(&mut conn, &sql, vec![])
            .await?
            .first()
            .map(|r| read_i64(r, 0))
            .transpose()?
            .unwrap_or(0);
        per_column.insert(t.legacy.clone(), n);
    }
    let total = plaintext_rows::<D>(&def, &targets, String::new(), Vec::new(), 0)
        .remaining(&mut conn)
        .await?;
    if req.dry_run {
        ctx.out.emit(
            json!({"event": "plan", "command": "encrypt-column", "table": def.table,
                   "rows": total, "plaintext_values": per_column,
                   "blind_indexes": plans.iter().map(|p| p.name.clone()).collect::<Vec<_>>()}),
            || {
                format!(
                    "would encrypt {total} rows of {} ({})",
                    def.table,
                    per_column
                        .iter()
                        .map(|(c, n)| format!("{c}: {n} values"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
        return Ok(ExitCode::Ok);
    }

    let keys = ctx.keys().await?;
    // Tenant and index keys first, outside any batch transaction: a legacy
    // tenant may have none yet, and creating one writes to rowseal_keys
    // (through another connection: on SQLite, a batch holding the write lock
    // would wait for itself).
    {
        let sql = format!(
            "SELECT DISTINCT {} FROM {} WHERE {}",
            ident::<D>(&def.tenant),
            ident::<D>(&def.table),
            plaintext_filter::<D>(&targets)
        );
        let spec = def.spec();
        let mut global_done = false;
        // A tenant whose keys cannot be made (a shredded tenant) fails its
        // rows one by one, reported by primary key; a provider or store
        // failure stops the job.
        let fatal = |r: rowseal_core::Result<()>| -> Result<()> {
            match r {
                Err(e @ (rowseal_core::Error::Provider(_) | rowseal_core::Error::Store { .. })) => {
                    Err(e.into())
                }
                _ => Ok(()),
            }
        };
        for r in &D::fetch_all_on(&mut conn, &sql, vec![]).await? {
            let tenant = registry::read_tenant(&def, r, 0)?;
            if spec.key_mode() == KeyMode::Derived {
                fatal(keys.hierarchy.current_tenant_key(&tenant).await.map(|_| ()))?;
            }
            for p in &plans {
                if p.global {
                    if !global_done {
                        fatal(
                            keys.hierarchy
                                .current_index_key(&KeyScope::Global)
                                .await
                                .map(|_| ()),
                        )?;
                        global_done = true;
                    }
                } else {
                    let scope = KeyScope::Tenant(tenant.clone());
                    fatal(keys.hierarchy.current_index_key(&scope).await.map(|_| ()))?;
                }
            }
        }
    }
    let columns: Vec<String> = targets.iter().map(|t| t.legacy.clone()).collect();
    let params = json!({"table": def.table, "columns": columns});
    let existing = jobs::running::<D>(&mut conn, "encrypt-column")
        .await?
        .into_iter()
        .find(|j| j.params == params);
    let job = match existing {
        Some(j) => {
            ctx.out.emit(
                json!({"event": "resume", "job": j.id, "rows_done": j.rows_done}),
                || {
                    format!(
                        "resuming encrypt-column job {} ({} rows done)",
                        j.id, j.rows_done
                    )
                },
            );
            j.id
        }
        None => jobs::create::<D>(&mut conn, "encrypt-column", &params).await?,
    };
    ctx.out.emit(
        json!({"event": "start", "job": job, "table": def.table, "columns": columns, "rows": total}),
        || {
            format!(
                "encrypt-column job {job}: {total} rows of {} to encrypt",
                def.table
            )
        },
    );
    drop(conn);

    let (progress, handle) = Progress::start(ctx.out, job.clone(), total);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let workers = if D::CONCURRENT_WRITERS {
        ctx.settings.workers.max(1)
    } else {
        1
    };
    let def = Arc::new(def);
    let targets = Arc::new(targets);
    let plans = Arc::new(plans);
    let mut result = Ok(());
    let mut left = 0;
    for pass in 0..PASSES {
        if pass > 0 {
            // Rows left may be held by another process's batch in flight:
            // give it time to commit before looking again.
            tokio::time::sleep(std::time::Duration::from_millis(100 << pass)).await;
        }
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let w = Worker {
                pool: ctx.pool.clone(),
                keys: keys.hierarchy.clone(),
                def: def.clone(),
                targets: targets.clone(),
                plans: plans.clone(),
                shared: shared.clone(),
                progress: progress.clone(),
                job: job.clone(),
                batch: ctx.settings.batch_size.max(1),
                limit: ctx.settings.max_rows_per_second,
            };
            set.spawn(async move { w.run().await });
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
        let failed = lock(&shared).failed.clone();
        let mut conn = ctx.conn().await?;
        left = plaintext_rows::<D>(&def, &targets, String::new(), failed, 0)
            .remaining(&mut conn)
            .await?;
        if left == 0 {
            break;
        }
        progress.raise_total(progress.done() + left);
    }
    progress.finish(handle).await;
    result?;

    let (rows, values, conflicts, failures) = {
        let s = lock(&shared);
        (s.rows, s.encrypted_values, s.conflicts, s.failures.clone())
    };
    for f in &failures {
        ctx.out.emit(f.clone(), || {
            format!(
                "FAILED {} primary key {} ({}): {}",
                f["table"].as_str().unwrap_or(""),
                f["primary_key"].as_str().unwrap_or(""),
                f["column"].as_str().unwrap_or(""),
                f["error"].as_str().unwrap_or("")
            )
        });
    }
    let mut conn = ctx.conn().await?;
    if left > 0 {
        // Left running, to be resumed by the same command.
        ctx.out.emit(
            json!({"event": "incomplete", "job": job, "rows_left": left, "rows": rows,
                   "failed": failures.len(), "provider_calls": keys.calls()}),
            || format!(
                "encrypt-column job {job} incomplete: {left} rows still in plaintext (the application keeps writing them); run the command again"
            ),
        );
        return Ok(ExitCode::Failures);
    }
    let state = if failures.is_empty() {
        "done"
    } else {
        "failed"
    };
    let summary = json!({"rows": rows, "values": values, "conflicts_retried": conflicts,
                         "failed": failures.len(), "provider_calls": keys.calls()});
    jobs::finish::<D>(&mut conn, &job, state, &summary).await?;
    let job_rows = jobs::get::<D>(&mut conn, &job)
        .await?
        .map_or(0, |j| j.rows_done);
    ctx.out.emit(
        json!({"event": "done", "command": "encrypt-column", "job": job, "state": state,
               "table": def.table, "rows": rows, "values": values, "job_rows_done": job_rows,
               "conflicts_retried": conflicts, "failed": failures.len(),
               "seconds": progress.elapsed(), "rows_per_second": progress.rate().round(),
               "provider_calls": keys.calls()}),
        || format!(
            "encrypt-column {state}: {rows} rows ({values} values) encrypted by this process ({job_rows} by the job), {conflicts} concurrent writes retried, {} failed, {:.0} rows/s",
            failures.len(), progress.rate()
        ),
    );
    Ok(if failures.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failures
    })
}

/// The blind indexes covering a target; refuses those it cannot compute.
fn index_plans(def: &TableDef, targets: &[Target]) -> Result<Vec<IndexPlan>> {
    let mut out = Vec::new();
    for idx in &def.blind_indexes {
        if !idx
            .columns
            .iter()
            .any(|c| targets.iter().any(|t| &t.ct == c))
        {
            continue;
        }
        let refuse = |why: &str| {
            CliError::new(
                ExitCode::Refused,
                format!(
                    "{}: blind index {} {why}; encrypt these rows through the application instead (update them)",
                    def.table, idx.name
                ),
            )
        };
        if idx.custom_normalizer {
            return Err(refuse(
                "uses the application's own normalization function, which this tool cannot run",
            ));
        }
        let bits = IndexBits::new(idx.bits).map_err(|_| refuse("has an invalid number of bits"))?;
        let norms = idx
            .part_steps()
            .iter()
            .map(|s| Normalization::parse(s))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| refuse("names a normalization step this rowseal does not know"))?;
        out.push(IndexPlan {
            name: idx.name.clone(),
            global: idx.scope == IndexScope::Global,
            bits,
            norms,
            columns: idx.columns.clone(),
            slots: idx
                .slots()
                .into_iter()
                .map(|(s, v, k)| (s, v.to_owned(), k.to_owned()))
                .collect(),
        });
    }
    Ok(out)
}

/// `legacy IS NOT NULL OR ...`: the rows with a value still in plaintext.
fn plaintext_filter<D: CliDb>(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| format!("{} IS NOT NULL", ident::<D>(&t.legacy)))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The rows with a value still in plaintext but those in `failed`, in
/// primary-key order, selecting `select` (SQL: the key, then the tenant).
fn plaintext_rows<'a, D: CliDb>(
    def: &'a TableDef,
    targets: &[Target],
    select: String,
    failed: Vec<RowId>,
    batch: usize,
) -> BatchScanner<'a, D> {
    let mut scan =
        BatchScanner::new(def, select, batch).filter(plaintext_filter::<D>(targets), vec![]);
    scan.skip(failed);
    scan
}

struct Worker<D: CliDb> {
    pool: sqlx::Pool<D>,
    keys: Arc<KeyHierarchy>,
    def: Arc<TableDef>,
    targets: Arc<Vec<Target>>,
    plans: Arc<Vec<IndexPlan>>,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Progress>,
    job: String,
    batch: usize,
    limit: Option<f64>,
}

/// The columns a batch selects, and where each is in the row.
/// Where the encrypted columns start in a [`Layout`]'s select list.
const FIRST_ENCRYPTED_AT: usize = 3;

struct Layout {
    select: Vec<String>,
    /// Per target: the position of its legacy column (its ciphertext is at
    /// `FIRST_ENCRYPTED_AT + Target::at`).
    legacy: Vec<usize>,
    /// Other columns an index needs: column → position.
    extra: HashMap<String, usize>,
}

impl<D: CliDb> Worker<D> {
    fn layout(&self) -> Layout {
        let def = &self.def;
        let mut select = vec![
            def.primary_key.clone(),
            def.tenant.clone(),
            def.header_column.clone(),
        ];
        // Every encrypted column (from FIRST_ENCRYPTED_AT): a format 2 row
        // opens with the set of its present fields, and is re-sealed whole.
        let enc = def.encrypted_columns();
        select.extend(enc.iter().map(|c| (*c).to_owned()));
        let mut legacy = Vec::new();
        for t in self.targets.iter() {
            legacy.push(select.len());
            select.push(t.legacy.clone());
        }
        let mut extra = HashMap::new();
        for p in self.plans.iter() {
            for c in &p.columns {
                if enc.contains(&c.as_str()) || extra.contains_key(c) {
                    continue;
                }
                extra.insert(c.clone(), select.len());
                select.push(c.clone());
            }
        }
        Layout {
            select,
            legacy,
            extra,
        }
    }

    async fn run(self) -> Result<()> {
        let layout = self.layout();
        let mut opener = RowOpener::new(self.keys.clone());
        // This worker's own cursor: workers skip each other's claimed rows.
        let cols: Vec<String> = layout.select.iter().map(|c| ident::<D>(c)).collect();
        let mut scan = plaintext_rows::<D>(
            &self.def,
            &self.targets,
            cols.join(", "),
            Vec::new(),
            self.batch,
        )
        .claim(D::CLAIM);
        loop {
            if let Some(rate) = self.limit {
                while self.progress.done() as f64 > rate * self.progress.elapsed() {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            let started = std::time::Instant::now();
            if !self.batch_once(&layout, &mut opener, &mut scan).await? {
                return Ok(());
            }
            if !D::CONCURRENT_WRITERS {
                // SQLite has one writer: leave the lock free as long as the
                // batch held it, so that the application is not starved.
                tokio::time::sleep(started.elapsed()).await;
            }
        }
    }

    /// The next batch of `scan`; returns `false` when this pass is over.
    async fn batch_once(
        &self,
        layout: &Layout,
        opener: &mut RowOpener,
        scan: &mut BatchScanner<'_, D>,
    ) -> Result<bool> {
        let def = &*self.def;
        let pk_type = def.primary_key_type;
        scan.skip(lock(&self.shared).failed.clone());
        let mut tx = self.pool.begin_with(D::BEGIN).await?;
        let rows = scan.next(&mut *tx).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(false);
        }
        let mut failures = Vec::new();
        let mut index_keys: HashMap<(usize, String), (u32, BlindIndexKey)> = HashMap::new();
        let mut writes = Vec::with_capacity(rows.len());
        // The values each write encrypts, counted once it is written.
        let mut sealed = Vec::with_capacity(rows.len());
        for row in &rows {
            let pk = read_pk(row, pk_type)?;
            let tenant = registry::read_tenant(def, row, 1)?;
            let id = RowId::new(def, pk, &tenant)?;
            match self
                .row_update(layout, opener, &mut index_keys, row, &id, &tenant)
                .await
            {
                Ok((write, n)) => {
                    writes.push(write);
                    sealed.push(n);
                }
                Err(RowError::Fail(column, error)) => failures.push((id, tenant, column, error)),
                Err(RowError::Fatal(e)) => return Err(e),
            }
        }
        let (mut written, mut values_done, mut conflicted) = (0u64, 0u64, 0u64);
        let outcomes = crate::write::write_rows::<D>(&mut *tx, def, writes).await?;
        for (ok, n) in outcomes.into_iter().zip(sealed) {
            if ok {
                written += 1;
                values_done += n;
            } else {
                conflicted += 1;
            }
        }
        if written > 0 {
            jobs::add_progress::<D>(&mut *tx, &self.job, written).await?;
        }
        tx.commit().await?;
        self.progress.add(written);
        let mut s = lock(&self.shared);
        s.rows += written;
        s.encrypted_values += values_done;
        // A conflicted row (changed by the application since it was read)
        // still matches the predicate: the next pass reads it again.
        s.conflicts += conflicted;
        for (id, tenant, column, error) in failures {
            if s.failed_keys.insert(id.display()) {
                s.failures.push(
                    json!({"event": "failure", "table": def.table, "tenant": tenant,
                    "primary_key": id.key.key_display(), "column": column, "error": error}),
                );
                s.failed.push(id);
            }
        }
        if s.failures.len() > MAX_FAILURES {
            return Err(CliError::new(
                ExitCode::Failures,
                format!("more than {MAX_FAILURES} rows could not be encrypted; stopping"),
            ));
        }
        Ok(true)
    }

    /// The conditional write of one row, and the number of values it
    /// encrypts.
    async fn row_update(
        &self,
        layout: &Layout,
        opener: &mut RowOpener,
        index_keys: &mut HashMap<(usize, String), (u32, BlindIndexKey)>,
        row: &D::Row,
        id: &RowId,
        tenant: &str,
    ) -> std::result::Result<(RowWrite, u64), RowError> {
        let def = &*self.def;
        let header_col = def.header_column.clone();
        let fail = |column: &str, e: String| RowError::Fail(column.to_owned(), e);
        let pkb = def
            .primary_key_bytes(&id.key)
            .map_err(|e| fail(&header_col, super::describe(&e)))?;
        let header = row
            .read_opt_bytes(2)
            .map_err(|e| RowError::Fatal(e.into()))?
            .map(<[u8]>::to_vec);
        let spec = def.spec();
        let names = def.encrypted_field_names();
        let envelopes = (0..names.len())
            .map(|i| {
                row.read_opt_bytes(FIRST_ENCRYPTED_AT + i)
                    .map(|o| o.map(<[u8]>::to_vec))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| RowError::Fatal(e.into()))?;
        // Every present field's value encoding: the row is re-sealed whole
        // under a new row key, since format 2 binds which fields are present.
        let mut encoded: Vec<Option<Zeroizing<Vec<u8>>>> = vec![None; names.len()];
        match &header {
            Some(h) => {
                let old = opener
                    .open_cells(def, tenant, pkb.as_deref(), h, &envelopes)
                    .await
                    .map_err(|e| fail(&header_col, super::describe(&e)))?;
                for ((slot, name), env) in encoded.iter_mut().zip(&names).zip(&envelopes) {
                    if let Some(env) = env {
                        *slot = Some(Zeroizing::new(
                            rowseal_sqlx::encoding::open_encoded(&old, *name, env)
                                .map_err(|e| fail(name.column, super::describe(&e)))?,
                        ));
                    }
                }
            }
            None if envelopes.iter().any(Option::is_some) => {
                return Err(fail(
                    &header_col,
                    "a ciphertext in a row without a key header".into(),
                ));
            }
            None => {}
        }

        let mut sets: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut guards: Vec<(String, Value)> = Vec::new();
        let mut n_values = 0u64;
        // The ciphertext columns sealed from their plaintext now.
        let mut sealed_now: Vec<&str> = Vec::new();
        for (t, &legacy_at) in self.targets.iter().zip(&layout.legacy) {
            let legacy = row
                .read_value(legacy_at, t.ty)
                .map_err(|e| fail(&t.legacy, format!("cannot read the plaintext column: {e}")))?;
            if legacy.is_null() {
                continue;
            }
            let slot = &mut encoded[t.at];
            if slot.is_none() {
                let mut e = Zeroizing::new(Vec::new());
                t.encoding
                    .encode_sql_value(&legacy, &mut e)
                    .map_err(|e| fail(&t.ct, e.into()))?;
                *slot = Some(e);
                n_values += 1;
                sealed_now.push(t.ct.as_str());
            }
            sets.push(t.legacy.to_string());
            values.push(Value::Null(t.ty));
            guards.push((t.legacy.clone(), legacy));
        }
        if guards.is_empty() {
            return Err(fail(&header_col, "no plaintext value left".into()));
        }
        let present = def
            .present_fields(encoded.iter().map(Option::is_some))
            .map_err(|e| fail(&header_col, super::describe(&e)))?;
        let key: RowKey = self
            .keys
            .new_row_key(&spec, tenant, pkb.as_deref(), &present)
            .await
            .map_err(|e| match e {
                rowseal_core::Error::Provider(_) | rowseal_core::Error::Store { .. } => {
                    RowError::Fatal(e.into())
                }
                e => fail(&header_col, super::describe(&e)),
            })?;
        for (name, plain) in names.iter().zip(&encoded) {
            if let Some(plain) = plain {
                let sealed = rowseal_sqlx::encoding::seal_encoded(&key, *name, plain)
                    .map_err(|e| fail(name.column, super::describe(&e)))?;
                sets.push(name.column.to_string());
                values.push(Value::Bytes(sealed));
            }
        }
        sets.push(header_col.to_string());
        values.push(Value::Bytes(key.header_bytes()));
        sets.push(def.key_version_column.to_string());
        values.push(Value::I64(i64::from(
            key.header().tenant_key_version().unwrap_or(0),
        )));

        // Blind indexes over a field sealed now.
        for (pi, plan) in self.plans.iter().enumerate() {
            if !plan
                .columns
                .iter()
                .any(|c| sealed_now.contains(&c.as_str()))
            {
                continue;
            }
            let mut parts: Vec<Zeroizing<String>> = Vec::new();
            let mut null = false;
            for (i, c) in plan.columns.iter().enumerate() {
                let text = match names.iter().position(|n| n.column == c) {
                    Some(i) => encoded[i]
                        .as_ref()
                        .map(|plain| super::index_check::index_text(plain))
                        .transpose()
                        .map_err(|e| fail(c, e.to_owned()))?,
                    None => {
                        let at = layout
                            .extra
                            .get(c)
                            .copied()
                            .ok_or_else(|| fail(c, "not selected".into()))?;
                        plain_text(def, row, c, at).map_err(|e| fail(c, e))?
                    }
                };
                match text {
                    Some(t) => {
                        let norm = plan
                            .norms
                            .get(i)
                            .map_or_else(|| t.to_string(), |n| n.apply(&t));
                        parts.push(Zeroizing::new(norm));
                    }
                    None => null = true,
                }
            }
            let scope_key = if plan.global {
                String::new()
            } else {
                tenant.to_owned()
            };
            let (version, bkey) = match index_keys.get(&(pi, scope_key.clone())) {
                Some(k) => k.clone(),
                None => {
                    let scope = if plan.global {
                        KeyScope::Global
                    } else {
                        KeyScope::Tenant(tenant.to_owned())
                    };
                    let ik = self
                        .keys
                        .current_index_key(&scope)
                        .await
                        .map_err(|e| RowError::classify(e, &plan.name))?;
                    let bk = ik
                        .blind_index_key(&def.record_type, &plan.name)
                        .map_err(|e| RowError::Fatal(e.into()))?;
                    index_keys.insert((pi, scope_key), (ik.version(), bk.clone()));
                    (ik.version(), bk)
                }
            };
            let value = if null {
                if plan.bits.get() <= 64 {
                    Value::Null(SqlType::I64)
                } else {
                    Value::Null(SqlType::Bytes)
                }
            } else {
                let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
                Value::from(
                    bkey.parts_value(&slices, plan.bits)
                        .map_err(|e| fail(&plan.name, super::describe(&e)))?,
                )
            };
            let slot = plan
                .slots
                .iter()
                .find(|s| s.0.holds(version))
                .ok_or_else(|| fail(&plan.name, "the registry lists no index column".into()))?;
            sets.push(slot.1.to_string());
            values.push(value);
            sets.push(slot.2.to_string());
            values.push(Value::I64(i64::from(version)));
        }

        // The row by its identity (the key and the tenant as its column
        // holds it), unchanged since it was read: its header and the
        // plaintexts it had.
        let [key, tenant] = id.match_binds().map_err(RowError::Fatal)?;
        let mut write = RowWrite::new(key, tenant);
        for (c, v) in sets.into_iter().zip(values) {
            write = write.set(&c, v);
        }
        write = write.expect(&header_col, header.map(Value::Bytes));
        for (c, v) in guards {
            write = write.expect(&c, Some(v));
        }
        Ok((write, n_values))
    }
}

/// The covered text of the plain column `c` (at position `at`) as stored;
/// `None` for NULL.
fn plain_text<R: DbRow>(
    def: &TableDef,
    row: &R,
    c: &str,
    at: usize,
) -> std::result::Result<Option<Zeroizing<String>>, String> {
    let ty = def
        .field_by_column(c)
        .map(|f| f.sql_type)
        .filter(|t| t.is_indexable())
        .unwrap_or(SqlType::I64);
    let v = row.read_value(at, ty).map_err(|e| e.to_string())?;
    v.index_text()
        .map(|o| o.map(|t| Zeroizing::new(t.into_owned())))
        .map_err(str::to_owned)
}

/// Why one row was not written.
enum RowError {
    /// This row: reported by primary key, skipped by this run.
    Fail(String, String),
    /// The whole job (database, key provider).
    Fatal(CliError),
}

impl RowError {
    /// A key-provider or key-store failure stops the job; any other key
    /// error (a destroyed key: a shredded tenant) fails the row.
    fn classify(e: rowseal_core::Error, column: &str) -> Self {
        match e {
            rowseal_core::Error::Provider(_) | rowseal_core::Error::Store { .. } => {
                RowError::Fatal(e.into())
            }
            e => RowError::Fail(column.to_owned(), super::describe(&e)),
        }
    }
}
