//! The schema registry (`rowseal_schema`), read without application code.

use rowseal_core::{KeyMode, RecordSpec};
use rowseal_sqlx::{DbRow, SqlType, Value};
use serde::Deserialize;

use crate::db::{ident, read_text, CliDb};
use crate::error::{CliError, Result};

/// One registered table, from its JSON definition.
#[derive(Debug, Clone, Deserialize)]
pub struct TableDef {
    /// Record type.
    pub record_type: String,
    /// Table.
    pub table: String,
    /// `derived` or `kms`.
    pub key_mode: String,
    /// Whether the primary key is bound into the ciphertexts.
    pub bind_primary_key: bool,
    /// Tenant column.
    pub tenant: String,
    /// Primary-key column.
    pub primary_key: String,
    /// Primary-key type (registry name).
    pub primary_key_type: String,
    /// Key header column.
    #[serde(default = "header_default")]
    pub header_column: String,
    /// Key version column.
    #[serde(default = "version_default")]
    pub key_version_column: String,
    /// Every field.
    pub fields: Vec<FieldDef>,
    /// Blind indexes (registry format 1 with indexes; absent before).
    #[serde(default)]
    pub blind_indexes: Vec<IndexDef>,
}

/// One blind index of a registered table.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexDef {
    /// Index name.
    pub name: String,
    /// Column holding the index value (the first slot; also part of the
    /// index key's derivation).
    #[serde(default)]
    pub column: String,
    /// Column holding the index-key version the value was computed under.
    pub version_column: String,
    /// `tenant` or `global`.
    #[serde(default)]
    pub scope: String,
    /// Covered columns, in order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Bits kept.
    #[serde(default)]
    pub bits: u16,
    /// Built-in steps shared by every part (comma-separated).
    #[serde(default)]
    pub normalization: String,
    /// Built-in steps per covered column (empty: `normalization` for each).
    #[serde(default)]
    pub part_normalization: Vec<String>,
    /// Whether a step is the application's own Rust function.
    #[serde(default)]
    pub custom_normalizer: bool,
    /// The value column of even index-key versions (two-slot layout).
    #[serde(default)]
    pub alt_column: Option<String>,
    /// The index-key version of `alt_column`.
    #[serde(default)]
    pub alt_version_column: Option<String>,
    /// Every (value column, version column) pair the index writes, when the
    /// registry lists them (`slots`); else the pairs above.
    #[serde(default)]
    pub slots: Vec<SlotDef>,
}

/// One (value column, version column) pair of a blind index.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SlotDef {
    /// The index value.
    #[serde(alias = "value_column")]
    pub column: String,
    /// The index-key version of `column`.
    pub version_column: String,
    /// The parity of the versions this slot holds (`Some(1)`: odd, `Some(0)`:
    /// even), when the layout fixes it.
    #[serde(default)]
    pub parity: Option<u32>,
}

impl IndexDef {
    /// Every (value column, version column) pair of the index.
    pub fn slot_pairs(&self) -> Vec<SlotDef> {
        if !self.slots.is_empty() {
            return self.slots.clone();
        }
        match (&self.alt_column, &self.alt_version_column) {
            // Two slots: odd versions in the main one, even in the alternate.
            (Some(alt), Some(alt_kv)) => vec![
                SlotDef {
                    column: self.column.clone(),
                    version_column: self.version_column.clone(),
                    parity: Some(1),
                },
                SlotDef {
                    column: alt.clone(),
                    version_column: alt_kv.clone(),
                    parity: Some(0),
                },
            ],
            _ => vec![SlotDef {
                column: self.column.clone(),
                version_column: self.version_column.clone(),
                parity: None,
            }],
        }
    }

    /// The built-in steps of each covered column, in order.
    pub fn part_steps(&self) -> Vec<String> {
        (0..self.columns.len())
            .map(|i| {
                self.part_normalization
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| self.normalization.clone())
            })
            .collect()
    }
}

/// One field of a registered table.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldDef {
    /// Column.
    pub column: String,
    /// Whether it is encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// SQL type (registry name, `SqlType::as_str`).
    #[serde(default)]
    pub sql_type: String,
    /// Encrypted fields: the value type's name (`string`, `i64`, ...).
    #[serde(default)]
    pub encoding: Option<String>,
    /// Encrypted fields migrating from a legacy plaintext column
    /// (`plaintext_column = "..."`): that column.
    #[serde(default)]
    pub plaintext_column: Option<String>,
    /// The legacy column's SQL type (registry name).
    #[serde(default)]
    pub plaintext_type: Option<String>,
}

fn header_default() -> String {
    rowseal_sqlx::HEADER_COLUMN.to_owned()
}

fn version_default() -> String {
    rowseal_sqlx::KEY_VERSION_COLUMN.to_owned()
}

/// Parses a registry type name (the inverse of `SqlType::as_str` for the
/// types a primary key may have).
pub fn pk_sql_type(name: &str) -> Option<SqlType> {
    Some(match name {
        "i16" => SqlType::I16,
        "i32" => SqlType::I32,
        "i64" => SqlType::I64,
        "text" => SqlType::Text,
        "bytes" => SqlType::Bytes,
        "uuid" => SqlType::Uuid,
        _ => return None,
    })
}

impl TableDef {
    /// The key mode.
    pub fn mode(&self) -> Result<KeyMode> {
        self.key_mode
            .parse()
            .map_err(|_| self.bad("unknown key mode in the registry"))
    }

    /// The record spec, as the derive macro would build it.
    pub fn spec(&self) -> Result<RecordSpec> {
        Ok(
            RecordSpec::owned(self.record_type.clone(), self.table.clone())
                .with_key_mode(self.mode()?)
                .with_primary_key_bound(self.bind_primary_key),
        )
    }

    /// The primary key's SQL type.
    pub fn pk_type(&self) -> Result<SqlType> {
        pk_sql_type(&self.primary_key_type)
            .ok_or_else(|| self.bad("unsupported primary-key type in the registry"))
    }

    /// The encrypted columns.
    pub fn encrypted_columns(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.encrypted)
            .map(|f| f.column.as_str())
            .collect()
    }

    fn bad(&self, what: &str) -> CliError {
        CliError::new(
            crate::error::ExitCode::Config,
            format!("table {}: {what}", self.table),
        )
    }

    /// The bytes a primary key is bound as (`None` if not bound).
    pub fn pk_bytes(
        &self,
        pk: &Value,
    ) -> std::result::Result<Option<Vec<u8>>, rowseal_core::Error> {
        if !self.bind_primary_key {
            return Ok(None);
        }
        pk.key_bytes()
            .map(Some)
            .ok_or(rowseal_core::Error::InvalidInput {
                reason: "the primary key has a type that cannot be bound",
            })
    }

    /// `SELECT pk, tenant, header, version, enc...` (without FROM), and the
    /// index of the first encrypted column.
    pub fn select_list<D: CliDb>(&self) -> String {
        let mut cols = vec![
            ident::<D>(&self.primary_key),
            ident::<D>(&self.tenant),
            ident::<D>(&self.header_column),
            ident::<D>(&self.key_version_column),
        ];
        cols.extend(self.encrypted_columns().iter().map(|c| ident::<D>(c)));
        cols.join(", ")
    }
}

/// Index of the first encrypted column in [`TableDef::select_list`].
pub const FIRST_ENCRYPTED: usize = 4;

/// Every registered table (or those named), sorted by name.
pub async fn tables<D: CliDb>(conn: &mut D::Connection, only: &[String]) -> Result<Vec<TableDef>> {
    let rows = D::fetch_all_on(
        conn,
        "SELECT table_name, definition FROM rowseal_schema ORDER BY table_name",
        vec![],
    )
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let name = read_text(row, 0)?;
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let text = read_text(row, 1)?;
        let def: TableDef = serde_json::from_str(&text).map_err(|e| {
            CliError::config(format!(
                "rowseal_schema: the definition of {name} is not understood: {e}"
            ))
        })?;
        out.push(def);
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
