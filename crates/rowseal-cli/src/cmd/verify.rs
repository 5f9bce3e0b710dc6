//! `rowseal verify`: open every row of every registered table (key header
//! commitment, then every encrypted field), recompute every blind index from
//! the decrypted fields under the index-key version stored beside it, and
//! report the primary keys that fail — never a value. Rows are read in
//! primary-key order, a batch at a time (keyset pagination,
//! [`BatchScanner`]), so memory stays bounded.

use rowseal_core::KeyMode;
use rowseal_sqlx::DbRow;
use serde_json::json;

use super::index_check::TableIndexes;
use super::{Ctx, RowOpener};
use crate::db::{ident, read_i64, CliDb};
use crate::error::{ExitCode, Result};
use crate::output::Progress;
use crate::registry::{self, read_pk, FIRST_ENCRYPTED};
use crate::scan::BatchScanner;

pub async fn run<D: CliDb>(ctx: &Ctx<D>, only: &[String]) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let tables = registry::tables::<D>(&mut conn, only).await?;
    let keys = ctx.keys().await?;
    let mut opener = RowOpener::new(keys.hierarchy.clone());
    let mut total = 0u64;
    for def in &tables {
        total += BatchScanner::<D>::new(def, "", 0)
            .remaining(&mut conn)
            .await?;
    }
    let (progress, handle) = Progress::start(ctx.out, "verify".into(), total);
    let mut failed = 0u64;
    let mut checked = 0u64;
    let mut index_failures = 0u64;
    let mut index_report = Vec::new();
    let mut not_checked = Vec::new();
    let batch = ctx.settings.batch_size;
    for def in &tables {
        let pk_type = def.primary_key_type;
        let mode = def.key_mode;
        let enc = def.encrypted_columns();
        let names = def.encrypted_field_names();
        let mut indexes = TableIndexes::new(def, FIRST_ENCRYPTED + enc.len());
        for n in &indexes.not_checked {
            not_checked.push(json!({"table": def.table, "index": n.index, "reason": n.reason}));
            ctx.out.emit(
                json!({"event": "index_not_checked", "table": def.table, "index": n.index,
                       "reason": n.reason}),
                || {
                    format!(
                        "NOT CHECKED: blind index {} of {}: {}",
                        n.index, def.table, n.reason
                    )
                },
            );
        }
        let mut select = registry::select_list::<D>(def);
        for c in &indexes.extra_columns {
            select.push_str(", ");
            select.push_str(&ident::<D>(c));
        }
        let mut scan = BatchScanner::<D>::new(def, select, batch);
        loop {
            let rows = scan.next(&mut conn).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let pk = read_pk(row, pk_type)?;
                let tenant = registry::read_tenant(def, row, 1)?;
                let Some(header) = row.read_opt_bytes(2)?.map(<[u8]>::to_vec) else {
                    // A legacy row of a table adopted from plaintext (see
                    // `encrypt-column`): no key header and nothing encrypted
                    // yet. A ciphertext without a header fails.
                    let sealed = (0..enc.len())
                        .any(|i| matches!(row.read_opt_bytes(FIRST_ENCRYPTED + i), Ok(Some(_))));
                    if sealed {
                        failed += 1;
                        let error = "a ciphertext without a key header";
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
                    }
                    continue;
                };
                let column_version = read_i64(row, 3)?;
                let mut report = |column: &str, error: String| {
                    failed += 1;
                    ctx.out.emit(
                        json!({"event": "failure", "table": def.table, "tenant": tenant,
                               "primary_key": pk.key_display(), "column": column, "error": error}),
                        || {
                            format!(
                                "FAILED {} primary key {} ({}): {error}",
                                def.table,
                                pk.key_display(),
                                column
                            )
                        },
                    );
                };
                let pkb = match def.primary_key_bytes(&pk) {
                    Ok(b) => b,
                    Err(e) => {
                        report(&def.header_column, super::describe(&e));
                        continue;
                    }
                };
                let envelopes = super::read_envelopes(def, row)?;
                let key = match opener
                    .open_cells(def, &tenant, pkb.as_deref(), &header, &envelopes)
                    .await
                {
                    Ok(k) => k,
                    Err(e) => {
                        report(&def.header_column, super::describe(&e));
                        continue;
                    }
                };
                let expected = match mode {
                    KeyMode::Derived => key.header().tenant_key_version().map_or(-1, i64::from),
                    _ => 0,
                };
                if expected != column_version {
                    report(
                        &def.key_version_column,
                        "the key version column does not match the row's key header".into(),
                    );
                }
                let mut plain: Vec<Option<zeroize::Zeroizing<Vec<u8>>>> = vec![None; enc.len()];
                let mut opened = vec![true; enc.len()];
                for (i, (name, env)) in names.iter().zip(&envelopes).enumerate() {
                    if let Some(env) = env {
                        match rowseal_sqlx::encoding::open_encoded(&key, *name, env)
                            .map(zeroize::Zeroizing::new)
                        {
                            Ok(pt) => {
                                if indexes.covered_encrypted[i] {
                                    plain[i] = Some(pt);
                                }
                            }
                            Err(e) => {
                                opened[i] = false;
                                report(name.column, super::describe(&e));
                            }
                        }
                    }
                }
                if !indexes.is_empty() {
                    let fails = indexes
                        .check_row(&keys.hierarchy, &tenant, row, &plain, &opened)
                        .await;
                    for f in fails {
                        failed += 1;
                        index_failures += 1;
                        ctx.out.emit(
                            json!({"event": "failure", "table": def.table, "tenant": tenant,
                                   "primary_key": pk.key_display(), "index": f.index,
                                   "column": f.column, "error": f.error}),
                            || {
                                format!(
                                    "FAILED {} primary key {} (blind index {}, column {}): {}",
                                    def.table,
                                    pk.key_display(),
                                    f.index,
                                    f.column,
                                    f.error
                                )
                            },
                        );
                    }
                }
            }
            checked += rows.len() as u64;
            progress.add(rows.len() as u64);
        }
        for (name, st) in &indexes.stats {
            index_report.push(
                json!({"table": def.table, "index": name, "values_checked": st.checked,
                                     "rows_not_indexed": st.not_indexed, "failures": st.failures}),
            );
        }
    }
    progress.finish(handle).await;
    let unchecked = not_checked.len();
    ctx.out.emit(
        json!({"event": "done", "command": "verify", "rows": checked, "failures": failed,
               "index_failures": index_failures, "indexes": index_report,
               "indexes_not_checked": not_checked, "provider_calls": keys.calls()}),
        || {
            let mut line = format!(
                "verify: {checked} rows checked, {failed} failures ({index_failures} in blind indexes), {} key-provider calls",
                keys.counter.counts().total()
            );
            for i in &index_report {
                line.push_str(&format!(
                    "\n  index {}.{}: {} values checked, {} rows not indexed yet, {} failures",
                    i["table"].as_str().unwrap_or(""),
                    i["index"].as_str().unwrap_or(""),
                    i["values_checked"],
                    i["rows_not_indexed"],
                    i["failures"]
                ));
            }
            if unchecked > 0 {
                line.push_str(&format!("\n  {unchecked} blind index(es) NOT CHECKED (see above)"));
            }
            line
        },
    );
    Ok(if failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failures
    })
}
