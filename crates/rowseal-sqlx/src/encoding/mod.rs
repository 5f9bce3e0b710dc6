//! How a field value becomes bytes before it is sealed, and back.
//!
//! Every encrypted value is encoded as
//! ```text
//! 0  1  encoding version (0x01)
//! 1  1  type tag (below)
//! 2  .. payload
//! ```
//! and this whole encoding is what the field envelope encrypts, so the type tag
//! is authenticated: a value decrypted as another type is a typed error, not a
//! reinterpretation. Integers are big-endian two's complement at their own
//! width, floats their IEEE-754 bits, text UTF-8, dates and timestamps fixed
//! integers (below). `NULL` is never encoded: an absent `Option` is stored as
//! SQL NULL.
//!
//! | tag | type | payload |
//! |---|---|---|
//! | 1 | `String` | UTF-8 |
//! | 2 | `Vec<u8>` | bytes |
//! | 3 | `bool` | 0 or 1 |
//! | 4..8 | `i8` `i16` `i32` `i64` `i128` | big-endian |
//! | 9..13 | `u8` `u16` `u32` `u64` `u128` | big-endian |
//! | 14, 15 | `f32`, `f64` | IEEE-754 bits, big-endian |
//! | 16 | `uuid::Uuid` | 16 bytes |
//! | 17 | `chrono::NaiveDate` | i32 days from 0001-01-01 (CE day 1) |
//! | 18 | `chrono::NaiveTime` | u32 seconds from midnight, u32 nanoseconds |
//! | 19 | `chrono::NaiveDateTime` | i64 Unix seconds, u32 nanoseconds |
//! | 20 | `chrono::DateTime<Utc>` | i64 Unix seconds, u32 nanoseconds |
//! | 21 | `time::Date` | i32 Julian day |
//! | 22 | `time::Time` | u8 hour, u8 minute, u8 second, u32 nanosecond |
//! | 23 | `time::PrimitiveDateTime` | i32 Julian day, then as tag 22 |
//! | 24 | `time::OffsetDateTime` | i128 Unix nanoseconds, i32 offset seconds |
//! | 25 | `serde_json::Value` | JSON text |
//! | 26 | any serde type with `#[rowseal(encrypt, json)]` | JSON text |

use rowseal_core::{FieldName, RowKey};
use zeroize::Zeroize;

/// The encoding version byte.
pub const ENCODING_V1: u8 = 1;

/// Why bytes did not decode as the expected type (never quotes the bytes).
pub type DecodeError = &'static str;

mod dynamic;
pub use dynamic::{decode, DecodedValue};

macro_rules! value_types {
    ($($(#[$doc:meta])* $variant:ident = $tag:literal, $name:literal;)*) => {
        /// The type tag of an encoded value: which field type it was encoded
        /// from. The tag is the second byte of every encoding (see the table
        /// above), and [`ValueType::name`] is the type's name in the schema
        /// registry. Both static ([`EncryptedValue::TYPE`]) and dynamic
        /// ([`decode`]) paths read this one table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ValueType {
            $($(#[$doc])* $variant,)*
        }

        impl ValueType {
            /// Every type, in tag order.
            pub const ALL: &'static [ValueType] = &[$(ValueType::$variant,)*];

            /// The tag byte.
            pub const fn tag(self) -> u8 {
                match self {
                    $(ValueType::$variant => $tag,)*
                }
            }

            /// The type with this tag.
            pub const fn from_tag(tag: u8) -> Option<ValueType> {
                match tag {
                    $($tag => Some(ValueType::$variant),)*
                    _ => None,
                }
            }

            /// The name recorded in the schema registry (`"string"`,
            /// `"i64"`, `"chrono::NaiveDate"`, `"json"`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $(ValueType::$variant => $name,)*
                }
            }

            /// The type with this registry name.
            pub fn from_name(name: &str) -> Option<ValueType> {
                match name {
                    $($name => Some(ValueType::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

value_types! {
    /// `String`: UTF-8.
    String = 1, "string";
    /// `Vec<u8>`.
    Bytes = 2, "bytes";
    /// `bool`: 0 or 1.
    Bool = 3, "bool";
    /// `i8`.
    I8 = 4, "i8";
    /// `i16`.
    I16 = 5, "i16";
    /// `i32`.
    I32 = 6, "i32";
    /// `i64`.
    I64 = 7, "i64";
    /// `i128`.
    I128 = 8, "i128";
    /// `u8`.
    U8 = 9, "u8";
    /// `u16`.
    U16 = 10, "u16";
    /// `u32`.
    U32 = 11, "u32";
    /// `u64`.
    U64 = 12, "u64";
    /// `u128`.
    U128 = 13, "u128";
    /// `f32`.
    F32 = 14, "f32";
    /// `f64`.
    F64 = 15, "f64";
    /// `uuid::Uuid`.
    Uuid = 16, "uuid";
    /// `chrono::NaiveDate`.
    ChronoNaiveDate = 17, "chrono::NaiveDate";
    /// `chrono::NaiveTime`.
    ChronoNaiveTime = 18, "chrono::NaiveTime";
    /// `chrono::NaiveDateTime`.
    ChronoNaiveDateTime = 19, "chrono::NaiveDateTime";
    /// `chrono::DateTime<Utc>`.
    ChronoDateTimeUtc = 20, "chrono::DateTime<Utc>";
    /// `time::Date`.
    TimeDate = 21, "time::Date";
    /// `time::Time`.
    TimeTime = 22, "time::Time";
    /// `time::PrimitiveDateTime`.
    TimePrimitiveDateTime = 23, "time::PrimitiveDateTime";
    /// `time::OffsetDateTime`.
    TimeOffsetDateTime = 24, "time::OffsetDateTime";
    /// `serde_json::Value`: JSON text.
    JsonValue = 25, "serde_json::Value";
    /// Any serde type with `#[rowseal(encrypt, json)]`: JSON text.
    Json = 26, "json";
}

/// A type whose values can be encrypted (a field type without `Option`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an encrypted field",
    note = "encrypted fields may be String, Vec<u8>, bool, integers, floats, uuid::Uuid, chrono or time dates and timestamps, serde_json::Value, or an Option of these; any serde type with #[rowseal(encrypt, json)]"
)]
pub trait EncryptedValue: Sized {
    /// The type tag (and the type's name in the schema registry).
    const TYPE: ValueType;
    /// Appends the payload (without version and tag).
    fn encode_payload(&self, out: &mut Vec<u8>);
    /// Reads the payload back.
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError>;
    /// Reads the payload back from an owned buffer holding the whole encoding
    /// (version and tag first, already checked), which it consumes: text and
    /// bytes reuse it instead of copying. The default decodes from the slice and
    /// zeroizes the buffer.
    fn decode_owned(mut encoded: Vec<u8>) -> Result<Self, DecodeError> {
        let r = Self::decode_payload(encoded.get(2..).unwrap_or(&[]));
        encoded.zeroize();
        r
    }
}

/// A type that can be an encrypted field: an [`EncryptedValue`] or an `Option`
/// of one (`None` is stored as SQL NULL, not encrypted).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an encrypted field",
    note = "encrypted fields may be String, Vec<u8>, bool, integers, floats, uuid::Uuid, chrono or time dates and timestamps, serde_json::Value, or an Option of these; any serde type with #[rowseal(encrypt, json)]"
)]
pub trait EncryptedField: Sized {
    /// The encoded type (its tag, and its name in the schema registry).
    const TYPE: ValueType;
    /// Whether the column may be NULL.
    const NULLABLE: bool;
    /// Encodes the value into `out` (cleared first); `false` for NULL.
    fn encode_field(&self, out: &mut Vec<u8>) -> bool;
    /// Decodes a decrypted value; `None` is SQL NULL.
    fn decode_field(bytes: Option<&[u8]>) -> Result<Self, DecodeError>;
    /// Decodes a decrypted value from an owned buffer, which it consumes (and
    /// zeroizes unless the value takes it over).
    fn decode_field_owned(bytes: Option<Vec<u8>>) -> Result<Self, DecodeError> {
        let mut bytes = bytes;
        let r = Self::decode_field(bytes.as_deref());
        bytes.zeroize();
        r
    }
}

/// Seals a value encoding (as [`EncryptedField::encode_field`] writes it:
/// version, tag, payload) into the field envelope of `key`'s format: format 1
/// seals the whole encoding; format 2 drops the encoding version byte, which
/// the row header's format version implies, and seals the tag and payload.
/// The one place a stored value's plaintext shape is chosen; the library and
/// the `rowseal` tool both seal through it.
pub fn seal_encoded(
    key: &RowKey,
    field: FieldName<'_>,
    encoded: &[u8],
) -> rowseal_core::Result<Vec<u8>> {
    match (key.header().format_version(), encoded) {
        (1, _) => key.seal(field, encoded),
        (_, [ENCODING_V1, rest @ ..]) if !rest.is_empty() => key.seal(field, rest),
        _ => Err(rowseal_core::Error::InvalidInput {
            reason: "not a value encoding".into(),
        }),
    }
}

/// Opens a field envelope sealed by [`seal_encoded`] and returns the value
/// encoding in the shape [`decode`] and [`EncryptedField::decode_field`] read
/// (version, tag, payload), whatever the row's format. The caller zeroizes
/// the returned plaintext.
pub fn open_encoded(
    key: &RowKey,
    field: FieldName<'_>,
    envelope: &[u8],
) -> rowseal_core::Result<Vec<u8>> {
    let mut opened = key.open(field, envelope)?;
    if key.header().format_version() == 1 {
        return Ok(opened);
    }
    let mut encoded = Vec::with_capacity(opened.len() + 1);
    encoded.push(ENCODING_V1);
    encoded.extend_from_slice(&opened);
    opened.zeroize();
    Ok(encoded)
}

pub(crate) fn header(out: &mut Vec<u8>, ty: ValueType) {
    out.clear();
    out.push(ENCODING_V1);
    out.push(ty.tag());
}

pub(crate) fn payload(bytes: &[u8], ty: ValueType) -> Result<&[u8], DecodeError> {
    match bytes {
        [ENCODING_V1, t, rest @ ..] if *t == ty.tag() => Ok(rest),
        [ENCODING_V1, _, ..] => Err("the stored value has another type"),
        [_, _, ..] => Err("unknown value encoding version"),
        _ => Err("value encoding too short"),
    }
}

impl<T: EncryptedValue> EncryptedField for T {
    const TYPE: ValueType = T::TYPE;
    const NULLABLE: bool = false;
    fn encode_field(&self, out: &mut Vec<u8>) -> bool {
        header(out, T::TYPE);
        self.encode_payload(out);
        true
    }
    fn decode_field(bytes: Option<&[u8]>) -> Result<Self, DecodeError> {
        let bytes = bytes.ok_or("NULL in a column whose field is not an Option")?;
        T::decode_payload(payload(bytes, T::TYPE)?)
    }
    fn decode_field_owned(bytes: Option<Vec<u8>>) -> Result<Self, DecodeError> {
        let mut bytes = bytes.ok_or("NULL in a column whose field is not an Option")?;
        if let Err(e) = payload(&bytes, T::TYPE) {
            bytes.zeroize();
            return Err(e);
        }
        T::decode_owned(bytes)
    }
}

impl<T: EncryptedValue> EncryptedField for Option<T> {
    const TYPE: ValueType = T::TYPE;
    const NULLABLE: bool = true;
    fn encode_field(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Some(v) => v.encode_field(out),
            None => false,
        }
    }
    fn decode_field(bytes: Option<&[u8]>) -> Result<Self, DecodeError> {
        match bytes {
            None => Ok(None),
            Some(b) => T::decode_field(Some(b)).map(Some),
        }
    }
    fn decode_field_owned(bytes: Option<Vec<u8>>) -> Result<Self, DecodeError> {
        match bytes {
            None => Ok(None),
            Some(b) => T::decode_field_owned(Some(b)).map(Some),
        }
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| "value has the wrong length")
}

impl EncryptedValue for String {
    const TYPE: ValueType = ValueType::String;
    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "text is not UTF-8")
    }
    fn decode_owned(mut encoded: Vec<u8>) -> Result<Self, DecodeError> {
        encoded.drain(..2.min(encoded.len()));
        String::from_utf8(encoded).map_err(|e| {
            e.into_bytes().zeroize();
            "text is not UTF-8"
        })
    }
}

impl EncryptedValue for Vec<u8> {
    const TYPE: ValueType = ValueType::Bytes;
    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
    fn decode_owned(mut encoded: Vec<u8>) -> Result<Self, DecodeError> {
        encoded.drain(..2.min(encoded.len()));
        Ok(encoded)
    }
}

impl EncryptedValue for bool {
    const TYPE: ValueType = ValueType::Bool;
    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err("not a boolean"),
        }
    }
}

macro_rules! numeric {
    ($($t:ty => $variant:ident;)*) => {$(
        impl EncryptedValue for $t {
            const TYPE: ValueType = ValueType::$variant;
            fn encode_payload(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
                Ok(<$t>::from_be_bytes(fixed(bytes)?))
            }
        }
    )*};
}

numeric! {
    i8 => I8; i16 => I16; i32 => I32; i64 => I64; i128 => I128;
    u8 => U8; u16 => U16; u32 => U32; u64 => U64; u128 => U128;
    f32 => F32; f64 => F64;
}

#[cfg(feature = "uuid")]
impl EncryptedValue for uuid::Uuid {
    const TYPE: ValueType = ValueType::Uuid;
    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(uuid::Uuid::from_bytes(fixed(bytes)?))
    }
}

#[cfg(feature = "chrono")]
fn split_i64_u32(bytes: &[u8]) -> Result<(i64, u32), DecodeError> {
    let b: [u8; 12] = fixed(bytes)?;
    let (s, n) = b.split_at(8);
    Ok((i64::from_be_bytes(fixed(s)?), u32::from_be_bytes(fixed(n)?)))
}

#[cfg(feature = "chrono")]
mod chrono_impls {
    use super::*;
    use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

    impl EncryptedValue for NaiveDate {
        const TYPE: ValueType = ValueType::ChronoNaiveDate;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.num_days_from_ce().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            NaiveDate::from_num_days_from_ce_opt(i32::from_be_bytes(fixed(bytes)?))
                .ok_or("date out of range")
        }
    }

    impl EncryptedValue for NaiveTime {
        const TYPE: ValueType = ValueType::ChronoNaiveTime;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.num_seconds_from_midnight().to_be_bytes());
            out.extend_from_slice(&self.nanosecond().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            let b: [u8; 8] = fixed(bytes)?;
            let (s, n) = b.split_at(4);
            NaiveTime::from_num_seconds_from_midnight_opt(
                u32::from_be_bytes(fixed(s)?),
                u32::from_be_bytes(fixed(n)?),
            )
            .ok_or("time out of range")
        }
    }

    impl EncryptedValue for NaiveDateTime {
        const TYPE: ValueType = ValueType::ChronoNaiveDateTime;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            let utc = self.and_utc();
            out.extend_from_slice(&utc.timestamp().to_be_bytes());
            out.extend_from_slice(&utc.timestamp_subsec_nanos().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            let (s, n) = split_i64_u32(bytes)?;
            DateTime::from_timestamp(s, n)
                .map(|d| d.naive_utc())
                .ok_or("timestamp out of range")
        }
    }

    impl EncryptedValue for DateTime<Utc> {
        const TYPE: ValueType = ValueType::ChronoDateTimeUtc;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.timestamp().to_be_bytes());
            out.extend_from_slice(&self.timestamp_subsec_nanos().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            let (s, n) = split_i64_u32(bytes)?;
            DateTime::from_timestamp(s, n).ok_or("timestamp out of range")
        }
    }
}

#[cfg(feature = "time")]
mod time_impls {
    use super::*;
    use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

    fn encode_time(t: &Time, out: &mut Vec<u8>) {
        out.extend_from_slice(&[t.hour(), t.minute(), t.second()]);
        out.extend_from_slice(&t.nanosecond().to_be_bytes());
    }

    fn decode_time(b: &[u8]) -> Result<Time, DecodeError> {
        let b: [u8; 7] = fixed(b)?;
        let (hms, n) = b.split_at(3);
        Time::from_hms_nano(hms[0], hms[1], hms[2], u32::from_be_bytes(fixed(n)?))
            .map_err(|_| "time out of range")
    }

    impl EncryptedValue for Date {
        const TYPE: ValueType = ValueType::TimeDate;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_julian_day().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            Date::from_julian_day(i32::from_be_bytes(fixed(bytes)?))
                .map_err(|_| "date out of range")
        }
    }

    impl EncryptedValue for Time {
        const TYPE: ValueType = ValueType::TimeTime;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            encode_time(self, out);
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            decode_time(bytes)
        }
    }

    impl EncryptedValue for PrimitiveDateTime {
        const TYPE: ValueType = ValueType::TimePrimitiveDateTime;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.date().to_julian_day().to_be_bytes());
            encode_time(&self.time(), out);
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            if bytes.len() != 11 {
                return Err("value has the wrong length");
            }
            let (d, t) = bytes.split_at(4);
            let date = Date::from_julian_day(i32::from_be_bytes(fixed(d)?))
                .map_err(|_| "date out of range")?;
            Ok(PrimitiveDateTime::new(date, decode_time(t)?))
        }
    }

    impl EncryptedValue for OffsetDateTime {
        const TYPE: ValueType = ValueType::TimeOffsetDateTime;
        fn encode_payload(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.unix_timestamp_nanos().to_be_bytes());
            out.extend_from_slice(&self.offset().whole_seconds().to_be_bytes());
        }
        fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
            let b: [u8; 20] = fixed(bytes)?;
            let (n, o) = b.split_at(16);
            let offset = UtcOffset::from_whole_seconds(i32::from_be_bytes(fixed(o)?))
                .map_err(|_| "offset out of range")?;
            OffsetDateTime::from_unix_timestamp_nanos(i128::from_be_bytes(fixed(n)?))
                .map(|t| t.to_offset(offset))
                .map_err(|_| "timestamp out of range")
        }
    }
}

#[cfg(feature = "json")]
impl EncryptedValue for serde_json::Value {
    const TYPE: ValueType = ValueType::JsonValue;
    fn encode_payload(&self, out: &mut Vec<u8>) {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
    }
    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(|_| "not valid JSON")
    }
}

/// Encodes any serde value as JSON (tag 26) into `out` (cleared first).
#[cfg(feature = "json")]
pub fn encode_json<T: serde::Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    header(out, ValueType::Json);
    serde_json::to_writer(&mut *out, value)
}

/// Decodes a tag-26 JSON value.
#[cfg(feature = "json")]
pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload(bytes, ValueType::Json)?)
        .map_err(|_| "JSON does not match the field type")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<T: EncryptedField + PartialEq + std::fmt::Debug>(v: T) {
        let mut buf = Vec::new();
        let some = v.encode_field(&mut buf);
        let back = T::decode_field(some.then_some(&buf[..])).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn round_trips() {
        rt(String::new());
        rt("héllo ✓".to_owned());
        rt(vec![0u8, 1, 255]);
        rt(true);
        rt(-5i8);
        rt(i128::MIN);
        rt(u64::MAX);
        rt(1.5f32);
        rt(f64::NEG_INFINITY);
        rt(Some(3i32));
        rt(None::<String>);
    }

    #[test]
    fn wrong_type_is_an_error() {
        let mut buf = Vec::new();
        5i64.encode_field(&mut buf);
        assert!(<i32 as EncryptedField>::decode_field(Some(&buf)).is_err());
        assert!(<String as EncryptedField>::decode_field(None).is_err());
        assert!(<String as EncryptedField>::decode_field(Some(&[])).is_err());
    }
}
