//! Wrapped-key records (the encoded `WrappedKey` stored in `rowseal_keys` and
//! in kms-mode row headers) and the local provider that unwraps them:
//! - arbitrary bytes: `WrappedKey::from_bytes` gives a typed error or a key
//!   that re-encodes to exactly the same bytes;
//! - `WrappedKey::new` accepts exactly the parts of at most 65,535 bytes, and
//!   those round-trip through their encoding;
//! - a generated data key unwraps to the same key under the same context;
//!   any change to the record, another context, or arbitrary bytes is a typed
//!   rejection;
//! - no error's Display/Debug, and no Debug of the data key or the provider,
//!   holds the root key or the data key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_core::{EncryptionContext, KeyProvider, WrappedKey};
use rowseal_fuzz::inputs::WrappedKeyInput as Input;
use rowseal_fuzz::{
    assert_error_is_clean_but_echo, assert_no_secret, block_on, is_typed_rejection, provider,
};

fuzz_target!(|input: Input| {
    match WrappedKey::from_bytes(&input.raw) {
        Ok(w) => {
            assert_eq!(w.to_bytes(), input.raw, "a wrapped key with two encodings");
            let _ = format!("{w:?}");
        }
        Err(e) => assert!(is_typed_rejection(&e), "{e:?}"),
    }

    let fits = input.key_id.len() <= 65_535 && input.ciphertext.len() <= 65_535;
    match WrappedKey::new(input.key_id.clone(), input.ciphertext.clone()) {
        Ok(w) => {
            assert!(fits);
            let back = WrappedKey::from_bytes(&w.to_bytes()).expect("own encoding parses");
            assert_eq!(back, w);
            assert_eq!(back.key_id(), input.key_id);
            assert_eq!(back.ciphertext(), input.ciphertext);
        }
        Err(e) => {
            assert!(!fits, "{e:?}");
            assert!(
                matches!(e, rowseal_core::Error::InvalidInput { .. }),
                "{e:?}"
            );
        }
    }

    let p = provider(input.root);
    let mut ctx = EncryptionContext::tenant_key(&input.tenant, 1);
    if let Some((k, v)) = &input.extra {
        ctx = ctx.with(k.clone(), v.clone());
    }
    let dk = block_on(p.generate_data_key(&ctx)).expect("generate");
    let data_key = *dk.plaintext.expose_secret();
    let secrets: [&[u8]; 2] = [&input.root, &data_key];
    for text in [
        format!("{dk:?}"),
        format!("{p:?}"),
        format!("{:?}", dk.wrapped),
    ] {
        for s in secrets {
            assert_no_secret("a Debug", &text, s);
        }
    }
    let back = block_on(p.decrypt_data_key(&dk.wrapped, &ctx)).expect("unwrap");
    assert_eq!(back.expose_secret(), &data_key);

    let echoed = [
        input.key_id.as_str(),
        input.tenant.as_str(),
        input.other_tenant.as_str(),
        input.extra.as_ref().map_or("", |(k, _)| k.as_str()),
        input.extra.as_ref().map_or("", |(_, v)| v.as_str()),
    ];
    let reject = |w: &WrappedKey, c: &EncryptionContext| match block_on(p.decrypt_data_key(w, c)) {
        Ok(_) => panic!("unwrapped a key that should not unwrap"),
        Err(e) => {
            assert!(is_typed_rejection(&e), "{e:?}");
            // A changed record's key id is input too: a mutation can copy
            // the fuzzer's key bytes into it, and errors quote key ids.
            let mut echoed = echoed.to_vec();
            echoed.push(w.key_id());
            assert_error_is_clean_but_echo(&e, &secrets, &echoed);
        }
    };
    // A changed record.
    if let Some(bad) = input.mutation.apply(&dk.wrapped.to_bytes()) {
        if let Ok(w) = WrappedKey::from_bytes(&bad) {
            reject(&w, &ctx);
        }
    }
    // Another context.
    let other = EncryptionContext::tenant_key(&input.other_tenant, 1);
    if other != ctx {
        reject(&dk.wrapped, &other);
    }
    // Arbitrary parts.
    if let Ok(w) = WrappedKey::new(input.key_id.clone(), input.ciphertext.clone()) {
        reject(&w, &ctx);
    }
});
