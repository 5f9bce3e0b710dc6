//! The committed seed corpora (`fuzz/corpus/<target>/seed-*`): a few valid
//! samples per target (real row headers of format versions 1 and 2 and
//! wrapped-key records, well-formed field envelopes of both versions, values
//! worth normalizing, whole config files), each placed
//! in the target's last input field behind an all-zero prefix of exactly the
//! length that the other fields consume.
//!
//! `bash scripts/fuzz.sh` runs this check before fuzzing (so a change to an
//! input struct that would silently spoil the seeds fails there);
//! `ROWSEAL_WRITE_SEEDS=1 bash scripts/fuzz.sh` (re)writes the seeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use rowseal_core::{EncryptionContext, FieldSet, KeyMode, KeyProvider, RecordSpec};
use rowseal_fuzz::inputs::{
    BlindNormalizeInput, CliConfigInput, FieldEnvelopeInput, RowHeaderInput, WrappedKeyInput,
};
use rowseal_fuzz::{block_on, hierarchy, provider};

/// Zeros, then `sample` as the last field's encoding, then zeros, such that
/// `last(decoded) == sample`. A `Vec<u8>` last field reads a "keep going" byte
/// before each element; a `String` one takes the rest as it is; the lengths
/// of strings in earlier fields are read from the end of the data (the
/// trailing zeros: empty strings).
fn embed<T>(sample: &[u8], last: impl Fn(&T) -> Vec<u8>) -> Vec<u8>
where
    T: for<'a> Arbitrary<'a>,
{
    let interleaved: Vec<u8> = sample.iter().flat_map(|&b| [1, b]).collect();
    for encoded in [interleaved.as_slice(), sample] {
        for k in 0..400 {
            for m in 0..24 {
                let mut bytes = vec![0u8; k];
                bytes.extend_from_slice(encoded);
                bytes.extend(std::iter::repeat_n(0u8, m));
                if let Ok(input) = T::arbitrary_take_rest(Unstructured::new(&bytes)) {
                    if last(&input) == sample {
                        return bytes;
                    }
                }
            }
        }
    }
    panic!("no prefix length puts the sample in the last field");
}

/// (target, seed name, seed bytes, the sample it carries).
fn seeds() -> Vec<(&'static str, String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let keys = hierarchy([0x42; 32]);

    // field_envelope: envelopes of the right shape: version 1, nonce, tag
    // (v1); ciphertext and tag, nothing else (v2).
    for (name, len) in [("envelope-empty", 0usize), ("envelope-11", 11)] {
        let mut env = vec![1u8];
        env.extend((0..12 + 16 + len).map(|i| i as u8));
        let b = embed::<FieldEnvelopeInput>(&env, |i| i.raw.clone());
        out.push(("field_envelope", name.to_owned(), b, env));
    }
    for (name, len) in [("envelope-v2-empty", 0usize), ("envelope-v2-11", 11)] {
        let env: Vec<u8> = (0..16 + len).map(|i| (0xA0 + i) as u8).collect();
        let b = embed::<FieldEnvelopeInput>(&env, |i| i.raw.clone());
        out.push(("field_envelope", name.to_owned(), b, env));
    }

    // row_header: real headers, both modes, both format versions.
    let present = FieldSet::new(["ssn"]).unwrap();
    for (name, mode, v2) in [
        ("header-derived", KeyMode::Derived, false),
        ("header-kms", KeyMode::Kms, false),
        ("header-v2-derived", KeyMode::Derived, true),
        ("header-v2-kms", KeyMode::Kms, true),
    ] {
        let spec = RecordSpec::new("patient", "patients").with_key_mode(mode);
        let row = if v2 {
            block_on(keys.new_row_key(&spec, "tenant-1", None, &present)).unwrap()
        } else {
            block_on(keys.new_row_key_v1(&spec, "tenant-1", None)).unwrap()
        };
        let h = row.header_bytes();
        let b = embed::<RowHeaderInput>(&h, |i| i.raw.clone());
        out.push(("row_header", name.to_owned(), b, h));
    }

    // wrapped_key: real records from the local provider.
    let p = provider([0x42; 32]);
    for (name, ctx) in [
        (
            "wrapped-tenant-key",
            EncryptionContext::tenant_key("tenant-1", 1),
        ),
        ("wrapped-index-key", EncryptionContext::index_key(None, 1)),
    ] {
        let dk = block_on(p.generate_data_key(&ctx)).unwrap();
        let w = dk.wrapped.to_bytes();
        let b = embed::<WrappedKeyInput>(&w, |i| i.raw.clone());
        out.push(("wrapped_key", name.to_owned(), b, w));
    }

    // blind_normalize: values that normalization changes.
    for (name, v) in [
        ("email", "  Ada.Lovelace@Example.COM \t"),
        ("ssn", "123-45-6789"),
        ("decomposed", "Zoe\u{301} \u{c9}MILE"),
        (
            "special-case",
            "\u{130}stanbul \u{3a3}\u{391}\u{3a3} \u{1e9e}",
        ),
        ("card", "4111 1111 1111 1111"),
    ] {
        let b = embed::<BlindNormalizeInput>(v.as_bytes(), |i| i.bytes.clone());
        out.push(("blind_normalize", name.to_owned(), b, v.as_bytes().to_vec()));
    }

    // cli_config: whole config files.
    for (name, text) in [
        (
            "config-full",
            "database_url = \"postgres://app:pw@db/app\"\nkey_file = \"/etc/rowseal/keys\"\n\
             kms_rate = 50.0\nbatch_size = 500\nworkers = 4\nmax_rows_per_second = 1000.0\n",
        ),
        (
            "config-kms",
            "kms_key_id = \"alias/rowseal\"\naws_region = \"eu-west-1\"\n\
             kms_endpoint = \"http://127.0.0.1:5000\"\n",
        ),
        ("config-unknown-key", "databse_url = \"sqlite://x.db\"\n"),
        ("config-wrong-type", "batch_size = \"many\"\nworkers = -1\n"),
        (
            "config-broken",
            "database_url = \"postgres://u:p@h/d\nworkers = [\n",
        ),
    ] {
        let b = embed::<CliConfigInput>(text.as_bytes(), |i| i.tail.as_bytes().to_vec());
        out.push(("cli_config", name.to_owned(), b, text.as_bytes().to_vec()));
    }
    out
}

/// Whether a committed seed still decodes to a valid sample of its kind.
fn still_valid(target: &str, expected: &[u8], committed: &[u8]) -> bool {
    let u = || Unstructured::new(committed);
    match target {
        // Envelope samples are fixed bytes (v1: version 1, nonce, tag; v2:
        // at least a tag).
        "field_envelope" => {
            FieldEnvelopeInput::arbitrary_take_rest(u()).is_ok_and(|i| i.raw == expected)
        }
        // Header samples have a random salt: a header of the same version.
        "row_header" => RowHeaderInput::arbitrary_take_rest(u()).is_ok_and(|i| {
            rowseal_core::RowHeader::from_bytes(&i.raw)
                .is_ok_and(|h| Some(&h.format_version()) == expected.first())
        }),
        "wrapped_key" => WrappedKeyInput::arbitrary_take_rest(u())
            .is_ok_and(|i| rowseal_core::WrappedKey::from_bytes(&i.raw).is_ok()),
        "blind_normalize" => {
            BlindNormalizeInput::arbitrary_take_rest(u()).is_ok_and(|i| i.bytes == expected)
        }
        "cli_config" => {
            CliConfigInput::arbitrary_take_rest(u()).is_ok_and(|i| i.tail.as_bytes() == expected)
        }
        _ => false,
    }
}

#[test]
fn seeds_decode_to_their_samples() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = std::env::var("ROWSEAL_WRITE_SEEDS").as_deref() == Ok("1");
    for (target, name, bytes, sample) in seeds() {
        let path = root.join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (`ROWSEAL_WRITE_SEEDS=1 bash scripts/fuzz.sh` writes it)",
                path.display()
            )
        });
        assert!(
            still_valid(target, &sample, &committed),
            "{} no longer decodes to a valid sample: the input struct changed; \
             rewrite the seeds with `ROWSEAL_WRITE_SEEDS=1 bash scripts/fuzz.sh`",
            path.display()
        );
    }
}
