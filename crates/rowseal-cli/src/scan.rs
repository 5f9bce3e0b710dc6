//! Batch scans of a registered table: the one place that builds the paged
//! query every batch command runs,
//!
//! ```text
//! SELECT <select> FROM <table>
//!  WHERE (<filter>) [AND <not skipped>] [AND <after the cursor>]
//!  [ORDER BY <row order>] LIMIT <batch> [<claim>]
//! ```
//!
//! and the identity of a row ([`RowId`]) that its cursor, its skip list and
//! every statement that writes one row use.
//!
//! Two ways to page:
//! - keyset (the default): rows in primary-key order, each batch after the
//!   last row of the one before (or of a checkpoint, [`after`]);
//! - draining ([`draining`]): no order and no cursor, for a filter that the
//!   batch's own writes make false (`rows not on key version N yet`), so
//!   each batch simply takes the next rows still matching.
//!
//! Row identity. In an ordinary table the key column is the primary key: a
//! row is its key, pages are `ORDER BY <key>` after `<key> > $last`, and
//! rows are skipped with `<key> NOT IN (...)`. A table whose primary key is
//! `(tenant, key)` ([`TableDef::tenant_in_primary_key`]) may hold the same
//! key under several tenants: a row is the pair, pages are
//! `ORDER BY <tenant>, <key>` after the row-value comparison
//! `(<tenant>, <key>) > ($t, $k)` (PostgreSQL, SQLite) or its expanded form
//! `(<tenant> > ? OR (<tenant> = ? AND <key> > ?))` (MySQL/MariaDB): each
//! the form its database runs as a range scan of the primary-key index. Rows
//! are skipped with `NOT ((<key> = $k AND <tenant> = $t) OR ...)`.
//!
//! The select list of a scan (the contract every caller keeps): the key
//! column first (column 0), then the tenant column (column 1) —
//! [`registry::select_list`] does. An ordinary table's cursor reads column 0
//! only; a composite table's reads both.
//!
//! [`after`]: BatchScanner::after
//! [`draining`]: BatchScanner::draining

use std::marker::PhantomData;

use rowseal_sqlx::{DbRow, SqlType, TenantField, Value};
use serde_json::json;

use crate::db::{ident, ph, read_i64, CliDb};
use crate::error::{CliError, ExitCode, Result};
use crate::registry::{self, read_pk, TableDef};

/// The identity of one row: its key and its tenant (as bound against the
/// tenant column, see [`registry::bind_tenant`]). In a table whose primary
/// key is `(tenant, key)` the key alone names a row per tenant only, so the
/// tenant is part of the identity; in an ordinary table it is not needed to
/// find the row, but is matched too where it is known (a single-row write
/// never reaches another tenant's row).
#[derive(Debug, Clone, PartialEq)]
pub struct RowId {
    /// The key column's value.
    pub key: Value,
    /// The tenant column's value; `None` only for a cursor of an ordinary
    /// table (a scan's, or a checkpoint's), which never needs it.
    pub tenant: Option<Value>,
}

impl RowId {
    /// The identity of a row selected by the scan contract (the key at
    /// column 0, the tenant at column 1), read whatever the table's key.
    pub fn read<R: DbRow>(def: &TableDef, row: &R) -> Result<RowId> {
        let key = read_pk(row, def.primary_key_type)?;
        let tenant = registry::read_tenant(def, row, 1)?;
        Ok(RowId {
            key,
            tenant: Some(registry::bind_tenant(def, &tenant)?),
        })
    }

    /// The identity of a row whose key and tenant (canonical id, as
    /// [`registry::read_tenant`] gives it) are already read.
    pub fn new(def: &TableDef, key: Value, tenant: &str) -> Result<RowId> {
        Ok(RowId {
            key,
            tenant: Some(registry::bind_tenant(def, tenant)?),
        })
    }

    /// A scan's cursor from a row: the key, and the tenant where the table's
    /// primary key includes it.
    fn cursor<R: DbRow>(def: &TableDef, row: &R) -> Result<RowId> {
        if def.tenant_in_primary_key {
            Self::read(def, row)
        } else {
            Ok(RowId {
                key: read_pk(row, def.primary_key_type)?,
                tenant: None,
            })
        }
    }

    /// The identity a [`crate::write::RowWrite`] is given: the key, then the tenant. An identity
    /// without its tenant matches no row (an internal error, never a write
    /// to the rows of every tenant holding the key).
    pub fn match_binds(&self) -> Result<[Value; 2]> {
        match &self.tenant {
            Some(t) => Ok([self.key.clone(), t.clone()]),
            None => Err(CliError::new(
                ExitCode::Internal,
                "a row is identified without its tenant",
            )),
        }
    }

    /// A stable text for the identity (deduplicating reports): the tenant's
    /// canonical id, if known, and the key.
    pub fn display(&self) -> String {
        match self.tenant.as_ref().and_then(tenant_id_of) {
            Some(t) => format!("{t}/{}", self.key.key_display()),
            None => self.key.key_display(),
        }
    }
}

/// The rows among `ids` (`negate`: the others), binds appended to
/// `values`: `<key> [NOT] IN (...)` in an ordinary table;
/// `[NOT] ((<key> = $k AND <tenant> = $t) OR ...)` in a table whose primary
/// key is `(tenant, key)` (an identity without its tenant there, which no
/// caller makes, stands for its key under every tenant). `1 = 0` (or
/// `1 = 1`) when `ids` is empty.
pub fn among<D: CliDb>(
    def: &TableDef,
    ids: &[RowId],
    values: &mut Vec<Value>,
    negate: bool,
) -> String {
    if ids.is_empty() {
        return if negate { "1 = 1" } else { "1 = 0" }.to_owned();
    }
    let key = ident::<D>(&def.primary_key);
    let not = if negate { "NOT " } else { "" };
    if !def.tenant_in_primary_key {
        let list: Vec<String> = ids
            .iter()
            .map(|id| {
                values.push(id.key.clone());
                ph::<D>(values.len())
            })
            .collect();
        return format!("{key} {not}IN ({})", list.join(", "));
    }
    let tenant = ident::<D>(&def.tenant);
    let alternatives: Vec<String> = ids
        .iter()
        .map(|id| {
            values.push(id.key.clone());
            let is_key = format!("{key} = {}", ph::<D>(values.len()));
            match &id.tenant {
                Some(t) => {
                    values.push(t.clone());
                    format!(
                        "({is_key} AND {tenant} = {})",
                        registry::tenant_ph::<D>(def, values.len())
                    )
                }
                None => is_key,
            }
        })
        .collect();
    format!("{not}({})", alternatives.join(" OR "))
}

/// The canonical id of a tenant bound as a tenant column's value (the
/// library's rule, [`TenantField::tenant_id`]).
fn tenant_id_of(v: &Value) -> Option<String> {
    Some(match v {
        Value::Text(s) => s.tenant_id().into_owned(),
        Value::I64(i) => i.tenant_id().into_owned(),
        Value::I32(i) => i.tenant_id().into_owned(),
        Value::Uuid(u) => u.tenant_id().into_owned(),
        _ => return None,
    })
}

/// A paged scan of one table. The selected columns start with the key, then
/// the tenant (see the module's documentation).
pub struct BatchScanner<'a, D: CliDb> {
    def: &'a TableDef,
    select: String,
    filter: Option<(String, Vec<Value>)>,
    skip: Vec<RowId>,
    batch: usize,
    keyset: bool,
    claim: &'static str,
    last: Option<RowId>,
    /// The last batch's cursor could not be read: reported by the next
    /// batch (the rows of the batch are the caller's to handle first).
    cursor_error: Option<CliError>,
    _db: PhantomData<fn() -> D>,
}

impl<'a, D: CliDb> BatchScanner<'a, D> {
    /// A keyset scan of every row of `def`'s table, `batch` rows at a time,
    /// selecting `select` (SQL, the key first, then the tenant).
    pub fn new(def: &'a TableDef, select: impl Into<String>, batch: usize) -> Self {
        BatchScanner {
            def,
            select: select.into(),
            filter: None,
            skip: Vec::new(),
            batch,
            keyset: true,
            claim: "",
            last: None,
            cursor_error: None,
            _db: PhantomData,
        }
    }

    /// Only the rows matching `sql`, whose placeholders are numbered from 1
    /// and bound to `binds`.
    pub fn filter(mut self, sql: impl Into<String>, binds: Vec<Value>) -> Self {
        self.filter = Some((sql.into(), binds));
        self
    }

    /// Starts after row `last` (a checkpoint; `None`: from the start). In a
    /// table whose primary key is `(tenant, key)` the cursor must hold the
    /// tenant (without it, the scan would restart from the first row of the
    /// key under every tenant: callers refuse such a checkpoint).
    pub fn after(mut self, last: Option<RowId>) -> Self {
        self.last = last;
        self
    }

    /// Appends `clause` to each batch's SELECT to lock its rows
    /// ([`CliDb::CLAIM`], or ` FOR UPDATE`).
    pub fn claim(mut self, clause: &'static str) -> Self {
        self.claim = clause;
        self
    }

    /// Pages without order or cursor: each batch takes rows still matching
    /// the filter (which the caller's writes make false).
    pub fn draining(mut self) -> Self {
        self.keyset = false;
        self
    }

    /// Leaves these rows out from now on (rows this process failed).
    pub fn skip(&mut self, ids: Vec<RowId>) {
        self.skip = ids;
    }

    /// The last row of the batches so far (or the checkpoint).
    pub fn last(&self) -> Option<&RowId> {
        self.last.as_ref()
    }

    /// The WHERE clause (with its leading space, empty if none) and binds.
    fn conditions(&self) -> (String, Vec<Value>) {
        let mut conds = Vec::new();
        let mut values = Vec::new();
        if let Some((sql, binds)) = &self.filter {
            conds.push(format!("({sql})"));
            values.extend(binds.iter().cloned());
        }
        if !self.skip.is_empty() {
            conds.push(among::<D>(self.def, &self.skip, &mut values, true));
        }
        if self.keyset {
            if let Some(last) = &self.last {
                conds.push(self.after_condition(last, &mut values));
            }
        }
        if conds.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", conds.join(" AND ")), values)
        }
    }

    /// The rows after `last` in the scan's order, binds appended. After a
    /// `(tenant, key)` cursor, the form each database runs as a range scan
    /// of the primary-key index (from the cursor on, not from the table's
    /// first row): the row-value comparison `(tenant, key) > ($t, $k)` on
    /// PostgreSQL and SQLite (which filter the expanded form below instead,
    /// from the first row or the cursor's tenant on), its expanded form
    /// `(tenant > ? OR (tenant = ? AND key > ?))` on MySQL/MariaDB (which
    /// range-scans that, and not the row value).
    ///
    /// The tenant is compared here under the column's own collation (a plain
    /// placeholder, not the byte-exact one of equality filters), the one
    /// `ORDER BY` sorts by: a byte-wise comparison against a
    /// case-insensitive order (MariaDB's default) would skip rows. The
    /// primary key is unique under that same collation, so the order is
    /// total and every row comes exactly once.
    fn after_condition(&self, last: &RowId, values: &mut Vec<Value>) -> String {
        let key = ident::<D>(&self.def.primary_key);
        match (&last.tenant, self.def.tenant_in_primary_key) {
            (Some(tenant_value), true) => {
                let tenant = ident::<D>(&self.def.tenant);
                values.push(tenant_value.clone());
                let t = ph::<D>(values.len());
                if D::DIALECT == "mysql" {
                    values.push(tenant_value.clone());
                    let eq = ph::<D>(values.len());
                    values.push(last.key.clone());
                    let k = ph::<D>(values.len());
                    format!("({tenant} > {t} OR ({tenant} = {eq} AND {key} > {k}))")
                } else {
                    values.push(last.key.clone());
                    let k = ph::<D>(values.len());
                    format!("({tenant}, {key}) > ({t}, {k})")
                }
            }
            _ => {
                values.push(last.key.clone());
                format!("{key} > {}", ph::<D>(values.len()))
            }
        }
    }

    /// The next batch's query and binds.
    pub fn query(&self) -> (String, Vec<Value>) {
        let (conds, values) = self.conditions();
        let order = if !self.keyset {
            String::new()
        } else if self.def.tenant_in_primary_key {
            format!(
                " ORDER BY {}, {}",
                ident::<D>(&self.def.tenant),
                ident::<D>(&self.def.primary_key)
            )
        } else {
            format!(" ORDER BY {}", ident::<D>(&self.def.primary_key))
        };
        let sql = format!(
            "SELECT {} FROM {}{conds}{order} LIMIT {}{}",
            self.select,
            ident::<D>(&self.def.table),
            self.batch,
            self.claim
        );
        (sql, values)
    }

    /// Reads the next batch on `conn` (a connection or a transaction); empty
    /// when the scan is over.
    pub async fn next(&mut self, conn: &mut D::Connection) -> Result<Vec<D::Row>> {
        if let Some(e) = self.cursor_error.take() {
            return Err(e);
        }
        let (sql, values) = self.query();
        let rows = D::fetch_all_on(conn, &sql, values).await?;
        if self.keyset {
            if let Some(row) = rows.last() {
                match RowId::cursor(self.def, row) {
                    Ok(id) => self.last = Some(id),
                    Err(e) => self.cursor_error = Some(e),
                }
            }
        }
        Ok(rows)
    }

    /// How many rows the scan has still to visit (`COUNT(*)` of its WHERE
    /// clause; the batch size and claim do not apply).
    pub async fn remaining(&self, conn: &mut D::Connection) -> Result<u64> {
        let (conds, values) = self.conditions();
        let sql = format!(
            "SELECT COUNT(*) FROM {}{conds}",
            ident::<D>(&self.def.table)
        );
        let rows = D::fetch_all_on(conn, &sql, values).await?;
        let n = rows
            .first()
            .map(|r| read_i64(r, 0))
            .transpose()?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The rows `rowseal rotate` re-seals on a `derived`-mode table: those of
/// `tenant` not on tenant-key version `target` yet but `failed`,
/// `<tenant> = ? AND rowseal_key_version < ? [AND <not failed>]`, drained
/// (no order, no cursor: a row leaves the set when it is re-sealed), `batch`
/// at a time; the caller adds the claim. The predicate must stay a range of
/// the `(tenant, rowseal_key_version)` index: `tests/explain.rs` checks its
/// plan. `None` when `def`'s tenant column cannot hold `tenant` (no row to
/// do). `rowseal rotate` (derived mode) scans with it.
pub(crate) fn rotation_scan<'a, D: CliDb>(
    def: &'a TableDef,
    tenant: &str,
    target: u32,
    failed: Vec<RowId>,
    batch: usize,
) -> Option<BatchScanner<'a, D>> {
    let (is_tenant, tenant_value) = registry::tenant_filter::<D>(def, tenant, 1)?;
    let filter = format!(
        "{is_tenant} AND {} < {}",
        ident::<D>(&def.key_version_column),
        ph::<D>(2)
    );
    let binds = vec![tenant_value, Value::I64(i64::from(target))];
    let mut scan = BatchScanner::new(def, registry::select_list::<D>(def), batch)
        .filter(filter, binds)
        .draining();
    scan.skip(failed);
    Some(scan)
}

/// The claim query of one [`rotation_scan`] batch (no failed rows) with
/// [`CliDb::CLAIM`], and its binds, on `dialect` (`"postgres"`, `"mysql"`,
/// `"sqlite"`; `None` for another, or when `def`'s tenant column cannot hold
/// `tenant`). For tests that `EXPLAIN` it.
#[doc(hidden)]
pub fn __rotation_claim_query(
    dialect: &str,
    def: &TableDef,
    tenant: &str,
    target: u32,
    batch: usize,
) -> Option<(String, Vec<Value>)> {
    fn query<D: CliDb>(
        def: &TableDef,
        tenant: &str,
        target: u32,
        batch: usize,
    ) -> Option<(String, Vec<Value>)> {
        let scan = rotation_scan::<D>(def, tenant, target, Vec::new(), batch)?;
        Some(scan.claim(D::CLAIM).query())
    }
    match dialect {
        "postgres" => query::<sqlx::Postgres>(def, tenant, target, batch),
        "mysql" => query::<sqlx::MySql>(def, tenant, target, batch),
        "sqlite" => query::<sqlx::Sqlite>(def, tenant, target, batch),
        _ => None,
    }
}

/// A primary key as JSON, as checkpoints store it.
pub fn pk_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::I16(i) => json!(i),
        Value::I32(i) => json!(i),
        Value::I64(i) => json!(i),
        Value::Text(s) => json!(s),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Bytes(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        _ => serde_json::Value::Null,
    }
}

/// A checkpoint's primary key back as a value of type `t`.
pub fn pk_from_json(j: &serde_json::Value, t: SqlType) -> Option<Value> {
    Some(match t {
        SqlType::I16 => Value::I16(i16::try_from(j.as_i64()?).ok()?),
        SqlType::I32 => Value::I32(i32::try_from(j.as_i64()?).ok()?),
        SqlType::I64 => Value::I64(j.as_i64()?),
        SqlType::Text => Value::Text(j.as_str()?.to_owned()),
        SqlType::Uuid => Value::Uuid(j.as_str()?.parse().ok()?),
        SqlType::Bytes => {
            let s = j.as_str()?;
            if s.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect();
            Value::Bytes(bytes?)
        }
        _ => return None,
    })
}

/// A cursor as a checkpoint stores it: `{"after": <key>}`, and in a table
/// whose primary key is `(tenant, key)` also `"after_tenant": <the tenant's
/// canonical id>`. `{"after": null}` for no cursor.
pub fn cursor_to_json(def: &TableDef, last: Option<&RowId>) -> serde_json::Value {
    let Some(last) = last else {
        return json!({ "after": null });
    };
    let mut out = json!({ "after": pk_to_json(&last.key) });
    if def.tenant_in_primary_key {
        if let Some(t) = last.tenant.as_ref().and_then(tenant_id_of) {
            out["after_tenant"] = json!(t);
        }
    }
    out
}

/// Why a checkpoint's cursor cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// A value is not of the column's type.
    NotUnderstood,
    /// A cursor of a table whose primary key is `(tenant, key)` without its
    /// tenant: resuming from the key alone would skip or redo rows.
    NoTenant,
}

/// A checkpoint entry's cursor ([`cursor_to_json`]) back: `Ok(None)` when it
/// has none (the walk has not started).
pub fn cursor_from_json(
    def: &TableDef,
    entry: &serde_json::Value,
) -> std::result::Result<Option<RowId>, CursorError> {
    if entry["after"].is_null() {
        return Ok(None);
    }
    let key =
        pk_from_json(&entry["after"], def.primary_key_type).ok_or(CursorError::NotUnderstood)?;
    let tenant = if def.tenant_in_primary_key {
        let tenant = &entry["after_tenant"];
        if tenant.is_null() {
            return Err(CursorError::NoTenant);
        }
        let id = tenant.as_str().ok_or(CursorError::NotUnderstood)?;
        Some(def.tenant_value(id).ok_or(CursorError::NotUnderstood)?)
    } else {
        None
    };
    Ok(Some(RowId { key, tenant }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def_of(composite: bool, tenant_type: &str) -> TableDef {
        let field = |name: &str, sql_type: &str| json!({"name": name, "column": name, "sql_type": sql_type, "nullable": false});
        let mut entry = json!({
            "format": if composite { 2 } else { 1 },
            "record_type": "person", "table": "people", "key_mode": "derived",
            "bind_primary_key": true, "tenant": "tenant_id", "primary_key": "id",
            "primary_key_type": "i64",
            "fields": [field("id", "i64"), field("tenant_id", tenant_type)]
        });
        if composite {
            entry["tenant_in_primary_key"] = json!(true);
        }
        TableDef::from_registry_json("people", &entry.to_string()).unwrap()
    }

    fn def() -> TableDef {
        def_of(false, "text")
    }

    fn key(k: i64) -> RowId {
        RowId {
            key: Value::I64(k),
            tenant: None,
        }
    }

    fn id(t: &str, k: i64) -> RowId {
        RowId {
            key: Value::I64(k),
            tenant: Some(Value::Text(t.into())),
        }
    }

    #[test]
    fn builds_keyset_and_draining_queries() {
        let def = def();
        let s = BatchScanner::<sqlx::Postgres>::new(&def, "\"id\"", 10);
        assert_eq!(
            s.query().0,
            "SELECT \"id\" FROM \"people\" ORDER BY \"id\" LIMIT 10"
        );
        let mut s = BatchScanner::<sqlx::Postgres>::new(&def, "\"id\"", 10)
            .filter("a = $1 OR b = $2", vec![Value::I64(1), Value::I64(2)])
            .after(Some(key(7)))
            .claim(" FOR UPDATE");
        s.skip(vec![key(3), key(4)]);
        let (sql, binds) = s.query();
        assert_eq!(
            sql,
            "SELECT \"id\" FROM \"people\" WHERE (a = $1 OR b = $2) AND \"id\" NOT IN ($3, $4) AND \"id\" > $5 ORDER BY \"id\" LIMIT 10 FOR UPDATE"
        );
        assert_eq!(
            binds,
            [1, 2, 3, 4, 7].map(Value::I64).to_vec(),
            "binds in placeholder order"
        );
        // An ordinary table's identities may carry their tenant: the key
        // alone pages and skips, as before.
        let mut s = BatchScanner::<sqlx::Postgres>::new(&def, "\"id\"", 10).after(Some(id("a", 7)));
        s.skip(vec![id("a", 3)]);
        assert_eq!(
            s.query(),
            (
                "SELECT \"id\" FROM \"people\" WHERE \"id\" NOT IN ($1) AND \"id\" > $2 ORDER BY \"id\" LIMIT 10".to_owned(),
                [3, 7].map(Value::I64).to_vec()
            )
        );
        let s = BatchScanner::<sqlx::MySql>::new(&def, "`id`", 5)
            .filter("v < ?", vec![Value::I64(2)])
            .after(Some(key(7)))
            .draining();
        assert_eq!(
            s.query(),
            (
                "SELECT `id` FROM `people` WHERE (v < ?) LIMIT 5".to_owned(),
                vec![Value::I64(2)]
            )
        );
    }

    #[test]
    fn composite_keys_page_and_skip_by_tenant_and_key() {
        let def = def_of(true, "text");
        let s = BatchScanner::<sqlx::Postgres>::new(&def, "\"id\", \"tenant_id\"", 10);
        assert_eq!(
            s.query().0,
            "SELECT \"id\", \"tenant_id\" FROM \"people\" ORDER BY \"tenant_id\", \"id\" LIMIT 10"
        );
        let mut s = BatchScanner::<sqlx::Postgres>::new(&def, "\"id\", \"tenant_id\"", 10)
            .filter("a = $1", vec![Value::I64(1)])
            .after(Some(id("t2", 7)))
            .claim(" FOR UPDATE");
        s.skip(vec![id("t1", 3), id("t3", 3)]);
        let (sql, binds) = s.query();
        assert_eq!(
            sql,
            "SELECT \"id\", \"tenant_id\" FROM \"people\" WHERE (a = $1) AND NOT ((\"id\" = $2 AND \"tenant_id\" = $3) OR (\"id\" = $4 AND \"tenant_id\" = $5)) AND (\"tenant_id\", \"id\") > ($6, $7) ORDER BY \"tenant_id\", \"id\" LIMIT 10 FOR UPDATE"
        );
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(
            binds,
            vec![
                Value::I64(1),
                Value::I64(3),
                t("t1"),
                Value::I64(3),
                t("t3"),
                t("t2"),
                Value::I64(7)
            ]
        );

        // SQLite: the row value too.
        let s = BatchScanner::<sqlx::Sqlite>::new(&def, "`id`, `tenant_id`", 3)
            .after(Some(id("t2", 7)));
        assert_eq!(
            s.query(),
            (
                "SELECT `id`, `tenant_id` FROM `people` WHERE (`tenant_id`, `id`) > (?, ?) ORDER BY `tenant_id`, `id` LIMIT 3".to_owned(),
                vec![t("t2"), Value::I64(7)]
            )
        );

        // MySQL/MariaDB: the expanded form; skipped tenants byte for byte (`BINARY ?`); the
        // cursor under the column's collation, the one ORDER BY sorts by.
        let mut s = BatchScanner::<sqlx::MySql>::new(&def, "`id`, `tenant_id`", 2)
            .after(Some(id("t2", 7)))
            .claim(" FOR UPDATE SKIP LOCKED");
        s.skip(vec![id("t1", 3)]);
        let (sql, binds) = s.query();
        assert_eq!(
            sql,
            "SELECT `id`, `tenant_id` FROM `people` WHERE NOT ((`id` = ? AND `tenant_id` = BINARY ?)) AND (`tenant_id` > ? OR (`tenant_id` = ? AND `id` > ?)) ORDER BY `tenant_id`, `id` LIMIT 2 FOR UPDATE SKIP LOCKED"
        );
        assert_eq!(
            binds,
            vec![Value::I64(3), t("t1"), t("t2"), t("t2"), Value::I64(7)]
        );
        assert_eq!(
            BatchScanner::<sqlx::MySql>::new(&def, "`id`, `tenant_id`", 2)
                .filter("v < ?", vec![Value::I64(2)])
                .draining()
                .query()
                .0,
            "SELECT `id`, `tenant_id` FROM `people` WHERE (v < ?) LIMIT 2",
            "draining: no order, no cursor"
        );

        // A UUID tenant (BINARY(16) on MariaDB) is compared by value.
        let def = def_of(true, "uuid");
        let u = uuid::Uuid::from_u128(5);
        let mut s = BatchScanner::<sqlx::MySql>::new(&def, "`id`, `tenant_id`", 2);
        s.skip(vec![RowId {
            key: Value::I64(1),
            tenant: Some(Value::Uuid(u)),
        }]);
        assert_eq!(
            s.query().0,
            "SELECT `id`, `tenant_id` FROM `people` WHERE NOT ((`id` = ? AND `tenant_id` = ?)) ORDER BY `tenant_id`, `id` LIMIT 2"
        );
    }

    #[test]
    fn rows_are_matched_by_key_and_tenant() {
        // A row is written by key and tenant (crate::write), never by its
        // key under every tenant.
        let binds = id("t1", 4).match_binds().unwrap();
        assert_eq!(binds, [Value::I64(4), Value::Text("t1".into())]);
        assert!(key(4).match_binds().is_err());
        let ids = [id("t1", 1), id("t2", 1)];
        let mut values = Vec::new();
        assert_eq!(
            among::<sqlx::Postgres>(&def_of(false, "text"), &ids, &mut values, false),
            "\"id\" IN ($1, $2)"
        );
        assert_eq!(values, vec![Value::I64(1), Value::I64(1)]);
        let mut values = vec![Value::I64(9)];
        assert_eq!(
            among::<sqlx::MySql>(&def_of(true, "text"), &ids, &mut values, false),
            "((`id` = ? AND `tenant_id` = BINARY ?) OR (`id` = ? AND `tenant_id` = BINARY ?))"
        );
        assert_eq!(values.len(), 5);
        assert_eq!(
            among::<sqlx::Postgres>(&def_of(true, "text"), &[], &mut values, false),
            "1 = 0"
        );
    }

    #[test]
    fn checkpoints_round_trip() {
        for (v, t) in [
            (Value::I16(-3), SqlType::I16),
            (Value::I32(70_000), SqlType::I32),
            (Value::I64(1 << 40), SqlType::I64),
            (Value::Text("a\"b".into()), SqlType::Text),
            (Value::Bytes(vec![0, 255, 16]), SqlType::Bytes),
            (Value::Uuid(uuid::Uuid::from_u128(9)), SqlType::Uuid),
        ] {
            assert_eq!(pk_from_json(&pk_to_json(&v), t), Some(v));
        }
        assert_eq!(pk_from_json(&json!("abc"), SqlType::Bytes), None);
        assert_eq!(pk_from_json(&json!(70_000), SqlType::I16), None);
    }

    #[test]
    fn composite_cursors_keep_their_tenant() {
        // An ordinary table: the checkpoint is the key, as before.
        let plain = def();
        assert_eq!(cursor_to_json(&plain, Some(&key(7))), json!({"after": 7}));
        assert_eq!(
            cursor_to_json(&plain, Some(&id("t1", 7))),
            json!({"after": 7})
        );
        assert_eq!(cursor_to_json(&plain, None), json!({"after": null}));
        assert_eq!(
            cursor_from_json(&plain, &json!({"after": 7})),
            Ok(Some(key(7)))
        );
        assert_eq!(cursor_from_json(&plain, &json!({})), Ok(None));

        let def = def_of(true, "text");
        let j = cursor_to_json(&def, Some(&id("t2", 7)));
        assert_eq!(j, json!({"after": 7, "after_tenant": "t2"}));
        assert_eq!(cursor_from_json(&def, &j), Ok(Some(id("t2", 7))));
        assert_eq!(cursor_from_json(&def, &json!({"after": null})), Ok(None));
        assert_eq!(
            cursor_from_json(&def, &json!({"after": 7})),
            Err(CursorError::NoTenant),
            "never resumed from the key alone"
        );
        assert_eq!(
            cursor_from_json(&def, &json!({"after": 7, "after_tenant": 3})),
            Err(CursorError::NotUnderstood)
        );

        let def = def_of(true, "uuid");
        let u = uuid::Uuid::from_u128(0xab);
        let cursor = RowId {
            key: Value::I64(1),
            tenant: Some(Value::Uuid(u)),
        };
        let j = cursor_to_json(&def, Some(&cursor));
        assert_eq!(j["after_tenant"], json!(u.hyphenated().to_string()));
        assert_eq!(cursor_from_json(&def, &j), Ok(Some(cursor)));
        assert_eq!(
            cursor_from_json(&def, &json!({"after": 1, "after_tenant": "not-a-uuid"})),
            Err(CursorError::NotUnderstood)
        );
        let def = def_of(true, "i64");
        let cursor = RowId {
            key: Value::I64(1),
            tenant: Some(Value::I64(-42)),
        };
        let j = cursor_to_json(&def, Some(&cursor));
        assert_eq!(j["after_tenant"], json!("-42"));
        assert_eq!(cursor_from_json(&def, &j), Ok(Some(cursor)));
    }
}
