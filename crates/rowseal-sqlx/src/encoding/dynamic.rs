//! The dynamic side of the value encoding: stored bytes to a typed value
//! without knowing the field's Rust type (what the command-line tool sees),
//! and a SQL value to stored bytes. Every conversion calls the same
//! [`EncryptedValue`] and [`IndexSource`] implementations that generated code
//! uses, so the two paths cannot drift apart.

use std::borrow::Cow;
use std::fmt;

use zeroize::Zeroize;

use super::{DecodeError, EncryptedField, EncryptedValue, ValueType, ENCODING_V1};
use crate::index_source::IndexSource;
use crate::value::Value;

macro_rules! decoded_values {
    ($($(#[$cfg:meta])* $variant:ident($t:ty);)*) => {
        /// A decrypted field value of any encoded type, as [`decode`] returns
        /// it. `Debug` shows the type only; text and bytes are zeroized on
        /// drop.
        #[derive(Clone, PartialEq)]
        #[non_exhaustive]
        pub enum DecodedValue {
            $(
                $(#[$cfg])*
                #[doc = concat!("A `", stringify!($t), "`.")]
                $variant($t),
            )*
            /// The JSON text of a `#[rowseal(encrypt, json)]` field (its Rust
            /// type is the application's).
            Json(String),
        }

        impl DecodedValue {
            /// The encoded type.
            pub fn value_type(&self) -> ValueType {
                match self {
                    $($(#[$cfg])* DecodedValue::$variant(_) => <$t as EncryptedValue>::TYPE,)*
                    DecodedValue::Json(_) => ValueType::Json,
                }
            }
        }

        $(
            $(#[$cfg])*
            impl From<$t> for DecodedValue {
                fn from(v: $t) -> Self {
                    DecodedValue::$variant(v)
                }
            }
        )*

        /// Decodes a decrypted value (the whole encoding: version, tag,
        /// payload) whatever its type. Fails on an unknown version or tag, a
        /// malformed payload, or a type whose crate feature (`uuid`, `chrono`,
        /// `time`, `json`) this build lacks. Never quotes the bytes.
        pub fn decode(bytes: &[u8]) -> Result<DecodedValue, DecodeError> {
            let ty = match bytes {
                [ENCODING_V1, tag, ..] => {
                    ValueType::from_tag(*tag).ok_or("unknown value type")?
                }
                [_, _, ..] => return Err("unknown value encoding version"),
                _ => return Err("value encoding too short"),
            };
            $(
                $(#[$cfg])*
                if ty == <$t as EncryptedValue>::TYPE {
                    return <$t as EncryptedField>::decode_field(Some(bytes))
                        .map(DecodedValue::$variant);
                }
            )*
            if ty == ValueType::Json {
                let text = std::str::from_utf8(super::payload(bytes, ValueType::Json)?)
                    .map_err(|_| "text is not UTF-8")?;
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|_| "not valid JSON")?;
                return Ok(DecodedValue::Json(text.to_owned()));
            }
            Err("this build of rowseal-sqlx lacks the feature for the value's type")
        }
    };
}

decoded_values! {
    String(String);
    Bytes(Vec<u8>);
    Bool(bool);
    I8(i8);
    I16(i16);
    I32(i32);
    I64(i64);
    I128(i128);
    U8(u8);
    U16(u16);
    U32(u32);
    U64(u64);
    U128(u128);
    F32(f32);
    F64(f64);
    #[cfg(feature = "uuid")]
    Uuid(uuid::Uuid);
    #[cfg(feature = "chrono")]
    ChronoNaiveDate(chrono::NaiveDate);
    #[cfg(feature = "chrono")]
    ChronoNaiveTime(chrono::NaiveTime);
    #[cfg(feature = "chrono")]
    ChronoNaiveDateTime(chrono::NaiveDateTime);
    #[cfg(feature = "chrono")]
    ChronoDateTimeUtc(chrono::DateTime<chrono::Utc>);
    #[cfg(feature = "time")]
    TimeDate(time::Date);
    #[cfg(feature = "time")]
    TimeTime(time::Time);
    #[cfg(feature = "time")]
    TimePrimitiveDateTime(time::PrimitiveDateTime);
    #[cfg(feature = "time")]
    TimeOffsetDateTime(time::OffsetDateTime);
    #[cfg(feature = "json")]
    JsonValue(serde_json::Value);
}

impl DecodedValue {
    /// The text a blind index covers (before normalization), exactly as the
    /// field's [`IndexSource`] gives it: text as is, integers in decimal.
    /// `None` for a type no blind index can cover.
    pub fn index_text(&self) -> Option<Cow<'_, str>> {
        match self {
            DecodedValue::String(v) => v.index_str(),
            DecodedValue::I16(v) => v.index_str(),
            DecodedValue::I32(v) => v.index_str(),
            DecodedValue::I64(v) => v.index_str(),
            DecodedValue::U16(v) => v.index_str(),
            DecodedValue::U32(v) => v.index_str(),
            DecodedValue::U64(v) => v.index_str(),
            _ => None,
        }
    }

    /// The value as a SQL value of the same meaning, for the types that map
    /// onto one without loss: text, bytes, booleans, signed integers up to
    /// 64 bits (`i8` widened to `i16`), floats, UUIDs, and JSON (as its
    /// text). `None` for the others (dates, times, unsigned and 128-bit
    /// integers).
    pub fn into_sql_value(mut self) -> Option<Value> {
        Some(match &mut self {
            DecodedValue::String(s) | DecodedValue::Json(s) => Value::Text(std::mem::take(s)),
            DecodedValue::Bytes(b) => Value::Bytes(std::mem::take(b)),
            DecodedValue::Bool(v) => Value::Bool(*v),
            DecodedValue::I8(v) => Value::I16(i16::from(*v)),
            DecodedValue::I16(v) => Value::I16(*v),
            DecodedValue::I32(v) => Value::I32(*v),
            DecodedValue::I64(v) => Value::I64(*v),
            DecodedValue::F32(v) => Value::F32(*v),
            DecodedValue::F64(v) => Value::F64(*v),
            #[cfg(feature = "uuid")]
            DecodedValue::Uuid(v) => Value::Uuid(*v),
            #[cfg(feature = "json")]
            DecodedValue::JsonValue(v) => Value::Text(v.to_string()),
            _ => return None,
        })
    }
}

impl Drop for DecodedValue {
    fn drop(&mut self) {
        match self {
            DecodedValue::String(s) | DecodedValue::Json(s) => s.zeroize(),
            DecodedValue::Bytes(b) => b.zeroize(),
            _ => {}
        }
    }
}

impl fmt::Debug for DecodedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecodedValue({})", self.value_type().name())
    }
}

impl ValueType {
    /// Whether a blind index can cover a field of this type (whether
    /// [`DecodedValue::index_text`] gives text for its values).
    pub fn is_indexable(self) -> bool {
        matches!(
            self,
            ValueType::String
                | ValueType::I16
                | ValueType::I32
                | ValueType::I64
                | ValueType::U16
                | ValueType::U32
                | ValueType::U64
        )
    }

    /// Encodes a SQL value as a field of this type encodes it (through the
    /// same [`EncryptedField`] implementation), into `out` (cleared first):
    /// text as `string`, bytes, booleans, any integer as `i16`/`i32`/`i64`
    /// when it fits, floats (an `f32` widened for `f64`), UUIDs. Fails, never
    /// quoting the value, for NULL, a value that does not fit, or another
    /// pairing. This is how `rowseal encrypt-column` encodes legacy
    /// plaintext values.
    pub fn encode_sql_value(self, value: &Value, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let int = match value {
            Value::I16(x) => Some(i64::from(*x)),
            Value::I32(x) => Some(i64::from(*x)),
            Value::I64(x) => Some(*x),
            _ => None,
        };
        const RANGE: DecodeError = "the plaintext value does not fit the field's type";
        let present = match (self, value, int) {
            (ValueType::String, Value::Text(s), _) => s.encode_field(out),
            (ValueType::Bytes, Value::Bytes(b), _) => b.encode_field(out),
            (ValueType::Bool, Value::Bool(b), _) => b.encode_field(out),
            (ValueType::I16, _, Some(i)) => i16::try_from(i).map_err(|_| RANGE)?.encode_field(out),
            (ValueType::I32, _, Some(i)) => i32::try_from(i).map_err(|_| RANGE)?.encode_field(out),
            (ValueType::I64, _, Some(i)) => i.encode_field(out),
            (ValueType::F32, Value::F32(f), _) => f.encode_field(out),
            (ValueType::F64, Value::F64(f), _) => f.encode_field(out),
            (ValueType::F64, Value::F32(f), _) => f64::from(*f).encode_field(out),
            #[cfg(feature = "uuid")]
            (ValueType::Uuid, Value::Uuid(u), _) => u.encode_field(out),
            _ => return Err("this value type cannot be encoded as the field's type"),
        };
        debug_assert!(present);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_version_tag_and_short_input_are_errors() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[ENCODING_V1]).is_err());
        assert!(decode(&[2, 1, b'a']).is_err());
        assert!(decode(&[ENCODING_V1, 0]).is_err());
        assert!(decode(&[ENCODING_V1, 200]).is_err());
        assert!(decode(&[ENCODING_V1, ValueType::I64.tag(), 1, 2]).is_err());
        assert!(decode(&[ENCODING_V1, ValueType::Json.tag(), b'{']).is_err());
    }

    #[test]
    fn debug_shows_the_type_only() {
        let v = decode(&[ENCODING_V1, 1, b's', b'e', b'c']).unwrap();
        assert_eq!(format!("{v:?}"), "DecodedValue(string)");
    }

    #[test]
    fn encodes_sql_values_like_the_field_types() {
        let mut s = Vec::new();
        "ada".to_owned().encode_field(&mut s);
        let mut out = Vec::new();
        ValueType::String
            .encode_sql_value(&Value::Text("ada".into()), &mut out)
            .unwrap();
        assert_eq!(out, s);
        let mut i = Vec::new();
        42i32.encode_field(&mut i);
        ValueType::I32
            .encode_sql_value(&Value::I64(42), &mut out)
            .unwrap();
        assert_eq!(out, i);
        assert!(ValueType::I16
            .encode_sql_value(&Value::I64(1 << 20), &mut out)
            .is_err());
        assert!(ValueType::String
            .encode_sql_value(&Value::I64(1), &mut out)
            .is_err());
        assert!(ValueType::ChronoNaiveDate
            .encode_sql_value(&Value::Text("x".into()), &mut out)
            .is_err());
    }
}
