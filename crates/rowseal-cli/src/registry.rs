//! The schema registry (`rowseal_schema`), read without application code
//! through rowseal-sqlx's typed [`TableSchema`], its one owner.

use rowseal_sqlx::schema::TableSchema;
use rowseal_sqlx::{DbRow, SqlType, Value};

use crate::db::{ident, read_text, CliDb};
use crate::error::{CliError, Result};

/// A registered table, as the commands see it.
pub type TableDef = TableSchema;

/// `SELECT pk, tenant, header, version, enc...` (without FROM); the first
/// encrypted column is at [`FIRST_ENCRYPTED`].
pub fn select_list<D: CliDb>(def: &TableDef) -> String {
    let mut cols = vec![
        ident::<D>(&def.primary_key),
        ident::<D>(&def.tenant),
        ident::<D>(&def.header_column),
        ident::<D>(&def.key_version_column),
    ];
    cols.extend(def.encrypted_columns().iter().map(|c| ident::<D>(c)));
    cols.join(", ")
}

/// Index of the first encrypted column in [`select_list`].
pub const FIRST_ENCRYPTED: usize = 4;

/// Every registered table (or those named), sorted by name.
pub async fn tables<D: CliDb>(conn: &mut D::Connection, only: &[String]) -> Result<Vec<TableDef>> {
    let mut out = rowseal_sqlx::schema::registered_tables::<D>(conn)
        .await
        .map_err(|e| match e {
            rowseal_sqlx::Error::Schema { .. }
            | rowseal_sqlx::Error::UnsupportedRegistryFormat { .. } => {
                CliError::config(format!("rowseal_schema: {e}"))
            }
            e => e.into(),
        })?;
    if !only.is_empty() {
        out.retain(|d| only.contains(&d.table));
    }
    for t in only {
        if !out.iter().any(|d| &d.table == t) {
            return Err(CliError::config(format!(
                "table {t} is not in the schema registry (rowseal_schema)"
            )));
        }
    }
    Ok(out)
}

/// The current (highest active) tenant-key version of every tenant, and the
/// tenants whose latest key is destroyed.
pub async fn tenant_versions<D: CliDb>(
    conn: &mut D::Connection,
) -> Result<(std::collections::BTreeMap<String, u32>, Vec<String>)> {
    let rows = D::fetch_all_on(
        conn,
        "SELECT tenant, version, state FROM rowseal_keys WHERE purpose = 'tenant' AND scope_kind = 'tenant' ORDER BY tenant, version",
        vec![],
    )
    .await?;
    let mut latest: std::collections::BTreeMap<String, (u32, bool)> = Default::default();
    for row in &rows {
        let tenant = read_text(row, 0)?;
        let version = u32::try_from(crate::db::read_i64(row, 1)?)
            .map_err(|_| CliError::db("rowseal_keys: version out of range"))?;
        let active = read_text(row, 2)? == "active";
        latest.insert(tenant, (version, active));
    }
    let mut current = std::collections::BTreeMap::new();
    let mut destroyed = Vec::new();
    for (t, (v, active)) in latest {
        if active {
            current.insert(t, v);
        } else {
            destroyed.push(t);
        }
    }
    Ok((current, destroyed))
}

/// Reads the primary key of a row selected with [`TableDef::select_list`].
pub fn read_pk<R: DbRow>(row: &R, t: SqlType) -> Result<Value> {
    let v = row.read_value(0, t)?;
    if v.is_null() {
        return Err(CliError::db("a primary key is NULL"));
    }
    Ok(v)
}

/// The index-key version every row should hold per scope (`""` for the
/// global key, else the tenant): the pending version during a rotation, else
/// the highest active one.
pub async fn index_versions<D: CliDb>(
    conn: &mut D::Connection,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let rows = D::fetch_all_on(
        conn,
        "SELECT scope_kind, tenant, MAX(version) FROM rowseal_keys WHERE purpose = 'index' AND state IN ('active', 'pending') GROUP BY scope_kind, tenant",
        vec![],
    )
    .await?;
    let mut out = std::collections::BTreeMap::new();
    for r in &rows {
        let kind = read_text(r, 0)?;
        let tenant = read_text(r, 1)?;
        let key = if kind == "global" {
            String::new()
        } else {
            tenant
        };
        out.insert(key, crate::db::read_i64(r, 2)?);
    }
    Ok(out)
}
