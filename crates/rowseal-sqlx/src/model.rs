//! The [`Encrypted`] trait that `#[derive(Encrypted)]` implements, the
//! [`Model`] description it returns, and the row writer and reader the
//! generated code drives.

use rowseal_core::{FieldName, FieldSet, RecordSpec, RowKey};
use zeroize::Zeroize;

use crate::encoding::{self, EncryptedField, ValueType};
use crate::error::{Error, Result};
use crate::layout::{bound_primary_key, IndexScope, IndexSlot};
use crate::value::{PlainField, PrimaryKeyField, SqlType, Value};

/// The column holding each row's key header.
pub const HEADER_COLUMN: &str = "rowseal_header";
/// The column holding the tenant-key version of each row (0 in `kms` mode),
/// indexed with the tenant so that rotation can find the rows still to
/// re-encrypt.
pub const KEY_VERSION_COLUMN: &str = "rowseal_key_version";

/// One field of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    /// The Rust field name.
    pub name: &'static str,
    /// The logical name (`#[rowseal(name = "...")]`, else the Rust field
    /// name): what ciphertexts are bound to, so that the Rust field and its
    /// column can be renamed.
    pub logical: &'static str,
    /// The column.
    pub column: &'static str,
    /// The column type (`Bytes` for an encrypted field).
    pub sql_type: SqlType,
    /// Whether the column may be NULL.
    pub nullable: bool,
    /// For an encrypted field, the encoded type (see [`crate::encoding`]);
    /// `None` for a plain field.
    pub encrypted: Option<ValueType>,
    /// For an encrypted field adopted from a legacy plaintext column
    /// (`#[rowseal(encrypt, plaintext_column = "...")]`): that column and its
    /// SQL type. Reads fall back to it while the ciphertext column is NULL;
    /// writes set it to NULL.
    pub plaintext_column: Option<(&'static str, SqlType)>,
    /// A column the database fills (`#[rowseal(generated)]`: an identity
    /// primary key, a `DEFAULT` timestamp): rowseal never writes it, and
    /// [`Encryptor::insert_returning`](crate::Encryptor::insert_returning)
    /// reads it back. Always a plain field.
    pub generated: bool,
    /// The SQL default of a generated column (`generated = "..."`), for the
    /// DDL rowseal writes; `None`: the type's (identity for an integer
    /// primary key, the current time for a timestamp).
    pub default_sql: Option<&'static str>,
    /// The SQL type of a [`PassthroughField`](crate::PassthroughField)'s
    /// column (`#[rowseal(sql_type = "...")]`, [`SqlType::Other`]), for the
    /// DDL rowseal writes.
    pub ddl_type: Option<&'static str>,
}

impl FieldDef {
    /// A plain (unencrypted) field.
    pub const fn plain(
        name: &'static str,
        column: &'static str,
        sql_type: SqlType,
        nullable: bool,
    ) -> Self {
        FieldDef {
            name,
            logical: name,
            column,
            sql_type,
            nullable,
            encrypted: None,
            plaintext_column: None,
            generated: false,
            default_sql: None,
            ddl_type: None,
        }
    }

    /// An encrypted field.
    pub const fn encrypted(
        name: &'static str,
        column: &'static str,
        value_type: ValueType,
        nullable: bool,
    ) -> Self {
        FieldDef {
            name,
            logical: name,
            column,
            sql_type: SqlType::Bytes,
            nullable,
            encrypted: Some(value_type),
            plaintext_column: None,
            generated: false,
            default_sql: None,
            ddl_type: None,
        }
    }

    /// This field under another logical name.
    pub const fn with_logical_name(mut self, logical: &'static str) -> Self {
        self.logical = logical;
        self
    }

    /// This encrypted field, migrating from the legacy plaintext `column` of
    /// type `sql_type` (see [`FieldDef::plaintext_column`]).
    pub const fn with_plaintext_column(mut self, column: &'static str, sql_type: SqlType) -> Self {
        self.plaintext_column = Some((column, sql_type));
        self
    }

    /// This plain field, filled by the database (see
    /// [`FieldDef::generated`]), with its SQL default if it names one.
    pub const fn with_generated(mut self, default_sql: Option<&'static str>) -> Self {
        self.generated = true;
        self.default_sql = default_sql;
        self
    }

    /// A plain field of any type sqlx encodes
    /// ([`PassthroughField`](crate::PassthroughField)), in a column of SQL
    /// type `ddl_type`.
    pub const fn passthrough(
        name: &'static str,
        column: &'static str,
        ddl_type: &'static str,
        nullable: bool,
    ) -> Self {
        let mut f = FieldDef::plain(name, column, SqlType::Other, nullable);
        f.ddl_type = Some(ddl_type);
        f
    }

    /// Whether the field is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted.is_some()
    }
}

/// A Rust normalization step named in `normalize_with = path::to::fn`: a
/// plain `fn(&str) -> String`, applied after the built-in steps.
#[derive(Clone, Copy)]
pub struct CustomNormalizer {
    /// The name recorded with the index (the path as written). Changing what
    /// the function does requires rebuilding the index (`rowseal reindex`).
    pub name: &'static str,
    /// The step.
    pub f: fn(&str) -> String,
}

impl std::fmt::Debug for CustomNormalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A blind index of a model: on one field (`#[rowseal(blind_index(...))]`) or
/// over several (`#[rowseal(compound_index(...))]` on the struct).
///
/// Stored in two slots of two columns each: a value column (the truncated
/// HMAC: BIGINT up to 64 bits, bytes above; NULL when a covered field is
/// `None`) and a version column (the index-key version it was computed
/// under). Odd index-key versions live in `column`/`version_column`, even ones
/// in `alt_column`/`alt_version_column`, so that during an index-key rotation
/// every write fills both the old and the new version, lookups query both,
/// and the backfill finds the rows still to do with an indexed predicate.
#[derive(Debug, Clone, Copy)]
pub struct IndexDef {
    /// The index name (part of the HMAC key derivation).
    pub name: &'static str,
    /// The value column of odd index-key versions (named after the index, or
    /// `column = "..."`).
    pub column: &'static str,
    /// The index-key version of `column` (`<column>_kv`).
    pub version_column: &'static str,
    /// The value column of even index-key versions (`<column>_alt`).
    pub alt_column: &'static str,
    /// The index-key version of `alt_column` (`<column>_alt_kv`).
    pub alt_version_column: &'static str,
    /// Positions in [`Model::fields`] of the covered fields, in order.
    pub fields: &'static [usize],
    /// Bits kept (1 to 256).
    pub bits: u16,
    /// Built-in normalization steps, comma-separated (`"trim,lowercase"`),
    /// applied to each covered field.
    pub normalize: &'static str,
    /// Compound indexes only, when some field has its own steps
    /// (`fields(last_name = "trim,lowercase", dob = "digits")`): the built-in
    /// steps of each covered field, in order. Empty: every part uses
    /// `normalize`.
    pub part_normalize: &'static [&'static str],
    /// A Rust step applied after the built-in ones.
    pub custom: Option<CustomNormalizer>,
    /// Global scope (one index key for all tenants) instead of per tenant.
    pub global: bool,
    /// Whether the database enforces one row per index value (per tenant
    /// unless global).
    pub unique: bool,
}

impl IndexDef {
    /// The shared normalization (`normalize` and the custom step), applied
    /// to every part that has no steps of its own.
    pub fn normalization(&self) -> rowseal_core::Result<rowseal_core::Normalization> {
        self.with_custom(self.normalize)
    }

    fn with_custom(&self, steps: &str) -> rowseal_core::Result<rowseal_core::Normalization> {
        let mut n = rowseal_core::Normalization::parse(steps)?;
        if let Some(c) = self.custom {
            let f = c.f;
            n = n.then(rowseal_core::Normalizer::custom(c.name, f));
        }
        Ok(n)
    }

    /// The normalization of each covered field, in order.
    pub fn part_normalizations(&self) -> rowseal_core::Result<Vec<rowseal_core::Normalization>> {
        (0..self.fields.len())
            .map(|i| {
                self.with_custom(
                    self.part_normalize
                        .get(i)
                        .copied()
                        .unwrap_or(self.normalize),
                )
            })
            .collect()
    }

    /// The name of the database index over this index's column.
    pub fn db_index_name(&self, table: &str) -> String {
        format!("{table}_{}", self.name)
    }

    /// The database index on `alt_column`.
    pub fn db_alt_index_name(&self, table: &str) -> String {
        format!("{table}_{}_alt", self.name)
    }

    /// The (value, version) columns holding values of index-key `version`
    /// (the slot [`IndexSlot::of`] the version).
    pub fn slot(&self, version: u32) -> (&'static str, &'static str) {
        match IndexSlot::of(version) {
            IndexSlot::Main => (self.column, self.version_column),
            IndexSlot::Alternate => (self.alt_column, self.alt_version_column),
        }
    }

    /// Both slots' columns: value, version, alternate value, alternate version.
    pub fn columns(&self) -> [&'static str; 4] {
        [
            self.column,
            self.version_column,
            self.alt_column,
            self.alt_version_column,
        ]
    }

    /// Whose index key it uses.
    pub fn scope(&self) -> IndexScope {
        if self.global {
            IndexScope::Global
        } else {
            IndexScope::Tenant
        }
    }
}

/// What rowseal knows about a model: its [`RecordSpec`], its fields and which
/// of them are the tenant and the primary key, and its blind indexes. Built by
/// `#[derive(Encrypted)]`.
#[non_exhaustive]
#[derive(Debug)]
pub struct Model {
    /// Record type, table, key mode, primary-key binding.
    pub spec: RecordSpec,
    /// Index of the tenant field in `fields`.
    pub tenant: usize,
    /// Index of the primary-key field in `fields`.
    pub primary_key: usize,
    /// Whether the table's primary key is `(tenant, primary key)`
    /// (`#[rowseal(primary_key = (tenant_id, id))]`): the same key may then
    /// be used by several tenants, so a row is identified by the pair, and
    /// scans across tenants page by it.
    pub tenant_in_primary_key: bool,
    /// Every field, in declaration order.
    pub fields: &'static [FieldDef],
    /// The blind indexes.
    pub indexes: &'static [IndexDef],
    /// Of a partial view ([`Model::partial_of`]): the encrypted fields of
    /// its model it does not read. Reads select whether each is present
    /// (not its ciphertext): format 2 binds the set of present fields into
    /// the row key. Empty for a whole model.
    pub absent: &'static [FieldDef],
}

/// The prefix of the column a read of a partial view selects for each
/// encrypted field it does not read: `(<column> IS NOT NULL) AS
/// rowseal_present__<column>`.
pub const PRESENT_PREFIX: &str = "rowseal_present__";

impl Model {
    /// The model of a partial view of `full` that reads the fields named
    /// `names` (Rust names, in the view's order), built once per view type
    /// by generated code. The view's fields are `full`'s (same columns,
    /// logical names, encryption); `full`'s tenant and primary key are read
    /// too, after them, if the view does not name them; `full`'s other
    /// encrypted fields are [`absent`](Self::absent). A view has no blind
    /// indexes. The field lists are allocated once and live as long as the
    /// program (one per view type).
    pub fn partial_of(full: &'static Model, names: &[&str]) -> Model {
        let mut fields: Vec<FieldDef> = names
            .iter()
            .filter_map(|n| full.field(n).copied())
            .collect();
        let mut position = |f: &FieldDef| match fields.iter().position(|g| g.name == f.name) {
            Some(i) => i,
            None => {
                fields.push(*f);
                fields.len() - 1
            }
        };
        let tenant = position(full.tenant_field());
        let primary_key = position(full.primary_key_field());
        let absent: Vec<FieldDef> = full
            .fields
            .iter()
            .filter(|f| f.is_encrypted() && !fields.iter().any(|g| g.name == f.name))
            .copied()
            .collect();
        Model {
            spec: full.spec.clone(),
            tenant,
            primary_key,
            tenant_in_primary_key: full.tenant_in_primary_key,
            fields: Box::leak(fields.into_boxed_slice()),
            indexes: &[],
            absent: Box::leak(absent.into_boxed_slice()),
        }
    }

    /// Whether this is a partial view (it leaves encrypted fields unread).
    pub fn is_partial(&self) -> bool {
        !self.absent.is_empty()
    }

    #[doc(hidden)]
    pub const fn __new(
        spec: RecordSpec,
        tenant: usize,
        primary_key: usize,
        fields: &'static [FieldDef],
    ) -> Self {
        Model {
            spec,
            tenant,
            primary_key,
            tenant_in_primary_key: false,
            fields,
            indexes: &[],
            absent: &[],
        }
    }

    #[doc(hidden)]
    pub const fn __new_indexed(
        spec: RecordSpec,
        tenant: usize,
        primary_key: usize,
        fields: &'static [FieldDef],
        indexes: &'static [IndexDef],
    ) -> Self {
        Model {
            spec,
            tenant,
            primary_key,
            tenant_in_primary_key: false,
            fields,
            indexes,
            absent: &[],
        }
    }

    #[doc(hidden)]
    pub const fn with_tenant_in_primary_key(mut self, yes: bool) -> Self {
        self.tenant_in_primary_key = yes;
        self
    }

    /// The blind index with this name.
    pub fn index(&self, name: &str) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The table.
    pub fn table(&self) -> &str {
        self.spec.table()
    }

    /// Whether rows without a key header are legitimate: only a model with
    /// a field adopted from a legacy plaintext column
    /// (`plaintext_column`) has them (rows written before the adoption).
    pub fn has_legacy_rows(&self) -> bool {
        self.fields.iter().any(|f| f.plaintext_column.is_some())
    }

    /// The tenant field.
    pub fn tenant_field(&self) -> &FieldDef {
        &self.fields[self.tenant]
    }

    /// The primary-key field.
    pub fn primary_key_field(&self) -> &FieldDef {
        &self.fields[self.primary_key]
    }

    /// The field with this Rust name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value to bind for tenant `id` (a canonical id) against the
    /// tenant column: [`Error::InvalidInput`] for text that is not the
    /// canonical id of any value of the column's type (a malformed UUID,
    /// `"042"`).
    pub fn tenant_value(&self, id: &str) -> Result<Value> {
        let t = self.tenant_field().sql_type;
        crate::value::tenant_value(t, id).ok_or_else(|| Error::InvalidInput {
            reason: format!(
                "not a tenant of `{}`: its tenant column holds {} and this is not the canonical id of one",
                self.table(),
                t.as_str()
            ).into(),
        })
    }

    /// The bytes a row's primary key is bound into its ciphertexts as
    /// (`None` when the model does not bind it): the same rule as
    /// [`TableSchema::primary_key_bytes`](crate::schema::TableSchema::primary_key_bytes).
    pub fn primary_key_bytes(&self, pk: &Value) -> rowseal_core::Result<Option<Vec<u8>>> {
        bound_primary_key(self.spec.binds_primary_key(), pk)
    }
}

/// A type rowseal reads rows into: every [`Encrypted`] model, and the
/// partial views of one (`#[rowseal(partial_of = Model)]`), which read and
/// decrypt only the fields they name and can never be written. The read
/// operations of [`Encryptor`](crate::Encryptor) (`fetch`, `fetch_all`,
/// `fetch_stream`, `decrypt_*`, `fetch_many`) take any `ReadModel`.
/// Implemented by `#[derive(Encrypted)]`.
pub trait ReadModel: Sized + Send + Sync + 'static {
    /// The type of the primary-key field.
    type PrimaryKey: PrimaryKeyField;

    /// The model description (of a partial view: the fields it reads, and
    /// the other encrypted fields of its model, whose presence the row key
    /// binds).
    fn model() -> &'static Model;

    /// Reads a row back, in field order, decrypting the encrypted columns.
    fn read_row(r: &mut RowReader<'_>) -> Result<Self>;
}

/// A model whose fields rowseal encrypts. Implement it with
/// `#[derive(Encrypted)]`; the methods are for the sqlx layer.
pub trait Encrypted: ReadModel {
    /// The tenant of this row: its canonical id
    /// ([`TenantField::tenant_id`](crate::TenantField::tenant_id)).
    fn tenant(&self) -> std::borrow::Cow<'_, str>;

    /// The primary key of this row, as a value.
    fn primary_key_value(&self) -> Value;

    /// Writes the row's columns, in field order, encrypting the encrypted ones.
    fn write_row(&self, w: &mut RowWriter<'_>) -> Result<()>;

    /// Sets generated field number `field` (a position in
    /// [`Model::fields`]) to the value the database gave it
    /// ([`Encryptor::insert_returning`](crate::Encryptor::insert_returning)).
    fn set_generated(&mut self, field: usize, value: Value) -> Result<()> {
        let _ = value;
        Err(__not_generated(<Self as ReadModel>::model(), field))
    }

    /// The value of field number `field` (a position in [`Model::fields`]) as
    /// indexed by a blind index; `None` for NULL or a field no index covers.
    fn index_part(&self, field: usize) -> Option<std::borrow::Cow<'_, str>> {
        let _ = field;
        None
    }
}

/// Why field number `field` of `model` cannot be set from the database
/// (generated code).
#[doc(hidden)]
pub fn __not_generated(model: &Model, field: usize) -> Error {
    Error::Schema {
        table: model.table().to_owned(),
        column: model
            .fields
            .get(field)
            .map_or_else(String::new, |f| f.column.to_owned()),
        reason: "not a generated field".into(),
    }
}

/// The value the database gave generated field number `field` of `model`,
/// as the field's type (generated code).
#[doc(hidden)]
pub fn __generated_value<T: PlainField>(model: &Model, field: usize, value: Value) -> Result<T> {
    let found = value.sql_type();
    T::from_value(value).ok_or_else(|| Error::Schema {
        table: model.table().to_owned(),
        column: model
            .fields
            .get(field)
            .map_or_else(String::new, |f| f.column.to_owned()),
        reason: format!(
            "the database returned {} for a field of type {}",
            found.as_str(),
            T::SQL_TYPE.as_str()
        ),
    })
}

/// One field of a [`CollectedRow`].
enum CollectedCell {
    Plain(Value),
    /// An encrypted field that is NULL (`None`).
    Null,
    /// An encrypted field's value encoding, at this range of the row's buffer.
    Encoded(std::ops::Range<usize>),
}

/// A row's values before sealing, one per model field in order: plain values
/// as they are, encrypted ones encoded (never sealed yet). Format 2 derives
/// the row key from which encrypted fields are present, so a row is collected
/// whole before its key is made. The encodings are zeroized on drop.
#[derive(Default)]
pub(crate) struct CollectedRow {
    cells: Vec<CollectedCell>,
    encoded: Vec<u8>,
}

impl CollectedRow {
    /// Collects `row` through its generated `write_row`, encoding in
    /// `scratch` (reused across rows, zeroized after each value).
    pub(crate) fn of<T: Encrypted>(row: &T, scratch: &mut Vec<u8>) -> Result<Self> {
        let mut collected = CollectedRow::default();
        row.write_row(&mut RowWriter {
            row: &mut collected,
            scratch,
        })?;
        if collected.cells.len() != T::model().fields.len() {
            return Err(Error::Schema {
                table: T::model().table().to_owned(),
                column: String::new(),
                reason: "write_row wrote another number of values than the model has fields".into(),
            });
        }
        Ok(collected)
    }

    /// Appends `bytes` to the buffer of encodings, never leaving a copy in
    /// memory freed by growing it.
    fn push_encoded(&mut self, bytes: &[u8]) -> std::ops::Range<usize> {
        let start = self.encoded.len();
        if self.encoded.capacity() - start < bytes.len() {
            let mut bigger = Vec::with_capacity((start + bytes.len()).max(2 * start).max(64));
            bigger.extend_from_slice(&self.encoded);
            self.encoded.zeroize();
            self.encoded = bigger;
        }
        self.encoded.extend_from_slice(bytes);
        start..self.encoded.len()
    }

    /// The logical names of the present (non-NULL) encrypted fields: what a
    /// format 2 row key binds.
    pub(crate) fn present(&self, model: &Model) -> rowseal_core::Result<FieldSet> {
        FieldSet::new(
            model
                .fields
                .iter()
                .zip(&self.cells)
                .filter(|(_, c)| matches!(c, CollectedCell::Encoded(_)))
                .map(|(f, _)| f.logical),
        )
    }

    /// This row with the fields `take` chooses replaced by `other`'s.
    pub(crate) fn merged(
        mut self,
        model: &Model,
        mut other: CollectedRow,
        take: impl Fn(&FieldDef) -> bool,
    ) -> Self {
        for (i, f) in model.fields.iter().enumerate() {
            if !take(f) {
                continue;
            }
            let cell = match other.cells.get_mut(i) {
                Some(c) => std::mem::replace(c, CollectedCell::Null),
                None => continue,
            };
            let cell = match cell {
                CollectedCell::Encoded(r) => {
                    CollectedCell::Encoded(self.push_encoded(other.encoded.get(r).unwrap_or(&[])))
                }
                c => c,
            };
            if let Some(slot) = self.cells.get_mut(i) {
                *slot = cell;
            }
        }
        self
    }

    /// Appends the column values of the fields whose column is in `only`
    /// (every field without it), in field order, sealing the encrypted ones
    /// with `key`; never a generated field's.
    pub(crate) fn seal_into(
        mut self,
        model: &Model,
        key: Option<&RowKey>,
        only: Option<&[&str]>,
        out: &mut Vec<Value>,
    ) -> Result<()> {
        let cells = std::mem::take(&mut self.cells);
        for (f, cell) in model.fields.iter().zip(cells) {
            // The database fills generated columns; rowseal never writes them.
            if f.generated || only.is_some_and(|o| !o.contains(&f.column)) {
                continue;
            }
            out.push(match cell {
                CollectedCell::Plain(v) => v,
                CollectedCell::Null => Value::Null(SqlType::Bytes),
                CollectedCell::Encoded(r) => {
                    let key = key.ok_or_else(|| Error::InvalidInput {
                        reason: "an encrypted field was written without a row key".into(),
                    })?;
                    let encoded = self.encoded.get(r).unwrap_or(&[]);
                    Value::Bytes(encoding::seal_encoded(
                        key,
                        FieldName::new(f.logical, f.column),
                        encoded,
                    )?)
                }
            });
        }
        Ok(())
    }
}

impl Drop for CollectedRow {
    fn drop(&mut self) {
        self.encoded.zeroize();
    }
}

/// Collects a row's column values for an insert or update, encoding the
/// encrypted fields (sealed once the whole row is known). Used by generated
/// code, which writes every field in the model's order.
pub struct RowWriter<'a> {
    row: &'a mut CollectedRow,
    scratch: &'a mut Vec<u8>,
}

impl RowWriter<'_> {
    /// A plain field.
    pub fn plain<T: PlainField>(&mut self, column: &str, value: &T) {
        let _ = column;
        self.row.cells.push(CollectedCell::Plain(value.to_value()));
    }

    /// A plain field of any type sqlx encodes (`sql_type = "..."`), bound as
    /// sqlx encodes it.
    pub fn passthrough<T: crate::PassthroughField>(&mut self, column: &str, value: &T) {
        let _ = column;
        self.row.cells.push(CollectedCell::Plain(value.to_custom()));
    }

    /// A plain field bound as sqlx encodes it, for one database only.
    fn custom(&mut self, column: &str, value: crate::value::CustomValue) {
        let _ = column;
        self.row
            .cells
            .push(CollectedCell::Plain(Value::Custom(value)));
    }

    /// A plain field of a type only PostgreSQL has (`sql_type = "...",
    /// database = "postgres"`).
    pub fn passthrough_postgres<T: crate::backend::OnPostgres + Clone + Send + Sync + 'static>(
        &mut self,
        column: &str,
        value: &T,
    ) {
        self.custom(
            column,
            crate::value::CustomValue::postgres_only(value.clone()),
        );
    }

    /// A plain field of a type only MySQL/MariaDB has.
    pub fn passthrough_mysql<T: crate::backend::OnMySql + Clone + Send + Sync + 'static>(
        &mut self,
        column: &str,
        value: &T,
    ) {
        self.custom(column, crate::value::CustomValue::mysql_only(value.clone()));
    }

    /// A plain field of a type only SQLite has.
    pub fn passthrough_sqlite<T: crate::backend::OnSqlite + Clone + Send + Sync + 'static>(
        &mut self,
        column: &str,
        value: &T,
    ) {
        self.custom(
            column,
            crate::value::CustomValue::sqlite_only(value.clone()),
        );
    }

    /// Takes the encoding in `scratch` (if `present`) and wipes it.
    fn take_encoded(&mut self, present: bool) {
        let cell = if present {
            CollectedCell::Encoded(self.row.push_encoded(self.scratch))
        } else {
            CollectedCell::Null
        };
        self.scratch.zeroize();
        self.row.cells.push(cell);
    }

    /// An encrypted field.
    pub fn encrypted<T: EncryptedField>(&mut self, column: &str, value: &T) -> Result<()> {
        let _ = column;
        let present = value.encode_field(self.scratch);
        self.take_encoded(present);
        Ok(())
    }

    /// An encrypted field in JSON encoding (`#[rowseal(encrypt, json)]`).
    #[cfg(feature = "json")]
    pub fn encrypted_json<T: serde::Serialize>(&mut self, column: &str, value: &T) -> Result<()> {
        self.encrypted_json_opt(column, Some(value))
    }

    /// An optional encrypted field in JSON encoding; `None` is NULL.
    #[cfg(feature = "json")]
    pub fn encrypted_json_opt<T: serde::Serialize>(
        &mut self,
        column: &str,
        value: Option<&T>,
    ) -> Result<()> {
        let present = match value {
            Some(v) => {
                crate::encoding::encode_json(v, self.scratch).map_err(|e| {
                    self.scratch.zeroize();
                    Error::Serialize {
                        column: column.to_owned(),
                        reason: e.classify_reason(),
                    }
                })?;
                true
            }
            None => false,
        };
        self.take_encoded(present);
        Ok(())
    }
}

#[cfg(feature = "json")]
trait ClassifyReason {
    fn classify_reason(&self) -> String;
}

#[cfg(feature = "json")]
impl ClassifyReason for serde_json::Error {
    /// Serialization errors come from the type's `Serialize` impl (for example
    /// a map with non-string keys); report their category only.
    fn classify_reason(&self) -> String {
        format!("{:?} error while serializing to JSON", self.classify())
    }
}

/// Opens one encrypted field's stored value with the row key: `Ok(None)` for
/// NULL. The one place the sqlx layer opens a field, for rows read from the
/// database ([`RowReader`]) and sealed rows ([`crate::SealedReader`]) alike.
pub(crate) fn open_field(
    key: Option<&RowKey>,
    table: &str,
    primary_key: &Value,
    name: FieldName<'_>,
    sealed: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let Some(b) = sealed else { return Ok(None) };
    let key = key.ok_or_else(|| Error::InvalidInput {
        reason: "an encrypted field was read without a row key".into(),
    })?;
    encoding::open_encoded(key, name, b)
        .map(Some)
        .map_err(|e| Error::Field {
            table: table.to_owned(),
            column: name.column.to_owned(),
            primary_key: primary_key.key_display(),
            source: Box::new(e),
        })
}

/// One column of a row being read: a plain value, or an encrypted column's
/// ciphertext borrowed from the database row (`None` for NULL).
pub(crate) enum Cell<'a> {
    Plain(Value),
    /// A plain column of any type sqlx decodes, at this position of the row:
    /// decoded to the field's own type by [`RowReader::passthrough`].
    Raw(usize),
    Sealed(Option<&'a [u8]>),
    /// An encrypted column and its legacy plaintext column.
    SealedOr(Option<&'a [u8]>, Value),
}

/// Reads a row's column values, in field order, opening encrypted ones with
/// the row key. Used by generated code.
pub struct RowReader<'a> {
    key: Option<&'a RowKey>,
    row: Option<crate::backend::AnyRow<'a>>,
    cells: std::vec::IntoIter<Cell<'a>>,
    fields: std::slice::Iter<'static, FieldDef>,
    table: &'a str,
    primary_key: &'a Value,
}

impl<'a> RowReader<'a> {
    /// `cells` holds one cell per field of `model`, in order.
    pub(crate) fn new(
        key: Option<&'a RowKey>,
        row: Option<crate::backend::AnyRow<'a>>,
        cells: Vec<Cell<'a>>,
        model: &'static Model,
        primary_key: &'a Value,
    ) -> Self {
        RowReader {
            key,
            row,
            cells: cells.into_iter(),
            fields: model.fields.iter(),
            table: model.table(),
            primary_key,
        }
    }

    /// The next cell and the names of its field (generated code reads every
    /// field in the model's order).
    fn next(&mut self, column: &str) -> Result<(Cell<'a>, FieldName<'static>)> {
        let name = self
            .fields
            .next()
            .map(|f| FieldName::new(f.logical, f.column));
        match (self.cells.next(), name) {
            (Some(cell), Some(name)) => Ok((cell, name)),
            _ => Err(Error::Schema {
                table: self.table.to_owned(),
                column: column.to_owned(),
                reason: "fewer values than fields".into(),
            }),
        }
    }

    fn decode_err(&self, column: &str, reason: &'static str) -> Error {
        Error::Decode {
            table: self.table.to_owned(),
            column: column.to_owned(),
            primary_key: self.primary_key.key_display(),
            reason,
        }
    }

    /// A plain field.
    pub fn plain<T: PlainField>(&mut self, column: &str) -> Result<T> {
        let v = match self.next(column)?.0 {
            Cell::Plain(v) => v,
            Cell::Raw(_) => Value::Null(SqlType::Other),
            Cell::Sealed(_) | Cell::SealedOr(..) => Value::Null(SqlType::Bytes),
        };
        let found = v.sql_type();
        T::from_value(v).ok_or_else(|| Error::Schema {
            table: self.table.to_owned(),
            column: column.to_owned(),
            reason: format!(
                "expected {}{}, found {}",
                T::SQL_TYPE.as_str(),
                if T::NULLABLE { " or NULL" } else { "" },
                found.as_str()
            ),
        })
    }

    /// A plain field of any type sqlx decodes (`sql_type = "..."`), decoded
    /// by sqlx from the row as it is.
    pub fn passthrough<T: crate::PassthroughField>(&mut self, column: &str) -> Result<T> {
        self.raw(column, |row, idx| row.decode::<T>(idx))
    }

    /// A plain field of a type only PostgreSQL has.
    pub fn passthrough_postgres<T: crate::backend::OnPostgres>(
        &mut self,
        column: &str,
    ) -> Result<T> {
        self.raw(column, |row, idx| row.decode_postgres::<T>(idx))
    }

    /// A plain field of a type only MySQL/MariaDB has.
    pub fn passthrough_mysql<T: crate::backend::OnMySql>(&mut self, column: &str) -> Result<T> {
        self.raw(column, |row, idx| row.decode_mysql::<T>(idx))
    }

    /// A plain field of a type only SQLite has.
    pub fn passthrough_sqlite<T: crate::backend::OnSqlite>(&mut self, column: &str) -> Result<T> {
        self.raw(column, |row, idx| row.decode_sqlite::<T>(idx))
    }

    /// The next field, decoded from the row by `decode`.
    fn raw<T>(
        &mut self,
        column: &str,
        decode: impl FnOnce(&crate::backend::AnyRow<'a>, usize) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<T> {
        let idx = match self.next(column)?.0 {
            Cell::Raw(idx) => idx,
            _ => {
                return Err(Error::Schema {
                    table: self.table.to_owned(),
                    column: column.to_owned(),
                    reason: "a sql_type field was not read as one".into(),
                })
            }
        };
        let row = self.row.as_ref().ok_or_else(|| Error::Schema {
            table: self.table.to_owned(),
            column: column.to_owned(),
            reason: "a sql_type field read without its row".into(),
        })?;
        decode(row, idx).map_err(|e| Error::Schema {
            table: self.table.to_owned(),
            column: column.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Opens an encrypted column: `Ok(None)` for NULL. The plaintext buffer is
    /// zeroized by the caller.
    fn open(&mut self, column: &str) -> Result<Option<Vec<u8>>> {
        let (cell, name) = self.next(column)?;
        self.open_cell(name, cell)
    }

    fn open_cell(&self, name: FieldName<'_>, cell: Cell<'a>) -> Result<Option<Vec<u8>>> {
        let column = name.column;
        let sealed = match cell {
            Cell::Sealed(b) | Cell::SealedOr(b, _) => b,
            Cell::Plain(Value::Null(_)) => None,
            Cell::Plain(Value::Bytes(_)) => {
                return Err(Error::Schema {
                    table: self.table.to_owned(),
                    column: column.to_owned(),
                    reason: "a plain bytes column was read as an encrypted field".into(),
                })
            }
            Cell::Raw(_) => {
                return Err(Error::Schema {
                    table: self.table.to_owned(),
                    column: column.to_owned(),
                    reason: "a sql_type column was read as an encrypted field".into(),
                })
            }
            Cell::Plain(other) => {
                return Err(Error::Schema {
                    table: self.table.to_owned(),
                    column: column.to_owned(),
                    reason: format!(
                        "an encrypted column must be bytes, found {}",
                        other.sql_type().as_str()
                    ),
                })
            }
        };
        open_field(self.key, self.table, self.primary_key, name, sealed)
    }

    /// An encrypted field.
    pub fn encrypted<T: EncryptedField>(&mut self, column: &str) -> Result<T> {
        let plain = self.open(column)?;
        T::decode_field_owned(plain).map_err(|e| self.decode_err(column, e))
    }

    /// An encrypted field with a legacy plaintext column
    /// (`plaintext_column = "..."`): the decrypted ciphertext when the
    /// ciphertext column is not NULL, else the plaintext column's value.
    pub fn encrypted_or_plaintext<T: EncryptedField + PlainField>(
        &mut self,
        column: &str,
    ) -> Result<T> {
        let (cell, name) = self.next(column)?;
        match cell {
            Cell::SealedOr(None, legacy) => {
                let (found, null) = (legacy.sql_type(), legacy.is_null());
                T::from_value(legacy).ok_or_else(|| {
                    if null {
                        self.decode_err(column, "NULL in both the encrypted and the plaintext column of a field that is not an Option")
                    } else {
                        Error::Schema {
                            table: self.table.to_owned(),
                            column: column.to_owned(),
                            reason: format!(
                                "the plaintext column should hold {}, found {}",
                                T::SQL_TYPE.as_str(),
                                found.as_str()
                            ),
                        }
                    }
                })
            }
            cell => {
                let plain = self.open_cell(name, cell)?;
                T::decode_field_owned(plain).map_err(|e| self.decode_err(column, e))
            }
        }
    }

    /// An encrypted field in JSON encoding.
    #[cfg(feature = "json")]
    pub fn encrypted_json<T: serde::de::DeserializeOwned>(&mut self, column: &str) -> Result<T> {
        match self.encrypted_json_opt(column)? {
            Some(v) => Ok(v),
            None => Err(self.decode_err(column, "NULL in a column whose field is not an Option")),
        }
    }

    /// An optional encrypted field in JSON encoding.
    #[cfg(feature = "json")]
    pub fn encrypted_json_opt<T: serde::de::DeserializeOwned>(
        &mut self,
        column: &str,
    ) -> Result<Option<T>> {
        let mut plain = self.open(column)?;
        let r = match plain.as_deref() {
            None => Ok(None),
            Some(b) => crate::encoding::decode_json(b)
                .map(Some)
                .map_err(|e| self.decode_err(column, e)),
        };
        plain.zeroize();
        r
    }
}
