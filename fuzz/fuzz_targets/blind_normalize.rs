//! Blind-index normalization and index values, on arbitrary UTF-8 (and
//! arbitrary bytes read as UTF-8, lossily, the way a value would reach it):
//! - `Normalization::parse` of any text is a typed error or steps whose
//!   `describe()` parses back to the same steps;
//! - every named step is idempotent: normalize(normalize(x)) == normalize(x)
//!   (a value that is already normalized must index like the raw one);
//!   compositions are deterministic but need not be idempotent (`nfc` then
//!   `alnum` can leave combining marks out of order; `alnum` then `lowercase`
//!   can create one, "İ" -> "i\u{307}"), which lookups do not need;
//! - each step keeps its promise (trim: no outer whitespace; lowercase: the
//!   same as `str::to_lowercase`; digits: ASCII digits only; alnum:
//!   alphanumerics only; lastN: at most N characters, a suffix);
//! - index values: equal for inputs that normalize alike, the truncation
//!   keeps exactly `bits` bits, and compound values are length-prefixed
//!   (splitting the same bytes differently gives another value).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rowseal_core::{
    BlindIndexKey, BlindIndexValue, IndexBits, KeyScope, Normalization, Normalizer,
};
use rowseal_fuzz::inputs::{BlindNormalizeInput as Input, Step};
use rowseal_fuzz::{block_on, hierarchy};

fn index_key() -> &'static BlindIndexKey {
    static KEY: OnceLock<BlindIndexKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let keys = hierarchy([7; 32]);
        block_on(keys.current_index_key(&KeyScope::Tenant("fuzz".into())))
            .expect("index key")
            .blind_index_key("user", "email_idx")
            .expect("blind index key")
    })
}

fn check_step(step: &Normalizer, s: &str) {
    let once = step.apply(s);
    let twice = step.apply(&once);
    assert_eq!(once, twice, "{step:?} is not idempotent on {s:?}");
    match step {
        Normalizer::Trim => {
            assert_eq!(once.trim(), once);
            assert!(s.contains(once.as_str()));
        }
        Normalizer::Lowercase => assert_eq!(once, s.to_lowercase()),
        Normalizer::DigitsOnly => assert!(once.chars().all(|c| c.is_ascii_digit())),
        Normalizer::AlphanumericOnly => assert!(once.chars().all(char::is_alphanumeric)),
        Normalizer::LastChars(n) => {
            assert!(once.chars().count() <= *n);
            assert!(s.ends_with(once.as_str()));
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    // Any spec text.
    if let Ok(n) = Normalization::parse(&input.spec) {
        let again = Normalization::parse(&n.describe()).expect("describe() parses");
        assert_eq!(again, n);
        assert_eq!(again.apply(&input.text), n.apply(&input.text));
    }

    let lossy = String::from_utf8_lossy(&input.bytes).into_owned();
    let spec = input
        .steps
        .iter()
        .map(Step::name)
        .collect::<Vec<_>>()
        .join(", ");
    let n = Normalization::parse(&spec).expect("named steps parse");
    assert_eq!(n.describe(), spec.replace(", ", ","));

    for s in [input.text.as_str(), lossy.as_str()] {
        for name in [
            "trim",
            "lowercase",
            "nfc",
            "digits",
            "alnum",
            "last1",
            "last4",
        ] {
            check_step(&Normalizer::builtin(name).expect("built-in"), s);
        }
        let out = n.apply(s);
        // Deterministic, always.
        assert_eq!(n.apply(s), out, "{spec:?} is not deterministic on {s:?}");
        // A composition need not be idempotent, and lookups do not need it
        // (the query and the stored value go through the same steps once):
        // a step after `nfc` that removes characters can leave combining
        // marks out of canonical order ("nfc, alnum" on
        // "h\u{302}\u{65e}\t\u{5bb}"), and `lowercase` after `alnum` can
        // create a combining mark that a second `alnum` removes ("İ" ->
        // "i\u{307}"; both found by this target). Each step alone is checked
        // idempotent above; the index-value checks below run where the
        // composition happens to be idempotent on this input.
        let exact = !input.steps.iter().any(|st| matches!(st, Step::Last(_)))
            && n.apply(&out) == out;

        // Index values.
        let key = index_key();
        if let Ok(bits) = IndexBits::new(input.bits) {
            // The raw and the normalized value index alike where the
            // normalization is idempotent.
            if exact {
                assert_eq!(
                    key.index_value(&n, s, bits),
                    key.index_value(&n, &out, bits)
                );
            }
            let mac = key.compute(out.as_bytes());
            match bits.truncate(&mac) {
                BlindIndexValue::Int(v) => {
                    assert!(bits.get() <= 64);
                    if bits.get() < 64 {
                        assert_eq!((v as u64) >> bits.get(), 0, "more than {} bits", bits.get());
                    }
                }
                BlindIndexValue::Bytes(b) => {
                    assert!(bits.get() > 64);
                    assert_eq!(b.len(), usize::from(bits.get()).div_ceil(8));
                    let spare = b.len() * 8 - usize::from(bits.get());
                    if let Some(last) = b.last() {
                        assert_eq!(u32::from(*last) & ((1u32 << spare) - 1), 0);
                    }
                    assert_eq!(&b[..b.len() - 1], &mac[..b.len() - 1]);
                }
            }
        } else {
            assert!(input.bits == 0 || input.bits > 256);
        }
    }

    // Compound values: the same bytes split differently index differently.
    let parts: Vec<&[u8]> = input.parts.iter().map(Vec::as_slice).collect();
    let joined: Vec<u8> = input.parts.concat();
    let key = index_key();
    let whole = key.compute_compound(&parts).expect("compound");
    let cut = input.split.checked_rem(joined.len() + 1).unwrap_or(0);
    let (a, b) = joined.split_at(cut);
    let resplit = key.compute_compound(&[a, b]).expect("compound");
    if parts.len() != 2 || parts[0] != a {
        assert_ne!(whole, resplit, "{parts:?} and [{a:?}, {b:?}] index alike");
    }
    assert_eq!(whole, key.compute_compound(&parts).expect("compound"));
});
