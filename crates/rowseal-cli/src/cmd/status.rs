//! `rowseal status`: what is encrypted under what, what is left to rotate,
//! which root keys are in use, which jobs run. Reads counts and metadata
//! only; needs no key.

use std::collections::BTreeMap;

use rowseal_core::KeyMode;
use rowseal_sqlx::schema::IndexScope;
use serde_json::json;

use super::Ctx;
use crate::db::{ident, read_i64, read_text, CliDb};
use crate::error::{ExitCode, Result};

use crate::registry;

pub async fn run<D: CliDb>(
    ctx: &Ctx<D>,
    only: &[String],
    per_tenant_keys: bool,
) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let tables = registry::tables::<D>(&mut conn, only).await?;
    let (current, destroyed) = registry::tenant_versions::<D>(&mut conn).await?;
    let index_current = registry::index_versions::<D>(&mut conn).await?;
    if tables.is_empty() {
        ctx.out.emit(json!({"event": "tables", "count": 0}), || {
            "no table is registered in rowseal_schema (the application registers its models with rowseal_sqlx::schema::register)".into()
        });
    }

    for def in &tables {
        let mode = def.key_mode;
        let sql = format!(
            "SELECT {t}, {v}, COUNT(*) FROM {table} GROUP BY {t}, {v} ORDER BY {t}, {v}",
            t = ident::<D>(&def.tenant),
            v = ident::<D>(&def.key_version_column),
            table = ident::<D>(&def.table)
        );
        let rows = D::fetch_all_on(&mut conn, &sql, vec![]).await?;
        let mut total = 0i64;
        let mut to_rotate = 0i64;
        let mut by_version: BTreeMap<i64, i64> = BTreeMap::new();
        let mut tenants: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for r in &rows {
            // The canonical id, as `rowseal_keys` (and `current`) key it.
            let tenant = registry::read_tenant(def, r, 0)?;
            let version = read_i64(r, 1)?;
            let n = read_i64(r, 2)?;
            total += n;
            *by_version.entry(version).or_default() += n;
            let cur = current.get(&tenant).copied();
            let behind = mode == KeyMode::Derived && cur.is_some_and(|c| version < i64::from(c));
            if behind {
                to_rotate += n;
            }
            let e = tenants.entry(tenant.clone()).or_insert_with(|| {
                json!({"current_version": cur, "shredded": destroyed.contains(&tenant),
                       "rows": 0, "rows_to_rotate": 0})
            });
            e["rows"] = json!(e["rows"].as_i64().unwrap_or(0) + n);
            if behind {
                e["rows_to_rotate"] = json!(e["rows_to_rotate"].as_i64().unwrap_or(0) + n);
            }
        }
        // Rows per storage format version (the header's first byte); "none"
        // for rows without a header (legacy plaintext rows). `rotate` moves
        // rows between versions like any rotation.
        let sql = format!(
            "SELECT {hex}, COUNT(*) FROM {table} GROUP BY {hex}",
            hex = D::first_byte_hex(&ident::<D>(&def.header_column)),
            table = ident::<D>(&def.table)
        );
        let mut by_format: BTreeMap<String, i64> = BTreeMap::new();
        for r in &D::fetch_all_on(&mut conn, &sql, vec![]).await? {
            let n = read_i64(r, 1)?;
            let version = match rowseal_sqlx::DbRow::read_value(r, 0, rowseal_sqlx::SqlType::Text) {
                Ok(rowseal_sqlx::Value::Text(hex)) => u8::from_str_radix(&hex, 16)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| "unknown".into()),
                _ => "none".into(),
            };
            *by_format.entry(version).or_default() += n;
        }
        // Blind indexes: rows per index-key version over both slots, rows with
        // no value in any slot, and rows lacking the version every row should
        // hold (the pending one during a rotation: what `reindex` fills).
        let mut coverage = Vec::new();
        for idx in &def.blind_indexes {
            let mut by_version: BTreeMap<String, i64> = BTreeMap::new();
            let mut with_target: BTreeMap<String, i64> = BTreeMap::new();
            for (_, _, version_column) in idx.slots() {
                let sql = format!(
                    "SELECT {t}, {v}, COUNT(*) FROM {table} WHERE {v} IS NOT NULL GROUP BY {t}, {v}",
                    t = ident::<D>(&def.tenant),
                    v = ident::<D>(version_column),
                    table = ident::<D>(&def.table)
                );
                for r in &D::fetch_all_on(&mut conn, &sql, vec![]).await? {
                    let tenant = registry::read_tenant(def, r, 0)?;
                    let version = read_i64(r, 1)?;
                    let n = read_i64(r, 2)?;
                    *by_version.entry(version.to_string()).or_default() += n;
                    let scope = if idx.scope == IndexScope::Global {
                        ""
                    } else {
                        tenant.as_str()
                    };
                    if index_current.get(scope) == Some(&version) {
                        *with_target.entry(tenant).or_default() += n;
                    }
                }
            }
            let none_sql = format!(
                "SELECT COUNT(*) FROM {} WHERE {}",
                ident::<D>(&def.table),
                idx.slots()
                    .iter()
                    .map(|(_, _, k)| format!("{} IS NULL", ident::<D>(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            );
            let none = D::fetch_all_on(&mut conn, &none_sql, vec![])
                .await?
                .first()
                .map(|r| read_i64(r, 0))
                .transpose()?
                .unwrap_or(0);
            if none > 0 {
                by_version.insert("none".into(), none);
            }
            let behind: i64 = tenants
                .iter()
                .map(|(t, e)| {
                    e["rows"].as_i64().unwrap_or(0) - with_target.get(t).copied().unwrap_or(0)
                })
                .sum();
            coverage.push(json!({"index": idx.name, "scope": idx.scope.as_str(),
                                 "rows_by_index_version": by_version,
                                 "rows_behind_current_index_key": behind}));
        }
        // Values still in a legacy plaintext column, per column (null: the
        // table has none); `rowseal encrypt-column` moves them.
        let mut plaintext: BTreeMap<String, i64> = BTreeMap::new();
        for f in &def.fields {
            if let Some(legacy) = &f.plaintext_column {
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE {} IS NOT NULL",
                    ident::<D>(&def.table),
                    ident::<D>(legacy)
                );
                let n = D::fetch_all_on(&mut conn, &sql, vec![])
                    .await?
                    .first()
                    .map(|r| read_i64(r, 0))
                    .transpose()?
                    .unwrap_or(0);
                plaintext.insert(legacy.clone(), n);
            }
        }
        let plaintext_json = if plaintext.is_empty() {
            serde_json::Value::Null
        } else {
            json!(plaintext)
        };
        let by_version_json: BTreeMap<String, i64> = by_version
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        ctx.out.emit(
            json!({"event": "table", "table": def.table, "record_type": def.record_type,
                   "key_mode": mode.as_str(), "rows": total, "rows_by_key_version": by_version_json,
                   "rows_by_format_version": by_format,
                   "rows_to_rotate": to_rotate, "tenants": tenants,
                   "encrypted_columns": def.encrypted_columns(),
                   "blind_index_coverage": coverage, "plaintext_rows_to_encrypt": plaintext_json}),
            || {
                let versions: Vec<String> = by_version
                    .iter()
                    .map(|(v, n)| format!("v{v}: {n}"))
                    .collect();
                let formats: Vec<String> = by_format
                    .iter()
                    .map(|(v, n)| format!("format {v}: {n}"))
                    .collect();
                let mut line = format!(
                    "{} ({} mode, {} tenants): {total} rows [{}] [{}], {to_rotate} to rotate",
                    def.table,
                    mode.as_str(),
                    tenants.len(),
                    versions.join(", "),
                    formats.join(", ")
                );
                for (c, n) in &plaintext {
                    line.push_str(&format!("; {n} values still in plaintext column {c}"));
                }
                for c in &coverage {
                    line.push_str(&format!(
                        "; index {}: {} by index-key version, {} behind",
                        c["index"].as_str().unwrap_or(""),
                        c["rows_by_index_version"],
                        c["rows_behind_current_index_key"]
                    ));
                }
                line
            },
        );
    }

    let sql = "SELECT purpose, state, root_key_id, COUNT(*) FROM rowseal_keys GROUP BY purpose, state, root_key_id ORDER BY purpose, state, root_key_id";
    for r in &D::fetch_all_on(&mut conn, sql, vec![]).await? {
        let (purpose, state, root, n) = (
            read_text(r, 0)?,
            read_text(r, 1)?,
            read_text(r, 2)?,
            read_i64(r, 3)?,
        );
        ctx.out.emit(
            json!({"event": "keys", "purpose": purpose, "state": state, "root_key": root, "count": n}),
            || format!("{n} {purpose} keys {state}{}", if root.is_empty() { String::new() } else { format!(" under {root}") }),
        );
    }

    let sql = format!(
        "SELECT id, kind, rows_done, worker, CAST(heartbeat_at AS {}), params FROM rowseal_jobs WHERE state = 'running' ORDER BY created_at",
        D::TEXT
    );
    for r in &D::fetch_all_on(&mut conn, &sql, vec![]).await? {
        let (id, kind, done, worker, beat) = (
            read_text(r, 0)?,
            read_text(r, 1)?,
            read_i64(r, 2)?,
            read_text(r, 3)?,
            read_text(r, 4)?,
        );
        // The job's scope (tenants, tables), as recorded by the job.
        let scope = serde_json::from_str::<serde_json::Value>(&read_text(r, 5)?)
            .ok()
            .and_then(|p| p.get("scope").cloned())
            .unwrap_or(serde_json::Value::Null);
        ctx.out.emit(
            json!({"event": "job", "id": id, "kind": kind, "state": "running", "rows_done": done,
                   "worker": worker, "heartbeat_at": beat, "scope": scope}),
            || {
                let scope = if scope.is_null() {
                    String::new()
                } else {
                    format!(" (scope {scope})")
                };
                format!("job {id} ({kind}){scope} running: {done} rows done, last heartbeat {beat} by {worker}")
            },
        );
    }
    if per_tenant_keys {
        tenant_keys(ctx, &mut conn).await?;
    }
    Ok(ExitCode::Ok)
}

/// The provider a root key id belongs to, by the form each provider records.
fn provider_of(root_key_id: &str) -> &'static str {
    if root_key_id.starts_with("arn:") {
        "aws-kms"
    } else if root_key_id.starts_with("vault-transit:") {
        "vault-transit"
    } else if root_key_id.starts_with("local:") {
        "local"
    } else {
        "other"
    }
}

/// An integer column that may be NULL.
fn read_opt_i64<R: rowseal_sqlx::DbRow>(row: &R, idx: usize) -> Result<Option<i64>> {
    match row.read_value(idx, rowseal_sqlx::SqlType::I64) {
        Ok(rowseal_sqlx::Value::Null(_)) => Ok(None),
        _ => read_i64(row, idx).map(Some),
    }
}

/// `status --keys`: one event per (tenant, root key), from `rowseal_keys`
/// and what applications recorded in `rowseal_key_health`. Reads the key
/// tables only (one row per key version), never an application table.
async fn tenant_keys<D: CliDb>(ctx: &Ctx<D>, conn: &mut D::Connection) -> Result<()> {
    let sql = "SELECT k.tenant, k.purpose, k.version, k.root_key_id, h.last_ok_at, \
               h.last_error_at, h.last_error_kind, h.last_error \
               FROM rowseal_keys k LEFT JOIN rowseal_key_health h \
               ON h.tenant = k.tenant AND h.root_key_id = k.root_key_id \
               WHERE k.state <> 'destroyed' AND k.wrapped IS NOT NULL \
               ORDER BY k.tenant, k.root_key_id, k.purpose, k.version";
    let rows = D::fetch_all_on(conn, sql, vec![]).await?;
    // (tenant, root key) -> (versions, health)
    let mut groups: BTreeMap<(String, String), (Vec<serde_json::Value>, serde_json::Value)> =
        BTreeMap::new();
    for r in &rows {
        let tenant = read_text(r, 0)?;
        let root = read_text(r, 3)?;
        let entry = groups
            .entry((tenant, root))
            .or_insert_with(|| (Vec::new(), serde_json::Value::Null));
        entry
            .0
            .push(json!({"purpose": read_text(r, 1)?, "version": read_i64(r, 2)?}));
        entry.1 = json!({
            "last_unwrap_ok_at_unix_ms": read_opt_i64(r, 4)?,
            "last_error_at_unix_ms": read_opt_i64(r, 5)?,
            "last_error_kind": Some(read_text(r, 6)?).filter(|s| !s.is_empty()),
            "last_error": Some(read_text(r, 7)?).filter(|s| !s.is_empty()),
        });
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ago = |v: &serde_json::Value| {
        v.as_i64().map_or("never".to_owned(), |t| {
            format!("{} s ago", (now_ms - t).max(0) / 1000)
        })
    };
    for ((tenant, root), (versions, health)) in groups {
        let provider = provider_of(&root);
        let mut event = json!({"event": "tenant_keys", "tenant": tenant, "root_key_id": root,
                               "provider": provider, "key_versions": versions});
        if let (Some(e), Some(h)) = (event.as_object_mut(), health.as_object()) {
            e.extend(h.clone());
        }
        ctx.out.emit(event.clone(), || {
            let shown = if tenant.is_empty() {
                "(global)"
            } else {
                tenant.as_str()
            };
            let mut line = format!(
                "tenant {shown}: {} key versions under {root} ({provider}); last unwrap {}",
                versions.len(),
                ago(&event["last_unwrap_ok_at_unix_ms"])
            );
            if let Some(kind) = event["last_error_kind"].as_str() {
                line.push_str(&format!(
                    "; last error {} ({kind}: {})",
                    ago(&event["last_error_at_unix_ms"]),
                    event["last_error"].as_str().unwrap_or("")
                ));
            }
            line
        });
    }
    Ok(())
}
