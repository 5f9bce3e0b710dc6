//! `rowseal decrypt-column --table T --column C --into P`: the way back to
//! plaintext. Copies the decrypted value of encrypted column C into the
//! plaintext column P (which the DBA creates with the right type first), a
//! batch at a time in primary-key order, each row written with a
//! compare-and-swap on its key header and on C, so a row the application
//! changed meanwhile is read again, never overwritten with a stale value.
//! Rows whose P is already set are skipped, so a killed run is resumed by
//! running it again. C is left in place (drop it once the application reads
//! P).
//!
//! The value is decoded with rowseal-sqlx's value codec
//! (`rowseal_sqlx::encoding::decode`): text, bytes, booleans, signed integers
//! up to 64 bits, floats, UUIDs and JSON (as text). Other types (dates, times,
//! unsigned and 128-bit integers) are reported as failures, by primary key.

use rowseal_sqlx::{DbRow, Value};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Ctx, RowOpener};
use crate::db::{ident, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::jobs;
use crate::output::Progress;
use crate::registry;
use crate::scan::{BatchScanner, RowId};
use crate::write::RowWrite;

/// Decodes rowseal's value encoding into a SQL value, for the types that
/// map onto one without loss (rowseal-sqlx's value codec).
fn decode(bytes: &[u8]) -> std::result::Result<Value, &'static str> {
    rowseal_sqlx::encoding::decode(bytes)?
        .into_sql_value()
        .ok_or("this value type is not supported by decrypt-column")
}

pub async fn run<D: CliDb>(
    ctx: &Ctx<D>,
    table: &str,
    column: &str,
    into: &str,
    dry_run: bool,
) -> Result<ExitCode> {
    let mut conn = ctx.conn().await?;
    let def = registry::tables::<D>(&mut conn, &[table.to_owned()])
        .await?
        .pop()
        .ok_or_else(|| CliError::config(format!("table {table} is not registered")))?;
    // Where the column is among the encrypted ones (all of them are read: a
    // format 2 row opens with the set of its present fields).
    let at = def
        .encrypted_columns()
        .iter()
        .position(|e| *e == column)
        .ok_or_else(|| {
            CliError::config(format!("{column} is not an encrypted column of {table}"))
        })?;
    let name = def.encrypted_field_names()[at];
    if def.fields.iter().any(|f| f.column == into) {
        return Err(CliError::config(format!(
            "{into} is a column of the model; decrypt into a new plaintext column"
        )));
    }
    let keys = ctx.keys().await?;
    let mut opener = RowOpener::new(keys.hierarchy.clone());
    let (c, p) = (ident::<D>(column), ident::<D>(into));
    // The values still to copy, in primary-key order.
    let mut scan = BatchScanner::<D>::new(
        &def,
        registry::select_list::<D>(&def),
        ctx.settings.batch_size,
    )
    .filter(format!("{c} IS NOT NULL AND {p} IS NULL"), vec![]);
    let total = scan.remaining(&mut conn).await?;
    if dry_run {
        ctx.out.emit(
            json!({"event": "plan", "command": "decrypt-column", "table": table, "column": column,
                   "into": into, "rows": total}),
            || format!("would decrypt {total} values of {table}.{column} into {into}"),
        );
        return Ok(ExitCode::Ok);
    }
    let job = jobs::create::<D>(
        &mut conn,
        "decrypt-column",
        &json!({"table": table, "column": column, "into": into}),
    )
    .await?;
    let (progress, handle) = Progress::start(ctx.out, job.clone(), total);
    let (mut done, mut failed, mut conflicts) = (0u64, 0u64, 0u64);
    loop {
        let rows = scan.next(&mut conn).await?;
        if rows.is_empty() {
            break;
        }
        let mut writes = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = RowId::read(&def, row)?;
            let pk = id.key.clone();
            let tenant = registry::read_tenant(&def, row, 1)?;
            let header = row.read_bytes(2)?.to_vec();
            let envelopes = super::read_envelopes(&def, row)?;
            let Some(envelope) = envelopes[at].clone() else {
                continue;
            };
            let mut report = |error: String| {
                failed += 1;
                ctx.out.emit(
                    json!({"event": "failure", "table": table, "tenant": tenant,
                           "primary_key": pk.key_display(), "column": column, "error": error}),
                    || format!("FAILED {table} primary key {}: {error}", pk.key_display()),
                );
            };
            let pkb = match def.primary_key_bytes(&pk) {
                Ok(b) => b,
                Err(e) => {
                    report(e.to_string());
                    continue;
                }
            };
            let plain = match opener
                .open_cells(&def, &tenant, pkb.as_deref(), &header, &envelopes)
                .await
                .and_then(|k| rowseal_sqlx::encoding::open_encoded(&k, name, &envelope))
            {
                Ok(p) => Zeroizing::new(p),
                Err(e) => {
                    report(e.to_string());
                    continue;
                }
            };
            let value = match decode(&plain) {
                Ok(v) => v,
                Err(e) => {
                    report(e.to_owned());
                    continue;
                }
            };
            // The row by its identity (key and tenant), with a
            // compare-and-swap on its header and ciphertext.
            let [key, tenant_value] = id.match_binds()?;
            writes.push(
                RowWrite::new(key, tenant_value)
                    .set(into, value)
                    .expect(&def.header_column, Some(Value::Bytes(header)))
                    .expect(column, Some(Value::Bytes(envelope))),
            );
        }
        let mut tx = ctx.pool.begin_with(D::BEGIN).await?;
        let (batch_done, changed) =
            crate::write::write_counted::<D>(&mut *tx, &def, writes).await?;
        // A row changed by the application since it was read still matches
        // `P IS NULL`: the next run picks it up.
        conflicts += changed;
        if batch_done > 0 {
            jobs::add_progress::<D>(&mut *tx, &job, batch_done).await?;
        }
        tx.commit().await?;
        done += batch_done;
        progress.add(batch_done);
    }
    progress.finish(handle).await;
    let state = if failed == 0 { "done" } else { "failed" };
    let summary = json!({"decrypted": done, "failed": failed, "conflicts": conflicts});
    jobs::finish::<D>(&mut conn, &job, state, &summary).await?;
    ctx.out.emit(
        json!({"event": "done", "command": "decrypt-column", "job": job, "table": table,
               "column": column, "into": into, "decrypted": done, "failed": failed,
               "changed_meanwhile": conflicts, "provider_calls": keys.calls()}),
        || format!(
            "decrypt-column {table}.{column} -> {into}: {done} values, {failed} failed, {conflicts} changed meanwhile (run again)"
        ),
    );
    Ok(if failed == 0 && conflicts == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failures
    })
}

#[cfg(test)]
mod tests {
    use super::decode;
    use rowseal_sqlx::Value;

    #[test]
    fn decodes_tagged_values() {
        assert_eq!(decode(&[1, 1, b'h', b'i']), Ok(Value::Text("hi".into())));
        assert_eq!(decode(&[1, 7, 0, 0, 0, 0, 0, 0, 1, 2]), Ok(Value::I64(258)));
        assert_eq!(decode(&[1, 3, 1]), Ok(Value::Bool(true)));
        assert!(decode(&[1, 7, 0]).is_err());
        assert!(decode(&[2, 1]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 17, 0, 0, 0, 0]).is_err());
    }
}
