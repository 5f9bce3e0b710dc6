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

use super::Ctx;
use crate::db::{ident, ph, read_i64, read_text, CliDb};
use crate::error::{ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry;
use crate::scan::{among, row_match, BatchScanner, RowId};

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
        let mut fail = |pk: &Value, tenant: &str, error: &str| {
            failed += 1;
            ctx.out.emit(
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
        };
        // The row by its identity (key and tenant) and its old header.
        let update = format!(
            "UPDATE {} SET {} = {} WHERE {} AND {} = {}",
            ident::<D>(&def.table),
            ident::<D>(&def.header_column),
            ph::<D>(1),
            row_match::<D>(&def, 2),
            ident::<D>(&def.header_column),
            ph::<D>(4)
        );
        let (progress, handle) = Progress::start(ctx.out, format!("rewrap {}", def.table), total);
        loop {
            let page = scan.next(&mut conn).await?;
            if page.is_empty() {
                break;
            }
            for row in &page {
                let mut id = RowId::read(&def, row)?;
                let pk = id.key.clone();
                // The canonical id (the data key's context names it).
                let mut tenant = registry::read_tenant(&def, row, 1)?;
                let mut header = row.read_bytes(2)?.to_vec();
                // Retry on a concurrent application write: re-read, rewrap again.
                let mut settled = false;
                for _attempt in 0..5 {
                    let parsed = match RowHeader::from_bytes(&header) {
                        Ok(h) => h,
                        Err(e) => {
                            if shredded.contains(&tenant) {
                                shredded_skipped += 1;
                            } else {
                                fail(&pk, &tenant, &format!("key header unreadable: {e}"));
                            }
                            settled = true;
                            break;
                        }
                    };
                    let Some(wrapped) = parsed.wrapped_data_key() else {
                        settled = true;
                        break;
                    };
                    if !tenant_selected(&tenant) || !from_matches(wrapped) {
                        progress.add(1);
                        settled = true;
                        break;
                    }
                    if under_dest(wrapped, &dest_resolved) {
                        progress.add(1);
                        settled = true;
                        break;
                    }
                    if dry_run {
                        rows_done += 1;
                        settled = true;
                        break;
                    }
                    let context = EncryptionContext::row_data_key(&def.record_type, &tenant);
                    let new = provider.reencrypt_data_key(wrapped, &context, to).await?;
                    dest_resolved = Some(new.key_id().to_owned());
                    let new_header = parsed.with_wrapped_data_key(new)?.to_bytes();
                    let mut values = vec![Value::Bytes(new_header)];
                    values.extend(id.match_binds()?);
                    values.push(Value::Bytes(header.clone()));
                    let n = D::execute_on(&mut conn, &update, values).await?;
                    if n == 1 {
                        rows_done += 1;
                        progress.add(1);
                        settled = true;
                        break;
                    }
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
                    header = r.read_bytes(2)?.to_vec();
                }
                if !settled {
                    fail(
                        &pk,
                        &tenant,
                        "changed by the application at every attempt; run rewrap again",
                    );
                }
            }
        }
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
