//! The per-field envelope: for arbitrary values, root keys, tenants, columns
//! and primary keys, in both key modes,
//! - open(seal(x)) == x;
//! - any change to a sealed value (flip, truncation, extension, insertion,
//!   removal) is rejected with a typed error;
//! - a value moved to another column or another primary key (when the
//!   record type binds it) fails with `Error::Decrypt`;
//! - arbitrary bytes never open and never panic;
//! - no error's Display/Debug holds the plaintext or the root key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_core::{Error, KeyMode, RecordSpec};
use rowseal_fuzz::inputs::FieldEnvelopeInput as Input;
use rowseal_fuzz::{
    assert_error_is_clean_but_echo, block_on, hierarchy, is_typed_rejection, PLAINTEXT_MARKER,
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
    let row = match block_on(keys.new_row_key(&spec, &input.tenant, pk)) {
        Ok(row) => row,
        // A primary key is required when the type binds it; other names are
        // all accepted.
        Err(e) => {
            assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
            assert_error_is_clean_but_echo(&e, &[&input.root], &[&input.tenant]);
            return;
        }
    };
    let mut marked = PLAINTEXT_MARKER.as_bytes().to_vec();
    marked.extend_from_slice(&input.value);
    let secrets: [&[u8]; 3] = [&input.root, &marked, &input.value];

    for value in [&input.value, &marked] {
        let sealed = row.seal(&input.column, value).expect("seal");
        // Round trip, with the same row key and with one reopened from the header.
        assert_eq!(&row.open(&input.column, &sealed).expect("open"), value);
        let reopened = block_on(keys.open_row_key(&spec, &input.tenant, pk, &row.header_bytes()))
            .expect("reopen the row key");
        assert_eq!(&reopened.open(&input.column, &sealed).expect("open"), value);

        // Any change is a typed rejection.
        if let Some(bad) = input.mutation.apply(&sealed) {
            let e = row
                .open(&input.column, &bad)
                .expect_err("a changed value opened");
            assert!(is_typed_rejection(&e), "{e:?}");
            assert_error_is_clean_but_echo(&e, &secrets, &[&input.tenant, &input.column]);
        }
        // Moved to another column.
        if input.other_column != input.column {
            let e = row
                .open(&input.other_column, &sealed)
                .expect_err("opened under another column");
            assert!(matches!(e, Error::Decrypt), "{e:?}");
        }
        // Moved to another row (same header, other primary key).
        if input.bind_pk && pk.is_some_and(|p| p != input.other_pk.as_slice()) {
            let moved = block_on(keys.open_row_key(
                &spec,
                &input.tenant,
                Some(&input.other_pk),
                &row.header_bytes(),
            ))
            .expect("the header opens under any primary key");
            let e = moved
                .open(&input.column, &sealed)
                .expect_err("opened under another primary key");
            assert!(matches!(e, Error::Decrypt), "{e:?}");
        }
    }

    // Arbitrary bytes: never a value.
    let e = row
        .open(&input.column, &input.raw)
        .expect_err("arbitrary bytes opened");
    assert!(is_typed_rejection(&e), "{e:?}");
    assert_error_is_clean_but_echo(&e, &secrets, &[&input.tenant, &input.column]);
});
