#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The static value codec (the `EncryptedField` traits generated code uses)
//! and the dynamic one (`encoding::decode`, what the command-line tool uses)
//! agree: for every encoding tag, the same stored bytes decode to the same
//! value and index as the same text through both paths.

use std::collections::BTreeSet;
use std::fmt::Debug;

use proptest::prelude::*;
use rowseal_sqlx::encoding::{self, DecodedValue, ValueType};
use rowseal_sqlx::{EncryptedField, EncryptedValue, IndexSource};

/// Encodes `v` the static way, decodes the bytes both ways, and checks both
/// give the same value; returns the dynamic value.
fn same_value<T>(v: T) -> DecodedValue
where
    T: EncryptedValue + Clone + PartialEq + Debug,
    DecodedValue: From<T>,
{
    let mut stored = Vec::new();
    assert!(v.encode_field(&mut stored));
    assert_eq!(stored[1], T::TYPE.tag());
    let by_type = <T as EncryptedField>::decode_field(Some(&stored)).unwrap();
    assert_eq!(by_type, v);
    let dynamic = encoding::decode(&stored).unwrap();
    assert_eq!(dynamic.value_type(), T::TYPE);
    assert_eq!(dynamic, DecodedValue::from(by_type));
    // A type the index cannot cover has no index text on either side.
    if !T::TYPE.is_indexable() {
        assert!(dynamic.index_text().is_none(), "{:?}", T::TYPE);
    }
    // Through Option<T>, the static path reads the same bytes the same way.
    assert_eq!(
        <Option<T> as EncryptedField>::decode_field(Some(&stored)).unwrap(),
        Some(v)
    );
    dynamic
}

/// As [`same_value`], for a type a blind index can cover: the index text is
/// the same through `IndexSource` and the dynamic value.
fn same_index_text<T>(v: T)
where
    T: EncryptedValue + IndexSource + Clone + PartialEq + Debug,
    DecodedValue: From<T>,
{
    assert!(T::TYPE.is_indexable());
    let expected = v.index_str().map(|t| t.into_owned());
    let dynamic = same_value(v);
    assert_eq!(dynamic.index_text().map(|t| t.into_owned()), expected);
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Address {
    street: String,
    floor: Option<i32>,
}

#[test]
fn every_tag_decodes_alike_through_both_paths() {
    same_index_text("Ada Lovelace ✓".to_owned());
    same_index_text(String::new());
    same_value(vec![0u8, 1, 255]);
    same_value(true);
    same_value(false);
    same_value(-5i8);
    same_index_text(-300i16);
    same_index_text(70_000i32);
    same_index_text(i64::MIN);
    same_value(i128::MAX);
    same_value(200u8);
    same_index_text(u16::MAX);
    same_index_text(4_000_000_000u32);
    same_index_text(u64::MAX);
    same_value(u128::MAX);
    same_value(1.5f32);
    same_value(-2.25f64);
    same_value(uuid::Uuid::from_bytes([7; 16]));
    let date = chrono::NaiveDate::from_ymd_opt(1815, 12, 10).unwrap();
    same_value(date);
    let time = chrono::NaiveTime::from_hms_nano_opt(13, 14, 15, 16).unwrap();
    same_value(time);
    same_value(date.and_time(time));
    same_value(date.and_time(time).and_utc());
    let tdate = time::Date::from_calendar_date(1815, time::Month::December, 10).unwrap();
    same_value(tdate);
    let ttime = time::Time::from_hms_nano(13, 14, 15, 16).unwrap();
    same_value(ttime);
    same_value(time::PrimitiveDateTime::new(tdate, ttime));
    same_value(
        time::PrimitiveDateTime::new(tdate, ttime)
            .assume_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap()),
    );
    same_value(serde_json::json!({"a": [1, 2.5, null], "b": "x"}));

    // Tag 26: the application's own serde type; the dynamic side keeps the
    // JSON text, which the static side deserializes.
    let address = Address {
        street: "Baker St".into(),
        floor: Some(2),
    };
    let mut stored = Vec::new();
    encoding::encode_json(&address, &mut stored).unwrap();
    assert_eq!(stored[1], ValueType::Json.tag());
    let by_type: Address = encoding::decode_json(&stored).unwrap();
    assert_eq!(by_type, address);
    let dynamic = encoding::decode(&stored).unwrap();
    assert_eq!(dynamic.value_type(), ValueType::Json);
    assert_eq!(
        dynamic,
        DecodedValue::Json(serde_json::to_string(&by_type).unwrap())
    );
    assert!(dynamic.index_text().is_none());
}

/// Every tag this build knows is covered above, tags and names are unique,
/// and each maps back to itself.
#[test]
fn the_tag_table_is_one_to_one() {
    let tags: BTreeSet<u8> = ValueType::ALL.iter().map(|t| t.tag()).collect();
    let names: BTreeSet<&str> = ValueType::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(tags.len(), ValueType::ALL.len());
    assert_eq!(names.len(), ValueType::ALL.len());
    assert_eq!(tags, (1..=26).collect::<BTreeSet<u8>>());
    for &t in ValueType::ALL {
        assert_eq!(ValueType::from_tag(t.tag()), Some(t));
        assert_eq!(ValueType::from_name(t.name()), Some(t));
    }
    assert_eq!(ValueType::from_tag(0), None);
    assert_eq!(ValueType::from_tag(27), None);
}

/// Bytes whose tag names one type never decode as another, on either path.
#[test]
fn a_value_of_another_type_is_refused_on_both_paths() {
    let mut stored = Vec::new();
    5i64.encode_field(&mut stored);
    assert!(<i32 as EncryptedField>::decode_field(Some(&stored)).is_err());
    assert_eq!(
        encoding::decode(&stored).unwrap().value_type(),
        ValueType::I64
    );
    stored[1] = ValueType::I32.tag();
    assert!(<i32 as EncryptedField>::decode_field(Some(&stored)).is_err());
    assert!(encoding::decode(&stored).is_err());
}

proptest! {
    #[test]
    fn text_and_integers_agree(s in ".*", i in any::<i64>(), u in any::<u64>(), b in any::<Vec<u8>>(), f in any::<f64>().prop_filter("not NaN", |f| !f.is_nan())) {
        same_index_text(s);
        same_index_text(i);
        same_index_text(u);
        same_value(b);
        same_value(f);
    }

    /// Arbitrary bytes: the dynamic path never panics, and when it decodes,
    /// the static path of the named type decodes the same bytes to the same
    /// value.
    #[test]
    fn arbitrary_bytes_agree_or_fail(tag in 0u8..30, payload in any::<Vec<u8>>()) {
        let mut stored = vec![1, tag];
        stored.extend_from_slice(&payload);
        if let Ok(v) = encoding::decode(&stored) {
            match v {
                DecodedValue::String(ref s) => prop_assert_eq!(&<String as EncryptedField>::decode_field(Some(&stored)).unwrap(), s),
                DecodedValue::I64(x) => prop_assert_eq!(<i64 as EncryptedField>::decode_field(Some(&stored)).unwrap(), x),
                DecodedValue::U16(x) => prop_assert_eq!(<u16 as EncryptedField>::decode_field(Some(&stored)).unwrap(), x),
                _ => {}
            }
        }
    }
}

/// Row keys of both formats for the stored-shape property below.
fn row_keys() -> (rowseal_core::RowKey, rowseal_core::RowKey) {
    use rowseal_core::{FieldSet, KeyHierarchy, LocalKeyProvider, MemoryKeyStore, RecordSpec};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys = KeyHierarchy::new(
            Arc::new(
                LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap(),
            ),
            Arc::new(MemoryKeyStore::default()),
        );
        let spec = RecordSpec::new("patient", "patients");
        let present = FieldSet::new(["email"]).unwrap();
        let v2 = keys
            .new_row_key(&spec, "acme", None, &present)
            .await
            .unwrap();
        let v1 = keys.new_row_key_v1(&spec, "acme", None).await.unwrap();
        (v1, v2)
    })
}

proptest! {
    /// The stored shape of a value, owned by `seal_encoded`/`open_encoded`:
    /// both formats give back the whole encoding (what `decode` reads);
    /// format 2 stores the tag and payload plus a 16-byte tag (value + 17
    /// bytes), format 1 the whole encoding plus 29; a changed byte fails.
    #[test]
    fn stored_values_round_trip_in_both_formats(s in ".{0,64}", flip in any::<prop::sample::Index>()) {
        let (v1, v2) = row_keys();
        let name = rowseal_core::FieldName::new("email", "email_ct");
        let mut encoded = Vec::new();
        assert!(s.clone().encode_field(&mut encoded));
        for (key, stored_len) in [(&v1, encoded.len() + 29), (&v2, encoded.len() - 1 + 16)] {
            let mut sealed = encoding::seal_encoded(key, name, &encoded).unwrap();
            prop_assert_eq!(sealed.len(), stored_len);
            let opened = encoding::open_encoded(key, name, &sealed).unwrap();
            prop_assert_eq!(&opened, &encoded);
            prop_assert_eq!(<String as EncryptedField>::decode_field(Some(&opened)).unwrap(), s.clone());
            let i = flip.index(sealed.len());
            sealed[i] ^= 1;
            prop_assert!(encoding::open_encoded(key, name, &sealed).is_err());
        }
        prop_assert_eq!(s.len() + 17, encoding::seal_encoded(&v2, name, &encoded).unwrap().len());
        // Format 2 seals only a value encoding.
        prop_assert!(encoding::seal_encoded(&v2, name, &[]).is_err());
        prop_assert!(encoding::seal_encoded(&v2, name, &[2, 1, b'x']).is_err());
    }
}
