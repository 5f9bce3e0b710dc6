//! Column values as rowseal moves them between models and sqlx: [`Value`], its
//! [`SqlType`], and the traits that plain (unencrypted) fields, the tenant field
//! and the primary-key field implement.

use std::borrow::Cow;
use std::fmt;

use crate::index_source::IndexSource;

/// The SQL type of a column, independent of the database. Encrypted columns
/// are always [`SqlType::Bytes`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// `BOOLEAN`.
    Bool,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Text.
    Text,
    /// Bytes (`BYTEA` / `BLOB`).
    Bytes,
    /// UUID.
    Uuid,
    /// Calendar date (`chrono::NaiveDate`).
    Date,
    /// Date and time without time zone (`chrono::NaiveDateTime`).
    DateTime,
    /// An instant (`chrono::DateTime<Utc>`).
    Timestamptz,
    /// Calendar date (`time::Date`).
    TimeDate,
    /// Date and time without time zone (`time::PrimitiveDateTime`).
    TimeDateTime,
    /// An instant (`time::OffsetDateTime`).
    TimeTimestamptz,
    /// JSON.
    Json,
    /// A plain column of any type sqlx encodes and decodes for the database
    /// (`#[rowseal(sql_type = "...")]`: a `sqlx::Type` enum, a newtype, a
    /// `Decimal`); its SQL type is the one the attribute names.
    Other,
}

impl SqlType {
    /// The name used in the schema registry.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlType::Bool => "bool",
            SqlType::I16 => "i16",
            SqlType::I32 => "i32",
            SqlType::I64 => "i64",
            SqlType::F32 => "f32",
            SqlType::F64 => "f64",
            SqlType::Text => "text",
            SqlType::Bytes => "bytes",
            SqlType::Uuid => "uuid",
            SqlType::Date => "date",
            SqlType::DateTime => "datetime",
            SqlType::Timestamptz => "timestamptz",
            SqlType::TimeDate => "time_date",
            SqlType::TimeDateTime => "time_datetime",
            SqlType::TimeTimestamptz => "time_timestamptz",
            SqlType::Json => "json",
            SqlType::Other => "other",
        }
    }

    /// Whether a blind index can cover a plain column of this type (whether
    /// [`Value::index_text`] gives text for its values).
    pub fn is_indexable(self) -> bool {
        matches!(
            self,
            SqlType::Text | SqlType::I16 | SqlType::I32 | SqlType::I64
        )
    }

    /// The type with this registry name (the inverse of [`SqlType::as_str`]).
    pub fn from_name(name: &str) -> Option<SqlType> {
        SqlType::ALL.iter().copied().find(|t| t.as_str() == name)
    }

    /// Every type.
    pub const ALL: &'static [SqlType] = &[
        SqlType::Bool,
        SqlType::I16,
        SqlType::I32,
        SqlType::I64,
        SqlType::F32,
        SqlType::F64,
        SqlType::Text,
        SqlType::Bytes,
        SqlType::Uuid,
        SqlType::Date,
        SqlType::DateTime,
        SqlType::Timestamptz,
        SqlType::TimeDate,
        SqlType::TimeDateTime,
        SqlType::TimeTimestamptz,
        SqlType::Json,
        SqlType::Other,
    ];
}

/// One column value. Encrypted fields only ever appear here as their
/// ciphertext ([`Value::Bytes`]), never as plaintext.
///
/// `Debug` shows the type only, never the value.
#[non_exhaustive]
#[derive(Clone, PartialEq)]
pub enum Value {
    /// SQL NULL of a type.
    Null(SqlType),
    /// A boolean.
    Bool(bool),
    /// A 16-bit integer.
    I16(i16),
    /// A 32-bit integer.
    I32(i32),
    /// A 64-bit integer.
    I64(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A UUID.
    #[cfg(feature = "uuid")]
    Uuid(uuid::Uuid),
    /// A chrono date.
    #[cfg(feature = "chrono")]
    ChronoDate(chrono::NaiveDate),
    /// A chrono date and time.
    #[cfg(feature = "chrono")]
    ChronoDateTime(chrono::NaiveDateTime),
    /// A chrono UTC instant.
    #[cfg(feature = "chrono")]
    ChronoUtc(chrono::DateTime<chrono::Utc>),
    /// A time date.
    #[cfg(feature = "time")]
    TimeDate(time::Date),
    /// A time date and time.
    #[cfg(feature = "time")]
    TimeDateTime(time::PrimitiveDateTime),
    /// A time instant with offset.
    #[cfg(feature = "time")]
    TimeOffset(time::OffsetDateTime),
    /// JSON.
    #[cfg(feature = "json")]
    Json(serde_json::Value),
    /// A value of a [`PassthroughField`], bound as sqlx encodes it.
    Custom(CustomValue),
}

/// A value of a [`PassthroughField`] inside a [`Value`]: bound as sqlx
/// encodes it for the database. Opaque; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct CustomValue(std::sync::Arc<dyn BindAny>);

impl CustomValue {
    fn new<T: PassthroughField>(value: T) -> Self {
        CustomValue(std::sync::Arc::new(Passthrough(value)))
    }

    pub(crate) fn bind(
        &self,
        args: crate::backend::AnyArguments<'_, '_>,
    ) -> Result<(), sqlx::error::BoxDynError> {
        self.0.bind(args)
    }
}

impl PartialEq for CustomValue {
    /// The same value only (the types need not be comparable).
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Binds a value of some type to the arguments of whichever database.
trait BindAny: Send + Sync {
    fn bind(
        &self,
        args: crate::backend::AnyArguments<'_, '_>,
    ) -> Result<(), sqlx::error::BoxDynError>;
}

struct Passthrough<T>(T);

impl<T: PassthroughField> BindAny for Passthrough<T> {
    fn bind(
        &self,
        args: crate::backend::AnyArguments<'_, '_>,
    ) -> Result<(), sqlx::error::BoxDynError> {
        #[allow(unused_imports)]
        use sqlx::Arguments as _;
        match args {
            #[cfg(feature = "postgres")]
            crate::backend::AnyArguments::Postgres(a) => a.add(self.0.clone()),
            #[cfg(feature = "mysql")]
            crate::backend::AnyArguments::MySql(a) => a.add(self.0.clone()),
            #[cfg(feature = "sqlite")]
            crate::backend::AnyArguments::Sqlite(a) => a.add(self.0.clone()),
            #[allow(unreachable_patterns)]
            _ => Err("no database driver is enabled".into()),
        }
    }
}

/// Values of types only one database has (`#[rowseal(sql_type = "...",
/// database = "postgres")]`): bound there, refused with a typed error by
/// any other database.
macro_rules! only_on {
    ($wrapper:ident, $bound:path, $variant:ident, $feature:literal, $name:literal, $ctor:ident) => {
        struct $wrapper<T>(T);

        impl<T: $bound + Clone + Send + Sync + 'static> BindAny for $wrapper<T> {
            fn bind(
                &self,
                args: crate::backend::AnyArguments<'_, '_>,
            ) -> Result<(), sqlx::error::BoxDynError> {
                #[allow(unused_imports)]
                use sqlx::Arguments as _;
                match args {
                    #[cfg(feature = $feature)]
                    crate::backend::AnyArguments::$variant(a) => a.add(self.0.clone()),
                    #[allow(unreachable_patterns)]
                    _ => Err(concat!("a column of this type is for ", $name, " only").into()),
                }
            }
        }

        impl CustomValue {
            pub(crate) fn $ctor<T: $bound + Clone + Send + Sync + 'static>(value: T) -> Self {
                CustomValue(std::sync::Arc::new($wrapper(value)))
            }
        }
    };
}

only_on!(
    PostgresOnly,
    crate::backend::OnPostgres,
    Postgres,
    "postgres",
    "PostgreSQL",
    postgres_only
);
only_on!(
    MySqlOnly,
    crate::backend::OnMySql,
    MySql,
    "mysql",
    "MySQL/MariaDB",
    mysql_only
);
only_on!(
    SqliteOnly,
    crate::backend::OnSqlite,
    Sqlite,
    "sqlite",
    "SQLite",
    sqlite_only
);

/// A plain field stored as sqlx encodes it (`#[rowseal(sql_type =
/// "...")]`): any type that sqlx encodes and decodes on every database
/// rowseal-sqlx is built for (its `postgres`, `mysql`, `sqlite` features),
/// such as a `#[derive(sqlx::Type)]` enum or newtype, or `Option` of one.
/// rowseal passes it through untouched. A type only one database has (a
/// PostgreSQL array or enum type) is declared with `database = "postgres"`
/// instead, and needs only that database's bounds.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a `sql_type` field: sqlx does not encode and decode it on every database this build of rowseal supports",
    note = "a `sql_type` field's type must implement sqlx::Type, Encode and Decode for each enabled database (features postgres, mysql, sqlite), and Clone"
)]
pub trait PassthroughField:
    crate::backend::OnPostgres
    + crate::backend::OnMySql
    + crate::backend::OnSqlite
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The value to bind.
    fn to_custom(&self) -> Value {
        Value::Custom(CustomValue::new(self.clone()))
    }
}

impl<T> PassthroughField for T where
    T: crate::backend::OnPostgres
        + crate::backend::OnMySql
        + crate::backend::OnSqlite
        + Clone
        + Send
        + Sync
        + 'static
{
}

impl Value {
    /// The SQL type.
    pub fn sql_type(&self) -> SqlType {
        match self {
            Value::Null(t) => *t,
            Value::Bool(_) => SqlType::Bool,
            Value::I16(_) => SqlType::I16,
            Value::I32(_) => SqlType::I32,
            Value::I64(_) => SqlType::I64,
            Value::F32(_) => SqlType::F32,
            Value::F64(_) => SqlType::F64,
            Value::Text(_) => SqlType::Text,
            Value::Bytes(_) => SqlType::Bytes,
            #[cfg(feature = "uuid")]
            Value::Uuid(_) => SqlType::Uuid,
            #[cfg(feature = "chrono")]
            Value::ChronoDate(_) => SqlType::Date,
            #[cfg(feature = "chrono")]
            Value::ChronoDateTime(_) => SqlType::DateTime,
            #[cfg(feature = "chrono")]
            Value::ChronoUtc(_) => SqlType::Timestamptz,
            #[cfg(feature = "time")]
            Value::TimeDate(_) => SqlType::TimeDate,
            #[cfg(feature = "time")]
            Value::TimeDateTime(_) => SqlType::TimeDateTime,
            #[cfg(feature = "time")]
            Value::TimeOffset(_) => SqlType::TimeTimestamptz,
            #[cfg(feature = "json")]
            Value::Json(_) => SqlType::Json,
            Value::Custom(_) => SqlType::Other,
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null(_))
    }

    /// The bytes a primary-key value is bound into ciphertexts as: integers as
    /// 8 big-endian bytes whatever their width, text as UTF-8, UUIDs as their
    /// 16 bytes, bytes as they are. `None` for other types.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::I16(v) => Some(i64::from(*v).to_be_bytes().to_vec()),
            Value::I32(v) => Some(i64::from(*v).to_be_bytes().to_vec()),
            Value::I64(v) => Some(v.to_be_bytes().to_vec()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            Value::Bytes(b) => Some(b.clone()),
            #[cfg(feature = "uuid")]
            Value::Uuid(u) => Some(u.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// The text a blind index covers for this value of a plain column (what
    /// the field type's `IndexSource` gives): text as is, integers in
    /// decimal; `Ok(None)` for NULL. Fails for a type no index can cover.
    pub fn index_text(&self) -> Result<Option<Cow<'_, str>>, &'static str> {
        match self {
            Value::Null(_) => Ok(None),
            Value::Text(s) => Ok(s.index_str()),
            Value::I16(v) => Ok(v.index_str()),
            Value::I32(v) => Ok(v.index_str()),
            Value::I64(v) => Ok(v.index_str()),
            _ => Err("a blind index cannot cover this value type"),
        }
    }

    /// A printable form of a primary-key value, for error messages (primary
    /// keys are stored in the clear, so this reveals nothing the table does
    /// not). Other values print as their type.
    pub fn key_display(&self) -> String {
        match self {
            Value::I16(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            #[cfg(feature = "uuid")]
            Value::Uuid(u) => u.to_string(),
            other => format!("<{}>", other.sql_type().as_str()),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() {
            write!(f, "Value::Null({})", self.sql_type().as_str())
        } else {
            write!(f, "Value({})", self.sql_type().as_str())
        }
    }
}

/// A type that can be a plain (unencrypted) field of an encrypted model.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a plain field of a rowseal model",
    note = "plain fields may be String, Vec<u8>, bool, i16, i32, i64, f32, f64, uuid::Uuid, chrono or time dates and timestamps, serde_json::Value, or an Option of these"
)]
pub trait PlainField: Sized {
    /// The column type.
    const SQL_TYPE: SqlType;
    /// Whether the column may be NULL.
    const NULLABLE: bool = false;
    /// The value to bind.
    fn to_value(&self) -> Value;
    /// The value read back. `None` if the value has another type (or is NULL
    /// for a non-optional field).
    fn from_value(value: Value) -> Option<Self>;
}

macro_rules! plain {
    ($($(#[$m:meta])* $t:ty => $st:ident, $var:ident;)*) => {$(
        $(#[$m])*
        impl PlainField for $t {
            const SQL_TYPE: SqlType = SqlType::$st;
            #[allow(clippy::clone_on_copy)]
            fn to_value(&self) -> Value {
                Value::$var(self.clone())
            }
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}

plain! {
    bool => Bool, Bool;
    i16 => I16, I16;
    i32 => I32, I32;
    i64 => I64, I64;
    f32 => F32, F32;
    f64 => F64, F64;
    String => Text, Text;
    Vec<u8> => Bytes, Bytes;
    #[cfg(feature = "uuid")]
    uuid::Uuid => Uuid, Uuid;
    #[cfg(feature = "chrono")]
    chrono::NaiveDate => Date, ChronoDate;
    #[cfg(feature = "chrono")]
    chrono::NaiveDateTime => DateTime, ChronoDateTime;
    #[cfg(feature = "chrono")]
    chrono::DateTime<chrono::Utc> => Timestamptz, ChronoUtc;
    #[cfg(feature = "time")]
    time::Date => TimeDate, TimeDate;
    #[cfg(feature = "time")]
    time::PrimitiveDateTime => TimeDateTime, TimeDateTime;
    #[cfg(feature = "time")]
    time::OffsetDateTime => TimeTimestamptz, TimeOffset;
    #[cfg(feature = "json")]
    serde_json::Value => Json, Json;
}

impl<T: PlainField> PlainField for Option<T> {
    const SQL_TYPE: SqlType = T::SQL_TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null(T::SQL_TYPE),
        }
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null(_) => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A type that can hold a model's tenant: `String`, `uuid::Uuid`, `i64`,
/// `i32`, or a newtype over one of them that implements this trait.
///
/// Every tenant has one canonical id, its [`tenant_id`](Self::tenant_id):
/// the text the key hierarchy keys the tenant by and the tenant arguments of
/// [`Encryptor`](crate::Encryptor) take. `String` is its own id (so tables of
/// text tenants read as before), a UUID is its lowercase hyphenated form
/// (what `Uuid`'s `Display` prints), an integer its decimal form. The same
/// tenant therefore has the same keys whichever type a model stores it as.
///
/// A newtype implements [`PlainField`] and this trait by delegating:
///
/// ```
/// use std::borrow::Cow;
/// use rowseal_sqlx::{PlainField, SqlType, TenantField, Value};
///
/// struct OrgId(i64);
///
/// impl PlainField for OrgId {
///     const SQL_TYPE: SqlType = SqlType::I64;
///     fn to_value(&self) -> Value { self.0.to_value() }
///     fn from_value(v: Value) -> Option<Self> { i64::from_value(v).map(OrgId) }
/// }
///
/// impl TenantField for OrgId {
///     fn tenant_id(&self) -> Cow<'_, str> { self.0.tenant_id() }
/// }
///
/// assert_eq!(OrgId(42).tenant_id(), "42");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a rowseal tenant",
    label = "the field named by #[rowseal(tenant = ...)]",
    note = "tenants may be String, uuid::Uuid, i64, i32, or a newtype over one of them implementing `TenantField`"
)]
pub trait TenantField: PlainField {
    /// The tenant's canonical id.
    fn tenant_id(&self) -> Cow<'_, str>;
}

impl TenantField for String {
    fn tenant_id(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl TenantField for i64 {
    fn tenant_id(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}

impl TenantField for i32 {
    fn tenant_id(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}

#[cfg(feature = "uuid")]
impl TenantField for uuid::Uuid {
    fn tenant_id(&self) -> Cow<'_, str> {
        Cow::Owned(self.hyphenated().to_string())
    }
}

/// The canonical tenant id of a tenant column's value (see
/// [`TenantField::tenant_id`]); `None` for NULL or a type no tenant has.
pub(crate) fn tenant_id_of(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) => Some(s.clone()),
        Value::I64(v) => Some(v.to_string()),
        Value::I32(v) => Some(v.to_string()),
        #[cfg(feature = "uuid")]
        Value::Uuid(u) => Some(u.hyphenated().to_string()),
        _ => None,
    }
}

/// The value to bind for tenant `id` (a canonical id) against a tenant
/// column of type `t`: the inverse of [`tenant_id_of`]. Fails for text that
/// is not the canonical id of any value of that type (`"0042"`, an
/// uppercase UUID): such a tenant has no rows and no keys.
pub(crate) fn tenant_value(t: SqlType, id: &str) -> Option<Value> {
    let v = match t {
        SqlType::Text => Value::Text(id.to_owned()),
        SqlType::I64 => Value::I64(id.parse().ok()?),
        SqlType::I32 => Value::I32(id.parse().ok()?),
        #[cfg(feature = "uuid")]
        SqlType::Uuid => Value::Uuid(uuid::Uuid::parse_str(id).ok()?),
        _ => return None,
    };
    // Only the canonical form: `+42`, `042` or a braced UUID would be a
    // second name for one tenant, with keys of its own.
    (tenant_id_of(&v).as_deref() == Some(id)).then_some(v)
}

/// A type that can be a model's primary key: integers, `String`, `Vec<u8>`,
/// `uuid::Uuid`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a rowseal primary key",
    label = "the field named by #[rowseal(primary_key = ...)]",
    note = "primary keys may be i16, i32, i64, String, Vec<u8> or uuid::Uuid (not optional)"
)]
pub trait PrimaryKeyField: PlainField {
    /// The value to bind.
    fn key_value(&self) -> Value {
        self.to_value()
    }
}

impl PrimaryKeyField for i16 {}
impl PrimaryKeyField for i32 {}
impl PrimaryKeyField for i64 {}
impl PrimaryKeyField for String {}
impl PrimaryKeyField for Vec<u8> {}
#[cfg(feature = "uuid")]
impl PrimaryKeyField for uuid::Uuid {}
