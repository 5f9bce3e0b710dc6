//! The row key header, in both format versions (2, what new rows are; 1,
//! old rows) and both key modes (`derived`: tenant key version; `kms`: a
//! wrapped per-row data key inside the header):
//! - arbitrary bytes: `RowHeader::from_bytes` gives a typed error or a header
//!   of version 1 or 2 that re-encodes to exactly the same bytes (one
//!   encoding per header, each version read by its own reader), and
//!   `peek_tenant_key_version` agrees with the full parse;
//! - arbitrary bytes opened as a row header, under either mode, are a typed
//!   rejection;
//! - any change to a real header of either version is a typed rejection (the
//!   key commitment covers every bound byte; the wrapped key is checked by
//!   the provider; a changed v2 present count is `FieldPresence`);
//! - the real header reopens to a row key that opens what the original
//!   sealed; under another tenant it is rejected; a v2 header opened with
//!   another set of present fields is rejected;
//! - no error's Display/Debug, and no header's Debug, holds the root key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_core::{Error, FieldName, FieldSet, KeyMode, RecordSpec, RowHeader};
use rowseal_fuzz::inputs::RowHeaderInput as Input;
use rowseal_fuzz::{
    assert_error_is_clean_but_echo, assert_no_secret, block_on, hierarchy, is_typed_rejection,
    new_row_key, Format, FORMATS,
};

fuzz_target!(|input: Input| {
    let present = FieldSet::new(["ssn"]).expect("one name");
    let ssn = FieldName::same("ssn");

    // Parsing alone.
    match RowHeader::from_bytes(&input.raw) {
        Ok(h) => {
            assert_eq!(h.to_bytes(), input.raw, "a header with two encodings");
            assert_eq!(Some(&h.format_version()), input.raw.first());
            assert!(matches!(h.format_version(), 1 | 2));
            assert_eq!(h.present_count().is_some(), h.format_version() == 2);
            let peek = RowHeader::peek_tenant_key_version(&input.raw);
            match h.mode() {
                KeyMode::Derived => assert_eq!(peek, h.tenant_key_version()),
                _ => assert_eq!(peek, None),
            }
            let _ = format!("{h:?}");
        }
        Err(e) => assert!(is_typed_rejection(&e), "{e:?}"),
    }

    let keys = hierarchy(input.root);
    for mode in [KeyMode::Derived, KeyMode::Kms] {
        let spec = RecordSpec::owned("patient".into(), "patients".into()).with_key_mode(mode);
        // Arbitrary bytes as a header.
        for set in [&present, &FieldSet::empty()] {
            if let Err(e) = block_on(keys.open_row_key(&spec, &input.tenant, None, &input.raw, set))
            {
                assert!(is_typed_rejection(&e), "{e:?}");
                assert_error_is_clean_but_echo(
                    &e,
                    &[&input.root],
                    &[&input.tenant, &input.other_tenant],
                );
            } else {
                panic!("arbitrary bytes opened as a {mode:?} row header");
            }
        }
    }

    let mode = if input.kms_mode {
        KeyMode::Kms
    } else {
        KeyMode::Derived
    };
    let spec = RecordSpec::owned("patient".into(), "patients".into()).with_key_mode(mode);
    for format in FORMATS {
        let row =
            new_row_key(&keys, format, &spec, &input.tenant, None, &present).expect("new row key");
        let header = row.header_bytes();
        assert_eq!(
            row.header().format_version(),
            if format == Format::V2 { 2 } else { 1 }
        );
        assert_no_secret(
            "a header's Debug",
            &format!("{:?}", row.header()),
            &input.root,
        );
        assert_no_secret("a row key's Debug", &format!("{row:?}"), &input.root);
        let sealed = row.seal(ssn, b"123-45-6789").expect("seal");

        let reopened = block_on(keys.open_row_key(&spec, &input.tenant, None, &header, &present))
            .expect("reopen");
        assert_eq!(reopened.open(ssn, &sealed).expect("open"), b"123-45-6789");

        if let Some(bad) = input.mutation.apply(&header) {
            match block_on(keys.open_row_key(&spec, &input.tenant, None, &bad, &present)) {
                Err(e) => {
                    assert!(is_typed_rejection(&e), "{e:?}");
                    assert_error_is_clean_but_echo(
                        &e,
                        &[&input.root],
                        &[&input.tenant, &input.other_tenant],
                    );
                }
                Ok(_) => panic!("a changed {mode:?} {format:?} header opened"),
            }
        }
        if input.other_tenant != input.tenant {
            let e =
                block_on(keys.open_row_key(&spec, &input.other_tenant, None, &header, &present))
                    .expect_err("another tenant opened the header");
            assert!(is_typed_rejection(&e), "{e:?}");
        }
        // v2 binds which fields are present: the field NULLed since.
        let nulled =
            block_on(keys.open_row_key(&spec, &input.tenant, None, &header, &FieldSet::empty()));
        match format {
            Format::V2 => assert!(
                matches!(
                    nulled,
                    Err(Error::FieldPresence {
                        stored: 1,
                        found: 0
                    })
                ),
                "{nulled:?}"
            ),
            Format::V1 => assert!(nulled.is_ok(), "v1 did not bind presence"),
        }
    }
});
