//! Format v2, against an independent reading of `docs/format.md` (the
//! `documented` module below rebuilds row keys, commitments, associated data and
//! envelopes with the `hmac`, `sha2` and `aes-gcm-siv` crates, from the
//! unwrapped tenant or data key), and v1 rows beside it:
//! - v2 rows round-trip in both key modes and are byte for byte what the
//!   document says; v1 rows made through the v1 entry point still open and
//!   are byte for byte v1;
//! - sizes: v2 derived header 56 bytes, envelope plaintext + 16; v1 71 and
//!   plaintext + 29;
//! - an unknown header version is `UnsupportedFormat`;
//! - presence: a NULLed or filled field is `FieldPresence`, another set of
//!   the same size `Decrypt`;
//! - re-keying: a field of an earlier write does not open under a later one;
//! - renames: tables and columns may change, logical names, tenant, record
//!   type and a bound primary key may not;
//! - every single-byte change of a v2 header or envelope is a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, Fixture};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rowseal_core::{
    EncryptionContext, Error, FieldName, FieldSet, KeyMode, KeyProvider, KeyPurpose, KeyScope,
    KeyStore, RecordSpec, RowHeader, SecretKey,
};

const DERIVED: RecordSpec = RecordSpec::new("patient", "patients");
const KMS: RecordSpec = RecordSpec::new("patient", "patients").with_key_mode(KeyMode::Kms);
const DERIVED_PK: RecordSpec = RecordSpec::new("patient", "patients").with_primary_key_bound(true);
const KMS_PK: RecordSpec = RecordSpec::new("patient", "patients")
    .with_key_mode(KeyMode::Kms)
    .with_primary_key_bound(true);
const SPECS: [&RecordSpec; 4] = [&DERIVED, &KMS, &DERIVED_PK, &KMS_PK];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The key mode byte of a header (offset 1).
fn mode_byte(spec: &RecordSpec) -> u8 {
    match spec.key_mode() {
        KeyMode::Derived => 1,
        _ => 2,
    }
}

/// The (stored, found) counts of a `FieldPresence` error.
fn counts(e: &Error) -> Option<(u8, u8)> {
    match e {
        Error::FieldPresence { stored, found } => Some((*stored, *found)),
        _ => None,
    }
}

fn set(names: &[&str]) -> FieldSet {
    FieldSet::new(names.iter().copied()).unwrap()
}

/// The spec, rebuilt from the document with stock crates.
mod documented {
    use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
    use aes_gcm_siv::{Aes256GcmSiv, Nonce};
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    pub fn lp(x: &[u8]) -> Vec<u8> {
        let mut out = (x.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(x);
        out
    }

    /// HMAC-SHA256 keyed with `key` over `prefix`, zero-padded to a multiple
    /// of 64 bytes, then `msg`.
    fn prefixed_hmac(key: &[u8; 32], prefix: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut padded = prefix.to_vec();
        padded.resize(prefix.len().div_ceil(64) * 64, 0);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(&padded);
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    pub fn commitment(version: u8, row_key: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(format!("rowseal/v{version}/commit"));
        h.update(row_key);
        h.finalize().into()
    }

    /// count (one byte) || lp(name) for each name, sorted and deduplicated.
    pub fn presence(names: &[&str]) -> Vec<u8> {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        let mut out = vec![names.len() as u8];
        for n in names {
            out.extend(lp(n.as_bytes()));
        }
        out
    }

    /// The v2 row key of `header`: HMAC(K'', 0x01 || header[0..24] ||
    /// presence).
    pub fn row_key_v2(
        k: &[u8; 32],
        record_type: &str,
        tenant: &str,
        header: &[u8],
        present: &[&str],
    ) -> [u8; 32] {
        let mut prefix = b"rowseal/v2/row-key".to_vec();
        prefix.extend(lp(record_type.as_bytes()));
        prefix.extend(lp(tenant.as_bytes()));
        let mut msg = vec![1u8];
        msg.extend_from_slice(&header[..24]);
        msg.extend(presence(present));
        prefixed_hmac(k, &prefix, &msg)
    }

    /// The v1 row key of `header`: HMAC(K', 0x01 || header[0..39]).
    pub fn row_key_v1(k: &[u8; 32], record_type: &str, tenant: &str, header: &[u8]) -> [u8; 32] {
        let mut prefix = b"rowseal/v1/row-key".to_vec();
        prefix.extend(lp(record_type.as_bytes()));
        prefix.extend(lp(tenant.as_bytes()));
        let mut msg = vec![1u8];
        msg.extend_from_slice(&header[..39]);
        prefixed_hmac(k, &prefix, &msg)
    }

    fn pk_part(pk: Option<&[u8]>) -> Vec<u8> {
        match pk {
            None => vec![0],
            Some(pk) => {
                let mut out = vec![1];
                out.extend(lp(pk));
                out
            }
        }
    }

    pub fn aad_v2(record_type: &str, tenant: &str, logical: &str, pk: Option<&[u8]>) -> Vec<u8> {
        let mut aad = vec![2u8];
        aad.extend(lp(record_type.as_bytes()));
        aad.extend(lp(tenant.as_bytes()));
        aad.extend(lp(logical.as_bytes()));
        aad.extend(pk_part(pk));
        aad
    }

    pub fn aad_v1(
        record_type: &str,
        tenant: &str,
        table: &str,
        column: &str,
        pk: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut aad = vec![1u8];
        aad.extend(lp(record_type.as_bytes()));
        aad.extend(lp(tenant.as_bytes()));
        aad.extend(lp(table.as_bytes()));
        aad.extend(lp(column.as_bytes()));
        aad.extend(pk_part(pk));
        aad
    }

    /// AES-256-GCM-SIV(row key, nonce, aad, plaintext) = ciphertext || tag.
    pub fn seal(row_key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        Aes256GcmSiv::new(row_key.into())
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap()
    }
}

/// The key a row key derives from: the tenant key (derived mode) or the
/// row's data key (kms mode), unwrapped by the provider as the hierarchy
/// does.
async fn base_key(f: &Fixture, spec: &RecordSpec, tenant: &str, header: &[u8]) -> SecretKey {
    let h = RowHeader::from_bytes(header).unwrap();
    match h.tenant_key_version() {
        Some(v) => {
            let scope = KeyScope::Tenant(tenant.to_owned());
            let rec = f
                .store
                .get(KeyPurpose::Tenant, &scope, v)
                .await
                .unwrap()
                .unwrap();
            f.counting
                .decrypt_data_key(
                    rec.wrapped.as_ref().unwrap(),
                    &EncryptionContext::stored_key(KeyPurpose::Tenant, &scope, v),
                )
                .await
                .unwrap()
        }
        None => f
            .counting
            .decrypt_data_key(
                h.wrapped_data_key().unwrap(),
                &EncryptionContext::row_data_key(spec.record_type(), tenant),
            )
            .await
            .unwrap(),
    }
}

#[test]
fn v2_rows_round_trip_and_are_the_documented_bytes() {
    let rt = rt();
    let f = fixture();
    let names = "[a-z_]{1,10}";
    runner(48)
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..300),
                names,
                names,
                "[a-z0-9-]{1,20}",
                proptest::collection::vec(any::<u8>(), 0..20),
                proptest::collection::btree_set(names, 0..4),
                0..4usize,
            ),
            |(value, logical, column, tenant, pk, others, which)| {
                rt.block_on(async {
                    let spec = SPECS[which];
                    let mut present: Vec<&str> = others.iter().map(String::as_str).collect();
                    present.push(&logical);
                    let fields = FieldSet::new(present.iter().copied()).unwrap();
                    let pk = Some(pk.as_slice());
                    let row = f
                        .keys
                        .new_row_key(spec, &tenant, pk, &fields)
                        .await
                        .unwrap();
                    let header = row.header_bytes();
                    let field = FieldName::new(&logical, &column);
                    let sealed = row.seal(field, &value).unwrap();

                    // Sizes and the header's fields.
                    prop_assert_eq!(sealed.len(), value.len() + 16);
                    let h = RowHeader::from_bytes(&header).unwrap();
                    prop_assert_eq!(h.format_version(), 2);
                    prop_assert_eq!(h.present_count(), Some(fields.len() as u8));
                    prop_assert_eq!(&header[..3], &[2, mode_byte(spec), 2][..]);
                    prop_assert_eq!(header[23] as usize, fields.len());
                    match spec.key_mode() {
                        KeyMode::Derived => {
                            prop_assert_eq!(header.len(), 56);
                            prop_assert_eq!(&header[3..7], &1u32.to_be_bytes()[..]);
                        }
                        _ => {
                            let w = h.wrapped_data_key().unwrap().to_bytes();
                            prop_assert_eq!(header.len(), 24 + w.len() + 32);
                            prop_assert_eq!(&header[3..7], &[0u8; 4][..]);
                            prop_assert_eq!(&header[24..24 + w.len()], &w[..]);
                        }
                    }

                    // The row key, commitment and envelope, as documented.
                    let k = base_key(&f, spec, &tenant, &header).await;
                    let rk = documented::row_key_v2(
                        k.expose_secret(),
                        spec.record_type(),
                        &tenant,
                        &header,
                        &present,
                    );
                    prop_assert_eq!(
                        &header[header.len() - 32..],
                        &documented::commitment(2, &rk)[..]
                    );
                    let bound_pk = if spec.binds_primary_key() { pk } else { None };
                    let aad = documented::aad_v2(spec.record_type(), &tenant, &logical, bound_pk);
                    prop_assert_eq!(&documented::seal(&rk, &[0; 12], &aad, &value), &sealed);

                    // And it opens, from the header, with the set in any order.
                    let mut reordered = present.clone();
                    reordered.reverse();
                    let again = FieldSet::new(reordered.iter().copied()).unwrap();
                    let reopened = f
                        .keys
                        .open_row_key(spec, &tenant, pk, &header, &again)
                        .await
                        .unwrap();
                    prop_assert_eq!(reopened.open(field, &sealed).unwrap(), value);
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[test]
fn v1_rows_still_open_and_are_byte_for_byte_v1() {
    let rt = rt();
    let f = fixture();
    let names = "[a-z_]{1,10}";
    runner(48)
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..300),
                names,
                names,
                "[a-z0-9-]{1,20}",
                proptest::collection::vec(any::<u8>(), 0..20),
                0..4usize,
                proptest::collection::btree_set(names, 0..4),
            ),
            |(value, logical, column, tenant, pk, which, any_set)| {
                rt.block_on(async {
                    let spec = SPECS[which];
                    let pk = Some(pk.as_slice());
                    let row = f.keys.new_row_key_v1(spec, &tenant, pk).await.unwrap();
                    let header = row.header_bytes();
                    let field = FieldName::new(&logical, &column);
                    let sealed = row.seal(field, &value).unwrap();

                    prop_assert_eq!(sealed.len(), value.len() + 29);
                    prop_assert_eq!(sealed[0], 1);
                    let h = RowHeader::from_bytes(&header).unwrap();
                    prop_assert_eq!(h.format_version(), 1);
                    prop_assert_eq!(h.present_count(), None);
                    prop_assert_eq!(&header[..3], &[1, mode_byte(spec), 1][..]);
                    if spec.key_mode() == KeyMode::Derived {
                        prop_assert_eq!(header.len(), 71);
                    }

                    // v1 bytes: the v1 derivation, commitment, associated data
                    // (table and column, not the logical name) and envelope.
                    let k = base_key(&f, spec, &tenant, &header).await;
                    let rk = documented::row_key_v1(
                        k.expose_secret(),
                        spec.record_type(),
                        &tenant,
                        &header,
                    );
                    prop_assert_eq!(
                        &header[header.len() - 32..],
                        &documented::commitment(1, &rk)[..]
                    );
                    let bound_pk = if spec.binds_primary_key() { pk } else { None };
                    let aad = documented::aad_v1(
                        spec.record_type(),
                        &tenant,
                        spec.table(),
                        &column,
                        bound_pk,
                    );
                    let nonce: [u8; 12] = sealed[1..13].try_into().unwrap();
                    prop_assert_eq!(
                        &documented::seal(&rk, &nonce, &aad, &value)[..],
                        &sealed[13..]
                    );

                    // It opens through the hierarchy and the record keys, whatever
                    // presence set is given (v1 did not bind presence).
                    let any_set = FieldSet::new(any_set.iter().map(String::as_str)).unwrap();
                    let reopened = f
                        .keys
                        .open_row_key(spec, &tenant, pk, &header, &any_set)
                        .await
                        .unwrap();
                    prop_assert_eq!(reopened.open(field, &sealed).unwrap(), value.clone());
                    // The column is bound, not the logical name.
                    let renamed = FieldName::new("other_logical_name", &column);
                    prop_assert_eq!(reopened.open(renamed, &sealed).unwrap(), value.clone());
                    let moved = FieldName::new(&logical, "other_column");
                    prop_assert!(matches!(reopened.open(moved, &sealed), Err(Error::Decrypt)));
                    if spec.key_mode() == KeyMode::Derived {
                        let keys = f.keys.record_keys(spec, &tenant, 1).await.unwrap();
                        let reopened = keys.open_row(pk, &header, &any_set).unwrap();
                        prop_assert_eq!(reopened.open(field, &sealed).unwrap(), value);
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[tokio::test]
async fn sizes_are_pinned() {
    let f = fixture();
    let present = set(&["a"]);
    let v2 = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap();
    let v1 = f.keys.new_row_key_v1(&DERIVED, "t", None).await.unwrap();
    assert_eq!(v2.header_bytes().len(), 56);
    assert_eq!(v1.header_bytes().len(), 71);
    for n in [0usize, 1, 15, 16, 17, 31, 1000] {
        let value = vec![7u8; n];
        assert_eq!(v2.seal(FieldName::same("a"), &value).unwrap().len(), n + 16);
        assert_eq!(v1.seal(FieldName::same("a"), &value).unwrap().len(), n + 29);
    }
    // kms mode: the wrapped data key (local provider: 5 + 8 + 61 bytes) sits
    // between the bound part and the commitment.
    let kms = f.keys.new_row_key(&KMS, "t", None, &present).await.unwrap();
    assert_eq!(kms.header_bytes().len(), 24 + 74 + 32);
    let kms = f.keys.new_row_key_v1(&KMS, "t", None).await.unwrap();
    assert_eq!(kms.header_bytes().len(), 39 + 74 + 32);
}

#[tokio::test]
async fn an_unknown_header_version_is_unsupported() {
    let f = fixture();
    let present = set(&["a"]);
    for spec in [&DERIVED, &KMS] {
        let row = f.keys.new_row_key(spec, "t", None, &present).await.unwrap();
        for version in [0u8, 3, 0x80, 0xFF] {
            let mut header = row.header_bytes();
            header[0] = version;
            let expected = |e: &Error| {
                matches!(e, Error::UnsupportedFormat { what: "row header", version: v }
                    if *v == version)
            };
            let e = f
                .keys
                .open_row_key(spec, "t", None, &header, &present)
                .await
                .unwrap_err();
            assert!(expected(&e), "{e:?}");
            assert!(expected(&RowHeader::from_bytes(&header).unwrap_err()));
            assert_eq!(RowHeader::peek_tenant_key_version(&header), None);
            if spec.key_mode() == KeyMode::Derived {
                let keys = f.keys.record_keys(spec, "t", 1).await.unwrap();
                let e = keys.open_row(None, &header, &present).unwrap_err();
                assert!(expected(&e), "{e:?}");
            }
        }
    }
    // A v2 header claiming the v1 suite, and the other way round.
    let mut header = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap()
        .header_bytes();
    header[2] = 1;
    let e = f
        .keys
        .open_row_key(&DERIVED, "t", None, &header, &present)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedFormat {
                what: "algorithm suite",
                version: 1
            }
        ),
        "{e:?}"
    );
}

/// Presence, by name: dropping a name (a NULLed field) or adding one (a
/// filled field) is `FieldPresence` with both counts, before any key is
/// fetched; the same count with another name is `Decrypt`; the set itself
/// (in any order, with duplicates) opens.
#[test]
fn presence_is_bound_by_name() {
    let rt = rt();
    let f = fixture();
    let name = "[a-z]{1,6}";
    runner(64)
        .run(
            &(
                proptest::collection::btree_set(name, 1..8),
                name,
                any::<prop::sample::Index>(),
                any::<bool>(),
            ),
            |(names, extra, drop_at, kms)| {
                prop_assume!(!names.contains(&extra));
                rt.block_on(async {
                    let spec = if kms { &KMS } else { &DERIVED };
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let n = names.len() as u8;
                    let present = set(&names);
                    let row = f.keys.new_row_key(spec, "t", None, &present).await.unwrap();
                    let header = row.header_bytes();
                    let sealed: Vec<Vec<u8>> = names
                        .iter()
                        .map(|&name| row.seal(FieldName::same(name), name.as_bytes()).unwrap())
                        .collect();
                    let open = |with: Vec<&str>| {
                        let with = FieldSet::new(with).unwrap();
                        let (f, header) = (&f, &header);
                        async move { f.keys.open_row_key(spec, "t", None, header, &with).await }
                    };

                    // The set itself, reversed and with a duplicate.
                    let mut same: Vec<&str> = names.iter().rev().copied().collect();
                    same.push(names[0]);
                    let r = open(same).await.unwrap();
                    for (name, sealed) in names.iter().zip(&sealed) {
                        prop_assert_eq!(
                            r.open(FieldName::same(name), sealed).unwrap(),
                            name.as_bytes()
                        );
                    }

                    let before = f.counting.counts();
                    // A field NULLed.
                    let dropped = drop_at.index(names.len());
                    let mut fewer = names.clone();
                    fewer.remove(dropped);
                    let e = open(fewer.clone()).await.unwrap_err();
                    prop_assert_eq!(counts(&e), Some((n, n - 1)), "{:?}", e);
                    // A field filled.
                    let mut more = names.clone();
                    more.push(&extra);
                    let e = open(more).await.unwrap_err();
                    prop_assert_eq!(counts(&e), Some((n, n + 1)), "{:?}", e);
                    // Both rejected from the header alone: no provider call.
                    prop_assert_eq!(f.counting.counts(), before);

                    // Same count, another name: the commitment fails.
                    let mut swapped = fewer;
                    swapped.push(&extra);
                    let e = open(swapped).await.unwrap_err();
                    prop_assert!(matches!(e, Error::Decrypt), "{e:?}");
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[tokio::test]
async fn a_row_with_every_encrypted_field_null_binds_the_empty_set() {
    let f = fixture();
    for spec in [&DERIVED, &KMS] {
        let row = f
            .keys
            .new_row_key(spec, "t", None, &FieldSet::empty())
            .await
            .unwrap();
        assert_eq!(row.header().present_count(), Some(0));
        let header = row.header_bytes();
        f.keys
            .open_row_key(spec, "t", None, &header, &FieldSet::new([]).unwrap())
            .await
            .unwrap();
        let e = f
            .keys
            .open_row_key(spec, "t", None, &header, &set(&["ssn"]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::FieldPresence {
                    stored: 0,
                    found: 1
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn the_presence_error_says_the_counts_and_nothing_else() {
    let e = Error::FieldPresence {
        stored: 3,
        found: 2,
    };
    assert_eq!(
        e.to_string(),
        "a NULLed or filled encrypted field: the row's header was written with 3 non-NULL \
         encrypted fields, the row now has 2"
    );
    assert_eq!(format!("{e:?}"), "FieldPresence { stored: 3, found: 2 }");
}

/// Every write re-keys the row: fields of an earlier write (another salt)
/// do not open under a later write's key or header, and the other way
/// round, so a row cannot mix fields of two writes.
#[test]
fn a_field_of_an_earlier_write_does_not_open_under_a_later_one() {
    let rt = rt();
    let f = fixture();
    runner(64)
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(any::<u8>(), 0..64),
                0..4usize,
            ),
            |(old_value, new_value, which)| {
                rt.block_on(async {
                    let spec = SPECS[which];
                    let pk = Some(&b"row-7"[..]);
                    let present = set(&["name", "ssn"]);
                    let (name, ssn) = (FieldName::same("name"), FieldName::same("ssn"));
                    let first = f.keys.new_row_key(spec, "t", pk, &present).await.unwrap();
                    let old_ssn = first.seal(ssn, &old_value).unwrap();
                    let old_name = first.seal(name, b"Ada").unwrap();
                    // The update: a new row key, both fields re-sealed.
                    let second = f.keys.new_row_key(spec, "t", pk, &present).await.unwrap();
                    let new_ssn = second.seal(ssn, &new_value).unwrap();
                    let new_name = second.seal(name, b"Ada").unwrap();
                    prop_assert_ne!(first.header_bytes(), second.header_bytes());
                    prop_assert_ne!(&old_name, &new_name);

                    let open = |header: Vec<u8>| {
                        let (f, present) = (&f, &present);
                        async move {
                            f.keys
                                .open_row_key(spec, "t", pk, &header, present)
                                .await
                                .unwrap()
                        }
                    };
                    let now = open(second.header_bytes()).await;
                    prop_assert_eq!(now.open(ssn, &new_ssn).unwrap(), new_value.clone());
                    prop_assert_eq!(now.open(name, &new_name).unwrap(), b"Ada");
                    // An old field mixed into the new row, and a new one
                    // into the old row (a rolled-back header).
                    prop_assert!(matches!(now.open(ssn, &old_ssn), Err(Error::Decrypt)));
                    prop_assert!(matches!(now.open(name, &old_name), Err(Error::Decrypt)));
                    let then = open(first.header_bytes()).await;
                    prop_assert!(matches!(then.open(ssn, &new_ssn), Err(Error::Decrypt)));
                    prop_assert_eq!(then.open(ssn, &old_ssn).unwrap(), old_value);
                    Ok(())
                })
            },
        )
        .unwrap();
}

/// The fixed nonce is safe because each (row key, field) pair seals once,
/// and the associated data differs per field: one value in two fields of a
/// row gives unrelated ciphertexts.
#[tokio::test]
async fn one_value_in_two_fields_of_a_row_seals_differently() {
    let f = fixture();
    let present = set(&["a", "b"]);
    let row = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap();
    let value = [0x42u8; 48];
    let a = row.seal(FieldName::same("a"), &value).unwrap();
    let b = row.seal(FieldName::same("b"), &value).unwrap();
    assert_ne!(a, b);
    assert!(a.iter().zip(&b).filter(|(x, y)| x == y).count() < 16);
}

/// v2 associated data names the field by its logical name, not its table
/// or column: a renamed table or column still opens; another logical name,
/// tenant, record type or bound primary key does not.
#[test]
fn tables_and_columns_may_be_renamed_logical_names_may_not() {
    let rt = rt();
    let f = fixture();
    let names = "[a-z_]{1,10}";
    runner(64)
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..64),
                (names, names, names, names),
                names,
                (names, names),
                (any::<u64>(), any::<u64>()),
                any::<bool>(),
            ),
            |(
                value,
                (table, other_table, column, other_column),
                logical,
                (tenant, other_tenant),
                (pk, other_pk),
                kms,
            )| {
                prop_assume!(tenant != other_tenant && pk != other_pk && logical != "other");
                rt.block_on(async {
                    let mode = if kms { KeyMode::Kms } else { KeyMode::Derived };
                    let spec = |record_type: &str, table: &str| {
                        RecordSpec::owned(record_type.into(), table.into())
                            .with_key_mode(mode)
                            .with_primary_key_bound(true)
                    };
                    let (pk, other_pk) = (pk.to_be_bytes(), other_pk.to_be_bytes());
                    let present = FieldSet::new([logical.as_str()]).unwrap();
                    let home = spec("patient", &table);
                    let row = f
                        .keys
                        .new_row_key(&home, &tenant, Some(&pk), &present)
                        .await
                        .unwrap();
                    let header = row.header_bytes();
                    let sealed = row.seal(FieldName::new(&logical, &column), &value).unwrap();

                    // Renamed table and column: opens.
                    let renamed = f
                        .keys
                        .open_row_key(
                            &spec("patient", &other_table),
                            &tenant,
                            Some(&pk),
                            &header,
                            &present,
                        )
                        .await
                        .unwrap();
                    prop_assert_eq!(
                        renamed
                            .open(FieldName::new(&logical, &other_column), &sealed)
                            .unwrap(),
                        value.clone()
                    );
                    // Another logical name (the presence set renamed along).
                    let other_set = FieldSet::new(["other"]).unwrap();
                    let r = f
                        .keys
                        .open_row_key(&home, &tenant, Some(&pk), &header, &other_set)
                        .await;
                    prop_assert!(matches!(r, Err(Error::Decrypt)), "{r:?}");
                    prop_assert!(matches!(
                        row.open(FieldName::new("other", &column), &sealed),
                        Err(Error::Decrypt)
                    ));
                    // Another tenant, another record type: the header fails.
                    f.keys
                        .new_row_key(&home, &other_tenant, Some(&pk), &present)
                        .await
                        .unwrap();
                    for (s, t) in [
                        (&home, other_tenant.as_str()),
                        (&spec("invoice", &table), tenant.as_str()),
                    ] {
                        let e = f
                            .keys
                            .open_row_key(s, t, Some(&pk), &header, &present)
                            .await
                            .unwrap_err();
                        prop_assert!(matches!(e, Error::Decrypt | Error::Provider(_)), "{e:?}");
                    }
                    // Another (bound) primary key: the field fails.
                    let moved = f
                        .keys
                        .open_row_key(&home, &tenant, Some(&other_pk), &header, &present)
                        .await
                        .unwrap();
                    prop_assert!(matches!(
                        moved.open(FieldName::new(&logical, &column), &sealed),
                        Err(Error::Decrypt)
                    ));
                    Ok(())
                })
            },
        )
        .unwrap();
}

fn is_typed_rejection(e: &Error) -> bool {
    matches!(
        e,
        Error::Decrypt
            | Error::Malformed { .. }
            | Error::UnsupportedFormat { .. }
            | Error::KeyNotFound { .. }
            | Error::Provider(_)
            | Error::FieldPresence { .. }
    )
}

/// Exhaustive, beside the sampled properties of tamper.rs: every byte of a
/// v2 header and envelope XORed with every non-zero value, every
/// truncation, and extensions, in both key modes.
#[tokio::test]
async fn every_single_byte_change_of_a_v2_header_or_envelope_is_rejected() {
    let f = fixture();
    let present = set(&["ssn"]);
    let ssn = FieldName::same("ssn");
    for spec in [&DERIVED_PK, &KMS_PK] {
        let pk = Some(&b"7"[..]);
        let row = f.keys.new_row_key(spec, "t", pk, &present).await.unwrap();
        let header = row.header_bytes();
        let sealed = row.seal(ssn, b"123-45-6789").unwrap();
        let mut variants: Vec<(usize, Vec<u8>)> = Vec::new();
        for at in 0..header.len() {
            for xor in 1..=255u8 {
                let mut h = header.clone();
                h[at] ^= xor;
                variants.push((at, h));
            }
        }
        for to in 0..header.len() {
            variants.push((to, header[..to].to_vec()));
        }
        for extra in [&[0u8][..], &[1], &[0; 32]] {
            variants.push((header.len(), [&header[..], extra].concat()));
        }
        for (at, bad) in variants {
            match f.keys.open_row_key(spec, "t", pk, &bad, &present).await {
                Err(e) => {
                    assert!(is_typed_rejection(&e), "{e:?}");
                    if at == 23 && bad.len() == header.len() {
                        assert!(
                            matches!(e, Error::FieldPresence { stored, found: 1 } if stored != 1)
                        );
                    }
                }
                Ok(_) => panic!("a changed {:?} header opened (byte {at})", spec.key_mode()),
            }
        }

        let reopened = f
            .keys
            .open_row_key(spec, "t", pk, &header, &present)
            .await
            .unwrap();
        for at in 0..sealed.len() {
            for xor in 1..=255u8 {
                let mut s = sealed.clone();
                s[at] ^= xor;
                assert!(matches!(reopened.open(ssn, &s), Err(Error::Decrypt)));
            }
        }
        for to in 0..sealed.len() {
            let e = reopened.open(ssn, &sealed[..to]).unwrap_err();
            if to < 16 {
                assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
            } else {
                assert!(matches!(e, Error::Decrypt), "{e:?}");
            }
        }
        for extra in [&[0u8][..], &[1], &[0; 16]] {
            let longer = [&sealed[..], extra].concat();
            assert!(matches!(reopened.open(ssn, &longer), Err(Error::Decrypt)));
        }
        assert_eq!(reopened.open(ssn, &sealed).unwrap(), b"123-45-6789");
    }
}

#[tokio::test]
async fn peek_reads_the_key_version_of_v2_headers() {
    let f = fixture();
    let present = set(&["a"]);
    let row = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap();
    assert_eq!(
        RowHeader::peek_tenant_key_version(&row.header_bytes()),
        Some(1)
    );
    f.keys.rotate_tenant_key("t").await.unwrap();
    let row = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap();
    assert_eq!(
        RowHeader::peek_tenant_key_version(&row.header_bytes()),
        Some(2)
    );
    let v1 = f.keys.new_row_key_v1(&DERIVED, "t", None).await.unwrap();
    assert_eq!(
        RowHeader::peek_tenant_key_version(&v1.header_bytes()),
        Some(2)
    );
    let kms = f.keys.new_row_key(&KMS, "t", None, &present).await.unwrap();
    assert_eq!(
        RowHeader::peek_tenant_key_version(&kms.header_bytes()),
        None
    );
}

/// A kms-mode v2 row rewrapped under the root key (as `rowseal rewrap`
/// does): the new header differs only in the wrapped key and still opens
/// every field.
#[tokio::test]
async fn a_rewrapped_v2_header_opens_the_same_fields() {
    let f = fixture();
    let present = set(&["ssn"]);
    let ssn = FieldName::same("ssn");
    let row = f.keys.new_row_key(&KMS, "t", None, &present).await.unwrap();
    let sealed = row.seal(ssn, b"x").unwrap();
    let header = row.header();
    let ctx = EncryptionContext::row_data_key(KMS.record_type(), "t");
    let rewrapped = f
        .counting
        .reencrypt_data_key(header.wrapped_data_key().unwrap(), &ctx, "local:v1")
        .await
        .unwrap();
    let new = header.with_wrapped_data_key(rewrapped).unwrap();
    assert_eq!(new.format_version(), 2);
    let (old_bytes, new_bytes) = (header.to_bytes(), new.to_bytes());
    assert_ne!(old_bytes, new_bytes);
    assert_eq!(old_bytes[..24], new_bytes[..24]);
    assert_eq!(
        old_bytes[old_bytes.len() - 32..],
        new_bytes[new_bytes.len() - 32..]
    );
    let reopened = f
        .keys
        .open_row_key(&KMS, "t", None, &new_bytes, &present)
        .await
        .unwrap();
    assert_eq!(reopened.open(ssn, &sealed).unwrap(), b"x");
    // Derived headers hold no wrapped key.
    let derived = f
        .keys
        .new_row_key(&DERIVED, "t", None, &present)
        .await
        .unwrap();
    let w = new.wrapped_data_key().unwrap().clone();
    assert!(matches!(
        derived.header().with_wrapped_data_key(w),
        Err(Error::InvalidInput { .. })
    ));
}

proptest! {
    /// The canonical bytes depend on the set only: not on order or
    /// duplicates; two different sets never share them.
    #[test]
    fn field_sets_are_canonical(
        a in proptest::collection::vec("[a-c]{0,3}", 0..6),
        b in proptest::collection::vec("[a-c]{0,3}", 0..6),
    ) {
        let sa = FieldSet::new(a.iter().map(String::as_str)).unwrap();
        let sb = FieldSet::new(b.iter().map(String::as_str)).unwrap();
        let set_a: std::collections::BTreeSet<&str> = a.iter().map(String::as_str).collect();
        let set_b: std::collections::BTreeSet<&str> = b.iter().map(String::as_str).collect();
        prop_assert_eq!(sa.len(), set_a.len());
        prop_assert_eq!(sa.iter().collect::<Vec<_>>(), set_a.iter().copied().collect::<Vec<_>>());
        let names: Vec<&str> = a.iter().map(String::as_str).collect();
        prop_assert_eq!(sa.canonical_bytes(), &documented::presence(&names)[..]);
        prop_assert_eq!(sa.canonical_bytes() == sb.canonical_bytes(), set_a == set_b);
        prop_assert_eq!(sa == sb, set_a == set_b);
        for n in &b {
            prop_assert_eq!(sa.contains(n), set_a.contains(n.as_str()));
        }
        let mut reversed = a.clone();
        reversed.reverse();
        reversed.extend(a.iter().cloned());
        let again = FieldSet::new(reversed.iter().map(String::as_str)).unwrap();
        prop_assert_eq!(again.canonical_bytes(), sa.canonical_bytes());
    }
}
