//! The schema registry (`rowseal_schema`), read without application code
//! through rowseal-sqlx's typed [`TableSchema`], its one owner.
//!
//! Tenants: a model's tenant column may be text, a UUID or an integer, and
//! every tenant has one canonical id (text), the one `rowseal_keys` keys it
//! by and the command line names it by. The library owns the rules between
//! the two ([`TableSchema::tenant_type`], [`TableSchema::tenant_value`],
//! [`DbRow::read_tenant`]); the helpers here only call them, so that the
//! tool reads and binds a tenant exactly as the application does.

use rowseal_sqlx::schema::TableSchema;
use rowseal_sqlx::{DbRow, SqlType, TenantField, Value};

use crate::db::{exact_ph, ident, ph, read_i64, read_text, CliDb};
use crate::error::{CliError, ExitCode, Result};

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

/// Reads the tenant column of a row of `def`'s table (at `idx`) as the
/// tenant's canonical id ([`DbRow::read_tenant`]), whatever the column's
/// type: the id `rowseal_keys` and the key hierarchy know the tenant by.
pub fn read_tenant<R: DbRow>(def: &TableDef, row: &R, idx: usize) -> Result<String> {
    row.read_tenant(idx, def.tenant_type())
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| {
            CliError::db(format!(
                "{}.{}: cannot read the tenant: {e}",
                def.table, def.tenant
            ))
        })
}

/// The placeholder `n` for a tenant compared with `def`'s tenant column: a
/// text tenant byte for byte whatever the column's collation ([`exact_ph`]:
/// `ACME` is not `acme`), any other type by value (on MySQL/MariaDB a UUID
/// column is `BINARY(16)` and an integer must not be compared as
/// `BINARY ?`).
pub fn tenant_ph<D: CliDb>(def: &TableDef, n: usize) -> String {
    if def.tenant_type() == SqlType::Text {
        exact_ph::<D>(n)
    } else {
        ph::<D>(n)
    }
}

/// `<tenant column> = <placeholder n>` and the value to bind to it, for the
/// rows of `def`'s table that belong to tenant `id` (a canonical id, bound
/// as [`TableSchema::tenant_value`] gives it). `None` when `id` is the
/// canonical id of no value of the column's type (`"acme"` against a UUID
/// column, `"042"` against an integer one): no row of this table belongs to
/// that tenant, and the caller has nothing to do here.
pub fn tenant_filter<D: CliDb>(def: &TableDef, id: &str, n: usize) -> Option<(String, Value)> {
    let value = def.tenant_value(id)?;
    Some((
        format!("{} = {}", ident::<D>(&def.tenant), tenant_ph::<D>(def, n)),
        value,
    ))
}

/// The value to bind for tenant `id` read from `def`'s own tenant column
/// ([`read_tenant`]), so canonical for it; anything else is a bug.
pub fn bind_tenant(def: &TableDef, id: &str) -> Result<Value> {
    def.tenant_value(id).ok_or_else(|| {
        CliError::new(
            ExitCode::Internal,
            format!(
                "{}: a tenant read from the table is no canonical id of its {} tenant column",
                def.table,
                def.tenant_type().as_str()
            ),
        )
    })
}

/// Checks a tenant id given on the command line (`--tenant`). An id that is
/// the canonical id of no value of any of `tables`' tenant columns (an
/// uppercase or braced UUID, `042`, `acme` where every tenant is a UUID)
/// names no row, and — unless `rowseal_keys` holds tenant keys under exactly
/// that text — no key either: acting on it would do nothing and report
/// success, so it is refused (a usage error, exit 2), with the canonical
/// form when the text parses as one. An id some table can hold passes; the
/// commands then skip the tables that cannot (its rows are elsewhere).
pub async fn check_tenant_arg<D: CliDb>(
    conn: &mut D::Connection,
    tables: &[TableDef],
    id: &str,
) -> Result<()> {
    if tables.is_empty() || tables.iter().any(|d| d.tenant_value(id).is_some()) {
        return Ok(());
    }
    let sql = format!(
        "SELECT COUNT(*) FROM rowseal_keys WHERE scope_kind = 'tenant' AND tenant = {}",
        exact_ph::<D>(1)
    );
    let keys = D::fetch_all_on(conn, &sql, vec![Value::Text(id.to_owned())])
        .await?
        .first()
        .map(|r| read_i64(r, 0))
        .transpose()?
        .unwrap_or(0);
    if keys > 0 {
        return Ok(());
    }
    let columns: Vec<String> = tables
        .iter()
        .map(|d| format!("{}.{} ({})", d.table, d.tenant, d.tenant_type().as_str()))
        .collect();
    let hint = canonical_hint(tables, id)
        .map(|c| format!("; did you mean {c}?"))
        .unwrap_or_default();
    Err(CliError::new(
        ExitCode::Usage,
        format!(
            "tenant {id} is not the id of any tenant of the registered tables and has no keys: tenant columns {}; a UUID tenant is written lowercase and hyphenated, an integer tenant in plain decimal{hint}",
            columns.join(", ")
        ),
    ))
}

/// The canonical id (the library's [`TenantField::tenant_id`]) of what
/// `id` spells loosely (an uppercase or braced UUID, `+42`, `042`), if some
/// table's tenant column takes that id.
fn canonical_hint(tables: &[TableDef], id: &str) -> Option<String> {
    let loose = id.trim();
    let candidates = [
        uuid::Uuid::parse_str(loose)
            .ok()
            .map(|u| u.tenant_id().into_owned()),
        loose
            .parse::<i64>()
            .ok()
            .map(|v| v.tenant_id().into_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|c| c != id && tables.iter().any(|d| d.tenant_value(c).is_some()))
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
