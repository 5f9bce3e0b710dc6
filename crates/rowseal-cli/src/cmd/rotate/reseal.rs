//! The re-seal loop of both key modes: open each row of a batch with its old
//! row key and seal every encrypted field under a new one. The modes differ
//! only in where the new row key comes from ([`NewKeys`]) and in how the rows
//! are written back (see `derived` and `kms`); both write with a
//! compare-and-swap on the old header ([`row_write`]).

use std::sync::Arc;

use rowseal_core::{FieldSet, KeyHierarchy, RecordKeys, RecordSpec, RowKey};
use rowseal_sqlx::encoding::{open_encoded, seal_encoded};
use rowseal_sqlx::{DbRow, SqlType, Value};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cmd::{describe, read_envelopes, RowOpener};
use crate::db::CliDb;
use crate::error::Result;
use crate::registry::{self, read_pk, TableDef};
use crate::scan::RowId;
use crate::write::RowWrite;

/// Where the new row keys of a batch come from.
pub(super) enum NewKeys<'a> {
    /// `derived` mode: the batch holds rows of one tenant, re-sealed under
    /// the record keys of its target tenant-key version.
    Derived {
        tenant: &'a str,
        keys: Arc<RecordKeys>,
    },
    /// `kms` mode: a new provider data key per row (of any tenant).
    Kms {
        hierarchy: &'a KeyHierarchy,
        spec: RecordSpec,
    },
}

impl NewKeys<'_> {
    /// The tenant (canonical id) of a row of `def`'s table (read from the
    /// row in `kms` mode).
    fn tenant_of<R: DbRow>(&self, def: &TableDef, row: &R) -> Result<String> {
        match self {
            NewKeys::Derived { tenant, .. } => Ok((*tenant).to_owned()),
            NewKeys::Kms { .. } => registry::read_tenant(def, row, 1),
        }
    }

    /// A new row key (format 2, whatever the old row's format: this is how
    /// rows move from format 1 to 2), bound to the row's present fields. A
    /// failure (the provider's) ends the job's run: the batch's transaction
    /// rolls back, and nothing is lost.
    async fn new_row(&self, tenant: &str, pk: Option<&[u8]>, present: &FieldSet) -> Result<RowKey> {
        Ok(match self {
            NewKeys::Derived { keys, .. } => keys.new_row(pk, present)?,
            NewKeys::Kms { hierarchy, spec } => {
                hierarchy.new_row_key(spec, tenant, pk, present).await?
            }
        })
    }
}

/// A re-sealed row waiting to be written.
pub(super) struct Resealed {
    pub pk: Value,
    /// The row's tenant, as its tenant column holds it (the bind).
    pub tenant: Value,
    /// The new envelopes (NULL stays NULL), in the order of the table's
    /// encrypted columns.
    pub sealed: Vec<Value>,
    /// The new key header.
    pub header: Vec<u8>,
    /// The header read, for the compare-and-swap.
    pub old_header: Vec<u8>,
}

/// A row that could not be opened: reported once, skipped by this process.
pub(super) struct Failed {
    /// The row (key and tenant).
    pub id: RowId,
    pub tenant: String,
    /// The `failure` event (primary key, column, error; never a value).
    pub event: serde_json::Value,
}

/// Opens every row of a batch (selected with [`TableDef::select_list`]) and
/// seals its fields under a new row key from `new_keys`.
pub(super) async fn reseal<D: CliDb>(
    rows: &[D::Row],
    def: &TableDef,
    pk_type: SqlType,
    opener: &mut RowOpener,
    new_keys: &NewKeys<'_>,
) -> Result<(Vec<Resealed>, Vec<Failed>)> {
    let names = def.encrypted_field_names();
    let mut resealed = Vec::with_capacity(rows.len());
    let mut failures = Vec::new();
    for row in rows {
        let pk = read_pk(row, pk_type)?;
        let tenant = new_keys.tenant_of(def, row)?;
        let header = row.read_bytes(2)?.to_vec();
        let id = RowId::new(def, pk.clone(), &tenant)?;
        let fail = |column: &str, e: &rowseal_core::Error| Failed {
            id: id.clone(),
            tenant: tenant.clone(),
            event: json!({"event": "failure", "table": def.table, "tenant": tenant,
                   "primary_key": pk.key_display(), "column": column, "error": describe(e)}),
        };
        let pkb = match def.primary_key_bytes(&pk) {
            Ok(b) => b,
            Err(e) => {
                failures.push(fail(&def.header_column, &e));
                continue;
            }
        };
        let envelopes = read_envelopes(def, row)?;
        let opened = match def.present_fields(envelopes.iter().map(Option::is_some)) {
            Ok(present) => opener
                .open(def, &tenant, pkb.as_deref(), &header, &present)
                .await
                .map(|k| (k, present)),
            Err(e) => Err(e),
        };
        let (old, present) = match opened {
            Ok(k) => k,
            Err(e) => {
                failures.push(fail(&def.header_column, &e));
                continue;
            }
        };
        let new = new_keys.new_row(&tenant, pkb.as_deref(), &present).await?;
        let mut sealed = Vec::with_capacity(names.len() + 5);
        let mut bad = None;
        for (name, env) in names.iter().zip(&envelopes) {
            let Some(env) = env else {
                sealed.push(Value::Null(SqlType::Bytes));
                continue;
            };
            match open_encoded(&old, *name, env) {
                Ok(pt) => {
                    let pt = Zeroizing::new(pt);
                    sealed.push(Value::Bytes(seal_encoded(&new, *name, &pt)?));
                }
                Err(e) => {
                    bad = Some(fail(name.column, &e));
                    break;
                }
            }
        }
        if let Some(f) = bad {
            failures.push(f);
            continue;
        }
        resealed.push(Resealed {
            pk,
            tenant: registry::bind_tenant(def, &tenant)?,
            sealed,
            header: new.header_bytes(),
            old_header: header,
        });
    }
    Ok((resealed, failures))
}

/// The write of a re-sealed row: its envelopes, header and key version
/// `version`, with a compare-and-swap on the header read.
pub(super) fn row_write(def: &TableDef, enc_cols: &[&str], r: Resealed, version: u32) -> RowWrite {
    let mut w = RowWrite::new(r.pk, r.tenant);
    for (c, v) in enc_cols.iter().zip(r.sealed) {
        w = w.set(c, v);
    }
    w.set(&def.header_column, Value::Bytes(r.header))
        .set(&def.key_version_column, Value::I64(i64::from(version)))
        .expect(&def.header_column, Some(Value::Bytes(r.old_header)))
}
