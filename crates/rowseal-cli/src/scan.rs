//! Batch scans of a registered table: the one place that builds the paged
//! query every batch command runs,
//!
//! ```text
//! SELECT <select> FROM <table>
//!  WHERE (<filter>) [AND <pk> NOT IN (<skipped>)] [AND <pk> > <last>]
//!  [ORDER BY <pk>] LIMIT <batch> [<claim>]
//! ```
//!
//! Two ways to page:
//! - keyset (the default): rows in primary-key order, each batch after the
//!   last primary key of the one before (or of a checkpoint, [`after`]);
//! - draining ([`draining`]): no order and no cursor, for a filter that the
//!   batch's own writes make false (`rows not on key version N yet`), so
//!   each batch simply takes the next rows still matching.
//!
//! [`after`]: BatchScanner::after
//! [`draining`]: BatchScanner::draining

use std::marker::PhantomData;

use rowseal_sqlx::{SqlType, Value};
use serde_json::json;

use crate::db::{ident, ph, read_i64, CliDb};
use crate::error::{CliError, Result};
use crate::registry::{read_pk, TableDef};

/// A paged scan of one table. The selected columns start with the primary
/// key (the cursor is read from column 0).
pub struct BatchScanner<'a, D: CliDb> {
    def: &'a TableDef,
    select: String,
    filter: Option<(String, Vec<Value>)>,
    skip: Vec<Value>,
    batch: usize,
    keyset: bool,
    claim: &'static str,
    last: Option<Value>,
    /// The last batch's cursor could not be read: reported by the next
    /// batch (the rows of the batch are the caller's to handle first).
    cursor_error: Option<CliError>,
    _db: PhantomData<fn() -> D>,
}

impl<'a, D: CliDb> BatchScanner<'a, D> {
    /// A keyset scan of every row of `def`'s table, `batch` rows at a time,
    /// selecting `select` (SQL, the primary key first).
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

    /// Starts after primary key `last` (a checkpoint; `None`: from the
    /// start).
    pub fn after(mut self, last: Option<Value>) -> Self {
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

    /// Leaves these primary keys out from now on (rows this process failed).
    pub fn skip(&mut self, pks: Vec<Value>) {
        self.skip = pks;
    }

    /// The last primary key of the batches so far (or the checkpoint).
    pub fn last(&self) -> Option<&Value> {
        self.last.as_ref()
    }

    /// The WHERE clause (with its leading space, empty if none) and binds.
    fn conditions(&self) -> (String, Vec<Value>) {
        let pk = ident::<D>(&self.def.primary_key);
        let mut conds = Vec::new();
        let mut values = Vec::new();
        if let Some((sql, binds)) = &self.filter {
            conds.push(format!("({sql})"));
            values.extend(binds.iter().cloned());
        }
        if !self.skip.is_empty() {
            let list: Vec<String> = (0..self.skip.len())
                .map(|i| ph::<D>(values.len() + 1 + i))
                .collect();
            conds.push(format!("{pk} NOT IN ({})", list.join(", ")));
            values.extend(self.skip.iter().cloned());
        }
        if self.keyset {
            if let Some(last) = &self.last {
                values.push(last.clone());
                conds.push(format!("{pk} > {}", ph::<D>(values.len())));
            }
        }
        if conds.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", conds.join(" AND ")), values)
        }
    }

    /// The next batch's query and binds.
    pub fn query(&self) -> (String, Vec<Value>) {
        let (conds, values) = self.conditions();
        let order = if self.keyset {
            format!(" ORDER BY {}", ident::<D>(&self.def.primary_key))
        } else {
            String::new()
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
                match read_pk(row, self.def.primary_key_type) {
                    Ok(pk) => self.last = Some(pk),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TableDef {
        let field = |name: &str, sql_type: &str| json!({"name": name, "column": name, "sql_type": sql_type, "nullable": false});
        let entry = json!({
            "format": rowseal_sqlx::schema::REGISTRY_FORMAT,
            "record_type": "person", "table": "people", "key_mode": "derived",
            "bind_primary_key": true, "tenant": "tenant_id", "primary_key": "id",
            "primary_key_type": "i64",
            "fields": [field("id", "i64"), field("tenant_id", "text")]
        });
        TableDef::from_registry_json("people", &entry.to_string()).unwrap()
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
            .after(Some(Value::I64(7)))
            .claim(" FOR UPDATE");
        s.skip(vec![Value::I64(3), Value::I64(4)]);
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
        let s = BatchScanner::<sqlx::MySql>::new(&def, "`id`", 5)
            .filter("v < ?", vec![Value::I64(2)])
            .after(Some(Value::I64(7)))
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
}
