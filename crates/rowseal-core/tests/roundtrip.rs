//! Round trips through the key hierarchy, in both key modes, for every value
//! shape the core accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixture;
use rowseal_core::{Error, FieldName, FieldSet, KeyMode, RecordSpec, RowHeader};

const DERIVED: RecordSpec = RecordSpec::new("patient", "patients");
const KMS: RecordSpec = RecordSpec::new("patient", "patients").with_key_mode(KeyMode::Kms);
const BOUND: RecordSpec = RecordSpec::new("patient", "patients").with_primary_key_bound(true);
const NOTES: FieldName = FieldName::same("notes");
const C: FieldName = FieldName::same("c");
const EMAIL: FieldName = FieldName::same("email");

fn present(names: &[&str]) -> FieldSet {
    FieldSet::new(names.iter().copied()).unwrap()
}

fn shapes() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"x".to_vec(),
        "Zoë Ünïcødé 🦀".as_bytes().to_vec(),
        (0..=255u8).collect(),
        vec![0xA5; 1 << 20],
    ]
}

#[tokio::test]
async fn every_shape_round_trips_in_both_modes() {
    let f = fixture();
    let set = present(&["notes"]);
    for spec in [&DERIVED, &KMS, &BOUND] {
        for value in shapes() {
            let row = f
                .keys
                .new_row_key(spec, "t1", Some(b"pk-1"), &set)
                .await
                .unwrap();
            let header = row.header_bytes();
            let sealed = row.seal(NOTES, &value).unwrap();
            assert_eq!(sealed.len(), value.len() + 16, "n + 16 bytes (format 2)");
            if value.len() >= 16 {
                assert!(!sealed.windows(16).any(|w| w == &value[..16]));
            }
            let row = f
                .keys
                .open_row_key(spec, "t1", Some(b"pk-1"), &header, &set)
                .await
                .unwrap();
            assert_eq!(row.open(NOTES, &sealed).unwrap(), value);
        }
    }
}

/// Format 2 seals each field once per row key, under a fixed nonce: the
/// same value sealed twice under one key gives the same bytes (which is why
/// every write takes a new row key), while two writes differ.
#[tokio::test]
async fn two_writes_of_one_value_differ() {
    let f = fixture();
    let set = present(&["c"]);
    let row = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    assert_eq!(row.seal(C, b"same").unwrap(), row.seal(C, b"same").unwrap());
    let other = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    assert_ne!(
        row.seal(C, b"same").unwrap(),
        other.seal(C, b"same").unwrap()
    );
    assert_ne!(
        row.header_bytes(),
        other.header_bytes(),
        "fresh salt per write"
    );
    // Format 1 stored a random nonce per value.
    let v1 = f.keys.new_row_key_v1(&DERIVED, "t1", None).await.unwrap();
    assert_ne!(v1.seal(C, b"same").unwrap(), v1.seal(C, b"same").unwrap());
}

#[tokio::test]
async fn header_records_mode_and_version() {
    let f = fixture();
    let set = present(&["a", "b"]);
    let row = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    let h = RowHeader::from_bytes(&row.header_bytes()).unwrap();
    assert_eq!(h.mode(), KeyMode::Derived);
    assert_eq!(h.tenant_key_version(), Some(1));
    assert_eq!(h.format_version(), 2);
    assert_eq!(h.present_count(), Some(2));
    assert_eq!(row.header_bytes().len(), 56);

    let row = f.keys.new_row_key(&KMS, "t1", None, &set).await.unwrap();
    let h = RowHeader::from_bytes(&row.header_bytes()).unwrap();
    assert_eq!(h.mode(), KeyMode::Kms);
    assert_eq!(h.tenant_key_version(), None);
    assert_eq!(h.format_version(), 2);
    assert_eq!(h.wrapped_data_key().unwrap().key_id(), "local:v1");
}

#[tokio::test]
async fn rotation_writes_new_rows_under_the_new_version_and_reads_old_ones() {
    let f = fixture();
    let set = present(&["c"]);
    let old = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    let old_header = old.header_bytes();
    let old_value = old.seal(C, b"before").unwrap();
    let v1 = f.keys.new_row_key_v1(&DERIVED, "t1", None).await.unwrap();
    let v1_header = v1.header_bytes();
    let v1_value = v1.seal(C, b"v1").unwrap();
    assert_eq!(f.keys.rotate_tenant_key("t1").await.unwrap(), 2);
    let new = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    assert_eq!(new.header().tenant_key_version(), Some(2));
    let reopened = f
        .keys
        .open_row_key(&DERIVED, "t1", None, &old_header, &set)
        .await
        .unwrap();
    assert_eq!(reopened.open(C, &old_value).unwrap(), b"before");
    let reopened = f
        .keys
        .open_row_key(&DERIVED, "t1", None, &v1_header, &set)
        .await
        .unwrap();
    assert_eq!(reopened.open(C, &v1_value).unwrap(), b"v1");
}

#[tokio::test]
async fn binding_the_primary_key_requires_one() {
    let f = fixture();
    let err = f
        .keys
        .new_row_key(&BOUND, "t1", None, &FieldSet::empty())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}

#[tokio::test]
async fn record_keys_batch_path_matches_the_async_path() {
    let f = fixture();
    let set = present(&["email"]);
    let tenant_key = f.keys.current_tenant_key("t1").await.unwrap();
    let batch = tenant_key.record_keys(&DERIVED).unwrap();
    let row = batch.new_row(None, &set).unwrap();
    let sealed = row.seal(EMAIL, b"ada@example.com").unwrap();
    let reopened = f
        .keys
        .open_row_key(&DERIVED, "t1", None, &row.header_bytes(), &set)
        .await
        .unwrap();
    assert_eq!(reopened.open(EMAIL, &sealed).unwrap(), b"ada@example.com");
    let again = batch.open_row(None, &row.header_bytes(), &set).unwrap();
    assert_eq!(again.open(EMAIL, &sealed).unwrap(), b"ada@example.com");
    // And the other way round: a row made through the hierarchy opens in
    // the batch; v1 rows too.
    let row = f
        .keys
        .new_row_key(&DERIVED, "t1", None, &set)
        .await
        .unwrap();
    let sealed = row.seal(EMAIL, b"x").unwrap();
    let again = batch.open_row(None, &row.header_bytes(), &set).unwrap();
    assert_eq!(again.open(EMAIL, &sealed).unwrap(), b"x");
    let v1 = batch.new_row_v1(None).unwrap();
    let sealed = v1.seal(EMAIL, b"y").unwrap();
    let reopened = f
        .keys
        .open_row_key(&DERIVED, "t1", None, &v1.header_bytes(), &set)
        .await
        .unwrap();
    assert_eq!(reopened.open(EMAIL, &sealed).unwrap(), b"y");
}

#[tokio::test]
async fn blind_index_keys_differ_per_scope_index_and_version() {
    use rowseal_core::KeyScope;
    let f = fixture();
    let a = f
        .keys
        .current_index_key(&KeyScope::Tenant("a".into()))
        .await
        .unwrap();
    let b = f
        .keys
        .current_index_key(&KeyScope::Tenant("b".into()))
        .await
        .unwrap();
    let g = f.keys.current_index_key(&KeyScope::Global).await.unwrap();
    let email = |k: &rowseal_core::IndexKey| {
        k.blind_index_key("user", "email_idx")
            .unwrap()
            .compute(b"ada@example.com")
    };
    assert_ne!(email(&a), email(&b));
    assert_ne!(email(&a), email(&g));
    assert_eq!(email(&g), email(&g));
    let other_index = a.blind_index_key("user", "other").unwrap();
    assert_ne!(other_index.compute(b"ada@example.com"), email(&a));
    let scope_a = KeyScope::Tenant("a".into());
    let v2 = f.keys.begin_index_key_rotation(&scope_a).await.unwrap();
    assert_eq!(v2, 2);
    // Pending: still written under version 1 (and 2), not yet alone.
    assert_eq!(
        f.keys.current_index_key(&scope_a).await.unwrap().version(),
        1
    );
    f.keys.promote_index_key(&scope_a, v2).await.unwrap();
    let a2 = f
        .keys
        .current_index_key(&KeyScope::Tenant("a".into()))
        .await
        .unwrap();
    assert_eq!(a2.version(), 2);
    assert_ne!(email(&a2), email(&a));
}

#[tokio::test]
async fn compound_index_parts_are_length_prefixed() {
    use rowseal_core::KeyScope;
    let f = fixture();
    let k = f
        .keys
        .current_index_key(&KeyScope::Global)
        .await
        .unwrap()
        .blind_index_key("person", "name_idx")
        .unwrap();
    assert_ne!(
        k.compute_compound(&[b"ab", b"c"]).unwrap(),
        k.compute_compound(&[b"a", b"bc"]).unwrap()
    );
    assert_eq!(
        k.compute_compound(&[b"ab", b"c"]).unwrap(),
        k.compute_compound(&[b"ab", b"c"]).unwrap()
    );
}
