//! The stored model of a table: what the schema registry (`rowseal_schema`)
//! records of a model, typed. [`TableSchema`] is built from a derived
//! [`Model`] (`From<&Model>`), written by [`super::register`] and read back by
//! [`super::registered`] and [`super::registered_tables`], so that the
//! command-line tool, which has no application code, sees exactly what the
//! application declared.
//!
//! The registry's JSON is the serde form of these types (format
//! [`REGISTRY_FORMAT`]), plus values derived from them that are written for
//! people reading the table (`encrypted`, `storage`) and ignored on read.

use rowseal_core::{FieldName, FieldSet, KeyMode, RecordSpec};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::ValueType;
use crate::error::{Error, Result};
use crate::layout::{bound_primary_key, IndexScope, IndexSlot};
use crate::model::{IndexDef, Model, HEADER_COLUMN, KEY_VERSION_COLUMN};
use crate::value::{SqlType, Value};

/// The newest version of the registry's JSON `definition` that this crate
/// writes and reads. Reading a newer one is
/// [`Error::UnsupportedRegistryFormat`].
///
/// - 1: every model whose primary key is one column.
/// - 2: adds `tenant_in_primary_key` (a composite key `(tenant, key)`). Only
///   such entries are written as format 2, so that a tool that predates
///   composite keys refuses them rather than paging by the key column alone
///   (which is not unique there) and skipping rows; every other entry stays
///   format 1.
pub const REGISTRY_FORMAT: u32 = 2;

/// One registered table: a model as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TableSchema {
    /// The registry format ([`REGISTRY_FORMAT`]).
    pub format: u32,
    /// The record type (bound into every ciphertext).
    pub record_type: String,
    /// The table.
    pub table: String,
    /// How row keys are made.
    #[serde(with = "key_mode_name")]
    pub key_mode: KeyMode,
    /// Whether each row's primary key is bound into its ciphertexts.
    pub bind_primary_key: bool,
    /// The tenant column.
    pub tenant: String,
    /// The primary-key column.
    pub primary_key: String,
    /// The primary key's type.
    #[serde(with = "sql_type_name")]
    pub primary_key_type: SqlType,
    /// Whether the table's primary key is `(tenant, primary_key)`: the key
    /// column alone is then unique per tenant only, and a row is
    /// identified, and a scan across tenants paged, by the pair.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tenant_in_primary_key: bool,
    /// The column holding each row's key header.
    #[serde(default = "header_column")]
    pub header_column: String,
    /// The column holding each row's tenant-key version.
    #[serde(default = "key_version_column")]
    pub key_version_column: String,
    /// Every field, in declaration order.
    pub fields: Vec<FieldSchema>,
    /// The blind indexes.
    #[serde(default)]
    pub blind_indexes: Vec<IndexSchema>,
}

/// One field of a [`TableSchema`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FieldSchema {
    /// The Rust field name.
    pub name: String,
    /// The logical name ciphertexts are bound to (`#[rowseal(name = ...)]`,
    /// else the Rust field name). An entry written before logical names were
    /// recorded reads with the Rust field name.
    #[serde(default)]
    pub logical: String,
    /// The column.
    pub column: String,
    /// The column's type (`bytes` for an encrypted field).
    #[serde(deserialize_with = "sql_type_name::deserialize")]
    pub sql_type: SqlType,
    /// Whether the column may be NULL.
    pub nullable: bool,
    /// For an encrypted field, the encoded type; `None` for a plain field.
    #[serde(default, deserialize_with = "value_type_name::deserialize")]
    pub encoding: Option<ValueType>,
    /// For a field still migrating from a legacy plaintext column: that
    /// column.
    #[serde(default)]
    pub plaintext_column: Option<String>,
    /// The legacy plaintext column's type.
    #[serde(default, deserialize_with = "opt_sql_type_name::deserialize")]
    pub plaintext_type: Option<SqlType>,
}

impl FieldSchema {
    /// Whether the field is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encoding.is_some()
    }
}

/// One blind index of a [`TableSchema`] (see [`IndexDef`] for the model's
/// side).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct IndexSchema {
    /// The index name (part of its key derivation).
    pub name: String,
    /// The value column of the main slot (odd index-key versions; also part
    /// of the index key's derivation).
    pub column: String,
    /// The index-key version of `column`.
    pub version_column: String,
    /// The value column of the alternate slot (even versions).
    pub alt_column: String,
    /// The index-key version of `alt_column`.
    pub alt_version_column: String,
    /// The covered fields (Rust names), in order.
    pub fields: Vec<String>,
    /// The covered columns, in order.
    pub columns: Vec<String>,
    /// Bits kept (1 to 256; BIGINT storage up to 64, bytes above).
    pub bits: u16,
    /// The normalization of parts without steps of their own: step names,
    /// comma-separated (a custom step by its Rust path).
    pub normalization: String,
    /// The normalization of each covered field, in order (empty: every part
    /// uses `normalization`).
    #[serde(default)]
    pub part_normalization: Vec<String>,
    /// Whether a step is the application's own Rust function (which the
    /// command-line tool cannot run).
    #[serde(default)]
    pub custom_normalizer: bool,
    /// Whose index key it uses.
    pub scope: IndexScope,
    /// Whether the database enforces one row per value.
    #[serde(default)]
    pub unique: bool,
}

impl IndexSchema {
    /// The (value, version) columns of a slot.
    pub fn slot_columns(&self, slot: IndexSlot) -> (&str, &str) {
        match slot {
            IndexSlot::Main => (&self.column, &self.version_column),
            IndexSlot::Alternate => (&self.alt_column, &self.alt_version_column),
        }
    }

    /// The (value, version) columns holding values of index-key `version`.
    pub fn slot(&self, version: u32) -> (&str, &str) {
        self.slot_columns(IndexSlot::of(version))
    }

    /// Both slots with their columns: main first.
    pub fn slots(&self) -> [(IndexSlot, &str, &str); 2] {
        [IndexSlot::Main, IndexSlot::Alternate].map(|s| {
            let (v, k) = self.slot_columns(s);
            (s, v, k)
        })
    }

    /// The built-in steps of each covered column, in order.
    pub fn part_steps(&self) -> Vec<&str> {
        (0..self.columns.len())
            .map(|i| {
                self.part_normalization
                    .get(i)
                    .unwrap_or(&self.normalization)
                    .as_str()
            })
            .collect()
    }

    /// Whether values are stored as BIGINT (up to 64 bits) rather than bytes.
    pub fn is_bigint(&self) -> bool {
        self.bits <= 64
    }

    /// The storage type of the value columns.
    pub fn value_type(&self) -> SqlType {
        if self.is_bigint() {
            SqlType::I64
        } else {
            SqlType::Bytes
        }
    }

    /// The name of the database index over `column` in `table`.
    pub fn db_index_name(&self, table: &str) -> String {
        format!("{table}_{}", self.name)
    }

    /// The name of the database index over `alt_column` in `table`.
    pub fn db_alt_index_name(&self, table: &str) -> String {
        format!("{table}_{}_alt", self.name)
    }
}

impl TableSchema {
    /// The SQL type of the tenant column (`Text` for a registry entry that
    /// does not say).
    pub fn tenant_type(&self) -> SqlType {
        self.fields
            .iter()
            .find(|f| f.column == self.tenant)
            .map_or(SqlType::Text, |f| f.sql_type)
    }

    /// The value to bind for tenant `id` (a canonical id, see
    /// [`TenantField::tenant_id`](crate::TenantField::tenant_id)) against
    /// the tenant column: the same rule as the library's. `None` for text
    /// that is the canonical id of no value of the column's type; such a
    /// tenant has no rows here.
    pub fn tenant_value(&self, id: &str) -> Option<Value> {
        crate::value::tenant_value(self.tenant_type(), id)
    }

    /// Parses a registry entry's JSON `definition` of `table`. An entry of
    /// another format is [`Error::UnsupportedRegistryFormat`]; one that does
    /// not fit this format is [`Error::Schema`]. Either names the table.
    pub fn from_registry_json(table: &str, text: &str) -> Result<TableSchema> {
        let bad = |reason: String| Error::Schema {
            table: table.to_owned(),
            column: "rowseal_schema.definition".into(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| bad("not valid JSON".into()))?;
        let format = value
            .get("format")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no format number".into()))?;
        if !(1..=u64::from(REGISTRY_FORMAT)).contains(&format) {
            return Err(Error::UnsupportedRegistryFormat {
                table: table.to_owned(),
                format,
            });
        }
        let mut schema: TableSchema =
            serde_json::from_value(value).map_err(|e| bad(format!("not understood: {e}")))?;
        for f in &mut schema.fields {
            if f.logical.is_empty() {
                f.logical = f.name.clone();
            }
        }
        schema.check().map_err(|r| bad(r.into()))?;
        Ok(schema)
    }

    /// The registry entry's JSON `definition`.
    pub fn to_registry_json(&self) -> String {
        // Serializing plain strings, numbers and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What serde cannot check: references between the parts.
    fn check(&self) -> std::result::Result<(), &'static str> {
        let has_column = |c: &str| self.fields.iter().any(|f| f.column == c);
        if !has_column(&self.tenant) || !has_column(&self.primary_key) {
            return Err("the tenant or primary-key column is not a field");
        }
        if self.tenant_in_primary_key && self.format < 2 {
            return Err("a composite primary key is recorded in a format 1 entry");
        }
        for f in &self.fields {
            if f.plaintext_column.is_some() != f.plaintext_type.is_some()
                || (f.plaintext_column.is_some() && f.encoding.is_none())
            {
                return Err(
                    "a legacy plaintext column is declared without its type or on a plain field",
                );
            }
        }
        for i in &self.blind_indexes {
            if !(1..=256).contains(&i.bits) {
                return Err("a blind index keeps a number of bits outside 1 to 256");
            }
            if i.columns.is_empty()
                || i.columns.len() != i.fields.len()
                || !i.columns.iter().all(|c| has_column(c))
            {
                return Err("a blind index covers columns that are not fields");
            }
            if !i.part_normalization.is_empty() && i.part_normalization.len() != i.columns.len() {
                return Err("a blind index has per-field steps for a different number of fields");
            }
        }
        Ok(())
    }

    /// The record spec, as the model's.
    pub fn spec(&self) -> RecordSpec {
        RecordSpec::owned(self.record_type.clone(), self.table.clone())
            .with_key_mode(self.key_mode)
            .with_primary_key_bound(self.bind_primary_key)
    }

    /// The bytes a row's primary key is bound into its ciphertexts as (`None`
    /// when the model does not bind it).
    pub fn primary_key_bytes(&self, pk: &Value) -> rowseal_core::Result<Option<Vec<u8>>> {
        bound_primary_key(self.bind_primary_key, pk)
    }

    /// The field stored in `column`.
    pub fn field_by_column(&self, column: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.column == column)
    }

    /// The encrypted columns, in field order.
    pub fn encrypted_columns(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.is_encrypted())
            .map(|f| f.column.as_str())
            .collect()
    }

    /// The names (logical, column) of the encrypted fields, in the order of
    /// [`encrypted_columns`](Self::encrypted_columns).
    pub fn encrypted_field_names(&self) -> Vec<FieldName<'_>> {
        self.fields
            .iter()
            .filter(|f| f.is_encrypted())
            .map(|f| FieldName::new(&f.logical, &f.column))
            .collect()
    }

    /// The present encrypted fields of a row, given whether each encrypted
    /// column (in the order of [`encrypted_columns`](Self::encrypted_columns))
    /// is non-NULL: the set a format 2 row key binds, by logical name.
    pub fn present_fields(
        &self,
        present: impl IntoIterator<Item = bool>,
    ) -> rowseal_core::Result<FieldSet> {
        FieldSet::new(
            self.fields
                .iter()
                .filter(|f| f.is_encrypted())
                .zip(present)
                .filter(|(_, p)| *p)
                .map(|(f, _)| f.logical.as_str()),
        )
    }
}

impl From<&Model> for TableSchema {
    fn from(model: &Model) -> Self {
        let names = |fields: &[usize], column: bool| -> Vec<String> {
            fields
                .iter()
                .filter_map(|&f| model.fields.get(f))
                .map(|f| if column { f.column } else { f.name }.to_owned())
                .collect()
        };
        TableSchema {
            format: if model.tenant_in_primary_key { 2 } else { 1 },
            record_type: model.spec.record_type().to_owned(),
            table: model.table().to_owned(),
            key_mode: model.spec.key_mode(),
            bind_primary_key: model.spec.binds_primary_key(),
            tenant: model.tenant_field().column.to_owned(),
            primary_key: model.primary_key_field().column.to_owned(),
            primary_key_type: model.primary_key_field().sql_type,
            tenant_in_primary_key: model.tenant_in_primary_key,
            header_column: HEADER_COLUMN.to_owned(),
            key_version_column: KEY_VERSION_COLUMN.to_owned(),
            fields: model
                .fields
                .iter()
                .map(|f| FieldSchema {
                    name: f.name.to_owned(),
                    logical: f.logical.to_owned(),
                    column: f.column.to_owned(),
                    sql_type: f.sql_type,
                    nullable: f.nullable,
                    encoding: f.encrypted,
                    plaintext_column: f.plaintext_column.map(|(c, _)| c.to_owned()),
                    plaintext_type: f.plaintext_column.map(|(_, t)| t),
                })
                .collect(),
            blind_indexes: model
                .indexes
                .iter()
                .map(|i: &IndexDef| IndexSchema {
                    name: i.name.to_owned(),
                    column: i.column.to_owned(),
                    version_column: i.version_column.to_owned(),
                    alt_column: i.alt_column.to_owned(),
                    alt_version_column: i.alt_version_column.to_owned(),
                    fields: names(i.fields, false),
                    columns: names(i.fields, true),
                    bits: i.bits,
                    normalization: i.normalization().map(|n| n.describe()).unwrap_or_default(),
                    part_normalization: i
                        .part_normalizations()
                        .map(|v| v.iter().map(|n| n.describe()).collect())
                        .unwrap_or_default(),
                    custom_normalizer: i.custom.is_some(),
                    scope: i.scope(),
                    unique: i.unique,
                })
                .collect(),
        }
    }
}

impl Serialize for FieldSchema {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("FieldSchema", 9)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("logical", &self.logical)?;
        st.serialize_field("column", &self.column)?;
        st.serialize_field("sql_type", self.sql_type.as_str())?;
        st.serialize_field("nullable", &self.nullable)?;
        st.serialize_field("encrypted", &self.is_encrypted())?;
        st.serialize_field("encoding", &self.encoding.map(ValueType::name))?;
        st.serialize_field("plaintext_column", &self.plaintext_column)?;
        st.serialize_field("plaintext_type", &self.plaintext_type.map(SqlType::as_str))?;
        st.end()
    }
}

impl Serialize for IndexSchema {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("IndexSchema", 14)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("column", &self.column)?;
        st.serialize_field("version_column", &self.version_column)?;
        st.serialize_field("alt_column", &self.alt_column)?;
        st.serialize_field("alt_version_column", &self.alt_version_column)?;
        st.serialize_field("fields", &self.fields)?;
        st.serialize_field("columns", &self.columns)?;
        st.serialize_field("bits", &self.bits)?;
        st.serialize_field("storage", if self.is_bigint() { "bigint" } else { "bytes" })?;
        st.serialize_field("normalization", &self.normalization)?;
        st.serialize_field("part_normalization", &self.part_normalization)?;
        st.serialize_field("custom_normalizer", &self.custom_normalizer)?;
        st.serialize_field("scope", &self.scope)?;
        st.serialize_field("unique", &self.unique)?;
        st.end()
    }
}

fn header_column() -> String {
    HEADER_COLUMN.to_owned()
}

fn key_version_column() -> String {
    KEY_VERSION_COLUMN.to_owned()
}

mod key_mode_name {
    use super::*;

    pub fn serialize<S: Serializer>(m: &KeyMode, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<KeyMode, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|_| serde::de::Error::custom("unknown key mode"))
    }
}

mod sql_type_name {
    use super::*;

    pub fn serialize<S: Serializer>(t: &SqlType, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<SqlType, D::Error> {
        let name = String::deserialize(d)?;
        SqlType::from_name(&name).ok_or_else(|| serde::de::Error::custom("unknown SQL type"))
    }
}

mod opt_sql_type_name {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<SqlType>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| {
                SqlType::from_name(&n).ok_or_else(|| serde::de::Error::custom("unknown SQL type"))
            })
            .transpose()
    }
}

mod value_type_name {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<ValueType>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| {
                ValueType::from_name(&n)
                    .ok_or_else(|| serde::de::Error::custom("unknown encrypted value type"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seeds (fuzz/corpus/registry_entry/) stay what they
    /// are meant to be: three entries that read (format 1, and format 2 with
    /// a composite primary key), one of a future format.
    #[test]
    fn fuzz_seeds_read_as_intended() {
        for text in [
            include_str!("../../../../fuzz/corpus/registry_entry/seed-people"),
            include_str!("../../../../fuzz/corpus/registry_entry/seed-users-indexed"),
            include_str!("../../../../fuzz/corpus/registry_entry/seed-composite-key"),
        ] {
            let schema = TableSchema::from_registry_json("t", text).unwrap();
            let again = TableSchema::from_registry_json("t", &schema.to_registry_json()).unwrap();
            assert_eq!(again, schema);
        }
        let composite = TableSchema::from_registry_json(
            "t",
            include_str!("../../../../fuzz/corpus/registry_entry/seed-composite-key"),
        )
        .unwrap();
        assert!(composite.tenant_in_primary_key && composite.format == 2);
        assert!(matches!(
            TableSchema::from_registry_json(
                "t",
                include_str!("../../../../fuzz/corpus/registry_entry/seed-future-format")
            ),
            Err(Error::UnsupportedRegistryFormat { format: 3, .. })
        ));
    }

    #[test]
    fn slots_follow_parity() {
        for v in 0..10u32 {
            let slot = IndexSlot::of(v);
            assert_eq!(slot == IndexSlot::Main, v % 2 == 1);
            assert!(slot.holds(v));
            assert!(!slot.holds(v + 1));
        }
    }
}
