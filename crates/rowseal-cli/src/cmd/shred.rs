//! `rowseal shred --tenant T`: crypto-shredding. Destroys every tenant and
//! index key version of T (wrapped key set to NULL, state `destroyed`) and
//! wipes the per-row wrapped data keys of T's rows in kms-mode tables. T's
//! rows then fail to open with a typed error (`key destroyed`, or a malformed
//! header for kms-mode rows), and clears T's rows' global blind-index values,
//! which the live global index key could otherwise still compute and match;
//! no other tenant is touched. The tenant is compared byte for byte (`ACME`
//! is not `acme`, whatever the column's collation).
//!
//! T is a canonical tenant id, whatever the type of the tenant columns: a
//! UUID lowercase and hyphenated, an integer in plain decimal (the text
//! `rowseal_keys` knows the tenant by). A table whose tenant column cannot
//! hold T (an integer column for a UUID tenant) has none of its rows and is
//! left alone; an id no registered table can hold and that has no keys (a
//! typo, an uppercase UUID) is refused before anything is destroyed (exit
//! 2), since shredding it would destroy nothing and report success.
//!
//! Caveats (docs/cli.md): application processes keep unwrapped keys in their
//! caches until the cache lifetime ends; database backups still hold the
//! wrapped keys, which stay openable as long as the root key exists.

use std::io::{BufRead, IsTerminal, Write};

use rowseal_sqlx::Value;
use serde_json::json;

use super::Ctx;
use crate::db::{exact_ph, ident, ph, read_i64, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::registry;
use rowseal_sqlx::schema::IndexScope;

pub async fn run<D: CliDb>(
    ctx: &Ctx<D>,
    tenant: &str,
    confirmation: Option<&str>,
    dry_run: bool,
) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let tables = registry::tables::<D>(&mut conn, &[]).await?;
    registry::check_tenant_arg::<D>(&mut conn, &tables, tenant).await?;
    // rowseal_keys: the tenant column is always text.
    let sql = format!(
        "SELECT COUNT(*) FROM rowseal_keys WHERE scope_kind = 'tenant' AND tenant = {} AND state = 'active'",
        exact_ph::<D>(1)
    );
    let rows = D::fetch_all_on(&mut conn, &sql, vec![Value::Text(tenant.to_owned())]).await?;
    let active = rows
        .first()
        .map(|r| read_i64(r, 0))
        .transpose()?
        .unwrap_or(0);
    if dry_run {
        ctx.out.emit(
            json!({"event": "plan", "command": "shred", "tenant": tenant, "keys": active}),
            || format!("would destroy {active} active keys of tenant {tenant}"),
        );
        return Ok(ExitCode::Ok);
    }
    let confirmed = match confirmation {
        Some(c) => c == tenant,
        None if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            eprint!(
                "This destroys every key of tenant {tenant}: its rows become unreadable, forever.\nType the tenant id to confirm: "
            );
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                CliError::new(ExitCode::Refused, format!("no confirmation: {}", e.kind()))
            })?;
            line.trim_end_matches(['\r', '\n']) == tenant
        }
        None => false,
    };
    if !confirmed {
        return Err(CliError::new(
            ExitCode::Refused,
            format!("refusing to shred tenant {tenant} without confirmation: pass --yes-destroy-tenant {tenant}"),
        ));
    }
    let sql = format!(
        "UPDATE rowseal_keys SET wrapped = NULL, root_key_id = NULL, state = 'destroyed' WHERE scope_kind = 'tenant' AND tenant = {}",
        exact_ph::<D>(1)
    );
    let keys = D::execute_on(&mut conn, &sql, vec![Value::Text(tenant.to_owned())]).await?;
    let mut kms_rows = 0;
    let mut global_index_rows = 0;
    for def in &tables {
        // The tenant as this table's tenant column holds it; none of its
        // rows belong to a tenant the column cannot hold.
        let Some(tenant_value) = def.tenant_value(tenant) else {
            continue;
        };
        let is_tenant = |n| {
            format!(
                "{} = {}",
                ident::<D>(&def.tenant),
                registry::tenant_ph::<D>(def, n)
            )
        };
        if def.key_mode == rowseal_core::KeyMode::Kms {
            let sql = format!(
                "UPDATE {} SET {} = {} WHERE {}",
                ident::<D>(&def.table),
                ident::<D>(&def.header_column),
                ph::<D>(1),
                is_tenant(2)
            );
            kms_rows += D::execute_on(
                &mut conn,
                &sql,
                vec![Value::Bytes(Vec::new()), tenant_value.clone()],
            )
            .await?;
        }
        // Global blind indexes are keyed by a key that outlives the tenant:
        // left in place, a shredded row would still be found (and its
        // value confirmed) by anyone who can compute the global index.
        let global: Vec<&str> = def
            .blind_indexes
            .iter()
            .filter(|i| i.scope == IndexScope::Global)
            .flat_map(|i| {
                [
                    i.column.as_str(),
                    i.version_column.as_str(),
                    i.alt_column.as_str(),
                    i.alt_version_column.as_str(),
                ]
            })
            .collect();
        if !global.is_empty() {
            let set: Vec<String> = global
                .iter()
                .map(|c| format!("{} = NULL", ident::<D>(c)))
                .collect();
            let sql = format!(
                "UPDATE {} SET {} WHERE {}",
                ident::<D>(&def.table),
                set.join(", "),
                is_tenant(1)
            );
            global_index_rows += D::execute_on(&mut conn, &sql, vec![tenant_value]).await?;
        }
    }
    ctx.out.emit(
        json!({"event": "done", "command": "shred", "tenant": tenant, "keys_destroyed": keys,
               "kms_rows_wiped": kms_rows, "global_index_rows_cleared": global_index_rows}),
        || format!("tenant {tenant} shredded: {keys} keys destroyed, {kms_rows} per-row data keys wiped, {global_index_rows} rows' global blind-index values cleared"),
    );
    ctx.out.warn("application processes may keep this tenant's unwrapped keys in their caches until the cache lifetime ends (5 minutes by default); restart them to be sure. Database backups still hold the wrapped keys.");
    Ok(ExitCode::Ok)
}
