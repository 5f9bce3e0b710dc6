//! `rowseal rewrap --to KEY`: move every wrapped key to another root key with
//! the provider's ReEncrypt (the plaintext key never reaches this process).
//!
//! - Tenant and index keys in `rowseal_keys`: one ReEncrypt per key version,
//!   whatever the number of rows (`derived` mode needs nothing else).
//! - `kms`-mode tables: each row's header holds its own wrapped data key; it
//!   is rewrapped and written back with a compare-and-swap on the old header
//!   (the row key and the fields do not change: the wrapped key is not part
//!   of the key derivation).
//!
//! Idempotent: keys already under the destination are skipped, so a killed
//! rewrap is resumed by running it again.

use rowseal_core::{EncryptionContext, KeyProvider, KeyPurpose, KeyScope, RowHeader, WrappedKey};
use rowseal_sqlx::{DbRow, SqlType, Value};
use serde_json::json;

use futures_util::stream::{FuturesOrdered, StreamExt as _};

use super::Ctx;
use crate::db::{ident, ph, read_i64, read_text, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::{Out, Progress};
use crate::registry::{self, TableDef};
use crate::scan::{among, BatchScanner, RowId};
use crate::write::RowWrite;

/// Most ReEncrypt calls in flight at once: the library's default for
/// provider calls, sized for KMS request quotas (docs/kms.md).
const PROVIDER_CONCURRENCY: usize = rowseal_sqlx::DEFAULT_PROVIDER_CONCURRENCY;

/// What a kms-mode row read needs.
enum Step {
    /// No wrapped key (not a kms-mode header): nothing.
    Nothing,
    /// Not selected, or already under the destination: counted as seen.
    Passed,
    /// Its tenant was shredded: no key left to move.
    Shredded,
    /// Counted as done by a dry run.
    DryRun,
    /// Its header cannot be read.
    Failed(String),
    /// Its data key is to be rewrapped.
    Rewrap(Box<RowHeader>),
}

/// The outcome counts of one table's rows, and their reports.
struct Tally<'a> {
    out: &'a Out,
    def: &'a TableDef,
    progress: &'a Progress,
    rows_done: u64,
    failed: u64,
    shredded_skipped: u64,
}

impl Tally<'_> {
    /// Counts a row that needs no rewrap.
    fn settle(&mut self, step: Step, pk: &Value, tenant: &str) {
        match step {
            Step::Nothing | Step::Rewrap(_) => {}
            Step::Passed => self.progress.add(1),
            Step::Shredded => self.shredded_skipped += 1,
            Step::DryRun => self.rows_done += 1,
            Step::Failed(e) => self.fail(pk, tenant, &e),
        }
    }

    fn fail(&mut self, pk: &Value, tenant: &str, error: &str) {
        self.failed += 1;
        let def = self.def;
        self.out.emit(
            json!({"event": "failure", "table": def.table, "tenant": tenant,
                   "primary_key": pk.key_display(), "column": def.header_column,
                   "error": error}),
            || {
                format!(
                    "FAILED {} primary key {}: {error}",
                    def.table,
                    pk.key_display()
                )
            },
        );
    }
}

/// Which keys a rewrap moves.
pub struct Selection {
    /// Only these tenants' keys (empty: every key, global ones included).
    pub tenants: Vec<String>,
    /// Only keys now under this root key (a root-keys name or a key id).
    pub from: Option<String>,
    /// Rewrap keys already under the destination too (Transit key versions).
    pub in_place: bool,
}

pub async fn run<D: CliDb>(
    ctx: &Ctx<D>,
    to: &str,
    selection: &Selection,
    dry_run: bool,
    only: &[String],
) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let keys = ctx.keys().await?;
    let provider = keys.counter.clone();
    let routing = keys.routing.clone();
    // A root key's name stands for its current key id.
    let named = |name: &str| {
        routing
            .as_ref()
            .and_then(|r| r.root_key_named(name))
            .map(|p| p.current_key_id().to_owned())
    };
    let mut dest_resolved: Option<String> = named(to);
    let under_dest = |w: &WrappedKey, resolved: &Option<String>| {
        !selection.in_place && (w.key_id() == to || resolved.as_deref() == Some(w.key_id()))
    };
    let from_matches = |w: &WrappedKey| match &selection.from {
        None => true,
        Some(from) => match routing
            .as_ref()
            .filter(|r| r.root_key_named(from).is_some())
        {
            Some(r) => r.root_key_of(w.key_id()).is_some_and(|(n, _)| n == from),
            None => w.key_id() == from,
        },
    };
    let tenant_selected =
        |t: &str| selection.tenants.is_empty() || selection.tenants.iter().any(|s| s == t);

    let rows = D::fetch_all_on(
        &mut conn,
        "SELECT purpose, scope_kind, tenant, version, wrapped FROM rowseal_keys WHERE state <> 'destroyed' AND wrapped IS NOT NULL ORDER BY purpose, scope_kind, tenant, version",
        vec![],
    )
    .await?;
    let job = if dry_run {
        None
    } else {
        Some(
            jobs::create::<D>(
                &mut conn,
                "rewrap",
                &json!({"to": to, "tenants": selection.tenants, "from": selection.from,
                        "in_place": selection.in_place}),
            )
            .await?,
        )
    };
    let mut keys_done = 0u64;
    let mut keys_skipped = 0u64;
    let update = format!(
        "UPDATE rowseal_keys SET wrapped = {}, root_key_id = {} WHERE purpose = {} AND scope_kind = {} AND tenant = {} AND version = {} AND wrapped = {}",
        ph::<D>(1), ph::<D>(2), ph::<D>(3), ph::<D>(4), ph::<D>(5), ph::<D>(6), ph::<D>(7)
    );
    for row in &rows {
        let purpose = read_text(row, 0)?;
        let scope_kind = read_text(row, 1)?;
        let tenant = read_text(row, 2)?;
        let version = read_i64(row, 3)?;
        let bytes = match row.read_value(4, SqlType::Bytes)? {
            Value::Bytes(b) => b,
            _ => continue,
        };
        let wrapped = WrappedKey::from_bytes(&bytes)?;
        // Global keys belong to no tenant: --tenant leaves them alone.
        if (!selection.tenants.is_empty() && scope_kind == "global")
            || !tenant_selected(&tenant)
            || !from_matches(&wrapped)
        {
            continue;
        }
        if under_dest(&wrapped, &dest_resolved) {
            keys_skipped += 1;
            continue;
        }
        let Ok(version) = u32::try_from(version) else {
            ctx.out.warn(&format!(
                "rowseal_keys: version {version} out of range; skipped"
            ));
            continue;
        };
        let (key_purpose, scope) = match (purpose.as_str(), scope_kind.as_str()) {
            ("tenant", _) => (KeyPurpose::Tenant, KeyScope::Tenant(tenant.clone())),
            ("index", "global") => (KeyPurpose::Index, KeyScope::Global),
            ("index", _) => (KeyPurpose::Index, KeyScope::Tenant(tenant.clone())),
            _ => {
                ctx.out
                    .warn(&format!("rowseal_keys: unknown purpose {purpose}; skipped"));
                continue;
            }
        };
        let context = EncryptionContext::stored_key(key_purpose, &scope, version);
        if dry_run {
            keys_done += 1;
            continue;
        }
        let new = provider.reencrypt_data_key(&wrapped, &context, to).await?;
        dest_resolved = Some(new.key_id().to_owned());
        D::execute_on(
            &mut conn,
            &update,
            vec![
                Value::Bytes(new.to_bytes()),
                Value::Text(new.key_id().to_owned()),
                Value::Text(purpose),
                Value::Text(scope_kind),
                Value::Text(tenant),
                Value::I64(i64::from(version)),
                Value::Bytes(bytes),
            ],
        )
        .await?;
        keys_done += 1;
    }
    ctx.out.emit(
        json!({"event": "keys", "rewrapped": keys_done, "already_under_destination": keys_skipped, "dry_run": dry_run}),
        || format!("{}{keys_done} tenant/index keys rewrapped, {keys_skipped} already under {to}", if dry_run { "(dry run) " } else { "" }),
    );

    // Per-row data keys of kms-mode tables.
    let mut rows_done = 0u64;
    let mut conflicts = 0u64;
    let mut failed = 0u64;
    let mut shredded_skipped = 0u64;
    // Rows of shredded tenants have no key left (their header is wiped).
    let (_, shredded) = registry::tenant_versions::<D>(&mut conn).await?;
    for def in registry::tables::<D>(&mut conn, only).await? {
        if def.key_mode != rowseal_core::KeyMode::Kms {
            continue;
        }
        let batch = ctx.settings.batch_size;
        let select = format!(
            "{}, {}, {}",
            ident::<D>(&def.primary_key),
            ident::<D>(&def.tenant),
            ident::<D>(&def.header_column),
        );
        let mut scan = BatchScanner::<D>::new(&def, select.clone(), batch);
        let total = scan.remaining(&mut conn).await?;
        let (progress, handle) = Progress::start(ctx.out, format!("rewrap {}", def.table), total);
        let mut tally = Tally {
            out: &ctx.out,
            def: &def,
            progress: &progress,
            rows_done: 0,
            failed: 0,
            shredded_skipped: 0,
        };
        // What a row read needs: nothing, a report, or a rewrap.
        let step = |header: &[u8], tenant: &str, resolved: &Option<String>| {
            let parsed = match RowHeader::from_bytes(header) {
                Ok(h) => h,
                Err(_) if shredded.iter().any(|s| s == tenant) => return Step::Shredded,
                Err(e) => return Step::Failed(format!("key header unreadable: {e}")),
            };
            let Some(wrapped) = parsed.wrapped_data_key() else {
                return Step::Nothing;
            };
            if !tenant_selected(tenant) || !from_matches(wrapped) || under_dest(wrapped, resolved) {
                Step::Passed
            } else if dry_run {
                Step::DryRun
            } else {
                Step::Rewrap(Box::new(parsed))
            }
        };
        let rewrap = |parsed: &RowHeader, tenant: &str| {
            let context = EncryptionContext::row_data_key(&def.record_type, tenant);
            let wrapped = parsed.wrapped_data_key().cloned();
            let provider = provider.clone();
            async move {
                let wrapped = wrapped.ok_or_else(|| {
                    CliError::new(ExitCode::Internal, "a header without a wrapped key")
                })?;
                Ok::<_, CliError>(provider.reencrypt_data_key(&wrapped, &context, to).await?)
            }
        };
        loop {
            let page = scan.next(&mut conn).await?;
            if page.is_empty() {
                break;
            }
            // First attempt, for the whole page: the rows that need it are
            // rewrapped (up to PROVIDER_CONCURRENCY calls at once) and
            // written back in one batch.
            let mut todo: Vec<(RowId, String, Vec<u8>, Box<RowHeader>)> = Vec::new();
            for row in &page {
                let id = RowId::read(&def, row)?;
                let tenant = registry::read_tenant(&def, row, 1)?;
                let header = row.read_bytes(2)?.to_vec();
                match step(&header, &tenant, &dest_resolved) {
                    Step::Rewrap(parsed) => todo.push((id, tenant, header, parsed)),
                    other => tally.settle(other, &id.key, &tenant),
                }
            }
            // A destination named by alias or root-key name is known by its
            // key id only once the provider has answered: the first call
            // goes alone, so that rows already under it are not moved again.
            let mut rewrapped = Vec::with_capacity(todo.len());
            if dest_resolved.is_none() {
                if let Some((_, tenant, _, parsed)) = todo.first() {
                    let new = rewrap(parsed, tenant).await?;
                    dest_resolved = Some(new.key_id().to_owned());
                    rewrapped.push(new);
                    let mut kept = vec![todo.remove(0)];
                    for (id, tenant, header, _) in todo {
                        match step(&header, &tenant, &dest_resolved) {
                            Step::Rewrap(parsed) => kept.push((id, tenant, header, parsed)),
                            other => tally.settle(other, &id.key, &tenant),
                        }
                    }
                    todo = kept;
                }
            }
            let mut calls = FuturesOrdered::new();
            let mut next = rewrapped.len();
            while next < todo.len() || !calls.is_empty() {
                while next < todo.len() && calls.len() < PROVIDER_CONCURRENCY {
                    let (_, tenant, _, parsed) = &todo[next];
                    calls.push_back(rewrap(parsed, tenant));
                    next += 1;
                }
                if let Some(new) = calls.next().await {
                    rewrapped.push(new?);
                }
            }
            let mut writes = Vec::with_capacity(todo.len());
            for ((id, _, header, parsed), new) in todo.iter().zip(rewrapped) {
                let new_header = parsed.clone().with_wrapped_data_key(new)?.to_bytes();
                let [key, tenant_value] = id.match_binds()?;
                writes.push(
                    RowWrite::new(key, tenant_value)
                        .set(&def.header_column, Value::Bytes(new_header))
                        .expect(&def.header_column, Some(Value::Bytes(header.clone()))),
                );
            }
            let written = crate::write::write_rows::<D>(&mut conn, &def, writes).await?;
            let mut retry = Vec::new();
            for ((id, tenant, _, _), ok) in todo.into_iter().zip(written) {
                if ok {
                    tally.rows_done += 1;
                    progress.add(1);
                } else {
                    retry.push((id, tenant));
                }
            }
            // Changed by the application since it was read: read again and
            // rewrap again, row by row, a few times.
            for (mut id, mut tenant) in retry {
                let pk = id.key.clone();
                let mut settled = false;
                for _attempt in 1..5 {
                    conflicts += 1;
                    // Read again by the table's own key: the key column, or
                    // (tenant, key) in a table whose primary key has both.
                    let mut values = Vec::new();
                    let reread = format!(
                        "SELECT {select} FROM {} WHERE {}",
                        ident::<D>(&def.table),
                        among::<D>(&def, std::slice::from_ref(&id), &mut values, false)
                    );
                    let again = D::fetch_all_on(&mut conn, &reread, values).await?;
                    let Some(r) = again.first() else {
                        // Deleted meanwhile: nothing to move.
                        settled = true;
                        break;
                    };
                    id = RowId::read(&def, r)?;
                    tenant = registry::read_tenant(&def, r, 1)?;
                    let header = r.read_bytes(2)?.to_vec();
                    let parsed = match step(&header, &tenant, &dest_resolved) {
                        Step::Rewrap(parsed) => parsed,
                        other => {
                            tally.settle(other, &id.key, &tenant);
                            settled = true;
                            break;
                        }
                    };
                    let new = rewrap(&parsed, &tenant).await?;
                    dest_resolved = Some(new.key_id().to_owned());
                    let new_header = parsed.with_wrapped_data_key(new)?.to_bytes();
                    let [key, tenant_value] = id.match_binds()?;
                    let write = RowWrite::new(key, tenant_value)
                        .set(&def.header_column, Value::Bytes(new_header))
                        .expect(&def.header_column, Some(Value::Bytes(header)));
                    if crate::write::write_rows::<D>(&mut conn, &def, vec![write]).await?[0] {
                        tally.rows_done += 1;
                        progress.add(1);
                        settled = true;
                        break;
                    }
                }
                if !settled {
                    tally.fail(
                        &pk,
                        &tenant,
                        "changed by the application at every attempt; run rewrap again",
                    );
                }
            }
        }
        rows_done += tally.rows_done;
        failed += tally.failed;
        shredded_skipped += tally.shredded_skipped;
        progress.finish(handle).await;
    }
    if let Some(id) = &job {
        let summary = json!({"keys": keys_done, "rows": rows_done, "failed": failed,
                             "provider_calls": keys.calls()});
        jobs::add_progress::<D>(&mut conn, id, keys_done + rows_done).await?;
        let state = if failed == 0 { "done" } else { "failed" };
        jobs::finish::<D>(&mut conn, id, state, &summary).await?;
    }
    ctx.out.emit(
        json!({"event": "done", "command": "rewrap", "job": job, "to": to, "keys_rewrapped": keys_done,
               "rows_rewrapped": rows_done, "conflicts_retried": conflicts, "failed": failed,
               "shredded_rows_skipped": shredded_skipped, "dry_run": dry_run,
               "provider_calls": keys.calls()}),
        || format!(
            "rewrap{}: {keys_done} keys and {rows_done} kms-mode rows moved to {to}, {failed} rows failed, {} key-provider calls",
            if dry_run { " (dry run)" } else { "" },
            keys.counter.counts().total()
        ),
    );
    Ok(if failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failures
    })
}
