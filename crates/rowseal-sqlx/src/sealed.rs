//! Sealed rows: a model's row as the database stores it, filled by sqlx
//! itself (`FromRow`, `query_as!`) and opened later by
//! [`Encryptor::open`](crate::Encryptor::open), which checks the tenant.
//!
//! `#[derive(Encrypted)]` generates the sealed type of each model
//! (`<Model>Sealed`); this module holds the trait it implements and the
//! reader its generated `open_with` decrypts through.

use std::borrow::Cow;

use rowseal_core::{FieldName, RowKey};

use crate::encoding::EncryptedField;
use crate::error::{Error, Result};
use crate::model::{open_field, Encrypted, Model};
use crate::value::Value;

/// A model's row as stored: plain columns in the clear, encrypted columns as
/// their sealed bytes, and the key header. Implemented by the `<Model>Sealed`
/// type `#[derive(Encrypted)]` generates, which also implements
/// `sqlx::FromRow` on every supported database and fits `sqlx::query_as!`.
///
/// Nothing is decrypted until [`Encryptor::open`](crate::Encryptor::open)
/// (or [`open_all`](crate::Encryptor::open_all)) opens it for a tenant: a
/// sealed row of another tenant is refused with
/// [`Error::TenantMismatch`] before any key is fetched.
///
/// The methods are for the encryptor and generated code.
pub trait Sealed: Send + Sized + 'static {
    /// The model the row opens into.
    type Model: Encrypted;

    /// The row's tenant, as its canonical id
    /// ([`TenantField::tenant_id`](crate::TenantField::tenant_id)).
    fn tenant_id(&self) -> Cow<'_, str>;

    /// The row's primary key.
    fn primary_key_value(&self) -> Value;

    /// The row's key header (`None` if the column is NULL).
    fn header(&self) -> Option<&[u8]>;

    /// The stored bytes of field number `field` (a position in
    /// [`Model::fields`]): `None` for NULL and for a plain field.
    fn ciphertext(&self, field: usize) -> Option<&[u8]>;

    /// The model: plain fields moved as they are, encrypted ones opened
    /// through `reader`.
    fn open_with(self, reader: &SealedReader<'_>) -> Result<Self::Model>;
}

/// Opens the encrypted fields of one sealed row with its row key. Made by
/// the encryptor; used by generated code.
pub struct SealedReader<'a> {
    key: Option<&'a RowKey>,
    model: &'static Model,
    primary_key: &'a Value,
}

impl<'a> SealedReader<'a> {
    pub(crate) fn new(
        key: Option<&'a RowKey>,
        model: &'static Model,
        primary_key: &'a Value,
    ) -> Self {
        SealedReader {
            key,
            model,
            primary_key,
        }
    }

    fn open(&self, field: usize, sealed: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let f = self.field(field)?;
        open_field(
            self.key,
            self.model.table(),
            self.primary_key,
            FieldName::new(f.logical, f.column),
            sealed,
        )
    }

    fn field(&self, field: usize) -> Result<&'static crate::FieldDef> {
        self.model.fields.get(field).ok_or_else(|| Error::Schema {
            table: self.model.table().to_owned(),
            column: String::new(),
            reason: format!("the model has no field number {field}"),
        })
    }

    fn decode_err(&self, field: usize, reason: &'static str) -> Error {
        Error::Decode {
            table: self.model.table().to_owned(),
            column: self
                .model
                .fields
                .get(field)
                .map_or_else(String::new, |f| f.column.to_owned()),
            primary_key: self.primary_key.key_display(),
            reason,
        }
    }

    /// Encrypted field number `field`, stored as `sealed`.
    pub fn encrypted<T: EncryptedField>(&self, field: usize, sealed: Option<&[u8]>) -> Result<T> {
        let plain = self.open(field, sealed)?;
        T::decode_field_owned(plain).map_err(|e| self.decode_err(field, e))
    }

    /// Encrypted field number `field` in JSON encoding.
    #[cfg(feature = "json")]
    pub fn encrypted_json<T: serde::de::DeserializeOwned>(
        &self,
        field: usize,
        sealed: Option<&[u8]>,
    ) -> Result<T> {
        match self.encrypted_json_opt(field, sealed)? {
            Some(v) => Ok(v),
            None => Err(self.decode_err(field, "NULL in a column whose field is not an Option")),
        }
    }

    /// Optional encrypted field number `field` in JSON encoding.
    #[cfg(feature = "json")]
    pub fn encrypted_json_opt<T: serde::de::DeserializeOwned>(
        &self,
        field: usize,
        sealed: Option<&[u8]>,
    ) -> Result<Option<T>> {
        let mut plain = self.open(field, sealed)?;
        let r = match plain.as_deref() {
            None => Ok(None),
            Some(b) => crate::encoding::decode_json(b)
                .map(Some)
                .map_err(|e| self.decode_err(field, e)),
        };
        zeroize::Zeroize::zeroize(&mut plain);
        r
    }
}

/// Column `prefix` + `column` of `row`, decoded by sqlx (generated
/// `FromRow` impls).
#[doc(hidden)]
pub fn __sealed_column<'r, T, R>(
    row: &'r R,
    prefix: &str,
    column: &str,
) -> std::result::Result<T, sqlx::Error>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
{
    if prefix.is_empty() {
        row.try_get(column)
    } else {
        row.try_get(format!("{prefix}{column}").as_str())
    }
}
