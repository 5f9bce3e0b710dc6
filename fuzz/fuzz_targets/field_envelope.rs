//! The per-field envelope, in both format versions (2: ciphertext || tag,
//! no version byte, no stored nonce; 1: version, nonce, ciphertext, tag): for
//! arbitrary values, root keys, tenants, field names and primary keys, in
//! both key modes,
//! - open(seal(x)) == x, and the envelope is x + 16 bytes (v2) or x + 29 (v1);
//! - any change to a sealed value (flip, truncation, extension, insertion,
//!   removal) is rejected with a typed error;
//! - a value moved to another field or another primary key (when the
//!   record type binds it) fails with `Error::Decrypt`;
//! - v2 binds the logical name, not the column (a renamed column opens); v1
//!   binds the column;
//! - arbitrary bytes never open and never panic;
//! - no error's Display/Debug holds the plaintext or the root key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_core::{Error, FieldName, FieldSet, KeyMode, RecordSpec};
use rowseal_fuzz::inputs::FieldEnvelopeInput as Input;
use rowseal_fuzz::{
    assert_error_is_clean_but_echo, block_on, hierarchy, is_typed_rejection, new_row_key, Format,
    FORMATS, PLAINTEXT_MARKER,
};

fuzz_target!(|input: Input| {
    let mode = if input.kms_mode {
        KeyMode::Kms
    } else {
        KeyMode::Derived
    };
    let spec = RecordSpec::owned("patient".into(), "patients".into())
        .with_key_mode(mode)
        .with_primary_key_bound(input.bind_pk);
    let keys = hierarchy(input.root);
    let pk = input.pk.as_deref();
    // The field: its logical name and column are both `column` here.
    let field = FieldName::same(&input.column);
    let present = FieldSet::new([input.column.as_str()]).expect("one name");
    let mut marked = PLAINTEXT_MARKER.as_bytes().to_vec();
    marked.extend_from_slice(&input.value);
    let secrets: [&[u8]; 3] = [&input.root, &marked, &input.value];

    for format in FORMATS {
        let row = match new_row_key(&keys, format, &spec, &input.tenant, pk, &present) {
            Ok(row) => row,
            // A primary key is required when the type binds it; other names
            // are all accepted.
            Err(e) => {
                assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
                assert!(input.bind_pk && pk.is_none());
                assert_error_is_clean_but_echo(&e, &[&input.root], &[&input.tenant]);
                return;
            }
        };
        let overhead = if format == Format::V2 { 16 } else { 29 };

        for value in [&input.value, &marked] {
            let sealed = row.seal(field, value).expect("seal");
            assert_eq!(sealed.len(), value.len() + overhead, "{format:?}");
            // Round trip, with the same row key and with one reopened from the header.
            assert_eq!(&row.open(field, &sealed).expect("open"), value);
            let reopened = block_on(keys.open_row_key(
                &spec,
                &input.tenant,
                pk,
                &row.header_bytes(),
                &present,
            ))
            .expect("reopen the row key");
            assert_eq!(&reopened.open(field, &sealed).expect("open"), value);

            // Any change is a typed rejection.
            if let Some(bad) = input.mutation.apply(&sealed) {
                let e = row.open(field, &bad).expect_err("a changed value opened");
                assert!(is_typed_rejection(&e), "{e:?}");
                assert_error_is_clean_but_echo(&e, &secrets, &[&input.tenant, &input.column]);
            }
            if input.other_column != input.column {
                // Moved to another field (other logical name and column).
                let e = row
                    .open(FieldName::same(&input.other_column), &sealed)
                    .expect_err("opened under another field");
                assert!(matches!(e, Error::Decrypt), "{e:?}");
                // The column renamed, the logical name kept: v2 opens, v1
                // (which bound the column) does not.
                let renamed = FieldName::new(&input.column, &input.other_column);
                match format {
                    Format::V2 => {
                        assert_eq!(&row.open(renamed, &sealed).expect("renamed column"), value)
                    }
                    Format::V1 => {
                        let e = row.open(renamed, &sealed).expect_err("v1 binds the column");
                        assert!(matches!(e, Error::Decrypt), "{e:?}");
                    }
                }
            }
            // Moved to another row (same header, other primary key).
            if input.bind_pk && pk.is_some_and(|p| p != input.other_pk.as_slice()) {
                let moved = block_on(keys.open_row_key(
                    &spec,
                    &input.tenant,
                    Some(&input.other_pk),
                    &row.header_bytes(),
                    &present,
                ))
                .expect("the header opens under any primary key");
                let e = moved
                    .open(field, &sealed)
                    .expect_err("opened under another primary key");
                assert!(matches!(e, Error::Decrypt), "{e:?}");
            }
        }

        // Arbitrary bytes: never a value.
        let e = row
            .open(field, &input.raw)
            .expect_err("arbitrary bytes opened");
        assert!(is_typed_rejection(&e), "{e:?}");
        assert_error_is_clean_but_echo(&e, &secrets, &[&input.tenant, &input.column]);
    }
});
