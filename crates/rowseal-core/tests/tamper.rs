//! Hostile input, in both format versions (v2, what new rows are, and v1,
//! which old rows still are): every single-byte change, truncation or
//! extension of a field envelope or a row header is rejected with a typed
//! error and never panics; values moved to another tenant, field, (v1) table
//! or (opted-in) row fail to decrypt; a header whose commitment does not
//! match its key is rejected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, Fixture};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rowseal_core::{
    Error, FieldName, FieldSet, KeyMode, ProviderErrorKind, RecordSpec, Result, RowKey,
};

const DERIVED: RecordSpec = RecordSpec::new("patient", "patients").with_primary_key_bound(true);
const KMS: RecordSpec = RecordSpec::new("patient", "patients")
    .with_key_mode(KeyMode::Kms)
    .with_primary_key_bound(true);

/// The format versions a row may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V1,
    V2,
}
const FORMATS: [Format; 2] = [Format::V2, Format::V1];

/// The present fields of the rows written here (the v2 row key binds them;
/// v1 ignores them).
fn present(field: &str) -> FieldSet {
    FieldSet::new([field]).unwrap()
}

/// A new row key of `format`, whose row has `field` present.
async fn new_row(
    f: &Fixture,
    format: Format,
    spec: &RecordSpec,
    tenant: &str,
    pk: Option<&[u8]>,
    field: &str,
) -> Result<RowKey> {
    match format {
        Format::V1 => f.keys.new_row_key_v1(spec, tenant, pk).await,
        Format::V2 => f.keys.new_row_key(spec, tenant, pk, &present(field)).await,
    }
}

/// Opens a row key whose row has `field` present.
async fn open_row(
    f: &Fixture,
    spec: &RecordSpec,
    tenant: &str,
    pk: Option<&[u8]>,
    header: &[u8],
    field: &str,
) -> Result<RowKey> {
    f.keys
        .open_row_key(spec, tenant, pk, header, &present(field))
        .await
}

fn same(name: &str) -> FieldName<'_> {
    FieldName::same(name)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { to: usize },
    Extend { with: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(|with| Mutation::Extend { with }),
    ]
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match m {
        Mutation::Flip { at, xor } => {
            let i = at % out.len();
            out[i] ^= xor;
        }
        Mutation::Truncate { to } => out.truncate(to % out.len()),
        Mutation::Extend { with } => out.extend_from_slice(with),
    }
    assert_ne!(out, bytes);
    out
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

#[test]
fn any_change_to_a_field_envelope_is_rejected() {
    let rt = rt();
    let f = fixture();
    for format in FORMATS {
        for spec in [&DERIVED, &KMS] {
            runner(512)
                .run(
                    &(proptest::collection::vec(any::<u8>(), 0..200), mutation()),
                    |(value, m)| {
                        rt.block_on(async {
                            let row = new_row(&f, format, spec, "t1", Some(b"7"), "ssn")
                                .await
                                .unwrap();
                            let sealed = row.seal(same("ssn"), &value).unwrap();
                            let bad = apply(&sealed, &m);
                            let err = row.open(same("ssn"), &bad).unwrap_err();
                            prop_assert!(is_typed_rejection(&err), "{format:?} {err:?}");
                            prop_assert_eq!(row.open(same("ssn"), &sealed).unwrap(), value);
                            Ok(())
                        })
                    },
                )
                .unwrap();
        }
    }
}

#[test]
fn any_change_to_a_row_header_is_rejected() {
    let rt = rt();
    let f = fixture();
    for format in FORMATS {
        for spec in [&DERIVED, &KMS] {
            runner(512)
                .run(&mutation(), |m| {
                    rt.block_on(async {
                        let row = new_row(&f, format, spec, "t1", Some(b"7"), "ssn")
                            .await
                            .unwrap();
                        let header = row.header_bytes();
                        let bad = apply(&header, &m);
                        let err = open_row(&f, spec, "t1", Some(b"7"), &bad, "ssn")
                            .await
                            .unwrap_err();
                        prop_assert!(is_typed_rejection(&err), "{format:?} {err:?}");
                        Ok(())
                    })
                })
                .unwrap();
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let rt = rt();
    let f = fixture();
    let rows: Vec<RowKey> = FORMATS
        .iter()
        .map(|&format| {
            rt.block_on(new_row(&f, format, &DERIVED, "t1", Some(b"7"), "ssn"))
                .unwrap()
        })
        .collect();
    runner(2048)
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |bytes| {
            rt.block_on(async {
                for spec in [&DERIVED, &KMS] {
                    if let Err(e) = open_row(&f, spec, "t1", Some(b"7"), &bytes, "ssn").await {
                        prop_assert!(is_typed_rejection(&e), "{e:?}");
                    }
                }
                for row in &rows {
                    let e = row.open(same("ssn"), &bytes).unwrap_err();
                    prop_assert!(is_typed_rejection(&e), "{e:?}");
                }
                let _ = rowseal_core::WrappedKey::from_bytes(&bytes);
                let _ = rowseal_core::RowHeader::from_bytes(&bytes);
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn moved_values_fail_to_decrypt() {
    let rt = rt();
    let f = fixture();
    let names = "[a-z]{1,12}";
    runner(128)
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..100),
                names,
                names,
                names,
                names,
                any::<u64>(),
                any::<u64>(),
            ),
            |(value, tenant, other_tenant, column, other_column, pk, other_pk)| {
                prop_assume!(tenant != other_tenant && column != other_column && pk != other_pk);
                rt.block_on(async {
                    let (pk, other_pk) = (pk.to_be_bytes(), other_pk.to_be_bytes());
                    for format in FORMATS {
                        for spec in [&DERIVED, &KMS] {
                            let row = new_row(&f, format, spec, &tenant, Some(&pk), &column)
                                .await
                                .unwrap();
                            let header = row.header_bytes();
                            let sealed = row.seal(same(&column), &value).unwrap();
                            let open = |spec, tenant, pk, header| {
                                open_row(&f, spec, tenant, pk, header, &column)
                            };

                            // Another tenant (that has keys of its own): rejected at
                            // the header, by the key commitment.
                            new_row(&f, format, spec, &other_tenant, Some(&pk), &column)
                                .await
                                .unwrap();
                            let err = open(spec, &other_tenant, Some(&pk), &header)
                                .await
                                .unwrap_err();
                            prop_assert!(
                                matches!(err, Error::Decrypt | Error::Provider(_)),
                                "{err:?}"
                            );
                            // Another field of the same row (logical name and
                            // column both differ).
                            prop_assert!(matches!(
                                row.open(same(&other_column), &sealed),
                                Err(Error::Decrypt)
                            ));
                            // Another row (other primary key, same header copied along).
                            let moved =
                                open(spec, &tenant, Some(&other_pk), &header).await.unwrap();
                            prop_assert!(matches!(
                                moved.open(same(&column), &sealed),
                                Err(Error::Decrypt)
                            ));
                            // Another row with its own header.
                            let neighbour = new_row(&f, format, spec, &tenant, Some(&pk), &column)
                                .await
                                .unwrap();
                            prop_assert!(matches!(
                                neighbour.open(same(&column), &sealed),
                                Err(Error::Decrypt)
                            ));
                            // Another table of the same record type: bound in
                            // v1; in v2 a renamed table, which must still open.
                            let other_table = RecordSpec::owned("patient".into(), "archive".into())
                                .with_key_mode(spec.key_mode())
                                .with_primary_key_bound(true);
                            let r = open(&other_table, &tenant, Some(&pk), &header)
                                .await
                                .unwrap();
                            match format {
                                Format::V1 => prop_assert!(matches!(
                                    r.open(same(&column), &sealed),
                                    Err(Error::Decrypt)
                                )),
                                Format::V2 => prop_assert_eq!(
                                    r.open(same(&column), &sealed).unwrap(),
                                    value.clone()
                                ),
                            }
                            // Another record type.
                            let other_type = RecordSpec::owned("invoice".into(), "patients".into())
                                .with_key_mode(spec.key_mode())
                                .with_primary_key_bound(true);
                            let err = open(&other_type, &tenant, Some(&pk), &header)
                                .await
                                .unwrap_err();
                            prop_assert!(
                                matches!(err, Error::Decrypt | Error::Provider(_)),
                                "{err:?}"
                            );
                            // And where it belongs, it opens.
                            let home = open(spec, &tenant, Some(&pk), &header).await.unwrap();
                            prop_assert_eq!(
                                home.open(same(&column), &sealed).unwrap(),
                                value.clone()
                            );
                        }
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[test]
fn a_commitment_that_does_not_match_the_key_is_rejected() {
    let rt = rt();
    let f = fixture();
    for format in FORMATS {
        runner(256)
            .run(&any::<[u8; 32]>(), |commitment| {
                rt.block_on(async {
                    let row = new_row(&f, format, &DERIVED, "t1", Some(b"7"), "c")
                        .await
                        .unwrap();
                    let mut header = row.header_bytes();
                    let n = header.len();
                    prop_assume!(header[n - 32..] != commitment);
                    header[n - 32..].copy_from_slice(&commitment);
                    let err = open_row(&f, &DERIVED, "t1", Some(b"7"), &header, "c")
                        .await
                        .unwrap_err();
                    prop_assert!(matches!(err, Error::Decrypt), "{err:?}");
                    Ok(())
                })
            })
            .unwrap();
        // Two tenants on the same key version: one's header under the other's key.
        rt.block_on(async {
            let a = new_row(&f, format, &DERIVED, "a", Some(b"7"), "c")
                .await
                .unwrap();
            new_row(&f, format, &DERIVED, "b", Some(b"7"), "c")
                .await
                .unwrap();
            let err = open_row(&f, &DERIVED, "b", Some(b"7"), &a.header_bytes(), "c")
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Decrypt));
        });
    }
}

#[test]
fn errors_are_the_same_for_wrong_key_and_tampering() {
    let rt = rt();
    let f = fixture();
    for format in FORMATS {
        rt.block_on(async {
            let row = new_row(&f, format, &DERIVED, "t1", Some(b"7"), "c")
                .await
                .unwrap();
            let sealed = row.seal(same("c"), b"v").unwrap();
            let mut tampered = sealed.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            let wrong_key = new_row(&f, format, &DERIVED, "t1", Some(b"7"), "c")
                .await
                .unwrap();
            let a = row.open(same("c"), &tampered).unwrap_err();
            let b = wrong_key.open(same("c"), &sealed).unwrap_err();
            assert_eq!(a.to_string(), b.to_string());
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        });
    }
}

/// Finding 3 of the v1 review: a destroyed (say, compromised) tenant key kept
/// from a backup, put back by a database writer as a new active version,
/// must not become the key new rows are written under. The key version is in
/// the wrapped key's encryption context, so version 1's wrapped bytes do not
/// unwrap as version 3. (Before the version was in the context, this test
/// wrote a row under the resurrected key.)
#[tokio::test]
async fn a_destroyed_key_put_back_as_a_new_version_is_refused() {
    use rowseal_core::{KeyPurpose, KeyRecord, KeyScope, KeyState, KeyStore};
    let f = common::fixture();
    let spec = RecordSpec::new("user", "users");
    let present = FieldSet::empty();
    f.keys
        .new_row_key(&spec, "acme", None, &present)
        .await
        .unwrap();
    let scope = KeyScope::Tenant("acme".into());
    let backup = f
        .store
        .get(KeyPurpose::Tenant, &scope, 1)
        .await
        .unwrap()
        .unwrap()
        .wrapped
        .unwrap();
    // Rotate away from version 1 and destroy it.
    assert_eq!(f.keys.rotate_tenant_key("acme").await.unwrap(), 2);
    assert!(f.store.destroy(KeyPurpose::Tenant, &scope, 1));
    // The attacker inserts the backup as version 3, active.
    assert!(f
        .store
        .insert(&KeyRecord {
            purpose: KeyPurpose::Tenant,
            scope: scope.clone(),
            version: 3,
            wrapped: Some(backup),
            state: KeyState::Active,
        })
        .await
        .unwrap());
    f.keys.forget_cached_keys();
    let err = f
        .keys
        .new_row_key(&spec, "acme", None, &present)
        .await
        .unwrap_err();
    let kind = err.provider_error().map(|e| e.kind());
    assert_eq!(
        kind,
        Some(ProviderErrorKind::InvalidCiphertext),
        "resurrected key: {err}"
    );
    // Version 2, the real current key, still works when asked for by version.
    f.keys.tenant_key("acme", 2).await.unwrap();
}
